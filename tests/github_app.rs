//! Agents running an unmodified PyGithub through keygate's `github_app` credential
//! provider, against a GitHub stand-in that authenticates the App and issues installation
//! access tokens as GitHub documents it (see `tests/github_support` and
//! `tests/github/standin.py`): keygate identifies the agent by its JWT (sent by PyGithub as
//! `Authorization: token <jwt>`), strips it, and injects an installation token narrowed to
//! the one repository and the permissions of the call; caches it; holds deploy-key
//! creation for a human; fails closed when GitHub will not issue; audits the credential
//! without its value. `scripts/test` installs the peers (`tests/github/requirements.txt`
//! into `target/github-venv`, `tests/github/package-lock.json` into
//! `tests/github/node_modules`).
//!
//! Every request the stand-in receives is recorded, so the tests assert on what GitHub
//! would have seen: the access-token request bodies (validated by the stand-in against
//! the requestBody schema of `POST /app/installations/{installation_id}/access_tokens` in
//! @octokit/openapi), the App JWT's claims, the token each API call carried.
//!
//! keygate's error body is `{"error": "<code>", "message", "request_id"}` (README,
//! "Errors"); [`error_code`] also reads `{"error": {"code": …}}`.
//!
//! The `harness_*` tests check the peers themselves (the stand-in's App authentication,
//! schema validation and token enforcement, and PyGithub against it) without keygate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod github_support;
use common::*;
use github_support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

const AGENT: &str = "gh-agent";
const OWNER: &str = "owner@example.com";
/// The public half of a deploy key an agent asks to create.
const DEPLOY_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeygateGithubAppDeployKeyForTestsOnly0";

// ---------------------------------------------------------------- logs

// ---------------------------------------------------------------- keygate in front of GitHub

/// Which key keygate is given for the App.
#[derive(Clone, Copy, Debug)]
enum Key {
    /// The App's key as GitHub hands it out (PKCS#1, `BEGIN RSA PRIVATE KEY`).
    Pkcs1,
    /// The same key as PKCS#8 (`BEGIN PRIVATE KEY`).
    Pkcs8,
    /// Another RSA key: not the App's.
    Wrong,
}

struct Opts {
    /// `installation_id = 42` (else looked up from the owner).
    installation_id: bool,
    key: Key,
    /// The key file's mode.
    key_mode: u32,
    /// `default_permissions = <TOML inline table>`.
    default_permissions: Option<&'static str>,
    /// `api_url` (else the default: the upstream).
    api_url: Option<String>,
    /// TOML added to the tool's table (before `[tools.credential]`), e.g. `routes`.
    tool_extra: &'static str,
    /// TOML after the credential's keys, e.g. `[tools.credential.operations."x"]`.
    credential_extra: &'static str,
}

const OPTS: Opts = Opts {
    installation_id: true,
    key: Key::Pkcs1,
    key_mode: 0o600,
    default_permissions: None,
    api_url: None,
    tool_extra: "",
    credential_extra: "",
};

/// keygate with agent [`AGENT`] and tool `github` (kind github, provider github_app) in
/// front of a stand-in instance of its own.
struct Kg {
    gw: TestGateway,
    gh: GitHub,
    /// The agent's keygate JWT.
    jwt: String,
}

/// keygate's config for `opts`, the App key written under `dir`.
fn config(dir: &Path, gh: &GitHub, iss: &TestIssuer, opts: &Opts) -> String {
    let pem = match opts.key {
        Key::Pkcs1 => &app_key().pkcs1_pem,
        Key::Pkcs8 => &app_key().pkcs8_pem,
        Key::Wrong => &wrong_key().pkcs1_pem,
    };
    let key_file = write_key(dir, "app.pem", pem, opts.key_mode);
    let mut cred =
        format!("provider = \"github_app\"\napp_id = {APP_ID}\nprivate_key_file = {key_file:?}\n");
    if opts.installation_id {
        cred.push_str(&format!("installation_id = {INSTALLATION_ID}\n"));
    } else {
        cred.push_str("owners = [\"octo\"]\n");
    }
    if let Some(url) = &opts.api_url {
        cred.push_str(&format!("api_url = {url:?}\n"));
    }
    if let Some(p) = opts.default_permissions {
        cred.push_str(&format!("default_permissions = {p}\n"));
    }
    format!(
        "{}{}[[tools]]\nname = \"github\"\nkind = \"github\"\nupstream = {:?}\n{}[tools.credential]\n{cred}{}",
        iss.toml(),
        agent(AGENT, OWNER),
        gh.url(),
        opts.tool_extra,
        opts.credential_extra,
    )
}

async fn start(opts: Opts) -> Kg {
    logs();
    let gh = GitHub::new();
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "gh-iss", "keygate");
    let cfg = config(dir.path(), &gh, &iss, &opts);
    let gw = TestGateway::start_in(dir, &cfg).await;
    let jwt = iss.token(AGENT);
    Kg { gw, gh, jwt }
}

impl Kg {
    /// PyGithub's `base_url`: the tool's path prefix.
    fn base_url(&self) -> String {
        self.gw.url("/tools/github")
    }

    /// Runs PyGithub as the agent (its JWT as the token).
    async fn py(&self, args: &[&str]) -> Result<Value, GhError> {
        PyGithub::new(self.base_url(), &self.jwt).run(args).await
    }

    /// A request of the agent's straight to keygate, its JWT as `Authorization: token`.
    async fn get(&self, path: &str) -> Response {
        self.get_as(path, &format!("token {}", self.jwt)).await
    }

    async fn get_as(&self, path: &str, authorization: &str) -> Response {
        Client::http1()
            .get(
                &self.gw.url(&format!("/tools/github{path}")),
                &[
                    ("authorization", authorization),
                    ("accept", "application/vnd.github+json"),
                ],
            )
            .await
    }

    /// [`assert_github_saw_it_right`] for this keygate's GitHub and agent.
    fn assert_github_saw_it_right(&self) {
        assert_github_saw_it_right(&self.gh, &self.jwt);
    }
}

/// What every test expects of what reached GitHub, whatever else it checks: every App
/// call carried a valid App JWT as GitHub wants it; every access-token request was
/// sent as GitHub documents it and passed the published schema (no 400 or 422); the
/// agent's JWT never reached GitHub; every API call carried one `Bearer ghs_…`.
fn assert_github_saw_it_right(gh: &GitHub, agent_jwt: &str) {
    let all = gh.requests();
    for r in &all {
        assert!(
            !r.text().contains(agent_jwt),
            "the agent's JWT reached GitHub: {} {}",
            r.method(),
            r.path()
        );
        match r.kind() {
            "access_tokens" | "installation" | "app" => assert_app_call(r),
            "api" => {
                token_of(r);
            }
            other => panic!("GitHub got an unexpected request ({other}): {:?}", r.0),
        }
        if r.kind() == "access_tokens" {
            assert_eq!(r.method(), "POST");
            assert_eq!(
                r.header("accept").as_deref(),
                Some("application/vnd.github+json"),
                "Accept of an access-token request"
            );
            assert_eq!(
                r.header("x-github-api-version").as_deref(),
                Some("2022-11-28"),
                "X-GitHub-Api-Version of an access-token request"
            );
            assert!(
                r.header("content-type")
                    .is_some_and(|c| c.starts_with("application/json")),
                "Content-Type of an access-token request: {:?}",
                r.header("content-type")
            );
            assert!(
                r.status() != 422 && r.status() != 400,
                "GitHub refused an access-token request keygate made: {} {:?} (body {})",
                r.status(),
                r.reason(),
                r.body()
            );
            asked(r);
        }
    }
}

