//! The OAuth2 authorization server of tests/oauth2.rs: panva's oidc-provider (npm, pinned
//! in `tests/oauth2/package.json`) with `tests/oauth2/server.mjs` around it, started once
//! per test binary with every client the tests use (one client per test, so a test counts
//! only its own token requests), on 127.0.0.1.
//!
//! `scripts/test` installs it (`npm ci` into `tests/oauth2/node_modules`); these helpers
//! only run it, and fail loudly when it is missing.
//!
//! What the server does (oidc-provider 9.13.3 and server.mjs), found by experiment:
//! - `POST {issuer}/token`, form-encoded. client_credentials with `client_secret_basic`,
//!   `client_secret_post` or `private_key_jwt`. server.mjs refuses a client that
//!   authenticates by another method than the one it is registered for (401
//!   `invalid_client`, "client is registered for X, request used Y"); oidc-provider alone
//!   would take basic and post interchangeably. Basic credentials are form-decoded
//!   (`+` is a space, `%XX` an escape) after base64, as RFC 6749 §2.3.1 says.
//! - private_key_jwt: the assertion's `iss` and `sub` must be the client id, `aud` the
//!   issuer, the token endpoint URL or the URL called; `exp` and `jti` are required; a
//!   `jti` seen before is refused (`invalid_client`); `client_id` in the body is optional.
//!   Each such client here is pinned to one algorithm (`token_endpoint_auth_signing_alg`).
//! - A failed client authentication answers only "client authentication failed"; the
//!   reason is in the server's stderr ([`AuthServer::log_text`]).
//! - Scope: a scope the client is not registered for (but the server knows) gives 400
//!   `invalid_scope` with `"scope": "<the scope>"`; a scope the server does not know at all
//!   is dropped silently; no `scope` gives a token with no scope (not the client's).
//! - `resource` (RFC 8707): [`JWT_RESOURCE`] gives ES256 JWT access tokens (`typ`
//!   `at+jwt`, claims `jti sub iat exp scope client_id iss aud`), [`OPAQUE_RESOURCE`]
//!   opaque ones (43 characters); no `resource` means [`JWT_RESOURCE`]; any other is 400
//!   `invalid_target`. `audience` is not a client_credentials parameter (ignored).
//!   Tokens live 600 s (`expires_in: 600`).
//! - Introspection (`{issuer}/token/introspection`, [`INTROSPECTOR`] with Basic) knows
//!   opaque tokens only; a JWT gives `unsupported_token_type`.
//! - Token exchange (RFC 8693, server.mjs): subject and actor tokens of type `jwt`,
//!   `access_token` or `id_token`; a JWT must come from the server itself or from a trusted
//!   issuer ([`AuthServer::trust_issuer`]: JWKS URL, `aud` required when given), be
//!   signed by one of its keys (EdDSA/Ed25519 and ES256 both work) and carry `sub` and
//!   `exp`. The token issued has `sub` = the subject token's `sub`, `act: {"sub": <actor
//!   token's sub>}`, the requested scope (which must be within the client's, else
//!   `invalid_scope`), `client_id` = the authenticated client. An untrusted issuer, a bad
//!   signature, a wrong `aud` or an expired token give 400 `invalid_grant`.
//! - `GET /_peer/requests?client_id=ID`: every token request of that client as received,
//!   decoded, with the answer (see server.mjs); secrets and token values are not in it,
//!   only their SHA-256.
#![allow(dead_code)]

use super::common::{now, Client};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A resource whose access tokens are JWTs (the default resource).
pub const JWT_RESOURCE: &str = "https://mcp.test/api";
/// A resource whose access tokens are opaque (and so can be introspected).
pub const OPAQUE_RESOURCE: &str = "https://opaque.test/api";
/// The resource-server client that may introspect: (id, secret), Basic.
pub const INTROSPECTOR: (&str, &str) = ("rs-introspect", "rs-secret-0123456789");

