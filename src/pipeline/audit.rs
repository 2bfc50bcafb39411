//! **audit**: exactly one record per request, written when its response body is done
//! (so the record has the real byte count and duration), or when the body is dropped.

use super::body::OnFinish;
use super::context::RequestCtx;
use crate::error::ErrorKind;
use crate::telemetry::audit_log::{AuditLog, AuditRecord};
use crate::telemetry::metrics::Metrics;
use opentelemetry::KeyValue;
use std::sync::Arc;

struct Pending {
    log: AuditLog,
    metrics: Arc<Metrics>,
    ctx: RequestCtx,
    status: u16,
}

impl OnFinish for Pending {
    fn finish(self: Box<Self>, bytes_out: u64, completed: bool) {
        let Pending {
            log,
            metrics,
            mut ctx,
            status,
        } = *self;
        let duration = ctx.started.elapsed();
        let tool = ctx.tool.as_ref().map_or("", |t| &*t.tool.name);
        metrics.request(tool, ctx.decision, status, duration);
        // inject sets the provider, then the credential's id only once it is issued; a
        // provider that cannot issue one fails the request with credential_unavailable.
        if let Some(provider) = ctx.credential.provider {
            if ctx.credential.id.is_some() {
                metrics.credential(provider, true);
            } else if ctx
                .error
                .as_ref()
                .is_some_and(|e| e.kind == ErrorKind::CredentialUnavailable)
            {
                metrics.credential(provider, false);
            }
        }
        metrics.audit_record();
        // Whatever phase refused the request, a secret in its path never reaches the log.
        let path = recorded_path(&ctx.path);
        let policies = ctx.take_policies();
        if let Some(trace) = ctx.trace.take() {
            let attributes = span_attributes(
                &ctx,
                &policies,
                trace.server.as_ref(),
                &path,
                status,
                bytes_out,
            );
            trace.finish(ctx.start_time, attributes, status >= 500);
        }
        tracing::debug!(
            request_id = %ctx.request_id,
            duration_ms = duration.as_secs_f64() * 1e3,
            completed,
            "request finished"
        );
        let action = match ctx
            .tool
            .as_ref()
            .and_then(|t| t.tool.response_scan)
            .map(|s| s.mode)
        {
            Some(crate::pipeline::scan::Mode::Block) => "blocked",
            Some(crate::pipeline::scan::Mode::Pass) => "passed",
            _ => "redacted",
        };
        let tool_name: Arc<str> = ctx.tool.as_ref().map_or("".into(), |t| t.tool.name.clone());
        let tool = &*tool_name;
        let response_secrets: Vec<crate::telemetry::audit_log::ResponseSecret> = ctx
            .response_secrets
            .as_ref()
            .map(|f| f.snapshot())
            .unwrap_or_default()
            .into_iter()
            .map(|(format, location, count)| {
                metrics.response_secret(tool, format, action, count);
                crate::telemetry::audit_log::ResponseSecret {
                    format,
                    location,
                    count,
                    action,
                }
            })
            .collect();
        if ctx.captured > 0 {
            metrics.captured(tool, ctx.captured as u64);
        }
        let (agent_id, agent_owner, identity, issuer) = match &ctx.identity {
            Some(i) => (
                Some(i.agent.id.clone()),
                Some(i.agent.owner.clone()),
                Some(i.method.as_str()),
                i.issuer.clone(),
            ),
            None => (None, None, None, None),
        };
        log.record(AuditRecord {
            time: rfc3339_millis(ctx.start_time),
            request_id: ctx.request_id,
            agent_id,
            agent_owner,
            identity,
            issuer,
            spiffe_id: ctx.conn.spiffe_id.clone(),
            client: ctx.conn.client.clone(),
            tool: ctx.tool.as_ref().map(|t| t.tool.name.clone()),
            operation: ctx.operation.as_ref().map(|o| o.name.clone()),
            tags: ctx
                .operation
                .as_ref()
                .map(|o| o.tags.clone())
                .unwrap_or_default(),
            identity_kind: ctx.operation.as_ref().and_then(|o| o.identity_kind.clone()),
            policies,
            policy_errors: ctx.authorization.policy_errors,
            approval_id: ctx.approval_id,
            inventory_id: ctx
                .inventory
                .as_ref()
                .and_then(|r| r.as_ref().ok().cloned()),
            mcp: ctx.mcp.map(|m| m.record),
            method: ctx.method.to_string(),
            path,
            decision: ctx.decision.as_str(),
            error: ctx.error.as_ref().map(|e| e.kind.code()),
            error_detail: ctx.error.and_then(|e| e.detail).or(match ctx.inventory {
                Some(Err(e)) => Some(format!("inventory: {e}")),
                _ => None,
            }),
            status,
            duration_ms: (duration.as_secs_f64() * 1e6).round() / 1e3,
            bytes_in: ctx.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            bytes_out,
            completed,
            client_gone: ctx.client_gone.load(std::sync::atomic::Ordering::Relaxed),
            credential_provider: ctx.credential.provider,
            credential_id: ctx.credential.id,
            credential_role: ctx.credential.role,
            credential_expires: ctx.credential.expires_unix,
            credential_cached: ctx.credential.cached,
            credential_scope: ctx.credential.scope,
            stripped: ctx.stripped,
            handle: ctx.handle,
            task: ctx.task.as_ref().map(|t| t.id.clone()),
            captured: (ctx.captured > 0).then_some(ctx.captured),
            response_secrets,
            admin: None,
            anomaly: None,
        });
    }
}

