//! `oauth2`: an access token from the tool's authorization server, asked for per agent and
//! per operation.
//!
//! Two grants:
//! - `client_credentials`: keygate's client asks for a token with the scope (and audience,
//!   RFC 8707 resource) configured for the operation being called.
//! - RFC 8693 token exchange: the `subject_token` is a JWT keygate mints asserting the
//!   agent (`sub` the agent, `owner` its human), the `actor_token` one asserting keygate's
//!   client, so the token the tool receives says the agent acts through keygate (`act`);
//!   the scope asked for is the operation's.
//!
//! keygate authenticates as its client with `client_secret_basic`, `client_secret_post`
//! or `private_key_jwt` (RFC 7523: a client assertion signed with the client's key, `aud`
//! the token endpoint). Tokens are cached per agent and scope in an [`IssuedCache`] until
//! shortly before they expire and refreshed ahead of time, so a warm call never waits on
//! the server; concurrent cold calls make one token request. An operation with no scope
//! configured is refused rather than given whatever the server grants by default. A
//! refusal from the server fails the call with its OAuth2 error code (`invalid_scope`);
//! nothing falls back.
//!
//! The audit log and the span get the token's `jti` when it is a JWT that has one (else
//! the first 12 hex digits of its SHA-256), its scope and its expiry, never the token.

use super::cache::{Cacheable, IssuedCache, Key, Served};
use super::issued::{place, Issued, Placement, Unavailable};
use super::signer::Signer;
use crate::clock::Clock;
use crate::config::{ClientAuthSpec, Grant, Injection, OAuth2Spec, SecretSource, TokenScope};
use crate::http_client::HttpClient;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How long a token request may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a token endpoint's answer keygate reads.
const MAX_ANSWER: usize = 64 * 1024;
/// The life assumed for a token whose answer says none (no `expires_in`, not a JWT with an
/// `exp`): short, so an unknown expiry costs a token request, not a refused call.
const UNKNOWN_LIFE: u64 = 120;
/// The longest a token is kept, whatever its server says.
const MAX_LIFE: u64 = 24 * 3600;
/// The life of the JWTs keygate signs for a token request (client assertion, subject and
/// actor tokens): each is used once, at once.
const ASSERTION_LIFE: u64 = 60;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A token the server issued, ready to place.
pub struct Token {
    placement: Placement,
    /// The token itself, to revoke it (RFC 7009; GitHub's `DELETE /installation/token`)
    /// when the task it was issued for ends.
    pub(super) value: Arc<str>,
    id: Arc<str>,
    scope: Arc<str>,
    expires_unix: u64,
    weight: usize,
}

impl Token {
    /// A token placed as `injection` says; `id` and `scope` are what the audit records.
    pub(super) fn new(
        injection: &Injection,
        value: &str,
        id: Arc<str>,
        scope: Arc<str>,
        expires_unix: u64,
    ) -> Result<Token, Unavailable> {
        Ok(Token {
            placement: place(injection, value)?,
            value: value.into(),
            weight: 2 * value.len() + id.len() + scope.len(),
            id,
            scope,
            expires_unix,
        })
    }

    /// The credential a call gets from this token.
    pub(super) fn issued(&self, served: Served) -> Issued {
        Issued {
            id: self.id.clone(),
            placement: self.placement.clone(),
            minted: false,
            scope: Some(self.scope.clone()),
            expires_unix: Some(self.expires_unix),
            cached: Some(served == Served::Cached),
        }
    }
}

impl Cacheable for Token {
    fn expires_unix(&self) -> u64 {
        self.expires_unix
    }
    fn weight(&self) -> usize {
        self.weight
    }
}

/// The client's private key for `private_key_jwt`, parsed once.
struct ClientKey {
    key: jsonwebtoken::EncodingKey,
    algorithm: jsonwebtoken::Algorithm,
    kid: Option<String>,
}

/// What keygate mints to assert the agent and itself in a token exchange.
pub struct Minter {
    pub signer: Arc<Signer>,
    pub issuer: String,
}

