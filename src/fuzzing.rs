//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their
//! corpora (`tests/fuzz_corpus.rs`): one function per pure parser, each taking arbitrary
//! bytes, calling the parser exactly as the pipeline does, and checking what must hold
//! whatever the input. A violated property panics, which the fuzzer reports as a crash.
//!
//! The targets are thin shims over these functions, so a corpus entry that once crashed
//! the fuzzer is replayed by the ordinary test command forever after.

use crate::catalog::{self, Kind, RequestView};
use crate::pipeline::{classify, mcp};
use crate::secrets;
use crate::telemetry::audit_chain;

/// A fuzz target: arbitrary bytes in, a panic when a property does not hold.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the names of `fuzz/fuzz_targets/*.rs` and of the corpus
/// folders under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("canonical_path", canonical_path),
    ("catalog_classify", catalog_classify),
    ("mcp_message", mcp_message),
    ("secret_scan", secret_scan),
    ("audit_line", audit_line),
    ("aws_request", aws_request),
];

/// The path canonicalizer: its output is canonical (a fixed point), rooted, and has no
/// empty, `.` or `..` segment; what it refuses it refuses for a reason a server could
/// read differently.
pub fn canonical_path(data: &[u8]) {
    // The pipeline canonicalizes origin-form paths, which hyper guarantees start with `/`.
    let Some(path) = std::str::from_utf8(data)
        .ok()
        .filter(|p| p.starts_with('/'))
    else {
        return;
    };
    let Ok(canon) = classify::canonicalize(path) else {
        return;
    };
    assert!(canon.starts_with('/'), "not rooted: {canon:?}");
    let inner = canon.strip_suffix('/').unwrap_or(&canon);
    for seg in inner.split('/').skip(1) {
        assert!(
            !seg.is_empty() && seg != "." && seg != "..",
            "{path:?} -> {canon:?}"
        );
    }
    match classify::canonicalize(&canon) {
        Ok(again) => assert_eq!(again, canon, "not a fixed point: {path:?}"),
        Err(e) => panic!("the canonical form {canon:?} of {path:?} is refused: {e:?}"),
    }
}

/// The catalog: classifying never panics, gives the same answer twice, and a body keygate
/// does not read never changes the answer.
pub fn catalog_classify(data: &[u8]) {
    fn text(b: &[u8]) -> Option<&str> {
        std::str::from_utf8(b).ok()
    }
    let [k, m, rest @ ..] = data else {
        return;
    };
    let kind = Kind::ALL[usize::from(*k) % Kind::ALL.len()];
    const METHODS: [http::Method; 6] = [
        http::Method::GET,
        http::Method::POST,
        http::Method::PUT,
        http::Method::PATCH,
        http::Method::DELETE,
        http::Method::HEAD,
    ];
    let method = &METHODS[usize::from(*m) % METHODS.len()];
    // path \n query \n content type \n body
    let mut parts = rest.splitn(4, |&b| b == b'\n');
    let Some(path) = parts.next().and_then(text).filter(|p| p.starts_with('/')) else {
        return;
    };
    let query = parts.next().and_then(text).filter(|q| !q.is_empty());
    let content_type = parts.next().and_then(text).filter(|c| !c.is_empty());
    let body = parts.next().unwrap_or_default();
    let classify_with = |body: Option<&[u8]>| {
        let v = RequestView {
            method,
            path,
            query,
            content_type,
            body,
        };
        catalog::classify(kind, &v).map(|op| op.name)
    };
    let with_body = classify_with(Some(body));
    assert_eq!(with_body, classify_with(Some(body)), "not deterministic");
    // keygate reads a body only when `needs_body` says the catalog may need it: for any
    // other request the body must not change what the catalog says it is, or a call
    // forwarded unread could be an identity creation classified as something else.
    if !catalog::needs_body(kind, method, path, content_type) {
        assert_eq!(
            with_body,
            classify_with(None),
            "{kind:?} {method} {path}: the body decides, but is not read"
        );
    }
}

/// MCP message parsing: never panics, and what it accepts it reads the same way twice.
pub fn mcp_message(data: &[u8]) {
    let Ok(post) = mcp::parse(data) else {
        return;
    };
    let again = mcp::parse(data).map(|p| p.messages.len());
    assert_eq!(again.ok(), Some(post.messages.len()));
    for m in &post.messages {
        // A message keygate cannot decide is refused; one it decides keeps its method.
        let Ok(call) = mcp::call_of(m) else {
            continue;
        };
        if let Some(method) = &m.method {
            assert_eq!(&call.method, method);
        }
        assert_eq!(mcp::canonical_arguments(m), mcp::canonical_arguments(m));
    }
}

/// The secret scanner: finding one and finding all agree, redaction happens exactly when
/// something is found, and a redacted text keeps no secret the scanner knows.
pub fn secret_scan(data: &[u8]) {
    let first = secrets::find_first(data);
    let all = secrets::find_all(data);
    assert_eq!(first.is_some(), !all.is_empty(), "find_first and find_all");
    match secrets::redact(data) {
        Some((redacted, kinds)) => {
            assert!(
                first.is_some() && !kinds.is_empty(),
                "redacted nothing found"
            );
            assert!(
                secrets::find_first(&redacted).is_none(),
                "a secret is left after redaction: {:?}",
                String::from_utf8_lossy(&redacted)
            );
        }
        None => assert!(first.is_none(), "found but not redacted"),
    }
}

