//! **watch**: the agent's baseline learns each call ([`crate::anomaly`]); what the
//! detectors find is made explainable here: an audit event and a span event with the
//! detector, the observed value and the baseline, a metric, a log line, and (for every
//! action but `record`) a notification through the approvals webhook. The driver
//! ([`super::run`]) applies the actions that change what the agent may do: `suspend`
//! (through the store, as `keygate agents suspend`) and `require_approval`.

use crate::anomaly::Finding;
use crate::config::Agent;
use crate::telemetry::audit_log::{AnomalyEvent, AuditRecord};
use opentelemetry::KeyValue;
use std::sync::Arc;
use std::time::Duration;

/// The request a finding came from, for its audit event.
pub struct Source<'a> {
    pub request_id: &'a Arc<str>,
    pub client: &'a Arc<str>,
    pub tool: Option<&'a Arc<str>>,
    pub method: &'a str,
    pub path: &'a str,
}

/// The audit event of one finding: the agent, the call it came from, the detector, what
/// it saw against the baseline, and the action taken.
pub fn audit_record(agent: &Agent, src: &Source<'_>, f: &Finding) -> AuditRecord {
    let mut r = AuditRecord::event(
        super::audit::rfc3339_millis(std::time::SystemTime::now()),
        src.request_id.clone(),
        src.client.clone(),
        format!("keygate:anomaly.{}", f.detector),
        src.method.to_string(),
        super::audit::recorded_path(src.path),
        200,
    );
    r.agent_id = Some(agent.id.clone());
    r.agent_owner = Some(agent.owner.clone());
    r.tool = src.tool.cloned();
    r.anomaly = Some(AnomalyEvent {
        detector: f.detector,
        action: f.action.as_str(),
        observed: f.observed.clone(),
        baseline: f.baseline.clone(),
    });
    r
}

/// The span event of one finding (`keygate.anomaly`).
pub fn span_attributes(f: &Finding) -> Vec<KeyValue> {
    vec![
        KeyValue::new("keygate.anomaly.detector", f.detector),
        KeyValue::new("keygate.anomaly.action", f.action.as_str()),
        KeyValue::new("keygate.anomaly.observed", f.observed.clone()),
        KeyValue::new("keygate.anomaly.baseline", f.baseline.clone()),
    ]
}

/// Tells the approvals webhook (Slack-compatible JSON) of a finding, within the
/// webhook's rate limit; in a task of its own (the call never waits on it).
pub fn notify(
    settings: &crate::config::ApprovalSettings,
    webhooks: &super::approve::WebhookLimiter,
    metrics: &crate::telemetry::metrics::Metrics,
    http: &crate::http_client::HttpClient,
    agent: &Agent,
    f: &Finding,
) {
    let Some(url) = settings.webhook_url.clone() else {
        return;
    };
    let sent = webhooks.allow(settings.webhook_max_per_minute);
    metrics.webhook_notification(sent);
    if !sent {
        tracing::warn!(agent = %agent.id, "approval webhook rate limit reached; anomaly notification dropped (it is in the audit log)");
        return;
    }
    let text = format!(
        "keygate: anomaly in agent `{}` (owner {}): {} — {}; baseline: {}. Action: {}.",
        agent.id,
        agent.owner,
        f.detector,
        f.observed,
        f.baseline,
        f.action.as_str()
    );
    let body = serde_json::json!({
        "text": text,
        "anomaly": {
            "agent_id": &*agent.id,
            "agent_owner": &*agent.owner,
            "detector": f.detector,
            "action": f.action.as_str(),
            "observed": f.observed,
            "baseline": f.baseline,
        },
    })
    .to_string();
    let client = http.clone();
    let agent = agent.id.clone();
    tokio::spawn(async move {
        let req = match http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(crate::error::full_body(body))
        {
            Ok(r) => r,
            Err(_) => return,
        };
        match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
            Ok(Ok(r)) if r.status().is_success() => {}
            Ok(Ok(r)) => {
                tracing::warn!(agent = %agent, status = %r.status(), "approval webhook refused the anomaly notification")
            }
            Ok(Err(e)) => tracing::warn!(agent = %agent, "approval webhook unreachable: {e}"),
            Err(_) => tracing::warn!(agent = %agent, "approval webhook timed out"),
        }
    });
}