/// An App call (installation lookup, access tokens) carried `Authorization: Bearer <JWT>`
/// that the stand-in verified, with the claims GitHub wants: `iss` the App id as a
/// string, `iat` backdated, `exp - iat` at most 600 s.
fn assert_app_call(r: &Seen) {
    let auth = r.header("authorization").unwrap_or_default();
    assert!(
        auth.starts_with("Bearer "),
        "{} {}: App JWT not sent as Bearer",
        r.method(),
        r.path()
    );
    let claims = r.app_jwt();
    assert!(
        claims.is_object(),
        "{} {}: App JWT refused: {:?}",
        r.method(),
        r.path(),
        r.reason()
    );
    assert_eq!(claims["iss"], json!(APP_ID.to_string()), "App JWT iss");
    let iat = claims["iat"].as_i64().unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp - iat <= 600, "App JWT lives {} s", exp - iat);
    assert!(
        (iat as f64) <= r.time() - 30.0,
        "App JWT iat {} is not backdated (received at {})",
        iat,
        r.time()
    );
    assert!((exp as f64) > r.time(), "App JWT expired when sent");
}

/// The token an API call carried: exactly one `Authorization: Bearer ghs_…`.
fn token_of(call: &Seen) -> String {
    let auths = call.headers("authorization");
    assert_eq!(
        auths.len(),
        1,
        "{} {} reached GitHub with {} Authorization headers",
        call.method(),
        call.path(),
        auths.len()
    );
    let token = auths[0].strip_prefix("Bearer ").unwrap_or_else(|| {
        panic!(
            "{} {} reached GitHub with Authorization {:?}…, not Bearer <installation token>",
            call.method(),
            call.path(),
            &auths[0][..auths[0].len().min(12)]
        )
    });
    assert!(
        token.starts_with("ghs_"),
        "{} {} reached GitHub without an installation token",
        call.method(),
        call.path()
    );
    token.to_string()
}

/// What an access-token request asked for: its repositories (names; `repository_ids`
/// mapped to the names) and permissions. Nothing else may be in the body.
fn asked(r: &Seen) -> (BTreeSet<String>, Value) {
    let b = r.body_json();
    let obj = b
        .as_object()
        .unwrap_or_else(|| panic!("access-token request body {:?}", r.body()));
    for k in obj.keys() {
        assert!(
            ["repositories", "repository_ids", "permissions"].contains(&k.as_str()),
            "access-token request with {k:?}: {b}"
        );
    }
    let mut repos = BTreeSet::new();
    if let Some(names) = b["repositories"].as_array() {
        repos.extend(names.iter().map(|n| n.as_str().unwrap().to_string()));
    }
    if let Some(ids) = b["repository_ids"].as_array() {
        for id in ids {
            repos.insert(match id.as_u64() {
                Some(HELLO_ID) => "hello".to_string(),
                Some(SECRET_ID) => "secret".to_string(),
                other => format!("id {other:?}"),
            });
        }
    }
    (repos, b["permissions"].clone())
}

