//! What is known about an agent's connection: a leaf, read by the listener that makes it
//! and by the phases that need the peer (identify, forward, audit).

use std::net::SocketAddr;
use std::sync::Arc;

/// What is known about an agent's connection, established once per connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote_addr: SocketAddr,
    pub tls: bool,
    /// SPIFFE ID of the verified client certificate, if one was presented.
    pub spiffe_id: Option<String>,
    /// `remote_addr` as text, as the audit log records it (formatted once per connection).
    pub client: Arc<str>,
    /// The agent's IP as an `X-Forwarded-For` value.
    pub forwarded_for: Option<http::HeaderValue>,
    /// The start of the `Forwarded` value: `for=<ip>;proto=<http|https>`.
    pub forwarded: String,
    /// Set when the connection is a forward-proxy tunnel (or an absolute-form request to
    /// the forward proxy): the host it is for and the agent it is bound to.
    pub tunnel: Option<Arc<Tunnel>>,
}

/// A forward-proxy tunnel: every request in it is for its host, and its agent's, as the
/// credential given on the `CONNECT` proves (checked again on each request, so a token
/// that expires or an agent suspended during a long-lived tunnel stops new requests).
#[derive(Debug)]
pub struct Tunnel {
    /// The host (lowercase, no port) a tool names.
    pub host: String,
    /// The agent's credential from the `CONNECT`, as identify reads it
    /// (`Proxy-Authorization: Bearer …`); empty when the agent is known by its client
    /// certificate to the proxy listener.
    pub credential: http::HeaderMap,
    /// Requests served in the tunnel so far (a tunnel that carried none is audited as
    /// its CONNECT when it closes).
    pub requests: std::sync::atomic::AtomicU64,
}

impl Tunnel {
    pub fn new(host: String, credential: http::HeaderMap) -> Tunnel {
        Tunnel {
            host,
            credential,
            requests: Default::default(),
        }
    }
}

impl ConnInfo {
    /// What every request on a connection from `remote_addr` shares.
    pub fn new(remote_addr: SocketAddr, tls: bool, spiffe_id: Option<String>) -> ConnInfo {
        let ip = remote_addr.ip();
        let proto = if tls { "https" } else { "http" };
        let node = if ip.is_ipv6() {
            format!("\"[{ip}]\"")
        } else {
            ip.to_string()
        };
        ConnInfo {
            remote_addr,
            tls,
            spiffe_id,
            client: remote_addr.to_string().into(),
            forwarded_for: http::HeaderValue::from_str(&ip.to_string()).ok(),
            forwarded: format!("for={node};proto={proto}"),
            tunnel: None,
        }
    }

    /// The same connection as a forward-proxy tunnel (`tls`: whether the agent's requests
    /// in it are TLS, which keygate terminated).
    pub fn tunnelled(&self, tls: bool, tunnel: Tunnel) -> ConnInfo {
        let mut c = ConnInfo::new(self.remote_addr, tls, self.spiffe_id.clone());
        c.tunnel = Some(Arc::new(tunnel));
        c
    }
}
