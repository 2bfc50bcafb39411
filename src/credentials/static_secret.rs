//! `static`: a long-lived secret that keygate holds so the agent does not.
//!
//! Read from an environment variable at start, or from a file that is re-read when it
//! changes (so a rotated secret, such as a Kubernetes-mounted one, takes effect without a
//! restart). A secret that cannot be read leaves the provider unavailable: requests to its
//! tool fail with `credential_unavailable` and nothing is forwarded.

use super::issued::{place, Issued, Placement, Unavailable};
use crate::config::{Injection, SecretSource};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::SystemTime;

struct Loaded {
    id: Arc<str>,
    placement: Placement,
    modified: Option<SystemTime>,
}

pub struct StaticSecret {
    source: SecretSource,
    injection: Injection,
    configured_id: Option<String>,
    current: ArcSwap<Result<Loaded, String>>,
}

impl std::fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticSecret")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl StaticSecret {
    pub fn new(source: SecretSource, injection: Injection, configured_id: Option<String>) -> Self {
        let s = StaticSecret {
            source,
            injection,
            configured_id,
            current: ArcSwap::from_pointee(Err("not loaded".into())),
        };
        s.reload();
        s
    }

    /// Whether the secret is loaded; the reason when it is not.
    pub fn status(&self) -> Result<(), String> {
        match &**self.current.load() {
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        }
    }

    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// Re-reads a file secret if the file changed. Returns true when the secret changed.
    pub fn reload(&self) -> bool {
        let modified = match &self.source {
            SecretSource::File(p) => std::fs::metadata(p).and_then(|m| m.modified()).ok(),
            SecretSource::Env(_) => None,
        };
        if let Ok(cur) = &**self.current.load() {
            if modified.is_some() && cur.modified == modified {
                return false;
            }
        }
        let next = self.read().and_then(|secret| {
            let id: Arc<str> = match &self.configured_id {
                Some(id) => id.as_str().into(),
                None => fingerprint(&secret).into(),
            };
            let placement = place(&self.injection, &secret).map_err(|e| e.reason)?;
            Ok(Loaded {
                id,
                placement,
                modified,
            })
        });
        self.current.store(Arc::new(next));
        true
    }

    fn read(&self) -> Result<String, String> {
        let raw = match &self.source {
            SecretSource::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
            }
            SecretSource::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        };
        let secret = raw.trim_end_matches(['\r', '\n']).to_string();
        if secret.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(secret)
    }

    pub fn issue(&self) -> Result<Issued, Unavailable> {
        match &**self.current.load() {
            Ok(l) => Ok(Issued {
                id: l.id.clone(),
                placement: match &l.placement {
                    Placement::Header(n, v) => Placement::Header(n.clone(), v.clone()),
                    Placement::Query { name, encoded } => Placement::Query {
                        name: name.clone(),
                        encoded: encoded.clone(),
                    },
                },
                minted: false,
                scope: None,
                expires_unix: None,
                cached: None,
            }),
            Err(e) => Err(Unavailable::new(e.clone())),
        }
    }
}

/// `sha256:` and the first 12 hex digits of the secret's SHA-256: tells two secrets apart
/// in the audit log without revealing either (set `credential_id` for low-entropy secrets).
pub(crate) fn fingerprint(secret: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    format!("sha256:{}", const_hex::encode(&d.as_ref()[..6]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_are_the_first_12_hex_digits_of_the_sha256() {
        // printf s3cr3t | sha256sum
        assert_eq!(super::fingerprint("s3cr3t"), "sha256:4e738ca5563c");
    }
}
