//! Captured secrets: what an approved identity-creation call returns as the new identity's
//! secret (an AWS `SecretAccessKey`, a GitLab token, a GCP key file…) is sealed in the
//! store and replaced, in the answer the agent gets, by a **handle**.
//!
//! - **Where the secret is**: [`fields`], per catalogued operation (a JSON Pointer or an
//!   AWS Query XML element), and what shape of handle replaces it ([`Shape`]).
//! - **Sealing**: AES-256-GCM (aws-lc-rs) under a key that is never in the database: a
//!   file (generated owner-only on first start, by default `capture.key` in the data
//!   directory) or an environment variable. Earlier keys can be kept to open what they
//!   sealed; `keygate capture rekey` seals everything again under the current key. The
//!   additional data binds each sealed secret to its handle and inventory record, so a
//!   row copied onto another opens to nothing.
//! - **Handles**: for AWS, a key pair of keygate's own (`KGAK…`, registered as an AWS key
//!   of the creating agent: the agent's SDK signs with it, keygate checks the signature and
//!   signs the call again with the captured key); elsewhere `kgh_` and 43 base64url
//!   characters, which the agent presents in a header where the real token would go.
//!   Only a handle's SHA-256 is stored. A handle works for the tool that created it, for
//!   the agent that created it and the agents its owner shares it with.
//! - **In memory**: every active handle's record (sealed) is held in memory, replaced on
//!   change, so a call never waits on the store; the secret is opened per call.

pub use crate::config::KeySource;
use crate::error::{Error, ErrorKind};
pub use crate::store::{CapturedSecret, Sealed, Shape};
use arc_swap::ArcSwap;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use std::collections::HashMap;
use std::sync::Arc;

/// What every token handle starts with.
pub const HANDLE_PREFIX: &str = "kgh_";
/// Characters after the prefix: 32 random bytes, base64url without padding.
const HANDLE_BODY_LEN: usize = 43;