fn repos(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The access-token request that issued `token`.
fn request_that_issued(gh: &GitHub, token: &str) -> Seen {
    gh.token_requests()
        .into_iter()
        .find(|r| r.issued() == Some(token))
        .expect("no access-token request issued the token GitHub received")
}

/// keygate's error code in a JSON error body: `{"error": "<code>"}` (README) or
/// `{"error": {"code": "<code>"}}`.
fn error_code(body: &Value) -> String {
    match &body["error"] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

/// The approval id of an `approval_required` body (`approval_id`, top level or under
/// `error`, else `apr_…` in the message).
fn approval_id(body: &Value) -> String {
    for v in [&body["approval_id"], &body["error"]["approval_id"]] {
        if let Some(id) = v.as_str() {
            return id.to_string();
        }
    }
    let text = body.to_string();
    let at = text
        .find("apr_")
        .unwrap_or_else(|| panic!("no approval id in {body}"));
    text[at..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .next()
        .unwrap()
        .to_string()
}

async fn approve(gw: &TestGateway, id: &str) {
    approve_as_bob(gw, id, "CHG-7").await;
}

/// A refusal for want of a credential: 502 or 503 with `credential_unavailable`.
fn assert_credential_unavailable(what: &str, status: u16, body: &Value) {
    assert!(
        status == 502 || status == 503,
        "{what}: status {status}, body {body}"
    );
    assert_eq!(error_code(body), "credential_unavailable", "{what}: {body}");
}

fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The API calls that are `method` on `path` (query ignored).
fn calls_to(gh: &GitHub, method: &str, path: &str) -> Vec<Seen> {
    gh.api_calls()
        .into_iter()
        .filter(|c| c.method() == method && c.path().split('?').next() == Some(path))
        .collect()
}

// ---------------------------------------------------------------- harness

/// The stand-in refuses App JWTs GitHub refuses: another key, a lifetime over ten
/// minutes, an expired one, a wrong issuer, one not yet issued, one not sent as Bearer.
#[test]
fn harness_app_jwts_are_verified_as_github_does() {
    let s = standin();
    eprintln!("stand-in: {}", s.info);
    let gh = GitHub::new();
    let lookup = |jwt: &str| {
        gh.call(
            "GET",
            "/repos/octo/hello/installation",
            &[("authorization", &format!("Bearer {jwt}"))],
            "",
        )
    };
    let (status, _, b) = lookup(&app_key().app_jwt());
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["id"], INSTALLATION_ID);
    assert_eq!(b["account"]["login"], "octo");
    assert_eq!(b["app_id"], APP_ID);
    // GitHub accepts iss as a number too.
    let n = now();
    let numeric = app_key().sign(&json!({"iss": APP_ID, "iat": n - 60, "exp": n + 540}));
    assert_eq!(lookup(&numeric).0, 200);

    let refused = [
        ("another key", wrong_key().app_jwt()),
        (
            "exp - iat of 660 s",
            app_key().sign(&json!({"iss": APP_ID.to_string(), "iat": n - 60, "exp": n + 600})),
        ),
        (
            "exp over 10 minutes ahead",
            app_key().sign(&json!({"iss": APP_ID.to_string(), "iat": n + 5, "exp": n + 605})),
        ),
        (
            "expired",
            app_key().sign(&json!({"iss": APP_ID.to_string(), "iat": n - 700, "exp": n - 100})),
        ),
        (
            "another App",
            app_key().sign(&json!({"iss": "54321", "iat": n - 60, "exp": n + 540})),
        ),
        (
            "issued in the future",
            app_key().sign(&json!({"iss": APP_ID.to_string(), "iat": n + 120, "exp": n + 500})),
        ),
        (
            "no iat",
            app_key().sign(&json!({"iss": APP_ID.to_string(), "exp": n + 500})),
        ),
    ];
    for (what, jwt) in &refused {
        let (status, _, b) = lookup(jwt);
        assert_eq!(status, 401, "{what}: {b}");
        assert!(b["message"].is_string(), "{what}: {b}");
    }
    // The same checks guard access tokens; and a JWT must be sent as Bearer.
    let (status, _, b) = gh.call(
        "POST",
        &format!("/app/installations/{INSTALLATION_ID}/access_tokens"),
        &[(
            "authorization",
            &format!("Bearer {}", wrong_key().app_jwt()),
        )],
        "{}",
    );
    assert_eq!(status, 401, "{b}");
    let (status, _, _) = gh.call(
        "GET",
        "/repos/octo/hello/installation",
        &[("authorization", &format!("token {}", app_key().app_jwt()))],
        "",
    );
    assert_eq!(status, 401);
    assert!(
        gh.tokens().is_empty(),
        "a token was issued to a refused JWT"
    );
    // The installation is found from the owner; the App is not installed elsewhere.
    let auth = format!("Bearer {}", app_key().app_jwt());
    for (path, want) in [
        ("/orgs/octo/installation", 200),
        ("/repos/octo/secret/installation", 200),
        ("/repos/elsewhere/thing/installation", 404),
        ("/repos/octo/nothing/installation", 404),
    ] {
        let (status, _, b) = gh.call("GET", path, &[("authorization", &auth)], "");
        assert_eq!(status, want, "{path}: {b}");
    }
    let seen = gh.requests();
    assert_eq!(seen.len(), 2 + refused.len() + 2 + 4);
    assert!(seen
        .iter()
        .filter(|r| r.status() == 401)
        .all(|r| r.reason().is_some()));
}

/// Access-token requests are validated against the requestBody schema of
/// `POST /app/installations/{installation_id}/access_tokens` in @octokit/openapi, and
/// limited to the installation's repositories and grant.
#[test]
fn harness_access_token_requests_are_checked_against_the_published_schema() {
    let s = standin();
    assert_eq!(s.info["openapi_version"], "23.0.2", "{}", s.info);
    assert_eq!(
        s.info["openapi_file"], "node_modules/@octokit/openapi/generated/api.github.com.json",
        "{}",
        s.info
    );
    let gh = GitHub::new();
    for bad in [
        json!({"repositories": "hello"}),
        json!({"repositories": [1296269]}),
        json!({"repository_ids": ["hello"]}),
        json!({"permissions": {"issues": "admin"}}),
        json!({"permissions": "issues:read"}),
        json!({"repositories": ["hello"], "permissions": {"workflows": "read"}}),
        json!(["hello"]),
    ] {
        let (status, b) = gh.mint(bad.clone());
        assert_eq!(status, 422, "{bad}: {b}");
    }
    let schema_refusals = gh
        .token_requests()
        .iter()
        .filter(|r| r.reason().is_some_and(|m| m.starts_with("schema:")))
        .count();
    assert_eq!(schema_refusals, 7);
    // Not JSON at all.
    let auth = format!("Bearer {}", app_key().app_jwt());
    let (status, _, b) = gh.call(
        "POST",
        &format!("/app/installations/{INSTALLATION_ID}/access_tokens"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        "{\"repositories\":",
    );
    assert_eq!(status, 400, "{b}");
    // Valid, but beyond the installation.
    for (what, body, message) in [
        (
            "a permission not granted",
            json!({"repositories": ["hello"], "permissions": {"contents": "write"}}),
            "The permissions requested are not granted to this installation.",
        ),
        (
            "a permission not granted at all",
            json!({"permissions": {"actions": "read"}}),
            "The permissions requested are not granted to this installation.",
        ),
        (
            "an unknown repository",
            json!({"repositories": ["nothing"]}),
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
        ),
        (
            "a repository id of another account",
            json!({"repository_ids": [7]}),
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
        ),
    ] {
        let (status, b) = gh.mint(body);
        assert_eq!(status, 422, "{what}: {b}");
        assert_eq!(b["message"], message, "{what}");
    }
    assert!(gh.tokens().is_empty());

    // Narrowed: the repositories and permissions asked for (metadata:read comes with any).
    let (status, t) =
        gh.mint(json!({"repositories": ["hello"], "permissions": {"issues": "read"}}));
    assert_eq!(status, 201, "{t}");
    let token = t["token"].as_str().unwrap();
    assert!(token.starts_with("ghs_") && token.len() == 40, "{token}");
    assert_eq!(
        t["permissions"],
        json!({"issues": "read", "metadata": "read"})
    );
    assert_eq!(t["repository_selection"], "selected");
    let names: Vec<&str> = t["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["full_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["octo/hello"]);
    let info = gh.token_info(token);
    assert_eq!(info["expires_at"], t["expires_at"]);
    let expires = info["expires_at_unix"].as_u64().unwrap();
    assert!(
        (now() + 3590..=now() + 3600).contains(&expires),
        "expires_at {}",
        t["expires_at"]
    );
    // By id.
    let (status, t) = gh.mint(json!({"repository_ids": [SECRET_ID]}));
    assert_eq!(status, 201, "{t}");
    assert_eq!(t["repositories"][0]["full_name"], "octo/secret");
    assert_eq!(t["permissions"], installation_grant());
    // Nothing asked: every repository of the installation, its whole grant.
    let (status, t) = gh.mint(json!({}));
    assert_eq!(status, 201, "{t}");
    assert_eq!(t["repository_selection"], "all");
    assert_eq!(t["permissions"], installation_grant());
}

/// A token reaches only its repositories (404 elsewhere, as GitHub hides what a token
/// cannot see) and does only what its permissions allow (403 "Resource not accessible by
/// integration").
#[test]
fn harness_tokens_are_limited_to_their_repositories_and_permissions() {
    let gh = GitHub::new();
    let (status, t) =
        gh.mint(json!({"repositories": ["hello"], "permissions": {"issues": "read"}}));
    assert_eq!(status, 201, "{t}");
    let token = t["token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    let token_scheme = format!("token {token}");
    let call = |method: &str, path: &str, auth: &str, body: &str| {
        gh.call(
            method,
            path,
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            body,
        )
    };
    for (method, path, auth, body, want) in [
        ("GET", "/repos/octo/hello/issues", bearer.as_str(), "", 200),
        (
            "GET",
            "/repos/octo/hello/issues",
            token_scheme.as_str(),
            "",
            200,
        ),
        ("GET", "/repos/octo/hello", bearer.as_str(), "", 200),
        (
            "GET",
            "/repositories/1296269/issues",
            bearer.as_str(),
            "",
            200,
        ),
        ("GET", "/repos/octo/secret/issues", bearer.as_str(), "", 404),
        ("GET", "/repos/octo/secret", bearer.as_str(), "", 404),
        ("GET", "/repositories/1296270", bearer.as_str(), "", 404),
        (
            "POST",
            "/repos/octo/hello/issues",
            bearer.as_str(),
            "{\"title\":\"x\"}",
            403,
        ),
        (
            "POST",
            "/repos/octo/hello/keys",
            bearer.as_str(),
            "{\"title\":\"k\",\"key\":\"ssh-ed25519 AAAA\"}",
            403,
        ),
        (
            "GET",
            "/repos/octo/hello/contents/README.md",
            bearer.as_str(),
            "",
            403,
        ),
        (
            "GET",
            "/repos/octo/hello/issues",
            "Bearer ghs_unknown",
            "",
            401,
        ),
        ("GET", "/repos/octo/hello/issues", "", "", 401),
    ] {
        let (status, headers, b) = call(method, path, auth, body);
        assert_eq!(status, want, "{method} {path} ({auth:.10}…): {b}");
        match want {
            404 => assert_eq!(b["message"], "Not Found"),
            403 => {
                assert_eq!(b["message"], "Resource not accessible by integration");
                assert!(
                    headers.contains_key("x-accepted-github-permissions"),
                    "{headers:?}"
                );
            }
            401 => assert!(
                b["message"] == "Bad credentials" || b["message"] == "Requires authentication"
            ),
            _ => {}
        }
    }
    // With the permission, the same calls go through.
    let (_, t) = gh.mint(json!({
        "repositories": ["hello"],
        "permissions": {"issues": "write", "administration": "write", "contents": "read"}
    }));
    let bearer = format!("Bearer {}", t["token"].as_str().unwrap());
    let (status, _, b) = call(
        "POST",
        "/repos/octo/hello/keys",
        &bearer,
        &json!({"title": "k", "key": DEPLOY_KEY, "read_only": true}).to_string(),
    );
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["key"], DEPLOY_KEY);
    let (status, _, b) = call("GET", "/repos/octo/hello/contents/README.md", &bearer, "");
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["encoding"], "base64");
}

/// The switches tests use: access tokens failing, slow, or short-lived.
#[test]
fn harness_failure_switches() {
    let gh = GitHub::new();
    for status in [500, 401, 404] {
        gh.control(json!({"fail_access_tokens": status}));
        assert_eq!(gh.mint(json!({})).0, status);
    }
    gh.control(json!({"fail_access_tokens": null, "token_ttl": 65, "access_tokens_delay_ms": 200}));
    let t0 = Instant::now();
    let (status, t) = gh.mint(json!({"repositories": ["hello"]}));
    assert_eq!(status, 201, "{t}");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    let expires = gh.token_info(t["token"].as_str().unwrap())["expires_at_unix"]
        .as_u64()
        .unwrap();
    assert!((now() + 60..=now() + 65).contains(&expires), "{expires}");
    gh.control(json!({"fail_installation": 503}));
    let auth = format!("Bearer {}", app_key().app_jwt());
    let (status, _, _) = gh.call(
        "GET",
        "/repos/octo/hello/installation",
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 503);
    let (status, _, _) = gh.call("POST", "/_standin/control", &[], "{\"no_such_switch\":1}");
    assert_eq!(status, 400);
}

/// PyGithub against the stand-in directly, with an installation token: what it sends
/// (`Authorization: token …`) and how it reports GitHub's refusals.
#[tokio::test]
async fn harness_pygithub_runs_against_the_standin() {
    let gh = GitHub::new();
    let (_, t) = gh.mint(json!({
        "repositories": ["hello"],
        "permissions": {"issues": "write", "administration": "write", "contents": "read"}
    }));
    let token = t["token"].as_str().unwrap().to_string();
    let py = PyGithub::new(gh.url(), &token);
    let r = py.run(&["get-repo", "octo/hello"]).await.unwrap();
    assert_eq!(
        r,
        json!({"id": HELLO_ID, "full_name": "octo/hello", "private": false})
    );
    let issues = py.run(&["list-issues", "octo/hello"]).await.unwrap();
    assert_eq!(issues, json!([{"number": 1, "title": "Found a bug"}]));
    let made = py
        .run(&["create-issue", "octo/hello", "--title", "Via PyGithub"])
        .await
        .unwrap();
    assert_eq!(made, json!({"number": 2, "title": "Via PyGithub"}));
    let key = py
        .run(&[
            "create-deploy-key",
            "octo/hello",
            "--title",
            "ci",
            "--key",
            DEPLOY_KEY,
            "--read-only",
        ])
        .await
        .unwrap();
    assert_eq!(key["title"], "ci");
    assert_eq!(key["read_only"], true);
    let c = py
        .run(&["get-contents", "octo/hello", "README.md"])
        .await
        .unwrap();
    assert!(c["decoded"].as_str().unwrap().starts_with("# hello"), "{c}");
    let e = py.run(&["list-issues", "octo/secret"]).await.unwrap_err();
    assert_eq!(e.status, 404, "{e:?}");
    assert_eq!(e.kind, "UnknownObjectException");
    assert_eq!(e.data["message"], "Not Found");

    let calls = gh.api_calls();
    assert_eq!(calls.len(), 6);
    for c in &calls {
        assert_eq!(
            c.header("authorization"),
            Some(format!("token {token}")),
            "PyGithub's Authorization"
        );
        assert_eq!(c.header("user-agent").as_deref(), Some("PyGithub/Python"));
        assert_eq!(c.header("x-github-api-version"), None);
    }
    let paths: Vec<String> = calls
        .iter()
        .map(|c| format!("{} {}", c.method(), c.path().split('?').next().unwrap()))
        .collect();
    assert_eq!(
        paths,
        [
            "GET /repos/octo/hello",
            "GET /repos/octo/hello/issues",
            "POST /repos/octo/hello/issues",
            "POST /repos/octo/hello/keys",
            "GET /repos/octo/hello/contents/README.md",
            "GET /repos/octo/secret/issues",
        ]
    );

    // A permission the token lacks: GithubException 403 with GitHub's message.
    let (_, t) = gh.mint(json!({"repositories": ["hello"], "permissions": {"issues": "read"}}));
    let py = PyGithub::new(gh.url(), t["token"].as_str().unwrap());
    let e = py
        .run(&["create-issue", "octo/hello", "--title", "x"])
        .await
        .unwrap_err();
    assert_eq!(e.status, 403, "{e:?}");
    assert_eq!(e.kind, "GithubException");
    assert_eq!(e.data["message"], "Resource not accessible by integration");
    // Concurrent calls, each a client of its own.
    let out = py
        .run(&["concurrent", "--n", "5", "list-issues", "octo/hello"])
        .await
        .unwrap();
    assert_eq!(out, json!(["ok", "ok", "ok", "ok", "ok"]));
}

/// The checks the end-to-end tests make of what GitHub saw pass for a client that does
/// exactly what the provider's spec says (installation lookup, access token, API call),
/// and catch one that does not (a JWT that is not backdated, a token sent with the
/// `token` scheme, a body member GitHub does not know).
#[test]
fn harness_the_checks_accept_what_the_spec_says_and_nothing_else() {
    let gh = GitHub::new();
    let auth = format!("Bearer {}", app_key().app_jwt());
    let app_headers = [
        ("authorization", auth.as_str()),
        ("accept", "application/vnd.github+json"),
        ("x-github-api-version", "2022-11-28"),
    ];
    let (status, _, b) = gh.call("GET", "/repos/octo/hello/installation", &app_headers, "");
    assert_eq!(status, 200, "{b}");
    let (status, t) =
        gh.mint(json!({"repositories": ["hello"], "permissions": {"issues": "read"}}));
    assert_eq!(status, 201, "{t}");
    let token = t["token"].as_str().unwrap().to_string();
    let (status, _, b) = gh.call(
        "GET",
        "/repos/octo/hello/issues",
        &[("authorization", &format!("Bearer {token}"))],
        "",
    );
    assert_eq!(status, 200, "{b}");
    assert_github_saw_it_right(&gh, "the-agent-jwt");
    let requests = gh.token_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        asked(&requests[0]),
        (repos(&["hello"]), json!({"issues": "read"}))
    );
    let call = &calls_to(&gh, "GET", "/repos/octo/hello/issues")[0];
    assert_eq!(token_of(call), token);
    assert_eq!(
        request_that_issued(&gh, &token).0["seq"],
        requests[0].0["seq"]
    );
    let by_id = gh.mint(json!({"repository_ids": [SECRET_ID], "permissions": {"issues": "read"}}));
    assert_eq!(by_id.0, 201);
    assert_eq!(
        asked(gh.token_requests().last().unwrap()),
        (repos(&["secret"]), json!({"issues": "read"}))
    );

    // What the checks must refuse.
    let n = now();
    let fresh = app_key().sign(&json!({"iss": APP_ID.to_string(), "iat": n, "exp": n + 540}));
    let (status, _, _) = gh.call(
        "GET",
        "/repos/octo/hello/installation",
        &[("authorization", &format!("Bearer {fresh}"))],
        "",
    );
    assert_eq!(status, 200, "GitHub itself takes a JWT issued now");
    let not_backdated = gh.requests_of("installation").pop().unwrap();
    assert!(std::panic::catch_unwind(|| assert_app_call(&not_backdated)).is_err());
    let (status, _, _) = gh.call(
        "GET",
        "/repos/octo/hello/issues",
        &[("authorization", &format!("token {token}"))],
        "",
    );
    assert_eq!(status, 200);
    let token_scheme = gh.api_calls().pop().unwrap();
    assert!(std::panic::catch_unwind(|| token_of(&token_scheme)).is_err());
    let (status, _) = gh.mint(json!({"repositories": ["hello"], "single_file": "README.md"}));
    assert_eq!(status, 201, "the schema allows members it does not name");
    let extra = gh.token_requests().pop().unwrap();
    assert!(std::panic::catch_unwind(|| asked(&extra)).is_err());
    assert!(std::panic::catch_unwind(|| assert_github_saw_it_right(&gh, "x")).is_err());
}

// ---------------------------------------------------------------- through keygate

/// PyGithub's calls through keygate: each gets a token for exactly the one repository
/// and the permissions the call needs (GET repo metadata:read, list issues issues:read,
/// create an issue issues:write, read a file contents:read), injected as `Bearer ghs_…`.
#[tokio::test]
async fn pygithub_calls_get_tokens_narrowed_to_the_repository_and_the_call() {
    let kg = start(OPTS).await;
    let cases: [(&[&str], Value, &str, &str); 4] = [
        (
            &["get-repo", "octo/hello"],
            json!({"metadata": "read"}),
            "GET",
            "/repos/octo/hello",
        ),
        (
            &["list-issues", "octo/hello"],
            json!({"issues": "read"}),
            "GET",
            "/repos/octo/hello/issues",
        ),
        (
            &["create-issue", "octo/hello", "--title", "From an agent"],
            json!({"issues": "write"}),
            "POST",
            "/repos/octo/hello/issues",
        ),
        (
            &["get-contents", "octo/hello", "README.md"],
            json!({"contents": "read"}),
            "GET",
            "/repos/octo/hello/contents/README.md",
        ),
    ];
    for (i, (args, permissions, method, path)) in cases.iter().enumerate() {
        let out = kg
            .py(args)
            .await
            .unwrap_or_else(|e| panic!("{args:?} through keygate: {e:?}"));
        match args[0] {
            "get-repo" => assert_eq!(out["full_name"], "octo/hello", "{out}"),
            "list-issues" => assert_eq!(out[0]["title"], "Found a bug", "{out}"),
            "create-issue" => assert_eq!(out["title"], "From an agent", "{out}"),
            _ => assert!(out["decoded"].as_str().unwrap().starts_with("# hello")),
        }
        let requests = kg.gh.token_requests();
        assert_eq!(
            requests.len(),
            i + 1,
            "{args:?}: one access-token request per permission set"
        );
        let r = requests.last().unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.reason());
        assert_eq!(
            r.path(),
            format!("/app/installations/{INSTALLATION_ID}/access_tokens")
        );
        assert_eq!(
            asked(r),
            (repos(&["hello"]), permissions.clone()),
            "{args:?}: the token keygate asked for"
        );
        let calls = calls_to(&kg.gh, method, path);
        assert_eq!(calls.len(), 1, "{method} {path} reached GitHub once");
        let token = token_of(&calls[0]);
        assert_eq!(
            Some(token.as_str()),
            r.issued(),
            "{args:?} was not sent with the token asked for it"
        );
        if args[0] == "list-issues" {
            let info = kg.gh.token_info(&token);
            assert!(
                info["permissions"]
                    .as_object()
                    .unwrap()
                    .values()
                    .all(|v| v == "read"),
                "listing issues got a token that writes: {}",
                info["permissions"]
            );
        }
    }
    assert_eq!(kg.gh.api_calls().len(), 4);
    // installation_id is configured: no lookup.
    assert!(kg.gh.requests_of("installation").is_empty());
    kg.assert_github_saw_it_right();
}

