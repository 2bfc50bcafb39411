//! Listeners: TCP (and TLS) accept loop serving HTTP/1.1 and HTTP/2, with limits on
//! header size and count and on slow clients, and graceful shutdown: on shutdown the
//! listener closes (new connections are refused), in-flight requests finish within the
//! grace period, and the audit log is flushed last.

pub mod admin;
pub mod console;
pub mod decide;
pub mod deploy_keys;
pub mod reconcile;
pub mod retire;
pub mod tasks;

pub use crate::conn::ConnInfo;

use crate::agent_conn::{service, FirstReadDeadline};
use crate::gateway::Runtime;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running listener.
pub struct Running {
    pub local_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The forward-proxy listener's address, when one is configured.
    pub proxy_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts a graceful shutdown; [`Running::wait`] returns when it is complete.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// A handle that can start the shutdown from elsewhere (a signal handler).
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Binds the gateway's listener and starts serving.
pub async fn serve(rt: Arc<Runtime>) -> Result<Running, String> {
    let gw = rt.current();
    let s = &gw.snapshot.server;
    let listener = TcpListener::bind(&s.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", s.listen))?;
    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = match &s.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            t,
        )?)),
        None => None,
    };
    let builder = crate::agent_conn::builder(s);
    let proxy = match &gw.snapshot.proxy {
        Some(p) => Some(crate::proxy::bind(p).await?),
        None => None,
    };
    let proxy_addr = proxy.as_ref().map(|p| p.addr);
    let (tx, rx) = watch::channel(false);
    let (admin_addr, admin_task) = admin::serve(rt.clone(), rx.clone()).await?;
    let proxy_task = proxy.map(|p| tokio::spawn(crate::proxy::serve(rt.clone(), p, rx.clone())));
    tokio::spawn(reconcile::schedule(rt.clone(), rx.clone()));
    tokio::spawn(retire::schedule(rt.clone(), rx.clone()));
    let main_task = tokio::spawn(accept_loop(
        rt.clone(),
        listener,
        tls,
        Arc::new(builder),
        rx,
    ));
    tracing::info!(
        %local_addr,
        tls = s.tls.is_some(),
        "keygate is listening"
    );
    let done = tokio::spawn(async move {
        let _ = main_task.await;
        if let Some(p) = proxy_task {
            let _ = p.await;
        }
        // What the agents' baselines learnt since the last periodic flush.
        rt.shared.flush_baselines().await;
        // Last: every request and tunnel has written its record.
        rt.shared.audit.close().await;
        let _ = admin_task.await;
    });
    Ok(Running {
        local_addr,
        admin_addr,
        proxy_addr,
        shutdown: tx,
        done,
    })
}

async fn accept_loop(
    rt: Arc<Runtime>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let settings = rt.current().snapshot.server.clone();
    let handshake_timeout = settings.tls_handshake_timeout;
    loop {
        let Some((stream, remote_addr)) = crate::agent_conn::accept(&listener, &mut shutdown).await
        else {
            break;
        };
        let gw = rt.clone();
        let header_timeout = settings.header_read_timeout;
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                None => {
                    // hyper's header_read_timeout only starts once the HTTP version is
                    // known, from the client's first bytes: without this, a client that
                    // sends nothing holds its connection forever.
                    if !first_bytes_within(&stream, header_timeout).await {
                        return;
                    }
                    let conn = Arc::new(ConnInfo::new(remote_addr, false, None));
                    let _ = watcher
                        .watch(
                            builder
                                .serve_connection(TokioIo::new(stream), service(gw, conn))
                                .into_owned(),
                        )
                        .await;
                }
                Some(acceptor) => {
                    let Some((stream, conn)) = crate::agent_conn::tls_accept(
                        &acceptor,
                        stream,
                        remote_addr,
                        handshake_timeout,
                    )
                    .await
                    else {
                        return;
                    };
                    // As for cleartext: a client that finishes the handshake and then
                    // sends nothing is let go after header_read_timeout.
                    let stream = FirstReadDeadline::new(stream, header_timeout);
                    let _ = watcher
                        .watch(
                            builder
                                .serve_connection(TokioIo::new(stream), service(gw, conn))
                                .into_owned(),
                        )
                        .await;
                }
            }
        });
    }
    drop(listener);
    let grace = settings.shutdown_grace;
    tracing::info!(
        connections = graceful.count(),
        "shutting down: finishing in-flight requests"
    );
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing the remaining connections"),
    }
}

/// Whether the client sends, within `limit`, enough to tell HTTP/1 from HTTP/2 (the whole
/// HTTP/2 preface, or bytes that are not a prefix of it); false when it sends nothing or
/// closes. Nothing is consumed.
async fn first_bytes_within(stream: &tokio::net::TcpStream, limit: Duration) -> bool {
    const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let sniff = async {
        let mut buf = [0u8; 24];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == buf.len() || buf[..n] != H2_PREFACE[..n] => return true,
                // Part of the preface: peek returns at once while data is buffered.
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::time::timeout(limit, sniff).await.unwrap_or(false)
}
