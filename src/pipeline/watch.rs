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
    AuditRecord {
        time: super::audit::rfc3339_millis(std::time::SystemTime::now()),
        request_id: src.request_id.clone(),
        agent_id: Some(agent.id.clone()),
        agent_owner: Some(agent.owner.clone()),
        identity: None,
        issuer: None,
        spiffe_id: None,
        client: src.client.clone(),
        tool: src.tool.cloned(),
        operation: Some(format!("keygate:anomaly.{}", f.detector).into()),
        tags: Vec::new(),
        identity_kind: None,
        policies: Vec::new(),
        policy_errors: Vec::new(),
        approval_id: None,
        inventory_id: None,
        mcp: None,
        method: src.method.to_string(),
        path: super::audit::recorded_path(src.path),
        decision: "local",
        error: None,
        error_detail: None,
        status: 200,
        duration_ms: 0.0,
        bytes_in: 0,
        bytes_out: 0,
        completed: true,
        client_gone: false,
        credential_provider: None,
        credential_id: None,
        credential_role: None,
        credential_expires: None,
        credential_cached: None,
        credential_scope: None,
        stripped: Vec::new(),
        handle: None,
        task: None,
        captured: None,
        response_secrets: Vec::new(),
        admin: None,
        anomaly: Some(AnomalyEvent {
            detector: f.detector,
            action: f.action.as_str(),
            observed: f.observed.clone(),
            baseline: f.baseline.clone(),
        }),
    }
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
