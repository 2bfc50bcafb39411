//! **inject**: put the credential the tool's provider issues for this agent on the request.
//!
//! The provider's credential replaces any header of the same name (strip already removed
//! the agent's). A provider that cannot issue one fails the request with
//! `credential_unavailable`: nothing is forwarded without keygate's credential.

use super::context::RequestCtx;
use crate::credentials::Placement;
use crate::error::{Error, ErrorKind};
use crate::gateway::ToolRuntime;
use crate::telemetry::spans::RequestTrace;
use http::Request;
use opentelemetry::KeyValue;

pub fn inject<B>(
    ctx: &mut RequestCtx,
    tool: &ToolRuntime,
    req: &mut Request<B>,
) -> Result<(), Error> {
    ctx.credential_provider = Some(tool.provider.name());
    let agent = match &ctx.identity {
        Some(i) => i.agent.clone(),
        None => {
            return Err(Error::new(
                ErrorKind::Unauthenticated,
                "no agent identity for this request",
            ))
        }
    };
    let phase = ctx
        .trace
        .as_ref()
        .map(|_| RequestTrace::begin("keygate.credential"));
    let issued = tool.provider.issue(&agent);
    // A span for a credential minted now (or a failure), not for a static or reused one.
    let worth_a_span = issued.as_ref().map_or(true, |i| i.minted);
    if let (Some(trace), Some(phase), true) = (ctx.trace.as_mut(), phase, worth_a_span) {
        let attrs = vec![KeyValue::new(
            "keygate.credential.provider",
            tool.provider.name(),
        )];
        trace.end_phase(phase, attrs, issued.is_err());
    }
    let issued = issued.map_err(|e| {
        Error::new(
            ErrorKind::CredentialUnavailable,
            format!(
                "keygate could not obtain a credential for tool {:?}",
                &*tool.tool.name
            ),
        )
        .with_detail(e.0)
    })?;
    ctx.credential_id = Some(issued.id);
    match issued.placement {
        Placement::Header(name, value) => {
            req.headers_mut().insert(name, value);
        }
        Placement::Query { name, encoded } => {
            let q = ctx.forward_query.get_or_insert_with(String::new);
            if !q.is_empty() {
                q.push('&');
            }
            form_urlencoded::byte_serialize(name.as_bytes()).for_each(|s| q.push_str(s));
            q.push('=');
            q.push_str(&encoded);
        }
    }
    Ok(())
}
