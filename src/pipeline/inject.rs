//! **inject**: put the credential the tool's provider issues for this agent on the request.
//!
//! The provider's credential replaces any header of the same name (strip already removed
//! the agent's). A provider that cannot issue one fails the request with
//! `credential_unavailable`: nothing is forwarded without keygate's credential.
//!
//! The agent's hop-by-hop headers, and every header its `Connection` names, are removed
//! here, before the credential is set: a `Connection: authorization` from the agent would
//! otherwise make the forwarder remove keygate's own credential.
//!
//! The values set are handed to respond (on the request context, as
//! [`super::respond::Injected`]), which removes them from the response; and the tool is
//! asked for an uncompressed answer (`Accept-Encoding: identity`), which respond can scan.

use super::respond::Injected;
use crate::config::Agent;
use crate::credentials::aws::{AwsCredential, AwsProvider};
use crate::credentials::cache::Served;
use crate::credentials::{CallInfo, Placement};
use crate::error::{Error, ErrorKind};
use crate::telemetry::spans::RequestTrace;
use crate::tools::ToolRuntime;
use http::header::{self, HeaderName, HeaderValue};
use http::Request;
use opentelemetry::KeyValue;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Compiled searches for credential values, by the exact value placed (header name and
/// value, or query value): compiling one costs more than the rest of a request, and a
/// static secret or a reused JWT is the same value call after call. An entry lives at most
/// five minutes, the longest lifetime of a JWT keygate mints; a value minted for one call
/// is compiled for that call and not kept.
type SearchCache = moka::sync::Cache<Box<[u8]>, Arc<Injected>, crate::FastHash>;

fn searches() -> &'static SearchCache {
    static CACHE: OnceLock<SearchCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(300))
            .build_with_hasher(crate::FastHash::default())
    })
}

/// The compiled searches for `Authorization` values, keyed by the value alone (same
/// bounds as [`searches`]).
fn authorization_searches() -> &'static SearchCache {
    static CACHE: OnceLock<SearchCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(300))
            .build_with_hasher(crate::FastHash::default())
    })
}

/// The compiled search for a placed value (`key` spells it exactly): from the cache
/// unless `minted` now.
pub fn search_for(
    key: &[&[u8]],
    minted: bool,
    compile: impl FnOnce() -> Option<Injected>,
) -> Option<Arc<Injected>> {
    if minted {
        return compile().map(Arc::new);
    }
    let key: Box<[u8]> = key.concat().into_boxed_slice();
    searches().optionally_get_with(key, || compile().map(Arc::new))
}

/// What inject put on the request: the provider and the credential's id (for the audit
/// record), and the values respond removes from the response.
#[derive(Debug, Clone, Default)]
pub struct Credential {
    pub provider: Option<&'static str>,
    pub id: Option<Arc<str>>,
    pub injected: Option<Arc<Injected>>,
    /// AWS: the role whose session signed the call (none: keygate's base key).
    pub role: Option<Arc<str>>,
    /// When the credential expires (Unix seconds), for providers that issue ones that do.
    pub expires_unix: Option<u64>,
    /// Whether the provider's cache served it (false: issued for this call).
    pub cached: Option<bool>,
    /// What it was issued for: a token's scope, a GitHub token's repository and
    /// permissions.
    pub scope: Option<Arc<str>>,
}

/// The AWS service and region a call is for, as the agent's SDK signed it.
#[derive(Debug, Clone)]
pub struct AwsTarget {
    pub service: String,
    pub region: String,
}

/// What inject obtained for an AWS call: signed into the request as it leaves
/// ([`sign_aws`], just before forward), so a request held for approval is signed when it
/// is sent, not when it arrived.
pub struct AwsSigning {
    credential: Arc<crate::credentials::cache::Entry<AwsCredential>>,
    target: AwsTarget,
}

/// The AWS service and region of a request, from the agent's own SigV4 signature (made
/// with the key keygate issued it, or with any key when a JWT names the agent); the
/// tool's region when the signature names none.
pub fn aws_target(headers: &http::HeaderMap, default_region: &str) -> Result<AwsTarget, Error> {
    let scope = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::aws::verify::parse_authorization(v).ok());
    match scope {
        Some(h) => Ok(AwsTarget {
            service: h.service.to_string(),
            region: if h.region.is_empty() {
                default_region.to_string()
            } else {
                h.region.to_string()
            },
        }),
        None => Err(Error::new(
            ErrorKind::BadRequest,
            "an AWS call must be signed (SigV4): keygate reads the service and region from the signature; the AWS SDKs and CLI always sign",
        )),
    }
}