/// Where a catalogued answer carries a secret.
#[derive(Debug, Clone, Copy)]
pub enum At {
    /// A JSON Pointer into the JSON answer.
    Json(&'static str),
    /// The text of the first XML element with this name (AWS Query answers).
    Xml(&'static str),
}

impl At {
    pub fn name(self) -> &'static str {
        match self {
            At::Json(p) | At::Xml(p) => p,
        }
    }
}

/// One secret a catalogued identity-creation answer carries.
#[derive(Debug, Clone, Copy)]
pub struct SecretField {
    pub at: At,
    pub shape: Shape,
}

const fn json(p: &'static str) -> SecretField {
    SecretField {
        at: At::Json(p),
        shape: Shape::Token,
    }
}

const fn xml(tag: &'static str) -> SecretField {
    SecretField {
        at: At::Xml(tag),
        shape: Shape::Token,
    }
}

const AWS_ACCESS_KEY: &[SecretField] = &[SecretField {
    at: At::Xml("SecretAccessKey"),
    shape: Shape::AwsSecretKey,
}];
const TOKEN: &[SecretField] = &[json("/token")];
const SECRET: &[SecretField] = &[json("/secret")];
const CLIENT_SECRET: &[SecretField] = &[json("/client_secret")];
// A response-wrapped answer (`X-Vault-Wrap-TTL`) carries the wrapping token instead.
const VAULT_TOKEN: &[SecretField] = &[json("/auth/client_token"), json("/wrap_info/token")];
const SECRET_ID: &[SecretField] = &[json("/data/secret_id"), json("/wrap_info/token")];
const SECRET_TEXT: &[SecretField] = &[json("/secretText")];
const SERVICE_PASSWORD: &[SecretField] = &[xml("ServicePassword")];

/// Per catalogued operation, the secrets its answer carries. An operation not listed
/// creates an identity without returning a secret (a user, a role, an uploaded public
/// key, a write-only Actions secret).
const RULES: &[(&str, &[SecretField])] = &[
    ("aws:CreateAccessKey", AWS_ACCESS_KEY),
    ("aws:CreateServiceSpecificCredential", SERVICE_PASSWORD),
    ("aws:ResetServiceSpecificCredential", SERVICE_PASSWORD),
    ("aws:CreateKeyPair", &[xml("KeyMaterial")]),
    (
        "aws:GetFederationToken",
        &[xml("SecretAccessKey"), xml("SessionToken")],
    ),
    ("github:create_installation_access_token", TOKEN),
    ("github:create_scoped_access_token", TOKEN),
    ("github:reset_token", TOKEN),
    ("github:create_runner_registration_token", TOKEN),
    (
        "github:generate_runner_jitconfig",
        &[json("/encoded_jit_config")],
    ),
    (
        "github:create_app_from_manifest",
        &[
            json("/client_secret"),
            json("/webhook_secret"),
            json("/pem"),
        ],
    ),
    ("gitlab:create_personal_access_token", TOKEN),
    ("gitlab:rotate_personal_access_token", TOKEN),
    ("gitlab:create_impersonation_token", TOKEN),
    ("gitlab:create_project_access_token", TOKEN),
    ("gitlab:rotate_project_access_token", TOKEN),
    ("gitlab:create_group_access_token", TOKEN),
    ("gitlab:rotate_group_access_token", TOKEN),
    ("gitlab:create_project_deploy_token", TOKEN),
    ("gitlab:create_group_deploy_token", TOKEN),
    ("gitlab:create_pipeline_trigger_token", TOKEN),
    ("gitlab:create_runner", TOKEN),
    ("gitlab:register_runner", TOKEN),
    ("gitlab:create_cluster_agent_token", TOKEN),
    ("gitlab:create_application", SECRET),
    ("gitlab:renew_application_secret", SECRET),
    (
        "gcp:iam.serviceAccounts.keys.create",
        &[json("/privateKeyData")],
    ),
    ("gcp:storage.hmacKeys.create", SECRET),
    (
        "kubernetes:create_serviceaccount_token",
        &[json("/status/token")],
    ),
    ("vault:token.create", VAULT_TOKEN),
    ("vault:token.create_orphan", VAULT_TOKEN),
    ("vault:token.create_with_role", VAULT_TOKEN),
    ("vault:approle.secret_id.create", SECRET_ID),
    ("vault:approle.custom_secret_id.create", SECRET_ID),
    ("msgraph:application.addPassword", SECRET_TEXT),
    ("msgraph:servicePrincipal.addPassword", SECRET_TEXT),
    ("okta:apps.credentials.secrets.create", CLIENT_SECRET),
    ("okta:oauth2.clients.create", CLIENT_SECRET),
    ("okta:oauth2.clients.newSecret", CLIENT_SECRET),
    ("okta:api_services.secrets.create", CLIENT_SECRET),
    ("stripe:ephemeral_keys.create", SECRET),
    ("stripe:terminal.connection_tokens.create", SECRET),
    ("stripe:webhook_endpoints.create", SECRET),
    (
        "stripe:oauth.token",
        &[json("/access_token"), json("/refresh_token")],
    ),
];

/// The secrets the answer of catalogued operation `op` carries (none when it returns none).
pub fn fields(op: &str) -> &'static [SecretField] {
    RULES.iter().find(|(n, _)| *n == op).map_or(&[], |(_, f)| f)
}