/// `2026-11-25T02:46:32.859Z` (RFC 3339, UTC, milliseconds), as `humantime` writes it,
/// without the formatting machinery: it runs once per request.
pub fn rfc3339_millis(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = [0u8; 24];
    let mut put = |at: usize, v: u64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, u64::try_from(year.clamp(0, 9999)).unwrap_or(0), 4);
    put(5, u64::try_from(month).unwrap_or(0), 2);
    put(8, u64::try_from(day).unwrap_or(0), 2);
    put(11, rem / 3600, 2);
    put(14, rem / 60 % 60, 2);
    put(17, rem % 60, 2);
    put(20, u64::from(d.subsec_millis()), 3);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        out[at] = c;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// The path as the audit log and the span record it: known secret formats redacted, and
/// the whole path replaced when a secret shows only once percent-decoded. One place for
/// every phase that can refuse a request.
pub fn recorded_path(path: &str) -> String {
    if let Some((r, _)) = crate::secrets::redact(path.as_bytes()) {
        return String::from_utf8_lossy(&r).into_owned();
    }
    if path.contains('%')
        && crate::secrets::find_first(&crate::percent::decode_plus(path.as_bytes())).is_some()
    {
        return crate::secrets::REDACTED.to_string();
    }
    path.to_string()
}

