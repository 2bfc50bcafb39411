//! **respond**, its second half: known secret formats in a tool's response (the formats
//! the request-side scanner knows, [`crate::secrets`]) are redacted, block the response,
//! or pass, per tool (`response_secrets`).
//!
//! STUB: the streaming scanner is being written; today this passes every response.

use crate::error::{Error, ProxyBody};
use http::Response;
use std::sync::{Arc, Mutex};

/// What a tool's responses do with a secret format found in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Overwritten in place, same length (the default).
    #[default]
    Redact,
    /// The response is refused: 502 `secret_in_response`.
    Block,
    /// Passed unchanged (explicitly configured), still counted and audited.
    Pass,
}

/// What a tool's compressed responses get when they must be scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compressed {
    /// gzip and deflate are decompressed (up to a limit) and sent uncompressed.
    #[default]
    Decompress,
    /// Refused: 502 `upstream_unavailable`.
    Refuse,
}

/// A tool's response-scanning settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub mode: Mode,
    pub compressed: Compressed,
    /// Largest decompressed body scanned; beyond it the response fails.
    pub max_decompressed: u64,
    /// Largest body held whole to decide a `Block` (beyond it: refused).
    pub max_buffered: u64,
}

/// What was found in one response: (format, location, count), never a value. Filled in
/// as the body streams; read by audit once the body ended.
#[derive(Debug, Default)]
pub struct Findings {
    inner: Mutex<Vec<(&'static str, String, u64)>>,
}

impl Findings {
    pub fn add(&self, format: &'static str, location: &str) {
        let Ok(mut v) = self.inner.lock() else { return };
        match v.iter_mut().find(|(f, l, _)| *f == format && l == location) {
            Some(e) => e.2 += 1,
            None => v.push((format, location.to_string(), 1)),
        }
    }

    pub fn snapshot(&self) -> Vec<(&'static str, String, u64)> {
        self.inner.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Scans the response per `settings`.
pub async fn scan(
    settings: &Settings,
    tool: &str,
    resp: Response<ProxyBody>,
    findings: Arc<Findings>,
) -> Result<Response<ProxyBody>, Error> {
    let _ = (settings, tool, findings);
    Ok(resp)
}
