//! Issuer key sets: parsed from a JWKS file or HTTPS URL, refreshed in the background.
//!
//! Every key is pinned to exactly one algorithm, taken from its `alg` member or, where the
//! key type admits only one (Ed25519, P-256, P-384), from the key type. Symmetric (`oct`)
//! keys are refused outright: a JWKS is public, so an HMAC key from it would let anyone
//! sign tokens (the "HS256 signed with the public key" confusion).

use crate::config::{IssuerSettings, JwksSource};
use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// One verification key with the validation rules that go with it.
pub struct VerificationKey {
    pub key: DecodingKey,
    pub validation: Validation,
}

/// The keys of one issuer, by key id.
#[derive(Default)]
pub struct KeySet {
    pub by_kid: HashMap<String, Arc<VerificationKey>>,
    /// Present when the set holds exactly one key: used for tokens without `kid`.
    pub only: Option<Arc<VerificationKey>>,
    /// Identifies the set's content, to tell whether a refresh changed anything.
    pub fingerprint: u64,
}

/// One configured issuer and its current keys.
pub struct Issuer {
    pub settings: IssuerSettings,
    pub keys: ArcSwap<KeySet>,
    skew: u64,
    last_file_mtime: std::sync::Mutex<Option<SystemTime>>,
    last_refresh: std::sync::Mutex<Option<Instant>>,
    refresh_now: tokio::sync::Notify,
    http: Option<crate::http_client::HttpClient>,
}

impl Issuer {
    pub fn new(settings: IssuerSettings, skew: Duration) -> Result<Issuer, String> {
        let http = match &settings.jwks {
            JwksSource::Url { ca_file, .. } => Some(crate::http_client::build_client(
                ca_file.as_deref(),
                Duration::from_secs(5),
            )?),
            JwksSource::File(_) => None,
        };
        Ok(Issuer {
            settings,
            keys: ArcSwap::from_pointee(KeySet::default()),
            skew: skew.as_secs(),
            last_file_mtime: std::sync::Mutex::new(None),
            last_refresh: std::sync::Mutex::new(None),
            refresh_now: tokio::sync::Notify::new(),
            http,
        })
    }

    /// Loads the key set now. Returns whether it changed. On failure the old keys stay.
    pub async fn refresh(&self) -> Result<bool, String> {
        if let Ok(mut t) = self.last_refresh.lock() {
            *t = Some(Instant::now());
        }
        // The file's mtime is remembered only once its content parsed: a file caught
        // half-written must be read again even if the finished file has the same mtime.
        let mut file_mtime = None;
        let text = match &self.settings.jwks {
            JwksSource::File(p) => {
                let mtime = std::fs::metadata(p).and_then(|m| m.modified()).ok();
                let unchanged = self
                    .last_file_mtime
                    .lock()
                    .map(|last| mtime.is_some() && *last == mtime)
                    .unwrap_or(false);
                if unchanged {
                    return Ok(false);
                }
                let text = tokio::fs::read_to_string(p)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                file_mtime = Some(mtime);
                text
            }
            JwksSource::Url { url, .. } => {
                let client = self.http.as_ref().ok_or("no HTTP client")?;
                crate::http_client::fetch_text(client, url.clone(), 1 << 20).await?
            }
        };
        let set = parse_jwks(&text, &self.settings, self.skew)?;
        if let Some(mtime) = file_mtime {
            if let Ok(mut last) = self.last_file_mtime.lock() {
                *last = mtime;
            }
        }
        let changed = set.fingerprint != self.keys.load().fingerprint;
        if changed {
            self.keys.store(Arc::new(set));
        }
        Ok(changed)
    }

    /// Asks the refresher for an early refresh (an unknown `kid` may mean a key rotation),
    /// at most once every ten seconds.
    pub fn request_refresh(&self) {
        let recent = self
            .last_refresh
            .lock()
            .map(|t| t.is_some_and(|t| t.elapsed() < Duration::from_secs(10)))
            .unwrap_or(true);
        if !recent {
            self.refresh_now.notify_one();
        }
    }

    /// Waits for the next refresh: the configured interval, or an early request.
    pub async fn wait_for_refresh(&self) {
        let _ = tokio::time::timeout(self.settings.jwks_refresh, self.refresh_now.notified()).await;
    }
}

fn pinned_algorithm(jwk: &serde_json::Value) -> Result<Algorithm, String> {
    let kty = jwk.get("kty").and_then(|v| v.as_str()).unwrap_or("");
    let crv = jwk.get("crv").and_then(|v| v.as_str()).unwrap_or("");
    let implied = match (kty, crv) {
        ("OKP", "Ed25519") => Some(Algorithm::EdDSA),
        ("EC", "P-256") => Some(Algorithm::ES256),
        ("EC", "P-384") => Some(Algorithm::ES384),
        ("RSA", _) => None,
        ("oct", _) => return Err("symmetric (oct) keys are never accepted from a JWKS".into()),
        _ => return Err(format!("unsupported key type {kty:?} {crv:?}")),
    };
    let alg = match jwk.get("alg").and_then(|v| v.as_str()) {
        Some(a) => Algorithm::from_str(a).map_err(|_| format!("unsupported alg {a:?}"))?,
        None => implied.ok_or("an RSA key needs an \"alg\" member to pin its algorithm")?,
    };
    let consistent = match alg {
        Algorithm::EdDSA => kty == "OKP",
        Algorithm::ES256 => kty == "EC" && crv == "P-256",
        Algorithm::ES384 => kty == "EC" && crv == "P-384",
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => kty == "RSA",
        _ => false,
    };
    if !consistent {
        return Err(format!("alg {alg:?} does not fit key type {kty:?}"));
    }
    Ok(alg)
}

/// Parses a JWKS document. Keys that cannot be used are skipped with a warning; a
/// document with no usable key is an error.
pub fn parse_jwks(text: &str, settings: &IssuerSettings, skew: u64) -> Result<KeySet, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("JWKS has no \"keys\" array")?;
    let mut set = KeySet {
        fingerprint: {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut h);
            h.finish()
        },
        ..KeySet::default()
    };
    let mut usable = 0;
    let mut last = None;
    for (i, k) in keys.iter().enumerate() {
        if k.get("use")
            .and_then(|u| u.as_str())
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let built = pinned_algorithm(k).and_then(|alg| {
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(k.clone()).map_err(|e| format!("malformed key: {e}"))?;
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
            Ok(Arc::new(VerificationKey {
                key,
                validation: validation(alg, settings, skew),
            }))
        });
        match built {
            Ok(vk) => {
                usable += 1;
                last = Some(vk.clone());
                if let Some(kid) = k.get("kid").and_then(|v| v.as_str()) {
                    set.by_kid.insert(kid.to_string(), vk);
                }
            }
            Err(e) => tracing::warn!(issuer = %settings.name, key = i, "skipping JWKS key: {e}"),
        }
    }
    if usable == 0 {
        return Err("JWKS holds no usable signing key".into());
    }
    if usable == 1 {
        set.only = last;
    }
    Ok(set)
}

fn validation(alg: Algorithm, s: &IssuerSettings, skew: u64) -> Validation {
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.leeway = skew;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = true;
    v.set_audience(&s.audiences);
    v.set_issuer(&[&s.issuer]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v
}
