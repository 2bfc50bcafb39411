//! identify, end to end: keygate started in-process on loopback in front of a recording
//! upstream. Who may call (verified JWT bearer token, mTLS client certificate with a
//! SPIFFE ID, or both), what every refusal looks like on the wire, that a refused request
//! never reaches the tool, and what the audit record says about the caller.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

mod common;
use common::*;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const SECRET_NAME: &str = "KEYGATE_IDENTIFY_TEST_TOOL_SECRET";
const SECRET: &str = "identify-tool-secret-5b1f0c";
const ISS: &str = "test-iss";
const AUD: &str = "keygate";
const OWNER: &str = "alice@example.com";
const SPIFFE_A: &str = "spiffe://example.org/agent-a";
const SPIFFE_B: &str = "spiffe://example.org/agent-b";
const PATH: &str = "/tools/t/v1/items";

/// Tool `t` on `up`, its static secret in a file under `dir` (the gateway's directory).
fn tool(dir: &Path, up: &RawUpstream) -> String {
    static_tool("t", &up.url(), &secret_file(dir, SECRET_NAME, SECRET))
}

fn agent_with_spiffe(id: &str, owner: &str, spiffe_id: &str) -> String {
    format!("[[agents]]\nid = {id:?}\nowner = {owner:?}\nspiffe_id = {spiffe_id:?}\n")
}

/// An `[[agents]]` block bound to the named issuers.
fn agent_bound_to(id: &str, owner: &str, issuers: &[&str]) -> String {
    format!("[[agents]]\nid = {id:?}\nowner = {owner:?}\nissuers = {issuers:?}\n")
}

