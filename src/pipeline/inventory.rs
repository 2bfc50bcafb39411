//! **inventory**: when an identity-creation call succeeds, record what was created: kind,
//! tool, the identifier the catalog finds in the response (never a secret), the creating
//! agent, the approver, the owner, the ticket, and when it is due for review.
//!
//! The response is read whole for this (identity-creation responses are small) and then
//! sent on to the agent unchanged.

use super::context::RequestCtx;
use crate::error::{full_body, Error, ErrorKind, ProxyBody};
use crate::gateway::Gateway;
use crate::routes::Operation;
use crate::store::{now_millis, NewIdentity};
use http::Response;
use http_body_util::BodyExt;

/// Largest identity-creation response keygate reads to find the identifier.
const MAX_RESPONSE: usize = 16 << 20;

pub async fn record(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    op: &Operation,
    resp: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, Error> {
    let (parts, mut body) = resp.into_parts();
    let unreadable = |detail: String| {
        Error::new(
            ErrorKind::UpstreamUnavailable,
            "the tool's response to an identity-creation call could not be read",
        )
        .with_detail(detail)
    };
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| unreadable(e.to_string()))?;
        if let Ok(d) = frame.into_data() {
            if buf.len() + d.len() > MAX_RESPONSE {
                return Err(unreadable("response larger than 16 MiB".into()));
            }
            buf.extend_from_slice(&d);
        }
    }
    let bytes = buf.freeze();
    let identifier = op
        .catalog
        .and_then(|c| crate::catalog::identifier(c, &ctx.forward_path, &bytes));
    let Some(identity) = &ctx.identity else {
        return Ok(Response::from_parts(parts, full_body(bytes)));
    };
    let now = now_millis();
    let review_after = gw.snapshot.approvals.review_after.as_millis() as i64;
    let (approver, owner, ticket, approval_id, review_by) = match &ctx.approval {
        Some(a) => (
            a.approver.clone(),
            a.identity_owner
                .clone()
                .unwrap_or_else(|| identity.agent.owner.to_string()),
            a.ticket.clone(),
            Some(a.id.clone()),
            a.review_by.unwrap_or(now + review_after),
        ),
        // Pre-approved by policy: the policy is the approver, the agent's owner the owner.
        None => (
            Some(format!("policy:{}", ctx.policies.join(","))),
            identity.agent.owner.to_string(),
            None,
            None,
            now + review_after,
        ),
    };
    let new = NewIdentity {
        kind: op
            .identity_kind
            .as_deref()
            .unwrap_or("identity")
            .to_string(),
        tool: ctx
            .tool
            .as_ref()
            .map(|t| t.tool.name.to_string())
            .unwrap_or_default(),
        operation: op.name.to_string(),
        identifier,
        agent_id: identity.agent.id.to_string(),
        approver,
        owner,
        ticket,
        approval_id,
        request_id: ctx.request_id.to_string(),
        created_at: now,
        review_by: Some(review_by),
    };
    match gw.shared.store.record_identity(new).await {
        Ok(entry) => ctx.inventory_id = Some(entry.id),
        // The identity exists at the tool whatever happens here: the agent gets its
        // response, and the failure is loud in the log and the audit record.
        Err(e) => {
            tracing::error!(request_id = %ctx.request_id, "identity created but not recorded in the inventory: {e}");
            ctx.inventory_error = Some(e.to_string());
        }
    }
    Ok(Response::from_parts(parts, full_body(bytes)))
}
