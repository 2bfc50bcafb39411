//! keygate's `oauth2` credential provider against a real OAuth2 authorization server
//! (panva's oidc-provider, see `tests/oauth2_support`): client credentials with
//! `client_secret_basic`, `client_secret_post` and `private_key_jwt` (ES256 and RS256), a
//! scope per operation, tokens cached per agent and scope until a minute before they
//! expire and fetched once for concurrent cold calls, RFC 8693 token exchange with keygate
//! minting the subject and actor tokens, refusals and an unreachable server failing closed
//! with `credential_unavailable`, and no token or client secret in the audit log, the
//! store or a log line. `scripts/test` installs the server (`npm ci --prefix tests/oauth2`).
//!
//! The provider's configuration, as tested:
//! ```toml
//! [tools.credential]
//! provider = "oauth2"
//! token_endpoint = "http://127.0.0.1:ASPORT/token"
//! client_id = "…"
//! client_auth = "client_secret_basic"   # or "client_secret_post" (from_file / from_env), "private_key_jwt"
//! from_file = "secrets/….secret"        # basic / post
//! client_key_file = "secrets/….pem"     # private_key_jwt: PKCS#8 PEM, RSA → RS256, P-256 → ES256
//! client_key_id = "…"                   # the assertion's kid
//! grant = "client_credentials"          # or "token_exchange"
//! scope = "tools:read"                  # for operations without their own; "" asks for none
//! resource = "https://…"                # RFC 8707, optional
//! audience = "https://…"                # optional
//! [tools.credential.operations.write_things]
//! scope = "tools:write"
//! ```
//!
//! The server is shared by every test of this binary, with one client per test, so a test
//! reads its own token requests from the server's log (`GET /_peer/requests`). The tool is
//! a [`RawUpstream`] recording the `Authorization` it received.
//!
//! The `harness_*` tests check the server itself, without keygate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod oauth2_support;
use common::*;
use oauth2_support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const AGENT: &str = "oauth-agent";
const OWNER: &str = "owner@example.com";
const AGENT2: &str = "oauth-agent-2";
const OWNER2: &str = "other-owner@example.com";

/// GET /things is `read_things`, POST /things `write_things`, GET /list `list_things`.
const ROUTES: &str = r#"routes = [
  { method = "GET", path = "/things", operation = "read_things", tags = ["read"] },
  { method = "POST", path = "/things", operation = "write_things", tags = ["write"] },
  { method = "GET", path = "/list", operation = "list_things", tags = ["read"] },
]
"#;

// ---------------------------------------------------------------- logs

// ---------------------------------------------------------------- keygate

/// keygate with agents [`AGENT`] and [`AGENT2`] and tool `api` (routes [`ROUTES`]) in
/// front of a recording upstream, its credential from the shared authorization server.
struct Kg {
    gw: TestGateway,
    up: RawUpstream,
    iss: TestIssuer,
}

struct Setup<'a> {
    client: &'a str,
    grant: &'a str,
    /// After the credential's first keys: scope, resource, operations tables.
    credential: String,
    /// Before everything: e.g. a `[signing]` table.
    head: String,
    /// Another token endpoint than the server's.
    token_endpoint: Option<String>,
    /// Replaces the client's secret in its file.
    secret: Option<&'a str>,
    /// Keys of the tool's table before its routes (`protocol = "mcp"`).
    tool_extra: &'a str,
}

impl<'a> Setup<'a> {
    fn new(client: &'a str, grant: &'a str, credential: impl Into<String>) -> Setup<'a> {
        Setup {
            client,
            grant,
            credential: credential.into(),
            head: String::new(),
            token_endpoint: None,
            secret: None,
            tool_extra: "",
        }
    }
}

/// An upstream answering 200 with JSON holding keygate's request id (so each response
/// can be matched with its audit record).
async fn upstream() -> RawUpstream {
    RawUpstream::with_responder(Arc::new(|r: &Received| {
        let body = json!({ "request_id": r.header("x-request-id").unwrap_or_default() });
        (
            200,
            vec![("content-type".to_string(), "application/json".to_string())],
            body.to_string().into_bytes(),
        )
    }))
    .await
}

async fn start(s: Setup<'_>) -> Kg {
    logs();
    let a = auth_server();
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "oauth2-iss", "keygate");
    let endpoint = s.token_endpoint.unwrap_or_else(|| a.token_endpoint());
    let mut credential = credential_toml(dir.path(), &endpoint, a.client(s.client), s.grant);
    if let Some(secret) = s.secret {
        secret_file(dir.path(), &format!("{}.secret", s.client), secret);
    }
    credential.push_str(&s.credential);
    let cfg = format!(
        "{}{}{}{}[[tools]]\nname = \"api\"\nupstream = {:?}\n{}{ROUTES}{credential}",
        s.head,
        iss.toml(),
        agent(AGENT, OWNER),
        agent(AGENT2, OWNER2),
        up.url(),
        s.tool_extra,
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    Kg { gw, up, iss }
}

impl Kg {
    /// A call to tool `api` as `agent` (POST with a small JSON body).
    async fn call(&self, agent: &str, method: &str, path: &str) -> Response {
        self.call_with(agent, method, path, &[]).await
    }

    /// [`Kg::call`] with these headers too.
    async fn call_with(
        &self,
        agent: &str,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Response {
        let auth = bearer(&self.iss.token(agent));
        let body = if method == "POST" { "{}" } else { "" };
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        Client::http1()
            .send(
                method,
                &self.gw.url(&format!("/tools/api{path}")),
                &headers,
                body,
            )
            .await
    }

    /// The bearer tokens the upstream received, in order.
    fn upstream_tokens(&self) -> Vec<String> {
        self.up
            .requests()
            .iter()
            .map(|r| {
                let auth = r
                    .header("authorization")
                    .unwrap_or_else(|| panic!("no Authorization at the upstream:\n{}", r.head));
                bearer_token(&auth).to_string()
            })
            .collect()
    }

    /// The admin listener's `/metrics` text.
    async fn metrics(&self) -> String {
        self.gw.metrics().await
    }
}

/// The request id of a response: keygate's in a refusal, the upstream's echo of
/// `X-Request-Id` in a forwarded answer.
fn rid(r: &Response) -> String {
    r.json()["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no request id in {}", r.text()))
        .to_string()
}