/// The token keygate used for octo/hello does not open octo/secret (GitHub answers 404
/// to it); octo/secret gets a token of its own, narrowed to it.
#[tokio::test]
async fn a_token_for_one_repository_does_not_open_another() {
    let kg = start(OPTS).await;
    kg.py(&["list-issues", "octo/hello"]).await.unwrap();
    let hello_token = token_of(&kg.gh.api_calls()[0]);
    for path in ["/repos/octo/secret/issues", "/repos/octo/secret"] {
        let (status, _, b) = kg.gh.call(
            "GET",
            path,
            &[("authorization", &format!("Bearer {hello_token}"))],
            "",
        );
        assert_eq!(status, 404, "the octo/hello token replayed on {path}: {b}");
    }

    let issues = kg.py(&["list-issues", "octo/secret"]).await.unwrap();
    assert_eq!(issues[0]["title"], "Secret plans", "{issues}");
    let requests = kg.gh.token_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        asked(&requests[1]),
        (repos(&["secret"]), json!({"issues": "read"}))
    );
    let secret_call = calls_to(&kg.gh, "GET", "/repos/octo/secret/issues")
        .into_iter()
        .find(|c| c.status() == 200)
        .expect("octo/secret's issues never listed through keygate");
    let secret_token = token_of(&secret_call);
    assert_ne!(secret_token, hello_token);
    assert_eq!(
        kg.gh.token_info(&secret_token)["repositories"],
        json!(["secret"])
    );
    let (status, _, _) = kg.gh.call(
        "GET",
        "/repos/octo/hello/issues",
        &[("authorization", &format!("Bearer {secret_token}"))],
        "",
    );
    assert_eq!(status, 404, "the octo/secret token replayed on octo/hello");
    kg.assert_github_saw_it_right();
}

