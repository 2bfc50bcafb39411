//! **strip**: remove every credential the agent sent, then make sure no known secret
//! format is left in what will be forwarded.
//!
//! Always removed: `Authorization`, `Proxy-Authorization`, `Cookie`, `X-Api-Key`, and the
//! query parameters `access_token`, `api_key`, `apikey` and `client_secret`; on a tool of
//! a catalogued kind, the ways that kind's API takes a credential (GitLab `PRIVATE-TOKEN`,
//! `JOB-TOKEN`, `private_token=`, `job_token=`; Vault `X-Vault-Token`; GCP
//! `X-Goog-Api-Key`, `key=`; AWS `X-Amz-Security-Token` and a presigned URL's `X-Amz-*`
//! parameters: catalog::credential_headers, catalog::credential_query); plus every
//! header and query parameter the tool names. Then the path, the remaining headers, the
//! query values and a text body (read up to the tool's body limit) are scanned for known
//! secret formats: a hit is refused with `secret_in_request`, or redacted where the tool
//! says `on_secret = "redact"` (a secret in the path or in a header name is always
//! refused: redacting it would send the call somewhere else). Only names of what was
//! removed are recorded.

use super::body::Counted;
use crate::config::file::OnSecret;
use crate::config::Tool;
use crate::error::{BoxError, Error, ErrorKind, ProxyBody};
use crate::secrets;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::Request;
use http_body_util::{BodyExt, Limited};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Headers that carry the agent's own credentials, removed from every request.
pub const ALWAYS_STRIPPED_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-api-key"),
];

/// Headers that ask a server to act as if the method were another: removed, so the tool
/// sees the method policies authorized.
pub const METHOD_OVERRIDE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// Query parameters that carry credentials by convention, removed from every request.
pub const ALWAYS_STRIPPED_QUERY: [&str; 4] = ["access_token", "api_key", "apikey", "client_secret"];

/// `header:<name>`, the audit record's name for a stripped header (static for the
/// headers stripped from every request).
fn stripped_label(name: &HeaderName) -> Cow<'static, str> {
    const ALWAYS: [&str; 7] = [
        "header:authorization",
        "header:proxy-authorization",
        "header:cookie",
        "header:x-api-key",
        "header:x-http-method-override",
        "header:x-http-method",
        "header:x-method-override",
    ];
    ALWAYS
        .iter()
        .find(|l| &l["header:".len()..] == name.as_str())
        .map(|l| Cow::Borrowed(*l))
        .unwrap_or_else(|| Cow::Owned(format!("header:{name}")))
}

fn secret_error(kind: secrets::SecretKind, place: &str) -> Error {
    Error::new(
        ErrorKind::SecretInRequest,
        format!(
            "the request carries a secret ({}) in its {place}; keygate injects the tool's credential, so send none",
            kind.as_str()
        ),
    )
}

/// How a request body is read: within the tool's limit and this time, counted into
/// `bytes_in` (the audit record's `bytes_in`).
pub struct BodyRead<'a> {
    pub timeout: Duration,
    pub bytes_in: &'a Arc<AtomicU64>,
}

/// The request as strip leaves it: ready to forward, with its body (when it was read
/// whole, as it will be forwarded) and the query it is forwarded with.
pub struct Stripped {
    pub request: Request<ProxyBody>,
    pub body: Option<Bytes>,
    pub query: Option<String>,
}