/// The audit record of one request (waits for the background writer).
async fn audit_of(gw: &TestGateway, request_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = gw
            .audit()
            .await
            .into_iter()
            .find(|r| r["request_id"] == request_id)
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no audit record for request {request_id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts a 502 `credential_unavailable` refusal in keygate's JSON shape.
fn assert_credential_unavailable(r: &Response, what: &str) -> String {
    assert_eq!(r.status, 502, "{what}: {}", r.text());
    let b = r.json();
    assert_eq!(b["error"], "credential_unavailable", "{what}: {b}");
    assert!(b["request_id"].is_string(), "{what}: {b}");
    let message = b["message"].as_str().unwrap_or_default().to_string();
    assert!(!message.is_empty(), "{what}: {b}");
    message
}

/// Whether `hay` contains `needle`.
fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// `exp - iat` of decoded claims.
fn lifetime(claims: &Value) -> i64 {
    claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat")
}

/// An audit record's `credential_expires` is the token's expiry: the server's `exp`, give
/// or take the second between the server's clock reading and keygate's (keygate may count
/// from `expires_in`).
fn assert_expires(rec: &Value, exp: &Value) {
    let got = rec["credential_expires"]
        .as_u64()
        .unwrap_or_else(|| panic!("no credential_expires: {rec}"));
    let exp = exp.as_u64().unwrap_or_else(|| panic!("no exp: {exp}"));
    assert!(
        got.abs_diff(exp) <= 2,
        "credential_expires {got}, exp {exp}: {rec}"
    );
}

/// Whether a JWT `aud` (string or array) is or holds `want`.
fn aud_is(aud: &Value, want: &str) -> bool {
    aud == want || aud.as_array().is_some_and(|a| a.len() == 1 && a[0] == want)
}

// ---------------------------------------------------------------- harness

/// Each client authentication method gets a token; a secret sent the other way is
/// refused; the server's log shows the method and the token it issued.
#[tokio::test]
async fn harness_each_client_auth_method_gets_a_token() {
    let a = auth_server();
    for id in ["h-basic", "h-post", "h-key-es", "h-key-rs"] {
        let c = a.client(id);
        let (status, body) = a.client_credentials(id, Some("tools:read"), None).await;
        assert_eq!(status, 200, "{id}: {body}\n{}", a.log_text());
        assert_eq!(body["token_type"], "Bearer", "{id}: {body}");
        assert_eq!(body["expires_in"], 600, "{id}: {body}");
        assert_eq!(body["scope"], "tools:read", "{id}: {body}");
        let token = body["access_token"].as_str().unwrap();
        let claims = a.verify_access_token(token, JWT_RESOURCE).await;
        assert_eq!(claims["client_id"], id, "{claims}");
        assert_eq!(claims["sub"], id, "{claims}");
        assert_eq!(claims["scope"], "tools:read", "{claims}");
        assert!(claims["jti"].is_string(), "{claims}");
        assert_eq!(lifetime(&claims), 600, "{claims}");

        let log = a.requests(id).await;
        let q = log.last().unwrap();
        assert_eq!(q["auth_method"], c.auth.method(), "{q:#}");
        assert_eq!(q["grant_type"], CLIENT_CREDENTIALS, "{q:#}");
        assert_eq!(q["status"], 200, "{q:#}");
        assert_eq!(q["access_token"]["sha256"], sha256_hex(token), "{q:#}");
        assert_eq!(q["access_token"]["claims"]["jti"], claims["jti"], "{q:#}");
        if let Some(k) = &c.key {
            let h = &q["client_assertion"]["header"];
            assert_eq!(h["kid"], k.kid.as_str(), "{q:#}");
            assert_eq!(h["alg"], format!("{:?}", k.alg), "{q:#}");
            assert_eq!(q["client_assertion"]["claims"]["iss"], id, "{q:#}");
        }
    }
    // The strict method check: a basic client posting its secret, a post client using Basic.
    let basic = a.client("h-basic");
    let (status, body) = a
        .post_form(
            "/token",
            &[
                ("grant_type", CLIENT_CREDENTIALS),
                ("client_id", basic.id),
                ("client_secret", basic.secret.as_deref().unwrap()),
            ],
            None,
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("registered for client_secret_basic"),
        "{body}"
    );
    let post = a.client("h-post");
    let (status, body) = a
        .post_form(
            "/token",
            &[("grant_type", CLIENT_CREDENTIALS)],
            Some((post.id, post.secret.as_deref().unwrap())),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
    // A wrong secret.
    let (status, body) = a
        .post_form(
            "/token",
            &[("grant_type", CLIENT_CREDENTIALS)],
            Some((basic.id, "not-the-secret")),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
    let log = a.requests("h-basic").await;
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_eq!(log[1]["auth_method"], "client_secret_post");
    assert_eq!(log[2]["error"], "invalid_client");
}

/// private_key_jwt: the assertion's `aud` may be the issuer or the token endpoint, a jti
/// is single-use, another key's signature or a foreign `aud` is refused.
#[tokio::test]
async fn harness_private_key_jwt_assertions() {
    let a = auth_server();
    let id = "h-assert-es";
    let send = |assertion: String| async move {
        a.post_form(
            "/token",
            &[
                ("grant_type", CLIENT_CREDENTIALS),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion),
            ],
            None,
        )
        .await
    };
    for aud in [a.token_endpoint(), a.issuer.clone()] {
        let (status, body) = send(a.assertion(id, &aud)).await;
        assert_eq!(status, 200, "aud {aud}: {body}\n{}", a.log_text());
    }
    let once = a.assertion(id, &a.token_endpoint());
    let (status, _) = send(once.clone()).await;
    assert_eq!(status, 200);
    let (status, body) = send(once).await;
    assert_eq!(status, 401, "a replayed assertion: {body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
    let (status, body) = send(a.assertion(id, "https://elsewhere.test/token")).await;
    assert_eq!(status, 401, "a foreign aud: {body}");
    // Signed by another client's key (same claims).
    let other = a.client("h-key-rs").key.as_ref().unwrap();
    let t = now();
    let forged = a.sign_with(
        other,
        &json!({"iss": id, "sub": id, "aud": a.token_endpoint(), "jti": "forged-1", "iat": t, "exp": t + 60}),
    );
    let (status, body) = send(forged).await;
    assert_eq!(status, 401, "another key: {body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
}

/// A scope the client is not registered for is `invalid_scope` (the scope named); an
/// unknown resource is `invalid_target`; no scope gives a token without one; `audience`
/// is ignored.
#[tokio::test]
async fn harness_a_wider_scope_is_invalid_scope() {
    let a = auth_server();
    let (status, body) = a
        .client_credentials("h-narrow", Some("tools:read tools:write"), None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_scope", "{body}");
    assert_eq!(body["scope"], "tools:write", "{body}");
    let (status, body) = a.client_credentials("h-narrow", Some("admin"), None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_scope", "{body}");
    let (status, body) = a
        .client_credentials(
            "h-narrow",
            Some("tools:read"),
            Some("https://unknown.test/"),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_target", "{body}");
    let (status, body) = a.client_credentials("h-narrow", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("scope").is_none(), "{body}");
    let claims = jwt_claims(body["access_token"].as_str().unwrap()).unwrap();
    assert!(claims.get("scope").is_none(), "{claims}");
    // `audience` is no client_credentials parameter for oidc-provider: ignored.
    let (status, body) = a
        .token_as(
            "h-narrow",
            &[
                ("grant_type", CLIENT_CREDENTIALS),
                ("scope", "tools:read"),
                ("audience", "https://api.test/things"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let claims = jwt_claims(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["aud"], JWT_RESOURCE, "{claims}");
    let log = a.requests("h-narrow").await;
    assert_eq!(log.last().unwrap()["audience"], "https://api.test/things");
    let errors: Vec<&Value> = log.iter().map(|q| &q["error"]).collect();
    assert!(errors.contains(&&json!("invalid_scope")), "{log:#?}");
}

/// Opaque tokens (the opaque resource) introspect active with their client, scope,
/// audience and expiry; after revocation, inactive. JWTs cannot be introspected.
#[tokio::test]
async fn harness_opaque_tokens_introspect_active() {
    let a = auth_server();
    let id = "h-introspect";
    let (status, body) = a
        .client_credentials(id, Some("tools:write"), Some(OPAQUE_RESOURCE))
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert!(jwt_claims(token).is_none(), "not opaque: {token}");
    let i = a.introspect(token).await;
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["client_id"], id, "{i}");
    assert_eq!(i["scope"], "tools:write", "{i}");
    assert_eq!(i["aud"], OPAQUE_RESOURCE, "{i}");
    assert_eq!(i["token_type"], "Bearer", "{i}");
    let exp = i["exp"].as_u64().unwrap();
    assert!(exp.abs_diff(now() + 600) <= 5, "{i}");
    // The log's view of an opaque token: its hash only.
    let q = a.requests(id).await.pop().unwrap();
    assert_eq!(q["access_token"]["format"], "opaque", "{q:#}");
    assert_eq!(q["resource"], OPAQUE_RESOURCE, "{q:#}");

    let c = a.client(id);
    let (status, _) = a
        .post_form(
            "/token/revocation",
            &[("token", token)],
            Some((c.id, c.secret.as_deref().unwrap())),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(a.introspect(token).await["active"], false);

    let (_, body) = a.client_credentials(id, Some("tools:read"), None).await;
    let jwt = body["access_token"].as_str().unwrap();
    let (status, body) = a
        .post_form(
            "/token/introspection",
            &[("token", jwt)],
            Some(INTROSPECTOR),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "unsupported_token_type", "{body}");
}

/// Token exchange with subject and actor JWTs signed by a trusted issuer's Ed25519 key
/// (as keygate signs them, keys served over HTTP): the token has the subject's `sub`, the
/// actor as `act.sub`, the requested scope. Untrusted issuers, a wrong `aud`, an expired
/// token and a scope outside the client's are refused.
#[tokio::test]
async fn harness_token_exchange_emits_act() {
    let a = auth_server();
    let dir = tempfile::tempdir().unwrap();
    let kg = TestIssuer::new(dir.path(), "harness-kg", "unused");
    let jwks = std::fs::read(&kg.jwks_path).unwrap();
    let jwks_server = RawUpstream::with_responder(Arc::new(move |_r: &Received| {
        (
            200,
            vec![("content-type".to_string(), "application/json".to_string())],
            jwks.clone(),
        )
    }))
    .await;
    let issuer = "https://keygate.test/harness";
    a.trust_issuer(
        issuer,
        &format!("{}/.well-known/jwks.json", jwks_server.url()),
        Some(&a.token_endpoint()),
    )
    .await;
    let id = "h-tx";
    let tok = |iss: &str, sub: &str, aud: &str, exp_in: i64| {
        let t = now() as i64;
        kg.sign(json!({
            "iss": iss, "sub": sub, "aud": aud, "owner": OWNER,
            "iat": t, "exp": t + exp_in, "jti": uuid::Uuid::new_v4().to_string(),
        }))
    };
    let te = a.token_endpoint();
    let exchange = |subject: String, actor: String, scope: &'static str| async move {
        a.token_as(
            id,
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &subject),
                ("subject_token_type", JWT_TOKEN_TYPE),
                ("actor_token", &actor),
                ("actor_token_type", JWT_TOKEN_TYPE),
                ("requested_token_type", ACCESS_TOKEN_TYPE),
                ("scope", scope),
                ("resource", JWT_RESOURCE),
            ],
        )
        .await
    };
    let (status, body) = exchange(
        tok(issuer, AGENT, &te, 60),
        tok(issuer, id, &te, 60),
        "tools:write",
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", a.log_text());
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE, "{body}");
    assert_eq!(body["scope"], "tools:write", "{body}");
    let claims = a
        .verify_access_token(body["access_token"].as_str().unwrap(), JWT_RESOURCE)
        .await;
    assert_eq!(claims["sub"], AGENT, "{claims}");
    assert_eq!(claims["act"], json!({"sub": id}), "{claims}");
    assert_eq!(claims["scope"], "tools:write", "{claims}");
    assert_eq!(claims["client_id"], id, "{claims}");
    let q = a.requests(id).await.pop().unwrap();
    assert_eq!(q["subject_token"]["claims"]["owner"], OWNER, "{q:#}");
    assert_eq!(q["subject_token"]["header"]["alg"], "EdDSA", "{q:#}");
    assert_eq!(q["actor_token"]["claims"]["sub"], id, "{q:#}");

    for (what, subject, scope, error) in [
        (
            "untrusted issuer",
            tok("https://other.test", AGENT, &te, 60),
            "tools:read",
            "invalid_grant",
        ),
        (
            "wrong aud",
            tok(issuer, AGENT, "https://elsewhere.test/token", 60),
            "tools:read",
            "invalid_grant",
        ),
        (
            "expired",
            tok(issuer, AGENT, &te, -120),
            "tools:read",
            "invalid_grant",
        ),
        (
            "scope outside the client's",
            tok(issuer, AGENT, &te, 60),
            "admin",
            "invalid_scope",
        ),
    ] {
        let (status, body) = exchange(subject, tok(issuer, id, &te, 60), scope).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"], error, "{what}: {body}");
    }
}

/// Basic credentials are form-encoded before base64 (RFC 6749 §2.3.1): a secret with
/// `+`, `%`, `:` and spaces works encoded and fails raw.
#[tokio::test]
async fn harness_basic_credentials_are_form_decoded() {
    let a = auth_server();
    let c = a.client("h-special");
    assert_eq!(c.secret.as_deref(), Some(SPECIAL_SECRET));
    let (status, body) = a.client_credentials(c.id, Some("tools:read"), None).await;
    assert_eq!(status, 200, "{body}\n{}", a.log_text());
    // The same credentials, not form-encoded: `+` is read as a space, `%2F` as `/`.
    use base64::Engine;
    let raw =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{SPECIAL_SECRET}", c.id));
    let r = Client::http1()
        .send(
            "POST",
            &a.token_endpoint(),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &format!("Basic {raw}")),
            ],
            "grant_type=client_credentials&scope=tools%3Aread",
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_client", "{}", r.text());
}

/// The server's request log holds no secret, assertion or token value.
#[tokio::test]
async fn harness_the_request_log_keeps_secrets_out() {
    let a = auth_server();
    let (_, b1) = a
        .client_credentials("h-log-post", Some("tools:read"), None)
        .await;
    let (_, b2) = a
        .client_credentials("h-log-key", Some("tools:read"), Some(OPAQUE_RESOURCE))
        .await;
    let r = Client::http1()
        .get(&format!("{}/_peer/requests", a.issuer), &[])
        .await;
    assert_eq!(r.status, 200);
    let text = r.text();
    for c in &a.clients {
        if let Some(s) = &c.secret {
            assert!(
                !text.contains(s.as_str()),
                "{}'s secret is in the log",
                c.id
            );
        }
    }
    for b in [b1, b2] {
        let t = b["access_token"].as_str().unwrap();
        assert!(!text.contains(t), "an access token is in the log");
        assert!(text.contains(&sha256_hex(t)), "no hash of an access token");
        // The JWT's signature is not there either.
        if let Some(sig) = t.split('.').nth(2) {
            assert!(!text.contains(sig));
        }
    }
}

// ---------------------------------------------------------------- client credentials

/// One call through keygate with client credentials for `client_id`: the server saw one
/// token request by the client's method, for the operation's scope and the resource; the
/// upstream got that token (opaque, active, that scope only); the audit names it.
async fn client_credentials_through_keygate(client_id: &str) {
    let a = auth_server();
    let c = a.client(client_id);
    let kg = start(Setup::new(
        client_id,
        "client_credentials",
        format!("scope = \"tools:read\"\nresource = {OPAQUE_RESOURCE:?}\n"),
    ))
    .await;
    let agent_token = kg.iss.token(AGENT);
    let r = Client::http1()
        .get(
            &kg.gw.url("/tools/api/things"),
            &[("authorization", &bearer(&agent_token))],
        )
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), a.log_text());
    let tokens = kg.upstream_tokens();
    assert_eq!(tokens.len(), 1);
    let token = &tokens[0];
    assert!(!contains(&kg.up.requests()[0].raw, &agent_token));

    let log = a.requests(client_id).await;
    assert_eq!(log.len(), 1, "one token request: {log:#?}");
    let q = &log[0];
    assert_eq!(q["grant_type"], CLIENT_CREDENTIALS, "{q:#}");
    assert_eq!(q["auth_method"], c.auth.method(), "{q:#}");
    assert_eq!(q["scope"], "tools:read", "{q:#}");
    assert_eq!(q["resource"], OPAQUE_RESOURCE, "{q:#}");
    assert_eq!(q["status"], 200, "{q:#}");
    assert_eq!(
        q["access_token"]["sha256"],
        sha256_hex(token),
        "the upstream did not get the token issued: {q:#}"
    );
    let params: BTreeSet<&str> = q["param_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    match c.auth {
        Auth::Basic => {
            assert!(!params.contains("client_secret"), "{q:#}");
            assert!(!params.contains("client_assertion"), "{q:#}");
        }
        Auth::Post => {
            assert!(params.contains("client_id"), "{q:#}");
            assert!(params.contains("client_secret"), "{q:#}");
        }
        Auth::KeyEs256 | Auth::KeyRs256 => {
            let k = c.key.as_ref().unwrap();
            assert!(!params.contains("client_secret"), "{q:#}");
            assert_eq!(q["client_assertion_type"], JWT_BEARER, "{q:#}");
            let h = &q["client_assertion"]["header"];
            assert_eq!(h["alg"], format!("{:?}", k.alg), "{q:#}");
            assert_eq!(h["kid"], k.kid.as_str(), "{q:#}");
            let claims = &q["client_assertion"]["claims"];
            assert_eq!(claims["iss"], client_id, "{q:#}");
            assert_eq!(claims["sub"], client_id, "{q:#}");
            assert!(aud_is(&claims["aud"], &a.token_endpoint()), "{q:#}");
            assert!(
                claims["jti"].as_str().is_some_and(|j| !j.is_empty()),
                "{q:#}"
            );
            assert_eq!(lifetime(claims), 60, "{q:#}");
            assert!(
                claims["iat"].as_u64().unwrap().abs_diff(now()) <= 30,
                "{q:#}"
            );
        }
    }

    let i = a.introspect(token).await;
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["client_id"], client_id, "{i}");
    assert_eq!(i["scope"], "tools:read", "{i}");
    assert_eq!(i["aud"], OPAQUE_RESOURCE, "{i}");

    let rec = audit_of(&kg.gw, &rid(&r)).await;
    assert_eq!(rec["credential_provider"], "oauth2", "{rec}");
    assert_eq!(
        rec["credential_id"],
        format!("sha256:{}", &sha256_hex(token)[..12]),
        "{rec}"
    );
    assert_eq!(rec["credential_scope"], "tools:read", "{rec}");
    assert_expires(&rec, &i["exp"]);
    assert_eq!(rec["credential_cached"], false, "{rec}");
    assert_eq!(rec["operation"], "read_things", "{rec}");
}

#[tokio::test]
async fn client_credentials_with_client_secret_basic() {
    client_credentials_through_keygate("e2e-basic").await;
}

#[tokio::test]
async fn client_credentials_with_client_secret_post() {
    client_credentials_through_keygate("e2e-post").await;
}

#[tokio::test]
async fn client_credentials_with_private_key_jwt_es256() {
    client_credentials_through_keygate("e2e-key-es").await;
}

#[tokio::test]
async fn client_credentials_with_private_key_jwt_rs256() {
    client_credentials_through_keygate("e2e-key-rs").await;
}

/// client_secret_basic form-encodes the id and secret before base64 (RFC 6749 §2.3.1),
/// which oidc-provider decodes: a secret with `+`, `%`, `:`, `&`, `=` and a space works.
#[tokio::test]
async fn client_secret_basic_form_encodes_the_secret() {
    let a = auth_server();
    let kg = start(Setup::new(
        "e2e-special",
        "client_credentials",
        "scope = \"tools:read\"\n",
    ))
    .await;
    let r = kg.call(AGENT, "GET", "/things").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), a.log_text());
    let log = a.requests("e2e-special").await;
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["auth_method"], "client_secret_basic");
    assert_eq!(log[0]["status"], 200);
}

// ---------------------------------------------------------------- scopes per operation

/// Two operations with two scopes: two token requests (with the configured `audience`),
/// each token with its operation's scope only; each is reused for its own operation.
#[tokio::test]
async fn each_operation_gets_a_token_with_its_own_scope() {
    let a = auth_server();
    let id = "e2e-ops";
    let kg = start(Setup::new(
        id,
        "client_credentials",
        "scope = \"tools:read\"\naudience = \"https://api.test/things\"\n\
         [tools.credential.operations.write_things]\nscope = \"tools:write\"\n",
    ))
    .await;
    let mut responses = vec![];
    for (method, path) in [
        ("GET", "/things"),
        ("POST", "/things"),
        ("GET", "/things"),
        ("POST", "/things"),
    ] {
        let r = kg.call(AGENT, method, path).await;
        assert_eq!(
            r.status,
            200,
            "{method} {path}: {}\n{}",
            r.text(),
            a.log_text()
        );
        responses.push(r);
    }
    let log = a.requests(id).await;
    assert_eq!(log.len(), 2, "two token requests: {log:#?}");
    let scopes: BTreeSet<&str> = log.iter().map(|q| q["scope"].as_str().unwrap()).collect();
    assert_eq!(
        scopes,
        BTreeSet::from(["tools:read", "tools:write"]),
        "{log:#?}"
    );
    for q in &log {
        assert!(q["resource"].is_null(), "no resource configured: {q:#}");
        // oidc-provider ignores `audience` in client_credentials; keygate sends it.
        assert_eq!(q["audience"], "https://api.test/things", "{q:#}");
        assert_eq!(q["status"], 200, "{q:#}");
    }

    let tokens = kg.upstream_tokens();
    assert_eq!(tokens.len(), 4);
    assert_ne!(tokens[0], tokens[1]);
    assert_eq!(tokens[0], tokens[2], "the read token was not reused");
    assert_eq!(tokens[1], tokens[3], "the write token was not reused");
    for (i, (op, scope)) in [
        ("read_things", "tools:read"),
        ("write_things", "tools:write"),
        ("read_things", "tools:read"),
        ("write_things", "tools:write"),
    ]
    .into_iter()
    .enumerate()
    {
        let claims = a.verify_access_token(&tokens[i], JWT_RESOURCE).await;
        assert_eq!(claims["scope"], scope, "call {i}: {claims}");
        assert_eq!(claims["client_id"], id, "call {i}: {claims}");
        let rec = audit_of(&kg.gw, &rid(&responses[i])).await;
        assert_eq!(rec["operation"], op, "{rec}");
        assert_eq!(rec["credential_provider"], "oauth2", "{rec}");
        assert_eq!(
            rec["credential_id"],
            format!("jti:{}", claims["jti"].as_str().unwrap()),
            "{rec}"
        );
        assert_eq!(rec["credential_scope"], scope, "{rec}");
        assert_expires(&rec, &claims["exp"]);
        assert_eq!(rec["credential_cached"], i >= 2, "call {i}: {rec}");
    }
}

/// An operation without a scope of its own, on a credential without a default `scope`,
/// is refused before anything is asked or forwarded; `scope = ""` asks for no scope.
#[tokio::test]
async fn an_operation_without_a_scope_is_refused_without_asking() {
    let a = auth_server();
    let id = "e2e-noscope";
    let kg = start(Setup::new(
        id,
        "client_credentials",
        "[tools.credential.operations.write_things]\nscope = \"tools:write\"\n\
         [tools.credential.operations.list_things]\nscope = \"\"\n",
    ))
    .await;
    let r = kg.call(AGENT, "GET", "/things").await;
    assert_credential_unavailable(&r, "read_things has no scope");
    assert!(a.requests(id).await.is_empty(), "the server was asked");
    assert_eq!(
        kg.up.count(),
        0,
        "a call without a credential was forwarded"
    );
    let rec = audit_of(&kg.gw, &rid(&r)).await;
    assert_eq!(rec["error"], "credential_unavailable", "{rec}");

    let r = kg.call(AGENT, "POST", "/things").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), a.log_text());
    let r = kg.call(AGENT, "GET", "/list").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), a.log_text());
    let log = a.requests(id).await;
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!(log[0]["scope"], "tools:write", "{log:#?}");
    assert!(
        log[1]["scope"].is_null() || log[1]["scope"] == "",
        "scope = \"\" asks for no scope: {log:#?}"
    );
    let tokens = kg.upstream_tokens();
    assert_eq!(tokens.len(), 2);
    let claims = a.verify_access_token(&tokens[1], JWT_RESOURCE).await;
    assert!(claims.get("scope").is_none(), "{claims}");
}