/// The IAM actions and resources of an AWS call, for the policies (and, derived again
/// from the request as strip left it, for the session policy: the two must agree). A call
/// whose action keygate cannot tell, or that answers with credentials, is refused.
pub fn aws_scope(
    target: &AwsTarget,
    method: &http::Method,
    forward_path: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
    body: Option<&[u8]>,
) -> Result<crate::policy::AwsScope, Error> {
    aws_action(target, method, forward_path, query, headers, body).map(|a| scope_of(&a))
}

fn aws_action(
    target: &AwsTarget,
    method: &http::Method,
    forward_path: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
    body: Option<&[u8]>,
) -> Result<crate::aws::action::AwsAction, Error> {
    // Path-style addressing: the bucket is in the path (keygate picks the tool by path
    // or by its own host names, never by a bucket's).
    let action = crate::aws::action::action(
        &target.service,
        method,
        forward_path,
        None,
        query,
        headers,
        body,
    )
    .map_err(|why| {
        Error::new(
            ErrorKind::BadRequest,
            format!("keygate cannot tell which AWS action this call is, so it cannot scope a credential to it: {why}"),
        )
    })?;
    if let Some(minting) = crate::aws::action::mints_credentials(&action) {
        return Err(Error::new(
            ErrorKind::Forbidden,
            format!("keygate does not hand AWS credentials to agents: {minting} answers with credentials that would work without keygate"),
        ));
    }
    Ok(action)
}

fn scope_of(a: &crate::aws::action::AwsAction) -> crate::policy::AwsScope {
    let mut scope = crate::policy::AwsScope::default();
    for (action, resources) in a.grants() {
        if !scope.actions.iter().any(|x| x == action) {
            scope.actions.push(action.to_string());
        }
        for r in resources {
            if !scope.resources.contains(r) {
                scope.resources.push(r.clone());
            }
        }
    }
    scope
}

/// inject for an AWS tool: the credentials the provider issues for this agent and this
/// call, scoped by a session policy to the one action the call is (and its resource,
/// where keygate knows it). The request is checked to be signable now, so a request that
/// cannot be sent never asks for an approval.
#[allow(clippy::too_many_arguments)]
pub async fn inject_aws<B>(
    provider: &AwsProvider,
    agent: &Agent,
    task: Option<(&str, i64)>,
    req: &mut Request<B>,
    forward_path: &str,
    query: Option<&str>,
    body: Option<&[u8]>,
    target: AwsTarget,
    decided: Option<&crate::policy::AwsScope>,
    captured: Option<AwsCredential>,
    trace: Option<&mut RequestTrace>,
) -> (Credential, Result<AwsSigning, Error>) {
    let mut credential = Credential {
        provider: Some(if captured.is_some() {
            "captured"
        } else {
            "aws"
        }),
        ..Credential::default()
    };
    crate::http_client::remove_hop_by_hop(req.headers_mut());
    let result = async {
        // Signed chunks cannot be re-signed: refused here, with the SDK setting to change.
        let declared = crate::aws::sign::Payload::from_header(req.headers())
            .map_err(|e| Error::new(ErrorKind::BadRequest, e.0))?;
        if declared.is_none() && body.is_none() {
            if target.service != "s3" {
                return Err(
                    Error::new(ErrorKind::Internal, "an AWS call's body was not read")
                        .with_detail("non-S3 AWS call without its body or x-amz-content-sha256"),
                );
            }
            req.headers_mut().insert(
                crate::aws::sign::CONTENT_SHA256,
                HeaderValue::from_static("UNSIGNED-PAYLOAD"),
            );
        }
        let action = aws_action(
            &target,
            req.method(),
            forward_path,
            query,
            req.headers(),
            body,
        )?;
        // What is signed for is what the policies decided on.
        if decided != Some(&scope_of(&action)) {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "this AWS call is not the one the policies decided on (strip changed what it does)",
            ));
        }
        let unscoped = |why: String| {
            Error::new(
                ErrorKind::BadRequest,
                format!("keygate cannot scope a credential to this AWS call: {why}"),
            )
        };
        // A task's session is good for its calls only until the task ends.
        let policy = crate::aws::action::session_policy(&action, task.map(|(_, ends)| ends))
            .map_err(unscoped)?;
        let actions: Vec<String> = action.grants().map(|(a, _)| a.to_string()).collect();
        let call = crate::credentials::aws::AwsCall {
            actions: &actions,
            policy: &policy,
            task: task.map(|(id, _)| id),
            task_ends_ms: task.map(|(_, ends)| ends),
        };
        // A captured key (its handle signed the call): that key signs it, as it is.
        if let Some(key) = captured {
            return Ok((
                Arc::new(crate::credentials::cache::Entry::uncached(key)),
                Served::Issued,
            ));
        }
        let phase = trace
            .as_ref()
            .map(|_| RequestTrace::begin("keygate.credential"));
        let issued = provider.issue(agent, &call).await;
        let served = issued.as_ref().ok().map(|(_, s)| *s);
        if let (Some(trace), Some(phase)) = (trace, phase) {
            if served != Some(Served::Cached) {
                let mut attrs = vec![KeyValue::new("keygate.credential.provider", "aws")];
                if let Ok((e, _)) = &issued {
                    if let Some(r) = &e.value.role {
                        attrs.push(KeyValue::new("keygate.credential.role", r.to_string()));
                    }
                }
                trace.end_phase(phase, attrs, issued.is_err());
            }
        }
        let (entry, served) = issued.map_err(|e| {
            Error::new(
                ErrorKind::CredentialUnavailable,
                "keygate could not obtain AWS credentials for this call",
            )
            .with_detail(e.reason)
        })?;
        Ok((entry, served))
    }
    .await;
    match result {
        Ok((entry, served)) => {
            credential.id = Some(entry.value.access_key_id.clone());
            credential.role = entry.value.role.clone();
            credential.expires_unix =
                (entry.value.expires_unix != u64::MAX).then_some(entry.value.expires_unix);
            credential.cached = Some(served == Served::Cached);
            (
                credential,
                Ok(AwsSigning {
                    credential: entry,
                    target,
                }),
            )
        }
        Err(e) => (credential, Err(e)),
    }
}

