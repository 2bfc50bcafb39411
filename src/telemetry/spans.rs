//! A request's spans, built by keygate itself: one `keygate.request` server span, child
//! spans for the phases that take time (`keygate.identify` when a token is verified cold,
//! `keygate.authorize` when the policies are evaluated rather than answered from the
//! decision cache, `keygate.credential` when a credential is minted for the call,
//! `keygate.approval`, `keygate.upstream`), all written out once, when the request ends,
//! from the same context as its audit record.
//!
//! Why not a tracing layer: a span that lives through the request costs a registry slot,
//! an enter and exit on every poll, and a dynamic record per attribute; keygate already
//! has every attribute in its request context. Here a request that is traced costs a few
//! clock reads during the request and one `SpanData` per span at the end, and one that
//! is not (export off, or the agent's trace not sampled) costs nothing.
//!
//! Trace context (W3C): the agent's sampled `traceparent` makes keygate's request span its
//! child; the tool receives keygate's own `traceparent`, naming the upstream span as
//! parent. An agent cannot switch keygate's spans off: an unsampled `traceparent` starts a
//! trace of keygate's own, linked to the agent's span (an auditor finds every call in the
//! tracing backend whatever the agent sent).

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::SystemTime;

/// One request's trace: its ids, its parent, and the phase spans finished so far.
pub struct RequestTrace {
    trace_id: TraceId,
    span_id: SpanId,
    parent: SpanId,
    parent_remote: bool,
    flags: TraceFlags,
    state: TraceState,
    /// The agent's unsampled span, linked from the request span.
    link: Option<SpanContext>,
    phases: Vec<SpanData>,
    /// Events on the request span (anomalies found in the call).
    events: Vec<opentelemetry::trace::Event>,
    /// The host and port the agent addressed (`server.address`, `server.port`).
    pub server: Option<(String, Option<u16>)>,
}

/// A phase in progress: ended by [`RequestTrace::end_phase`].
pub struct Phase {
    name: &'static str,
    kind: SpanKind,
    span_id: SpanId,
    start: SystemTime,
}

impl Phase {
    /// The phase's span id (for the `traceparent` the tool receives).
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }
}

fn scope() -> InstrumentationScope {
    static SCOPE: OnceLock<InstrumentationScope> = OnceLock::new();
    SCOPE
        .get_or_init(|| {
            InstrumentationScope::builder("keygate")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build()
        })
        .clone()
}

fn random_u128() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

fn new_span_id() -> SpanId {
    loop {
        let id = u64::try_from(random_u128() >> 64).unwrap_or(1);
        if id != 0 {
            return SpanId::from(id);
        }
    }
}