/// What one operation's token is asked for, and the scope part of its cache key.
struct Resolved {
    scope: TokenScope,
    key: Arc<str>,
}

/// The `oauth2` provider of one tool.
pub struct OAuth2Provider {
    spec: Arc<OAuth2Spec>,
    /// The operations configured, by name, and what every other operation gets (None:
    /// no scope configured, such calls are refused).
    operations: std::collections::HashMap<String, Arc<Resolved>, crate::FastHash>,
    default_scope: Option<Arc<Resolved>>,
    injection: Injection,
    http: HttpClient,
    cache: IssuedCache<Token>,
    clock: Clock,
    client_key: Option<Arc<ClientKey>>,
    minter: Arc<Minter>,
}

impl std::fmt::Debug for OAuth2Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Provider")
            .field("token_endpoint", &self.spec.token_endpoint)
            .field("client_id", &self.spec.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    /// A token exchange's subject, in a task: the task the token is asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<&'a str>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<serde_json::Value>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

/// The claims of a JWT access token keygate reads (unverified: only to name and time it).
#[derive(Deserialize)]
struct TokenClaims {
    jti: Option<String>,
    exp: Option<u64>,
}

impl OAuth2Provider {
    /// Builds the provider; a `private_key_jwt` key that cannot be read is an error.
    pub fn new(
        spec: Arc<OAuth2Spec>,
        injection: Injection,
        http: HttpClient,
        clock: Clock,
        minter: Arc<Minter>,
    ) -> Result<OAuth2Provider, String> {
        let client_key = match &spec.client_auth {
            ClientAuthSpec::PrivateKeyJwt { key_file, key_id } => {
                Some(Arc::new(read_client_key(key_file, key_id.clone())?))
            }
            _ => None,
        };
        let resolve = |operation: &str| {
            spec.scope_for(operation).map(|scope| {
                let key = format!(
                    "{}\n{}\n{}",
                    scope.scope.as_deref().unwrap_or_default(),
                    scope.audience.as_deref().unwrap_or_default(),
                    scope.resource.as_deref().unwrap_or_default()
                );
                Arc::new(Resolved {
                    scope,
                    key: key.into(),
                })
            })
        };
        let operations = spec
            .operations
            .keys()
            .filter_map(|op| resolve(op).map(|r| (op.clone(), r)))
            .collect();
        // An operation without an entry of its own gets the tool's fields alone.
        let default_scope = resolve("");
        Ok(OAuth2Provider {
            operations,
            default_scope,
            cache: IssuedCache::new(clock.clone()),
            spec,
            injection,
            http,
            clock,
            client_key,
            minter,
        })
    }

    /// Whether the client secret can be read (for the start-up log).
    pub fn status(&self) -> Result<(), String> {
        match &self.spec.client_auth {
            ClientAuthSpec::SecretBasic(s) | ClientAuthSpec::SecretPost(s) => {
                read_secret(s).map(|_| ())
            }
            ClientAuthSpec::PrivateKeyJwt { .. } => Ok(()),
        }
    }

    /// What `operation`'s token is asked for, and its cache key's scope part (resolved
    /// once, at start: the warm path builds nothing).
    fn resolved(&self, operation: &str) -> Option<&Arc<Resolved>> {
        self.operations
            .get(operation)
            .or(self.default_scope.as_ref())
    }

    /// The token for `operation` of `agent`: cached while it is usable, else asked for now.
    pub async fn issue(
        &self,
        agent: &crate::config::Agent,
        operation: &str,
        task: Option<&str>,
    ) -> Result<Issued, Unavailable> {
        let Some(resolved) = self.resolved(operation) else {
            return Err(Unavailable::new(format!(
                "no scope is configured for operation {operation:?} (set operations.{operation}.scope, or the tool's scope; \"\" asks for none)"
            )));
        };
        let key = Key {
            agent: agent.id.clone(),
            scope: resolved.key.clone(),
            task: task.map(Arc::from),
        };
        if let Some(entry) = self.cache.get_warm(&key).await {
            return Ok(entry.value.issued(Served::Cached));
        }
        let scope = resolved.scope.clone();
        let request = Arc::new(Request {
            spec: self.spec.clone(),
            injection: self.injection.clone(),
            http: self.http.clone(),
            clock: self.clock.clone(),
            client_key: self.client_key.clone(),
            minter: self.minter.clone(),
            agent: agent.id.clone(),
            owner: agent.owner.clone(),
            scope,
            task: task.map(Arc::from),
        });
        let (entry, served) = self
            .cache
            .get_or_issue(key, move || {
                let request = request.clone();
                async move { request.send().await }
            })
            .await?;
        Ok(entry.value.issued(served))
    }

    /// Drops the tokens cached for `agent`.
    pub fn invalidate_agent(&self, agent: &str) {
        self.cache.invalidate_agent(agent);
    }

    /// Drops the tokens issued for `task`'s calls, and revokes each at the authorization
    /// server's revocation endpoint (RFC 7009) when one is configured. Returns how many
    /// were dropped, and the revocations that failed (each described, never the token).
    pub async fn end_task(&self, task: &str) -> (usize, Vec<String>) {
        let tokens = self.cache.take_task(task);
        let mut failed = Vec::new();
        if let Some(endpoint) = &self.spec.revocation_endpoint {
            for t in &tokens {
                if let Err(e) = self.revoke(endpoint, &t.value.value).await {
                    failed.push(format!("{}: {}", t.value.id, e.reason));
                }
            }
        }
        (tokens.len(), failed)
    }

    /// RFC 7009: revokes `token` at `endpoint`, authenticated as keygate's client.
    async fn revoke(&self, endpoint: &http::Uri, token: &str) -> Result<(), Unavailable> {
        let now = u64::try_from(self.clock.unix_secs())
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| Unavailable::new("system clock is before 1970"))?;
        let (form, basic) = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token);
            form.append_pair("token_type_hint", "access_token");
            let basic = authenticate(
                &self.spec,
                self.client_key.as_deref(),
                &mut form,
                &self.spec.token_endpoint.to_string(),
                now,
            )?;
            (form.finish(), basic)
        };
        let mut req = http::Request::post(endpoint.clone()).header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
        if let Some(b) = basic {
            let mut v = http::HeaderValue::from_str(&b)
                .map_err(|_| Unavailable::new("the client credentials are not a valid header"))?;
            v.set_sensitive(true);
            req = req.header(http::header::AUTHORIZATION, v);
        }
        let req = req
            .body(crate::error::full_body(form))
            .map_err(|e| Unavailable::new(format!("cannot build the revocation request: {e}")))?;
        let who = format!("the revocation endpoint {endpoint}");
        let (status, _) =
            crate::http_client::send_small(&self.http, req, MAX_ANSWER, TIMEOUT, &who)
                .await
                .map_err(Unavailable::new)?;
        if !status.is_success() {
            return Err(Unavailable::new(format!(
                "{who} refused the revocation (HTTP {})",
                status.as_u16()
            )));
        }
        Ok(())
    }
}

