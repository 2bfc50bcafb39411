//! **identify**: who is calling. An agent proves its identity with a JWT bearer token
//! (`Proxy-Authorization`, or `Authorization`), an mTLS client certificate whose SPIFFE ID
//! maps to an agent, or both (then they must agree).
//!
//! A verified token is cached until it expires, so the hot path checks a token's signature
//! once, not on every call. A token that failed is remembered briefly too (by its SHA-256
//! digest), so a flood of one bad token costs one verification. No valid identity:
//! `unauthenticated`; a valid identity that names no known agent: `unknown_agent`.
//!
//! A token is accepted only from an issuer the agent is bound to (`issuers` on its
//! `[[agents]]` entry; an agent taken from claims is bound to the issuer that vouched for
//! it), and only if its lifetime fits the issuer's `max_token_lifetime`.

pub mod aws_key;
pub mod jwks;

use crate::clock::Clock;
use crate::config::{Agent, Agents, IdentitySettings};
use crate::conn::ConnInfo;
use crate::error::{Error, ErrorKind};
use http::HeaderMap;
use jwks::Issuer;
use moka::sync::Cache;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The identify phase: who is calling, verified, and allowed to call now (`check_agent`:
/// not suspended, on a fresh enough view of suspensions). A `keygate.identify` span when a signature was checked (a
/// cached token costs nothing worth one).
///
/// For a tool whose calls keygate signs for AWS (`aws_keys`), an agent without a token or
/// certificate may name itself by the AWS-style key keygate issued it: its SigV4
/// signature is checked once the body is read ([`aws_key::prove`]), before anything is
/// decided.
pub fn identify(
    identifier: &Identifier,
    agents: &Agents,
    conn: &ConnInfo,
    headers: &HeaderMap,
    aws_keys: Option<&aws_key::AgentKeys>,
    check_agent: impl Fn(&str) -> Result<(), Error>,
    trace: Option<&mut crate::telemetry::spans::RequestTrace>,
) -> Result<Identity, Error> {
    let phase = trace
        .as_ref()
        .map(|_| crate::telemetry::spans::RequestTrace::begin("keygate.identify"));
    let aws_claim = aws_keys.and_then(|keys| {
        if conn.spiffe_id.is_some() || bearer(headers, &http::header::PROXY_AUTHORIZATION).is_some()
        {
            return None;
        }
        let v = headers.get(http::header::AUTHORIZATION)?;
        aws_key::is_sigv4(v).then(|| aws_key::claim(keys, agents, v))
    });
    let identity = match aws_claim {
        Some(claimed) => claimed.map(|(agent, key)| Identity {
            agent,
            aws_key: Some(key),
            method: Method::AwsKey,
            issuer: None,
            verified_now: true,
            unproven: true,
        }),
        None => identifier.identify(agents, conn, headers),
    };
    if let (Some(trace), Some(phase)) = (trace, phase) {
        if identity.as_ref().map_or(true, |i| i.verified_now) {
            trace.end_phase(phase, Vec::new(), identity.is_err());
        }
    }
    let identity = identity?;
    check_agent(&identity.agent.id)?;
    Ok(identity)
}

/// How long a token that failed verification is refused without being verified again.
/// Short, so that a refusal that stops being right (a clock catching up, a fixed issuer
/// setup) does not linger; long enough that a flood of one token costs one verification.
pub const REFUSED_TTL: Duration = Duration::from_secs(30);
/// How many failed tokens are remembered (digests, 32 bytes each, plus the error).
const REFUSED_CAPACITY: u64 = 10_000;

/// How the agent proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Jwt,
    Mtls,
    JwtAndMtls,
    /// An AWS-style key keygate issued, by the SigV4 signature it made.
    AwsKey,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Jwt => "jwt",
            Method::Mtls => "mtls",
            Method::JwtAndMtls => "jwt+mtls",
            Method::AwsKey => "aws-sigv4",
        }
    }
}

/// The identified agent of one request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub agent: Arc<Agent>,
    pub method: Method,
    /// Name of the issuer that vouched for the token, if a token was used.
    pub issuer: Option<Arc<str>>,
    /// The token's signature was checked for this request (it was not in the cache).
    pub verified_now: bool,
    /// Named by an AWS key whose signature is not checked yet: nothing is decided for the
    /// request until [`aws_key::prove`] has checked it.
    pub unproven: bool,
    /// The fingerprint of the AWS key that named the agent (a captured secret's handle
    /// key is one).
    pub aws_key: Option<String>,
}

/// A token whose signature and claims were checked.
#[derive(Debug)]
struct Verified {
    agent: Arc<Agent>,
    issuer: Arc<str>,
    exp: u64,
}