/// The request span's attributes (OpenTelemetry semantic conventions plus `keygate.*`),
/// from the context the audit record is made of. Never a secret: ids and names only, the
/// path redacted, the credential's id and never its value.
fn span_attributes(
    ctx: &RequestCtx,
    policies: &[String],
    server: Option<&(String, Option<u16>)>,
    path: &str,
    status: u16,
    bytes_out: u64,
) -> Vec<KeyValue> {
    let s = |v: &str| opentelemetry::Value::from(v.to_string());
    let mut a = Vec::with_capacity(24);
    a.push(KeyValue::new("request_id", s(&ctx.request_id)));
    a.push(KeyValue::new("http.request.method", ctx.method.to_string()));
    a.push(KeyValue::new("url.path", s(path)));
    if let Some((host, port)) = server {
        a.push(KeyValue::new("server.address", host.clone()));
        if let Some(p) = port {
            a.push(KeyValue::new("server.port", i64::from(*p)));
        }
    }
    // i64: OTLP has no unsigned integers.
    a.push(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    a.push(KeyValue::new(
        "http.response.body.size",
        i64::try_from(bytes_out).unwrap_or(i64::MAX),
    ));
    a.push(KeyValue::new("keygate.decision", ctx.decision.as_str()));
    if let Some(e) = &ctx.error {
        a.push(KeyValue::new("error.type", e.kind.code()));
    }
    if let Some(i) = &ctx.identity {
        a.push(KeyValue::new("keygate.agent.id", s(&i.agent.id)));
        a.push(KeyValue::new("keygate.agent.owner", s(&i.agent.owner)));
    }
    if let Some(t) = &ctx.tool {
        a.push(KeyValue::new("keygate.tool", s(&t.tool.name)));
    }
    if let Some(op) = &ctx.operation {
        a.push(KeyValue::new("keygate.operation", s(&op.name)));
        let tags: Vec<&str> = op.tags.iter().map(|t| &**t).collect();
        a.push(KeyValue::new("keygate.tags", tags.join(",")));
    }
    if !policies.is_empty() {
        a.push(KeyValue::new("keygate.policies", policies.join(",")));
    }
    if !ctx.authorization.policy_errors.is_empty() {
        a.push(KeyValue::new(
            "keygate.policy_errors",
            ctx.authorization.policy_errors.join(","),
        ));
    }
    if let Some(id) = &ctx.approval_id {
        a.push(KeyValue::new("keygate.approval_id", id.clone()));
    }
    if let Some(p) = ctx.credential.provider {
        a.push(KeyValue::new("keygate.credential.provider", p));
    }
    if let Some(c) = &ctx.credential.id {
        a.push(KeyValue::new("keygate.credential.id", s(c)));
    }
    if let Some(r) = &ctx.credential.role {
        a.push(KeyValue::new("keygate.credential.role", s(r)));
    }
    if let Some(e) = ctx.credential.expires_unix {
        a.push(KeyValue::new(
            "keygate.credential.expires",
            i64::try_from(e).unwrap_or(i64::MAX),
        ));
    }
    if let Some(sc) = &ctx.credential.scope {
        a.push(KeyValue::new("keygate.credential.scope", s(sc)));
    }
    if let Some(c) = ctx.credential.cached {
        a.push(KeyValue::new("keygate.credential.cached", c));
    }
    if let Some(h) = &ctx.handle {
        a.push(KeyValue::new("keygate.handle.inventory_id", h.clone()));
    }
    if let Some(t) = &ctx.task {
        a.push(KeyValue::new("keygate.task.id", t.id.clone()));
    }
    if ctx.captured > 0 {
        a.push(KeyValue::new(
            "keygate.captured_secrets",
            i64::try_from(ctx.captured).unwrap_or(i64::MAX),
        ));
    }
    if let Some(found) = ctx.response_secrets.as_ref().map(|f| f.snapshot()) {
        if !found.is_empty() {
            // `format@location×count`, comma-separated: never a value.
            let text: Vec<String> = found
                .iter()
                .map(|(f, l, n)| format!("{f}@{l}\u{d7}{n}"))
                .collect();
            a.push(KeyValue::new("keygate.response_secrets", text.join(",")));
        }
    }
    if let Some(m) = ctx.mcp.as_ref().map(|m| &m.record) {
        if let Some(id) = &m.session_id {
            a.push(KeyValue::new("mcp.session.id", id.clone()));
        }
        if let Some(call) = m
            .calls
            .iter()
            .find(|c| c.method == "tools/call")
            .or(m.calls.first())
        {
            a.push(KeyValue::new("mcp.method.name", call.method.clone()));
            if call.method == "tools/call" {
                if let Some(n) = &call.name {
                    a.push(KeyValue::new("gen_ai.tool.name", n.clone()));
                }
            }
        }
    }
    a
}

/// Wraps the response body so the request's audit record is written exactly once.
pub fn attach(
    log: &AuditLog,
    metrics: &Arc<Metrics>,
    ctx: RequestCtx,
    resp: http::Response<crate::error::ProxyBody>,
) -> http::Response<crate::error::ProxyBody> {
    use http_body_util::BodyExt;
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let pending = Box::new(Pending {
        log: log.clone(),
        metrics: metrics.clone(),
        ctx,
        status,
    });
    let body = super::body::Finishing::new(body, pending).boxed();
    http::Response::from_parts(parts, body)
}

/// Writes the record of a request with no response body to wait for (a blind tunnel,
/// once it closed): `bytes_out` bytes went to the agent.
pub fn record_now(
    log: &AuditLog,
    metrics: &Arc<Metrics>,
    ctx: RequestCtx,
    status: u16,
    bytes_out: u64,
) {
    let pending = Box::new(Pending {
        log: log.clone(),
        metrics: metrics.clone(),
        ctx,
        status,
    });
    pending.finish(bytes_out, true);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn audit_times_match_humantime() {
        for secs in [
            0u64,
            951_782_400,   // 2000-02-29
            1_709_164_800, // 2024-02-29
            1_795_000_000,
            1_800_000_123,
            4_102_444_799, // 2099-12-31T23:59:59
            253_402_300_799,
        ] {
            for ms in [0u32, 7, 859, 999] {
                let t = UNIX_EPOCH + Duration::new(secs, ms * 1_000_000 + 123);
                assert_eq!(
                    super::rfc3339_millis(t),
                    humantime::format_rfc3339_millis(t).to_string(),
                    "{secs}.{ms}"
                );
            }
        }
        let now = SystemTime::now();
        assert_eq!(
            super::rfc3339_millis(now),
            humantime::format_rfc3339_millis(now).to_string()
        );
    }
}
