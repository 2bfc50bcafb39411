//! **classify**: which tool a request is for, and which operation it is.
//!
//! The path is made canonical first (dot segments resolved, repeated slashes collapsed,
//! percent-encoded unreserved characters decoded); a path different servers could read
//! differently (an encoded slash or dot, NUL, a backslash) is refused. keygate matches
//! and forwards the canonical path, so what policies see is what the tool gets.
//!
//! Tool: one function of (host, path), so a later forward-proxy listener (tool chosen by
//! target host) feeds the same pipeline. A Host that names a tool wins, and the whole path
//! is forwarded; otherwise `/tools/<name>/rest` selects the tool `<name>` and `/rest` is
//! forwarded.
//!
//! Operation: the identity-creation catalog of the tool's kind first (it cannot be
//! shadowed), then the tool's own routes, then `read` (GET, HEAD, OPTIONS) or `write`.

use crate::config::{Operations, Tool};
use crate::error::{Error, ErrorKind};
use crate::routes::Operation;
use crate::tools::{ToolRuntime, ToolSet};
use std::borrow::Cow;
use std::sync::Arc;

/// Where a request goes.
pub enum Route {
    /// To a tool.
    Tool(ToolRoute),
    /// keygate's own public keys.
    Jwks,
    /// keygate's own endpoints for agents and tools (`/.keygate/…`: tasks, introspection).
    Keygate,
    /// Nothing matches.
    Unknown,
}

/// A tool, with the path to forward (the upstream base path included) and the path
/// relative to the tool (what route templates match).
pub struct ToolRoute {
    pub tool: Arc<ToolRuntime>,
    pub forward_path: String,
    pub tool_path: String,
}

/// The prefix of path-selected tools.
pub const TOOLS_PREFIX: &str = "/tools/";
/// keygate's own endpoints for agents and tools.
pub const KEYGATE_PREFIX: &str = "/.keygate/";
/// Where keygate publishes the keys of the JWTs it mints.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Selects the route for a request's host and canonical path.
pub fn route(tools: &ToolSet, host: Option<&str>, path: &str) -> Route {
    if let Some(r) = host.and_then(|h| route_host(tools, h, path)) {
        return Route::Tool(r);
    }
    if path == JWKS_PATH {
        return Route::Jwks;
    }
    if path.starts_with(KEYGATE_PREFIX) {
        return Route::Keygate;
    }
    if let Some(rest) = path.strip_prefix(TOOLS_PREFIX) {
        let (name, rest) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if let Some(t) = tools.by_name.get(name) {
            if t.tool.path_prefix {
                let rest = if rest.is_empty() { "/" } else { rest };
                return Route::Tool(ToolRoute {
                    tool: t.clone(),
                    forward_path: join(&t.tool.upstream.base_path, rest),
                    tool_path: rest.to_string(),
                });
            }
        }
    }
    Route::Unknown
}

/// The tool whose `hosts` name `host` (a port is ignored), by path prefix where several
/// tools share the host, with the whole path forwarded.
pub fn route_host(tools: &ToolSet, host: &str, path: &str) -> Option<ToolRoute> {
    // A Host with user info (`api.github.com:@evil.example`) names another host than its
    // first part: it selects no tool.
    if host.contains('@') {
        return None;
    }
    let host = strip_port(host);
    let tools = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        tools.by_host.get(host.to_ascii_lowercase().as_str())
    } else {
        tools.by_host.get(host)
    }?;
    let tool = tools.tool_for(path)?;
    Some(ToolRoute {
        tool: tool.clone(),
        forward_path: join(&tool.tool.upstream.base_path, path),
        tool_path: path.to_string(),
    })
}