/// A token that failed verification, remembered for a short while.
#[derive(Debug)]
struct Refused {
    error: Error,
    /// The key-set generation it failed under: a refusal from before a key change is not
    /// trusted (the new keys might accept the token).
    epoch: u64,
    ttl: Duration,
}

/// Why verification failed, and how long that answer holds for this exact token.
struct Failure {
    error: Error,
    /// `None`: the token may become valid at any moment, do not remember the failure.
    remember_for: Option<Duration>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            error,
            remember_for: Some(REFUSED_TTL),
        }
    }
}

struct RefusedTtl;

impl moka::Expiry<[u8; 32], Arc<Refused>> for RefusedTtl {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Refused>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Evicts a verified token when it expires by keygate's clock.
struct UntilExpiry(Clock);

impl moka::Expiry<Arc<str>, Arc<Verified>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Arc<Verified>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.exp.saturating_sub(unix_secs(&self.0)),
        ))
    }
}

/// The identify phase's state: issuers with their keys, and the verified-token cache.
pub struct Identifier {
    pub issuers: Vec<Arc<Issuer>>,
    cache: Cache<Arc<str>, Arc<Verified>, crate::FastHash>,
    /// Tokens that failed verification, by SHA-256 digest (a digest bounds the memory an
    /// entry takes whatever the token's size, and cannot be steered into colliding with
    /// another token's), for at most [`REFUSED_TTL`].
    refused: Cache<[u8; 32], Arc<Refused>, crate::FastHash>,
    /// Bumped whenever a key set changes (see [`Refused::epoch`]).
    epoch: AtomicU64,
    skew: u64,
    /// Where cache hits and misses are counted, when the gateway set it.
    metrics: Option<Arc<crate::telemetry::metrics::Metrics>>,
    /// What "now" is for a token's expiry: the gateway's clock.
    clock: Clock,
}

fn unix_secs(clock: &Clock) -> u64 {
    u64::try_from(clock.unix_secs()).unwrap_or(0)
}

impl Identifier {
    pub fn new(settings: &IdentitySettings) -> Result<Identifier, String> {
        let issuers = settings
            .issuers
            .iter()
            .map(|s| Issuer::new(s.clone(), settings.clock_skew).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let clock = Clock::default();
        Ok(Identifier {
            issuers,
            cache: Cache::builder()
                .max_capacity(settings.token_cache_capacity)
                .expire_after(UntilExpiry(clock.clone()))
                .build_with_hasher(crate::FastHash::default()),
            refused: Cache::builder()
                .max_capacity(REFUSED_CAPACITY)
                .expire_after(RefusedTtl)
                .build_with_hasher(crate::FastHash::default()),
            epoch: AtomicU64::new(0),
            skew: settings.clock_skew.as_secs(),
            metrics: None,
            clock,
        })
    }

    /// Expires tokens by `clock` (the gateway's) rather than the system clock. Before any
    /// token is verified: the cache is rebuilt with it.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.cache = Cache::builder()
            .max_capacity(self.cache.policy().max_capacity().unwrap_or(0))
            .expire_after(UntilExpiry(clock.clone()))
            .build_with_hasher(crate::FastHash::default());
        self.clock = clock;
        self
    }

    /// Counts verified-token cache hits and misses in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::telemetry::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Forgets every verified token (after a key set changed, a removed key must not keep
    /// vouching for tokens it signed), and every remembered failure (a new key may accept
    /// a token the old ones refused).
    pub fn invalidate_tokens(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
        self.refused.invalidate_all();
    }

    /// Loads every issuer's keys once; returns the failures by issuer name.
    pub async fn load_keys(&self) -> Vec<(String, String)> {
        let mut failures = Vec::new();
        for i in &self.issuers {
            if let Err(e) = i.refresh().await {
                failures.push((i.settings.name.clone(), e));
            }
        }
        failures
    }