/// A second identical call is served from the cache: no new access-token request.
#[tokio::test]
async fn a_second_identical_call_reuses_the_token() {
    let kg = start(OPTS).await;
    kg.py(&["list-issues", "octo/hello"]).await.unwrap();
    kg.py(&["list-issues", "octo/hello"]).await.unwrap();
    assert_eq!(
        kg.gh.token_requests().len(),
        1,
        "the second call asked again"
    );
    let calls = kg.gh.api_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(token_of(&calls[0]), token_of(&calls[1]));
    let audit = kg.gw.audit().await;
    let cached: Vec<Value> = audit
        .iter()
        .filter(|r| r["tool"] == "github" && r["status"] == 200)
        .map(|r| r["credential_cached"].clone())
        .collect();
    assert_eq!(cached, [json!(false), json!(true)], "credential_cached");
    kg.assert_github_saw_it_right();
}

/// Twenty concurrent cold calls for one scope make one access-token request (GitHub is
/// slow to answer it here, so they all wait on the same one).
#[tokio::test]
async fn concurrent_cold_calls_make_one_token_request() {
    let kg = start(OPTS).await;
    kg.gh.control(json!({"access_tokens_delay_ms": 300}));
    let out = kg
        .py(&["concurrent", "--n", "20", "list-issues", "octo/hello"])
        .await
        .unwrap();
    let out = out.as_array().unwrap();
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(|r| r == "ok"), "{out:?}");
    assert_eq!(
        kg.gh.token_requests().len(),
        1,
        "concurrent cold calls asked GitHub more than once"
    );
    let calls = kg.gh.api_calls();
    assert_eq!(calls.len(), 20);
    let tokens: BTreeSet<String> = calls.iter().map(token_of).collect();
    assert_eq!(tokens.len(), 1);
    kg.assert_github_saw_it_right();
}

