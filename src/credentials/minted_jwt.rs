//! `jwt`: a JWT keygate signs for every call, scoped to one agent and one tool.
//!
//! Claims: `iss` (keygate), `sub` (the agent), `aud` (the tool), `scope`, `owner` (the
//! agent's accountable human), `iat`, `nbf`, `exp` (at most five minutes later) and a
//! unique `jti`, which is also the credential id in the audit log. Tools verify it with the
//! keys keygate serves at `/.well-known/jwks.json`.

use super::{place, Issued, Signer, Unavailable};
use crate::config::{Agent, Injection};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct MintedJwt {
    signer: Arc<Signer>,
    issuer: String,
    audience: String,
    scope: Option<String>,
    ttl: Duration,
    injection: Injection,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    owner: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: &'a str,
}

impl MintedJwt {
    pub fn new(
        signer: Arc<Signer>,
        issuer: String,
        audience: String,
        scope: Option<String>,
        ttl: Duration,
        injection: Injection,
    ) -> Self {
        MintedJwt {
            signer,
            issuer,
            audience,
            scope,
            ttl,
            injection,
        }
    }

    pub fn issue(&self, agent: &Agent) -> Result<Issued, Unavailable> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Unavailable("system clock is before 1970".into()))?
            .as_secs();
        let jti = uuid::Uuid::new_v4().to_string();
        let claims = Claims {
            iss: &self.issuer,
            sub: &agent.id,
            aud: &self.audience,
            scope: self.scope.as_deref(),
            owner: &agent.owner,
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
            jti: &jti,
        };
        let token = self.signer.sign_jwt(&claims).map_err(Unavailable)?;
        Ok(Issued {
            id: jti.into(),
            placement: place(&self.injection, &token)?,
        })
    }
}
