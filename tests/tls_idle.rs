//! A TLS client that completes the handshake and then sends nothing is let go after
//! `header_read_timeout`, as a cleartext one is (tests/bad_input.rs); one that sends a
//! request is served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn tls_connect(
    pki: &Pki,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_silent_tls_client_is_let_go() {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let source = secret_file(dir.path(), "TLS_IDLE_SECRET", "s");
    let pki = Pki::new(dir.path());
    let iss = TestIssuer::new(dir.path(), "tls-idle", "keygate");
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\nheader_read_timeout = \"300ms\"\n{}{}{}{}",
        pki.server_toml("off"),
        iss.toml(),
        agent("a1", "o@x"),
        static_tool("t", &up.url(), &source)
    );
    let gw = TestGateway::start_in(dir, &cfg).await;

    let mut silent = tls_connect(&pki, gw.addr).await;
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("a silent TLS connection was held open")
        .unwrap_or(0);
    assert_eq!(n, 0, "the server answered a request nobody sent");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    // A client that speaks is served (the deadline is only on the first bytes).
    let mut talker = tls_connect(&pki, gw.addr).await;
    let req = format!(
        "GET /tools/t/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        iss.token("a1")
    );
    talker.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), talker.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}
