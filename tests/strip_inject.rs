//! Strip and inject, end to end: what the agent sends never reaches the tool, what keygate
//! injects does, secrets are refused or redacted, and the audit log names but never shows.
//!
//! Every test runs real servers on loopback: a [`RawUpstream`] that records the exact
//! bytes it received, and keygate started in-process from a config text.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

mod common;
use common::*;

use serde_json::Value;
use std::time::Duration;

// ---------------------------------------------------------------- helpers

/// An AWS access key id (the documented example).
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
/// A GitHub personal access token shape: `ghp_` and 36 alphanumerics.
const GH_TOKEN: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
/// A Slack bot token shape.
const SLACK_TOKEN: &str = "xoxb-1234567890-abcdefghij";
/// A PEM private key block.
const PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHk0bGFuZ3VhZ2VtYWtlc3RoZXdvcmxkZ28\n-----END PRIVATE KEY-----";

/// A temp dir with an agent-token issuer in it.
fn issuer() -> (tempfile::TempDir, TestIssuer) {
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "si-iss", "keygate");
    (dir, iss)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Asserts that none of `needles` occurs in the bytes `what` names.
fn assert_absent(hay: &[u8], needles: &[&str], what: &str) {
    for n in needles {
        assert!(
            !contains(hay, n),
            "{what} contains {n:?}:\n{}",
            String::from_utf8_lossy(hay)
        );
    }
}

/// The audit records once at least `n` have been written (they are written when a
/// response body finishes, which can be just after the client has read it).
async fn audit_n(gw: &TestGateway, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let a = gw.audit().await;
        if a.len() >= n {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} audit records: {:?}", gw.audit().await);
}

/// The audit file as text (after flushing).
async fn audit_text(gw: &TestGateway) -> String {
    gw.runtime.shared.audit.close().await;
    std::fs::read_to_string(&gw.audit_path).unwrap_or_default()
}

/// The audit record with this request id.
fn record<'a>(records: &'a [Value], request_id: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no audit record {request_id} in {records:?}"))
}