/// Runs the strip phase on a request to `tool` forwarded to `forward_path`. The names of
/// what it removes or redacts ("header:cookie", "query:api_key",
/// "body:aws_access_key_id:redacted") go to `removed`, kept for the audit record even when
/// strip then refuses the request. The body may have been read already (classify and authorize
/// read it when they need it); a body that decided the operation (`body_decides`) is
/// refused if it holds a secret, never rewritten.
#[allow(clippy::too_many_arguments)]
pub async fn strip<B>(
    tool: &Tool,
    forward_path: &str,
    mut parts: http::request::Parts,
    body: RequestBody<B>,
    body_decides: bool,
    read: &BodyRead<'_>,
    removed: &mut Vec<Cow<'static, str>>,
) -> Result<Stripped, Error>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let t = tool;
    let redact = t.on_secret == OnSecret::Redact;
    let mut query: Option<String> = None;

    // Credentials the agent sent.
    // One pass over the headers present (a few) instead of a lookup per stripped name.
    let strip_now: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|k| {
            ALWAYS_STRIPPED_HEADERS.contains(k)
                || METHOD_OVERRIDE_HEADERS.contains(k)
                || t.strip_headers.contains(k)
                || crate::catalog::credential_headers(t.kind).contains(&k.as_str())
        })
        .cloned()
        .collect();
    for name in strip_now {
        parts.headers.remove(&name);
        removed.push(stripped_label(&name));
    }

    // The path: percent-decoded, so an encoded secret is found too (`+` as a space, as
    // some servers read it: a secret is found whichever way the tool reads the path).
    let decoded_path = crate::percent::decode_plus(forward_path.as_bytes());
    if let Some(f) = secrets::find_first(&decoded_path) {
        // The audit record redacts the path (audit::recorded_path).
        return Err(secret_error(f.kind, "path"));
    }

    // The query.
    if let Some(q) = parts.uri.query() {
        query = strip_query(removed, t, q, redact)?;
    }

    // Remaining headers. A secret used as a header name is refused in either mode:
    // redacting the name would forward a header the tool cannot understand.
    let mut redacted = Vec::new();
    for name in parts.headers.keys() {
        if let Some(f) = secrets::find_first(name.as_str().as_bytes()) {
            return Err(secret_error(f.kind, "header names"));
        }
    }
    for (name, value) in parts.headers.iter() {
        if let Some(f) = secrets::find_first(value.as_bytes()) {
            if !redact {
                return Err(secret_error(f.kind, &format!("{name} header")));
            }
            redacted.push(name.clone());
        }
    }
    for name in redacted {
        let values: Vec<HeaderValue> = parts
            .headers
            .get_all(&name)
            .iter()
            .map(|v| match secrets::redact(v.as_bytes()) {
                Some((r, _)) => HeaderValue::from_bytes(&r).unwrap_or(HeaderValue::from_static("")),
                None => v.clone(),
            })
            .collect();
        parts.headers.remove(&name);
        for v in values {
            parts.headers.append(name.clone(), v);
        }
        removed.push(Cow::Owned(format!("header:{name}:redacted")));
    }

    // The body. An AWS body without a content type is an S3 object (S3 stores it as
    // `binary/octet-stream`; every other AWS API names its type): streamed, not read.
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    let text = if content_type.is_none() && t.kind == crate::catalog::Kind::Aws {
        false
    } else {
        is_text(content_type)
    };
    // `aws-chunked` is AWS's framing of a streamed upload, not a compression: the text in
    // its chunks is scanned as it is.
    let encoded = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| {
            let framing_only = v.as_bytes().eq_ignore_ascii_case(b"identity")
                || (t.kind == crate::catalog::Kind::Aws
                    && v.as_bytes().eq_ignore_ascii_case(b"aws-chunked"));
            !framing_only
        });
    let collected = match body {
        RequestBody::Read(bytes) => bytes,
        RequestBody::Unread(body) => {
            if body.is_end_stream() || declared_length(&parts.headers) == Some(0) {
                return Ok(Stripped {
                    request: Request::from_parts(parts, crate::error::full_body(Bytes::new())),
                    body: Some(Bytes::new()),
                    query,
                });
            }
            if declared_length(&parts.headers).is_some_and(|n| n > t.max_body_bytes) {
                return Err(too_large(t.max_body_bytes));
            }
            if !text {
                // Binary bodies are streamed, within the limit, unscanned.
                let counted = Counted::new(body, read.bytes_in.clone(), t.max_body_bytes);
                return Ok(Stripped {
                    request: Request::from_parts(parts, counted.boxed()),
                    body: None,
                    query,
                });
            }
            if encoded {
                return Err(unscannable());
            }
            read_all(read, t.max_body_bytes, &parts.headers, body).await?
        }
    };
    if !text || collected.is_empty() {
        return Ok(Stripped {
            request: Request::from_parts(parts, crate::error::full_body(collected.clone())),
            body: Some(collected),
            query,
        });
    }
    if encoded {
        return Err(unscannable());
    }
    let form = parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    });
    let found = secrets::find_first(&collected).or_else(|| {
        // A form body can hide a secret behind percent-encoding.
        form.then(|| secrets::find_first(&crate::percent::decode_plus(&collected)))
            .flatten()
    });
    let body = match found {
        None => collected,
        // A body that decided the operation or the MCP calls is refused, never rewritten:
        // redaction could make the tool read another call than the one authorized.
        Some(f) if !redact || body_decides => return Err(secret_error(f.kind, "body")),
        Some(_) => {
            // Kinds redacted from the decoded form, so the audit names them too.
            let mut form_kinds = Vec::new();
            let source: Vec<u8> = if form && secrets::find_first(&collected).is_none() {
                // Only visible decoded: redact the decoded form, re-encoded.
                let pairs: Vec<(String, String)> = form_urlencoded::parse(&collected)
                    .map(|(k, v)| {
                        let v = match secrets::redact(v.as_bytes()) {
                            Some((r, found)) => {
                                form_kinds.extend(found);
                                String::from_utf8_lossy(&r).into_owned()
                            }
                            None => v.into_owned(),
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish()
                    .into_bytes()
            } else {
                collected.to_vec()
            };
            let (out, kinds) = secrets::redact(&source).unwrap_or((source, Vec::new()));
            for k in form_kinds.into_iter().chain(kinds) {
                removed.push(Cow::Owned(format!("body:{}:redacted", k.as_str())));
            }
            Bytes::from(out)
        }
    };
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(Stripped {
        request: Request::from_parts(parts, crate::error::full_body(body.clone())),
        body: Some(body),
        query,
    })
}

fn unscannable() -> Error {
    // A compressed text body cannot be scanned; forwarding it unscanned would let a
    // secret through, so it is refused.
    Error::new(
        ErrorKind::UnscannableBody,
        "a compressed text body cannot be scanned for secrets; send it uncompressed",
    )
}

fn declared_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a whole request body, within `limit` bytes and `timeout`.
pub async fn read_all<B>(
    read: &BodyRead<'_>,
    limit: u64,
    headers: &http::HeaderMap,
    body: B,
) -> Result<Bytes, Error>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let collected = match tokio::time::timeout(read.timeout, limited.collect()).await {
        Err(_) => {
            return Err(Error::new(
                ErrorKind::BodyTimeout,
                "the request body did not arrive in time",
            ))
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large(limit));
            }
            return Err(
                Error::new(ErrorKind::BadRequest, "the request body could not be read")
                    .with_detail(e.to_string()),
            );
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    read.bytes_in
        .store(collected.len() as u64, Ordering::Relaxed);
    Ok(collected)
}

/// A request body, before or after keygate read it.
pub enum RequestBody<B> {
    Unread(B),
    Read(Bytes),
}

impl<B> RequestBody<B>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// The whole body: read now (within `limit`) unless it was already.
    pub async fn read(
        self,
        read: &BodyRead<'_>,
        limit: u64,
        headers: &http::HeaderMap,
    ) -> Result<Bytes, Error> {
        match self {
            RequestBody::Read(b) => Ok(b),
            RequestBody::Unread(b) => read_all(read, limit, headers, b).await,
        }
    }

    /// The body, if it was read.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            RequestBody::Read(b) => Some(b),
            RequestBody::Unread(_) => None,
        }
    }
}

