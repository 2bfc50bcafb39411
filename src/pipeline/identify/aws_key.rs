//! AWS-style key pairs keygate issues to agents, so that an unmodified AWS SDK can prove
//! which agent it is: the agent signs with its pair (SigV4), keygate verifies the signature
//! and then signs again with credentials of its own. The pair is worthless anywhere else.
//!
//! Only the SHA-256 of the key id is stored (with its agent): the key's fingerprint. The
//! secret is derived from the id by HMAC-SHA256 under a key kept in its own file in the
//! data directory (0600), never in the store: a copy of the database holds nothing an
//! agent could present or sign with. The fingerprints of active keys are held in memory
//! (replaced whole when keys change), so a call never waits on the store.

use crate::aws::verify;
use crate::config::{Agent, Agents};
use crate::error::{Error, ErrorKind};
use crate::store::AgentKey;
use arc_swap::ArcSwap;
use aws_lc_rs::hmac;
use http::{HeaderMap, HeaderValue};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What every keygate-issued key id starts with (AWS's own start with `AKIA`/`ASIA`).
pub const KEY_ID_PREFIX: &str = "KGAK";
const DERIVATION_LABEL: &[u8] = b"keygate aws agent key v1\n";

/// The keys issued to agents, by id.
pub struct AgentKeys {
    master: hmac::Key,
    active: ArcSwap<HashMap<Box<str>, Arc<str>>>,
    /// The active keys that are handles of captured AWS keys (`created_by` `capture:…`).
    captured: ArcSwap<std::collections::HashSet<Box<str>>>,
    /// Serializes changes (readers never wait), and counts those made through this process
    /// ([`AgentKeys::add`], [`AgentKeys::forget`]): a read of the store that began before
    /// one of them is not applied ([`AgentKeys::set_if_unchanged`]), so that a key
    /// revoked here is never made active again by an older read.
    changes: std::sync::Mutex<u64>,
}

impl std::fmt::Debug for AgentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKeys").finish_non_exhaustive()
    }
}

impl AgentKeys {
    /// Loads the derivation key from `path`, generating it (32 random bytes, owner-only)
    /// on first start.
    pub fn load_or_generate(path: &Path) -> Result<AgentKeys, String> {
        if !path.exists() {
            let mut bytes = [0u8; 32];
            aws_lc_rs::rand::fill(&mut bytes)
                .map_err(|_| "cannot generate the agent-key secret".to_string())?;
            crate::private_fs::write(path, const_hex::encode(bytes).as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let bytes = const_hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| format!("{} does not hold 32 hex-encoded bytes", path.display()))?;
        Ok(AgentKeys::from_master(&bytes))
    }

    pub fn from_master(bytes: &[u8]) -> AgentKeys {
        AgentKeys {
            master: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            active: ArcSwap::from_pointee(HashMap::new()),
            captured: ArcSwap::from_pointee(Default::default()),
            changes: std::sync::Mutex::new(0),
        }
    }

    /// Where the next read of the store starts from ([`AgentKeys::set_if_unchanged`]).
    pub fn epoch(&self) -> u64 {
        *crate::locks::lock(&self.changes)
    }

    /// [`AgentKeys::set`] with what the store held when read at `epoch`; false, changing
    /// nothing, when a key was added or revoked through this process meanwhile (what was
    /// read may be older than it: read again).
    pub fn set_if_unchanged(&self, keys: &[AgentKey], epoch: u64) -> bool {
        let changes = crate::locks::lock(&self.changes);
        if *changes != epoch {
            return false;
        }
        self.replace(keys);
        true
    }

    /// Replaces the active keys with the unrevoked ones of `keys` (at start, before any
    /// change through this process).
    pub fn set(&self, keys: &[AgentKey]) {
        let _changes = crate::locks::lock(&self.changes);
        self.replace(keys);
    }

    fn replace(&self, keys: &[AgentKey]) {
        let active = keys
            .iter()
            .filter(|k| k.revoked_at.is_none())
            .map(|k| (k.key_hash.as_str().into(), k.agent_id.as_str().into()))
            .collect();
        let captured = keys
            .iter()
            .filter(|k| k.revoked_at.is_none() && k.created_by.starts_with("capture:"))
            .map(|k| k.key_hash.as_str().into())
            .collect();
        self.captured.store(Arc::new(captured));
        self.active.store(Arc::new(active));
    }

    /// Whether an active key (by fingerprint) is the handle of a captured AWS key.
    pub fn is_captured(&self, key_hash: &str) -> bool {
        self.captured.load().contains(key_hash)
    }

    /// Adds an active key (by its fingerprint) at once, before the store is read again;
    /// `captured`: the handle of a captured AWS key.
    pub fn add(&self, key_hash: &str, agent_id: &str, captured: bool) {
        let mut changes = crate::locks::lock(&self.changes);
        *changes += 1;
        if captured {
            self.captured.rcu(|m| {
                let mut m = (**m).clone();
                m.insert(key_hash.into());
                m
            });
        }
        self.active.rcu(|m| {
            let mut m = (**m).clone();
            m.insert(key_hash.into(), agent_id.into());
            m
        });
    }

    /// Drops a key (by its fingerprint) at once, before the store is read again.
    pub fn forget(&self, key_hash: &str) {
        let mut changes = crate::locks::lock(&self.changes);
        *changes += 1;
        self.captured.rcu(|m| {
            let mut m = (**m).clone();
            m.remove(key_hash);
            m
        });
        let mut active = (**self.active.load()).clone();
        if active.remove(key_hash).is_some() {
            self.active.store(Arc::new(active));
        }
    }

    /// The agent an active key was issued to.
    pub fn agent_of(&self, access_key_id: &str) -> Option<Arc<str>> {
        self.active
            .load()
            .get(&*fingerprint(access_key_id))
            .cloned()
    }

    /// The secret of a key id (40 characters, like AWS's).
    pub fn secret_of(&self, access_key_id: &str) -> String {
        use base64::Engine;
        let mut ctx = hmac::Context::with_key(&self.master);
        ctx.update(DERIVATION_LABEL);
        ctx.update(access_key_id.as_bytes());
        let tag = ctx.sign();
        base64::engine::general_purpose::STANDARD.encode(&tag.as_ref()[..30])
    }

    /// A new key id: the prefix and 16 random uppercase hex digits (20 characters, like
    /// AWS's).
    pub fn new_id() -> Result<String, String> {
        let mut bytes = [0u8; 8];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "cannot generate a key id".to_string())?;
        Ok(format!("{KEY_ID_PREFIX}{}", const_hex::encode_upper(bytes)))
    }
}