/// In a forward-proxy tunnel for `tunnel_host`: a request addressed to another host
/// (`Host`, `:authority`, an absolute URI) is refused, so a tunnel opened for one tool
/// never reaches another.
pub fn check_tunnel_host(tunnel_host: &str, addressed: Option<&str>) -> Result<(), Error> {
    let Some(addressed) = addressed else {
        return Ok(());
    };
    // Read as an authority: no user info (`api.github.com:@evil.example` names
    // evil.example), a numeric port if any, and then the host exactly.
    let same = addressed
        .parse::<http::uri::Authority>()
        .ok()
        .filter(|a| !a.as_str().contains('@'))
        .filter(|a| {
            a.as_str()
                .rsplit_once(':')
                .is_none_or(|(_, p)| a.as_str().ends_with(']') || p.parse::<u16>().is_ok())
        })
        .is_some_and(|a| a.host().eq_ignore_ascii_case(tunnel_host));
    if same {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::MisdirectedRequest,
            format!("this tunnel is for {tunnel_host}; open a tunnel to the host you address"),
        ))
    }
}

/// The tool a request is for; none is `unknown_tool` (after identify, so an unknown
/// agent learns nothing of which tools exist).
pub fn tool(routed: Option<ToolRoute>) -> Result<ToolRoute, Error> {
    routed.ok_or_else(|| {
        Error::new(
            ErrorKind::UnknownTool,
            "no tool matches this request; call a tool as /tools/<name>/… or through its host",
        )
    })
}

/// Whether the request POSTs MCP messages (each decided on its own). An MCP tool takes
/// POST, GET and DELETE only (as spelled); GET and DELETE are the protocol (`read`).
pub fn is_mcp_post(tool: &Tool, method: &http::Method) -> Result<bool, Error> {
    if tool.protocol != crate::config::Protocol::Mcp {
        return Ok(false);
    }
    super::mcp::check_http_method(method)?;
    Ok(method == http::Method::POST)
}

/// What the operation depends on.
pub struct RequestFacts<'a> {
    pub method: &'a http::Method,
    /// Canonical path relative to the tool.
    pub tool_path: &'a str,
    /// Canonical path as forwarded (base path included).
    pub forward_path: &'a str,
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: Option<&'a [u8]>,
    /// `X-Amz-Target` (AWS JSON protocol), which names the action outside query and body.
    pub amz_target: Option<&'a str>,
}

/// Whether the operation may depend on the body, which must then be read first.
pub fn needs_body(tool: &Tool, f: &RequestFacts) -> bool {
    (tool.protocol == crate::config::Protocol::Mcp && *f.method == http::Method::POST)
        || crate::catalog::needs_body(tool.kind, f.method, f.forward_path, f.content_type)
}

/// Refuses `TRACE` for every tool, before anything is forwarded: a server answers it with
/// the request it received, which would hand the agent the credential keygate injects.
pub fn check_method(method: &http::Method) -> Result<(), Error> {
    if method == http::Method::TRACE {
        return Err(Error::new(
            ErrorKind::MethodNotAllowed,
            "keygate does not forward TRACE, which would echo the credential it adds",
        ));
    }
    Ok(())
}

/// The operation of a request to a tool.
pub fn operation(ops: &Operations, tool: &Tool, f: &RequestFacts) -> Arc<Operation> {
    let view = crate::catalog::RequestView {
        method: f.method,
        path: f.forward_path,
        query: f.query,
        content_type: f.content_type,
        body: f.body,
    };
    // An MCP tool's GET (the server's stream) and DELETE (ending a session) are transport
    // plumbing: its POSTs carry the calls, decided one by one.
    if tool.protocol == crate::config::Protocol::Mcp {
        return ops.read.clone();
    }
    let from_request = crate::catalog::classify(tool.kind, &view);
    // AWS JSON protocol: `X-Amz-Target: <Service>.<Action>`, classified as if the action
    // were a Query action, so a dangerous action cannot hide in a header; and looked at
    // whatever the query or body said, so an `Action` in the body cannot hide it either
    // (an identity-creating one wins, as among several `Action`s).
    let from_target = (tool.kind == crate::catalog::Kind::Aws)
        .then(|| f.amz_target.and_then(|t| t.rsplit('.').next()))
        .flatten()
        .and_then(|action| {
            let query = format!(
                "Action={}",
                form_urlencoded::byte_serialize(action.as_bytes()).collect::<String>()
            );
            let view = crate::catalog::RequestView {
                query: Some(&query),
                body: None,
                ..view
            };
            crate::catalog::classify(tool.kind, &view)
        });
    let catalogued = match (from_request, from_target) {
        (Some(r), Some(t)) if t.identity_kind.is_some() && r.identity_kind.is_none() => Some(t),
        (r, t) => r.or(t),
    };
    if let Some(op) = catalogued.and_then(|c| ops.of_catalog(c)) {
        return op.clone();
    }
    if let Some(op) = tool.routes.lookup(f.method, f.tool_path) {
        return op.clone();
    }
    use http::Method;
    if matches!(*f.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        ops.read.clone()
    } else {
        ops.write.clone()
    }
}

