//! The load client of `benches/load.sh` for what wrk cannot do: requests through keygate's
//! forward proxy (CONNECT, then TLS with a certificate from keygate's CA, then HTTP/1.1
//! keep-alive inside the tunnel), and the same request over TLS to keygate's reverse-proxy
//! listener, so the two are compared with one client. One thread, like `wrk -t1`.
//!
//! ```text
//! load_client --mode forward|forward-new|reverse-tls|reverse --addr HOST:PORT --host NAME
//!             --path PATH --token JWT --ca FILE [--conns 32] [--seconds 10]
//! ```
//! - `forward`: each connection opens one tunnel to `--host` and sends requests in it
//!   until the time is up (the per-request cost);
//! - `forward-new`: a new tunnel (CONNECT, full TLS handshake: no session resumption) for
//!   every request (the cost of a tunnel and its handshake, with one request);
//! - `reverse-tls`: TLS to `--addr` itself, requests to `PATH` with the token as bearer;
//!   `reverse`: the same in cleartext.
//!
//! Prints one JSON line: `{"requests": N, "errors": N, "seconds": S}`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rustls::pki_types::pem::PemObject;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone)]
struct Args {
    mode: String,
    addr: String,
    host: String,
    path: String,
    token: String,
    ca: String,
    conns: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        mode: "forward".into(),
        addr: String::new(),
        host: String::new(),
        path: "/small".into(),
        token: String::new(),
        ca: String::new(),
        conns: 32,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--mode" => a.mode = v,
            "--addr" => a.addr = v,
            "--host" => a.host = v,
            "--path" => a.path = v,
            "--token" => a.token = v,
            "--ca" => a.ca = v,
            "--conns" => a.conns = v.parse().unwrap(),
            "--seconds" => a.seconds = v.parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

type Send = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn open(a: &Args, tls: &tokio_rustls::TlsConnector) -> Result<Send, String> {
    let mut s = TcpStream::connect(&a.addr)
        .await
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    if a.mode == "reverse" {
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        return Ok(send);
    }
    let name = if a.mode == "reverse-tls" {
        a.addr
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default()
    } else {
        let req = format!(
            "CONNECT {0}:443 HTTP/1.1\r\nHost: {0}:443\r\nProxy-Authorization: Bearer {1}\r\n\r\n",
            a.host, a.token
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::with_capacity(128);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.map_err(|e| e.to_string())? == 0 {
                return Err("proxy closed".into());
            }
            head.push(byte[0]);
        }
        if !head.starts_with(b"HTTP/1.1 200") {
            return Err(String::from_utf8_lossy(&head).into_owned());
        }
        a.host.clone()
    };
    let server = rustls::pki_types::ServerName::try_from(name).map_err(|e| e.to_string())?;
    let stream = tls.connect(server, s).await.map_err(|e| e.to_string())?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

async fn one(a: &Args, send: &mut Send) -> Result<(), String> {
    send.ready().await.map_err(|e| e.to_string())?;
    let mut req = http::Request::get(&a.path);
    if a.mode.starts_with("reverse") {
        req = req
            .header("host", &a.addr)
            .header("authorization", format!("Bearer {}", a.token));
    } else {
        req = req.header("host", &a.host);
    }
    let resp = send
        .send_request(req.body(Empty::new()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let ok = resp.status() == http::StatusCode::OK;
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if ok {
        Ok(())
    } else {
        Err("status".into())
    }
}

async fn worker(
    a: Args,
    tls: tokio_rustls::TlsConnector,
    until: Instant,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) {
    let mut send: Option<Send> = None;
    while Instant::now() < until {
        if send.is_none() || a.mode == "forward-new" {
            match open(&a, &tls).await {
                Ok(s) => send = Some(s),
                Err(e) => {
                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("load_client: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = send.as_mut() else { continue };
        match one(&a, s).await {
            Ok(()) => {
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                send = None;
            }
        }
    }
}

fn main() {
    let a = args();
    let mut roots = rustls::RootCertStore::empty();
    if a.mode != "reverse" {
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&a.ca).expect("--ca") {
            roots.add(c.expect("a certificate")).expect("a CA");
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // A new tunnel measures a full handshake: no session resumed from an earlier one.
    if a.mode == "forward-new" {
        config.resumption = rustls::client::Resumption::disabled();
    }
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(a.seconds);
        let tasks: Vec<_> = (0..a.conns)
            .map(|_| {
                tokio::spawn(worker(
                    a.clone(),
                    tls.clone(),
                    until,
                    done.clone(),
                    errors.clone(),
                ))
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
    println!(
        "{{\"requests\": {}, \"errors\": {}, \"seconds\": {:.3}}}",
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}