/// How far an agent's `X-Amz-Date` may be from keygate's clock: a captured request cannot
/// be replayed later than this (AWS allows 15 minutes; keygate's agents run beside it).
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// Whether an `Authorization` value is a SigV4 signature.
pub fn is_sigv4(v: &HeaderValue) -> bool {
    v.as_bytes().starts_with(b"AWS4-HMAC-SHA256 ")
}

/// The agent a SigV4 `Authorization` names by its key id, if keygate issued that key and it
/// is active, and the key's fingerprint. The signature is not checked here ([`prove`]).
pub fn claim(
    keys: &AgentKeys,
    agents: &Agents,
    v: &HeaderValue,
) -> Result<(Arc<Agent>, String), Error> {
    let text = v
        .to_str()
        .map_err(|_| malformed("the Authorization header is not text"))?;
    let h = verify::parse_authorization(text).map_err(|e| malformed(&e.to_string()))?;
    let agent = keys
        .agent_of(h.access_key_id)
        .and_then(|id| agents.by_id.get(&*id).cloned());
    agent.map(|a| (a, fingerprint(h.access_key_id))).ok_or_else(|| {
        Error::unauthenticated(
            "keygate issued no such AWS access key id, or it was revoked: use a key from `keygate agents aws-key AGENT`",
        )
        .with_aws_code("InvalidClientTokenId")
    })
}

fn malformed(why: &str) -> Error {
    Error::unauthenticated(format!("the AWS signature is malformed: {why}"))
        .with_aws_code("IncompleteSignature")
}