/// One token request, kept for the cache to send (again, for a refresh).
struct Request {
    spec: Arc<OAuth2Spec>,
    injection: Injection,
    http: HttpClient,
    clock: Clock,
    client_key: Option<Arc<ClientKey>>,
    minter: Arc<Minter>,
    agent: Arc<str>,
    owner: Arc<str>,
    scope: TokenScope,
    /// The task the token is for (a token exchange's subject token names it).
    task: Option<Arc<str>>,
}

impl Request {
    fn now(&self) -> Result<u64, Unavailable> {
        u64::try_from(self.clock.unix_secs())
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| Unavailable::new("system clock is before 1970"))
    }

    /// The form of the token request, and the `Authorization` of `client_secret_basic`.
    fn form(&self, now: u64) -> Result<(String, Option<String>), Unavailable> {
        let spec = &*self.spec;
        let endpoint = spec.token_endpoint.to_string();
        let mut form = form_urlencoded::Serializer::new(String::new());
        match spec.grant {
            Grant::ClientCredentials => {
                form.append_pair("grant_type", "client_credentials");
            }
            Grant::TokenExchange => {
                form.append_pair("grant_type", TOKEN_EXCHANGE);
                let subject = self.mint(
                    &self.agent,
                    Some(&self.owner),
                    self.task.as_deref(),
                    &endpoint,
                    now,
                )?;
                let actor = self.mint(&spec.client_id, None, None, &endpoint, now)?;
                form.append_pair("subject_token", &subject);
                form.append_pair("subject_token_type", JWT_TYPE);
                form.append_pair("actor_token", &actor);
                form.append_pair("actor_token_type", JWT_TYPE);
                form.append_pair("requested_token_type", ACCESS_TOKEN_TYPE);
            }
        }
        if let Some(s) = self.scope.scope.as_deref().filter(|s| !s.is_empty()) {
            form.append_pair("scope", s);
        }
        if let Some(a) = &self.scope.audience {
            form.append_pair("audience", a);
        }
        if let Some(r) = &self.scope.resource {
            form.append_pair("resource", r);
        }
        let basic = authenticate(spec, self.client_key.as_deref(), &mut form, &endpoint, now)?;
        Ok((form.finish(), basic))
    }

    /// A JWT keygate signs asserting `sub` to the token endpoint (a token exchange's
    /// subject or actor token).
    fn mint(
        &self,
        sub: &str,
        owner: Option<&str>,
        task: Option<&str>,
        audience: &str,
        now: u64,
    ) -> Result<String, Unavailable> {
        let claims = AssertionClaims {
            iss: &self.minter.issuer,
            sub,
            aud: audience,
            iat: now,
            exp: now + ASSERTION_LIFE,
            jti: uuid::Uuid::new_v4().to_string(),
            owner,
            task,
        };
        self.minter
            .signer
            .sign_jwt(&claims)
            .map_err(Unavailable::new)
    }

    async fn send(&self) -> Result<Token, Unavailable> {
        let now = self.now()?;
        let (form, basic) = self.form(now)?;
        let endpoint = &self.spec.token_endpoint;
        let mut req = http::Request::post(endpoint.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        if let Some(b) = basic {
            let mut v = http::HeaderValue::from_str(&b)
                .map_err(|_| Unavailable::new("the client credentials are not a valid header"))?;
            v.set_sensitive(true);
            req = req.header(http::header::AUTHORIZATION, v);
        }
        let req = req
            .body(crate::error::full_body(form))
            .map_err(|e| Unavailable::new(format!("cannot build the token request: {e}")))?;
        let who = format!("the token endpoint {endpoint}");
        let (status, body) =
            crate::http_client::send_small(&self.http, req, MAX_ANSWER, TIMEOUT, &who)
                .await
                .map_err(Unavailable::new)?;
        if !status.is_success() {
            let code = serde_json::from_slice::<ErrorAnswer>(&body)
                .map(|e| e.error)
                .unwrap_or_default();
            return Err(Unavailable::refused(
                &code,
                format!(
                    "{who} refused the token request (HTTP {}): {}",
                    status.as_u16(),
                    if code.is_empty() {
                        "no error code"
                    } else {
                        &code
                    }
                ),
            ));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            Unavailable::new(format!("{who} answered without an access_token in JSON"))
        })?;
        self.token(answer, now)
    }

    fn token(&self, answer: TokenAnswer, now: u64) -> Result<Token, Unavailable> {
        let value = answer.access_token;
        if value.is_empty() {
            return Err(Unavailable::new("the token endpoint issued an empty token"));
        }
        let claims = jwt_claims(&value);
        let expires_in = match &answer.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            // Some servers send it as a string.
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let expires_unix = match (expires_in, claims.as_ref().and_then(|c| c.exp)) {
            (Some(secs), _) => now.saturating_add(secs),
            (None, Some(exp)) => exp,
            (None, None) => now + UNKNOWN_LIFE,
        }
        .min(now + MAX_LIFE);
        // The server may grant another scope than asked (RFC 6749 3.3): one wider than
        // the operation's is refused, never used.
        let asked: Vec<&str> = self
            .scope
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_ascii_whitespace()
            .collect();
        if let Some(granted) = &answer.scope {
            if let Some(extra) = granted
                .split_ascii_whitespace()
                .find(|g| !asked.is_empty() && !asked.contains(g))
            {
                return Err(Unavailable::new(format!(
                    "the token endpoint granted scope {extra:?}, which was not asked for"
                )));
            }
        }
        let id: Arc<str> = match claims.and_then(|c| c.jti) {
            Some(jti) if !jti.is_empty() && jti.len() <= 128 => format!("jti:{jti}").into(),
            _ => super::static_secret::fingerprint(&value).into(),
        };
        let scope: Arc<str> = answer
            .scope
            .or_else(|| self.scope.scope.clone())
            .unwrap_or_default()
            .into();
        Token::new(&self.injection, &value, id, scope, expires_unix)
    }
}