    /// Identifies the agent of a request.
    pub fn identify(
        &self,
        agents: &Agents,
        conn: &ConnInfo,
        headers: &HeaderMap,
    ) -> Result<Identity, Error> {
        let by_cert = match &conn.spiffe_id {
            Some(id) => match agents.by_spiffe_id.get(id.as_str()) {
                Some(a) => Some(a.clone()),
                None => {
                    return Err(Error::unauthenticated(
                        "the client certificate's SPIFFE ID is not mapped to an agent",
                    )
                    .with_detail(format!("unmapped SPIFFE ID {id}")))
                }
            },
            None => None,
        };
        // Proxy-Authorization always belongs to keygate. Authorization does too unless the
        // agent is already identified by its certificate: then it is the agent's own tool
        // credential, which strip removes.
        let token = bearer(headers, &http::header::PROXY_AUTHORIZATION).or_else(|| {
            if by_cert.is_none() {
                bearer(headers, &http::header::AUTHORIZATION)
            } else {
                None
            }
        });
        match (token, by_cert) {
            (None, None) => Err(Error::unauthenticated(
                "no agent credential: send a bearer token or a client certificate",
            )),
            (None, Some(agent)) => Ok(Identity {
                aws_key: None,
                agent,
                method: Method::Mtls,
                issuer: None,
                verified_now: false,
                unproven: false,
            }),
            (Some(token), cert) => {
                let (v, verified_now) = self.verify(agents, token)?;
                match cert {
                    Some(a) if a.id != v.agent.id => Err(Error::unauthenticated(
                        "the token and the client certificate identify different agents",
                    )),
                    Some(_) => Ok(Identity {
                        aws_key: None,
                        agent: v.agent.clone(),
                        method: Method::JwtAndMtls,
                        issuer: Some(v.issuer.clone()),
                        verified_now,
                        unproven: false,
                    }),
                    None => Ok(Identity {
                        aws_key: None,
                        agent: v.agent.clone(),
                        method: Method::Jwt,
                        issuer: Some(v.issuer.clone()),
                        verified_now,
                        unproven: false,
                    }),
                }
            }
        }
    }

