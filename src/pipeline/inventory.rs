//! **inventory**: when an identity-creation call succeeds, record what was created: kind,
//! tool, the identifier the catalog finds in the response (never a secret), the creating
//! agent, the approver, the owner, the ticket, and when it is due for review.
//!
//! The response is read whole for this (identity-creation responses are small) and then
//! sent on to the agent unchanged.

use crate::config::Agent;
use crate::error::{full_body, Error, ErrorKind, ProxyBody};
use crate::routes::Operation;
use crate::store::{Approval, Millis, NewIdentity, Store};
use http::Response;
use http_body_util::BodyExt;
use std::time::Duration;

/// Largest identity-creation response keygate reads to find the identifier.
const MAX_RESPONSE: usize = 16 << 20;

/// The identity-creation call an inventory entry is recorded for.
pub struct Created<'a> {
    pub agent: &'a Agent,
    pub tool: &'a str,
    pub operation: &'a Operation,
    /// The path the call was sent to (where the catalog finds an identifier).
    pub forward_path: &'a str,
    /// The approval the call consumed; `None` when a policy pre-approved it.
    pub approval: Option<&'a Approval>,
    /// The policies that allowed it (the approver of a pre-approved call).
    pub policies: &'a [String],
    pub request_id: &'a str,
    /// `approvals.review_after`: when an entry is due for review, unless the approver said.
    pub review_after: Duration,
    /// When the identity was created (unix ms, by the gateway's clock).
    pub now: Millis,
    /// Where captured secrets go, when the tool captures them (`created_secrets`).
    pub capture: Option<Capture<'a>>,
}

/// What capturing a created secret needs.
pub struct Capture<'a> {
    pub vault: &'a crate::capture::Vault,
    pub agent_keys: &'a crate::pipeline::identify::aws_key::AgentKeys,
}

/// What was recorded: the inventory entry's id, or why none could be written (the
/// identity exists at the tool whatever happens here, so the agent gets its response,
/// unless it carries a secret to capture: that is never handed out unrecorded).
pub type Recorded = Result<String, String>;

/// Reads the tool's answer to an identity-creation call, records the identity, captures
/// the secret it returned (when the tool does and the catalog knows where it is), and
/// hands the answer on, each captured secret replaced by its handle. Returns the answer,
/// the record, and how many secrets were captured.
///
/// `recorded` is set as soon as the identity is recorded (or fails to be), so the audit
/// record names it even when the answer is then withheld.
pub async fn record(
    store: &dyn Store,
    c: Created<'_>,
    resp: Response<ProxyBody>,
    recorded: &mut Option<Recorded>,
) -> Result<(Response<ProxyBody>, usize), Error> {
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
    let op = c.operation;
    let identifier = op
        .catalog
        .and_then(|cat| crate::catalog::identifier(cat, c.forward_path, &bytes));
    let now = c.now;
    let review_after = c.review_after.as_millis() as i64;
    let (approver, owner, ticket, approval_id, review_by) = match c.approval {
        Some(a) => (
            a.approver.clone(),
            a.identity_owner
                .clone()
                .unwrap_or_else(|| c.agent.owner.to_string()),
            a.ticket.clone(),
            Some(a.id.clone()),
            a.review_by.unwrap_or(now + review_after),
        ),
        // Pre-approved by policy: the policy is the approver, the agent's owner the owner.
        None => (
            Some(format!("policy:{}", c.policies.join(","))),
            c.agent.owner.to_string(),
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
        tool: c.tool.to_string(),
        operation: op.name.to_string(),
        identifier,
        agent_id: c.agent.id.to_string(),
        approver,
        owner,
        ticket,
        approval_id,
        request_id: c.request_id.to_string(),
        created_at: now,
        review_by: Some(review_by),
    };
    let outcome = match store.record_identity(new).await {
        Ok(entry) => Ok(entry.id),
        Err(e) => {
            tracing::error!(request_id = %c.request_id, "identity created but not recorded in the inventory: {e}");
            Err(e.to_string())
        }
    };
    let recorded = recorded.insert(outcome);
    let fields = match (&c.capture, op.catalog) {
        (Some(_), Some(cat)) => crate::capture::fields(cat.name),
        _ => &[],
    };
    let (mut parts, bytes, captured) = match (&c.capture, fields.is_empty()) {
        (Some(cap), false) => {
            let Ok(identity_id) = &*recorded else {
                // The secret would be nobody's: withheld.
                return Err(Error::new(
                    ErrorKind::CaptureFailed,
                    "keygate could not keep the secret this call returned; it was not handed out",
                )
                .with_detail("the identity could not be recorded in the inventory"));
            };
            let creation = crate::capture::Creation {
                store,
                vault: cap.vault,
                agent_keys: cap.agent_keys,
                tool: c.tool,
                agent_id: &c.agent.id,
                identity_id,
                now,
            };
            let (out, n) = crate::capture::capture(&creation, fields, &bytes).await?;
            (parts, bytes::Bytes::from(out), n)
        }
        _ => (parts, bytes, 0),
    };
    if captured > 0 {
        // The body changed length: its framing is the new body's.
        parts.headers.remove(http::header::CONTENT_LENGTH);
    }
    Ok((Response::from_parts(parts, full_body(bytes)), captured))
}
