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
        }
    }
}
