//! OpenID Connect sign-in for the console: authorization code flow with PKCE (S256), a
//! state and a nonce, the code exchanged at the token endpoint, the ID token verified
//! (signature by the issuer's JWKS, `iss`, `aud`, `exp`, `nonce`, `azp`).
//!
//! Written on keygate's own pieces rather than an OIDC client crate: the ID token is a
//! JWT verified by the same code (and key pinning) that verifies agents' tokens, and the
//! HTTP is keygate's client; the flow around them is short.

use crate::config::{ConsoleSettings, IssuerSettings, JwksSource};
use crate::http_client::HttpClient;
use crate::pipeline::identify::jwks::Issuer;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What discovery says of the identity provider.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

/// One identity provider, discovered, with its keys.
pub struct Provider {
    /// The settings it was discovered for: another issuer or client after a reload is
    /// discovered again.
    issuer: String,
    client_id: String,
    pub meta: Metadata,
    keys: Issuer,
    http: HttpClient,
    fetched: Instant,
}

/// How long discovery is trusted before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// The providers of this process (one, unless reloads changed it).
#[derive(Default)]
pub struct Providers {
    current: tokio::sync::Mutex<Option<Arc<Provider>>>,
}

impl Providers {
    /// The provider of `s`, discovered now if it was not (or long ago).
    pub async fn get(&self, s: &ConsoleSettings) -> Result<Arc<Provider>, String> {
        let mut cur = self.current.lock().await;
        if let Some(p) = cur.as_ref() {
            if p.issuer == s.issuer
                && p.client_id == s.client_id
                && p.fetched.elapsed() < DISCOVERY_TTL
            {
                return Ok(p.clone());
            }
        }
        let p = Arc::new(discover(s).await?);
        *cur = Some(p.clone());
        Ok(p)
    }
}

async fn discover(s: &ConsoleSettings) -> Result<Provider, String> {
    let http = crate::http_client::build_client(s.ca_file.as_deref(), Duration::from_secs(5))?;
    let url = format!(
        "{}/.well-known/openid-configuration",
        s.issuer.trim_end_matches('/')
    );
    let uri: http::Uri = url.parse().map_err(|_| format!("{url} is not a URL"))?;
    let text = crate::http_client::fetch_text(&http, uri, 256 * 1024).await?;
    let meta: Metadata = serde_json::from_str(&text)
        .map_err(|e| format!("the identity provider's discovery document: {e}"))?;
    // OpenID Connect Discovery 1.0, 4.3: the issuer must be exactly the one configured.
    if meta.issuer != s.issuer {
        return Err(format!(
            "discovery names issuer {:?}, not the configured {:?}",
            meta.issuer, s.issuer
        ));
    }
    if !meta.code_challenge_methods_supported.is_empty()
        && !meta
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
    {
        return Err("the identity provider does not support PKCE with S256".into());
    }
    let jwks: http::Uri = meta
        .jwks_uri
        .parse()
        .map_err(|_| format!("jwks_uri {:?} is not a URL", meta.jwks_uri))?;
    let settings = IssuerSettings {
        name: "console".into(),
        issuer: s.issuer.clone(),
        audiences: vec![s.client_id.clone()],
        jwks: JwksSource::Url {
            url: jwks,
            ca_file: s.ca_file.clone(),
        },
        jwks_refresh: Duration::from_secs(3600),
        agent_claim: String::new(),
        agents_from_claims: false,
        owner_claim: String::new(),
        dev_signing_key: None,
        max_token_lifetime: Duration::from_secs(24 * 3600),
    };
    let keys = Issuer::new(settings, Duration::from_secs(60))?;
    keys.refresh().await?;
    Ok(Provider {
        issuer: s.issuer.clone(),
        client_id: s.client_id.clone(),
        meta,
        keys,
        http,
        fetched: Instant::now(),
    })
}

/// The URL the browser is sent to.
pub fn authorization_url(
    p: &Provider,
    s: &ConsoleSettings,
    state: &str,
    nonce: &str,
    challenge: &str,
) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &s.client_id)
        .append_pair("redirect_uri", &s.redirect_uri)
        .append_pair("scope", &s.scopes)
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if p.meta.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{}{sep}{query}", p.meta.authorization_endpoint)
}