fn ambiguous(what: &str) -> Error {
    Error::new(
        ErrorKind::AmbiguousPath,
        format!(
            "the request path contains {what}, which servers may read differently; send it plainly"
        ),
    )
}

/// The canonical form of a request path (RFC 3986 §6.2.2): percent-encoded unreserved
/// characters decoded, other escapes upper-cased, repeated slashes collapsed, `.` and
/// `..` segments resolved (never above the root). Refused as ambiguous: an encoded slash,
/// dot or backslash, a NUL (raw or encoded), a raw backslash — each of which some servers
/// treat as a separator or a dot segment and others do not.
pub fn canonicalize(path: &str) -> Result<Cow<'_, str>, Error> {
    let b = path.as_bytes();
    // `*` (asterisk-form, `OPTIONS *`, or HTTP/2's `:path: *`) and anything else that is
    // not a path: nothing a tool's routes or policies were written for.
    if b.first() != Some(&b'/') {
        return Err(ambiguous("no leading slash"));
    }
    // `..;x` is `..` to servers that drop `;` parameters (Tomcat, Jetty, Spring).
    if memchr::memchr(b';', b).is_some()
        && path
            .split('/')
            .map(|s| s.split(';').next().unwrap_or(s))
            .zip(path.split('/'))
            .any(|(bare, s)| bare != s && (bare == "." || bare == ".."))
    {
        return Err(ambiguous("a dot segment with `;` parameters"));
    }
    if b.contains(&0) {
        return Err(ambiguous("a NUL byte"));
    }
    if b.contains(&b'\\') {
        return Err(ambiguous("a backslash"));
    }
    let plain = !b.contains(&b'%')
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..");
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    // Decode what may be decoded.
    use crate::percent::{Malformed, Piece};
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    for piece in crate::percent::escapes(b) {
        match piece {
            Err(Malformed) => return Err(ambiguous("a malformed percent-encoding")),
            Ok(Piece::Plain(run)) => decoded.extend_from_slice(run),
            Ok(Piece::Escaped(c)) => match c {
                0 => return Err(ambiguous("an encoded NUL")),
                b'/' => return Err(ambiguous("an encoded slash")),
                b'.' => return Err(ambiguous("an encoded dot")),
                b'\\' => return Err(ambiguous("an encoded backslash")),
                c if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'~' => {
                    decoded.push(c)
                }
                // Kept encoded, as `%XX` in upper case.
                c => {
                    let upper = percent_encoding::percent_encode_byte(c);
                    decoded.extend_from_slice(upper.as_bytes())
                }
            },
        }
    }
    let decoded = String::from_utf8_lossy(&decoded);
    // Resolve dot segments and empty segments.
    let trailing = decoded.ends_with('/') && decoded.len() > 1;
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut canon = String::with_capacity(decoded.len());
    for seg in &out {
        canon.push('/');
        canon.push_str(seg);
    }
    if canon.is_empty() || (trailing && !canon.ends_with('/')) {
        canon.push('/');
    }
    Ok(Cow::Owned(canon))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split(']')
            .next()
            .map(|h| &host[..h.len() + 1])
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

