//! AWS: the agent's SigV4 signature checked (`verify`), the action a call is and the
//! session policy that allows only it (`action`), STS sessions (`sts`), requests signed
//! with credentials keygate holds (`sign`), and the IAM listings a reconcile reads
//! (`iam`). Leaf modules: they know AWS's protocols, nothing of the pipeline.

pub mod action;
pub mod iam;
pub mod sign;
pub mod sts;
pub mod verify;