/// A new token handle.
pub fn new_token_handle() -> Result<String, Error> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| failed("cannot generate a handle"))?;
    Ok(format!(
        "{HANDLE_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The SHA-256 of a handle (or of a handle key id), in hex: what the store holds.
pub fn fingerprint(handle: &str) -> String {
    crate::pipeline::identify::aws_key::fingerprint(handle)
}

/// The token handles in a header value, as byte ranges.
pub fn find_handles(value: &[u8]) -> Vec<(usize, usize)> {
    let b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(p) = memchr::memmem::find(&value[at..], HANDLE_PREFIX.as_bytes()) {
        let start = at + p;
        let body = start + HANDLE_PREFIX.len();
        let n = value[body..].iter().take_while(|&&b| b64(b)).count();
        let boundary = start == 0 || !b64(value[start - 1]);
        if boundary && n == HANDLE_BODY_LEN {
            found.push((start, body + n));
        }
        at = body + n.max(1).min(value.len() - body);
        if at >= value.len() {
            break;
        }
    }
    found
}

/// Whether a header value holds something that looks like a handle (well-formed or not):
/// such a value never goes to a tool as it is.
pub fn mentions_handle(value: &[u8]) -> bool {
    // Built once: this runs on every header of every request.
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    FINDER
        .get_or_init(|| memchr::memmem::Finder::new(HANDLE_PREFIX.as_bytes()))
        .find(value)
        .is_some()
}

fn failed(why: &str) -> Error {
    Error::new(
        ErrorKind::CaptureFailed,
        "keygate could not keep the secret this call returned; it was not handed out",
    )
    .with_detail(why.to_string())
}

/// The sealing keys: the current one seals, every one listed opens.
pub struct Sealer {
    current: (String, LessSafeKey),
    previous: Vec<(String, LessSafeKey)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("current", &self.current.0)
            .field("previous", &self.previous.len())
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Loads the current key (generating its file when it is one and missing) and the
    /// previous ones.
    pub fn load(current: &KeySource, previous: &[KeySource]) -> Result<Sealer, String> {
        if let KeySource::File(path) = current {
            if !path.exists() {
                let mut bytes = [0u8; 32];
                aws_lc_rs::rand::fill(&mut bytes)
                    .map_err(|_| "cannot generate the capture key".to_string())?;
                crate::private_fs::write(path, const_hex::encode(bytes).as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
        }
        let current = read_key(current)?;
        let previous = previous.iter().map(read_key).collect::<Result<_, _>>()?;
        Ok(Sealer { current, previous })
    }

    /// A sealer over raw keys (tests).
    pub fn from_keys(current: &[u8; 32], previous: &[[u8; 32]]) -> Result<Sealer, String> {
        Ok(Sealer {
            current: key(current)?,
            previous: previous.iter().map(key).collect::<Result<_, _>>()?,
        })
    }

    /// The id of the key that seals now.
    pub fn current_id(&self) -> &str {
        &self.current.0
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| failed("cannot generate a nonce"))?;
        let mut buf = plaintext.to_vec();
        self.current
            .1
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| failed("sealing failed"))?;
        Ok(Sealed {
            key_id: self.current.0.clone(),
            nonce: nonce.to_vec(),
            ciphertext: buf,
        })
    }

    pub fn open(&self, s: &Sealed, aad: &[u8]) -> Result<Secret, Error> {
        let unavailable = |why: &str| {
            Error::new(
                ErrorKind::CaptureFailed,
                "keygate cannot open the secret this handle stands for",
            )
            .with_detail(why.to_string())
        };
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|(id, _)| *id == s.key_id)
            .map(|(_, k)| k)
            .ok_or_else(|| unavailable("sealed under a key keygate was not given"))?;
        let nonce = Nonce::try_assume_unique_for_key(&s.nonce)
            .map_err(|_| unavailable("malformed nonce"))?;
        let mut buf = s.ciphertext.clone();
        let plain = key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| unavailable("the sealed secret does not open"))?;
        let n = plain.len();
        buf.truncate(n);
        Ok(Secret(buf))
    }
}

fn key(bytes: &[u8; 32]) -> Result<(String, LessSafeKey), String> {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &[b"keygate capture key id\n".as_slice(), bytes].concat(),
    );
    let id = const_hex::encode(&d.as_ref()[..8]);
    let k = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| "bad capture key".to_string())?;
    Ok((id, LessSafeKey::new(k)))
}

fn read_key(src: &KeySource) -> Result<(String, LessSafeKey), String> {
    let (text, from) = match src {
        KeySource::File(p) => (
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
            p.display().to_string(),
        ),
        KeySource::Env(v) => (
            std::env::var(v).map_err(|_| format!("the environment variable {v} is not set"))?,
            format!("${v}"),
        ),
    };
    let bytes: [u8; 32] = const_hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{from} does not hold 32 hex-encoded bytes"))?;
    key(&bytes)
}

/// An opened secret: no `Debug` that prints it; zeroed when dropped.
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fill(0);
    }
}

/// What the additional data of a sealed secret is: its handle and inventory record.
pub fn aad(c: &CapturedSecret) -> Vec<u8> {
    format!("keygate captured v1\n{}\n{}", c.handle_hash, c.identity_id).into_bytes()
}

/// The captured secrets, by handle fingerprint, with the sealer that opens them.
pub struct Vault {
    pub sealer: Sealer,
    active: ArcSwap<HashMap<String, Arc<CapturedSecret>>>,
    /// Bumped by every change made here, so that a read of the store that started before
    /// it cannot undo it ([`Vault::set_if_unchanged`]).
    epoch: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("handles", &self.active.load().len())
            .finish_non_exhaustive()
    }
}

