//! Development conveniences: a local issuer of agent tokens, so keygate can be tried with
//! nothing else installed. An issuer with `dev_signing_key` gets an Ed25519 key pair in the
//! data directory on first start, its public key written to the issuer's `jwks_file`;
//! `keygate dev-token` signs agent tokens with it. Production issuers have no such key.

use crate::config::{IssuerSettings, JwksSource, SigningAlgorithm, Snapshot};
use crate::credentials::Signer;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Creates the dev issuer's key if needed and keeps its JWKS file in step with it.
pub fn ensure_dev_issuer(issuer: &IssuerSettings, key: &Path) -> Result<Signer, String> {
    let signer = Signer::load_or_generate(key, SigningAlgorithm::EdDsa, true)?;
    if let JwksSource::File(jwks) = &issuer.jwks {
        let doc = crate::credentials::signer::jwks_document([&signer]);
        if std::fs::read_to_string(jwks).ok().as_deref() != Some(doc.as_str()) {
            if let Some(dir) = jwks.parent() {
                crate::private_fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            crate::private_fs::write(jwks, doc.as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", jwks.display()))?;
        }
    }
    Ok(signer)
}

#[derive(Serialize)]
struct AgentClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
}

/// Signs an agent token with the first dev issuer of the configuration.
pub fn dev_token(
    snapshot: &Snapshot,
    agent: &str,
    owner: Option<&str>,
    ttl: Duration,
) -> Result<String, String> {
    let issuer = snapshot
        .identity
        .issuers
        .iter()
        .find(|i| i.dev_signing_key.is_some())
        .ok_or("no issuer in this configuration has dev_signing_key set")?;
    let key = issuer
        .dev_signing_key
        .as_deref()
        .ok_or("no dev signing key")?;
    let signer = ensure_dev_issuer(issuer, key)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let aud = issuer.audiences.first().map(String::as_str).unwrap_or("");
    signer.sign_jwt(&AgentClaims {
        iss: &issuer.issuer,
        sub: agent,
        aud,
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs(),
        owner,
    })
}