/// Signs an AWS call as it leaves: `uri` is the absolute URI forward sends it to.
pub fn sign_aws<B>(
    req: &mut Request<B>,
    uri: &str,
    host: &HeaderValue,
    body: Option<&[u8]>,
    signing: &AwsSigning,
    now: std::time::SystemTime,
) -> Result<(), Error> {
    let payload = match crate::aws::sign::Payload::from_header(req.headers()) {
        Ok(Some(p)) => p,
        Ok(None) => match body {
            Some(b) => crate::aws::sign::Payload::Bytes(b),
            None => {
                return Err(Error::new(
                    ErrorKind::Internal,
                    "an AWS call's body was not read",
                ))
            }
        },
        Err(e) => return Err(Error::new(ErrorKind::BadRequest, e.0)),
    };
    let method = req.method().clone();
    let headers = req.headers_mut();
    headers.insert(header::HOST, host.clone());
    crate::aws::sign::sign(
        &method,
        uri,
        headers,
        payload,
        &signing.credential.value.signing_key(),
        &signing.target.region,
        &signing.target.service,
        now,
    )
    .map_err(|e| Error::new(ErrorKind::BadRequest, e.0))
}

/// For a call that presents a captured secret's handle in a header: the secret goes where
/// the handle was, and the tool's provider issues nothing for it.
pub fn inject_captured<B>(
    vault: &crate::capture::Vault,
    used: &crate::capture::TokenUse,
    req: &mut Request<B>,
) -> (Credential, Result<(), Error>) {
    let mut credential = Credential {
        provider: Some("captured"),
        id: Some(used.captured.identity_id.as_str().into()),
        ..Credential::default()
    };
    crate::http_client::remove_hop_by_hop(req.headers_mut());
    req.headers_mut().remove(header::RANGE);
    req.headers_mut().remove(header::IF_RANGE);
    match crate::capture::put_token(vault, used, req.headers_mut()) {
        Ok(secret) => {
            credential.injected = Injected::new([secret.bytes()]).map(Arc::new);
            req.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            (credential, Ok(()))
        }
        Err(e) => (credential, Err(e)),
    }
}

/// Sets the credential the tool's provider issues for this call on the request (a
/// header, or a parameter appended to `query`, the query it is forwarded with). The record
/// is returned whether or not a credential could be issued.
pub async fn inject<B>(
    tool: &ToolRuntime,
    call: &CallInfo<'_>,
    req: &mut Request<B>,
    query: &mut Option<String>,
    trace: Option<&mut RequestTrace>,
) -> (Credential, Result<(), Error>) {
    let mut credential = Credential {
        provider: Some(tool.provider.name()),
        ..Credential::default()
    };
    let result = set_credential(tool, call, req, query, trace, &mut credential).await;
    (credential, result)
}

