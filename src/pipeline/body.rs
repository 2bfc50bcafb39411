//! Body wrappers: counting (and limiting) a streamed body, and finishing the audit record
//! exactly once when a response body ends, fails or is dropped.

use crate::error::{BoxError, ProxyBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// The request body grew past the tool's limit while streaming.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body exceeds the tool's limit")
    }
}

impl std::error::Error for BodyTooLarge {}

/// Counts the bytes of a streamed body into a shared counter and fails it once it passes
/// `limit`, so a streamed upload cannot exceed a tool's body limit either.
pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
    limit: u64,
}

impl<B> Counted<B> {
    pub fn new(inner: B, count: Arc<AtomicU64>, limit: u64) -> Self {
        Counted {
            inner,
            count,
            limit,
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let total =
                        this.count.fetch_add(d.len() as u64, Ordering::Relaxed) + d.len() as u64;
                    if total > this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Called once when a response body is finished: with the bytes sent and whether the
/// body completed (false: it failed or the client went away).
pub trait OnFinish: Send + Sync + 'static {
    fn finish(self: Box<Self>, bytes_out: u64, completed: bool);
}

/// A response body that reports its size and completion exactly once.
pub struct Finishing {
    inner: ProxyBody,
    bytes: u64,
    on_finish: Option<Box<dyn OnFinish>>,
}

impl Finishing {
    pub fn new(inner: ProxyBody, on_finish: Box<dyn OnFinish>) -> Self {
        Finishing {
            inner,
            bytes: 0,
            on_finish: Some(on_finish),
        }
    }

    fn finish(&mut self, completed: bool) {
        if let Some(f) = self.on_finish.take() {
            f.finish(self.bytes, completed);
        }
    }
}

impl Body for Finishing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Ready(None) => this.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        let completed = self.inner.is_end_stream();
        self.finish(completed);
    }
}