/// Authenticates a request to the authorization server as keygate's client: adds the
/// form fields of `client_secret_post` and `private_key_jwt` (its assertion's `aud`
/// `audience`), and returns the `Authorization` of `client_secret_basic`.
fn authenticate(
    spec: &OAuth2Spec,
    client_key: Option<&ClientKey>,
    form: &mut form_urlencoded::Serializer<'_, String>,
    audience: &str,
    now: u64,
) -> Result<Option<String>, Unavailable> {
    let mut basic = None;
    match &spec.client_auth {
        ClientAuthSpec::SecretBasic(source) => {
            // RFC 6749 2.3.1: each part form-encoded before the base64.
            let secret = read_secret(source).map_err(Unavailable::new)?;
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(&spec.client_id), enc(&secret));
            basic = Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ));
        }
        ClientAuthSpec::SecretPost(source) => {
            let secret = read_secret(source).map_err(Unavailable::new)?;
            form.append_pair("client_id", &spec.client_id);
            form.append_pair("client_secret", &secret);
        }
        ClientAuthSpec::PrivateKeyJwt { .. } => {
            let Some(key) = client_key else {
                return Err(Unavailable::new("the client's private key is not loaded"));
            };
            let claims = AssertionClaims {
                iss: &spec.client_id,
                sub: &spec.client_id,
                aud: audience,
                iat: now,
                exp: now + ASSERTION_LIFE,
                jti: uuid::Uuid::new_v4().to_string(),
                owner: None,
                task: None,
            };
            let mut header = jsonwebtoken::Header::new(key.algorithm);
            header.kid = key.kid.clone();
            let assertion = jsonwebtoken::encode(&header, &claims, &key.key)
                .map_err(|e| Unavailable::new(format!("cannot sign the client assertion: {e}")))?;
            form.append_pair("client_id", &spec.client_id);
            form.append_pair("client_assertion_type", ASSERTION_TYPE);
            form.append_pair("client_assertion", &assertion);
        }
    }
    Ok(basic)
}