impl Vault {
    pub fn new(sealer: Sealer) -> Vault {
        Vault {
            sealer,
            active: ArcSwap::from_pointee(HashMap::new()),
            epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Replaces the active handles with `all`.
    pub fn set(&self, all: Vec<CapturedSecret>) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let map = all
            .into_iter()
            .map(|c| (c.handle_hash.clone(), Arc::new(c)))
            .collect();
        self.active.store(Arc::new(map));
    }

    /// The change counter, read before reading the store for [`Vault::set_if_unchanged`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Replaces the active handles with `all` (read from the store after [`Vault::epoch`]
    /// returned `epoch`), unless something changed here since: then the next read does.
    pub fn set_if_unchanged(&self, all: Vec<CapturedSecret>, epoch: u64) {
        let map: HashMap<String, Arc<CapturedSecret>> = all
            .into_iter()
            .map(|c| (c.handle_hash.clone(), Arc::new(c)))
            .collect();
        let map = Arc::new(map);
        // Swapped only while the counter still says nothing changed.
        self.active.rcu(|cur| {
            if self.epoch() == epoch {
                map.clone()
            } else {
                cur.clone()
            }
        });
    }

    pub fn insert(&self, c: CapturedSecret) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.active.rcu(|m| {
            let mut m = (**m).clone();
            m.insert(c.handle_hash.clone(), Arc::new(c.clone()));
            m
        });
    }

    /// Drops every handle of an inventory record at once.
    pub fn forget_identity(&self, identity_id: &str) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.active.rcu(|m| {
            let mut m = (**m).clone();
            m.retain(|_, c| c.identity_id != identity_id);
            m
        });
    }

    pub fn get(&self, handle_hash: &str) -> Option<Arc<CapturedSecret>> {
        self.active.load().get(handle_hash).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.active.load().is_empty()
    }

    /// Opens a captured secret.
    pub fn open(&self, c: &CapturedSecret) -> Result<Secret, Error> {
        self.sealer.open(&c.sealed, &aad(c))
    }
}

/// The identity-creation answer a capture works on.
pub struct Creation<'a> {
    pub store: &'a dyn crate::store::Store,
    pub vault: &'a Vault,
    pub agent_keys: &'a crate::pipeline::identify::aws_key::AgentKeys,
    pub tool: &'a str,
    pub agent_id: &'a str,
    /// The inventory record the identity was recorded as.
    pub identity_id: &'a str,
    pub now: crate::store::Millis,
}

/// One secret found in an answer, and what replaces it there.
struct Found {
    field: SecretField,
    /// (value as the answer carries it, replacement), secret first.
    swaps: Vec<(String, String)>,
    record: CapturedSecret,
    aws_key: Option<crate::store::AgentKey>,
}

/// Captures the secrets `fields` name in `body` (the tool's answer to an identity-creation
/// call): each is sealed and stored, linked to the inventory record, and replaced in the
/// answer by its handle. Returns the answer the agent gets and how many were captured.
/// Any failure withholds the answer (the secret is never handed out instead).
pub async fn capture(
    c: &Creation<'_>,
    fields: &[SecretField],
    body: &[u8],
) -> Result<(Vec<u8>, usize), Error> {
    let text = std::str::from_utf8(body).map_err(|_| failed("the answer is not UTF-8"))?;
    let json: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let mut found = Vec::new();
    for f in fields {
        let value = match (f.at, &json) {
            (At::Json(p), Some(j)) => j.pointer(p).and_then(|v| v.as_str()).map(str::to_string),
            (At::Json(_), None) => None,
            // An AWS Query API asked for JSON answers with the same names.
            (At::Xml(tag), Some(j)) => json_member(j, tag),
            (At::Xml(tag), None) => crate::catalog::xml_element_text(text, tag),
        };
        match value.filter(|v| !v.is_empty()) {
            Some(value) => found.push(prepare(c, *f, value, text, json.as_ref())?),
            // The answer names the field but keygate could not read its value (another
            // shape: wrapped, nested elsewhere): withheld rather than handed out.
            // A member that is there and null holds no secret (a manifest app without a
            // webhook has `"webhook_secret": null`).
            None if matches!((f.at, &json), (At::Json(p), Some(j)) if j.pointer(p).is_some_and(serde_json::Value::is_null)) =>
                {}
            None if names(text, f.at) => {
                return Err(failed(
                    "the answer names the secret's field in a shape keygate does not read",
                ));
            }
            None => {}
        }
    }
    if found.is_empty() {
        return Ok((body.to_vec(), 0));
    }
    let mut out = text.to_string();
    for f in &found {
        for (from, to) in &f.swaps {
            for form in forms(from) {
                out = out.replace(&form, to);
            }
        }
    }
    // Nothing of a secret is left in what the agent gets.
    for f in &found {
        let secret = &f.swaps[0].0;
        if forms(secret).iter().any(|form| out.contains(form.as_str())) {
            return Err(failed(
                "the secret is still in the answer after replacement",
            ));
        }
    }
    for f in &found {
        c.store
            .record_captured(&f.record, f.aws_key.as_ref())
            .await
            .map_err(|e| failed(&e.to_string()))?;
    }
    let n = found.len();
    for f in found {
        if let Some(k) = &f.aws_key {
            c.agent_keys.add(&k.key_hash, &k.agent_id, true);
        }
        tracing::info!(
            identity = %c.identity_id,
            field = f.field.at.name(),
            "secret captured; the agent got a handle"
        );
        c.vault.insert(f.record);
    }
    Ok((out.into_bytes(), n))
}

