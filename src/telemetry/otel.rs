//! OpenTelemetry: every request as a span (with child spans for the phases that take
//! time), exported over OTLP (gRPC or HTTP/protobuf) to any backend.
//!
//! A slow or unreachable collector never slows or fails a request: finished spans go into
//! a bounded queue without waiting; a full queue drops the span, and a batch the collector
//! does not take is dropped too; both are counted (`keygate_spans_dropped_total`).
//!
//! Configured by `[telemetry]` or the standard variables `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`,
//! `http/protobuf`) and `OTEL_SERVICE_NAME`; the config file wins where both are set.

use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

static DROPPED: AtomicU64 = AtomicU64::new(0);
/// How long a batch waits for more spans before it is exported.
const LINGER: Duration = Duration::from_millis(200);
/// Spans per export at most: encoding a batch runs on keygate's runtime, so a batch is
/// kept small enough to encode in well under a millisecond.
const BATCH: usize = 128;

/// Spans dropped since start: queue full, or not accepted by the collector.
pub fn dropped_spans() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub service_name: String,
    pub queue_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// The export settings from the config's `[telemetry]` and the standard variables; `None`
/// when no endpoint is set anywhere (no export).
pub fn settings(t: &crate::config::TelemetrySettings) -> Result<Option<OtlpSettings>, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let endpoint = t
        .otlp_endpoint
        .clone()
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let protocol = match t
        .otlp_protocol
        .clone()
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .as_deref()
    {
        None | Some("grpc") => OtlpProtocol::Grpc,
        Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
        Some(other) => {
            return Err(format!(
                "OTLP protocol {other:?} is not \"grpc\" or \"http/protobuf\""
            ))
        }
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(format!("OTLP endpoint {endpoint:?} is not an http(s) URL"));
    }
    let service_name = t
        .service_name
        .clone()
        .or_else(|| env("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| "keygate".into());
    Ok(Some(OtlpSettings {
        endpoint,
        protocol,
        service_name,
        queue_size: t.queue_size,
    }))
}

/// The queue spans go into once export is started; `None` until then (export off).
static QUEUE: OnceLock<mpsc::Sender<Msg>> = OnceLock::new();

/// Whether spans are exported (OTLP configured and started). When not, the request path
/// does no span work at all.
pub fn enabled() -> bool {
    QUEUE.get().is_some()
}

/// Queues a finished span without waiting; a full queue drops it (counted).
pub fn submit(span: SpanData) {
    if let Some(q) = QUEUE.get() {
        if q.try_send(Msg::Span(Box::new(span))).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Exports what is queued (bounded wait): for shutdown.
pub async fn flush() {
    let Some(q) = QUEUE.get() else { return };
    let (ack, done) = oneshot::channel();
    if q.try_send(Msg::Flush(ack)).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
    }
}

/// Builds the OTLP exporter and starts the export task (on the current tokio runtime).
/// Spans are built by keygate itself from each request's context when it ends (see
/// [`super::spans`]); nothing goes through a tracing layer.
pub fn start(s: &OtlpSettings) -> Result<(), String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let timeout = Duration::from_secs(5);
    let resource = Resource::builder()
        .with_service_name(s.service_name.clone())
        .build();
    let mut exporter = match s.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(s.endpoint.clone())
            .with_timeout(timeout)
            .build(),
        OtlpProtocol::HttpProtobuf => {
            let url = if s.endpoint.ends_with("/v1/traces") {
                s.endpoint.clone()
            } else {
                format!("{}/v1/traces", s.endpoint.trim_end_matches('/'))
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .with_timeout(timeout)
                .with_headers(Default::default())
                .build()
        }
    }
    .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    exporter.set_resource(&resource);
    let (tx, rx) = mpsc::channel::<Msg>(s.queue_size.max(16));
    QUEUE
        .set(tx)
        .map_err(|_| "span export is already started".to_string())?;
    tokio::spawn(export_loop(exporter, rx));
    Ok(())
}

enum Msg {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// Exports queued spans in batches: waits for a first span, lingers briefly for a fuller
/// batch, exports it (bounded in time); a batch the collector does not take is dropped
/// and counted.
async fn export_loop<E: SpanExporter + 'static>(exporter: E, mut rx: mpsc::Receiver<Msg>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut warned_at: Option<std::time::Instant> = None;
    while let Some(first) = rx.recv().await {
        let mut flushes = Vec::new();
        let mut next = Some(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while let Some(m) = next.take() {
            match m {
                Msg::Span(s) => batch.push(*s),
                Msg::Flush(ack) => flushes.push(ack),
            }
            if batch.len() < BATCH && flushes.is_empty() {
                next = match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(_) => tokio::time::timeout_at(deadline, rx.recv())
                        .await
                        .ok()
                        .flatten(),
                };
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let sent = tokio::time::timeout(
                Duration::from_secs(10),
                exporter.export(std::mem::take(&mut batch)),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                DROPPED.fetch_add(n, Ordering::Relaxed);
                // One warning a minute at most: a down collector must not flood the log.
                if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    warned_at = Some(std::time::Instant::now());
                    match sent {
                        Ok(Err(e)) => {
                            tracing::warn!("the OTLP collector did not take {n} spans: {e}")
                        }
                        _ => tracing::warn!("the OTLP collector did not answer; {n} spans dropped"),
                    }
                }
            }
        }
        for ack in flushes {
            let _ = ack.send(());
        }
    }
}