/// A token in the last minute of its life is not used: the next call gets a new one.
/// (GitHub here issues tokens for 70 s, so the cache may serve one for about 10 s.)
#[tokio::test]
async fn a_token_near_its_expiry_is_replaced() {
    let kg = start(OPTS).await;
    kg.gh.control(json!({"token_ttl": 70}));
    let r = kg.get("/repos/octo/hello/issues").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = kg.get("/repos/octo/hello/issues").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(kg.gh.token_requests().len(), 1, "not cached");
    let expires = kg.gh.tokens()[0]["expires_at_unix"].as_u64().unwrap();
    // (Real time: the App's JWT is read by the stand-in's clock, which keygate's would
    // leave behind.)
    while now() < expires - 59 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = kg.get("/repos/octo/hello/issues").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        kg.gh.token_requests().len(),
        2,
        "a token with under 60 s left was used"
    );
    let calls = kg.gh.api_calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(token_of(&calls[0]), token_of(&calls[1]));
    assert_ne!(token_of(&calls[1]), token_of(&calls[2]));
    kg.assert_github_saw_it_right();
}

/// Creating a deploy key waits for a human: PyGithub raises GithubException 403 naming
/// the approval; once approved through the admin API, the retried call goes through
/// exactly once, with a token that has exactly `administration: write` on octo/hello.
#[tokio::test]
async fn creating_a_deploy_key_waits_for_approval_then_goes_through_once() {
    let kg = start(OPTS).await;
    let args = [
        "create-deploy-key",
        "octo/hello",
        "--title",
        "ci",
        "--key",
        DEPLOY_KEY,
        "--read-only",
    ];
    let e = kg.py(&args).await.expect_err("created unapproved");
    assert_eq!(e.status, 403, "{e:?}");
    assert_eq!(error_code(&e.data), "approval_required", "{e:?}");
    let id = approval_id(&e.data);
    assert!(
        calls_to(&kg.gh, "POST", "/repos/octo/hello/keys").is_empty(),
        "reached GitHub unapproved"
    );
    approve(&kg.gw, &id).await;

    let made = kg.py(&args).await.expect("the approved call");
    assert_eq!(made["title"], "ci", "{made}");
    assert_eq!(made["read_only"], true, "{made}");
    let posts = calls_to(&kg.gh, "POST", "/repos/octo/hello/keys");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].status(), 201, "{:?}", posts[0].reason());
    let token = token_of(&posts[0]);
    let info = kg.gh.token_info(&token);
    assert_eq!(
        info["requested_permissions"],
        json!({"administration": "write"}),
        "the deploy key's token"
    );
    assert_eq!(info["repositories"], json!(["hello"]));
    assert_eq!(
        asked(&request_that_issued(&kg.gh, &token)),
        (repos(&["hello"]), json!({"administration": "write"}))
    );

    // The approval was for one request.
    let e = kg
        .py(&args)
        .await
        .expect_err("a second key without approval");
    assert_eq!(e.status, 403, "{e:?}");
    assert_eq!(error_code(&e.data), "approval_required", "{e:?}");
    assert_eq!(calls_to(&kg.gh, "POST", "/repos/octo/hello/keys").len(), 1);
    // No call of this test had a token with more than the one permission it needed.
    for t in kg.gh.tokens() {
        assert_eq!(t["repositories"], json!(["hello"]), "{t}");
        assert_eq!(
            t["requested_permissions"].as_object().unwrap().len(),
            1,
            "{}",
            t["requested_permissions"]
        );
    }
    kg.assert_github_saw_it_right();
}

/// Without `installation_id`, keygate finds the installation from the owner in the path
/// (`GET /repos/octo/hello/installation` with the App JWT) and remembers it.
#[tokio::test]
async fn the_installation_is_looked_up_from_the_owner() {
    let kg = start(Opts {
        installation_id: false,
        ..OPTS
    })
    .await;
    kg.py(&["get-repo", "octo/hello"]).await.unwrap();
    kg.py(&["list-issues", "octo/hello"]).await.unwrap();
    // An owner not among the tool's `owners`: refused, its installation never looked up
    // (an App installed by other accounts does not open them to the agent).
    let r = kg.get("/repos/other/hello/issues").await;
    assert_eq!(
        error_code(&r.json()),
        "credential_unavailable",
        "{}",
        r.text()
    );
    let lookups = kg.gh.requests_of("installation");
    assert_eq!(lookups.len(), 1, "the installation was not cached");
    assert_eq!(lookups[0].method(), "GET");
    assert_eq!(lookups[0].path(), "/repos/octo/hello/installation");
    assert_eq!(lookups[0].status(), 200);
    let tokens = kg.gh.token_requests();
    assert_eq!(tokens.len(), 2);
    for t in &tokens {
        assert_eq!(
            t.path(),
            format!("/app/installations/{INSTALLATION_ID}/access_tokens")
        );
        assert!(t.0["seq"].as_u64() > lookups[0].0["seq"].as_u64());
    }
    kg.assert_github_saw_it_right();
}

/// A call keygate cannot map to permissions is refused when there are no
/// `default_permissions`, and nothing reaches GitHub (not even a token request); with
/// `default_permissions = { metadata = "read" }` it goes with exactly that.
#[tokio::test]
async fn a_call_keygate_cannot_map_needs_default_permissions() {
    let path = "/repos/octo/hello/some-unknown-thing";
    let kg = start(OPTS).await;
    let r = kg.get(path).await;
    assert!(r.status >= 400, "{} {}", r.status, r.text());
    let code = error_code(&r.json());
    assert!(
        code == "forbidden" || code == "credential_unavailable",
        "{} {}",
        r.status,
        r.text()
    );
    assert!(
        kg.gh.api_calls().is_empty(),
        "an unmapped call reached GitHub"
    );
    assert!(
        kg.gh.token_requests().is_empty(),
        "keygate asked a token for a call it cannot map"
    );
    kg.assert_github_saw_it_right();

    let kg = start(Opts {
        default_permissions: Some("{ metadata = \"read\" }"),
        ..OPTS
    })
    .await;
    let r = kg.get(path).await;
    // The stand-in's own answer, passed through.
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["message"], "Not Found");
    let calls = calls_to(&kg.gh, "GET", path);
    assert_eq!(calls.len(), 1);
    let token = token_of(&calls[0]);
    assert_eq!(
        asked(&request_that_issued(&kg.gh, &token)),
        (repos(&["hello"]), json!({"metadata": "read"}))
    );
    kg.assert_github_saw_it_right();
}