// ---------------------------------------------------------------- caching

/// A token is reused for the same agent and scope until a minute before it expires (the
/// server's tokens live 600 s), and not shared between agents.
#[tokio::test]
async fn tokens_are_cached_per_agent_until_a_minute_before_expiry() {
    let a = auth_server();
    let id = "e2e-cache";
    let kg = start(Setup::new(
        id,
        "client_credentials",
        "scope = \"tools:read\"\n",
    ))
    .await;
    let count = || async { a.requests(id).await.len() };
    let ok = |r: &Response| assert_eq!(r.status, 200, "{}\n{}", r.text(), a.log_text());

    let r1 = kg.call(AGENT, "GET", "/things").await;
    ok(&r1);
    assert_eq!(count().await, 1);
    let r2 = kg.call(AGENT, "GET", "/things").await;
    ok(&r2);
    assert_eq!(count().await, 1, "a second identical call asked again");
    let t = kg.upstream_tokens();
    assert_eq!(t[0], t[1]);
    let (rec1, rec2) = (
        audit_of(&kg.gw, &rid(&r1)).await,
        audit_of(&kg.gw, &rid(&r2)).await,
    );
    assert_eq!(rec1["credential_cached"], false, "{rec1}");
    assert_eq!(rec2["credential_cached"], true, "{rec2}");
    assert_eq!(rec1["credential_id"], rec2["credential_id"]);
    assert_eq!(rec1["credential_expires"], rec2["credential_expires"]);

    // Another agent: its own token.
    let r3 = kg.call(AGENT2, "GET", "/things").await;
    ok(&r3);
    assert_eq!(count().await, 2, "the token was shared between agents");
    assert_ne!(kg.upstream_tokens()[2], t[0]);

    // 350 s on (600 s tokens): before two thirds of its life, served as it is.
    kg.gw.advance_clock(Duration::from_secs(350));
    ok(&kg.call(AGENT, "GET", "/things").await);
    assert_eq!(count().await, 2, "refreshed before two thirds of its life");
    assert_eq!(kg.upstream_tokens()[3], t[0]);
    // 450 s on: past two thirds, the call is still served the cached token at once and a
    // refresh runs in the background; the next call gets the refreshed token.
    kg.gw.advance_clock(Duration::from_secs(100));
    let r4 = kg.call(AGENT, "GET", "/things").await;
    ok(&r4);
    assert_eq!(
        kg.upstream_tokens()[4],
        t[0],
        "a warm call waited for the refresh"
    );
    assert_eq!(audit_of(&kg.gw, &rid(&r4)).await["credential_cached"], true);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count().await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh ahead of expiry"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r5 = kg.call(AGENT, "GET", "/things").await;
    ok(&r5);
    assert_ne!(
        kg.upstream_tokens()[5],
        t[0],
        "the refreshed token was not used"
    );
    assert_eq!(count().await, 3);
    assert_eq!(audit_of(&kg.gw, &rid(&r5)).await["credential_cached"], true);

    // 545 s on: AGENT2's token (issued at 0, never refreshed: no call since) has less
    // than a minute left. It is not handed out: a new one is asked for, and waited on.
    kg.gw.advance_clock(Duration::from_secs(95));
    let t2 = kg.upstream_tokens()[2].clone();
    let r6 = kg.call(AGENT2, "GET", "/things").await;
    ok(&r6);
    assert_eq!(
        count().await,
        4,
        "a token in its last minute was handed out"
    );
    assert_ne!(kg.upstream_tokens()[6], t2);
    assert_eq!(
        audit_of(&kg.gw, &rid(&r6)).await["credential_cached"],
        false
    );
}

