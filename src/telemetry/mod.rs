//! Telemetry: the process log (tracing), the audit log, metrics, and request spans
//! exported over OTLP.

pub mod audit_chain;
pub mod audit_log;
pub mod metrics;
pub mod otel;
pub mod record;
pub mod spans;

/// Sets up the process log (as [`init_logging`]) and, when an OTLP endpoint is
/// configured, span export (see [`spans`]). Returns whether spans are exported; call
/// [`otel::flush`] before exit.
pub fn init(settings: Option<&crate::config::TelemetrySettings>) -> Result<bool, String> {
    init_logging();
    let otlp = match settings {
        Some(s) => otel::settings(s)?,
        None => None,
    };
    let Some(otlp) = otlp else {
        return Ok(false);
    };
    otel::start(&otlp)?;
    tracing::info!(endpoint = %otlp.endpoint, protocol = ?otlp.protocol, service = %otlp.service_name, "exporting spans over OTLP");
    Ok(true)
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