/// Checks the SigV4 signature of a request whose agent [`claim`] named, over the request
/// as the agent sent it: `uri` its target, `body` the body when it was read (needed unless
/// `x-amz-content-sha256` declares the payload, as S3 clients do).
pub fn prove(
    keys: &AgentKeys,
    method: &http::Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: Option<&[u8]>,
    now: SystemTime,
) -> Result<(), Error> {
    let v = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| malformed("no Authorization header"))?;
    let text = v
        .to_str()
        .map_err(|_| malformed("the Authorization header is not text"))?;
    let h = verify::parse_authorization(text).map_err(|e| malformed(&e.to_string()))?;
    // Every `x-amz-*` header sent must be signed (as S3 requires): keygate signs the ones
    // present again, so one added on the way would otherwise go to AWS under its signature.
    if let Some(unsigned) = headers
        .keys()
        .map(|n| n.as_str())
        .find(|n| n.starts_with("x-amz-") && !h.signed_headers.contains(n))
    {
        return Err(Error::unauthenticated(format!(
            "the {unsigned} header is not signed: every x-amz-* header must be"
        ))
        .with_aws_code("SignatureDoesNotMatch"));
    }
    let payload = match (headers.get(crate::aws::sign::CONTENT_SHA256), body) {
        (Some(p), read) => {
            let p = p
                .to_str()
                .map_err(|_| malformed("x-amz-content-sha256 is not text"))?;
            // A body keygate read must be the one the declared hash names: what keygate
            // decided on is what the signature covers.
            if let Some(b) = read.filter(|_| p.len() == 64) {
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
                if !p.eq_ignore_ascii_case(&const_hex::encode(d.as_ref())) {
                    return Err(Error::unauthenticated(
                        "x-amz-content-sha256 is not the SHA-256 of the body sent",
                    )
                    .with_aws_code("XAmzContentSHA256Mismatch"));
                }
            }
            p.to_string()
        }
        (None, Some(b)) => {
            const_hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
        }
        (None, None) => {
            return Err(Error::new(
                ErrorKind::Internal,
                "keygate could not check this request's signature",
            )
            .with_detail("SigV4 proof without the body or a declared payload hash"))
        }
    };
    // HTTP/2 carries the host as `:authority`, which the agent signed as `host`.
    let mut with_host;
    let headers = if headers.contains_key(http::header::HOST) {
        headers
    } else {
        with_host = headers.clone();
        if let Some(a) = uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                with_host.insert(http::header::HOST, v);
            }
        }
        &with_host
    };
    let secret = keys.secret_of(h.access_key_id);
    verify::verify(&h, &secret, method, uri, headers, &payload, now, MAX_SKEW).map_err(|e| {
        let code = e.code();
        let message = match code {
            "SignatureDoesNotMatch" => "the request signature does not match: sign with the secret keygate issued with this key id".to_string(),
            "RequestExpired" | "RequestTimeTooSkewed" => format!(
                "the request was signed more than {} minutes from keygate's time: a replayed request, or a clock that is off",
                MAX_SKEW.as_secs() / 60
            ),
            _ => format!("the AWS signature is malformed: {e}"),
        };
        Error::unauthenticated(message).with_aws_code(code)
    })
}

/// The SHA-256 of a key id, in hex: what the store holds and listings show.
pub fn fingerprint(access_key_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_key_id.as_bytes());
    const_hex::encode(d.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, agent: &str, revoked: bool) -> AgentKey {
        AgentKey {
            key_hash: fingerprint(id),
            agent_id: agent.into(),
            created_by: "t".into(),
            created_at: 0,
            revoked_at: revoked.then_some(1),
        }
    }

    #[test]
    fn secrets_are_derived_from_the_id_and_the_master_only() {
        let a = AgentKeys::from_master(&[7; 32]);
        let b = AgentKeys::from_master(&[8; 32]);
        let s = a.secret_of("KGAK0000000000000001");
        assert_eq!(s.len(), 40);
        assert_eq!(s, a.secret_of("KGAK0000000000000001"));
        assert_ne!(s, a.secret_of("KGAK0000000000000002"));
        assert_ne!(s, b.secret_of("KGAK0000000000000001"));
        let id = AgentKeys::new_id().unwrap();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with(KEY_ID_PREFIX));
    }

    /// A read of the store that began before a key was revoked here is not applied: it
    /// would make the revoked key active again until the next read.
    #[test]
    fn a_read_older_than_a_revocation_never_revives_the_key() {
        let k = AgentKeys::from_master(&[7; 32]);
        k.set(&[key("KGAK0000000000000001", "a1", false)]);
        let before = k.epoch();
        k.forget(&fingerprint("KGAK0000000000000001"));
        assert!(!k.set_if_unchanged(&[key("KGAK0000000000000001", "a1", false)], before));
        assert_eq!(k.agent_of("KGAK0000000000000001"), None);
        // A read after the revocation: applied.
        assert!(k.set_if_unchanged(&[key("KGAK0000000000000001", "a1", true)], k.epoch()));
        assert_eq!(k.agent_of("KGAK0000000000000001"), None);
    }

    #[test]
    fn only_unrevoked_keys_name_an_agent() {
        let k = AgentKeys::from_master(&[7; 32]);
        k.set(&[
            key("KGAK1", "agent-1", false),
            key("KGAK2", "agent-2", true),
        ]);
        assert_eq!(k.agent_of("KGAK1").as_deref(), Some("agent-1"));
        assert_eq!(k.agent_of("KGAK2"), None);
        assert_eq!(k.agent_of("KGAK3"), None);
        k.forget(&fingerprint("KGAK1"));
        assert_eq!(k.agent_of("KGAK1"), None);
    }

    #[test]
    fn the_master_is_generated_owner_only_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aws-agent-keys.key");
        let a = AgentKeys::load_or_generate(&path).unwrap();
        let b = AgentKeys::load_or_generate(&path).unwrap();
        assert_eq!(a.secret_of("KGAKX"), b.secret_of("KGAKX"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(AgentKeys::load_or_generate(&path).is_err());
    }
}