    /// The verified token, and whether it was verified now (not found in the cache).
    fn verify(&self, agents: &Agents, token: &str) -> Result<(Arc<Verified>, bool), Error> {
        if let Some(v) = self.cache.get(token) {
            // The cache evicts at expiry; this check closes the gap between the two.
            if v.exp.saturating_add(self.skew) > unix_secs(&self.clock) {
                if let Some(m) = &self.metrics {
                    m.token_cache(true);
                }
                return Ok((v, false));
            }
        }
        // Read before the keys are: a failure is remembered under the generation of the
        // keys it was checked against, or an older one (never a newer).
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
        );
        if let Some(r) = self.refused.get(&digest) {
            if r.epoch == epoch {
                if let Some(m) = &self.metrics {
                    m.token_refused_again();
                }
                return Err(r.error.clone());
            }
        }
        if let Some(m) = &self.metrics {
            m.token_cache(false);
        }
        match self.verify_cold(agents, token) {
            Ok(v) => {
                let v = Arc::new(v);
                self.cache.insert(token.into(), v.clone());
                Ok((v, true))
            }
            Err(f) => {
                if let Some(ttl) = f.remember_for.filter(|t| !t.is_zero()) {
                    self.refused.insert(
                        digest,
                        Arc::new(Refused {
                            error: f.error.clone(),
                            epoch,
                            ttl,
                        }),
                    );
                }
                Err(f.error)
            }
        }
    }

    // The cold path, once per token: a large error costs nothing here.
    #[allow(clippy::result_large_err)]
    fn verify_cold(&self, agents: &Agents, token: &str) -> Result<Verified, Failure> {
        // A signature is checked only here, on a token's first use: worth a span.
        let bad = |why: &str| {
            Error::unauthenticated("the agent token is not valid").with_detail(why.to_string())
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| bad(&format!("malformed token: {e}")))?;
        let mut last_err = None;
        let mut immature = false;
        let mut tried = false;
        for issuer in &self.issuers {
            let keys = issuer.keys.load();
            let key = match &header.kid {
                Some(kid) => keys.by_kid.get(kid),
                None => keys.only.as_ref(),
            };
            let Some(key) = key else { continue };
            tried = true;
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key.key,
                &key.validation,
            ) {
                Ok(data) => return Ok(self.agent_for(agents, issuer, data.claims)?),
                Err(e) => {
                    immature |=
                        matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ImmatureSignature);
                    last_err = Some(e);
                }
            }
        }
        if !tried {
            for issuer in &self.issuers {
                issuer.request_refresh();
            }
            // Not remembered: the refresh just asked for may bring the key, and then the
            // token is valid. Refusing it costs no signature check anyway.
            return Err(Failure {
                error: bad("no issuer has the token's signing key (unknown kid)"),
                remember_for: None,
            });
        }
        let error = bad(&format!(
            "verification failed: {}",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        ));
        // A token refused only as not yet valid becomes valid at `nbf`: remembered no
        // longer than until then.
        let remember_for = if immature {
            self.until_valid(token)
        } else {
            Some(REFUSED_TTL)
        };
        Err(Failure {
            error,
            remember_for,
        })
    }

    /// How long a not-yet-valid token stays so: until its `nbf` less the clock skew, at
    /// most [`REFUSED_TTL`]. (Its signature was checked: jsonwebtoken checks `nbf` after
    /// the signature, so this `nbf` is the issuer's.)
    fn until_valid(&self, token: &str) -> Option<Duration> {
        let data = jsonwebtoken::dangerous::insecure_decode::<
            serde_json::Map<String, serde_json::Value>,
        >(token)
        .ok()?;
        let nbf = data.claims.get("nbf").and_then(numeric_date)?;
        let secs = nbf
            .saturating_sub(self.skew)
            .saturating_sub(unix_secs(&self.clock));
        Some(Duration::from_secs(secs).min(REFUSED_TTL))
    }

    /// The agent a verified token asserts, if its issuer may assert it and its lifetime
    /// fits the issuer's limit.
    fn agent_for(
        &self,
        agents: &Agents,
        issuer: &Issuer,
        claims: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Verified, Error> {
        let s = &issuer.settings;
        let refuse =
            |why: String| Error::unauthenticated("the agent token is not valid").with_detail(why);
        let exp = claims.get("exp").and_then(numeric_date).unwrap_or(0);
        // The lifetime is exp − iat, and the remaining lifetime exp − now must fit too: a
        // token without `iat`, or with an `iat` in the future, cannot stretch its validity
        // past the limit. (The remaining lifetime gets the clock skew: a fresh token from
        // an issuer whose clock runs ahead is not refused for it.)
        let max = s.max_token_lifetime.as_secs();
        let now = unix_secs(&self.clock);
        // jsonwebtoken checked `exp` by the system clock; it must hold by keygate's too
        // (the same clock in production; a test's, moved forward, in tests).
        if exp.saturating_add(self.skew) <= now {
            return Err(refuse(format!("token expired at {exp}")));
        }
        let iat = match claims.get("iat") {
            None => None,
            Some(v) => match numeric_date(v) {
                Some(iat) => Some(iat),
                None => return Err(refuse(format!("malformed iat claim {v}"))),
            },
        };
        if iat.is_some_and(|iat| exp.saturating_sub(iat) > max)
            || exp.saturating_sub(now) > max.saturating_add(self.skew)
        {
            return Err(refuse(format!(
                "token lifetime exceeds max_token_lifetime of issuer {:?} ({}s)",
                s.name, max
            )));
        }
        let Some(id) = claims.get(&s.agent_claim).and_then(|v| v.as_str()) else {
            return Err(Error::unauthenticated("the agent token names no agent")
                .with_detail(format!("claim {:?} missing", s.agent_claim)));
        };
        let agent = match agents.by_id.get(id) {
            // Only the issuers an agent is bound to may assert it; the refusal reads like
            // any invalid token, so it tells nothing of which agents exist.
            Some(a) if !a.issuers.iter().any(|n| **n == *s.name) => {
                return Err(refuse(format!(
                    "issuer {:?} may not assert agent {id:?}",
                    s.name
                )))
            }
            Some(a) => a.clone(),
            None if s.agents_from_claims => {
                let owner = claims
                    .get(&s.owner_claim)
                    .and_then(|v| v.as_str())
                    .filter(|o| !o.is_empty())
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::UnknownAgent,
                            "the agent token names no owner for the agent",
                        )
                    })?;
                Arc::new(Agent {
                    id: id.into(),
                    owner: owner.into(),
                    spiffe_id: None,
                    issuers: vec![s.name.as_str().into()],
                    attributes: Default::default(),
                })
            }
            None => {
                return Err(Error::new(
                    ErrorKind::UnknownAgent,
                    format!("agent {id:?} is not known to keygate"),
                ))
            }
        };
        Ok(Verified {
            agent,
            issuer: s.name.as_str().into(),
            exp,
        })
    }
}

/// A JWT NumericDate (RFC 7519: seconds, possibly fractional) as whole seconds.
fn numeric_date(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// The token of a `Bearer` credential in this header, if any. GitHub's clients (`gh`,
/// PyGithub, Octokit) write the same credential with the scheme `token`, which is taken
/// alike: the token is verified as a JWT either way.
fn bearer<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Option<&'h str> {
    let v = headers.get(name)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        let t = token.trim();
        (!t.is_empty()).then_some(t)
    } else {
        None
    }
}

/// The SPIFFE ID of a certificate: its single `spiffe://` URI SAN. A certificate with
/// several SPIFFE IDs is ambiguous and yields none (the SPIFFE X.509-SVID standard allows
/// exactly one).
pub fn spiffe_id_of(cert_der: &[u8]) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut found = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name {
            if uri.starts_with("spiffe://") {
                if found.is_some() {
                    return None;
                }
                found = Some(uri.to_string());
            }
        }
    }
    found.filter(|id| crate::config::is_spiffe_id(id))
}