fn too_large(limit: u64) -> Error {
    Error::new(
        ErrorKind::BodyTooLarge,
        format!("the request body is larger than this tool's limit of {limit} bytes"),
    )
}

/// The query with stripped parameters removed and secrets handled; `None` when nothing
/// is left. Returns the original text when nothing changed.
fn strip_query(
    removed: &mut Vec<Cow<'static, str>>,
    t: &crate::config::Tool,
    query: &str,
    redact: bool,
) -> Result<Option<String>, Error> {
    let named = |k: &str| {
        ALWAYS_STRIPPED_QUERY
            .iter()
            .any(|s| s.eq_ignore_ascii_case(k))
            || t.strip_query.iter().any(|s| s.eq_ignore_ascii_case(k))
            || crate::catalog::credential_query(t.kind).iter().any(|s| s.eq_ignore_ascii_case(k))
            // The agent's own value for the parameter keygate injects.
            || matches!(&t.credential.inject, crate::config::Injection::Query(n) if n.eq_ignore_ascii_case(k))
    };
    let mut changed = false;
    let mut kept: Vec<(Cow<str>, Cow<str>)> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if named(&k) {
            removed.push(Cow::Owned(format!("query:{k}")));
            changed = true;
            continue;
        }
        let hit = secrets::find_first(v.as_bytes()).or_else(|| secrets::find_first(k.as_bytes()));
        match hit {
            None => kept.push((k, v)),
            // The name itself may be the secret (`?<secret>`): never echo or keep it.
            Some(f) if !redact => {
                let place = match secrets::find_first(k.as_bytes()) {
                    Some(_) => "query".to_string(),
                    None => format!("query parameter {k:?}"),
                };
                return Err(secret_error(f.kind, &place));
            }
            Some(_) => {
                let redacted = |s: &str| {
                    secrets::redact(s.as_bytes())
                        .map(|(r, _)| String::from_utf8_lossy(&r).into_owned())
                        .unwrap_or_else(|| s.to_string())
                };
                let (rk, rv) = (redacted(&k), redacted(&v));
                removed.push(Cow::Owned(format!("query:{rk}:redacted")));
                changed = true;
                kept.push((Cow::Owned(rk), Cow::Owned(rv)));
            }
        }
    }
    if !changed {
        return Ok(Some(query.to_string()));
    }
    if kept.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(kept)
            .finish(),
    ))
}

