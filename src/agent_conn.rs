//! What every agent connection runs, whichever listener accepted it (the reverse proxy's,
//! or a forward-proxy tunnel's): the hyper service that hands each request to the
//! pipeline, and the first-read deadline that lets go of a client that sends nothing.

use crate::config::ServerSettings;
use crate::conn::ConnInfo;
use crate::gateway::Runtime;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// The next connection of `listener` (nodelay set), or `None` once `shutdown` changes.
/// An accept that fails (out of file descriptors and the like) is logged and retried
/// after a short pause: the listener keeps serving.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, addr));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return None,
        }
    }
}

/// The TLS handshake of an agent connection within `timeout`, and what the connection
/// is then known by (the SPIFFE ID of a verified client certificate, if one was given).
/// `None` (logged) when the handshake fails or takes too long.
pub async fn tls_accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    remote_addr: std::net::SocketAddr,
    timeout: Duration,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    Arc<ConnInfo>,
)> {
    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%remote_addr, "TLS handshake failed: {e}");
            return None;
        }
        Err(_) => {
            tracing::debug!(%remote_addr, "TLS handshake timed out");
            return None;
        }
    };
    let spiffe_id = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| crate::pipeline::identify::spiffe_id_of(c));
    let conn = Arc::new(ConnInfo::new(remote_addr, true, spiffe_id));
    Some((stream, conn))
}

/// How an agent connection is served (HTTP/1.1 and HTTP/2), with the limits of `s` on
/// request heads and slow clients.
pub fn builder(s: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // An agent that half-closes its connection after sending still gets its answer.
        .half_close(true)
        .header_read_timeout(s.header_read_timeout)
        .max_buf_size(s.max_header_bytes.max(8192))
        .max_headers(s.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// A stream whose first read fails if no byte arrives before a deadline; later reads have
/// none (hyper's own header timeout and keep-alive take over once a request has begun).
pub struct FirstReadDeadline<S> {
    inner: S,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> FirstReadDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        FirstReadDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FirstReadDeadline<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if let Some(d) = this.deadline.as_mut() {
                    if d.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no request within header_read_timeout",
                        )));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FirstReadDeadline<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub fn service(rt: Arc<Runtime>, conn: Arc<ConnInfo>) -> GatewayService {
    GatewayService { rt, conn }
}

/// The hyper service of one connection: every request goes through the pipeline.
#[derive(Clone)]
pub struct GatewayService {
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
}

type ServiceFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<http::Response<crate::error::ProxyBody>, Infallible>,
            > + Send,
    >,
>;

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for GatewayService {
    type Response = http::Response<crate::error::ProxyBody>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        // Each request runs on the gateway current when it arrives, to its end.
        let gw = self.rt.current();
        if let Some(t) = &self.conn.tunnel {
            t.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let conn = self.conn.clone();
        Box::pin(async move { Ok(crate::pipeline::handle(gw, conn, req).await) })
    }
}
