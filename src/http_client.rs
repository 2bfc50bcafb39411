//! The outbound HTTP client (to tools, JWKS endpoints, webhooks) and the HTTP rules every
//! hop shares: a leaf, used by the phases and by the gateway that builds the clients.

use crate::error::ProxyBody;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Uri};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::time::Duration;

/// A pooled HTTP/1.1 and HTTP/2 client for http and https upstreams.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// Builds a pooled client: system roots, or the CA bundle at `ca_file`; HTTP/2 where the
/// upstream offers it through ALPN.
pub fn build_client(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<HttpClient, String> {
    let tls = crate::tls::client_config(ca_file)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .timer(hyper_util::rt::TokioTimer::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(https))
}

/// GETs a small text document (a JWKS), refusing anything but a 200 within `limit` bytes.
pub async fn fetch_text(client: &HttpClient, url: Uri, limit: usize) -> Result<String, String> {
    let req = Request::get(url.clone())
        .header(header::ACCEPT, "application/json")
        .body(crate::error::full_body(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| format!("{url}: timed out"))?
        .map_err(|e| format!("{url}: {e}"))?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("{url}: status {}", resp.status()));
    }
    let body = http_body_util::Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: not UTF-8"))
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Usually there are none, or only `Connection`: one pass over the headers finds them,
    // and only the headers present are removed.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k) || named.contains(k))
        .cloned()
        .collect();
    for n in present {
        headers.remove(n);
    }
}

/// Sends a request to a credential issuer (STS, a token endpoint, GitHub) and reads its
/// answer whole, at most `limit` bytes, within `timeout`. `who` names the issuer in the
/// errors, which never hold a credential.
pub async fn send_small(
    client: &HttpClient,
    request: Request<ProxyBody>,
    limit: usize,
    timeout: Duration,
    who: &str,
) -> Result<(http::StatusCode, Bytes), String> {
    let exchange = async {
        let resp = client
            .request(request)
            .await
            .map_err(|e| format!("{who} could not be reached: {e}"))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| format!("{who}'s answer could not be read: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{who} did not answer within {timeout:?}"))?
}
