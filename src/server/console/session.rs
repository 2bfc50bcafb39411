//! Signed cookies: the console's sessions and the short-lived state of a sign-in in
//! progress. A cookie is `base64url(JSON) "." base64url(HMAC-SHA256(key, purpose "\0"
//! JSON))`; the purpose keeps a cookie of one kind from being accepted as another, and
//! the expiry inside the signed JSON bounds it whatever the browser does. The cookies hold
//! who signed in, the groups that give them a role, and a sign-in's random values (its
//! PKCE verifier among them, useless without the code the identity provider gives once
//! and only to the redirect URI).
//!
//! Over https the cookies are `__Host-` cookies (`Secure`, `Path=/`, no `Domain`): a
//! sibling subdomain or a plain-http page cannot plant one. A request that carries two
//! cookies of one name is treated as carrying none.

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The session cookie's name (its purpose when signed; over https it is sent as
/// `__Host-kg_session`).
pub const SESSION: &str = "kg_session";
/// The cookie of a sign-in in progress (state, nonce, PKCE verifier).
pub const LOGIN: &str = "kg_login";

/// A cookie's name on the wire.
pub fn cookie_name(name: &str, secure: bool) -> String {
    if secure {
        format!("__Host-{name}")
    } else {
        name.to_string()
    }
}

/// A signed-in user. Roles are not stored: they are worked out from the configuration
/// on every request, so taking a role away takes effect at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Random: what the CSRF token is derived from.
    pub sid: String,
    pub iss: String,
    pub sub: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Only the groups that give a role.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Unix seconds, by keygate's clock: signed in at, and until.
    pub iat: i64,
    pub exp: i64,
}

impl Session {
    /// Who this is on a decision: the verified email, else `sub` at the issuer.
    pub fn principal(&self) -> String {
        match &self.email {
            Some(e) => e.clone(),
            None => format!("{}@{}", self.sub, self.iss),
        }
    }
}

/// A sign-in in progress, between the redirect to the identity provider and its return.
#[derive(Debug, Serialize, Deserialize)]
pub struct Login {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// Unix seconds.
    pub exp: i64,
}

/// The key cookies are signed with.
pub struct Sealer {
    key: hmac::Key,
}

impl Sealer {
    pub fn new(secret: &[u8]) -> Sealer {
        Sealer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn tag(&self, purpose: &str, payload: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(purpose.as_bytes());
        ctx.update(b"\0");
        ctx.update(payload);
        ctx.sign()
    }

    pub fn seal<T: Serialize>(&self, purpose: &str, value: &T) -> String {
        let payload = serde_json::to_vec(value).unwrap_or_default();
        let tag = self.tag(purpose, &payload);
        format!("{}.{}", B64.encode(&payload), B64.encode(tag.as_ref()))
    }

    /// The value, if the signature is this key's for this purpose (checked in constant
    /// time) and the JSON parses; expiry is the caller's to check.
    pub fn open<T: DeserializeOwned>(&self, purpose: &str, cookie: &str) -> Option<T> {
        let (payload, tag) = cookie.split_once('.')?;
        let payload = B64.decode(payload).ok()?;
        let tag = B64.decode(tag).ok()?;
        let mut ctx = Vec::with_capacity(purpose.len() + 1 + payload.len());
        ctx.extend_from_slice(purpose.as_bytes());
        ctx.push(0);
        ctx.extend_from_slice(&payload);
        hmac::verify(&self.key, &ctx, &tag).ok()?;
        serde_json::from_slice(&payload).ok()
    }

    /// The CSRF token of a session: every form carries it, and a post without it (or
    /// with another session's) is refused.
    pub fn csrf(&self, sid: &str) -> String {
        B64.encode(self.tag("csrf", sid.as_bytes()).as_ref())
    }

    pub fn csrf_ok(&self, sid: &str, token: &str) -> bool {
        let want = self.csrf(sid);
        aws_lc_rs::constant_time::verify_slices_are_equal(want.as_bytes(), token.as_bytes()).is_ok()
    }
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    // aws-lc's system RNG does not fail on supported platforms; an all-zero token would
    // be refused by nothing, so a failure is turned into a fresh UUID's randomness.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        b[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        b[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    B64.encode(b)
}

/// The PKCE S256 challenge of a verifier (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    B64.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref())
}

/// A cookie's value in a `Cookie` header; none when the name is there twice (a planted
/// cookie beside keygate's).
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v);
    let first = found.next();
    match found.next() {
        Some(_) => None,
        None => first,
    }
}

/// A `Set-Cookie` value: `HttpOnly`; over https a `__Host-` cookie (`Secure`, `Path=/`),
/// else path `/console`; `same_site` is `Strict` for the session and `Lax` for the
/// sign-in state, which must come back on the identity provider's redirect (a cross-site
/// navigation).
pub fn set_cookie(name: &str, value: &str, max_age: i64, same_site: &str, secure: bool) -> String {
    let path = if secure { "/" } else { "/console" };
    format!(
        "{}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{}",
        cookie_name(name, secure),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_cookie_opens_only_with_its_key_and_purpose() {
        let s = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let login = Login {
            state: "st".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            exp: 9,
        };
        let c = s.seal(LOGIN, &login);
        let back: Login = s.open(LOGIN, &c).unwrap();
        assert_eq!(back.state, "st");
        assert!(s.open::<Login>(SESSION, &c).is_none(), "another purpose");
        let other = Sealer::new(b"another key, just as long as it is");
        assert!(other.open::<Login>(LOGIN, &c).is_none(), "another key");
        // A payload changed by one byte.
        let (p, t) = c.split_once('.').unwrap();
        let mut json = B64.decode(p).unwrap();
        json[10] ^= 1;
        let forged = format!("{}.{t}", B64.encode(json));
        assert!(s.open::<Login>(LOGIN, &forged).is_none());
    }

    #[test]
    fn csrf_tokens_are_per_session() {
        let s = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let t = s.csrf("a");
        assert!(s.csrf_ok("a", &t));
        assert!(!s.csrf_ok("b", &t));
        assert!(!s.csrf_ok("a", ""));
    }

    #[test]
    fn pkce_challenge_is_base64url_sha256_without_padding() {
        // Computed independently: Python's hashlib and base64.urlsafe_b64encode.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mJ92K9ekPDwLG24VOhKu-ncwHGdMjM"),
            "_-anzWpvduJXB0GkkpyNGQkh5icN6aPYZs0clfNh0is"
        );
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; kg_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION), Some("xyz"));
        assert_eq!(cookie(&h, LOGIN), None);
        // Twice (one planted beside keygate's): neither.
        h.append(http::header::COOKIE, "kg_session=planted".parse().unwrap());
        assert_eq!(cookie(&h, SESSION), None);
        assert!(set_cookie(SESSION, "v", 60, "Strict", true)
            .starts_with("__Host-kg_session=v; Path=/; "));
    }
}