/// Whether a body of this content type is text that keygate scans. A body with no
/// content type is treated as text: when in doubt, scan.
fn is_text(ct: Option<&HeaderValue>) -> bool {
    let Some(ct) = ct.and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/")
        || mime.starts_with("application/x-amz-json")
        || mime.ends_with("+json")
        || mime.ends_with("+xml")
        || matches!(
            mime.as_str(),
            "application/json"
                | "application/x-www-form-urlencoded"
                | "application/xml"
                | "application/x-ndjson"
                | "application/jsonl"
                | "application/graphql"
                | "application/javascript"
                | "application/yaml"
                | "application/x-yaml"
                | "multipart/form-data"
                | "multipart/mixed"
                | ""
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        let percent_decode = crate::percent::decode_plus;
        assert_eq!(&*percent_decode(b"a%41b+c"), b"aAb c");
        assert_eq!(&*percent_decode(b"100%"), b"100%");
        assert_eq!(&*percent_decode(b"%4"), b"%4");
        assert_eq!(&*percent_decode(b"%zz"), b"%zz");
    }

    #[test]
    fn text_types() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(is_text(None));
        assert!(is_text(Some(&v("application/json; charset=utf-8"))));
        assert!(is_text(Some(&v("application/vnd.github+json"))));
        assert!(is_text(Some(&v("text/plain"))));
        assert!(!is_text(Some(&v("application/octet-stream"))));
        assert!(!is_text(Some(&v("image/png"))));
    }
}