/// Whether an answer names a rule's field (as a JSON member `"name"`, or an XML element
/// `<name`): the last segment of a pointer, or the element's name.
fn names(text: &str, at: At) -> bool {
    let name = match at {
        At::Json(p) => p.rsplit('/').next().unwrap_or(p),
        At::Xml(tag) => tag,
    };
    text.contains(&format!("\"{name}\"")) || text.contains(&format!("<{name}"))
}

/// The first string member named `name` at any depth.
fn json_member(v: &serde_json::Value, name: &str) -> Option<String> {
    match v {
        serde_json::Value::Object(m) => m.iter().find_map(|(k, v)| match v {
            serde_json::Value::String(s) if k == name => Some(s.clone()),
            _ => json_member(v, name),
        }),
        serde_json::Value::Array(a) => a.iter().find_map(|v| json_member(v, name)),
        _ => None,
    }
}

/// The forms a value takes in an answer: as is, and JSON-escaped (with `/` also as `\/`).
fn forms(v: &str) -> Vec<String> {
    let mut out = vec![v.to_string()];
    if let Ok(j) = serde_json::to_string(v) {
        let inner = j[1..j.len() - 1].to_string();
        let slashed = inner.replace('/', "\\/");
        for f in [inner, slashed] {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    // XML-escaped (AWS Query answers).
    let xml = v
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    if !out.contains(&xml) {
        out.push(xml);
    }
    out
}

fn prepare(
    c: &Creation<'_>,
    field: SecretField,
    value: String,
    text: &str,
    parsed: Option<&serde_json::Value>,
) -> Result<Found, Error> {
    let mut record = CapturedSecret {
        handle_hash: String::new(),
        identity_id: c.identity_id.to_string(),
        tool: c.tool.to_string(),
        agent_id: c.agent_id.to_string(),
        shared_with: Vec::new(),
        field: field.at.name().to_string(),
        shape: field.shape,
        sealed: Sealed {
            key_id: String::new(),
            nonce: Vec::new(),
            ciphertext: Vec::new(),
        },
        created_at: c.now,
    };
    match field.shape {
        Shape::Token => {
            let handle = new_token_handle()?;
            record.handle_hash = fingerprint(&handle);
            record.sealed = c.vault.sealer.seal(value.as_bytes(), &aad(&record))?;
            Ok(Found {
                field,
                swaps: vec![(value, handle)],
                record,
                aws_key: None,
            })
        }
        Shape::AwsSecretKey => {
            use crate::pipeline::identify::aws_key::AgentKeys;
            let key_id = match parsed {
                Some(j) => json_member(j, "AccessKeyId"),
                None => crate::catalog::xml_element_text(text, "AccessKeyId"),
            }
            .filter(|k| !k.is_empty())
            .ok_or_else(|| failed("an AWS secret key without its access key id"))?;
            let handle_id = AgentKeys::new_id().map_err(|e| failed(&e))?;
            let handle_secret = c.agent_keys.secret_of(&handle_id);
            record.handle_hash = fingerprint(&handle_id);
            let plain = format!("{key_id}\n{value}");
            record.sealed = c.vault.sealer.seal(plain.as_bytes(), &aad(&record))?;
            let aws_key = crate::store::AgentKey {
                key_hash: record.handle_hash.clone(),
                agent_id: c.agent_id.to_string(),
                created_by: format!("capture:{}", c.identity_id),
                created_at: c.now,
                revoked_at: None,
            };
            Ok(Found {
                field,
                swaps: vec![(value, handle_secret), (key_id, handle_id)],
                record,
                aws_key: Some(aws_key),
            })
        }
    }
}

/// An opened AWS key: (access key id, secret access key).
pub fn aws_key_of(secret: &Secret) -> Result<(String, String), Error> {
    let text = std::str::from_utf8(secret.bytes()).map_err(|_| {
        Error::new(
            ErrorKind::CaptureFailed,
            "keygate cannot open the secret this handle stands for",
        )
    })?;
    let (id, key) = text.split_once('\n').ok_or_else(|| {
        Error::new(
            ErrorKind::CaptureFailed,
            "keygate cannot open the secret this handle stands for",
        )
    })?;
    Ok((id.to_string(), key.to_string()))
}

/// A token handle a request presents in a header: the captured secret it stands for, and
/// the header's values (taken off the request; put back with the secret by inject).
pub struct TokenUse {
    pub captured: Arc<CapturedSecret>,
    pub name: http::HeaderName,
    pub values: Vec<http::HeaderValue>,
    /// Which value holds the handle, and where in it.
    pub at: (usize, std::ops::Range<usize>),
}

/// Takes the header that presents a token handle off `headers`, after checking the handle
/// is active and this agent's, for this tool. `None` when no header mentions a handle.
///
/// A handle is accepted only where a credential goes (`credential_header` says which
/// headers: those strip removes as credentials, and the tool's own credential header),
/// as the header's only value, and as the whole value or `<scheme> <handle>` (`Bearer`,
/// `token`, `SSWS`…): nothing else rides along into the tool unchecked, and the agent
/// cannot choose where in a value the real secret lands.
///
/// Refused: a handle keygate does not know (or revoked), one not this agent's or tool's,
/// something handle-like that is not a well-formed handle, a handle in any other header or
/// form, handles in several places.
pub fn take_token_handle(
    vault: &Vault,
    headers: &mut http::HeaderMap,
    agent: &str,
    tool: &str,
    credential_header: impl Fn(&http::HeaderName) -> bool,
) -> Result<Option<TokenUse>, Error> {
    let mut name: Option<&http::HeaderName> = None;
    for (n, v) in headers.iter() {
        if mentions_handle(v.as_bytes()) {
            if name.is_some() {
                return Err(Error::new(
                    ErrorKind::BadRequest,
                    "a request presents one handle, in one header",
                ));
            }
            name = Some(n);
        }
    }
    let Some(name) = name.cloned() else {
        return Ok(None);
    };
    if !credential_header(&name) {
        return Err(Error::new(
            ErrorKind::HandleNotAllowed,
            format!("a handle is accepted only in a credential header of this tool, not in {name}"),
        ));
    }
    let values: Vec<http::HeaderValue> = headers.get_all(&name).iter().cloned().collect();
    let [value] = values.as_slice() else {
        return Err(Error::new(
            ErrorKind::BadRequest,
            format!("the {name} header that presents a handle must have one value"),
        ));
    };
    let b = value.as_bytes();
    let at = match find_handles(b).as_slice() {
        [(start, end)] if *end == b.len() && is_scheme_prefix(&b[..*start]) => *start..*end,
        _ => {
            return Err(Error::new(
                ErrorKind::UnknownHandle,
                format!("the {name} header holds no handle keygate issued, as its whole value or after a scheme"),
            ))
        }
    };
    let handle = std::str::from_utf8(&b[at.clone()]).unwrap_or("");
    let captured = vault.get(&fingerprint(handle)).ok_or_else(|| {
        Error::new(
            ErrorKind::UnknownHandle,
            "keygate issued no such handle, or it was revoked",
        )
    })?;
    check_use(&captured, agent, tool)?;
    headers.remove(&name);
    Ok(Some(TokenUse {
        captured,
        name,
        values,
        at: (0, at),
    }))
}

/// Nothing, or an authentication scheme and one space (`Bearer `, `token `, `SSWS `).
fn is_scheme_prefix(b: &[u8]) -> bool {
    match b.split_last() {
        None => true,
        Some((b' ', scheme)) => !scheme.is_empty() && scheme.iter().all(u8::is_ascii_alphabetic),
        Some(_) => false,
    }
}

/// Puts the header of a [`TokenUse`] back with the real secret where the handle was; the
/// secret (for respond to remove from the answer).
pub fn put_token(
    vault: &Vault,
    use_: &TokenUse,
    headers: &mut http::HeaderMap,
) -> Result<Secret, Error> {
    let secret = vault.open(&use_.captured)?;
    for (i, v) in use_.values.iter().enumerate() {
        if i != use_.at.0 {
            headers.append(use_.name.clone(), v.clone());
            continue;
        }
        let b = v.as_bytes();
        let mut out = Vec::with_capacity(b.len() + secret.bytes().len());
        out.extend_from_slice(&b[..use_.at.1.start]);
        out.extend_from_slice(secret.bytes());
        out.extend_from_slice(&b[use_.at.1.end..]);
        let mut value = http::HeaderValue::from_bytes(&out).map_err(|_| {
            Error::new(
                ErrorKind::CaptureFailed,
                "the captured secret cannot be sent in a header",
            )
        })?;
        out.fill(0);
        value.set_sensitive(true);
        headers.append(use_.name.clone(), value);
    }
    Ok(secret)
}

/// Whether `agent` may use captured secret `c` for a call to `tool`.
pub fn check_use(c: &CapturedSecret, agent: &str, tool: &str) -> Result<(), Error> {
    if c.tool != tool {
        return Err(Error::new(
            ErrorKind::HandleNotAllowed,
            format!(
                "this handle stands for a secret of tool {:?}, not of this one",
                c.tool
            ),
        ));
    }
    if c.agent_id != agent && !c.shared_with.iter().any(|a| a == agent) {
        return Err(Error::new(
            ErrorKind::HandleNotAllowed,
            "this handle is not this agent's: its owner can share it (`keygate inventory share`)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(sealer: &Sealer, secret: &[u8]) -> CapturedSecret {
        let mut c = CapturedSecret {
            handle_hash: fingerprint("kgh_x"),
            identity_id: "inv_1".into(),
            tool: "gitlab".into(),
            agent_id: "a".into(),
            shared_with: vec![],
            field: "/token".into(),
            shape: Shape::Token,
            sealed: Sealed {
                key_id: String::new(),
                nonce: vec![],
                ciphertext: vec![],
            },
            created_at: 1,
        };
        c.sealed = sealer.seal(secret, &aad(&c)).unwrap();
        c
    }

    #[test]
    fn seals_and_opens_and_binds_to_its_record() {
        let s = Sealer::from_keys(&[7; 32], &[]).unwrap();
        let c = captured(&s, b"glpat-realsecret");
        assert!(!c.sealed.ciphertext.windows(6).any(|w| w == b"glpat-"));
        let v = Vault::new(s);
        assert_eq!(v.open(&c).unwrap().bytes(), b"glpat-realsecret");
        // Moved to another record: does not open.
        let mut other = c.clone();
        other.identity_id = "inv_2".into();
        assert_eq!(v.open(&other).unwrap_err().kind, ErrorKind::CaptureFailed);
    }

    #[test]
    fn rotation_opens_with_previous_keys_and_seals_with_the_current() {
        let old = Sealer::from_keys(&[1; 32], &[]).unwrap();
        let c = captured(&old, b"s3cret");
        let new = Sealer::from_keys(&[2; 32], &[[1; 32]]).unwrap();
        assert_ne!(new.current_id(), old.current_id());
        assert_eq!(new.open(&c.sealed, &aad(&c)).unwrap().bytes(), b"s3cret");
        let without = Sealer::from_keys(&[2; 32], &[]).unwrap();
        assert!(without.open(&c.sealed, &aad(&c)).is_err());
    }

    #[test]
    fn finds_handles_at_boundaries_only() {
        let h = new_token_handle().unwrap();
        assert_eq!(h.len(), 4 + 43);
        let v = format!("Bearer {h}");
        assert_eq!(find_handles(v.as_bytes()), vec![(7, 7 + h.len())]);
        assert!(find_handles(format!("x{h}").as_bytes()).is_empty());
        assert!(find_handles(format!("{h}a").as_bytes()).is_empty());
        assert!(find_handles(b"kgh_").is_empty());
        assert!(mentions_handle(b"token kgh_short"));
        assert!(
            is_scheme_prefix(b"") && is_scheme_prefix(b"Bearer ") && is_scheme_prefix(b"token ")
        );
        assert!(
            !is_scheme_prefix(b"glpat-x ")
                && !is_scheme_prefix(b" ")
                && !is_scheme_prefix(b"Bearer")
        );
    }

    async fn creation_env() -> (
        tempfile::TempDir,
        std::sync::Arc<dyn crate::store::Store>,
        String,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open_store(&dir.path().join("k.db"))
            .await
            .unwrap();
        let e = store
            .record_identity(crate::store::NewIdentity {
                kind: "api_token".into(),
                tool: "t".into(),
                operation: "op".into(),
                identifier: None,
                agent_id: "a".into(),
                approver: None,
                owner: "o".into(),
                ticket: None,
                approval_id: None,
                request_id: "r".into(),
                created_at: 1,
                review_by: None,
            })
            .await
            .unwrap();
        (dir, store, e.id)
    }

    async fn run_capture(op: &str, body: &str) -> Result<(String, usize), Error> {
        let (_dir, store, id) = creation_env().await;
        let vault = Vault::new(Sealer::from_keys(&[3; 32], &[]).unwrap());
        let keys = crate::pipeline::identify::aws_key::AgentKeys::from_master(&[4; 32]);
        let c = Creation {
            store: &*store,
            vault: &vault,
            agent_keys: &keys,
            tool: "t",
            agent_id: "a",
            identity_id: &id,
            now: 1,
        };
        capture(&c, fields(op), body.as_bytes())
            .await
            .map(|(b, n)| (String::from_utf8(b).unwrap(), n))
    }

    #[tokio::test]
    async fn answers_in_other_shapes_are_captured_or_withheld() {
        // Vault, response-wrapped: the wrapping token is captured.
        let (out, n) = run_capture(
            "vault:token.create",
            r#"{"wrap_info":{"token":"hvs.CAESIWrappedWrappedWrapped0123","ttl":60}}"#,
        )
        .await
        .unwrap();
        assert_eq!(n, 1);
        assert!(!out.contains("hvs.") && out.contains("kgh_"), "{out}");
        // The field named, its value unreadable (a number): withheld.
        let e = run_capture("vault:token.create", r#"{"auth":{"client_token":12345}}"#)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::CaptureFailed);
        // A null member is no secret; the others are captured.
        let (out, n) = run_capture(
            "github:create_app_from_manifest",
            r#"{"id":1,"client_secret":"cs-0123456789","webhook_secret":null,"pem":"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"}"#,
        )
        .await
        .unwrap();
        assert_eq!(n, 2, "{out}");
        assert!(
            !out.contains("cs-0123456789") && !out.contains("MIIE"),
            "{out}"
        );
        assert!(out.contains(r#""webhook_secret":null"#));
        // An AWS Query API answering in JSON: the same key pair is captured.
        let (out, n) = run_capture(
            "aws:CreateAccessKey",
            r#"{"CreateAccessKeyResponse":{"CreateAccessKeyResult":{"AccessKey":{"UserName":"u","AccessKeyId":"AKIAIOSFODNN7EXAMPLE","Status":"Active","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}}}}"#,
        )
        .await
        .unwrap();
        assert_eq!(n, 1);
        assert!(
            !out.contains("AKIAIOSFODNN7EXAMPLE") && !out.contains("wJalrXUtnFEMI"),
            "{out}"
        );
        assert!(out.contains("KGAK"), "{out}");
        // No rule's field named at all: nothing to capture, the answer as it was.
        let (out, n) = run_capture("gitlab:create_project_access_token", r#"{"id":3}"#)
            .await
            .unwrap();
        assert_eq!((out.as_str(), n), (r#"{"id":3}"#, 0));
    }

    #[test]
    fn every_field_rule_names_a_catalogued_operation() {
        let names: Vec<&str> = crate::catalog::Kind::ALL
            .iter()
            .flat_map(|k| crate::catalog::operations(*k))
            .map(|o| o.name)
            .collect();
        for n in [
            "aws:CreateAccessKey",
            "gitlab:create_project_access_token",
            "github:create_installation_access_token",
            "gcp:iam.serviceAccounts.keys.create",
            "vault:token.create",
            "okta:oauth2.clients.newSecret",
        ] {
            assert!(names.contains(&n), "{n}");
            assert!(!fields(n).is_empty(), "{n}");
        }
        // Every operation with a rule exists (a typo would silently capture nothing).
        for (n, _) in RULES {
            assert!(names.contains(n), "{n} is not in the catalog");
        }
    }
}
