//! Telemetry: the process log (tracing) and the audit log. OpenTelemetry export and
//! metrics come with the telemetry issue.

pub mod audit_chain;
pub mod audit_log;
pub mod metrics;
pub mod otel;

/// Sets up the process log (as [`init_logging`]) and, when an OTLP endpoint is
/// configured, span export. Returns the tracer provider to shut down at exit.
pub fn init(
    settings: Option<&crate::config::TelemetrySettings>,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let otlp = match settings {
        Some(s) => otel::settings(s)?,
        None => None,
    };
    let Some(otlp) = otlp else {
        init_logging();
        return Ok(None);
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = otel::provider(&otlp)?;
    // keygate's own spans only, whatever the log filter says.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(otel::tracer(&provider))
        // Only the attributes keygate sets: no thread, source location or busy/idle times.
        .with_threads(false)
        .with_location(false)
        .with_tracked_inactivity(false)
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target("keygate", tracing::Level::INFO),
        );
    let filter = EnvFilter::try_from_env("KEYGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("KEYGATE_LOG_FORMAT").as_deref() == Ok("json");
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(spans)
        .try_init();
    tracing::info!(endpoint = %otlp.endpoint, protocol = ?otlp.protocol, service = %otlp.service_name, "exporting spans over OTLP");
    Ok(Some(provider))
}

/// Sets up the process log on stderr: `KEYGATE_LOG` filters (default `info`),
/// `KEYGATE_LOG_FORMAT=json` switches to JSON lines.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KEYGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("KEYGATE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
