//! Telemetry: the process log (tracing) and the audit log. OpenTelemetry export and
//! metrics come with the telemetry issue.

pub mod audit_chain;
pub mod audit_log;
pub mod metrics;

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
