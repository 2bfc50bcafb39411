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

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

static DROPPED: AtomicU64 = AtomicU64::new(0);
/// How long a batch waits for more spans before it is exported.
const LINGER: Duration = Duration::from_millis(200);

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

/// Builds the tracer provider with the bounded exporting processor. Must run inside the
/// tokio runtime (the export task is spawned on it).
pub fn provider(s: &OtlpSettings) -> Result<SdkTracerProvider, String> {
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
    let processor = BoundedProcessor::start(exporter, s.queue_size);
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(processor)
        .build())
}

/// The tracer keygate's spans go to.
pub fn tracer(p: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    p.tracer("keygate")
}

enum Msg {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// Queues finished spans without ever waiting, and exports them in batches from a task.
#[derive(Debug)]
struct BoundedProcessor {
    tx: mpsc::Sender<Msg>,
}

impl BoundedProcessor {
    fn start<E: SpanExporter + 'static>(exporter: E, queue: usize) -> BoundedProcessor {
        let (tx, mut rx) = mpsc::channel::<Msg>(queue.max(16));
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(512);
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
                    if batch.len() < 512 && flushes.is_empty() {
                        // Linger briefly for a fuller batch: fewer, larger exports.
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
                                _ => tracing::warn!(
                                    "the OTLP collector did not answer; {n} spans dropped"
                                ),
                            }
                        }
                    }
                }
                for ack in flushes {
                    let _ = ack.send(());
                }
            }
        });
        BoundedProcessor { tx }
    }
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (ack, done) = oneshot::channel();
        self.tx
            .try_send(Msg::Flush(ack))
            .map_err(|_| OTelSdkError::InternalFailure("span queue full".into()))?;
        // Called from shutdown paths outside request handling; bounded wait.
        let waited = std::thread::scope(|s| {
            s.spawn(|| {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                let mut done = done;
                loop {
                    match done.try_recv() {
                        Ok(()) => return true,
                        Err(oneshot::error::TryRecvError::Closed) => return false,
                        Err(oneshot::error::TryRecvError::Empty) => {
                            if std::time::Instant::now() > deadline {
                                return false;
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
            .join()
            .unwrap_or(false)
        });
        if waited {
            Ok(())
        } else {
            Err(OTelSdkError::Timeout(Duration::from_secs(5)))
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.force_flush()
    }
}

/// Writes a trace context into outgoing HTTP headers.
pub struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, v);
        }
    }
}

/// Reads a trace context from incoming HTTP headers.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