/// Who signed in, from a verified ID token.
#[derive(Debug)]
pub struct Identity {
    pub sub: String,
    /// Only when verified (`email_verified: true`, or absent with
    /// `trust_unverified_email`).
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

/// Exchanges the code (with the PKCE verifier) and verifies the ID token it brings.
pub async fn exchange(
    p: &Provider,
    s: &ConsoleSettings,
    code: &str,
    verifier: &str,
    nonce: &str,
) -> Result<Identity, String> {
    let form = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &s.redirect_uri)
            .append_pair("code_verifier", verifier);
        // A public client names itself in the form; a confidential one authenticates.
        if s.client_secret.is_none() {
            form.append_pair("client_id", &s.client_id);
        }
        form.finish()
    };
    let mut req = http::Request::post(p.meta.token_endpoint.as_str())
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json");
    // RFC 6749 2.3.1: both form-encoded, then Basic.
    if let Some(secret) = &s.client_secret {
        use base64::Engine;
        let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(&s.client_id),
            enc(secret)
        ));
        req = req.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
    }
    let req = req
        .body(crate::error::full_body(form))
        .map_err(|e| e.to_string())?;
    let (status, body) = crate::http_client::send_small(
        &p.http,
        req,
        256 * 1024,
        Duration::from_secs(10),
        "the identity provider's token endpoint",
    )
    .await?;
    if !status.is_success() {
        // The OAuth2 error code only: the body is the provider's, never echoed whole.
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_default();
        return Err(format!(
            "the token endpoint refused the code ({status} {code})"
        ));
    }
    let answer: TokenAnswer = serde_json::from_slice(&body)
        .map_err(|_| "the token endpoint's answer is not JSON".to_string())?;
    let id_token = answer
        .id_token
        .ok_or("the token endpoint returned no ID token")?;
    verify_id_token(p, s, &id_token, nonce).await
}

/// An ID token issued further back than this, or further ahead, is refused.
const ID_TOKEN_MAX_AGE: i64 = 10 * 60;

async fn verify_id_token(
    p: &Provider,
    s: &ConsoleSettings,
    token: &str,
    nonce: &str,
) -> Result<Identity, String> {
    // The system clock, as for `exp` (jsonwebtoken reads it): the identity provider's.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| format!("malformed ID token: {e}"))?;
    let find = |p: &Provider| {
        let set = p.keys.keys.load();
        match &header.kid {
            Some(kid) => set.by_kid.get(kid).cloned(),
            None => set.only.clone(),
        }
    };
    let key = match find(p) {
        Some(k) => k,
        None => {
            // A key rotation: read the set again, once.
            p.keys.refresh().await?;
            find(p).ok_or("the ID token is signed with a key the issuer does not publish")?
        }
    };
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &key.validation)
        .map_err(|e| format!("the ID token is not valid: {e}"))?;
    let c = data.claims;
    let text = |k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_string);
    if text("nonce").as_deref() != Some(nonce) {
        return Err("the ID token's nonce is not this sign-in's".into());
    }
    // Just issued, for this sign-in (OpenID Connect Core 3.1.3.7: iat).
    match c.get("iat").and_then(|v| v.as_i64()) {
        Some(iat) if (now_s - iat).abs() <= ID_TOKEN_MAX_AGE => {}
        _ => return Err("the ID token was not issued just now (iat)".into()),
    }
    // With several audiences, the token must have been issued to this client (azp).
    let audiences = match c.get("aud") {
        Some(serde_json::Value::Array(a)) => a.len(),
        _ => 1,
    };
    match text("azp") {
        Some(azp) if azp != s.client_id => {
            return Err("the ID token was issued to another client".into())
        }
        None if audiences > 1 => return Err("the ID token has several audiences and no azp".into()),
        _ => {}
    }
    let sub = text("sub")
        .filter(|s| !s.is_empty())
        .ok_or("the ID token has no subject")?;
    // An email decides roles and names the approver: only a verified one counts (or, for
    // a provider that never says, one the configuration chooses to trust).
    let verified = match c.get("email_verified").and_then(|v| v.as_bool()) {
        Some(v) => v,
        None => s.trust_unverified_email,
    };
    let email = text("email")
        .filter(|_| verified)
        .map(|e| e.trim().to_ascii_lowercase());
    let groups = match c.get(&s.groups_claim) {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(g)) => vec![g.clone()],
        _ => Vec::new(),
    };
    Ok(Identity {
        sub,
        email,
        name: text("name"),
        groups,
    })
}