/// A path that names no repository (`/search/…`, `/graphql`, `/orgs/…`) would get a token
/// for every repository of the installation: with repository permissions (here from
/// `default_permissions`) it is refused, and nothing reaches GitHub.
#[tokio::test]
async fn a_path_naming_no_repository_gets_no_repository_permissions() {
    let kg = start(Opts {
        default_permissions: Some("{ contents = \"read\" }"),
        ..OPTS
    })
    .await;
    for path in ["/search/code?q=x", "/orgs/octo/some-unknown-thing", "/user"] {
        let r = kg.get(path).await;
        assert_eq!(
            error_code(&r.json()),
            "credential_unavailable",
            "{path}: {}",
            r.text()
        );
    }
    assert!(kg.gh.api_calls().is_empty(), "a call reached GitHub");
    assert!(kg.gh.token_requests().is_empty(), "a token was asked for");
}

/// An operation of the tool's own routes gets the permissions its
/// `[tools.credential.operations."NAME"]` names.
#[tokio::test]
async fn a_route_operation_gets_its_configured_permissions() {
    let kg = start(Opts {
        tool_extra: "routes = [{ method = \"GET\", path = \"/repos/{owner}/{repo}/things\", operation = \"list_things\", tags = [\"read\"] }]\n",
        credential_extra: "[tools.credential.operations.\"list_things\"]\npermissions = { contents = \"read\" }\n",
        ..OPTS
    })
    .await;
    let r = kg.get("/repos/octo/hello/things").await;
    assert_eq!(r.status, 404, "{}", r.text());
    let calls = calls_to(&kg.gh, "GET", "/repos/octo/hello/things");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        asked(&request_that_issued(&kg.gh, &token_of(&calls[0]))),
        (repos(&["hello"]), json!({"contents": "read"}))
    );
    kg.assert_github_saw_it_right();
}

/// `/repositories/{id}/…` paths name the repository by id: the token is narrowed to it
/// (by id or by name). The agent's JWT as `Authorization: Bearer` works as well as
/// `token`.
#[tokio::test]
async fn a_repository_named_by_id_gets_a_token_for_it() {
    let kg = start(OPTS).await;
    let r = kg
        .get_as(
            &format!("/repositories/{HELLO_ID}/issues"),
            &bearer(&kg.jwt),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["title"], "Found a bug");
    let calls = kg.gh.api_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        asked(&request_that_issued(&kg.gh, &token_of(&calls[0]))),
        (repos(&["hello"]), json!({"issues": "read"}))
    );
    kg.assert_github_saw_it_right();
}

/// GitHub failing to issue (500, 401, 404 on access tokens; 500 on the installation
/// lookup) or down: `credential_unavailable` (502/503), and the call never reaches GitHub.
#[tokio::test]
async fn github_failing_to_issue_fails_closed() {
    for status in [500, 401, 404] {
        let kg = start(OPTS).await;
        kg.gh.control(json!({"fail_access_tokens": status}));
        let e = kg
            .py(&["list-issues", "octo/hello"])
            .await
            .expect_err("a call without a token went through");
        assert_credential_unavailable(
            &format!("access tokens answering {status}"),
            e.status,
            &e.data,
        );
        assert!(!kg.gh.token_requests().is_empty(), "keygate never asked");
        assert!(
            kg.gh.api_calls().is_empty(),
            "access tokens answering {status}: the call reached GitHub"
        );
        let audit = kg.gw.audit().await;
        assert!(
            audit
                .iter()
                .any(|r| r["tool"] == "github" && r["error"] == "credential_unavailable"),
            "{audit:#?}"
        );
    }

    let kg = start(Opts {
        installation_id: false,
        ..OPTS
    })
    .await;
    kg.gh.control(json!({"fail_installation": 500}));
    let e = kg.py(&["list-issues", "octo/hello"]).await.unwrap_err();
    assert_credential_unavailable("the installation lookup answering 500", e.status, &e.data);
    assert!(!kg.gh.requests_of("installation").is_empty());
    assert!(kg.gh.api_calls().is_empty());
    assert!(kg.gh.tokens().is_empty());

    // The App API down (nothing listens there); the upstream itself is up.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let kg = start(Opts {
        api_url: Some(format!("http://{closed}")),
        ..OPTS
    })
    .await;
    let r = kg.get("/repos/octo/hello/issues").await;
    assert_credential_unavailable("GitHub down", r.status, &r.json());
    assert!(kg.gh.requests().is_empty(), "the call reached GitHub");
}

/// keygate holding a key that is not the App's: GitHub refuses the App JWT (401) and the
/// agent gets `credential_unavailable`; nothing is forwarded.
#[tokio::test]
async fn a_wrong_app_key_fails_closed() {
    for installation_id in [true, false] {
        let kg = start(Opts {
            key: Key::Wrong,
            installation_id,
            ..OPTS
        })
        .await;
        let e = kg.py(&["list-issues", "octo/hello"]).await.unwrap_err();
        assert_credential_unavailable("a wrong App key", e.status, &e.data);
        let app_calls: Vec<Seen> = kg
            .gh
            .requests()
            .into_iter()
            .filter(|r| r.kind() != "api")
            .collect();
        assert!(!app_calls.is_empty(), "keygate never asked GitHub");
        for r in &app_calls {
            assert_eq!(r.status(), 401, "{} {}", r.method(), r.path());
            assert!(
                r.reason().is_some_and(|m| m.starts_with("jwt")),
                "{:?}",
                r.reason()
            );
        }
        assert!(kg.gh.api_calls().is_empty());
        assert!(kg.gh.tokens().is_empty());
    }
}

/// The App key as PKCS#8 works as well as GitHub's PKCS#1.
#[tokio::test]
async fn a_pkcs8_app_key_works() {
    let kg = start(Opts {
        key: Key::Pkcs8,
        ..OPTS
    })
    .await;
    let issues = kg.py(&["list-issues", "octo/hello"]).await.unwrap();
    assert_eq!(issues[0]["number"], 1);
    kg.assert_github_saw_it_right();
}

/// keygate refuses to start when the App key file is readable by group or others (the
/// same configuration with the file 0600 starts).
#[tokio::test]
async fn keygate_refuses_an_app_key_readable_by_others() {
    let mut kg = start(OPTS).await;
    kg.gw.stop().await;
    for mode in [0o644, 0o640, 0o604] {
        let gh = GitHub::new();
        let dir = tempfile::tempdir().unwrap();
        let iss = TestIssuer::new(dir.path(), "gh-iss", "keygate");
        let cfg = config(
            dir.path(),
            &gh,
            &iss,
            &Opts {
                key_mode: mode,
                ..OPTS
            },
        );
        let path = TestGateway::write_config(&dir, &cfg);
        let text = std::fs::read_to_string(&path).unwrap();
        let error = match keygate::config::parse(&path, &text) {
            Err(e) => e.to_string(),
            Ok(snapshot) => match keygate::Runtime::start(snapshot).await {
                Ok(_) => panic!("keygate started with an App key of mode {mode:o}"),
                Err(e) => e,
            },
        };
        assert!(
            error.contains("private_key_file") || error.contains("app.pem"),
            "mode {mode:o}: the error does not name the key file: {error}"
        );
    }
}