fn join(base: &str, rest: &str) -> String {
    let mut s = String::with_capacity(base.len() + rest.len());
    s.push_str(base);
    s.push_str(rest);
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Refuses framing that a server and a tool might read differently (request smuggling):
/// Content-Length together with Transfer-Encoding, or Content-Length given twice.
///
/// Defence in depth: over HTTP/1.1 hyper already resolves these before the request gets
/// here (RFC 9112 §6.3: with Transfer-Encoding it drops Content-Length, reads the body as
/// chunked and closes the connection after the response; identical duplicate lengths are
/// folded into one; differing ones are refused with a bare 400). keygate forwards its own
/// framing either way (strip re-frames read bodies; hop-by-hop headers are removed).
///
/// An HTTP/1.1 request without `Host` is refused (RFC 9112 §3.2: a server must answer it
/// 400): keygate picks tools by host, and would otherwise guess.
pub fn check_framing<B>(req: &http::Request<B>) -> Result<(), Error> {
    let h = req.headers();
    if req.version() == http::Version::HTTP_11 && !h.contains_key(http::header::HOST) {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "an HTTP/1.1 request must name its host in a Host header",
        ));
    }
    let lengths = h.get_all(http::header::CONTENT_LENGTH).iter().count();
    if lengths > 1 {
        return Err(Error::new(
            ErrorKind::AmbiguousFraming,
            "the request has more than one Content-Length header",
        ));
    }
    if h.get_all(http::header::CONTENT_TYPE)
        .iter()
        .nth(1)
        .is_some()
    {
        // One reader takes the first, another the last: a body scanned and classified as
        // one type could be parsed by the tool as another.
        return Err(Error::new(
            ErrorKind::AmbiguousFraming,
            "the request has more than one Content-Type header",
        ));
    }
    if lengths == 1 && h.contains_key(http::header::TRANSFER_ENCODING) {
        return Err(Error::new(
            ErrorKind::AmbiguousFraming,
            "the request has both Content-Length and Transfer-Encoding",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_ignored_in_hosts() {
        assert_eq!(strip_port("api.example.com:8443"), "api.example.com");
        assert_eq!(strip_port("api.example.com"), "api.example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn canonical_paths() {
        let ok = |p: &str| canonicalize(p).map(|c| c.into_owned()).map_err(|e| e.kind);
        assert_eq!(ok("/repos/a/b/keys"), Ok("/repos/a/b/keys".into()));
        assert_eq!(ok("//repos//a/./b/keys"), Ok("/repos/a/b/keys".into()));
        assert_eq!(ok("/repos/x/../a/b/keys/"), Ok("/repos/a/b/keys/".into()));
        assert_eq!(ok("/%72epos/a/b/%6Beys"), Ok("/repos/a/b/keys".into()));
        assert_eq!(ok("/a/%e2%82%ac"), Ok("/a/%E2%82%AC".into()));
        assert_eq!(ok("/../../etc"), Ok("/etc".into()));
        assert_eq!(ok("/."), Ok("/".into()));
        for bad in [
            "/a%2Fb",
            "/a%2fb",
            "/a/%2e%2e/b",
            "/a/%2E/b",
            "/a%00",
            "/a\\b",
            "/a%5Cb",
            "/a%zz",
            "/a%4",
            // Not a path.
            "*",
            "",
            "repos/a",
            // Dot segments to servers that drop `;` parameters.
            "/user/x/..;/keys",
            "/a/.;x/b",
            "/a/..;x=1",
        ] {
            assert_eq!(ok(bad), Err(ErrorKind::AmbiguousPath), "{bad}");
        }
        // Parameters elsewhere are the tool's business.
        assert_eq!(ok("/user/keys;x=1"), Ok("/user/keys;x=1".into()));
        assert_eq!(ok("/a/...;x"), Ok("/a/...;x".into()));
    }

    #[test]
    fn a_tunnel_takes_only_requests_for_its_host() {
        let ok = |h: &str| check_tunnel_host("api.github.com", Some(h)).is_ok();
        for same in [
            "api.github.com",
            "API.GitHub.com",
            "api.github.com:443",
            "api.github.com:8443",
        ] {
            assert!(ok(same), "{same}");
        }
        for other in [
            "evil.example",
            "api.github.com:@evil.example",
            "user@api.github.com",
            "api.github.com:x",
            "api.github.com.",
            "api.github.com.evil.example",
            "",
        ] {
            assert!(!ok(other), "{other}");
        }
        assert!(check_tunnel_host("api.github.com", None).is_ok());
        assert!(check_tunnel_host("[::1]", Some("[::1]:443")).is_ok());
    }

    #[test]
    fn joins_keep_one_slash() {
        assert_eq!(join("", "/a"), "/a");
        assert_eq!(join("/v1", "/a"), "/v1/a");
        assert_eq!(join("", ""), "/");
    }
}
