//! MCP (Model Context Protocol) over the Streamable HTTP transport.
//!
//! A tool with `protocol = "mcp"` is proxied whole (POST of JSON-RPC messages answered
//! with JSON or an SSE stream, GET for the server's stream, DELETE to end a session, the
//! `Mcp-Session-Id`, `MCP-Protocol-Version` and `Last-Event-ID` headers pass through), and
//! keygate understands what it carries:
//!
//! - every JSON-RPC request in a POST is classified and authorized on its own: a
//!   `tools/call` is the operation `mcp:<tool>`, decided by the Cedar action of that name
//!   (or `mcp:other_tool` when no policy names the tool), with the tool's arguments in the
//!   context; `resources/read` and `prompts/get` are reads with the URI or prompt name in
//!   the context; the rest of the protocol (initialize, lists, notifications) is a read;
//! - tools that create identities (by name, or listed in `mcp_identity_tools`) go through
//!   the approval gate, bound to the tool and its arguments (not the JSON-RPC id, which a
//!   retry changes);
//! - a refusal is a JSON-RPC error with the request's id, which MCP clients show the
//!   agent, with keygate's error code and approval id in `error.data`;
//! - a `tools/list` answer is filtered to the tools the agent's policies let it call, in
//!   a JSON answer and in an SSE stream alike.

use super::authorize::McpCall;
use crate::error::{BoxError, Error, ErrorKind, ProxyBody};
use crate::gateway::Gateway;
use crate::routes::Operation;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The JSON-RPC error code of keygate's refusals (implementation-defined server error).
pub const REFUSED: i64 = -32001;
/// JSON-RPC: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;

/// One JSON-RPC message of a POST.
#[derive(Debug, Clone)]
pub struct Message {
    /// Present on requests (and responses); absent on notifications.
    pub id: Option<Value>,
    /// Present on requests and notifications; absent on responses.
    pub method: Option<String>,
    pub params: Option<Value>,
}

impl Message {
    pub fn is_request(&self) -> bool {
        self.id.is_some() && self.method.is_some()
    }
}

/// The messages of one POST.
#[derive(Debug, Clone)]
pub struct Post {
    pub messages: Vec<Message>,
    pub batch: bool,
}

impl Post {
    /// The ids of the requests in it, in order (for JSON-RPC errors).
    pub fn request_ids(&self) -> Vec<Value> {
        self.messages
            .iter()
            .filter(|m| m.is_request())
            .filter_map(|m| m.id.clone())
            .collect()
    }
}

/// Parses the body of a POST to an MCP tool.
pub fn parse(body: &[u8]) -> Result<Post, Error> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        Error::new(ErrorKind::BadRequest, "the MCP message is not JSON").with_jsonrpc(PARSE_ERROR)
    })?;
    let (items, batch) = match v {
        Value::Array(a) if !a.is_empty() => (a, true),
        Value::Object(_) => (vec![v], false),
        _ => {
            return Err(Error::new(
                ErrorKind::BadRequest,
                "the MCP message is not a JSON-RPC message or batch",
            )
            .with_jsonrpc(INVALID_REQUEST))
        }
    };
    let mut messages = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(mut m) = item else {
            return Err(Error::new(
                ErrorKind::BadRequest,
                "a batch member is not a JSON-RPC message",
            )
            .with_jsonrpc(INVALID_REQUEST));
        };
        let method = match m.remove("method") {
            Some(Value::String(s)) => Some(s),
            None => None,
            Some(_) => {
                return Err(
                    Error::new(ErrorKind::BadRequest, "a JSON-RPC method must be a string")
                        .with_jsonrpc(INVALID_REQUEST),
                )
            }
        };
        messages.push(Message {
            id: m.remove("id").filter(|v| !v.is_null()),
            method,
            params: m.remove("params"),
        });
    }
    Ok(Post { messages, batch })
}