/// No installation token, App JWT, App key or agent JWT in the audit log, the store, any
/// file keygate keeps, or any log line; the agent's JWT never reached GitHub.
#[tokio::test]
async fn tokens_and_keys_never_leave_keygate() {
    let mut kg = start(OPTS).await;
    kg.py(&["get-repo", "octo/hello"]).await.unwrap();
    kg.py(&["list-issues", "octo/hello"]).await.unwrap();
    kg.py(&["list-issues", "octo/secret"]).await.unwrap();
    kg.py(&["create-issue", "octo/hello", "--title", "t"])
        .await
        .unwrap();
    let e = kg
        .py(&[
            "create-deploy-key",
            "octo/hello",
            "--title",
            "ci",
            "--key",
            DEPLOY_KEY,
        ])
        .await
        .unwrap_err();
    assert_eq!(error_code(&e.data), "approval_required", "{e:?}");
    kg.gh.control(json!({"fail_access_tokens": 500}));
    let e = kg
        .py(&["get-contents", "octo/hello", "README.md"])
        .await
        .unwrap_err();
    assert_credential_unavailable("failing", e.status, &e.data);
    kg.assert_github_saw_it_right();

    let mut secrets: Vec<(&str, String)> = vec![("agent JWT", kg.jwt.clone())];
    let tokens = kg.gh.tokens();
    assert!(tokens.len() >= 3);
    for t in &tokens {
        secrets.push(("installation token", t["token"].as_str().unwrap().into()));
    }
    for r in kg.gh.token_requests() {
        secrets.push(("App JWT", r.credential().unwrap()));
    }
    // A line from the middle of the App key's PEM.
    let key_line = app_key().pkcs1_pem.lines().nth(5).unwrap().to_string();
    secrets.push(("App private key", key_line));

    let audit = kg.gw.audit().await;
    assert!(!audit.is_empty());
    kg.gw.stop().await;
    let audit_text = std::fs::read(&kg.gw.audit_path).unwrap();
    let logs = logs().lock().unwrap().clone();
    assert!(!logs.is_empty(), "no log line captured");
    for (what, needle) in &secrets {
        assert!(
            !contains(&audit_text, needle),
            "the {what} is in the audit log"
        );
        assert!(!contains(&logs, needle), "the {what} is in a log line");
    }
    assert!(
        !contains(&audit_text, "ghs_"),
        "a ghs_ value is in the audit log"
    );
    let secrets_dir = kg.gw.dir.path().join("secrets");
    let files = files_under(kg.gw.dir.path());
    assert!(
        files
            .iter()
            .any(|f| f.file_name().is_some_and(|n| n == "keygate.db")),
        "no store file under the gateway's directory"
    );
    for f in files {
        if f.starts_with(&secrets_dir) {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap();
        for (what, needle) in &secrets {
            assert!(
                !contains(&bytes, needle),
                "the {what} is in {}",
                f.display()
            );
        }
    }
}

/// Each audit record of a call names the credential: provider `github_app`, an id that
/// is a fingerprint (never the token), the scope (repository and permissions), its
/// expiry and whether the cache served it.
#[tokio::test]
async fn audit_records_name_the_installation_token_without_its_value() {
    let kg = start(OPTS).await;
    kg.py(&["list-issues", "octo/hello"]).await.unwrap();
    kg.py(&["list-issues", "octo/hello"]).await.unwrap();
    kg.py(&["list-issues", "octo/secret"]).await.unwrap();
    let tokens = kg.gh.tokens();
    assert_eq!(tokens.len(), 2);
    let audit = kg.gw.audit().await;
    let records: Vec<&Value> = audit
        .iter()
        .filter(|r| r["tool"] == "github" && r["status"] == 200)
        .collect();
    assert_eq!(records.len(), 3, "{audit:#?}");
    for r in &records {
        assert_eq!(r["agent_id"], AGENT, "{r}");
        assert_eq!(r["credential_provider"], "github_app", "{r}");
        let id = r["credential_id"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "no credential_id: {r}");
        assert!(!id.contains("ghs_"), "credential_id {id:?}");
        for t in &tokens {
            let t = t["token"].as_str().unwrap();
            assert!(
                !id.contains(t) && !t.contains(id),
                "credential_id {id:?} is (part of) the token"
            );
        }
        assert!(r["credential_scope"].is_string(), "credential_scope: {r}");
        assert!(r["credential_expires"].is_u64(), "credential_expires: {r}");
        assert!(
            r["credential_cached"].is_boolean(),
            "credential_cached: {r}"
        );
    }
    let scope = |r: &Value| r["credential_scope"].as_str().unwrap().to_string();
    for (r, repo) in [(records[0], "hello"), (records[2], "secret")] {
        assert!(
            scope(r).contains(repo) && scope(r).contains("issues"),
            "credential_scope {:?} names neither {repo} nor issues",
            scope(r)
        );
    }
    assert!(
        !scope(records[2]).contains("hello"),
        "{}",
        scope(records[2])
    );
    assert_eq!(records[0]["credential_cached"], false);
    assert_eq!(records[1]["credential_cached"], true);
    assert_eq!(records[2]["credential_cached"], false);
    assert_eq!(records[0]["credential_id"], records[1]["credential_id"]);
    assert_ne!(records[0]["credential_id"], records[2]["credential_id"]);
    for (r, t) in [
        (records[0], &tokens[0]),
        (records[1], &tokens[0]),
        (records[2], &tokens[1]),
    ] {
        let expires = t["expires_at_unix"].as_u64().unwrap();
        let audited = r["credential_expires"].as_u64().unwrap();
        assert!(
            (expires - 60..=expires).contains(&audited),
            "credential_expires {audited}, the token expires at {expires}"
        );
    }
    kg.assert_github_saw_it_right();
}

/// A task's calls get installation tokens of their own; when the task ends keygate
/// revokes them at GitHub (`DELETE /installation/token`), and they stop working, while
/// the token of the agent's calls outside the task keeps working.
#[tokio::test]
async fn a_tasks_installation_tokens_are_revoked_when_it_ends() {
    let kg = start(OPTS).await;
    let r = kg.get("/repos/octo/hello").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (s, task) = kg
        .gw
        .admin(
            "POST",
            "/tasks",
            Some(json!({"agent": AGENT, "purpose": "triage", "ticket": "OPS-3", "tools": ["github"]})),
        )
        .await;
    assert_eq!(s, 201, "{task}");
    let id = task["id"].as_str().unwrap();
    let r = Client::http1()
        .get(
            &kg.gw.url("/tools/github/repos/octo/hello"),
            &[
                ("authorization", &format!("token {}", kg.jwt)),
                ("keygate-task", id),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let calls = kg.gh.api_calls();
    let (outside, inside) = (token_of(&calls[0]), token_of(&calls[1]));
    assert_ne!(
        outside, inside,
        "the task's call got the agent's other token"
    );

    let (s, ended) = kg
        .gw
        .admin("POST", &format!("/tasks/{id}/end"), Some(json!({})))
        .await;
    assert_eq!(s, 200, "{ended}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while kg.gh.token_info(&inside)["revoked"] != true {
        assert!(
            std::time::Instant::now() < deadline,
            "the task's token was not revoked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bearer = |t: &str| format!("Bearer {t}");
    let (s, _, _) = kg.gh.call(
        "GET",
        "/repos/octo/hello",
        &[("authorization", &bearer(&inside))],
        "",
    );
    assert_eq!(s, 401, "the revoked token still works");
    let (s, _, _) = kg.gh.call(
        "GET",
        "/repos/octo/hello",
        &[("authorization", &bearer(&outside))],
        "",
    );
    assert_eq!(s, 200, "the token outside the task was revoked too");
}
