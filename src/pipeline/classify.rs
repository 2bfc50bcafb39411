//! **classify**: which tool a request is for. One function of (host, path), so a later
//! forward-proxy listener (tool chosen by target host) feeds the same pipeline.
//!
//! A Host that names a tool wins, and the whole path is forwarded; otherwise
//! `/tools/<name>/rest` selects the tool `<name>` and `/rest` is forwarded. The operation
//! (route templates, the identity-creation catalog) is added here by the policy issue.

use crate::gateway::{Gateway, ToolRuntime};
use std::sync::Arc;

/// Where a request goes.
pub enum Route {
    /// To a tool, with the path to forward (the upstream base path included).
    Tool(Arc<ToolRuntime>, String),
    /// keygate's own public keys.
    Jwks,
    /// Nothing matches.
    Unknown,
}

/// The prefix of path-selected tools.
pub const TOOLS_PREFIX: &str = "/tools/";
/// Where keygate publishes the keys of the JWTs it mints.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Selects the route for a request's host (without port) and raw path.
pub fn route(gw: &Gateway, host: Option<&str>, path: &str) -> Route {
    if let Some(host) = host {
        let host = strip_port(host);
        let tool = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            gw.tools_by_host.get(host.to_ascii_lowercase().as_str())
        } else {
            gw.tools_by_host.get(host)
        };
        if let Some(t) = tool {
            return Route::Tool(t.clone(), join(&t.tool.upstream.base_path, path));
        }
    }
    if path == JWKS_PATH {
        return Route::Jwks;
    }
    if let Some(rest) = path.strip_prefix(TOOLS_PREFIX) {
        let (name, rest) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if let Some(t) = gw.tools_by_name.get(name) {
            if t.tool.path_prefix {
                let rest = if rest.is_empty() { "/" } else { rest };
                return Route::Tool(t.clone(), join(&t.tool.upstream.base_path, rest));
            }
        }
    }
    Route::Unknown
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
    fn joins_keep_one_slash() {
        assert_eq!(join("", "/a"), "/a");
        assert_eq!(join("/v1", "/a"), "/v1/a");
        assert_eq!(join("", ""), "/");
    }
}