pub const CLIENT_CREDENTIALS: &str = "client_credentials";
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Every scope the server knows besides the clients' own (so a wider ask is `invalid_scope`,
/// not silently dropped).
pub const KNOWN_SCOPES: &str = "tools:read tools:write admin";

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How a client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    Basic,
    Post,
    /// private_key_jwt with a P-256 key (ES256).
    KeyEs256,
    /// private_key_jwt with an RSA 2048 key (RS256).
    KeyRs256,
}

impl Auth {
    /// `token_endpoint_auth_method` / keygate's `client_auth`.
    pub fn method(self) -> &'static str {
        match self {
            Auth::Basic => "client_secret_basic",
            Auth::Post => "client_secret_post",
            Auth::KeyEs256 | Auth::KeyRs256 => "private_key_jwt",
        }
    }

    fn key_alg(self) -> Option<Algorithm> {
        match self {
            Auth::KeyEs256 => Some(Algorithm::ES256),
            Auth::KeyRs256 => Some(Algorithm::RS256),
            _ => None,
        }
    }
}

/// A client the server is started with: id, how it authenticates, the scopes it may ask
/// for, and its secret when it is not the default one.
pub struct ClientSpec {
    pub id: &'static str,
    pub auth: Auth,
    pub scope: &'static str,
    pub secret: Option<&'static str>,
}

const fn c(id: &'static str, auth: Auth, scope: &'static str) -> ClientSpec {
    ClientSpec {
        id,
        auth,
        scope,
        secret: None,
    }
}

const RW: &str = "tools:read tools:write";

/// A secret with every character that Basic must form-encode (RFC 6749 §2.3.1).
pub const SPECIAL_SECRET: &str = "sp ec+ial%2F/:secret&=?#~";

/// Every client, one per test (`h-…`: the harness tests; `e2e-…`: through keygate).
pub const CLIENTS: &[ClientSpec] = &[
    c("h-basic", Auth::Basic, RW),
    c("h-post", Auth::Post, "tools:read"),
    c("h-key-es", Auth::KeyEs256, RW),
    c("h-key-rs", Auth::KeyRs256, RW),
    c("h-assert-es", Auth::KeyEs256, RW),
    c("h-narrow", Auth::Post, "tools:read"),
    c("h-log-post", Auth::Post, RW),
    c("h-log-key", Auth::KeyEs256, RW),
    c("h-introspect", Auth::Basic, RW),
    c("h-tx", Auth::Basic, RW),
    ClientSpec {
        id: "h-special",
        auth: Auth::Basic,
        scope: RW,
        secret: Some(SPECIAL_SECRET),
    },
    c("e2e-basic", Auth::Basic, RW),
    c("e2e-post", Auth::Post, RW),
    c("e2e-key-es", Auth::KeyEs256, RW),
    c("e2e-key-rs", Auth::KeyRs256, RW),
    ClientSpec {
        id: "e2e-special",
        auth: Auth::Basic,
        scope: RW,
        secret: Some(SPECIAL_SECRET),
    },
    c("e2e-ops", Auth::Basic, RW),
    c("e2e-mcp", Auth::Basic, RW),
    c("e2e-cache", Auth::Post, RW),
    c("e2e-flight", Auth::Basic, RW),
    c("t-task", Auth::Basic, RW),
    c("e2e-tx", Auth::Basic, RW),
    c("e2e-narrow", Auth::Post, "tools:read"),
    c("e2e-wrong-secret", Auth::Basic, RW),
    c("e2e-noscope", Auth::Basic, RW),
    c("e2e-down", Auth::Basic, RW),
    c("e2e-secrets-post", Auth::Post, RW),
    c("e2e-secrets-key", Auth::KeyEs256, RW),
    c("e2e-secrets-tx", Auth::Basic, RW),
];

/// A private_key_jwt client's key.
pub struct ClientKey {
    /// PKCS#8 PEM (what keygate's `client_key_file` holds).
    pub pem: String,
    pub kid: String,
    pub alg: Algorithm,
    /// The public JWK registered at the server.
    pub public_jwk: Value,
}