/// An MCP server behind an OAuth2 tool: each tools/call gets a token with its tool's
/// scope, and a batch calling two tools is refused (one credential goes with a POST, and
/// the first call would run with the other's scope); nothing reaches the server or the
/// authorization server for it.
#[tokio::test]
async fn an_mcp_batch_of_two_tools_is_refused_rather_than_given_one_scope() {
    let a = auth_server();
    let id = "e2e-mcp";
    let mut setup = Setup::new(
        id,
        "client_credentials",
        "scope = \"tools:read\"\n[tools.credential.operations.\"mcp:writer\"]\nscope = \"tools:write\"\n",
    );
    setup.tool_extra = "protocol = \"mcp\"\n";
    let kg = start(setup).await;
    let post = |body: Value| {
        let auth = bearer(&kg.iss.token(AGENT));
        let url = kg.gw.url("/tools/api/mcp");
        async move {
            Client::http1()
                .send(
                    "POST",
                    &url,
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                        ("accept", "application/json, text/event-stream"),
                    ],
                    body.to_string(),
                )
                .await
        }
    };
    let call = |id: u64, name: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": name, "arguments": {}}})
    };
    // Refused in MCP's dialect: a JSON-RPC error (-32600) for each message.
    let r = post(json!([call(1, "reader"), call(2, "writer")])).await;
    let errors = r.json();
    let errors = errors.as_array().expect("a JSON-RPC batch answer");
    assert_eq!(errors.len(), 2, "{}", r.text());
    for e in errors {
        assert_eq!(e["error"]["code"], -32600, "{e}");
        assert_eq!(e["error"]["data"]["error"], "bad_request", "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("one by one"),
            "{e}"
        );
    }
    assert_eq!(kg.up.count(), 0, "a refused batch reached the server");
    assert!(
        a.requests(id).await.is_empty(),
        "a token was asked for a refused batch"
    );

    // One call: its own scope.
    let r = post(call(3, "writer")).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), a.log_text());
    let log = a.requests(id).await;
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["scope"], "tools:write", "{log:#?}");
    // Two calls of the same tool in one batch share its scope.
    let r = post(json!([call(4, "reader"), call(5, "reader")])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(a.requests(id).await[1]["scope"], "tools:read");
}