async fn set_credential<B>(
    tool: &ToolRuntime,
    call: &CallInfo<'_>,
    req: &mut Request<B>,
    query: &mut Option<String>,
    trace: Option<&mut RequestTrace>,
    credential: &mut Credential,
) -> Result<(), Error> {
    // Before anything keygate sets: what the agent's `Connection` names goes now, never
    // keygate's credential later.
    crate::http_client::remove_hop_by_hop(req.headers_mut());
    // A range of an answer that echoes keygate's credential could hold a piece of it,
    // which the response search cannot recognise: the tool answers whole.
    req.headers_mut().remove(header::RANGE);
    req.headers_mut().remove(header::IF_RANGE);
    let phase = trace
        .as_ref()
        .map(|_| RequestTrace::begin("keygate.credential"));
    let issued = tool.provider.issue(call).await;
    // A span for a credential minted or issued now (or a failure), not for a static,
    // reused or cached one.
    let worth_a_span = issued
        .as_ref()
        .map_or(true, |i| i.minted || i.cached == Some(false));
    if let (Some(trace), Some(phase), true) = (trace, phase, worth_a_span) {
        let mut attrs = vec![KeyValue::new(
            "keygate.credential.provider",
            tool.provider.name(),
        )];
        if let Ok(i) = &issued {
            if let Some(s) = &i.scope {
                attrs.push(KeyValue::new("keygate.credential.scope", s.to_string()));
            }
        }
        trace.end_phase(phase, attrs, issued.is_err());
    }
    let issued = issued.map_err(|e| {
        let message = match &e.refusal {
            Some(code) => format!(
                "the issuer of tool {:?}'s credentials refused to issue one for this call: {code}",
                &*tool.tool.name
            ),
            None => format!(
                "keygate could not obtain a credential for tool {:?}",
                &*tool.tool.name
            ),
        };
        Error::new(ErrorKind::CredentialUnavailable, message).with_detail(e.reason)
    })?;
    credential.scope = issued.scope;
    credential.expires_unix = issued.expires_unix;
    credential.cached = issued.cached;
    credential.id = Some(issued.id);
    let minted = issued.minted;
    match issued.placement {
        Placement::Header(name, value) if name == header::AUTHORIZATION => {
            // The common case, looked up by the value itself (no key to build).
            credential.injected = if minted {
                injected_header(&name, &value).map(Arc::new)
            } else {
                let cache = authorization_searches();
                match cache.get(value.as_bytes()) {
                    Some(hit) => Some(hit),
                    None => {
                        let compiled = injected_header(&name, &value).map(Arc::new);
                        if let Some(c) = &compiled {
                            cache.insert(value.as_bytes().into(), c.clone());
                        }
                        compiled
                    }
                }
            };
            req.headers_mut().insert(name, value);
        }
        Placement::Header(name, value) => {
            credential.injected = search_for(
                &[name.as_str().as_bytes(), b":", value.as_bytes()],
                minted,
                || injected_header(&name, &value),
            );
            req.headers_mut().insert(name, value);
        }
        Placement::Query { name, encoded } => {
            credential.injected = search_for(&[b"?", encoded.as_bytes()], minted, || {
                let decoded = form_urlencoded::parse(encoded.as_bytes())
                    .next()
                    .map(|(k, _)| k.into_owned())
                    .unwrap_or_default();
                Injected::new([encoded.as_bytes(), decoded.as_bytes()])
            });
            let q = query.get_or_insert_with(String::new);
            if !q.is_empty() {
                q.push('&');
            }
            form_urlencoded::byte_serialize(name.as_bytes()).for_each(|s| q.push_str(s));
            q.push('=');
            q.push_str(&encoded);
        }
    }
    if credential.injected.is_some() {
        // respond cannot scan a compressed body for the credential, and refuses one.
        req.headers_mut().insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    Ok(())
}

/// The secret values of an injected header: the credential after the scheme of an
/// `Authorization` value (`Bearer <token>`, `token <token>`; for `Basic` both the base64
/// and the `user:password` it encodes), the whole value of any other header.
fn injected_header(name: &HeaderName, value: &HeaderValue) -> Option<Injected> {
    use base64::Engine;
    let v = value.as_bytes();
    if name != header::AUTHORIZATION {
        return Injected::new([v]);
    }
    let Some(space) = v.iter().position(|b| *b == b' ') else {
        return Injected::new([v]);
    };
    let (scheme, credential) = (&v[..space], v[space + 1..].trim_ascii());
    if scheme.eq_ignore_ascii_case(b"basic") {
        if let Ok(plain) = base64::engine::general_purpose::STANDARD.decode(credential) {
            // The password alone too (an echo may show user and password apart).
            let password = plain
                .iter()
                .position(|b| *b == b':')
                .map_or(&[][..], |i| &plain[i + 1..]);
            // Not one so short that ordinary text would be overwritten for it.
            let password = if password.len() >= 8 {
                password
            } else {
                &[][..]
            };
            return Injected::new([credential, plain.as_slice(), password]);
        }
    }
    Injected::new([credential])
}