/// The claims of a token that is a JWT (read, not verified: keygate only names and times
/// it); None for an opaque token.
fn jwt_claims(token: &str) -> Option<TokenClaims> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn read_secret(source: &SecretSource) -> Result<String, String> {
    let secret = match source {
        SecretSource::Env(v) => std::env::var(v).map_err(|_| format!("{v} is not set"))?,
        SecretSource::File(p) => {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?
        }
    };
    let secret = secret.trim();
    if secret.is_empty() {
        return Err("the client secret is empty".into());
    }
    Ok(secret.to_string())
}

/// Reads the client's PKCS#8 (or PKCS#1 RSA) PEM key: RSA signs RS256, P-256 ES256.
fn read_client_key(path: &std::path::Path, kid: Option<String>) -> Result<ClientKey, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (key, algorithm) = if let Ok(k) = jsonwebtoken::EncodingKey::from_rsa_pem(&pem) {
        (k, jsonwebtoken::Algorithm::RS256)
    } else if let Ok(k) = jsonwebtoken::EncodingKey::from_ec_pem(&pem) {
        (k, jsonwebtoken::Algorithm::ES256)
    } else {
        return Err(format!(
            "{} holds no RSA or P-256 private key in PEM",
            path.display()
        ));
    };
    Ok(ClientKey {
        key,
        algorithm,
        kid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token request for `scope` (nothing is sent: only its answer is read).
    fn request(scope: &str) -> Request {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_generate(
            &dir.path().join("k.pem"),
            crate::config::SigningAlgorithm::EdDsa,
            true,
        )
        .unwrap();
        Request {
            spec: Arc::new(OAuth2Spec {
                token_endpoint: http::Uri::from_static("https://as.example/token"),
                revocation_endpoint: None,
                client_id: "c".into(),
                client_auth: ClientAuthSpec::SecretPost(SecretSource::Env("S".into())),
                grant: Grant::ClientCredentials,
                default: TokenScope::default(),
                operations: Default::default(),
            }),
            injection: Injection::Bearer,
            http: crate::http_client::build_client(None, Duration::from_secs(1)).unwrap(),
            clock: Clock::default(),
            client_key: None,
            minter: Arc::new(Minter {
                signer: Arc::new(signer),
                issuer: "keygate".into(),
            }),
            agent: "a".into(),
            owner: "o".into(),
            scope: TokenScope {
                scope: Some(scope.into()),
                ..TokenScope::default()
            },
            task: None,
        }
    }

    fn answer(scope: Option<&str>, expires_in: Option<u64>) -> TokenAnswer {
        TokenAnswer {
            access_token: "opaque-token-value".into(),
            expires_in: expires_in.map(serde_json::Value::from),
            scope: scope.map(str::to_string),
        }
    }

    #[test]
    fn a_token_granted_more_than_was_asked_is_refused() {
        let r = request("read write");
        assert!(r.token(answer(Some("read"), Some(600)), 1000).is_ok());
        assert!(r.token(answer(Some("write read"), Some(600)), 1000).is_ok());
        assert!(r.token(answer(None, Some(600)), 1000).is_ok());
        let e = r
            .token(answer(Some("read admin"), Some(600)), 1000)
            .err()
            .unwrap();
        assert!(e.reason.contains("\"admin\""), "{}", e.reason);
    }

    #[test]
    fn a_tokens_life_is_capped_and_never_overflows() {
        let r = request("read");
        let t = r.token(answer(None, Some(u64::MAX)), 1000).unwrap();
        assert_eq!(t.expires_unix, 1000 + MAX_LIFE);
        let t = r.token(answer(None, Some(600)), 1000).unwrap();
        assert_eq!(t.expires_unix, 1600);
        let t = r.token(answer(None, None), 1000).unwrap();
        assert_eq!(t.expires_unix, 1000 + UNKNOWN_LIFE);
        assert!(t.id.starts_with("sha256:"), "{}", t.id);
    }

    #[test]
    fn a_jwt_token_is_named_by_its_jti_and_timed_by_its_exp() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let t = format!("{}.{}.sig", b64("{}"), b64(r#"{"jti":"abc","exp":1234}"#));
        let c = jwt_claims(&t).unwrap();
        assert_eq!(c.jti.as_deref(), Some("abc"));
        assert_eq!(c.exp, Some(1234));
        assert!(jwt_claims("opaque-token").is_none());
        assert!(jwt_claims("a.b.c.d").is_none());
    }

    #[test]
    fn only_a_plain_refusal_code_reaches_the_agent() {
        assert_eq!(
            Unavailable::refused("invalid_scope", "x")
                .refusal
                .as_deref(),
            Some("invalid_scope")
        );
        assert_eq!(Unavailable::refused("<b>hi</b>", "x").refusal, None);
        assert_eq!(Unavailable::refused("", "x").refusal, None);
    }
}