/// A client as the server knows it.
pub struct ClientInfo {
    pub id: &'static str,
    pub auth: Auth,
    pub scope: &'static str,
    /// client_secret_basic / client_secret_post.
    pub secret: Option<String>,
    /// private_key_jwt.
    pub key: Option<ClientKey>,
}

/// The authorization server, shared by the tests of one binary. It stops when the test
/// process exits (its stdin closes).
pub struct AuthServer {
    /// `http://127.0.0.1:<port>`.
    pub issuer: String,
    /// The server's stderr (its `grant.error` lines).
    pub log: PathBuf,
    /// How long generating the keys and starting the server took.
    pub setup: Duration,
    pub clients: Vec<ClientInfo>,
    _child: Mutex<Child>,
}

static AS: OnceLock<AuthServer> = OnceLock::new();

/// The shared authorization server (started on first use).
pub fn auth_server() -> &'static AuthServer {
    AS.get_or_init(start)
}

fn server_js() -> PathBuf {
    let modules = root().join("tests/oauth2/node_modules/oidc-provider");
    assert!(
        modules.exists(),
        "{} is missing: run scripts/test, which installs the OAuth2 test peer \
         (npm ci --prefix tests/oauth2)",
        modules.display()
    );
    root().join("tests/oauth2/server.mjs")
}

/// A new key for `alg` (ES256: P-256; RS256: RSA 2048), PKCS#8 PEM, and its public JWK.
pub fn generate_key(alg: Algorithm, kid: &str) -> ClientKey {
    let rc_alg = match alg {
        Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        Algorithm::RS256 => &rcgen::PKCS_RSA_SHA256,
        other => panic!("no client keys for {other:?}"),
    };
    let pair = rcgen::KeyPair::generate_for(rc_alg).unwrap();
    let pem = pair.serialize_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let key = encoding_key(alg, &pem);
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg).unwrap();
    let mut public_jwk = serde_json::to_value(jwk).unwrap();
    let obj = public_jwk.as_object_mut().unwrap();
    obj.retain(|_, v| !v.is_null());
    obj.insert("kid".into(), kid.into());
    obj.insert("use".into(), "sig".into());
    ClientKey {
        pem,
        kid: kid.into(),
        alg,
        public_jwk,
    }
}

fn encoding_key(alg: Algorithm, pem: &str) -> EncodingKey {
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .unwrap()
}