/// 50 concurrent cold calls of one agent for one operation make one token request.
#[tokio::test]
async fn concurrent_cold_calls_make_one_token_request() {
    let a = auth_server();
    let id = "e2e-flight";
    let kg = start(Setup::new(
        id,
        "client_credentials",
        "scope = \"tools:read\"\n",
    ))
    .await;
    let calls = (0..50).map(|_| kg.call(AGENT, "GET", "/things"));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status, 200, "{}\n{}", r.text(), a.log_text());
    }
    let log = a.requests(id).await;
    assert_eq!(log.len(), 1, "concurrent cold calls: {log:#?}");
    let tokens: BTreeSet<String> = kg.upstream_tokens().into_iter().collect();
    assert_eq!(kg.up.count(), 50);
    assert_eq!(tokens.len(), 1, "different tokens forwarded");
    assert_eq!(
        log[0]["access_token"]["sha256"],
        sha256_hex(tokens.first().unwrap())
    );
}

// ---------------------------------------------------------------- token exchange

/// Token exchange: keygate mints the subject token (the agent, its owner) and the actor
/// token (the client), signed with its own key, and the server trusts keygate's issuer
/// through keygate's JWKS URL. The upstream's token carries `sub` = the agent, `act.sub`
/// = the client, and the operation's scope only; each agent gets its own.
#[tokio::test]
async fn token_exchange_carries_the_agent_and_the_client_as_actor() {
    let a = auth_server();
    let id = "e2e-tx";
    let issuer = "https://keygate.test/e2e-tx";
    let mut setup = Setup::new(
        id,
        "token_exchange",
        format!(
            "scope = \"tools:read\"\nresource = {JWT_RESOURCE:?}\n\
             [tools.credential.operations.write_things]\nscope = \"tools:write\"\n"
        ),
    );
    setup.head = format!("[signing]\nissuer = {issuer:?}\n");
    let kg = start(setup).await;
    let jwks_url = kg.gw.url("/.well-known/jwks.json");
    a.trust_issuer(issuer, &jwks_url, Some(&a.token_endpoint()))
        .await;
    let keygate_kids: BTreeSet<String> = Client::http1().get(&jwks_url, &[]).await.json()["keys"]
        .as_array()
        .expect("keygate's JWKS")
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();

    let r = kg.call(AGENT, "POST", "/things").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), a.log_text());
    let log = a.requests(id).await;
    assert_eq!(log.len(), 1, "{log:#?}");
    let q = &log[0];
    assert_eq!(q["grant_type"], TOKEN_EXCHANGE, "{q:#}");
    assert_eq!(q["auth_method"], "client_secret_basic", "{q:#}");
    assert_eq!(q["subject_token_type"], JWT_TOKEN_TYPE, "{q:#}");
    assert_eq!(q["actor_token_type"], JWT_TOKEN_TYPE, "{q:#}");
    assert_eq!(q["requested_token_type"], ACCESS_TOKEN_TYPE, "{q:#}");
    assert_eq!(q["scope"], "tools:write", "{q:#}");
    assert_eq!(q["resource"], JWT_RESOURCE, "{q:#}");
    assert_eq!(q["status"], 200, "{q:#}");
    let subject = &q["subject_token"];
    assert_eq!(subject["format"], "jwt", "{q:#}");
    assert!(
        keygate_kids.contains(subject["header"]["kid"].as_str().unwrap_or_default()),
        "the subject token's kid is not in keygate's JWKS: {q:#}"
    );
    let s = &subject["claims"];
    assert_eq!(s["iss"], issuer, "{q:#}");
    assert_eq!(s["sub"], AGENT, "{q:#}");
    assert_eq!(s["owner"], OWNER, "{q:#}");
    assert!(aud_is(&s["aud"], &a.token_endpoint()), "{q:#}");
    assert!(s["jti"].as_str().is_some_and(|j| !j.is_empty()), "{q:#}");
    assert_eq!(lifetime(s), 60, "{q:#}");
    let actor = &q["actor_token"]["claims"];
    assert_eq!(actor["iss"], issuer, "{q:#}");
    assert_eq!(actor["sub"], id, "{q:#}");
    assert!(aud_is(&actor["aud"], &a.token_endpoint()), "{q:#}");
    assert!(
        actor["jti"].as_str().is_some_and(|j| !j.is_empty()),
        "{q:#}"
    );
    assert_ne!(actor["jti"], s["jti"], "{q:#}");
    assert_eq!(lifetime(actor), 60, "{q:#}");

    let tokens = kg.upstream_tokens();
    let claims = a.verify_access_token(&tokens[0], JWT_RESOURCE).await;
    assert_eq!(claims["sub"], AGENT, "{claims}");
    assert_eq!(claims["act"], json!({"sub": id}), "{claims}");
    assert_eq!(claims["scope"], "tools:write", "{claims}");
    assert_eq!(claims["client_id"], id, "{claims}");
    let rec = audit_of(&kg.gw, &rid(&r)).await;
    assert_eq!(rec["credential_provider"], "oauth2", "{rec}");
    assert_eq!(
        rec["credential_id"],
        format!("jti:{}", claims["jti"].as_str().unwrap()),
        "{rec}"
    );
    assert_eq!(rec["credential_scope"], "tools:write", "{rec}");
    assert_expires(&rec, &claims["exp"]);

    // Another operation: its own exchange, its own scope.
    let r = kg.call(AGENT, "GET", "/things").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), a.log_text());
    // Another agent: a token for that agent, never the first agent's.
    let r = kg.call(AGENT2, "GET", "/things").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), a.log_text());
    let log = a.requests(id).await;
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_eq!(log[1]["scope"], "tools:read");
    assert_eq!(log[2]["subject_token"]["claims"]["sub"], AGENT2);
    assert_eq!(log[2]["subject_token"]["claims"]["owner"], OWNER2);
    let tokens = kg.upstream_tokens();
    let read = a.verify_access_token(&tokens[1], JWT_RESOURCE).await;
    assert_eq!(read["sub"], AGENT, "{read}");
    assert_eq!(read["scope"], "tools:read", "{read}");
    let other = a.verify_access_token(&tokens[2], JWT_RESOURCE).await;
    assert_eq!(other["sub"], AGENT2, "{other}");
    assert_eq!(other["act"], json!({"sub": id}), "{other}");

    // In a task: the subject token names the task (the agent's other subjects do not).
    assert!(log
        .iter()
        .all(|q| q["subject_token"]["claims"].get("task").is_none()));
    let (s, task) = kg
        .gw
        .admin(
            "POST",
            "/tasks",
            Some(json!({"agent": AGENT, "purpose": "p", "ticket": "OPS-5", "by": "carol"})),
        )
        .await;
    assert_eq!(s, 201, "{task}");
    let r = kg
        .call_with(
            AGENT,
            "GET",
            "/things",
            &[("keygate-task", task["id"].as_str().unwrap())],
        )
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), a.log_text());
    let log = a.requests(id).await;
    assert_eq!(log.len(), 4, "{log:#?}");
    assert_eq!(
        log[3]["subject_token"]["claims"]["task"], task["id"],
        "{:#}",
        log[3]
    );
    assert_eq!(log[3]["subject_token"]["claims"]["sub"], AGENT);
    assert!(log[3]["actor_token"]["claims"].get("task").is_none());
}

