//! AWS: signing requests (SigV4) with credentials keygate holds, and STS sessions.
//! Leaf modules: they know AWS's protocols, nothing of the pipeline.

pub mod sign;
pub mod sts;