fn start() -> AuthServer {
    let started = Instant::now();
    let js = server_js();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oauth2-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("oauth2-server.log");
    let clients: Vec<ClientInfo> = CLIENTS
        .iter()
        .map(|s| ClientInfo {
            id: s.id,
            auth: s.auth,
            scope: s.scope,
            secret: matches!(s.auth, Auth::Basic | Auth::Post).then(|| {
                s.secret
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}-secret-{}", s.id, uuid::Uuid::new_v4().simple()))
            }),
            key: s
                .auth
                .key_alg()
                .map(|alg| generate_key(alg, &format!("{}-k1", s.id))),
        })
        .collect();
    let mut registered: Vec<Value> = clients
        .iter()
        .map(|c| {
            let mut m = json!({
                "client_id": c.id,
                "token_endpoint_auth_method": c.auth.method(),
                "grant_types": [CLIENT_CREDENTIALS, TOKEN_EXCHANGE],
                "scope": c.scope,
            });
            if let Some(s) = &c.secret {
                m["client_secret"] = s.clone().into();
            }
            if let Some(k) = &c.key {
                m["token_endpoint_auth_signing_alg"] = format!("{:?}", k.alg).into();
                m["jwks"] = json!({ "keys": [k.public_jwk] });
            }
            m
        })
        .collect();
    registered.push(json!({
        "client_id": INTROSPECTOR.0,
        "client_secret": INTROSPECTOR.1,
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": [],
        "response_types": [],
    }));
    let config = json!({
        "port": 0,
        "scopes": KNOWN_SCOPES.split(' ').collect::<Vec<_>>(),
        "defaultResource": JWT_RESOURCE,
        "resources": {
            JWT_RESOURCE: { "scope": KNOWN_SCOPES, "accessTokenFormat": "jwt" },
            OPAQUE_RESOURCE: { "scope": KNOWN_SCOPES, "accessTokenFormat": "opaque" },
        },
        "trustedIssuers": {},
        "accessTokenTTL": 600,
        "clients": registered,
    });
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let mut child = Command::new("node")
        .arg(&js)
        .arg(&config_path)
        .arg("--exit-on-stdin-eof")
        .current_dir(root().join("tests/oauth2"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cannot start node tests/oauth2/server.mjs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining: node blocks writing to a full pipe.
        for _ in lines {}
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    let issuer = line
        .strip_prefix("READY ")
        .unwrap_or_else(|| {
            panic!(
                "the OAuth2 server did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .trim()
        .to_string();
    AuthServer {
        issuer,
        log,
        setup: started.elapsed(),
        clients,
        _child: Mutex::new(child),
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// The decoded claims of a JWT, without verifying it (`None`: not a JWT).
pub fn jwt_claims(token: &str) -> Option<Value> {
    jwt_part(token, 1)
}

/// The decoded header of a JWT, without verifying it.
pub fn jwt_header(token: &str) -> Option<Value> {
    jwt_part(token, 0)
}

fn jwt_part(token: &str, i: usize) -> Option<Value> {
    use base64::Engine;
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[i])
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Hex SHA-256.
pub fn sha256_hex(s: &str) -> String {
    const_hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes()).as_ref())
}

impl AuthServer {
    /// What keygate's `token_endpoint` is.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub fn client(&self, id: &str) -> &ClientInfo {
        self.clients
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no client {id} in oauth2_support::CLIENTS"))
    }

    /// The server's stderr so far (the reasons of refusals).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every token request that named `client_id` (by Basic, `client_id` or an
    /// assertion), oldest first, as `GET /_peer/requests` gives them.
    pub async fn requests(&self, client_id: &str) -> Vec<Value> {
        let r = Client::http1()
            .get(
                &format!(
                    "{}/_peer/requests?client_id={}",
                    self.issuer,
                    form_encode(client_id)
                ),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json().as_array().cloned().unwrap_or_default()
    }

    /// Trusts `issuer`'s JWTs (keys at `jwks_uri`, `aud` must be `audience`) as subject
    /// and actor tokens of token exchange.
    pub async fn trust_issuer(&self, issuer: &str, jwks_uri: &str, audience: Option<&str>) {
        let mut body = json!({ "issuer": issuer, "jwks_uri": jwks_uri });
        if let Some(a) = audience {
            body["audience"] = a.into();
        }
        let r = Client::http1()
            .send(
                "POST",
                &format!("{}/_peer/trusted-issuers", self.issuer),
                &[("content-type", "application/json")],
                body.to_string(),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
    }

    /// POSTs a form to `{issuer}{path}`, with Basic credentials when given; returns
    /// (status, JSON body).
    pub async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (u16, Value) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let auth = basic.map(|(id, secret)| {
            use base64::Engine;
            let pair = format!("{}:{}", form_encode(id), form_encode(secret));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let r = Client::http1()
            .send("POST", &format!("{}{path}", self.issuer), &headers, body)
            .await;
        (r.status, r.json())
    }

    /// A token request authenticated the way `client_id` is registered (a fresh
    /// assertion for private_key_jwt) with the given parameters.
    pub async fn token_as(&self, client_id: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let c = self.client(client_id);
        let assertion = c
            .key
            .is_some()
            .then(|| self.assertion(client_id, &self.token_endpoint()));
        let mut form: Vec<(&str, &str)> = params.to_vec();
        let basic = match c.auth {
            Auth::Basic => Some((c.id, c.secret.as_deref().unwrap())),
            Auth::Post => {
                form.push(("client_id", c.id));
                form.push(("client_secret", c.secret.as_deref().unwrap()));
                None
            }
            Auth::KeyEs256 | Auth::KeyRs256 => {
                form.push(("client_assertion_type", JWT_BEARER));
                form.push(("client_assertion", assertion.as_deref().unwrap()));
                None
            }
        };
        self.post_form("/token", &form, basic).await
    }

    /// client_credentials for `client_id`, with `scope` and `resource` when given.
    pub async fn client_credentials(
        &self,
        client_id: &str,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> (u16, Value) {
        let mut form = vec![("grant_type", CLIENT_CREDENTIALS)];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        self.token_as(client_id, &form).await
    }

    /// An RFC 7523 client assertion by `client_id`'s key: iss = sub = client id, `aud`,
    /// a new jti, exp = iat + 60, the key's kid in the header.
    pub fn assertion(&self, client_id: &str, aud: &str) -> String {
        let c = self.client(client_id);
        let k = c
            .key
            .as_ref()
            .unwrap_or_else(|| panic!("{client_id} has no key"));
        let t = now();
        let claims = json!({
            "iss": c.id, "sub": c.id, "aud": aud,
            "jti": uuid::Uuid::new_v4().to_string(), "iat": t, "exp": t + 60,
        });
        self.sign_with(k, &claims)
    }

    /// Signs `claims` with a client's key.
    pub fn sign_with(&self, k: &ClientKey, claims: &Value) -> String {
        let key = encoding_key(k.alg, &k.pem);
        let mut header = jsonwebtoken::Header::new(k.alg);
        header.kid = Some(k.kid.clone());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// RFC 7662 introspection of `token` by the resource-server client.
    pub async fn introspect(&self, token: &str) -> Value {
        let (status, body) = self
            .post_form(
                "/token/introspection",
                &[("token", token)],
                Some(INTROSPECTOR),
            )
            .await;
        assert_eq!(status, 200, "introspection: {body}");
        body
    }

    /// The server's signing keys.
    pub async fn jwks(&self) -> Value {
        let r = Client::http1()
            .get(&format!("{}/jwks", self.issuer), &[])
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Verifies a JWT access token this server issued for `resource` (signature, `iss`,
    /// `aud`, `exp`) and returns its claims.
    pub async fn verify_access_token(&self, token: &str, resource: &str) -> Value {
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"), "{header:?}");
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(self.jwks().await).unwrap();
        let jwk = jwks
            .find(header.kid.as_deref().unwrap_or_default())
            .unwrap_or_else(|| panic!("no key {:?} at the server", header.kid));
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[resource]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Value>(token, &key, &v)
            .unwrap_or_else(|e| panic!("the access token does not verify: {e}"))
            .claims
    }
}

// ---------------------------------------------------------------- keygate config

/// The start of a tool's `[tools.credential]` table for `client_id` (provider, token
/// endpoint, client, how it authenticates, grant), with the client's secret or key
/// written under `dir` (the gateway's directory, `secrets/`). The caller adds `scope`,
/// `resource`, `audience` and then any `[tools.credential.operations.*]` tables.
pub fn credential_toml(
    dir: &Path,
    token_endpoint: &str,
    client: &ClientInfo,
    grant: &str,
) -> String {
    let mut t = format!(
        "[tools.credential]\nprovider = \"oauth2\"\ntoken_endpoint = {token_endpoint:?}\n\
         client_id = {:?}\nclient_auth = {:?}\ngrant = {grant:?}\n",
        client.id,
        client.auth.method(),
    );
    if let Some(secret) = &client.secret {
        t.push_str(&super::common::secret_file(
            dir,
            &format!("{}.secret", client.id),
            secret,
        ));
    }
    if let Some(k) = &client.key {
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::write(secrets.join(format!("{}.pem", client.id)), &k.pem).unwrap();
        t.push_str(&format!(
            "client_key_file = \"secrets/{}.pem\"\nclient_key_id = {:?}\n",
            client.id, k.kid
        ));
    }
    t
}

/// The bearer token of an `Authorization: Bearer …` value.
pub fn bearer_token(authorization: &str) -> &str {
    authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer credential: {authorization:?}"))
}