/// The value of `keygate_token_cache_requests_total{result="<result>"}`.
async fn token_cache_count(gw: &TestGateway, result: &str) -> u64 {
    let r = Client::http1()
        .get(&format!("http://{}/metrics", gw.admin_addr), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let series = format!("keygate_token_cache_requests_total{{result=\"{result}\"}} ");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{}", r.text()))
        .trim()
        .parse()
        .unwrap()
}

fn https_url(gw: &TestGateway, path: &str) -> String {
    format!("https://{}{}", gw.addr, path)
}

/// The audit records once at least `n` are written (a record is written when its response
/// body is done, which may be a moment after the client has read it).
async fn audit_at_least(gw: &TestGateway, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records = gw.audit().await;
        if records.len() >= n || tokio::time::Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A refusal as keygate sends it: the status, `{"error": code, ...}`, and for 401 the
/// `WWW-Authenticate` challenge.
#[track_caller]
fn assert_refused(r: &Response, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let body = r.json();
    assert_eq!(body["error"], code, "{what}: {}", r.text());
    assert!(body["message"].is_string(), "{what}: {}", r.text());
    assert!(body["request_id"].is_string(), "{what}: {}", r.text());
    if status == 401 {
        assert_eq!(
            r.headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"keygate\""),
            "{what}"
        );
    }
}

/// Valid claims for `sub` from `iss`, good for an hour.
fn claims(iss: &TestIssuer, sub: &str) -> Value {
    json!({"iss": iss.issuer, "aud": iss.audience, "sub": sub, "iat": now(), "exp": now() + 3600})
}

/// `claims` with some members replaced (a `null` value removes the member).
fn with(mut base: Value, changes: Value) -> Value {
    let obj = base.as_object_mut().unwrap();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    base
}

/// Where [`TestIssuer::new`] keeps an issuer's private key.
fn key_path(dir: &Path, issuer: &str) -> PathBuf {
    dir.join(format!("{issuer}-key.pem"))
}

/// A token signed with the Ed25519 key at `key_pem` by the `jsonwebtoken` crate, with a
/// header of our choosing.
fn sign_ed(key_pem: &Path, header: jsonwebtoken::Header, claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&std::fs::read(key_pem).unwrap()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn ed_header(kid: Option<&str>) -> jsonwebtoken::Header {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = kid.map(str::to_string);
    h
}

fn hs256(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap()
}

fn b64_json(v: &Value) -> String {
    B64.encode(v.to_string())
}

/// A gateway in front of a fresh upstream, with issuer `test-iss`, agents `a1` and `a2`,
/// and tool `t`. `identity` goes before the issuer block, `issuer_extra` inside it.
struct Env {
    up: RawUpstream,
    iss: TestIssuer,
    gw: TestGateway,
    /// A scratch directory for other keys (kept alive with the environment).
    scratch: tempfile::TempDir,
}

async fn start_env(identity: &str, issuer_extra: &str, more: &str) -> Env {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), ISS, AUD);
    let cfg = format!(
        "{identity}{}{issuer_extra}{}{}{more}{}",
        iss.toml(),
        agent("a1", OWNER),
        agent("a2", "bob@example.com"),
        tool(dir.path(), &up)
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    Env {
        up,
        iss,
        gw,
        scratch: tempfile::tempdir().unwrap(),
    }
}

/// Sends every token both as `Authorization: Bearer` and as `Proxy-Authorization: Bearer`;
/// each must get a 401 `unauthenticated` and the upstream must receive nothing. Then a
/// valid token goes through, which shows the gateway would have forwarded.
async fn assert_all_unauthenticated(env: &Env, cases: &[(&str, String)]) {
    let c = Client::http1();
    let url = env.gw.url(PATH);
    for (what, token) in cases {
        for header in ["authorization", "proxy-authorization"] {
            let r = c.get(&url, &[(header, &bearer(token))]).await;
            assert_refused(&r, 401, "unauthenticated", &format!("{what} in {header}"));
            assert_eq!(env.up.count(), 0, "{what} in {header} reached the upstream");
        }
    }
    let records = audit_at_least(&env.gw, cases.len() * 2).await;
    assert_eq!(records.len(), cases.len() * 2);
    for rec in &records {
        assert_eq!(rec["error"], "unauthenticated", "{rec}");
        assert_eq!(rec["decision"], "deny", "{rec}");
        assert_eq!(rec["status"], 401, "{rec}");
        assert!(rec["agent_id"].is_null(), "{rec}");
        assert!(rec["identity"].is_null(), "{rec}");
    }
    let r = c
        .get(&url, &[("authorization", &bearer(&env.iss.token("a1")))])
        .await;
    assert_eq!(r.status, 200, "the valid control token: {}", r.text());
    assert_eq!(env.up.count(), 1);
}

// ---------------------------------------------------------------- 1. valid tokens

#[tokio::test]
async fn valid_token_is_accepted_in_authorization_and_proxy_authorization() {
    let env = start_env("", "", "").await;
    let c = Client::http1();
    let url = env.gw.url(PATH);
    let t1 = env.iss.token("a1");
    let t2 = env
        .iss
        .sign(with(claims(&env.iss, "a1"), json!({"jti": "second"})));
    assert_ne!(t1, t2);

    let r = c.get(&url, &[("authorization", &bearer(&t1))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "ok");
    let r = c.get(&url, &[("proxy-authorization", &bearer(&t2))]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let got = env.up.requests();
    assert_eq!(got.len(), 2);
    for (req, token) in got.iter().zip([&t1, &t2]) {
        // The agent token never reaches the tool; the tool's own credential does.
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {SECRET}"))
        );
        assert_eq!(req.header("proxy-authorization"), None, "{}", req.head);
        assert!(
            !String::from_utf8_lossy(&req.raw).contains(token.as_str()),
            "agent token forwarded: {}",
            req.head
        );
        assert_eq!(req.target(), "/v1/items");
    }

    let records = audit_at_least(&env.gw, 2).await;
    assert_eq!(records.len(), 2);
    for rec in &records {
        assert_eq!(rec["agent_id"], "a1", "{rec}");
        assert_eq!(rec["agent_owner"], OWNER, "{rec}");
        assert_eq!(rec["identity"], "jwt", "{rec}");
        assert_eq!(rec["issuer"], ISS, "{rec}");
        assert_eq!(rec["decision"], "allow", "{rec}");
        assert_eq!(rec["status"], 200, "{rec}");
        assert_eq!(rec["tool"], "t", "{rec}");
        assert!(rec["spiffe_id"].is_null(), "{rec}");
        assert!(rec["error"].is_null(), "{rec}");
    }
}

#[tokio::test]
async fn token_without_kid_is_verified_with_the_issuers_only_key() {
    let env = start_env("", "", "").await;
    let key = key_path(env.gw.dir.path(), ISS);
    let token = sign_ed(&key, ed_header(None), &claims(&env.iss, "a2"));
    let r = Client::http1()
        .get(&env.gw.url(PATH), &[("authorization", &bearer(&token))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let records = audit_at_least(&env.gw, 1).await;
    assert_eq!(records[0]["agent_id"], "a2");
    assert_eq!(records[0]["agent_owner"], "bob@example.com");
}

// ---------------------------------------------------------------- 2. invalid tokens

#[tokio::test]
async fn tokens_outside_their_validity_window_are_refused() {
    let env = start_env("", "", "").await;
    let base = claims(&env.iss, "a1");
    let cases = [
        (
            "expired 2 minutes ago",
            env.iss.sign(with(
                base.clone(),
                json!({"iat": now() - 3720, "exp": now() - 120}),
            )),
        ),
        (
            "not valid for 2 more minutes",
            env.iss
                .sign(with(base.clone(), json!({"nbf": now() + 120}))),
        ),
        (
            "exp is not a number",
            env.iss.sign(with(base.clone(), json!({"exp": "tomorrow"}))),
        ),
    ];
    assert_all_unauthenticated(&env, &cases).await;
}

#[tokio::test]
async fn tokens_with_wrong_or_missing_claims_are_refused() {
    let env = start_env("", "", "").await;
    let base = claims(&env.iss, "a1");
    let cases = [
        (
            "wrong audience",
            env.iss
                .sign(with(base.clone(), json!({"aud": "some-other-service"}))),
        ),
        (
            "wrong audience in a list",
            env.iss.sign(with(base.clone(), json!({"aud": ["x", "y"]}))),
        ),
        (
            "wrong issuer",
            env.iss.sign(with(base.clone(), json!({"iss": "evil-iss"}))),
        ),
        (
            "missing exp",
            env.iss.sign(with(base.clone(), json!({"exp": null}))),
        ),
        (
            "missing aud",
            env.iss.sign(with(base.clone(), json!({"aud": null}))),
        ),
        (
            "missing iss",
            env.iss.sign(with(base.clone(), json!({"iss": null}))),
        ),
        (
            "missing sub (names no agent)",
            env.iss.sign(with(base.clone(), json!({"sub": null}))),
        ),
        (
            "sub is not a string",
            env.iss.sign(with(base.clone(), json!({"sub": 17}))),
        ),
    ];
    assert_all_unauthenticated(&env, &cases).await;
}

#[tokio::test]
async fn unsigned_and_algorithm_confusion_tokens_are_refused() {
    let env = start_env("", "", "").await;
    let base = claims(&env.iss, "a1");
    let kid = env.iss.signer.kid().to_string();
    let jwks_text = std::fs::read_to_string(&env.iss.jwks_path).unwrap();
    let jwks: Value = serde_json::from_str(&jwks_text).unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_string();
    let public_key = B64.decode(&x).unwrap();
    assert_eq!(public_key.len(), 32, "an Ed25519 public key");
    let jwk_text = jwks["keys"][0].to_string();
    let valid = env.iss.token("a1");
    let valid_sig = valid.rsplit('.').next().unwrap().to_string();

    let none =
        |header: Value, sig: &str| format!("{}.{}.{sig}", b64_json(&header), b64_json(&base));
    let cases = [
        ("alg none", none(json!({"alg": "none", "typ": "JWT"}), "")),
        (
            "alg none with the real kid",
            none(json!({"alg": "none", "typ": "JWT", "kid": kid}), ""),
        ),
        ("alg None", none(json!({"alg": "None", "typ": "JWT"}), "")),
        ("alg NONE", none(json!({"alg": "NONE", "typ": "JWT"}), "")),
        (
            "alg none with a real signature",
            none(json!({"alg": "none", "typ": "JWT", "kid": kid}), &valid_sig),
        ),
        (
            "no alg at all",
            none(json!({"typ": "JWT", "kid": kid}), &valid_sig),
        ),
        (
            "HS256, secret = the JWKS document",
            hs256(jwks_text.as_bytes(), Some(&kid), &base),
        ),
        (
            "HS256, secret = the JWKS document, no kid",
            hs256(jwks_text.as_bytes(), None, &base),
        ),
        (
            "HS256, secret = the JWK",
            hs256(jwk_text.as_bytes(), Some(&kid), &base),
        ),
        (
            "HS256, secret = the raw Ed25519 public key",
            hs256(&public_key, Some(&kid), &base),
        ),
        (
            "HS256, secret = the raw Ed25519 public key, no kid",
            hs256(&public_key, None, &base),
        ),
        (
            "HS256, secret = the base64url public key",
            hs256(x.as_bytes(), Some(&kid), &base),
        ),
        (
            "EdDSA header swapped for ES256",
            format!(
                "{}.{}",
                b64_json(&json!({"alg": "ES256", "typ": "JWT", "kid": kid})),
                valid.split_once('.').unwrap().1
            ),
        ),
    ];
    assert_all_unauthenticated(&env, &cases).await;
}

#[tokio::test]
async fn tokens_with_bad_signatures_or_unknown_keys_are_refused() {
    let env = start_env("", "", "").await;
    let our_kid = env.iss.signer.kid().to_string();
    let our_key = key_path(env.gw.dir.path(), ISS);
    // Another issuer's key, not configured, that claims to be ours.
    let other = TestIssuer::new(env.scratch.path(), "other-iss", AUD);
    let other_key = key_path(env.scratch.path(), "other-iss");
    let base = claims(&env.iss, "a1");

    // A valid signature over a different payload.
    let for_a1 = env.iss.token("a1");
    let for_a2 = env
        .iss
        .sign(with(claims(&env.iss, "a2"), json!({"exp": now() + 7200})));
    let p1: Vec<&str> = for_a1.split('.').collect();
    let p2: Vec<&str> = for_a2.split('.').collect();
    let tampered = format!("{}.{}.{}", p1[0], p2[1], p1[2]);
    // The same payload edited by hand (a1 -> a2), signature kept.
    let mut edited: Value = serde_json::from_slice(&B64.decode(p1[1]).unwrap()).unwrap();
    edited["sub"] = json!("a2");
    let edited = format!("{}.{}.{}", p1[0], b64_json(&edited), p1[2]);
    // A signature cut short, and one with a flipped byte.
    let mut sig = B64.decode(p1[2]).unwrap();
    let truncated = format!("{}.{}.{}", p1[0], p1[1], B64.encode(&sig[..32]));
    sig[10] ^= 0x01;
    let flipped = format!("{}.{}.{}", p1[0], p1[1], B64.encode(&sig));
    // The attacker's public key embedded in the header, signed by the attacker.
    let mut embedded = ed_header(Some(&our_kid));
    embedded.jwk = Some(serde_json::from_value(other.signer.public_jwk().clone()).unwrap());

    let cases = [
        (
            "unknown kid (signed by the real key)",
            sign_ed(&our_key, ed_header(Some("no-such-kid")), &base),
        ),
        ("payload swapped under a valid signature", tampered),
        ("payload edited under a valid signature", edited),
        ("truncated signature", truncated),
        ("signature with a flipped bit", flipped),
        (
            "foreign issuer's key claiming our issuer",
            other.sign(base.clone()),
        ),
        (
            "foreign key with our kid",
            sign_ed(&other_key, ed_header(Some(&our_kid)), &base),
        ),
        (
            "foreign key without kid",
            sign_ed(&other_key, ed_header(None), &base),
        ),
        (
            "foreign key embedded in the header",
            sign_ed(&other_key, embedded, &base),
        ),
        ("garbage", "not-a-jwt".to_string()),
        ("three garbage parts", "a.b.c".to_string()),
        (
            "a JWT with its signature removed",
            format!("{}.{}", p1[0], p1[1]),
        ),
        (
            "a JWT with an empty signature",
            format!("{}.{}.", p1[0], p1[1]),
        ),
        (
            "header that is not JSON",
            format!("{}.{}.{}", B64.encode("{not json"), p1[1], p1[2]),
        ),
    ];
    assert_all_unauthenticated(&env, &cases).await;
}

#[tokio::test]
async fn requests_without_a_bearer_token_are_refused() {
    let env = start_env("", "", "").await;
    let c = Client::http1();
    let url = env.gw.url(PATH);
    let token = env.iss.token("a1");
    let basic = format!("Basic {}", B64.encode(format!("a1:{token}")));
    let cases: [(&str, Vec<(&str, String)>); 5] = [
        ("no credential", vec![]),
        (
            "a valid JWT under the Basic scheme",
            vec![("authorization", basic)],
        ),
        (
            "a valid JWT without a scheme",
            vec![("authorization", token.clone())],
        ),
        (
            "an empty bearer token",
            vec![("authorization", "Bearer ".into())],
        ),
        (
            "a valid JWT in an unrelated header",
            vec![("x-agent-token", bearer(&token))],
        ),
    ];
    for (what, headers) in &cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = c.get(&url, &h).await;
        assert_refused(&r, 401, "unauthenticated", what);
    }
    assert_eq!(env.up.count(), 0);
}

#[tokio::test]
async fn one_issuers_key_cannot_vouch_for_another_issuer() {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ours = TestIssuer::new(dir.path(), ISS, AUD);
    let other = TestIssuer::new(dir.path(), "other-iss", AUD);
    let other_key = key_path(dir.path(), "other-iss");
    let cfg = format!(
        "{}{}{}{}",
        ours.toml(),
        other.toml(),
        agent_bound_to("a1", OWNER, &[ISS, "other-iss"]),
        tool(dir.path(), &up)
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let c = Client::http1();
    let url = gw.url(PATH);

    // Both issuers are trusted for their own tokens.
    let r = c
        .get(&url, &[("authorization", &bearer(&other.token("a1")))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c
        .get(&url, &[("authorization", &bearer(&ours.token("a1")))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 2);

    let claiming_ours = claims(&ours, "a1");
    for (what, token) in [
        ("with its own kid", other.sign(claiming_ours.clone())),
        (
            "without kid",
            sign_ed(&other_key, ed_header(None), &claiming_ours),
        ),
        (
            "with our kid",
            sign_ed(
                &other_key,
                ed_header(Some(ours.signer.kid())),
                &claiming_ours,
            ),
        ),
    ] {
        let r = c.get(&url, &[("authorization", &bearer(&token))]).await;
        assert_refused(&r, 401, "unauthenticated", what);
    }
    assert_eq!(up.count(), 2);
    let records = audit_at_least(&gw, 5).await;
    assert_eq!(records[0]["issuer"], "other-iss");
    assert_eq!(records[1]["issuer"], ISS);
}

#[tokio::test]
async fn an_agent_is_asserted_only_by_the_issuers_it_is_bound_to() {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = TestIssuer::new(dir.path(), ISS, AUD);
    let b = TestIssuer::new(dir.path(), "other-iss", AUD);
    // B also takes agents from claims: that must not let it claim A's agents.
    let cfg = format!(
        "{}{}agents_from_claims = true\n{}{}{}{}",
        a.toml(),
        b.toml(),
        agent_bound_to("only-a", OWNER, &[ISS]),
        agent_bound_to("only-b", OWNER, &["other-iss"]),
        agent_bound_to("both", OWNER, &[ISS, "other-iss"]),
        tool(dir.path(), &up)
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let c = Client::http1();
    let url = gw.url(PATH);
    let with_owner = |iss: &TestIssuer, sub: &str| {
        iss.sign(with(
            claims(iss, sub),
            json!({"owner": "mallory@example.com"}),
        ))
    };
    // (what, token, status)
    let cases = [
        ("A asserts its agent", a.token("only-a"), 200),
        ("B asserts its agent", b.token("only-b"), 200),
        ("A asserts a shared agent", a.token("both"), 200),
        ("B asserts a shared agent", b.token("both"), 200),
        ("B asserts A's agent", b.token("only-a"), 401),
        (
            "B asserts A's agent, with an owner",
            with_owner(&b, "only-a"),
            401,
        ),
        ("A asserts B's agent", a.token("only-b"), 401),
        (
            "B vouches for an agent from claims",
            with_owner(&b, "ghost"),
            200,
        ),
    ];
    let invalid = c
        .get(&url, &[("authorization", &bearer("not.a.token"))])
        .await;
    assert_refused(&invalid, 401, "unauthenticated", "a malformed token");
    let mut forwarded = 0;
    for (what, token, status) in &cases {
        let r = c.get(&url, &[("authorization", &bearer(token))]).await;
        if *status == 200 {
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            forwarded += 1;
        } else {
            assert_refused(&r, 401, "unauthenticated", what);
            // Worded like any invalid token: nothing about which agents exist.
            assert_eq!(r.json()["message"], invalid.json()["message"], "{what}");
        }
        assert_eq!(up.count(), forwarded, "{what}");
    }
    let records = audit_at_least(&gw, cases.len() + 1).await;
    let refused: Vec<&Value> = records.iter().filter(|r| r["status"] == 401).collect();
    assert_eq!(refused.len(), 4);
    assert!(
        refused[1]["error_detail"]
            .as_str()
            .unwrap()
            .contains("may not assert agent"),
        "{}",
        refused[1]
    );
    let ghost = records.iter().find(|r| r["agent_id"] == "ghost").unwrap();
    assert_eq!(ghost["issuer"], "other-iss");
}

#[tokio::test]
async fn tokens_living_longer_than_the_issuers_limit_are_refused() {
    let env = start_env(
        "[identity]\nclock_skew = \"0s\"\n",
        "max_token_lifetime = \"1h\"\n",
        "",
    )
    .await;
    let c = Client::http1();
    let url = env.gw.url(PATH);
    let t = now();
    let base = claims(&env.iss, "a1");
    let token = |changes: Value| env.iss.sign(with(base.clone(), changes));
    // (what, claims changed, accepted)
    let cases = [
        (
            "lifetime of exactly the limit",
            json!({"iat": t, "exp": t + 3600}),
            true,
        ),
        (
            "no iat, expiring within the limit",
            json!({"iat": null, "exp": t + 1800}),
            true,
        ),
        (
            "fractional dates within the limit",
            json!({"iat": t as f64 + 0.5, "exp": t + 3000}),
            true,
        ),
        (
            "lifetime beyond the limit",
            json!({"iat": t, "exp": t + 3700}),
            false,
        ),
        (
            "issued long ago, expiring soon",
            json!({"iat": t - 7200, "exp": t + 600}),
            false,
        ),
        (
            "no iat, expiring beyond the limit",
            json!({"iat": null, "exp": t + 7200}),
            false,
        ),
        (
            "iat in the future, expiring far away",
            json!({"iat": t + 86400, "exp": t + 87000}),
            false,
        ),
        (
            "iat not a date",
            json!({"iat": "yesterday", "exp": t + 600}),
            false,
        ),
    ];
    let mut forwarded = 0;
    for (what, changes, ok) in cases {
        let r = c
            .get(&url, &[("authorization", &bearer(&token(changes)))])
            .await;
        if ok {
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            forwarded += 1;
        } else {
            assert_refused(&r, 401, "unauthenticated", what);
        }
        assert_eq!(env.up.count(), forwarded, "{what}");
    }

    // The default limit is 24 hours.
    let env = start_env("", "", "").await;
    let t = now();
    let day = env.iss.sign(with(
        claims(&env.iss, "a1"),
        json!({"iat": t, "exp": t + 24 * 3600}),
    ));
    let r = c
        .get(&env.gw.url(PATH), &[("authorization", &bearer(&day))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let longer = env.iss.sign(with(
        claims(&env.iss, "a1"),
        json!({"iat": now(), "exp": now() + 25 * 3600}),
    ));
    let r = c
        .get(&env.gw.url(PATH), &[("authorization", &bearer(&longer))])
        .await;
    assert_refused(
        &r,
        401,
        "unauthenticated",
        "25 hours under the default limit",
    );
}

#[tokio::test]
async fn a_flood_of_one_bad_token_costs_one_verification() {
    let env = start_env("", "", "").await;
    let c = Client::http1();
    let url = env.gw.url(PATH);
    // Signed with another key under our key's id: the signature check fails.
    let other = TestIssuer::new(env.scratch.path(), "forger", AUD);
    let forged = sign_ed(
        &key_path(env.scratch.path(), "forger"),
        ed_header(Some(env.iss.signer.kid())),
        &claims(&env.iss, "a1"),
    );
    drop(other);
    let expired = env.iss.sign(with(
        claims(&env.iss, "a1"),
        json!({"iat": now() - 7200, "exp": now() - 3600}),
    ));
    for (what, token) in [("forged", &forged), ("expired", &expired)] {
        for i in 0..20 {
            for header in ["authorization", "proxy-authorization"] {
                let r = c.get(&url, &[(header, &bearer(token))]).await;
                assert_refused(&r, 401, "unauthenticated", &format!("{what} {i} {header}"));
            }
        }
    }
    assert_eq!(env.up.count(), 0);
    // Two distinct bad tokens, 80 requests: two checks.
    assert_eq!(token_cache_count(&env.gw, "miss").await, 2);
    assert_eq!(token_cache_count(&env.gw, "refused").await, 78);
    // A remembered refusal is the same refusal.
    let records = audit_at_least(&env.gw, 80).await;
    assert!(records.iter().all(|r| r["error"] == "unauthenticated"));
    assert_eq!(records[0]["error_detail"], records[2]["error_detail"]);

    // An unknown key id is not remembered: a JWKS refresh may bring the key.
    let stranger = TestIssuer::new(env.scratch.path(), ISS, AUD);
    let unknown_kid = stranger.token("a1");
    for _ in 0..3 {
        let r = c
            .get(&url, &[("authorization", &bearer(&unknown_kid))])
            .await;
        assert_refused(&r, 401, "unauthenticated", "unknown kid");
    }
    assert_eq!(token_cache_count(&env.gw, "miss").await, 5);
    assert_eq!(token_cache_count(&env.gw, "refused").await, 78);
}

#[tokio::test]
async fn a_remembered_refusal_ends_when_the_token_can_become_valid() {
    let env = start_env(
        "[identity]\nclock_skew = \"0s\"\n",
        "jwks_refresh = \"1s\"\n",
        "",
    )
    .await;
    let c = Client::http1();
    let url = env.gw.url(PATH);

    // Not valid before `nbf`: remembered at most until then.
    let nbf = now() + 2;
    let early = env
        .iss
        .sign(with(claims(&env.iss, "a1"), json!({"nbf": nbf})));
    let r = c.get(&url, &[("authorization", &bearer(&early))]).await;
    assert_refused(&r, 401, "unauthenticated", "before nbf");
    let r = poll_until(&c, &url, &early, 200, 20).await;
    assert_eq!(r.status, 200, "at nbf: {}", r.text());
    assert!(now() >= nbf, "accepted before nbf");

    // Signed by a key the issuer publishes later under the same key id: refused, then
    // valid as soon as the new key set is loaded.
    let next = TestIssuer::new(env.scratch.path(), "next", AUD);
    let kid = env.iss.signer.kid().to_string();
    let token = sign_ed(
        &key_path(env.scratch.path(), "next"),
        ed_header(Some(&kid)),
        &with(claims(&env.iss, "a1"), json!({"jti": "next-key"})),
    );
    for _ in 0..3 {
        let r = c.get(&url, &[("authorization", &bearer(&token))]).await;
        assert_refused(&r, 401, "unauthenticated", "before the key is published");
    }
    let mut jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(&next.jwks_path).unwrap()).unwrap();
    jwks["keys"][0]["kid"] = json!(kid);
    replace_file(&env.iss.jwks_path, &jwks.to_string());
    let r = poll_until(&c, &url, &token, 200, 20).await;
    assert_eq!(r.status, 200, "after the key was published: {}", r.text());
}

// ---------------------------------------------------------------- 3. unknown agents

#[tokio::test]
async fn token_for_an_undeclared_agent_is_unknown_agent() {
    let env = start_env("", "", "").await;
    let c = Client::http1();
    let url = env.gw.url(PATH);
    let plain = env.iss.token("ghost");
    let with_owner = env.iss.sign(with(
        claims(&env.iss, "ghost"),
        json!({"owner": "ops@example.com"}),
    ));
    for (what, token) in [("no owner claim", plain), ("owner claim", with_owner)] {
        let r = c.get(&url, &[("authorization", &bearer(&token))]).await;
        assert_refused(&r, 403, "unknown_agent", what);
    }
    assert_eq!(env.up.count(), 0);
    let records = audit_at_least(&env.gw, 2).await;
    assert_eq!(records.len(), 2);
    for rec in &records {
        assert_eq!(rec["error"], "unknown_agent", "{rec}");
        assert_eq!(rec["status"], 403, "{rec}");
    }
}

#[tokio::test]
async fn agents_from_claims_accepts_vouched_agents_with_an_owner() {
    let env = start_env("", "agents_from_claims = true\n", "").await;
    let c = Client::http1();
    let url = env.gw.url(PATH);

    let ghost = env.iss.sign(with(
        claims(&env.iss, "ghost"),
        json!({"owner": "ops@example.com"}),
    ));
    let r = c.get(&url, &[("authorization", &bearer(&ghost))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A declared agent keeps its configured owner whatever the token claims.
    let a1 = env.iss.sign(with(
        claims(&env.iss, "a1"),
        json!({"owner": "mallory@example.com"}),
    ));
    let r = c.get(&url, &[("authorization", &bearer(&a1))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.up.count(), 2);

    let no_owner = env.iss.token("ghost2");
    let empty_owner = env
        .iss
        .sign(with(claims(&env.iss, "ghost3"), json!({"owner": ""})));
    let numeric_owner = env
        .iss
        .sign(with(claims(&env.iss, "ghost4"), json!({"owner": 7})));
    for (what, token) in [
        ("no owner claim", no_owner),
        ("empty owner", empty_owner),
        ("owner not a string", numeric_owner),
    ] {
        let r = c.get(&url, &[("authorization", &bearer(&token))]).await;
        assert_refused(&r, 403, "unknown_agent", what);
    }
    assert_eq!(env.up.count(), 2);

    let records = audit_at_least(&env.gw, 5).await;
    assert_eq!(records.len(), 5);
    assert_eq!(records[0]["agent_id"], "ghost");
    assert_eq!(records[0]["agent_owner"], "ops@example.com");
    assert_eq!(records[0]["identity"], "jwt");
    assert_eq!(records[0]["issuer"], ISS);
    assert_eq!(records[1]["agent_id"], "a1");
    assert_eq!(records[1]["agent_owner"], OWNER);
}

#[tokio::test]
async fn agent_and_owner_claims_are_configurable() {
    let env = start_env(
        "",
        "agent_claim = \"agent\"\nagents_from_claims = true\nowner_claim = \"team\"\n",
        "",
    )
    .await;
    let c = Client::http1();
    let url = env.gw.url(PATH);
    let token = env.iss.sign(with(
        claims(&env.iss, "ignored-sub"),
        json!({"agent": "crawler", "team": "data@example.com", "owner": "wrong@example.com"}),
    ));
    let r = c.get(&url, &[("authorization", &bearer(&token))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // `sub` alone no longer names the agent.
    let r = c
        .get(&url, &[("authorization", &bearer(&env.iss.token("a1")))])
        .await;
    assert_refused(&r, 401, "unauthenticated", "token without the agent claim");
    assert_eq!(env.up.count(), 1);
    let records = audit_at_least(&env.gw, 2).await;
    assert_eq!(records[0]["agent_id"], "crawler");
    assert_eq!(records[0]["agent_owner"], "data@example.com");
}

// ---------------------------------------------------------------- 4. clock skew

#[tokio::test]
async fn default_clock_skew_tolerates_small_drift() {
    let env = start_env("", "", "").await;
    let c = Client::http1();
    let url = env.gw.url(PATH);
    let base = claims(&env.iss, "a1");
    for (what, token) in [
        (
            "expired 10s ago",
            env.iss.sign(with(base.clone(), json!({"exp": now() - 10}))),
        ),
        (
            "valid from 10s from now",
            env.iss.sign(with(base.clone(), json!({"nbf": now() + 10}))),
        ),
    ] {
        // Twice: the second use may come from the token cache.
        for _ in 0..2 {
            let r = c.get(&url, &[("authorization", &bearer(&token))]).await;
            assert_eq!(r.status, 200, "{what}: {}", r.text());
        }
    }
    let r = c
        .get(
            &url,
            &[(
                "authorization",
                &bearer(&env.iss.sign(with(base.clone(), json!({"exp": now() - 60})))),
            )],
        )
        .await;
    assert_refused(&r, 401, "unauthenticated", "expired 60s ago");
    assert_eq!(env.up.count(), 4);
}

#[tokio::test]
async fn zero_clock_skew_is_strict() {
    let env = start_env("[identity]\nclock_skew = \"0s\"\n", "", "").await;
    let c = Client::http1();
    let url = env.gw.url(PATH);
    let base = claims(&env.iss, "a1");
    for (what, token) in [
        (
            "expired 10s ago",
            env.iss.sign(with(base.clone(), json!({"exp": now() - 10}))),
        ),
        (
            "valid from 10s from now",
            env.iss.sign(with(base.clone(), json!({"nbf": now() + 10}))),
        ),
    ] {
        let r = c.get(&url, &[("authorization", &bearer(&token))]).await;
        assert_refused(&r, 401, "unauthenticated", what);
    }
    assert_eq!(env.up.count(), 0);
    let r = c
        .get(&url, &[("authorization", &bearer(&env.iss.token("a1")))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn clock_skew_is_limited_to_five_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), ISS, AUD);
    let path = dir.path().join("keygate.toml");
    copy_default_policies(dir.path());
    let text = |skew: &str| {
        format!(
            "[policies]\ndir = \"policies\"\n[identity]\nclock_skew = {skew:?}\n{}",
            iss.toml()
        )
    };
    for ok in ["0s", "30s", "5m"] {
        if let Err(e) = keygate::config::parse(&path, &text(ok)) {
            panic!("clock_skew = {ok:?} refused: {e}");
        }
    }
    match keygate::config::parse(&path, &text("301s")) {
        Ok(_) => panic!("clock_skew = 301s accepted"),
        Err(e) => assert!(e.to_string().contains("clock_skew"), "{e}"),
    }
}

// ---------------------------------------------------------------- 5. token cache and key changes

/// Replaces `path` atomically (write aside, rename) and gives it a modification time
/// clearly different from the old one, so the change is seen whatever the file system's
/// timestamp granularity.
fn replace_file(path: &Path, text: &str) {
    let old = std::fs::metadata(path).and_then(|m| m.modified()).unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    let f = std::fs::File::options().write(true).open(&tmp).unwrap();
    f.set_modified(old + Duration::from_secs(5)).unwrap();
    drop(f);
    std::fs::rename(&tmp, path).unwrap();
}

/// Sends `token` until the status is `want` (up to `secs` seconds); returns the last response.
async fn poll_until(c: &Client, url: &str, token: &str, want: u16, secs: u64) -> Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let r = c.get(url, &[("authorization", &bearer(token))]).await;
        if r.status == want || tokio::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn key_change_invalidates_cached_tokens() {
    let env = start_env("", "jwks_refresh = \"1s\"\n", "").await;
    let c = Client::http1();
    let url = env.gw.url(PATH);
    let old_token = env.iss.token("a1");
    for i in 0..2 {
        let r = c.get(&url, &[("authorization", &bearer(&old_token))]).await;
        assert_eq!(r.status, 200, "use {i}: {}", r.text());
    }
    // The same issuer, a new key.
    let rotated = TestIssuer::new(env.scratch.path(), ISS, AUD);
    assert_ne!(rotated.signer.kid(), env.iss.signer.kid());
    let new_token = rotated.token("a1");
    let r = c.get(&url, &[("authorization", &bearer(&new_token))]).await;
    assert_refused(&r, 401, "unauthenticated", "new key before the rotation");

    replace_file(
        &env.iss.jwks_path,
        &std::fs::read_to_string(&rotated.jwks_path).unwrap(),
    );
    // The refresher runs every second; the cached old token must stop working.
    let r = poll_until(&c, &url, &old_token, 401, 20).await;
    assert_refused(
        &r,
        401,
        "unauthenticated",
        "old token after its key was removed",
    );
    let r = c.get(&url, &[("authorization", &bearer(&new_token))]).await;
    assert_eq!(r.status, 200, "new key after the rotation: {}", r.text());
    // And the old key does not come back for a token never seen before.
    let fresh_old = env
        .iss
        .sign(with(claims(&env.iss, "a1"), json!({"jti": "fresh"})));
    let r = c.get(&url, &[("authorization", &bearer(&fresh_old))]).await;
    assert_refused(
        &r,
        401,
        "unauthenticated",
        "a new token from the removed key",
    );
    let records = audit_at_least(&env.gw, 1).await;
    let last_ok = records.iter().rev().find(|r| r["status"] == 200).unwrap();
    assert_eq!(last_ok["agent_id"], "a1");
    assert_eq!(last_ok["identity"], "jwt");
}

/// A JWKS file that was caught half-written (not parseable) must be re-read once it is
/// complete, even when the completed file carries the same modification time: file
/// systems stamp modification times at a coarse granularity (a clock tick), so a
/// truncate-then-write that the refresher interrupts usually leaves the same mtime.
/// The test sets both mtimes explicitly to make that deterministic.
#[tokio::test]
async fn jwks_file_caught_half_written_is_reread() {
    let env = start_env("", "jwks_refresh = \"1s\"\n", "").await;
    let c = Client::http1();
    let url = env.gw.url(PATH);
    let old_token = env.iss.token("a1");
    let r = c.get(&url, &[("authorization", &bearer(&old_token))]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let path = &env.iss.jwks_path;
    let stamp =
        std::fs::metadata(path).and_then(|m| m.modified()).unwrap() + Duration::from_secs(5);
    let write_with_mtime = |text: &str, t: SystemTime| {
        let mut f = std::fs::File::options()
            .write(true)
            .truncate(true)
            .open(path)
            .unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f.set_modified(t).unwrap();
    };
    let rotated = TestIssuer::new(env.scratch.path(), ISS, AUD);
    let new_jwks = std::fs::read_to_string(&rotated.jwks_path).unwrap();
    // Half of the new document: the refresher fails to parse it and keeps the old keys.
    write_with_mtime(&new_jwks[..new_jwks.len() / 2], stamp);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = c.get(&url, &[("authorization", &bearer(&old_token))]).await;
    assert_eq!(
        r.status,
        200,
        "old keys kept while the file is broken: {}",
        r.text()
    );
    // The writer finishes within the same clock tick.
    write_with_mtime(&new_jwks, stamp);
    let new_token = rotated.token("a1");
    let r = poll_until(&c, &url, &new_token, 200, 20).await;
    assert_eq!(
        r.status,
        200,
        "the completed JWKS file was never re-read: {}",
        r.text()
    );
    let r = c.get(&url, &[("authorization", &bearer(&old_token))]).await;
    assert_refused(&r, 401, "unauthenticated", "old token after the rotation");
}

#[tokio::test]
async fn cached_token_stops_working_when_it_expires() {
    let env = start_env("[identity]\nclock_skew = \"0s\"\n", "", "").await;
    let c = Client::http1();
    let url = env.gw.url(PATH);
    let exp = now() + 60;
    let token = env
        .iss
        .sign(with(claims(&env.iss, "a1"), json!({"exp": exp})));
    let r = c.get(&url, &[("authorization", &bearer(&token))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Half its life later it still works (from the cache)...
    env.gw.advance_clock(Duration::from_secs(30));
    let r = c.get(&url, &[("authorization", &bearer(&token))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // ...and once keygate's clock is past `exp`, neither the cache nor a new verification
    // accepts it (jsonwebtoken alone checks `exp` by the system clock).
    env.gw.advance_clock(Duration::from_secs(31));
    let clock = &env.gw.runtime.shared.clock;
    assert!(
        clock.unix_secs() >= exp as i64,
        "the clock did not pass exp"
    );
    let r = c.get(&url, &[("authorization", &bearer(&token))]).await;
    assert_refused(&r, 401, "unauthenticated", "the token after its expiry");
    assert_eq!(env.up.count(), 2);
}

#[tokio::test]
async fn token_with_a_far_future_expiry_can_be_used_repeatedly() {
    // Within a (long) lifetime limit, a far expiry is cached without overflow.
    let env = start_env("", "max_token_lifetime = \"100years\"\n", "").await;
    let c = Client::http1();
    let url = env.gw.url(PATH);
    let token = env.iss.sign(with(
        claims(&env.iss, "a1"),
        json!({"exp": now() + 99 * 365 * 86400}),
    ));
    for i in 0..3 {
        let r = c
            .try_get(&url, &[("authorization", &bearer(&token))])
            .await
            .unwrap_or_else(|e| panic!("use {i}: {e}"));
        assert_eq!(r.status, 200, "use {i}: {}", r.text());
    }
    assert_eq!(env.up.count(), 3);
    // The largest expiry there is: beyond any limit, refused (and nothing overflows).
    let forever = env
        .iss
        .sign(with(claims(&env.iss, "a1"), json!({"exp": u64::MAX})));
    for i in 0..2 {
        let r = c
            .try_get(&url, &[("authorization", &bearer(&forever))])
            .await
            .unwrap_or_else(|e| panic!("use {i}: {e}"));
        assert_refused(&r, 401, "unauthenticated", "exp = u64::MAX");
    }
    assert_eq!(env.up.count(), 3);
}

// ---------------------------------------------------------------- 6. mTLS

struct TlsEnv {
    up: RawUpstream,
    iss: TestIssuer,
    pki: Pki,
    gw: TestGateway,
}

/// A TLS gateway with `client_auth`; agent a1 is `spiffe://example.org/agent-a`, a2 is
/// `spiffe://example.org/agent-b`.
async fn start_tls_env(client_auth: &str) -> TlsEnv {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), ISS, AUD);
    let pki = Pki::new(dir.path());
    let cfg = format!(
        "{}{}{}{}{}",
        iss.toml(),
        agent_with_spiffe("a1", OWNER, SPIFFE_A),
        agent_with_spiffe("a2", "bob@example.com", SPIFFE_B),
        tool(dir.path(), &up),
        pki.server_toml(client_auth)
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    TlsEnv { up, iss, pki, gw }
}

#[tokio::test]
async fn mtls_identifies_mapped_spiffe_ids() {
    let env = start_tls_env("optional").await;
    let url = https_url(&env.gw, PATH);
    let cert_a = env.pki.client_cert(SPIFFE_A);
    let with_a = Client::tls(&env.pki, Some(&cert_a), false);
    let token_a1 = env.iss.token("a1");
    let token_a2 = env.iss.token("a2");

    // 0: certificate alone.
    let r = with_a.get(&url, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // 1: certificate and a token for the same agent.
    let r = with_a
        .get(&url, &[("proxy-authorization", &bearer(&token_a1))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // 2: certificate and a token for another agent.
    let r = with_a
        .get(&url, &[("proxy-authorization", &bearer(&token_a2))])
        .await;
    assert_refused(&r, 401, "unauthenticated", "cert for a1, token for a2");
    // 3: certificate and an invalid token.
    let r = with_a
        .get(&url, &[("proxy-authorization", "Bearer not-a-jwt")])
        .await;
    assert_refused(&r, 401, "unauthenticated", "cert for a1, garbage token");
    assert_eq!(env.up.count(), 2);
    // 4: with a certificate, Authorization is the agent's own tool credential: it does not
    // identify, and it is replaced, not forwarded.
    let r = with_a
        .get(&url, &[("authorization", &bearer(&token_a2))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = env.up.requests();
    assert_eq!(got.len(), 3);
    for req in &got {
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {SECRET}"))
        );
        assert_eq!(req.header("proxy-authorization"), None);
        let raw = String::from_utf8_lossy(&req.raw);
        assert!(
            !raw.contains(&token_a1) && !raw.contains(&token_a2),
            "{raw}"
        );
    }
    // 5: no certificate, a token: plain JWT identity over TLS.
    let no_cert = Client::tls(&env.pki, None, false);
    let r = no_cert
        .get(&url, &[("authorization", &bearer(&token_a2))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // 6: no certificate, no token.
    let r = no_cert.get(&url, &[]).await;
    assert_refused(
        &r,
        401,
        "unauthenticated",
        "TLS without certificate or token",
    );
    assert_eq!(env.up.count(), 4);

    let records = audit_at_least(&env.gw, 7).await;
    assert_eq!(records.len(), 7);
    let expect = [
        (200, "a1", "mtls", Some(SPIFFE_A), None),
        (200, "a1", "jwt+mtls", Some(SPIFFE_A), Some(ISS)),
        (401, "", "", Some(SPIFFE_A), None),
        (401, "", "", Some(SPIFFE_A), None),
        (200, "a1", "mtls", Some(SPIFFE_A), None),
        (200, "a2", "jwt", None, Some(ISS)),
        (401, "", "", None, None),
    ];
    for (i, (rec, (status, agent_id, identity, spiffe, issuer))) in
        records.iter().zip(expect).enumerate()
    {
        assert_eq!(rec["status"], status, "record {i}: {rec}");
        if status == 200 {
            assert_eq!(rec["agent_id"], agent_id, "record {i}: {rec}");
            assert_eq!(rec["identity"], identity, "record {i}: {rec}");
        } else {
            assert!(rec["agent_id"].is_null(), "record {i}: {rec}");
            assert_eq!(rec["error"], "unauthenticated", "record {i}: {rec}");
        }
        assert_eq!(rec["spiffe_id"].as_str(), spiffe, "record {i}: {rec}");
        assert_eq!(rec["issuer"].as_str(), issuer, "record {i}: {rec}");
    }
    assert_eq!(records[0]["agent_owner"], OWNER);
}

#[tokio::test]
async fn unmapped_spiffe_id_is_refused_even_with_a_valid_token() {
    let env = start_tls_env("optional").await;
    let url = https_url(&env.gw, PATH);
    let stranger = env.pki.client_cert("spiffe://example.org/stranger");
    let c = Client::tls(&env.pki, Some(&stranger), false);
    let r = c.get(&url, &[]).await;
    assert_refused(&r, 401, "unauthenticated", "unmapped SPIFFE ID");
    let token = env.iss.token("a1");
    for header in ["authorization", "proxy-authorization"] {
        let r = c.get(&url, &[(header, &bearer(&token))]).await;
        assert_refused(
            &r,
            401,
            "unauthenticated",
            &format!("unmapped SPIFFE ID, token in {header}"),
        );
    }
    // Another trust domain with the same path is another identity.
    let other_domain = env.pki.client_cert("spiffe://evil.example/agent-a");
    let r = Client::tls(&env.pki, Some(&other_domain), false)
        .get(&url, &[])
        .await;
    assert_refused(
        &r,
        401,
        "unauthenticated",
        "SPIFFE ID from another trust domain",
    );
    assert_eq!(env.up.count(), 0);
    let records = audit_at_least(&env.gw, 4).await;
    assert_eq!(records[0]["spiffe_id"], "spiffe://example.org/stranger");
    assert!(records[0]["agent_id"].is_null());
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let env = start_tls_env("optional").await;
    let url = https_url(&env.gw, PATH);
    let other_dir = tempfile::tempdir().unwrap();
    let other_pki = Pki::new(other_dir.path());
    let forged = other_pki.client_cert(SPIFFE_A);
    let token = env.iss.token("a1");
    let c = Client::tls(&env.pki, Some(&forged), false);
    for headers in [vec![], vec![("authorization", bearer(&token))]] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = c.try_get(&url, &h).await;
        assert!(
            res.is_err(),
            "a certificate from another CA was accepted: status {:?}",
            res.map(|r| r.status)
        );
    }
    assert_eq!(env.up.count(), 0);
    // The listener is fine for a certificate from the right CA.
    let good = env.pki.client_cert(SPIFFE_A);
    let r = Client::tls(&env.pki, Some(&good), false)
        .get(&url, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn required_client_auth_refuses_connections_without_a_certificate() {
    let env = start_tls_env("required").await;
    let url = https_url(&env.gw, PATH);
    let token = env.iss.token("a1");
    let no_cert = Client::tls(&env.pki, None, false);
    let res = no_cert
        .try_get(&url, &[("authorization", &bearer(&token))])
        .await;
    assert!(
        res.is_err(),
        "a connection without a client certificate was served: status {:?}",
        res.map(|r| r.status)
    );
    let other_dir = tempfile::tempdir().unwrap();
    let forged = Pki::new(other_dir.path()).client_cert(SPIFFE_A);
    let res = Client::tls(&env.pki, Some(&forged), false)
        .try_get(&url, &[])
        .await;
    assert!(res.is_err(), "a certificate from another CA was accepted");
    assert_eq!(env.up.count(), 0);

    let cert_b = env.pki.client_cert(SPIFFE_B);
    let r = Client::tls(&env.pki, Some(&cert_b), false)
        .get(&url, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.up.count(), 1);
    let records = audit_at_least(&env.gw, 1).await;
    // Refused handshakes never become requests: the one record is the served request.
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["agent_id"], "a2");
    assert_eq!(records[0]["identity"], "mtls");
    assert_eq!(records[0]["spiffe_id"], SPIFFE_B);
}

// ---------------------------------------------------------------- 7. HTTP/2

#[tokio::test]
async fn http2_over_tls_with_alpn() {
    let env = start_tls_env("optional").await;
    let url = https_url(&env.gw, PATH);
    let c = Client::tls(&env.pki, None, true);
    let r = c
        .get(&url, &[("authorization", &bearer(&env.iss.token("a1")))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.text(), "ok");
    let r = c.get(&url, &[]).await;
    assert_refused(&r, 401, "unauthenticated", "h2 without a token");
    assert_eq!(r.version, http::Version::HTTP_2);
    // mTLS identity over h2 too.
    let cert_a = env.pki.client_cert(SPIFFE_A);
    let r = Client::tls(&env.pki, Some(&cert_a), true)
        .get(&url, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, http::Version::HTTP_2);
    let got = env.up.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Bearer {SECRET}"))
    );
    let records = audit_at_least(&env.gw, 3).await;
    assert_eq!(records[0]["identity"], "jwt");
    assert_eq!(records[2]["identity"], "mtls");
    assert_eq!(records[2]["agent_id"], "a1");
}

#[tokio::test]
async fn http2_cleartext_with_prior_knowledge() {
    let env = start_env("", "", "").await;
    let c = Client::http2();
    let url = env.gw.url(PATH);
    let token = env.iss.token("a1");
    for header in ["authorization", "proxy-authorization"] {
        let r = c.get(&url, &[(header, &bearer(&token))]).await;
        assert_eq!(r.status, 200, "{header}: {}", r.text());
        assert_eq!(r.version, http::Version::HTTP_2);
    }
    let r = c.get(&url, &[("authorization", "Bearer not-a-jwt")]).await;
    assert_refused(&r, 401, "unauthenticated", "h2c garbage token");
    assert_eq!(env.up.count(), 2);
    let got = env.up.requests();
    for req in &got {
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {SECRET}"))
        );
        assert!(!String::from_utf8_lossy(&req.raw).contains(&token));
    }
    let records = audit_at_least(&env.gw, 3).await;
    assert_eq!(records[0]["agent_id"], "a1");
    assert_eq!(records[0]["identity"], "jwt");
}

// ---------------------------------------------------------------- 8. JWKS over HTTPS

/// A JWKS served over TLS with the test PKI's server certificate.
struct JwksServer {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

async fn start_jwks_server(pki: &Pki, body: String) -> JwksServer {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert_path)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key_path).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(Mutex::new(body));
    let hits = Arc::new(AtomicUsize::new(0));
    let paths = Arc::new(Mutex::new(Vec::new()));
    let server = JwksServer {
        addr,
        body: body.clone(),
        hits: hits.clone(),
        paths: paths.clone(),
    };
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let (body, hits, paths) = (body.clone(), hits.clone(), paths.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        paths.lock().unwrap().push(req.uri().path().to_string());
                        let text = body.lock().unwrap().clone();
                        async move {
                            let mut resp =
                                http::Response::new(http_body_util::Full::new(Bytes::from(text)));
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    server
}

fn url_issuer_toml(name: &str, issuer: &str, port: u16, ca: &Path) -> String {
    format!(
        "[[identity.issuers]]\nname = {name:?}\nissuer = {issuer:?}\naudiences = [{AUD:?}]\njwks_url = \"https://127.0.0.1:{port}/jwks\"\njwks_ca_file = {:?}\njwks_refresh = \"1s\"\n",
        ca.display().to_string()
    )
}

#[tokio::test]
async fn jwks_over_https_verifies_tokens_and_follows_rotation() {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let iss = TestIssuer::new(keys.path(), "remote-iss", AUD);
    let jwks = start_jwks_server(
        &pki,
        keygate::credentials::signer::jwks_document([&iss.signer]),
    )
    .await;
    let cfg = format!(
        "{}{}{}",
        url_issuer_toml("remote", "remote-iss", jwks.addr.port(), &pki.ca_path),
        agent("a1", OWNER),
        tool(dir.path(), &up)
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    assert!(
        jwks.hits.load(Ordering::SeqCst) >= 1,
        "the JWKS was not fetched at start"
    );
    assert_eq!(jwks.paths.lock().unwrap()[0], "/jwks");

    let c = Client::http1();
    let url = gw.url(PATH);
    let old_token = iss.token("a1");
    let r = c.get(&url, &[("authorization", &bearer(&old_token))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let wrong_aud = iss.sign(with(claims(&iss, "a1"), json!({"aud": "elsewhere"})));
    let r = c.get(&url, &[("authorization", &bearer(&wrong_aud))]).await;
    assert_refused(&r, 401, "unauthenticated", "remote issuer, wrong audience");

    // Rotation at the URL: the refresher (every second) picks up the new key set.
    let rotated = TestIssuer::new(keys.path(), "remote-iss-2", AUD);
    let new_token = rotated.sign(with(claims(&iss, "a1"), json!({"jti": "rotated"})));
    *jwks.body.lock().unwrap() = keygate::credentials::signer::jwks_document([&rotated.signer]);
    let r = poll_until(&c, &url, &new_token, 200, 20).await;
    assert_eq!(
        r.status,
        200,
        "the rotated key set was not fetched: {}",
        r.text()
    );
    let r = c.get(&url, &[("authorization", &bearer(&old_token))]).await;
    assert_refused(
        &r,
        401,
        "unauthenticated",
        "old token after the remote rotation",
    );

    let records = audit_at_least(&gw, 1).await;
    assert_eq!(records[0]["issuer"], "remote");
    assert_eq!(records[0]["agent_id"], "a1");
    assert_eq!(records[0]["identity"], "jwt");
}

#[tokio::test]
async fn jwks_over_https_from_an_untrusted_server_is_not_used() {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let pki = Pki::new(keys.path());
    let other_ca = tempfile::tempdir().unwrap();
    let other = Pki::new(other_ca.path());
    let iss = TestIssuer::new(keys.path(), "remote-iss", AUD);
    let jwks = start_jwks_server(
        &pki,
        keygate::credentials::signer::jwks_document([&iss.signer]),
    )
    .await;
    // The issuer is told to trust another CA than the one that signed the server's cert.
    let cfg = format!(
        "{}{}{}",
        url_issuer_toml("remote", "remote-iss", jwks.addr.port(), &other.ca_path),
        agent("a1", OWNER),
        tool(dir.path(), &up)
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let r = Client::http1()
        .get(
            &gw.url(PATH),
            &[("authorization", &bearer(&iss.token("a1")))],
        )
        .await;
    assert_refused(
        &r,
        401,
        "unauthenticated",
        "keys from an untrusted JWKS server",
    );
    assert_eq!(
        jwks.hits.load(Ordering::SeqCst),
        0,
        "a JWKS request got past TLS"
    );
    assert_eq!(up.count(), 0);
}