/// The `stripped` list of an audit record, as strings.
fn stripped(r: &Value) -> Vec<String> {
    r["stripped"]
        .as_array()
        .unwrap_or_else(|| panic!("no stripped list in {r}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The id keygate gives a static secret without a configured `credential_id`.
fn fingerprint(secret: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    format!("sha256:{}", const_hex::encode(&d.as_ref()[..6]))
}

/// Asserts a keygate error response: status and JSON `error` code.
fn assert_error(r: &Response, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.json()["error"], code, "{what}: {}", r.text());
    assert!(r.json()["request_id"].is_string(), "{what}: {}", r.text());
}

/// A `[[tools]]` block with extra tool keys and credential keys.
fn tool(name: &str, upstream: &str, tool_extra: &str, credential: &str) -> String {
    format!(
        "[[tools]]\nname = {name:?}\nupstream = {upstream:?}\n{tool_extra}\n[tools.credential]\n{credential}\n"
    )
}

/// A gzip stream (one stored deflate block) of `data`.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let len = data.len() as u16;
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A chunked HTTP/1.1 request, sent raw; returns the raw response text.
async fn send_chunked(
    gw: &TestGateway,
    path: &str,
    token: &str,
    content_type: &str,
    body: &[u8],
) -> String {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    raw_exchange(gw.addr, &req, Duration::from_secs(10)).await
}

// ---------------------------------------------------------------- 1. strip

/// The agent's token, cookies, API keys, a tool-named header and credential query
/// parameters never reach the tool; the rest of the query does, with keygate's credential.
#[tokio::test]
async fn agent_credentials_never_reach_the_upstream() {
    let up = RawUpstream::start().await;
    let (dir, iss) = issuer();
    secret_file(dir.path(), "KG_SI_STRIP_SECRET", "tool-secret-strip-1");
    let cfg = format!(
        "{}{}{}",
        iss.toml(),
        agent("agent-1", "alice@example.com"),
        tool(
            "t",
            &up.url(),
            "strip_headers = [\"X-Agent-Secret\"]\nstrip_query = [\"sig\"]",
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_STRIP_SECRET\"",
        )
    );
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    let token = iss.token("agent-1");
    let signature = token.rsplit('.').next().unwrap().to_string();
    let auth = bearer(&token);
    let values = [
        "cookie-value-c1",
        "cookie-value-c2",
        "xapikey-value-x1",
        "proxy-pw-value-p1",
        "agent-secret-value-s1",
        "accesstoken-value-q1",
        "apikey-value-q2",
        "apikey2-value-q3",
        "clientsecret-value-q4",
        "sig-value-q5",
        "encoded-name-value-q6",
    ];

    let c = Client::http1();
    let url = gw.url(
        "/tools/t/items?access_token=accesstoken-value-q1&keep=yes&api_key=apikey-value-q2\
         &APIKEY=apikey2-value-q3&page=2&client_secret=clientsecret-value-q4&sig=sig-value-q5\
         &api%5Fkey=encoded-name-value-q6",
    );
    let r = c
        .get(
            &url,
            &[
                ("authorization", &auth),
                ("cookie", "session=cookie-value-c1"),
                ("cookie", "other=cookie-value-c2"),
                ("x-api-key", "xapikey-value-x1"),
                ("proxy-authorization", "Basic proxy-pw-value-p1"),
                ("x-agent-secret", "agent-secret-value-s1"),
                ("x-keep-me", "visible"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "ok");

    // A query made only of stripped parameters disappears entirely.
    let r2 = c
        .get(
            &gw.url("/tools/t/only?access_token=accesstoken-value-q1"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r2.status, 200, "{}", r2.text());

    // HTTP/2 from the agent (cookies may arrive as several header fields).
    let h2 = Client::http2();
    let r3 = h2
        .get(
            &gw.url("/tools/t/h2?sig=sig-value-q5&x=1"),
            &[
                ("authorization", &auth),
                ("cookie", "session=cookie-value-c1"),
                ("cookie", "other=cookie-value-c2"),
                ("x-agent-secret", "agent-secret-value-s1"),
            ],
        )
        .await;
    assert_eq!(r3.status, 200, "{}", r3.text());

    let reqs = up.requests();
    assert_eq!(reqs.len(), 3);
    for rec in &reqs {
        assert_absent(&rec.raw, &values, "upstream bytes");
        assert_absent(
            &rec.raw,
            &[&token, &signature, "session=", "Basic "],
            "upstream bytes",
        );
        assert_eq!(
            rec.header("authorization").as_deref(),
            Some("Bearer tool-secret-strip-1")
        );
        assert_eq!(
            rec.head.matches("tool-secret-strip-1").count(),
            1,
            "{}",
            rec.head
        );
        for h in [
            "cookie",
            "x-api-key",
            "proxy-authorization",
            "x-agent-secret",
        ] {
            assert_eq!(
                rec.header(h),
                None,
                "{h} reached the upstream:\n{}",
                rec.head
            );
        }
    }
    assert_eq!(reqs[0].target(), "/items?keep=yes&page=2");
    assert_eq!(reqs[0].header("x-keep-me").as_deref(), Some("visible"));
    assert_eq!(reqs[1].target(), "/only");
    assert_eq!(reqs[2].target(), "/h2?x=1");

    gw.stop().await;
    let records = audit_n(&gw, 3).await;
    let text = audit_text(&gw).await;
    assert_absent(text.as_bytes(), &values, "audit log");
    assert_absent(
        text.as_bytes(),
        &[&token, "tool-secret-strip-1"],
        "audit log",
    );
    let rid = reqs[0].header("x-request-id").unwrap();
    let rec = record(&records, &rid);
    let s = stripped(rec);
    for name in [
        "header:authorization",
        "header:proxy-authorization",
        "header:cookie",
        "header:x-api-key",
        "header:x-agent-secret",
        "query:access_token",
        "query:api_key",
        "query:APIKEY",
        "query:client_secret",
        "query:sig",
    ] {
        assert!(
            s.iter().any(|x| x == name),
            "{name} missing from stripped {s:?}"
        );
    }
    // api%5Fkey is api_key once decoded: stripped too, and named decoded.
    assert_eq!(
        s.iter().filter(|x| *x == "query:api_key").count(),
        2,
        "{s:?}"
    );
    for x in &s {
        assert!(!x.contains('='), "a value in stripped: {x}");
    }
    assert_eq!(
        rec["path"], "/tools/t/items",
        "the audit path never carries the query"
    );
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["agent_id"], "agent-1");
    let rid3 = reqs[2].header("x-request-id").unwrap();
    let s3 = stripped(record(&records, &rid3));
    for name in [
        "header:authorization",
        "header:cookie",
        "header:x-agent-secret",
        "query:sig",
    ] {
        assert!(
            s3.iter().any(|x| x == name),
            "{name} missing from h2 stripped {s3:?}"
        );
    }
}

// ---------------------------------------------------------------- 2. static provider

/// A static secret arrives in each injection form, from a file, and the audit names it by
/// its configured id or by a fingerprint that does not reveal it. (The `from_env` source
/// is read by the keygate binary in audit_and_logs.rs, which sets it with `Command::env`.)
#[tokio::test]
async fn static_provider_injects_in_every_form() {
    let (up_bearer, up_basic, up_hdr, up_qry) = (
        RawUpstream::start().await,
        RawUpstream::start().await,
        RawUpstream::start().await,
        RawUpstream::start().await,
    );
    let (dir, iss) = issuer();
    secret_file(dir.path(), "KG_SI_STATIC_BASIC", "svc-user:p@ss w0rd");
    secret_file(dir.path(), "KG_SI_STATIC_BEARER", "bearer-secret-2a");
    let hdr_file = dir.path().join("hdr-secret.txt");
    std::fs::write(&hdr_file, "file-secret-hdr\n").unwrap();
    let qry_file = dir.path().join("qry-secret.txt");
    std::fs::write(&qry_file, "q s/e&c=r").unwrap();
    let cfg = format!(
        "{}{}{}{}{}{}",
        iss.toml(),
        agent("agent-2", "bob@example.com"),
        tool(
            "bear",
            &up_bearer.url(),
            "",
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_STATIC_BEARER\"\ninject = \"bearer\"",
        ),
        tool(
            "basic",
            &up_basic.url(),
            "",
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_STATIC_BASIC\"\ninject = \"basic\"\ncredential_id = \"vault:basic-svc\"",
        ),
        tool(
            "hdr",
            &up_hdr.url(),
            "",
            &format!(
                "provider = \"static\"\nfrom_file = {:?}\ninject = \"header\"\nheader = \"X-Service-Key\"",
                hdr_file.display().to_string()
            ),
        ),
        tool(
            "qry",
            &format!("{}/api/v2", up_qry.url()),
            "",
            &format!(
                "provider = \"static\"\nfrom_file = {:?}\ninject = \"query\"\nquery = \"key\"",
                qry_file.display().to_string()
            ),
        ),
    );
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    let auth = bearer(&iss.token("agent-2"));
    let c = Client::http1();

    let r = c
        .get(&gw.url("/tools/bear/a"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c
        .get(&gw.url("/tools/basic/b"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The agent's own value for the injected header is replaced, not kept beside it.
    let r = c
        .get(
            &gw.url("/tools/hdr/c"),
            &[
                ("authorization", &auth),
                ("x-service-key", "agent-forged-hdr"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c
        .get(
            &gw.url("/tools/qry/search?q=rust&page=2"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c
        .get(&gw.url("/tools/qry/plain"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    use base64::Engine;
    let b = &up_bearer.requests()[0];
    assert_eq!(
        b.header("authorization").as_deref(),
        Some("Bearer bearer-secret-2a")
    );
    assert_eq!(b.target(), "/a");

    let b = &up_basic.requests()[0];
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("svc-user:p@ss w0rd")
    );
    assert_eq!(b.header("authorization"), Some(expected.clone()));

    let h = &up_hdr.requests()[0];
    assert_eq!(
        h.header("x-service-key").as_deref(),
        Some("file-secret-hdr")
    );
    assert_eq!(
        h.head
            .to_ascii_lowercase()
            .matches("x-service-key:")
            .count(),
        1,
        "{}",
        h.head
    );
    assert_absent(&h.raw, &["agent-forged-hdr"], "upstream bytes");
    assert_eq!(h.header("authorization"), None, "{}", h.head);

    let q = up_qry.requests();
    assert_eq!(
        q[0].target(),
        "/api/v2/search?q=rust&page=2&key=q+s%2Fe%26c%3Dr"
    );
    assert_eq!(q[1].target(), "/api/v2/plain?key=q+s%2Fe%26c%3Dr");
    assert_eq!(q[0].header("authorization"), None, "{}", q[0].head);

    gw.stop().await;
    let records = audit_n(&gw, 5).await;
    let by_tool = |t: &str| -> Vec<&Value> { records.iter().filter(|r| r["tool"] == t).collect() };
    assert_eq!(
        by_tool("bear")[0]["credential_id"],
        fingerprint("bearer-secret-2a")
    );
    assert_eq!(by_tool("basic")[0]["credential_id"], "vault:basic-svc");
    // The file's trailing newline is not part of the secret.
    assert_eq!(
        by_tool("hdr")[0]["credential_id"],
        fingerprint("file-secret-hdr")
    );
    for r in by_tool("qry") {
        assert_eq!(r["credential_id"], fingerprint("q s/e&c=r"));
    }
    for r in &records {
        assert_eq!(r["credential_provider"], "static", "{r}");
        let id = r["credential_id"].as_str().unwrap();
        assert!(
            id == "vault:basic-svc" || (id.starts_with("sha256:") && id.len() == 19),
            "{id}"
        );
    }
    let text = audit_text(&gw).await;
    let encoded_basic = expected.trim_start_matches("Basic ").to_string();
    assert_absent(
        text.as_bytes(),
        &[
            "bearer-secret-2a",
            "svc-user",
            "p@ss",
            &encoded_basic,
            "file-secret-hdr",
            "q s/e",
            "q+s%2F",
        ],
        "audit log",
    );
}

/// The agent cannot smuggle its own value for the query parameter keygate injects:
/// upstream sees exactly one `key`, keygate's.
#[tokio::test]
async fn agent_value_for_the_injected_query_parameter_is_dropped() {
    let up = RawUpstream::start().await;
    let (dir, iss) = issuer();
    secret_file(dir.path(), "KG_SI_QUERY_OVERRIDE", "query-secret-9z");
    let cfg = format!(
        "{}{}{}",
        iss.toml(),
        agent("agent-q", "carol@example.com"),
        tool(
            "qo",
            &up.url(),
            "",
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_QUERY_OVERRIDE\"\ninject = \"query\"\nquery = \"key\"",
        ),
    );
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    let auth = bearer(&iss.token("agent-q"));
    let r = Client::http1()
        .get(
            &gw.url("/tools/qo/x?key=agent-forged-q&q=1&KEY=agent-forged-q2"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = &up.requests()[0];
    assert_absent(&rec.raw, &["agent-forged-q"], "upstream bytes");
    assert_eq!(rec.target(), "/x?q=1&key=query-secret-9z");
    gw.stop().await;
    let records = audit_n(&gw, 1).await;
    let s = stripped(&records[0]);
    assert!(
        s.contains(&"query:key".to_string()) && s.contains(&"query:KEY".to_string()),
        "{s:?}"
    );
    let text = audit_text(&gw).await;
    assert_absent(
        text.as_bytes(),
        &["agent-forged-q", "query-secret-9z"],
        "audit log",
    );
}

// ---------------------------------------------------------------- 3. jwt provider

/// Fetches keygate's JWKS (no credentials needed) and verifies `token` with it.
async fn verify_minted(
    gw: &TestGateway,
    token: &str,
    alg: jsonwebtoken::Algorithm,
    issuer: &str,
    audience: &str,
) -> Value {
    let r = Client::http1()
        .get(&gw.url("/.well-known/jwks.json"), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/jwk-set+json")
    );
    let doc = r.json();
    for k in doc["keys"].as_array().unwrap() {
        assert!(
            k.get("d").is_none(),
            "the JWKS publishes a private key: {k}"
        );
    }
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(doc).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, alg);
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("kid in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "sub", "aud"]);
    v.validate_nbf = true;
    let data = jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap_or_else(|e| panic!("minted token does not verify: {e}"));
    // A token for another audience does not verify with these rules.
    let mut other = v.clone();
    other.set_audience(&["some-other-tool"]);
    assert!(jsonwebtoken::decode::<Value>(token, &key, &other).is_err());
    data.claims
}

fn bearer_token(rec: &Received) -> String {
    rec.header("authorization")
        .and_then(|h| h.strip_prefix("Bearer ").map(str::to_string))
        .unwrap_or_else(|| panic!("no bearer token upstream:\n{}", rec.head))
}

/// A fresh JWT per call, signed with the published key, carrying the agent, the owner,
/// the tool, the scope and a unique `jti` that is also the audit's credential id.
#[tokio::test]
async fn jwt_provider_mints_verifiable_scoped_tokens() {
    let up = RawUpstream::start().await;
    let up_aud = RawUpstream::start().await;
    let (dir, iss) = issuer();
    let cfg = format!(
        "{}{}{}{}",
        iss.toml(),
        agent("agent-7", "alice@example.com"),
        tool("jt", &up.url(), "", "provider = \"jwt\"\nscope = \"repo:read issues:write\"\nunique_per_call = true"),
        tool(
            "jt-aud",
            &up_aud.url(),
            "",
            "provider = \"jwt\"\naudience = \"https://api.example.test\"\nttl = \"60s\"\ninject = \"header\"\nheader = \"X-Tool-Token\"",
        ),
    );
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    let agent_token = iss.token("agent-7");
    let auth = bearer(&agent_token);
    let c = Client::http1();
    for _ in 0..2 {
        let r = c
            .get(&gw.url("/tools/jt/repos"), &[("authorization", &auth)])
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = c
        .get(&gw.url("/tools/jt-aud/x"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let reqs = up.requests();
    assert_eq!(reqs.len(), 2);
    let mut jtis = Vec::new();
    let mut by_rid = Vec::new();
    for rec in &reqs {
        assert_absent(&rec.raw, &[&agent_token], "upstream bytes");
        let t = bearer_token(rec);
        let claims = verify_minted(&gw, &t, jsonwebtoken::Algorithm::EdDSA, "keygate", "jt").await;
        assert_eq!(claims["iss"], "keygate");
        assert_eq!(claims["sub"], "agent-7");
        assert_eq!(claims["aud"], "jt");
        assert_eq!(claims["scope"], "repo:read issues:write");
        assert_eq!(claims["owner"], "alice@example.com");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert!(exp > iat && exp - iat <= 300, "iat {iat} exp {exp}");
        assert!(iat.abs_diff(now()) < 60, "iat {iat} is not now");
        let jti = claims["jti"].as_str().unwrap().to_string();
        assert!(!jti.is_empty());
        jtis.push(jti.clone());
        by_rid.push((rec.header("x-request-id").unwrap(), jti));
    }
    assert_ne!(jtis[0], jtis[1], "two calls got the same jti");
    assert_ne!(bearer_token(&reqs[0]), bearer_token(&reqs[1]));

    let a = &up_aud.requests()[0];
    assert_eq!(a.header("authorization"), None, "{}", a.head);
    let t = a.header("x-tool-token").unwrap();
    let claims = verify_minted(
        &gw,
        &t,
        jsonwebtoken::Algorithm::EdDSA,
        "keygate",
        "https://api.example.test",
    )
    .await;
    assert_eq!(claims["aud"], "https://api.example.test");
    assert_eq!(claims["sub"], "agent-7");
    assert!(
        claims.get("scope").is_none(),
        "no scope configured: {claims}"
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );

    gw.stop().await;
    let records = audit_n(&gw, 3).await;
    for (rid, jti) in &by_rid {
        let r = record(&records, rid);
        assert_eq!(r["credential_provider"], "jwt");
        assert_eq!(&r["credential_id"], jti.as_str(), "{r}");
    }
    let rid = a.header("x-request-id").unwrap();
    assert_eq!(record(&records, &rid)["credential_id"], claims["jti"]);
    // The audit never holds a minted token.
    let text = audit_text(&gw).await;
    assert_absent(
        text.as_bytes(),
        &[&bearer_token(&reqs[0]), &t, &agent_token],
        "audit log",
    );
}

/// With `[signing] algorithm = "ES256"` and an issuer name, minted tokens are ES256 and
/// verify with the published P-256 key.
#[tokio::test]
async fn jwt_provider_es256_with_configured_issuer() {
    let up = RawUpstream::start().await;
    let (dir, iss) = issuer();
    let cfg = format!(
        "{}[signing]\nissuer = \"kg-es\"\nalgorithm = \"ES256\"\n{}{}",
        iss.toml(),
        agent("agent-es", "dora@example.com"),
        tool(
            "es",
            &up.url(),
            "",
            "provider = \"jwt\"\nscope = \"read\"\naudience = \"es-api\""
        ),
    );
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    let r = Client::http1()
        .get(
            &gw.url("/tools/es/v"),
            &[("authorization", &bearer(&iss.token("agent-es")))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = bearer_token(&up.requests()[0]);
    let claims = verify_minted(&gw, &t, jsonwebtoken::Algorithm::ES256, "kg-es", "es-api").await;
    assert_eq!(claims["iss"], "kg-es");
    assert_eq!(claims["sub"], "agent-es");
    assert_eq!(claims["owner"], "dora@example.com");
    assert_eq!(claims["scope"], "read");
    let jwks = Client::http1()
        .get(&gw.url("/.well-known/jwks.json"), &[])
        .await
        .json();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    gw.stop().await;
    let records = audit_n(&gw, 1).await;
    let rec = records.iter().find(|r| r["tool"] == "es").unwrap();
    assert_eq!(rec["credential_id"], claims["jti"]);
}

// ---------------------------------------------------------------- 4. reject

/// One refused request: what it shows, path and query, headers, body.
type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Vec<u8>);

/// A known secret format anywhere in a text request is refused (400 secret_in_request)
/// and nothing reaches the tool; binary bodies are not scanned; compressed text is 415.
#[tokio::test]
async fn secrets_are_refused_by_default() {
    let up = RawUpstream::start().await;
    let (dir, iss) = issuer();
    secret_file(dir.path(), "KG_SI_REJECT_SECRET", "reject-tool-secret");
    let cfg = format!(
        "{}{}{}",
        iss.toml(),
        agent("agent-r", "erin@example.com"),
        tool(
            "rj",
            &up.url(),
            "",
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_REJECT_SECRET\""
        ),
    );
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    let token = iss.token("agent-r");
    let auth = bearer(&token);
    let c = Client::http1();
    let json = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];

    let gh_encoded = GH_TOKEN.replace('_', "%5F");
    // (what, path and query, headers, body)
    let cases: Vec<Case> = vec![
        (
            "query",
            format!("/tools/rj/s?q=1&aws={AWS_KEY}"),
            vec![],
            vec![],
        ),
        (
            "query percent-encoded",
            "/tools/rj/s?aws=%41KIAIOSFODNN7EXAMPLE".into(),
            vec![],
            vec![],
        ),
        (
            "query name",
            format!("/tools/rj/s?{AWS_KEY}=1"),
            vec![],
            vec![],
        ),
        (
            "bare query",
            format!("/tools/rj/s?{AWS_KEY}"),
            vec![],
            vec![],
        ),
        (
            "json body",
            "/tools/rj/j".into(),
            json.to_vec(),
            format!("{{\"token\":\"{GH_TOKEN}\"}}").into_bytes(),
        ),
        (
            "form body percent-encoded",
            "/tools/rj/f".into(),
            vec![("content-type", "application/x-www-form-urlencoded")],
            format!("note=hi&token={gh_encoded}").into_bytes(),
        ),
        (
            "header",
            "/tools/rj/h".into(),
            vec![("x-note", "bot xoxb-1234567890-abcdefghij here")],
            vec![],
        ),
        (
            "private key in text/plain",
            "/tools/rj/k".into(),
            vec![("content-type", "text/plain")],
            format!("here is my key\n{PRIVATE_KEY}\n").into_bytes(),
        ),
        (
            "jwt in body",
            "/tools/rj/jwt".into(),
            json.to_vec(),
            format!("{{\"note\":\"my token is {token}\"}}").into_bytes(),
        ),
        (
            "body without content type",
            "/tools/rj/n".into(),
            vec![],
            format!("key {AWS_KEY}").into_bytes(),
        ),
        (
            "path",
            format!("/tools/rj/keys/{AWS_KEY}/x"),
            vec![],
            vec![],
        ),
        (
            "path percent-encoded",
            "/tools/rj/keys/%41KIAIOSFODNN7EXAMPLE".into(),
            vec![],
            vec![],
        ),
    ];
    let mut ids = Vec::new();
    for (what, path, mut headers, body) in cases {
        if !headers.iter().any(|(k, _)| *k == "authorization") {
            headers.push(("authorization", auth.as_str()));
        }
        let method = if body.is_empty() { "GET" } else { "POST" };
        let r = c.send(method, &gw.url(&path), &headers, body).await;
        assert_error(&r, 400, "secret_in_request", what);
        assert_absent(
            &r.body,
            &[AWS_KEY, GH_TOKEN, SLACK_TOKEN, "BEGIN PRIVATE"],
            "error response",
        );
        assert_eq!(up.count(), 0, "{what}: the upstream received a request");
        ids.push(r.json()["request_id"].as_str().unwrap().to_string());
    }

    // A binary body is streamed unscanned.
    let binary = format!("\x00\x01{AWS_KEY}\x02").into_bytes();
    let r = c
        .send(
            "PUT",
            &gw.url("/tools/rj/blob"),
            &[
                ("authorization", &auth),
                ("content-type", "application/octet-stream"),
            ],
            binary.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
    assert_eq!(up.requests()[0].body, binary);

    // A compressed text body cannot be scanned, so it is refused even when harmless.
    let gz = gzip_stored(br#"{"hello":"world"}"#);
    let r = c
        .send(
            "POST",
            &gw.url("/tools/rj/gz"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            gz,
        )
        .await;
    assert_error(&r, 415, "unscannable_body", "gzip body");
    assert_eq!(up.count(), 1, "the gzip body reached the upstream");

    // The same harmless JSON uncompressed passes.
    let r = c
        .send(
            "POST",
            &gw.url("/tools/rj/plain"),
            &json,
            r#"{"hello":"world"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 2);

    gw.stop().await;
    let records = audit_n(&gw, ids.len() + 3).await;
    for id in &ids {
        let r = record(&records, id);
        assert_eq!(r["decision"], "deny", "{r}");
        assert_eq!(r["error"], "secret_in_request", "{r}");
        assert_eq!(r["status"], 400, "{r}");
    }
    let text = audit_text(&gw).await;
    assert_absent(
        text.as_bytes(),
        &[
            AWS_KEY,
            "%41KIAIOSFODNN7EXAMPLE",
            GH_TOKEN,
            &gh_encoded,
            SLACK_TOKEN,
            &token,
            "BEGIN PRIVATE",
        ],
        "audit log",
    );
}

// ---------------------------------------------------------------- 5. redact

/// With `on_secret = "redact"` the same secrets are replaced by `[REDACTED]` and the call
/// goes through; the secret never reaches the tool; a secret in the path is still refused.
#[tokio::test]
async fn secrets_are_redacted_when_configured() {
    let up = RawUpstream::start().await;
    let (dir, iss) = issuer();
    secret_file(dir.path(), "KG_SI_REDACT_SECRET", "redact-tool-secret");
    let cfg = format!(
        "{}{}{}",
        iss.toml(),
        agent("agent-d", "frank@example.com"),
        tool(
            "rd",
            &up.url(),
            "on_secret = \"redact\"",
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_REDACT_SECRET\"",
        ),
    );
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    let token = iss.token("agent-d");
    let auth = bearer(&token);
    let c = Client::http1();
    let gh_encoded = GH_TOKEN.replace('_', "%5F");
    let secrets = [
        AWS_KEY,
        GH_TOKEN,
        SLACK_TOKEN,
        "BEGIN PRIVATE",
        "KIAIOSFODNN7EXAMPLE",
        "0123456789abcdefghijABCDEFGHIJ012345",
    ];

    let r = c
        .get(
            &gw.url(&format!("/tools/rd/q?aws={AWS_KEY}&keep=1")),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c
        .send(
            "POST",
            &gw.url("/tools/rd/json"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            format!("{{\"token\":\"{GH_TOKEN}\",\"n\":1}}"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c
        .send(
            "POST",
            &gw.url("/tools/rd/form"),
            &[
                ("authorization", &auth),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            format!("note=hi&token={gh_encoded}"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c
        .get(
            &gw.url("/tools/rd/header"),
            &[
                ("authorization", &auth),
                ("x-note", "bot xoxb-1234567890-abcdefghij here"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c
        .send(
            "POST",
            &gw.url("/tools/rd/key"),
            &[("authorization", &auth), ("content-type", "text/plain")],
            format!("before\n{PRIVATE_KEY}\nafter"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A secret as a query parameter's name (a bare `?<secret>`) is redacted too.
    let r = c
        .get(
            &gw.url(&format!("/tools/rd/qn?{AWS_KEY}&keep=2")),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A chunked text body is read, redacted and sent with a Content-Length.
    let raw = send_chunked(
        &gw,
        "/tools/rd/chunked",
        &token,
        "application/json",
        format!("[\"{AWS_KEY}\"]").as_bytes(),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");

    let reqs = up.requests();
    assert_eq!(reqs.len(), 7);
    for rec in &reqs {
        assert_absent(&rec.raw, &secrets, "upstream bytes");
        assert_absent(&rec.raw, &[&gh_encoded, &token], "upstream bytes");
        assert_eq!(
            rec.header("authorization").as_deref(),
            Some("Bearer redact-tool-secret")
        );
        assert!(
            !rec.head.to_ascii_lowercase().contains("transfer-encoding"),
            "{}",
            rec.head
        );
        if !rec.body.is_empty() {
            assert_eq!(
                rec.header("content-length"),
                Some(rec.body.len().to_string()),
                "{}",
                rec.head
            );
        }
    }
    let find = |p: &str| {
        reqs.iter()
            .find(|r| r.target().split('?').next() == Some(p))
            .unwrap_or_else(|| panic!("no {p}"))
    };
    assert_eq!(find("/q").target(), "/q?aws=%5BREDACTED%5D&keep=1");
    assert_eq!(find("/qn").target(), "/qn?%5BREDACTED%5D=&keep=2");
    let j = find("/json");
    assert_eq!(j.body, br#"{"token":"[REDACTED]","n":1}"#);
    assert_eq!(j.header("content-length").as_deref(), Some("28"));
    assert_eq!(find("/form").body, b"note=hi&token=%5BREDACTED%5D");
    assert_eq!(
        find("/header").header("x-note").as_deref(),
        Some("bot [REDACTED] here")
    );
    assert_eq!(find("/key").body, b"before\n[REDACTED]\nafter");
    assert_eq!(find("/chunked").body, br#"["[REDACTED]"]"#);

    // The path cannot be redacted without sending the call elsewhere: refused.
    let r = c
        .get(
            &gw.url(&format!("/tools/rd/keys/{AWS_KEY}")),
            &[("authorization", &auth)],
        )
        .await;
    assert_error(&r, 400, "secret_in_request", "path in redact mode");
    assert_eq!(up.count(), 7);

    gw.stop().await;
    let records = audit_n(&gw, 8).await;
    let names = |p: &str| -> Vec<String> {
        let rid = find(p).header("x-request-id").unwrap();
        stripped(record(&records, &rid))
    };
    assert!(
        names("/q").contains(&"query:aws:redacted".to_string()),
        "{:?}",
        names("/q")
    );
    assert!(
        names("/qn").contains(&"query:[REDACTED]:redacted".to_string()),
        "{:?}",
        names("/qn")
    );
    assert!(
        names("/json").contains(&"body:github_token:redacted".to_string()),
        "{:?}",
        names("/json")
    );
    assert!(
        names("/form").contains(&"body:github_token:redacted".to_string()),
        "{:?}",
        names("/form")
    );
    assert!(
        names("/header").contains(&"header:x-note:redacted".to_string()),
        "{:?}",
        names("/header")
    );
    assert!(
        names("/key").contains(&"body:private_key:redacted".to_string()),
        "{:?}",
        names("/key")
    );
    assert!(
        names("/chunked").contains(&"body:aws_access_key_id:redacted".to_string()),
        "{:?}",
        names("/chunked")
    );
    let text = audit_text(&gw).await;
    assert_absent(text.as_bytes(), &secrets, "audit log");
    assert_absent(text.as_bytes(), &[&gh_encoded], "audit log");
}

// ---------------------------------------------------------------- 6. provider failure

/// A tool whose static secret cannot be read answers 502 credential_unavailable and
/// forwards nothing; other tools on the same gateway keep working.
#[tokio::test]
async fn unavailable_credential_fails_closed() {
    let up_broken = RawUpstream::start().await;
    let up_ok = RawUpstream::start().await;
    let (dir, iss) = issuer();
    secret_file(dir.path(), "KG_SI_FAIL_OK_SECRET", "working-secret-6");
    let missing = dir.path().join("no-such-secret.txt");
    let empty = dir.path().join("empty-secret.txt");
    std::fs::write(&empty, "\n").unwrap();
    let cfg = format!(
        "{}{}{}{}{}{}",
        iss.toml(),
        agent("agent-f", "gina@example.com"),
        tool(
            "no-env",
            &up_broken.url(),
            "",
            "provider = \"static\"\nfrom_env = \"KG_SI_FAIL_NEVER_SET_7f3a\"",
        ),
        tool(
            "no-file",
            &up_broken.url(),
            "",
            &format!(
                "provider = \"static\"\nfrom_file = {:?}",
                missing.display().to_string()
            ),
        ),
        tool(
            "empty-file",
            &up_broken.url(),
            "",
            &format!(
                "provider = \"static\"\nfrom_file = {:?}",
                empty.display().to_string()
            ),
        ),
        tool(
            "ok",
            &up_ok.url(),
            "",
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_FAIL_OK_SECRET\""
        ),
    );
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    let auth = bearer(&iss.token("agent-f"));
    let c = Client::http1();
    let mut ids = Vec::new();
    for t in ["no-env", "no-file", "empty-file"] {
        let r = c
            .send(
                "POST",
                &gw.url(&format!("/tools/{t}/x")),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                r#"{"a":1}"#,
            )
            .await;
        assert_error(&r, 502, "credential_unavailable", t);
        assert!(
            !r.text().contains("KG_SI_FAIL_NEVER_SET_7f3a"),
            "internal detail leaked: {}",
            r.text()
        );
        assert_eq!(up_broken.count(), 0, "{t}: the upstream received a request");
        ids.push(r.json()["request_id"].as_str().unwrap().to_string());
    }
    let r = c
        .get(&gw.url("/tools/ok/y"), &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up_ok.count(), 1);
    assert_eq!(
        up_ok.requests()[0].header("authorization").as_deref(),
        Some("Bearer working-secret-6")
    );
    assert_eq!(up_broken.count(), 0);

    gw.stop().await;
    let records = audit_n(&gw, 4).await;
    for id in &ids {
        let r = record(&records, id);
        assert_eq!(r["decision"], "error", "{r}");
        assert_eq!(r["error"], "credential_unavailable", "{r}");
        assert_eq!(r["status"], 502, "{r}");
        assert_eq!(r["credential_provider"], "static", "{r}");
        assert!(r["credential_id"].is_null(), "{r}");
    }
}

// ---------------------------------------------------------------- 7. body limit

/// A body over the tool's `max_body_bytes` is refused with 413 whether its length is
/// declared or chunked, text or binary; nothing reaches the tool; a body at the limit passes.
#[tokio::test]
async fn body_over_the_limit_is_refused() {
    let up = RawUpstream::start().await;
    let (dir, iss) = issuer();
    secret_file(dir.path(), "KG_SI_LIMIT_SECRET", "limit-tool-secret");
    let cfg = format!(
        "{}{}{}",
        iss.toml(),
        agent("agent-l", "hank@example.com"),
        tool(
            "lim",
            &up.url(),
            "max_body_bytes = 100",
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_LIMIT_SECRET\"",
        ),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let token = iss.token("agent-l");
    let auth = bearer(&token);
    let c = Client::http1();
    let json_of = |n: usize| {
        let s = format!("{{\"p\":\"{}\"}}", "a".repeat(n - 8));
        assert_eq!(s.len(), n);
        s
    };

    let r = c
        .send(
            "POST",
            &gw.url("/tools/lim/x"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            json_of(200),
        )
        .await;
    assert_error(&r, 413, "body_too_large", "200-byte json");
    assert_eq!(up.count(), 0);

    let r = c
        .send(
            "POST",
            &gw.url("/tools/lim/bin"),
            &[
                ("authorization", &auth),
                ("content-type", "application/octet-stream"),
            ],
            vec![7u8; 200],
        )
        .await;
    assert_error(&r, 413, "body_too_large", "200-byte binary");
    assert_eq!(up.count(), 0);

    let raw = send_chunked(
        &gw,
        "/tools/lim/chunked",
        &token,
        "application/json",
        json_of(200).as_bytes(),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("body_too_large"), "{raw}");
    assert_eq!(up.count(), 0);

    let body = json_of(100);
    let r = c
        .send(
            "POST",
            &gw.url("/tools/lim/ok"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
    assert_eq!(up.requests()[0].body, body.as_bytes());
}

#[tokio::test]
async fn a_secret_used_as_a_header_name_is_refused_in_both_modes() {
    let up = RawUpstream::start().await;
    let (dir, iss) = issuer();
    secret_file(dir.path(), "KG_SI_HDRNAME", "hdrname-tool-secret");
    let cfg = format!(
        "{}{}{}{}",
        iss.toml(),
        agent("a1", "o@x"),
        tool(
            "rej",
            &up.url(),
            "",
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_HDRNAME\"\n"
        ),
        tool(
            "red",
            &up.url(),
            "on_secret = \"redact\"\n",
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_HDRNAME\"\n"
        ),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let auth = bearer(&iss.token("a1"));
    let c = Client::http1();
    for t in ["rej", "red"] {
        let r = c
            .get(
                &gw.url(&format!("/tools/{t}/x")),
                &[("authorization", &auth), (GH_TOKEN, "1")],
            )
            .await;
        assert_error(&r, 400, "secret_in_request", "secret as a header name");
        assert!(
            !r.text().contains(GH_TOKEN),
            "the error body echoes the secret"
        );
    }
    assert_eq!(up.count(), 0);
    let ok = c
        .get(
            &gw.url("/tools/red/x"),
            &[("authorization", &auth), ("x-fine", "1")],
        )
        .await;
    assert_eq!(ok.status, 200);
    assert!(!audit_text(&gw).await.contains(GH_TOKEN));
}

#[tokio::test]
async fn minted_tokens_are_reused_within_the_window_per_agent() {
    let up = RawUpstream::start().await;
    let (dir, iss) = issuer();
    let cfg = format!(
        "{}{}{}{}",
        iss.toml(),
        agent("agent-r", "r@example.com"),
        agent("agent-s", "s@example.com"),
        tool(
            "rw",
            &up.url(),
            "",
            "provider = \"jwt\"\nttl = \"20s\"\nreuse_window = \"10s\""
        ),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let c = Client::http1();
    let call = |agent: &'static str| {
        let c = c.clone();
        let url = gw.url("/tools/rw/x");
        let auth = bearer(&iss.token(agent));
        async move { assert_eq!(c.get(&url, &[("authorization", &auth)]).await.status, 200) }
    };
    call("agent-r").await;
    call("agent-r").await;
    call("agent-s").await;
    gw.advance_clock(Duration::from_secs(11));
    call("agent-r").await;
    let tokens: Vec<String> = up.requests().iter().map(bearer_token).collect();
    assert_eq!(
        tokens[0], tokens[1],
        "a token within its reuse window is reused"
    );
    assert_ne!(
        tokens[0], tokens[2],
        "another agent never gets this agent's token"
    );
    assert_ne!(
        tokens[0], tokens[3],
        "after the window a new token is minted"
    );
    let records = audit_n(&gw, 4).await;
    let ids: Vec<&str> = records
        .iter()
        .map(|r| r["credential_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids[0], ids[1],
        "the audit names the credential actually sent"
    );
    assert_ne!(ids[0], ids[3]);
}

#[tokio::test]
async fn a_secret_in_a_path_refused_before_strip_never_reaches_the_audit_log() {
    let up = RawUpstream::start().await;
    let (dir, iss) = issuer();
    secret_file(dir.path(), "KG_SI_PATHLEAK", "pathleak-secret");
    let cfg = format!(
        "{}{}{}",
        iss.toml(),
        agent("a1", "o@x"),
        tool(
            "t",
            &up.url(),
            "",
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_PATHLEAK\"\n"
        ),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    // A JWT whose dots are percent-encoded: refused as an ambiguous path (encoded dot)
    // before strip runs; a plain AWS key id refused by strip.
    let jwt = iss.token("someone");
    let encoded = jwt.replace('.', "%2E");
    let auth = bearer(&iss.token("a1"));
    let c = Client::http1();
    let r = c
        .get(
            &gw.url(&format!("/tools/t/x/{encoded}")),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = c
        .get(
            &gw.url(&format!("/tools/t/{AWS_KEY}")),
            &[("authorization", &auth)],
        )
        .await;
    assert_error(&r, 400, "secret_in_request", "secret in the path");
    let text = audit_text(&gw).await;
    let signature = jwt.rsplit('.').next().unwrap();
    assert!(
        !text.contains(signature),
        "the JWT reached the audit log: {text}"
    );
    assert!(
        !text.contains(AWS_KEY),
        "the AWS key reached the audit log: {text}"
    );
    assert_eq!(up.count(), 0);
}

// ---------------------------------------------------------------- kind-specific credentials

/// The ways a catalogued kind's API takes a credential never reach the tool on a tool of
/// that kind, and the audit names (never shows) what was removed. A generic tool keeps
/// them (they may be the tool's ordinary parameters there).
#[tokio::test]
async fn kind_specific_agent_credentials_are_stripped() {
    let up = RawUpstream::start().await;
    let (dir, iss) = issuer();
    secret_file(dir.path(), "KG_SI_KIND_SECRET", "kind-tool-secret-1");
    let mut cfg = format!("{}{}", iss.toml(), agent("agent-k", "kim@example.com"));
    for kind in ["gitlab", "vault", "gcp", "aws", "generic"] {
        cfg.push_str(&tool(
            kind,
            &up.url(),
            &format!("kind = {kind:?}"),
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_KIND_SECRET\"",
        ));
    }
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    let auth = bearer(&iss.token("agent-k"));
    let c = Client::http1();
    // (tool path and query, headers, what must not arrive, what the audit names, what arrives)
    type KindCase = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        Vec<&'static str>,
        Vec<&'static str>,
        &'static str,
    );
    let cases: Vec<KindCase> = vec![
        (
            "/tools/gitlab/api/v4/projects?private_token=gl-query-value-1&JOB_TOKEN=gl-query-value-2&page=2",
            vec![
                ("private-token", "gl-header-value-1"),
                ("job-token", "gl-header-value-2"),
            ],
            vec!["gl-query-value-1", "gl-query-value-2", "gl-header-value-1", "gl-header-value-2"],
            vec!["header:private-token", "header:job-token", "query:private_token", "query:JOB_TOKEN"],
            "/api/v4/projects?page=2",
        ),
        (
            "/tools/vault/v1/secret/data/x",
            vec![("x-vault-token", "vault-header-value-1")],
            vec!["vault-header-value-1"],
            vec!["header:x-vault-token"],
            "/v1/secret/data/x",
        ),
        (
            "/tools/gcp/v1/projects/p?key=gcp-query-value-1&alt=json",
            vec![("x-goog-api-key", "gcp-header-value-1")],
            vec!["gcp-query-value-1", "gcp-header-value-1"],
            vec!["header:x-goog-api-key", "query:key"],
            "/v1/projects/p?alt=json",
        ),
        (
            "/tools/aws/?Action=ListUsers&X-Amz-Security-Token=aws-query-value-1&X-Amz-Signature=aws-query-value-2",
            vec![("x-amz-security-token", "aws-header-value-1")],
            vec!["aws-query-value-1", "aws-query-value-2", "aws-header-value-1"],
            vec!["header:x-amz-security-token", "query:X-Amz-Security-Token", "query:X-Amz-Signature"],
            "/?Action=ListUsers",
        ),
    ];
    let mut rids = Vec::new();
    for (i, (path, headers, _, _, target)) in cases.iter().enumerate() {
        let mut all = vec![("authorization", auth.as_str())];
        all.extend(headers.iter().copied());
        let r = c.get(&gw.url(path), &all).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let got = &up.requests()[i];
        assert_eq!(got.target(), *target, "{path}");
        assert_eq!(
            got.header("authorization").as_deref(),
            Some("Bearer kind-tool-secret-1")
        );
        rids.push(got.header("x-request-id").unwrap());
    }
    // A generic tool forwards what is only a credential elsewhere.
    let r = c
        .get(
            &gw.url("/tools/generic/v1?key=generic-key-1"),
            &[("authorization", &auth), ("private-token", "generic-pt-1")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let generic = &up.requests()[cases.len()];
    assert_eq!(generic.target(), "/v1?key=generic-key-1");
    assert_eq!(
        generic.header("private-token").as_deref(),
        Some("generic-pt-1")
    );

    gw.stop().await;
    let records = audit_n(&gw, cases.len() + 1).await;
    let text = audit_text(&gw).await;
    for ((path, _, absent, named, _), (rid, got)) in
        cases.iter().zip(rids.iter().zip(up.requests().iter()))
    {
        assert_absent(&got.raw, absent, "upstream bytes");
        assert_absent(text.as_bytes(), absent, "audit log");
        let s = stripped(record(&records, rid));
        for n in named {
            assert!(s.iter().any(|x| x == n), "{path}: {n} missing from {s:?}");
        }
    }
}

/// Tokens of the formats added to the scanner are refused in a body, a header and a query,
/// with the format named; ordinary words that share a prefix pass.
#[tokio::test]
async fn more_token_formats_are_refused_and_look_alikes_pass() {
    let up = RawUpstream::start().await;
    let (dir, iss) = issuer();
    secret_file(dir.path(), "KG_SI_FORMATS_SECRET", "formats-tool-secret");
    let cfg = format!(
        "{}{}{}",
        iss.toml(),
        agent("agent-f", "fay@example.com"),
        tool(
            "fm",
            &up.url(),
            "",
            "provider = \"static\"\nfrom_file = \"secrets/KG_SI_FORMATS_SECRET\""
        ),
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let auth = bearer(&iss.token("agent-f"));
    let c = Client::http1();
    let tokens = [
        ("glpat-xYz12AbC34dEf56GhI78", "gitlab_token"),
        ("hvs.CAESIJ4pYvbL8Jk2x0WqVh5qZ1nT3Gh", "vault_token"),
        ("AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "google_api_key"),
        (
            "https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF2/AbCdEfGhIjKlMnOpQrStUvWx",
            "slack_webhook",
        ),
        ("rk_test_4eC39HqLyjWDarjtT1zdp7dc", "stripe_key"),
        ("npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "npm_token"),
        (
            "pypi-AgEIcHlwaS5vcmcCJDAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMAACKlsz",
            "pypi_token",
        ),
        (
            "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            "anthropic_key",
        ),
        ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "huggingface_token"),
        (
            "dop_v1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "digitalocean_token",
        ),
    ];
    for (token, kind) in tokens {
        let body = serde_json::json!({"note": format!("use {token} please")}).to_string();
        let r = c
            .send(
                "POST",
                &gw.url("/tools/fm/notes"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
        assert_error(&r, 400, "secret_in_request", token);
        assert!(r.text().contains(kind), "{token}: {}", r.text());
        assert!(!r.text().contains(token), "{}", r.text());
        let r = c
            .get(
                &gw.url("/tools/fm/n"),
                &[("authorization", &auth), ("x-note", token)],
            )
            .await;
        assert_error(&r, 400, "secret_in_request", token);
    }
    assert_eq!(up.count(), 0, "a token reached the tool");
    let plain = "skip_ the npm_config_cache, a keyboard, hf_hub, SKU-12, glpat and hvs.x";
    let r = c
        .send(
            "POST",
            &gw.url("/tools/fm/notes"),
            &[("authorization", &auth), ("content-type", "text/plain")],
            plain,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests()[0].body, plain.as_bytes());
}