/// The audit chain's line parser: never panics; a line it says is intact hashes to its
/// hash, and appending a record to a chain yields a line the parser reads back intact.
pub fn audit_line(data: &[u8]) {
    if let Ok(link) = audit_chain::parse_line(data) {
        assert_eq!(link.hash_ok, link.computed == link.hash);
    }
    // As the writer chains a record (a compact JSON object without the chain's own
    // members): an intact line out, which the parser reads back intact.
    if let Ok(mut record) =
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data)
    {
        for k in ["seq", "prev", "hash"] {
            record.remove(k);
        }
        let Ok(object) = serde_json::to_vec(&record) else {
            return;
        };
        let mut chain = audit_chain::Chain::new();
        let mut out = Vec::new();
        if chain.append(&object, &mut out).is_ok() {
            let line = out.strip_suffix(b"\n").unwrap_or(&out);
            match audit_chain::parse_line(line) {
                Ok(link) => assert!(link.hash_ok && link.seq == 1, "{link:?}"),
                Err(e) => panic!("a chained line does not parse: {e}"),
            }
        }
    }
}

/// An AWS call as keygate reads it: the `Authorization` value (first line), the method,
/// path and query (next three lines) and the body (the rest). Parsing the SigV4 header
/// never panics and what it accepts is well formed; verifying it against any request never
/// panics and never accepts a signature made by no one; deriving the IAM action never
/// panics, and its session policy is valid JSON that allows only what the action names,
/// never an S3 wildcard for an object the agent named.
pub fn aws_request(data: &[u8]) {
    use crate::aws::{action, verify};
    let mut lines = data.splitn(5, |b| *b == b'\n');
    let auth = lines.next().unwrap_or_default();
    let method = lines.next().unwrap_or_default();
    let path = lines.next().unwrap_or_default();
    let query = lines.next();
    let body = lines.next();
    let Ok(auth) = std::str::from_utf8(auth) else {
        return;
    };
    let parsed = verify::parse_authorization(auth).ok();
    if let Some(h) = &parsed {
        assert!(h.signed_headers.contains(&"host"), "{auth:?}");
        assert_eq!(h.signature.len(), 64, "{auth:?}");
        assert!(
            !h.access_key_id.is_empty() && !h.service.is_empty(),
            "{auth:?}"
        );
    }
    let method = http::Method::from_bytes(method).unwrap_or(http::Method::GET);
    let Some(path) = std::str::from_utf8(path)
        .ok()
        .filter(|p| p.starts_with('/'))
    else {
        return;
    };
    let query = query.and_then(|q| std::str::from_utf8(q).ok());
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::HOST,
        http::HeaderValue::from_static("example.amazonaws.com"),
    );
    headers.insert(
        "x-amz-date",
        http::HeaderValue::from_static("20261204T120000Z"),
    );
    if let Some(h) = &parsed {
        let uri = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        if let Ok(uri) = uri.parse::<http::Uri>() {
            let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_385_600);
            let r = verify::verify(
                h,
                "secret",
                &method,
                &uri,
                &headers,
                "UNSIGNED-PAYLOAD",
                now,
                std::time::Duration::from_secs(300),
            );
            // A signature nobody computed with this secret (the fuzzer cannot).
            assert!(r.is_err(), "{auth:?} verified");
        }
    }
    let service = parsed.as_ref().map_or("s3", |h| h.service);
    let Ok(a) = action::action(service, &method, path, None, query, &headers, body) else {
        return;
    };
    let Ok(policy) = action::session_policy(&a, None) else {
        return;
    };
    let v: serde_json::Value = match serde_json::from_str(&policy) {
        Ok(v) => v,
        Err(e) => panic!("session policy is not JSON: {e}: {policy}"),
    };
    assert!(policy.len() <= action::MAX_SESSION_POLICY, "{policy}");
    let allowed: Vec<&str> = a.grants().map(|(act, _)| act).collect();
    for st in v["Statement"].as_array().into_iter().flatten() {
        assert_eq!(st["Effect"], "Allow", "{policy}");
        let acts: Vec<&str> = match &st["Action"] {
            serde_json::Value::String(s) => vec![s.as_str()],
            serde_json::Value::Array(xs) => xs.iter().filter_map(|x| x.as_str()).collect(),
            other => panic!("Action {other} in {policy}"),
        };
        for act in acts {
            assert!(allowed.contains(&act), "{act} not asked for: {policy}");
            assert!(!act.contains('*'), "{policy}");
        }
    }
    if service == "s3" && a.action != "s3:ListAllMyBuckets" {
        // Every resource is in a bucket the request named: never all of S3. (An object
        // resource may end in `*` only where the policy was widened within its bucket to
        // fit STS's size limit.)
        for st in v["Statement"].as_array().into_iter().flatten() {
            let rs: Vec<&str> = match &st["Resource"] {
                serde_json::Value::String(s) => vec![s.as_str()],
                serde_json::Value::Array(xs) => xs.iter().filter_map(|x| x.as_str()).collect(),
                other => panic!("Resource {other} in {policy}"),
            };
            for r in rs {
                let rest = r
                    .strip_prefix("arn:aws:s3:::")
                    .unwrap_or_else(|| panic!("{policy}"));
                let bucket = rest.split('/').next().unwrap_or_default();
                assert!(!bucket.is_empty() && !bucket.contains('*'), "{policy}");
            }
        }
    }
}