// ---------------------------------------------------------------- failing closed

/// A scope wider than the client's: the server answers `invalid_scope`, the agent gets
/// 502 `credential_unavailable` naming it, nothing is forwarded. A wrong client secret
/// likewise, with `invalid_client`.
#[tokio::test]
async fn a_refusal_by_the_server_is_credential_unavailable() {
    let a = auth_server();
    let id = "e2e-narrow";
    let kg = start(Setup::new(
        id,
        "client_credentials",
        "scope = \"tools:read tools:write\"\n",
    ))
    .await;
    let r = kg.call(AGENT, "GET", "/things").await;
    let message = assert_credential_unavailable(&r, "invalid_scope");
    assert!(message.contains("invalid_scope"), "{message}");
    assert!(!message.contains(a.client(id).secret.as_deref().unwrap()));
    assert_eq!(kg.up.count(), 0, "forwarded without a credential");
    let log = a.requests(id).await;
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["status"], 400, "{log:#?}");
    assert_eq!(log[0]["error"], "invalid_scope", "{log:#?}");
    let rec = audit_of(&kg.gw, &rid(&r)).await;
    assert_eq!(rec["error"], "credential_unavailable", "{rec}");
    assert_eq!(rec["status"], 502, "{rec}");

    let id = "e2e-wrong-secret";
    let mut setup = Setup::new(id, "client_credentials", "scope = \"tools:read\"\n");
    setup.secret = Some("not-the-secret-0123456789");
    let kg = start(setup).await;
    let r = kg.call(AGENT, "GET", "/things").await;
    let message = assert_credential_unavailable(&r, "invalid_client");
    assert!(message.contains("invalid_client"), "{message}");
    assert!(!message.contains("not-the-secret-0123456789"), "{message}");
    assert_eq!(kg.up.count(), 0, "forwarded without a credential");
    let log = a.requests(id).await;
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["status"], 401, "{log:#?}");
}