/// What policies see of a message.
pub fn call_of(m: &Message) -> McpCall {
    let method = m.method.clone().unwrap_or_default();
    let params = m.params.as_ref();
    let str_param = |k: &str| {
        params
            .and_then(|p| p.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let (name, arguments) = match method.as_str() {
        "tools/call" | "prompts/get" => (
            str_param("name"),
            arguments_of(params.and_then(|p| p.get("arguments"))),
        ),
        "resources/read" | "resources/subscribe" => (str_param("uri"), Vec::new()),
        _ => (None, Vec::new()),
    };
    McpCall {
        method,
        name,
        arguments,
    }
}

/// Top-level arguments as (key, string value): strings as they are, other values as
/// compact JSON.
fn arguments_of(v: Option<&Value>) -> Vec<(String, String)> {
    match v {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The canonical form of a call's arguments (keys sorted, compact), for digests.
pub fn canonical_arguments(m: &Message) -> Vec<u8> {
    let args = m
        .params
        .as_ref()
        .and_then(|p| p.get("arguments"))
        .cloned()
        .unwrap_or(Value::Null);
    // serde_json's maps are sorted (BTreeMap), so this is canonical.
    serde_json::to_vec(&args).unwrap_or_default()
}

/// A short digest of a call's arguments for the audit log (never their values).
pub fn arguments_digest(m: &Message) -> Option<String> {
    m.params.as_ref()?.get("arguments")?;
    let d = Sha256::digest(canonical_arguments(m));
    Some(format!(
        "sha256:{}",
        d[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

/// The operation of an MCP message.
pub fn operation(gw: &Gateway, tool: &crate::config::Tool, call: &McpCall) -> Arc<Operation> {
    match (call.method.as_str(), &call.name) {
        ("tools/call", Some(name)) => {
            let identity = super::authorize::mcp_creates_identity(
                name,
                &gw.snapshot.operations.mcp_identity_tools,
            ) || tool.mcp_identity_tools.iter().any(|n| n == name);
            let action = gw.snapshot.policies.mcp_action(name, identity);
            let tags: &[&str] = if identity {
                &["mcp_tool", "identity_creation", "write"]
            } else {
                &["mcp_tool"]
            };
            let mut op = Operation::new(
                &format!("mcp:{name}"),
                tags,
                identity.then_some("mcp_credential"),
            );
            op.action = action.into();
            Arc::new(op)
        }
        _ => gw.snapshot.operations.read.clone(),
    }
}

/// One JSON-RPC call as the audit log records it.
#[derive(Debug, Clone, Serialize)]
pub struct CallAudit {
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// Tool, prompt or resource named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_digest: Option<String>,
}

/// The MCP part of a request's audit record.
#[derive(Debug, Clone, Serialize, Default)]
pub struct McpAudit {
    pub session_id: Option<String>,
    pub calls: Vec<CallAudit>,
    #[serde(skip)]
    pub request_ids: Vec<Value>,
    #[serde(skip)]
    pub batch: bool,
    /// The id of a lone `tools/list` request, whose answer is filtered.
    #[serde(skip)]
    pub tools_list: Option<Value>,
}

impl McpAudit {
    pub fn of(post: &Post, session_id: Option<String>) -> McpAudit {
        let calls = post
            .messages
            .iter()
            .filter_map(|m| {
                let call = call_of(m);
                m.method.as_ref().map(|method| CallAudit {
                    method: method.clone(),
                    id: m.id.clone(),
                    name: call.name,
                    arguments_digest: arguments_digest(m),
                })
            })
            .collect();
        let tools_list = match post.messages.as_slice() {
            [m] if m.method.as_deref() == Some("tools/list") => m.id.clone(),
            _ => None,
        };
        McpAudit {
            session_id,
            calls,
            request_ids: post.request_ids(),
            batch: post.batch,
            tools_list,
        }
    }
}

/// A refusal as JSON-RPC: one error per request of the POST (an array for a batch), HTTP
/// 200, so MCP clients hand the message to the agent. A POST of notifications only gets
/// the HTTP status with an id-less error.
pub fn error_response(e: &Error, mcp: &McpAudit, request_id: &str) -> http::Response<ProxyBody> {
    let mut data = serde_json::json!({"error": e.kind.code(), "request_id": request_id});
    if let (Some(id), Some(d)) = (&e.approval_id, data.as_object_mut()) {
        d.insert("approval_id".into(), id.clone().into());
    }
    let code = e.jsonrpc_code.unwrap_or(REFUSED);
    let one = |id: Value| {
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": code, "message": e.message, "data": data},
        })
    };
    let (status, body) = if mcp.request_ids.is_empty() {
        (e.kind.status(), one(Value::Null))
    } else if mcp.batch {
        (
            http::StatusCode::OK,
            Value::Array(mcp.request_ids.iter().cloned().map(one).collect()),
        )
    } else {
        (http::StatusCode::OK, one(mcp.request_ids[0].clone()))
    };
    crate::error::json_response(status, body.to_string())
}

/// Whether the agent may see a tool in `tools/list`: allowed, or allowed with approval.
fn visible(
    gw: &Gateway,
    tool: &crate::config::Tool,
    agent: &crate::config::Agent,
    name: &str,
) -> bool {
    let call = McpCall {
        method: "tools/call".into(),
        name: Some(name.to_string()),
        arguments: Vec::new(),
    };
    let op = operation(gw, tool, &call);
    let input = super::authorize::Input {
        agent,
        tool,
        operation: &op,
        method: "POST",
        path: "/",
        now_unix: super::unix_now(),
        approved: false,
        mcp: Some(&call),
    };
    !matches!(
        gw.snapshot.policies.authorize(&input),
        super::authorize::Verdict::Deny { .. }
    )
}

/// A JSON-RPC message with `result.tools` filtered to the visible tools; `None` when it is
/// not the answer to `id`.
fn filter_message(msg: &mut Value, id: &Value, keep: &dyn Fn(&str) -> bool) -> bool {
    if msg.get("id") != Some(id) {
        return false;
    }
    let Some(tools) = msg
        .get_mut("result")
        .and_then(|r| r.get_mut("tools"))
        .and_then(|t| t.as_array_mut())
    else {
        return false;
    };
    tools.retain(|t| t.get("name").and_then(|n| n.as_str()).is_some_and(keep));
    true
}

/// Filters the answer to a `tools/list` request, JSON or SSE, to the tools the agent may call.
pub fn filter_tools_list(
    gw: Arc<Gateway>,
    tool: Arc<crate::config::Tool>,
    agent: Arc<crate::config::Agent>,
    id: Value,
    resp: http::Response<ProxyBody>,
) -> http::Response<ProxyBody> {
    use http_body_util::BodyExt;
    let ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let keep: Box<dyn Fn(&str) -> bool + Send + Sync> =
        Box::new(move |name: &str| visible(&gw, &tool, &agent, name));
    let (mut parts, body) = resp.into_parts();
    // The length changes: the new body says its own.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let body = if ct.starts_with("text/event-stream") {
        SseFilter {
            inner: body,
            buf: BytesMut::new(),
            id,
            keep,
            done: false,
        }
        .boxed()
    } else if ct.starts_with("application/json") {
        JsonFilter {
            inner: body,
            buf: BytesMut::new(),
            id,
            keep,
            done: false,
        }
        .boxed()
    } else {
        body
    };
    http::Response::from_parts(parts, body)
}

/// Collects a JSON answer, filters it, emits it at the end.
struct JsonFilter {
    inner: ProxyBody,
    buf: BytesMut,
    id: Value,
    keep: Box<dyn Fn(&str) -> bool + Send + Sync>,
    done: bool,
}

impl Body for JsonFilter {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        if this.buf.len() + d.len() > 16 << 20 {
                            return Poll::Ready(Some(Err("tools/list answer too large".into())));
                        }
                        this.buf.extend_from_slice(&d);
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let raw = std::mem::take(&mut this.buf).freeze();
                    let out = match serde_json::from_slice::<Value>(&raw) {
                        Ok(mut v) => {
                            let keep = &this.keep;
                            if filter_message(&mut v, &this.id, &|n| keep(n)) {
                                Bytes::from(v.to_string())
                            } else {
                                raw
                            }
                        }
                        Err(_) => raw,
                    };
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Passes an SSE stream through event by event, filtering the `tools/list` answer.
struct SseFilter {
    inner: ProxyBody,
    buf: BytesMut,
    id: Value,
    keep: Box<dyn Fn(&str) -> bool + Send + Sync>,
    done: bool,
}

/// The end of the first complete SSE event in `buf` (after its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

impl SseFilter {
    fn transform(&self, event: &[u8]) -> Bytes {
        let Ok(text) = std::str::from_utf8(event) else {
            return Bytes::copy_from_slice(event);
        };
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            return Bytes::copy_from_slice(event);
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&data.join("\n")) else {
            return Bytes::copy_from_slice(event);
        };
        if !filter_message(&mut v, &self.id, &|n| (self.keep)(n)) {
            return Bytes::copy_from_slice(event);
        }
        let mut out = String::with_capacity(text.len());
        let mut wrote = false;
        for line in text.lines() {
            if line.starts_with("data:") {
                if !wrote {
                    out.push_str("data: ");
                    out.push_str(&v.to_string());
                    out.push('\n');
                    wrote = true;
                }
            } else if !line.is_empty() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push('\n');
        Bytes::from(out)
    }
}

impl Body for SseFilter {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            // Emit every complete event as soon as it is there.
            if let Some(end) = event_end(&this.buf) {
                let event = this.buf.split_to(end);
                let out = this.transform(&event);
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
            if this.done {
                if this.buf.is_empty() {
                    return Poll::Ready(None);
                }
                let rest = std::mem::take(&mut this.buf).freeze();
                return Poll::Ready(Some(Ok(Frame::data(rest))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        this.buf.extend_from_slice(&d);
                    }
                }
                Poll::Ready(None) => this.done = true,
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_batches_parse() {
        let p = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi","n":2}}}"#).unwrap();
        assert!(!p.batch);
        assert_eq!(p.request_ids(), vec![serde_json::json!(7)]);
        let c = call_of(&p.messages[0]);
        assert_eq!(c.method, "tools/call");
        assert_eq!(c.name.as_deref(), Some("echo"));
        assert_eq!(
            c.arguments,
            vec![("message".into(), "hi".into()), ("n".into(), "2".into())]
        );
        assert!(arguments_digest(&p.messages[0])
            .unwrap()
            .starts_with("sha256:"));

        let p = parse(br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"a","method":"tools/list"}]"#).unwrap();
        assert!(p.batch);
        assert_eq!(p.request_ids(), vec![serde_json::json!("a")]);
        assert!(parse(b"not json").is_err());
        assert!(parse(b"[]").is_err());
        assert!(parse(b"[1]").is_err());
    }

    #[test]
    fn sse_events_are_split_at_blank_lines() {
        assert_eq!(event_end(b"data: x\n\nrest"), Some(9));
        assert_eq!(event_end(b"data: x\r\n\r\nrest"), Some(11));
        assert_eq!(event_end(b"data: x\n"), None);
    }

    #[test]
    fn tools_list_answers_are_filtered() {
        let mut v = serde_json::json!({"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo"},{"name":"secret"}]}});
        assert!(filter_message(&mut v, &serde_json::json!(3), &|n| n == "echo"));
        assert_eq!(v["result"]["tools"], serde_json::json!([{"name":"echo"}]));
        let mut other = serde_json::json!({"jsonrpc":"2.0","id":4,"result":{"tools":[]}});
        assert!(!filter_message(&mut other, &serde_json::json!(3), &|_| {
            true
        }));
    }
}