/// The agent's trace context (W3C `traceparent` and `tracestate`), read by the SDK's
/// propagator; `None` when there is none or it is malformed (keygate starts a trace).
fn parent_of(headers: &http::HeaderMap) -> Option<SpanContext> {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    if !headers.contains_key("traceparent") {
        return None;
    }
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract(&HeaderExtractor(headers));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Reads a trace context from incoming HTTP headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

impl RequestTrace {
    /// The trace of a request with these headers, or `None` when spans are not exported.
    pub fn start(headers: &http::HeaderMap) -> Option<RequestTrace> {
        if !super::otel::enabled() {
            return None;
        }
        Self::from_headers(headers)
    }

    /// The trace of a request with these headers, whether or not spans are exported.
    fn from_headers(headers: &http::HeaderMap) -> Option<RequestTrace> {
        let mut link = None;
        let (trace_id, parent, parent_remote, state) = match parent_of(headers) {
            Some(p) if p.is_sampled() => (p.trace_id(), p.span_id(), true, p.trace_state().clone()),
            // An unsampled parent does not decide for keygate, whose spans are its audit
            // in the tracing backend: a trace of keygate's own, linked to the agent's.
            other => {
                link = other;
                (
                    TraceId::from(random_u128()),
                    SpanId::INVALID,
                    false,
                    TraceState::default(),
                )
            }
        };
        Some(RequestTrace {
            trace_id,
            span_id: new_span_id(),
            parent,
            parent_remote,
            flags: TraceFlags::SAMPLED,
            state,
            link,
            phases: Vec::new(),
            events: Vec::new(),
            server: None,
        })
    }

    /// Starts a phase span (internal), a child of the request span.
    pub fn begin(name: &'static str) -> Phase {
        Self::begin_kind(name, SpanKind::Internal)
    }

    /// Starts a client phase span (a call keygate makes), a child of the request span.
    pub fn begin_client(name: &'static str) -> Phase {
        Self::begin_kind(name, SpanKind::Client)
    }

    fn begin_kind(name: &'static str, kind: SpanKind) -> Phase {
        Phase {
            name,
            kind,
            span_id: new_span_id(),
            start: SystemTime::now(),
        }
    }

    /// Adds an event to the request span, now.
    pub fn add_event(&mut self, name: &'static str, attributes: Vec<KeyValue>) {
        self.events.push(opentelemetry::trace::Event::new(
            name,
            SystemTime::now(),
            attributes,
            0,
        ));
    }

    /// Ends a phase span now.
    pub fn end_phase(&mut self, phase: Phase, attributes: Vec<KeyValue>, failed: bool) {
        let data = self.span_data(
            phase.span_id,
            self.span_id,
            false,
            phase.kind,
            phase.name,
            phase.start,
            SystemTime::now(),
            attributes,
            failed,
        );
        self.phases.push(data);
    }

    /// The `traceparent` the tool receives: this trace, `span` as the parent.
    pub fn traceparent(&self, span: SpanId) -> Option<http::HeaderValue> {
        // 00-<trace id>-<parent id>-<flags>, lowercase hex (W3C Trace Context §3.2).
        let mut v = *b"00-________________________________-________________-__";
        const_hex::encode_to_slice(self.trace_id.to_bytes(), &mut v[3..35]).ok()?;
        const_hex::encode_to_slice(span.to_bytes(), &mut v[36..52]).ok()?;
        const_hex::encode_to_slice([self.flags.to_u8()], &mut v[53..55]).ok()?;
        http::HeaderValue::from_bytes(&v).ok()
    }

    /// The `tracestate` the agent sent, passed on with the trace.
    pub fn tracestate(&self) -> Option<http::HeaderValue> {
        let s = self.state.header();
        (!s.is_empty())
            .then(|| http::HeaderValue::from_str(&s).ok())
            .flatten()
    }

    /// Ends the request span and submits it with its phase spans.
    pub fn finish(mut self, start: SystemTime, attributes: Vec<KeyValue>, failed: bool) {
        let mut request = self.span_data(
            self.span_id,
            self.parent,
            self.parent_remote,
            SpanKind::Server,
            "keygate.request",
            start,
            SystemTime::now(),
            attributes,
            failed,
        );
        request.events.events = std::mem::take(&mut self.events);
        if let Some(agent) = self.link.take() {
            request
                .links
                .links
                .push(opentelemetry::trace::Link::with_context(agent));
        }
        for p in self.phases.drain(..) {
            super::otel::submit(p);
        }
        super::otel::submit(request);
    }

    #[allow(clippy::too_many_arguments)]
    fn span_data(
        &self,
        span_id: SpanId,
        parent: SpanId,
        parent_remote: bool,
        kind: SpanKind,
        name: &'static str,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<KeyValue>,
        failed: bool,
    ) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                span_id,
                self.flags,
                false,
                self.state.clone(),
            ),
            parent_span_id: parent,
            parent_span_is_remote: parent_remote,
            span_kind: kind,
            name: Cow::Borrowed(name),
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if failed {
                Status::error("")
            } else {
                Status::Unset
            },
            instrumentation_scope: scope(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(tp: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", tp.parse().unwrap());
        h
    }

    #[test]
    fn the_agents_trace_context_is_read_or_refused() {
        let p = parent_of(&headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .unwrap();
        assert_eq!(p.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id().to_string(), "00f067aa0ba902b7");
        assert!(p.is_sampled() && p.is_remote());
        let p = parent_of(&headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ))
        .unwrap();
        assert!(!p.is_sampled());
        assert!(parent_of(&http::HeaderMap::new()).is_none());
        // A sampled parent: keygate's request span is its child, in its trace.
        let t = RequestTrace::from_headers(&headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .unwrap();
        assert_eq!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent.to_string(), "00f067aa0ba902b7");
        // The tool's traceparent: the same trace, the given span as parent, the flags.
        let tp = t.traceparent(t.span_id).unwrap();
        assert_eq!(
            tp.to_str().unwrap(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", t.span_id)
        );
        assert!(t.parent_remote && t.span_id != t.parent);
        // Not sampled: keygate's spans are recorded all the same, in a trace of their own
        // linked to the agent's span.
        let t = RequestTrace::from_headers(&headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ))
        .unwrap();
        assert_ne!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.parent == SpanId::INVALID && t.flags.is_sampled());
        let link = t.link.as_ref().unwrap();
        assert_eq!(
            link.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(link.span_id().to_string(), "00f067aa0ba902b7");
        // No parent: a new trace of keygate's own.
        let t = RequestTrace::from_headers(&http::HeaderMap::new()).unwrap();
        assert!(t.parent == SpanId::INVALID && t.trace_id != TraceId::INVALID);
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert!(parent_of(&headers(bad)).is_none(), "{bad:?}");
        }
    }
}