/// Nothing listens at the token endpoint: 502 `credential_unavailable`, nothing
/// forwarded, the failure counted.
#[tokio::test]
async fn an_unreachable_server_is_credential_unavailable() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut setup = Setup::new("e2e-down", "client_credentials", "scope = \"tools:read\"\n");
    setup.token_endpoint = Some(format!("http://{closed}/token"));
    let kg = start(setup).await;
    for _ in 0..2 {
        let r = kg.call(AGENT, "GET", "/things").await;
        assert_credential_unavailable(&r, "server down");
        let rec = audit_of(&kg.gw, &rid(&r)).await;
        assert_eq!(rec["error"], "credential_unavailable", "{rec}");
    }
    assert_eq!(kg.up.count(), 0, "forwarded without a credential");
    let metrics = kg.metrics().await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("keygate_credential_failures_total{") && l.contains("provider=\"oauth2\"")
        })
        .unwrap_or_else(|| panic!("no oauth2 credential failure metric:\n{metrics}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(n, 2.0, "{line}");
}

// ---------------------------------------------------------------- secrets

/// Every JWT-shaped string in `hay` (three base64url segments, the first starting `eyJ`).
fn jwts_in(hay: &[u8]) -> Vec<String> {
    let is_b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut out = vec![];
    let mut i = 0;
    while i + 3 <= hay.len() {
        if &hay[i..i + 3] == b"eyJ" && (i == 0 || !is_b64(hay[i - 1])) {
            let mut j = i;
            while j < hay.len() && (is_b64(hay[j]) || hay[j] == b'.') {
                j += 1;
            }
            let run = String::from_utf8_lossy(&hay[i..j]).into_owned();
            let parts: Vec<&str> = run.split('.').collect();
            if parts.len() >= 3 && parts[..3].iter().all(|p| !p.is_empty()) {
                out.push(parts[..3].join("."));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Client secrets, the client's private key, the access tokens and every JWT keygate sent
/// the server (client assertions, subject and actor tokens) appear nowhere: not in the
/// audit log, the store or any other file keygate keeps, nor in a log line — through
/// issuing, reuse and a refusal.
#[tokio::test]
async fn tokens_and_client_secrets_never_appear_in_logs_audit_or_files() {
    logs();
    let a = auth_server();
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "oauth2-iss", "keygate");
    let issuer = "https://keygate.test/e2e-secrets";
    let te = a.token_endpoint();
    let tool = |name: &str, client: &str, grant: &str, extra: &str| {
        format!(
            "[[tools]]\nname = {name:?}\nupstream = {:?}\n{}{extra}",
            up.url(),
            credential_toml(dir.path(), &te, a.client(client), grant)
        )
    };
    let cfg = format!(
        "[signing]\nissuer = {issuer:?}\n{}{}{}{}{}{}",
        iss.toml(),
        agent(AGENT, OWNER),
        tool(
            "post",
            "e2e-secrets-post",
            "client_credentials",
            &format!("scope = \"tools:read\"\nresource = {OPAQUE_RESOURCE:?}\n")
        ),
        tool(
            "key",
            "e2e-secrets-key",
            "client_credentials",
            "scope = \"tools:read\"\n"
        ),
        tool(
            "tx",
            "e2e-secrets-tx",
            "token_exchange",
            "scope = \"tools:read\"\n"
        ),
        // The same client asking a scope it does not have: a refusal with its message.
        tool(
            "refused",
            "e2e-secrets-post",
            "client_credentials",
            "scope = \"admin\"\n"
        ),
    );
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    a.trust_issuer(issuer, &gw.url("/.well-known/jwks.json"), Some(&te))
        .await;
    let auth = bearer(&iss.token(AGENT));
    for tool in ["post", "key", "tx", "post", "key", "tx", "refused"] {
        let r = Client::http1()
            .get(
                &gw.url(&format!("/tools/{tool}/things")),
                &[("authorization", &auth)],
            )
            .await;
        let want = if tool == "refused" { 502 } else { 200 };
        assert_eq!(r.status, want, "{tool}: {}\n{}", r.text(), a.log_text());
    }
    let access_tokens: Vec<String> = up
        .requests()
        .iter()
        .map(|r| bearer_token(&r.header("authorization").unwrap()).to_string())
        .collect();
    assert_eq!(access_tokens.len(), 6);

    // What keygate sent the server, by hash.
    let mut sent = BTreeSet::new();
    let mut issued = BTreeSet::new();
    for c in ["e2e-secrets-post", "e2e-secrets-key", "e2e-secrets-tx"] {
        for q in a.requests(c).await {
            for f in ["client_assertion", "subject_token", "actor_token"] {
                if let Some(h) = q[f]["sha256"].as_str() {
                    sent.insert(h.to_string());
                }
            }
            if let Some(h) = q["access_token"]["sha256"].as_str() {
                issued.insert(h.to_string());
            }
        }
    }
    assert!(
        sent.len() >= 3,
        "no assertion, subject or actor token seen: {sent:?}"
    );
    assert_eq!(issued.len(), 3, "three tokens issued");

    let audit = gw.audit().await;
    assert!(!audit.is_empty());
    gw.stop().await;
    let audit_text = std::fs::read(&gw.audit_path).unwrap();
    let logs = logs().lock().unwrap().clone();
    assert!(!logs.is_empty(), "no log line captured");

    let mut needles: Vec<(String, String)> = vec![];
    for c in ["e2e-secrets-post", "e2e-secrets-tx"] {
        needles.push((
            format!("{c}'s client secret"),
            a.client(c).secret.clone().unwrap(),
        ));
    }
    let pem = &a.client("e2e-secrets-key").key.as_ref().unwrap().pem;
    let key_line = pem.lines().nth(2).unwrap().to_string();
    needles.push(("the client's private key".into(), key_line));
    for (i, t) in access_tokens.iter().enumerate() {
        needles.push((format!("access token {i}"), t.clone()));
        if let Some(sig) = t.split('.').nth(2) {
            needles.push((format!("access token {i}'s signature"), sig.to_string()));
        }
    }
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("the audit log".into(), audit_text),
        ("a log line".into(), logs),
    ];
    let secrets_dir = gw.dir.path().join("secrets");
    for f in files_under(gw.dir.path()) {
        if !f.starts_with(&secrets_dir) {
            places.push((f.display().to_string(), std::fs::read(&f).unwrap()));
        }
    }
    assert!(
        places.iter().any(|(p, _)| p.ends_with("keygate.db")),
        "no store file under the gateway's directory"
    );
    for (place, bytes) in &places {
        for (what, needle) in &needles {
            assert!(!contains(bytes, needle), "{what} is in {place}");
        }
        for jwt in jwts_in(bytes) {
            let h = sha256_hex(&jwt);
            assert!(
                !sent.contains(&h),
                "a JWT keygate sent the server (assertion, subject or actor token) is in {place}"
            );
            assert!(!issued.contains(&h), "an access token is in {place}");
        }
    }
}
