//! MCP (Model Context Protocol) over the Streamable HTTP transport.
//!
//! A tool with `protocol = "mcp"` is proxied whole (POST of JSON-RPC messages answered
//! with JSON or an SSE stream, GET for the server's stream, DELETE to end a session, the
//! `Mcp-Session-Id`, `MCP-Protocol-Version` and `Last-Event-ID` headers pass through), and
//! keygate understands what it carries:
//!
//! - a POST is parsed strictly ([`parse`]): a message that two JSON parsers could read
//!   differently (duplicate member names, names equal ignoring case, non-ASCII
//!   look-alikes such as `paramſ`; CVE-2026-27896) is refused, so what keygate authorizes
//!   is what the server runs; a batch holds at most [`MAX_BATCH`] messages;
//! - every JSON-RPC message in a POST is classified and authorized on its own, responses
//!   and notifications included: a `tools/call` is the operation `mcp:<tool>`, decided by
//!   the Cedar action of that name (or `mcp:other_tool` when no policy names the tool),
//!   with the tool's arguments in the context; `resources/read` and `prompts/get` are
//!   reads with the URI or prompt name in the context; the rest of the protocol
//!   (initialize, lists, notifications, the client's responses) is a read; a method
//!   keygate does not know, or a `tools/call` without a string `name`, is refused;
//! - only POST, GET and DELETE reach an MCP tool (GET and DELETE decided as a read);
//! - tools that create identities (by name, or listed in `mcp_identity_tools`) go through
//!   the approval gate, bound to the tool and the canonical form of its arguments (exact
//!   numbers, sorted members; not the JSON-RPC id, which a retry changes);
//! - a refusal is a JSON-RPC error with the request's id, which MCP clients show the
//!   agent, with keygate's error code and approval id in `error.data`;
//! - a `tools/list` answer is filtered to the tools the agent's policies let it call, in
//!   a JSON answer and in an SSE stream alike.

use super::authorize::Authorization;
use crate::config::{Agent, Snapshot, Tool};
use crate::error::{BoxError, Error, ErrorKind, ProxyBody};
use crate::policy::{Input, McpCall, PolicyEngine, Verdict};
use crate::routes::{Operation, Operations};
pub use crate::telemetry::record::{McpCallRecord, McpRecord};
use crate::telemetry::spans::RequestTrace;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The JSON-RPC error code of keygate's refusals (implementation-defined server error).
pub const REFUSED: i64 = -32001;
/// JSON-RPC: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;

/// JSON-RPC: the method does not exist (here: keygate does not know it).
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;

/// The most messages keygate decides in one JSON-RPC batch; a larger batch is refused
/// whole (`batch_too_large`), before any of it is authorized or forwarded.
pub const MAX_BATCH: usize = 64;

/// How deep JSON may nest in an MCP message (serde_json's own limit): the strict parser
/// recurses, so its depth is bounded.
const MAX_DEPTH: usize = 128;

/// A JSON value as the strict parser read it, with nothing lost or chosen:
///
/// - a number keeps its literal text (`18446744073709551617` stays itself, where an `f64`
///   would round it onto `18446744073709551616`);
/// - an object's members are unique, even ignoring case, and sorted by name (bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number's literal text, as sent (valid JSON number syntax).
    Number(Box<str>),
    String(String),
    Array(Vec<Json>),
    /// Sorted by name, no two names equal or equal ignoring case.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The member `key` of an object (exact name).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(m) => m
                .binary_search_by(|(k, _)| k.as_str().cmp(key))
                .ok()
                .map(|i| &m[i].1),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The canonical encoding: compact, members in name order, numbers as their literal
    /// text, strings escaped as serde_json escapes them (`"`, `\` and control characters
    /// only). Two values have the same encoding only if they are the same JSON value
    /// written with other whitespace, escapes or member order: the encoding is a JSON
    /// text that decodes back to the value, so it cannot collide.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(true) => out.extend_from_slice(b"true"),
            Json::Bool(false) => out.extend_from_slice(b"false"),
            Json::Number(n) => out.extend_from_slice(n.as_bytes()),
            Json::String(s) => write_string(s, out),
            Json::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write_canonical(out);
                }
                out.push(b']');
            }
            Json::Object(members) => {
                out.push(b'{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(k, out);
                    out.push(b':');
                    v.write_canonical(out);
                }
                out.push(b'}');
            }
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// What a JSON-RPC message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `method` and `id`: answered.
    Request,
    /// `method` without `id`: not answered.
    Notification,
    /// `id` and `result` or `error`, no `method`: the client's answer to a server's
    /// request (sampling, roots, elicitation).
    Response,
}

/// One JSON-RPC message of a POST.
#[derive(Debug, Clone)]
pub struct Message {
    pub kind: Kind,
    /// Present on requests and responses (a string or an integer; `null` only on an
    /// error response); absent on notifications.
    pub id: Option<Value>,
    /// Present on requests and notifications; absent on responses.
    pub method: Option<String>,
    /// An object when present.
    pub params: Option<Json>,
}

impl Message {
    pub fn is_request(&self) -> bool {
        self.kind == Kind::Request
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

fn not_json(_: jiter::JiterError) -> Error {
    Error::new(ErrorKind::BadRequest, "the MCP message is not JSON").with_jsonrpc(PARSE_ERROR)
}

fn invalid(message: &str) -> Error {
    Error::new(ErrorKind::BadRequest, message).with_jsonrpc(INVALID_REQUEST)
}

fn ambiguous(message: &str) -> Error {
    Error::new(ErrorKind::AmbiguousJson, message).with_jsonrpc(INVALID_REQUEST)
}

/// Parses the body of a POST to an MCP tool, as strictly as the strictest server would
/// and more: a body that two JSON-RPC servers could read differently is refused, never
/// read one way by keygate and another by the tool.
///
/// - The whole body is one JSON text (a message or a batch of 1 to [`MAX_BATCH`]
///   messages), read by a real tokenizer (`jiter`) with nothing after it.
/// - In every object of it, at any depth (envelope, `params`, `arguments`, `result`):
///   no member name twice, no two names that are equal ignoring case (Go's
///   `encoding/json` matches names case-insensitively, CVE-2026-27896, so
///   `{"name":"echo","Name":"create_api_token"}` could call either tool), and no name
///   with a non-ASCII letter whose case mapping is ASCII (`paramſ`, Kelvin `K`, `ı`,
///   `İ`: Go folds them onto `params`, `k`, `i`).
/// - Each message is a JSON-RPC 2.0 request, notification or response with only the
///   members JSON-RPC defines; its `id` a string or an integer; its `params` an object.
///
/// A pure function of the bytes, so fuzz targets can call it.
pub fn parse(body: &[u8]) -> Result<Post, Error> {
    let mut j = jiter::Jiter::new(body);
    let post = match j.peek().map_err(not_json)? {
        jiter::Peek::Array => {
            let mut messages = Vec::new();
            let mut next = j.known_array().map_err(not_json)?;
            while let Some(peek) = next {
                if messages.len() == MAX_BATCH {
                    return Err(Error::new(
                        ErrorKind::BatchTooLarge,
                        format!(
                            "a JSON-RPC batch may hold at most {MAX_BATCH} messages; send fewer at once"
                        ),
                    )
                    .with_jsonrpc(INVALID_REQUEST));
                }
                messages.push(message(value(&mut j, peek, 1)?)?);
                next = j.array_step().map_err(not_json)?;
            }
            if messages.is_empty() {
                return Err(invalid("the JSON-RPC batch is empty"));
            }
            Post {
                messages,
                batch: true,
            }
        }
        jiter::Peek::Object => {
            let v = value(&mut j, jiter::Peek::Object, 0)?;
            Post {
                messages: vec![message(v)?],
                batch: false,
            }
        }
        _ => {
            // Still JSON? Then it is the wrong shape, not a parse error.
            let peek = j.peek().map_err(not_json)?;
            value(&mut j, peek, 0)?;
            j.finish().map_err(not_json)?;
            return Err(invalid(
                "the MCP message is not a JSON-RPC message or batch",
            ));
        }
    };
    j.finish().map_err(not_json)?;
    Ok(post)
}

/// One JSON value, strictly (see [`parse`]).
fn value(j: &mut jiter::Jiter, peek: jiter::Peek, depth: usize) -> Result<Json, Error> {
    use jiter::Peek;
    if depth > MAX_DEPTH {
        return Err(invalid("the MCP message nests too deeply"));
    }
    Ok(match peek {
        Peek::Null => {
            j.known_null().map_err(not_json)?;
            Json::Null
        }
        Peek::True | Peek::False => Json::Bool(j.known_bool(peek).map_err(not_json)?),
        Peek::String => Json::String(j.known_str().map_err(not_json)?.to_owned()),
        Peek::Array => {
            let mut items = Vec::new();
            let mut next = j.known_array().map_err(not_json)?;
            while let Some(p) = next {
                items.push(value(j, p, depth + 1)?);
                next = j.array_step().map_err(not_json)?;
            }
            Json::Array(items)
        }
        Peek::Object => {
            let mut members: Vec<(String, Json)> = Vec::new();
            let mut key = j.known_object().map_err(not_json)?.map(str::to_owned);
            while let Some(k) = key {
                if !k.is_ascii() && k.chars().any(folds_to_ascii) {
                    return Err(ambiguous(
                        "a JSON member name has a non-ASCII letter that servers may read as an ASCII one; use the plain ASCII name",
                    ));
                }
                let p = j.peek().map_err(not_json)?;
                let v = value(j, p, depth + 1)?;
                members.push((k, v));
                key = j.next_key().map_err(not_json)?.map(str::to_owned);
            }
            members.sort_by(|a, b| a.0.cmp(&b.0));
            if has_case_duplicates(&members) {
                return Err(ambiguous(
                    "a JSON object has two members of the same name, or of names that differ only in case; servers may read either, so send each member once",
                ));
            }
            Json::Object(members)
        }
        p if p.is_num() => {
            let bytes = j.known_number_bytes(p).map_err(not_json)?;
            // A JSON number is ASCII.
            let text =
                std::str::from_utf8(bytes).map_err(|_| invalid("the MCP message is not JSON"))?;
            Json::Number(text.into())
        }
        _ => {
            return Err(
                Error::new(ErrorKind::BadRequest, "the MCP message is not JSON")
                    .with_jsonrpc(PARSE_ERROR),
            )
        }
    })
}

/// A non-ASCII character whose lower- or upper-case form holds an ASCII letter: `ſ`
/// (upper `S`), Kelvin `K` (lower `k`), `ı` (upper `I`), `İ` (lower `i̇`), and the
/// ligatures `ß`, `ﬁ`… (full upper case `SS`, `FI`). Case-insensitive matchers (Go's
/// `encoding/json` among them) can take a name with one for an ASCII name.
fn folds_to_ascii(c: char) -> bool {
    !c.is_ascii()
        && (c.to_lowercase().any(|l| l.is_ascii()) || c.to_uppercase().any(|u| u.is_ascii()))
}

/// A name's case-folded form (Unicode lower then upper case, as Go folds it).
fn fold(name: &str) -> String {
    if name.is_ascii() {
        return name.to_ascii_lowercase();
    }
    name.chars()
        .flat_map(char::to_lowercase)
        .flat_map(char::to_uppercase)
        .collect()
}

/// Whether two members of an object (sorted by name) have equal names, or names equal
/// ignoring case. Small objects compare pairwise without allocating; larger ones sort
/// their folded names.
fn has_case_duplicates(members: &[(String, Json)]) -> bool {
    if members.len() <= 16 {
        for (i, (a, _)) in members.iter().enumerate() {
            for (b, _) in &members[i + 1..] {
                let same = if a.is_ascii() && b.is_ascii() {
                    a.eq_ignore_ascii_case(b)
                } else {
                    fold(a) == fold(b)
                };
                if same {
                    return true;
                }
            }
        }
        return false;
    }
    let mut folded: Vec<String> = members.iter().map(|(k, _)| fold(k)).collect();
    folded.sort_unstable();
    folded.windows(2).any(|w| w[0] == w[1])
}

/// The JSON-RPC id of a message: a string or an integer (kept exact).
fn id_of(v: Json) -> Result<Value, Error> {
    let bad = || invalid("a JSON-RPC id must be a string or an integer");
    match v {
        Json::String(s) => Ok(Value::String(s)),
        Json::Number(n) => {
            let digits = n.strip_prefix('-').unwrap_or(&n);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            if let Ok(i) = n.parse::<i64>() {
                Ok(Value::from(i))
            } else if let Ok(u) = n.parse::<u64>() {
                Ok(Value::from(u))
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

/// One JSON-RPC 2.0 message: a request, a notification or a response, with only the
/// members JSON-RPC defines (a server could read any other, such as `Method`, as one).
fn message(v: Json) -> Result<Message, Error> {
    let Json::Object(members) = v else {
        return Err(invalid("a batch member is not a JSON-RPC message"));
    };
    let mut jsonrpc = false;
    let mut id: Option<Json> = None;
    let mut method: Option<String> = None;
    let mut params: Option<Json> = None;
    let (mut result, mut error) = (false, false);
    for (k, v) in members {
        match k.as_str() {
            "jsonrpc" => jsonrpc = v.as_str() == Some("2.0"),
            "id" => id = Some(v),
            "method" => match v {
                Json::String(s) => method = Some(s),
                _ => return Err(invalid("a JSON-RPC method must be a string")),
            },
            "params" => match v {
                Json::Object(_) => params = Some(v),
                _ => return Err(invalid("MCP params must be a JSON object")),
            },
            "result" => result = true,
            "error" => error = true,
            other => {
                let known = ["jsonrpc", "id", "method", "params", "result", "error"];
                return Err(if known.iter().any(|n| n.eq_ignore_ascii_case(other)) {
                    ambiguous("a JSON-RPC member name is written in the wrong case; servers may read it as the member, so use the exact name")
                } else {
                    invalid("a JSON-RPC message has a member JSON-RPC does not define")
                });
            }
        }
    }
    if !jsonrpc {
        return Err(invalid("a JSON-RPC message must say \"jsonrpc\": \"2.0\""));
    }
    match method {
        Some(method) => {
            if result || error {
                return Err(invalid(
                    "a JSON-RPC message is a request or a response, not both",
                ));
            }
            let (kind, id) = match id {
                None => (Kind::Notification, None),
                Some(Json::Null) => {
                    return Err(invalid("a JSON-RPC request id must not be null"));
                }
                Some(v) => (Kind::Request, Some(id_of(v)?)),
            };
            Ok(Message {
                kind,
                id,
                method: Some(method),
                params,
            })
        }
        None => {
            if result == error || params.is_some() {
                return Err(invalid(
                    "a JSON-RPC message without a method must be a response: an id and either a result or an error",
                ));
            }
            let id = match id {
                Some(Json::Null) if error => None,
                Some(Json::Null) | None => {
                    return Err(invalid("a JSON-RPC response must carry the id it answers"))
                }
                Some(v) => Some(id_of(v)?),
            };
            Ok(Message {
                kind: Kind::Response,
                id,
                method: None,
                params: None,
            })
        }
    }
}

/// How keygate decides each MCP method it knows (client to server, 2025-11-25 spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// `tools/call`: the tool's own action, arguments in the context.
    ToolCall,
    /// `prompts/get`: a read naming the prompt, its arguments in the context.
    Prompt,
    /// `resources/read`, `resources/subscribe`, `resources/unsubscribe`: a read naming
    /// the URI.
    Resource,
    /// The rest of the protocol: a read.
    Protocol,
}

fn known(method: &str) -> Option<Known> {
    Some(match method {
        "tools/call" => Known::ToolCall,
        "prompts/get" => Known::Prompt,
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Known::Resource,
        "initialize"
        | "ping"
        | "tools/list"
        | "resources/list"
        | "resources/templates/list"
        | "prompts/list"
        | "completion/complete"
        | "logging/setLevel"
        | "tasks/get"
        | "tasks/result"
        | "tasks/list"
        | "tasks/cancel"
        | "notifications/initialized"
        | "notifications/cancelled"
        | "notifications/progress"
        | "notifications/roots/list_changed"
        | "notifications/tasks/status" => Known::Protocol,
        _ => return None,
    })
}

/// The member `name` of params, refusing a case variant of it in its place (`Name`
/// without `name`: a case-insensitive server would read it as `name`).
fn member<'a>(params: Option<&'a Json>, name: &str) -> Result<Option<&'a Json>, Error> {
    let Some(Json::Object(members)) = params else {
        return Ok(None);
    };
    for (k, v) in members {
        if k == name {
            return Ok(Some(v));
        }
        if k.eq_ignore_ascii_case(name) {
            return Err(ambiguous("an MCP parameter name is written in the wrong case; servers may read it as the parameter, so use the exact name"));
        }
    }
    Ok(None)
}

fn required_str<'a>(params: Option<&'a Json>, name: &str, method: &str) -> Result<&'a str, Error> {
    member(params, name)?.and_then(Json::as_str).ok_or_else(|| {
        Error::new(
            ErrorKind::BadRequest,
            format!("an MCP {method} request needs a string params.{name}"),
        )
        .with_jsonrpc(INVALID_PARAMS)
    })
}

/// The `arguments` of a call: an object, or absent (`null` reads as absent).
fn arguments_member(params: Option<&Json>) -> Result<Option<&Json>, Error> {
    match member(params, "arguments")? {
        None | Some(Json::Null) => Ok(None),
        Some(a @ Json::Object(_)) => Ok(Some(a)),
        Some(_) => Err(
            Error::new(ErrorKind::BadRequest, "MCP arguments must be a JSON object")
                .with_jsonrpc(INVALID_PARAMS),
        ),
    }
}

/// What policies see of a message; refuses what keygate cannot decide.
///
/// Every message gets a call, so every message gets a decision: a response from the
/// client (no method) is protocol (`read`, `mcp_method` empty); a known method is
/// decided as its kind; a method keygate does not know is refused
/// (`unknown_mcp_method`), never authorized as a read, since it may do anything;
/// a `tools/call` without a string `name` is refused, never decided without its tool.
pub fn call_of(m: &Message) -> Result<McpCall, Error> {
    let Some(method) = m.method.as_deref() else {
        return Ok(McpCall::default());
    };
    let Some(kind) = known(method) else {
        let shown: String = method.chars().take(64).collect();
        return Err(Error::new(
            ErrorKind::UnknownMcpMethod,
            format!("keygate does not know the MCP method {shown:?} and refuses it"),
        )
        .with_jsonrpc(METHOD_NOT_FOUND));
    };
    let params = m.params.as_ref();
    let (name, arguments) = match kind {
        Known::ToolCall | Known::Prompt => (
            Some(required_str(params, "name", method)?.to_string()),
            arguments_of(arguments_member(params)?),
        ),
        Known::Resource => (
            Some(required_str(params, "uri", method)?.to_string()),
            Vec::new(),
        ),
        Known::Protocol => (None, Vec::new()),
    };
    Ok(McpCall {
        method: method.to_string(),
        name,
        arguments,
    })
}

/// The tool, prompt or URI a message names, for the audit record (no refusal here:
/// [`call_of`] decides).
fn named(m: &Message) -> Option<String> {
    let key = match known(m.method.as_deref()?)? {
        Known::ToolCall | Known::Prompt => "name",
        Known::Resource => "uri",
        Known::Protocol => return None,
    };
    m.params.as_ref()?.get(key)?.as_str().map(str::to_string)
}

/// Top-level arguments as (key, string value), in name order: strings as they are, other
/// values in their canonical encoding (numbers exactly as sent).
fn arguments_of(v: Option<&Json>) -> Vec<(String, String)> {
    match v {
        Some(Json::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Json::String(s) => s.clone(),
                    other => String::from_utf8_lossy(&other.canonical()).into_owned(),
                };
                (k.clone(), s)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The canonical form of a call's arguments, for the approval digest: see
/// [`Json::canonical`] (`null` when it has none). Two calls have the same form only
/// when their arguments are the same JSON value, so an approval of one is never spent
/// on another: not with numbers beyond 64 bits, not with members reordered (the same
/// value), and never with duplicate members (refused by [`parse`]).
/// The canonical form of a message's whole `params` (`null` when absent): what an
/// approval of the message binds, so nothing in it (`_meta`, a task id, a level) can
/// change after a human approved it.
pub fn canonical_params(m: &Message) -> Vec<u8> {
    m.params
        .as_ref()
        .map_or_else(|| b"null".to_vec(), Json::canonical)
}

pub fn canonical_arguments(m: &Message) -> Vec<u8> {
    match arguments_member(m.params.as_ref()) {
        Ok(Some(a)) => a.canonical(),
        _ => b"null".to_vec(),
    }
}

/// A short digest of a call's arguments for the audit log (never their values).
pub fn arguments_digest(m: &Message) -> Option<String> {
    m.params.as_ref()?.get("arguments")?;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical_arguments(m));
    Some(format!("sha256:{}", const_hex::encode(&d.as_ref()[..8])))
}

/// MCP's Streamable HTTP transport uses POST (messages), GET (the server's stream) and
/// DELETE (ending a session), spelled so. Any other method to an MCP tool is refused:
/// a server that takes `post` or `PUT` for a POST would run messages keygate never
/// parsed or decided.
pub fn check_http_method(method: &http::Method) -> Result<(), Error> {
    use http::Method;
    if *method == Method::POST || *method == Method::GET || *method == Method::DELETE {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::MethodNotAllowed,
        "an MCP tool takes POST, GET and DELETE only",
    ))
}

/// The operation of an MCP message.
pub fn operation(
    policies: &PolicyEngine,
    ops: &Operations,
    tool: &Tool,
    call: &McpCall,
) -> Arc<Operation> {
    match (call.method.as_str(), &call.name) {
        ("tools/call", Some(name)) => {
            let identity = crate::catalog::mcp_creates_identity(name, &ops.mcp_identity_tools)
                || tool.mcp_identity_tools.iter().any(|n| n == name);
            let action = policies.mcp_action(name, identity);
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
        _ => ops.read.clone(),
    }
}

/// What keygate keeps of a POST's MCP messages while it serves them: the audit record's
/// part, and what a refusal or the `tools/list` filter needs.
#[derive(Debug, Clone, Default)]
pub struct McpAudit {
    pub record: McpRecord,
    pub request_ids: Vec<Value>,
    pub batch: bool,
    /// The id of a lone `tools/list` request, whose answer is filtered.
    pub tools_list: Option<Value>,
}

impl McpAudit {
    pub fn of(post: &Post, session_id: Option<String>) -> McpAudit {
        let calls = post
            .messages
            .iter()
            .filter_map(|m| {
                m.method.as_ref().map(|method| McpCallRecord {
                    method: method.clone(),
                    id: m.id.clone(),
                    name: named(m),
                    arguments_digest: arguments_digest(m),
                })
            })
            .collect();
        let tools_list = match post.messages.as_slice() {
            [m] if m.method.as_deref() == Some("tools/list") => m.id.clone(),
            _ => None,
        };
        McpAudit {
            record: McpRecord { session_id, calls },
            request_ids: post.request_ids(),
            batch: post.batch,
            tools_list,
        }
    }
}

/// The request facts an MCP POST's approval is bound to, beside its messages.
pub struct PostFacts<'a> {
    pub method: &'a http::Method,
    /// The canonical path relative to the tool.
    pub tool_path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
}

/// What the policies decided for a POST's messages.
#[derive(Debug, Default)]
pub struct McpDecision {
    /// The operation recorded: the `tools/call`'s, else the first message's (`read`).
    pub operation: Option<Arc<Operation>>,
    pub authorization: Authorization,
    /// For a call that needs approval: the digest its approval is bound to.
    pub digest: Option<String>,
}

/// Reads a POST's messages; the record is what the audit keeps of them (and tells the
/// refusal to speak JSON-RPC even when the body does not parse).
pub fn read(body: &[u8], headers: &http::HeaderMap) -> (McpAudit, Result<Post, Error>) {
    match parse(body) {
        Ok(post) => {
            let session = headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (McpAudit::of(&post, session), Ok(post))
        }
        Err(e) => (McpAudit::default(), Err(e)),
    }
}

/// The MCP phase: every message of a POST gets a Cedar decision, responses and
/// notifications included (an agent with no permit on the tool reaches nothing of it). A
/// message keygate cannot decide (unknown method, `tools/call` without a name) refuses the
/// POST; so does a denied message, and a batch holding a call that needs approval. A call
/// that needs approval is bound to where it is sent (a server may serve other tool sets
/// under another path or query), the method and the whole canonical `params`: a retry
/// repeats them with a new JSON-RPC id.
#[allow(clippy::too_many_arguments)]
pub fn authorize(
    policies: &PolicyEngine,
    ops: &Operations,
    tool: &Tool,
    agent: &Agent,
    post: &Post,
    facts: &PostFacts<'_>,
    now_unix: i64,
    task: Option<&crate::store::Task>,
    mut trace: Option<&mut RequestTrace>,
) -> (McpDecision, Result<(), Error>) {
    let mut d = McpDecision::default();
    let mut chosen = ops.read.clone();
    // A provider that scopes the one credential of the POST to its operation (an OAuth2
    // scope, GitHub permissions) cannot serve calls of two tools at once: the first
    // would run with a credential scoped to the other.
    let scoped = matches!(
        tool.credential.provider,
        crate::config::ProviderSpec::OAuth2(_) | crate::config::ProviderSpec::GithubApp(_)
    );
    let mut called: Option<Arc<str>> = None;
    for m in &post.messages {
        let call = match call_of(m) {
            Ok(c) => c,
            Err(e) => return (d, Err(e)),
        };
        let op = operation(policies, ops, tool, &call);
        // A call made in a task: every message of the POST within the task.
        if let Some(t) = task {
            if let Err(e) = crate::tasks::in_scope(t, &tool.name, &op) {
                d.operation = Some(op);
                return (d, Err(e));
            }
        }
        if scoped && call.method == "tools/call" {
            match &called {
                Some(first) if *first != op.name => {
                    return (
                        d,
                        Err(Error::new(
                            ErrorKind::BadRequest,
                            "this batch calls more than one tool, and the tool server's credential is scoped to one call: send the calls one by one",
                        )
                        .with_jsonrpc(-32600)),
                    );
                }
                _ => called = Some(op.name.clone()),
            }
        }
        if call.method == "tools/call" || chosen.name == ops.read.name {
            chosen = op.clone();
        }
        let input = Input {
            agent,
            tool,
            operation: &op,
            method: facts.method.as_str(),
            path: facts.tool_path,
            now_unix,
            approved: false,
            mcp: Some(&call),
            aws: None,
            task,
        };
        let (a, result) = super::authorize::authorize(policies, trace.as_deref_mut(), &input);
        for e in a.policy_errors {
            if !d.authorization.policy_errors.contains(&e) {
                d.authorization.policy_errors.push(e);
            }
        }
        if let Err(e) = result {
            d.authorization.policies = a.policies;
            d.operation = Some(op);
            return (d, Err(e));
        }
        match a.allowed_by {
            None => {
                for p in a.policies {
                    if !d.authorization.policies.contains(&p) {
                        d.authorization.policies.push(p);
                    }
                }
            }
            Some(allowed_by) => {
                d.authorization.policies = a.policies;
                if post.batch {
                    d.operation = Some(op);
                    return (
                        d,
                        Err(Error::new(
                            ErrorKind::BadRequest,
                            "a call that needs a human's approval cannot be batched; send it on its own",
                        )),
                    );
                }
                let mut what = call.method.clone().into_bytes();
                what.push(0);
                what.extend_from_slice(&canonical_params(m));
                let mut headers = super::approve::effect_headers(tool.kind, facts.headers);
                if let Some(t) = task {
                    headers.push((crate::tasks::HEADER_STR, t.id.as_bytes()));
                }
                d.digest = Some(super::approve::request_digest(
                    &tool.name,
                    facts.method.as_str(),
                    facts.tool_path,
                    facts.query,
                    &headers,
                    &what,
                ));
                d.authorization.allowed_by = Some(allowed_by);
                d.authorization.approvers = a.approvers;
            }
        }
    }
    d.operation = Some(chosen);
    (d, Ok(()))
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
    let mut resp = crate::error::json_response(status, body.to_string());
    e.add_retry_after(&mut resp);
    resp
}

/// Whether the agent may see a tool in `tools/list`: within its task, if any, and allowed,
/// or allowed with approval.
#[allow(clippy::too_many_arguments)]
fn visible(
    policies: &PolicyEngine,
    ops: &Operations,
    tool: &Tool,
    agent: &Agent,
    name: &str,
    now_unix: i64,
    task: Option<&crate::store::Task>,
) -> bool {
    let call = McpCall {
        method: "tools/call".into(),
        name: Some(name.to_string()),
        arguments: Vec::new(),
    };
    let op = operation(policies, ops, tool, &call);
    // In a task, only what the task includes (as its calls are refused otherwise).
    if task.is_some_and(|t| crate::tasks::in_scope(t, &tool.name, &op).is_err()) {
        return false;
    }
    let input = Input {
        agent,
        tool,
        operation: &op,
        method: "POST",
        path: "/",
        now_unix,
        approved: false,
        mcp: Some(&call),
        aws: None,
        task,
    };
    !matches!(policies.authorize(&input), Verdict::Deny { .. })
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

/// Filters the answer to a `tools/list` request, JSON or SSE, to the tools the agent may call
/// (decided as at `now_unix`, the request's time, in its task).
#[allow(clippy::too_many_arguments)]
pub fn filter_tools_list(
    policies: Arc<PolicyEngine>,
    snapshot: Arc<Snapshot>,
    tool: Arc<Tool>,
    agent: Arc<Agent>,
    id: Value,
    resp: http::Response<ProxyBody>,
    now_unix: i64,
    task: Option<Arc<crate::store::Task>>,
) -> http::Response<ProxyBody> {
    use http_body_util::BodyExt;
    let ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let keep: Box<dyn Fn(&str) -> bool + Send + Sync> = Box::new(move |name: &str| {
        visible(
            &policies,
            &snapshot.operations,
            &tool,
            &agent,
            name,
            now_unix,
            task.as_deref(),
        )
    });
    let (mut parts, body) = resp.into_parts();
    // The length changes: the new body says its own.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let body = if ct.starts_with("text/event-stream") {
        sse_filtered(body, id, keep)
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

/// Re-encodes an SSE stream event by event, the `tools/list` answer filtered. The stream
/// is parsed by `sse-stream` with the rules of the WHATWG standard the agent's client
/// follows (lines ended by LF, CRLF or a lone CR, comments, fields cut across frames), and
/// the agent gets keygate's encoding of what was parsed: LF line ends, comments dropped. So
/// the agent reads the events keygate read, and no event keygate could not read (invalid
/// UTF-8) passes unfiltered: the stream ends there with an error.
fn sse_filtered(
    body: ProxyBody,
    id: Value,
    keep: Box<dyn Fn(&str) -> bool + Send + Sync>,
) -> ProxyBody {
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    // sse-stream wants a body whose error is a std error.
    let events = sse_stream::SseStream::new(body.map_err(std::io::Error::other)).map(move |e| {
        e.map(|mut event| {
            let filtered = event
                .data
                .as_deref()
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                .and_then(|mut v| filter_message(&mut v, &id, &|n| keep(n)).then_some(v));
            if let Some(v) = filtered {
                event.data = Some(v.to_string());
            }
            event
        })
    });
    sse_stream::SseBody::new(events)
        .map_err(BoxError::from)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_batches_parse() {
        let p = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi","n":2}}}"#).unwrap();
        assert!(!p.batch);
        assert_eq!(p.request_ids(), vec![serde_json::json!(7)]);
        let c = call_of(&p.messages[0]).unwrap();
        assert_eq!(c.method, "tools/call");
        assert_eq!(c.name.as_deref(), Some("echo"));
        assert_eq!(
            c.arguments,
            vec![("message".into(), "hi".into()), ("n".into(), "2".into())]
        );
        // The first 8 bytes of the SHA-256 of `{"message":"hi","n":2}`.
        assert_eq!(
            arguments_digest(&p.messages[0]).as_deref(),
            Some("sha256:0e7c9e80552d02cc")
        );

        let p = parse(br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"a","method":"tools/list"},{"jsonrpc":"2.0","id":"s1","result":{}}]"#).unwrap();
        assert!(p.batch);
        assert_eq!(p.request_ids(), vec![serde_json::json!("a")]);
        let kinds: Vec<Kind> = p.messages.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [Kind::Notification, Kind::Request, Kind::Response]);
        // A response from the client is a call too (protocol, no method): it is decided.
        assert_eq!(call_of(&p.messages[2]).unwrap().method, "");
        // Ids stay exact.
        let p = parse(br#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#).unwrap();
        assert_eq!(p.request_ids(), vec![serde_json::json!(u64::MAX)]);
    }

    /// (body, refused with this keygate code, or None when it parses).
    const PARSE_CASES: &[(&str, Option<&str>)] = &[
        // CVE-2026-27896: names that differ only in case; Go's encoding/json reads either.
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"create_api_token"}}"#, Some("ambiguous_json")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"tools/list","params":{"name":"echo"}}"#, Some("ambiguous_json")),
        (r#"{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"echo"}}"#, Some("ambiguous_json")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"create_api_token"}}"#, Some("ambiguous_json")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","na\u006de":"create_api_token"}}"#, Some("ambiguous_json")),
        (r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#, Some("ambiguous_json")),
        // Non-ASCII look-alikes: ſ (U+017F) folds onto s, Kelvin K onto k, ı and İ onto i.
        ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"param\u{17f}\":{}}", Some("ambiguous_json")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"ping","param\u017f":{}}"#, Some("ambiguous_json")),
        ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"\u{212a}ey\":1}}}", Some("ambiguous_json")),
        ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"\u{131}d\":1}}}", Some("ambiguous_json")),
        ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"\u{130}d\":1}}}", Some("ambiguous_json")),
        // In arguments, at any depth.
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"repo":"a","repo":"b"}}}"#, Some("ambiguous_json")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"repo":"a","REPO":"b"}}}"#, Some("ambiguous_json")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":[{"a":1,"A":2}]}}}"#, Some("ambiguous_json")),
        ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"\u{3c3}\":1,\"\u{3c2}\":2}}}", Some("ambiguous_json")),
        // Non-ASCII names that fold to no ASCII letter are fine, and distinct.
        ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"\u{e9}t\u{e9}\":1,\"ete\":2}}}", None),
        // Not JSON-RPC 2.0.
        ("not json", Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"ping"} {}"#, Some("bad_request")),
        ("[]", Some("bad_request")),
        ("[1]", Some("bad_request")),
        ("1", Some("bad_request")),
        (r#"{"id":1,"method":"ping"}"#, Some("bad_request")),
        (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1,"method":7}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1e3,"method":"ping"}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"ping","extra":1}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#, Some("bad_request")),
        // An object without a method must be a response.
        (r#"{"jsonrpc":"2.0"}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","result":{}}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1,"result":{},"params":{}}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"x"}}"#, None),
        (r#"{"jsonrpc":"2.0","id":"s1","result":{"roots":[]}}"#, None),
        // Numbers: JSON's grammar, no more.
        (r#"{"jsonrpc":"2.0","id":01,"method":"ping"}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":{"n":NaN}}}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":{"n":1.}}}"#, Some("bad_request")),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":{"s":"\ud800"}}}"#, Some("bad_request")),
    ];

    #[test]
    fn ambiguous_or_invalid_messages_are_refused() {
        for (body, want) in PARSE_CASES {
            let got = parse(body.as_bytes()).err().map(|e| e.kind.code());
            assert_eq!(got, *want, "{body}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"e","arguments":{{"d":{deep}}}}}}}"#
        );
        assert_eq!(
            parse(body.as_bytes()).unwrap_err().kind.code(),
            "bad_request"
        );
    }

    #[test]
    fn batches_are_limited() {
        let batch = |n: usize| {
            let one = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#;
            format!("[{}]", vec![one; n].join(","))
        };
        assert_eq!(
            parse(batch(MAX_BATCH).as_bytes()).unwrap().messages.len(),
            MAX_BATCH
        );
        let e = parse(batch(MAX_BATCH + 1).as_bytes()).unwrap_err();
        assert_eq!(e.kind.code(), "batch_too_large");
        assert_eq!(e.kind.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.jsonrpc_code, Some(INVALID_REQUEST));
    }

    /// (method and params, refused with this code, or decided with this name).
    const CALL_CASES: &[(&str, Result<Option<&str>, &str>)] = &[
        (
            r#""method":"tools/call","params":{"name":"echo"}"#,
            Ok(Some("echo")),
        ),
        (
            r#""method":"tools/call","params":{"name":"echo","arguments":null}"#,
            Ok(Some("echo")),
        ),
        (r#""method":"tools/call","params":{}"#, Err("bad_request")),
        (r#""method":"tools/call""#, Err("bad_request")),
        (
            r#""method":"tools/call","params":{"name":7}"#,
            Err("bad_request"),
        ),
        (
            r#""method":"tools/call","params":{"name":null}"#,
            Err("bad_request"),
        ),
        (
            r#""method":"tools/call","params":{"Name":"create_api_token"}"#,
            Err("ambiguous_json"),
        ),
        (
            r#""method":"tools/call","params":{"name":"echo","Arguments":{"a":1}}"#,
            Err("ambiguous_json"),
        ),
        (
            r#""method":"tools/call","params":{"name":"echo","arguments":[1]}"#,
            Err("bad_request"),
        ),
        (
            r#""method":"prompts/get","params":{"name":"p"}"#,
            Ok(Some("p")),
        ),
        (r#""method":"prompts/get","params":{}"#, Err("bad_request")),
        (
            r#""method":"resources/read","params":{"uri":"file:///a"}"#,
            Ok(Some("file:///a")),
        ),
        (
            r#""method":"resources/read","params":{"URI":"file:///a"}"#,
            Err("ambiguous_json"),
        ),
        (
            r#""method":"resources/read","params":{}"#,
            Err("bad_request"),
        ),
        (
            r#""method":"initialize","params":{"protocolVersion":"2025-06-18"}"#,
            Ok(None),
        ),
        (r#""method":"tools/list""#, Ok(None)),
        (r#""method":"ping""#, Ok(None)),
        // Unknown methods (including case variants of known ones) are refused, not reads.
        (r#""method":"tools/delete""#, Err("unknown_mcp_method")),
        (
            r#""method":"Tools/call","params":{"name":"echo"}"#,
            Err("unknown_mcp_method"),
        ),
        (
            r#""method":"tools/call ","params":{"name":"echo"}"#,
            Err("unknown_mcp_method"),
        ),
        (r#""method":"""#, Err("unknown_mcp_method")),
    ];

    #[test]
    fn every_message_gets_a_call_or_a_refusal() {
        for (rest, want) in CALL_CASES {
            let body = format!(r#"{{"jsonrpc":"2.0","id":1,{rest}}}"#);
            let post = parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
            let got = call_of(&post.messages[0]).map(|c| c.name);
            match (got, want) {
                (Ok(name), Ok(w)) => assert_eq!(name.as_deref(), *w, "{body}"),
                (Err(e), Err(code)) => assert_eq!(e.kind.code(), *code, "{body}"),
                (got, _) => panic!("{body}: {got:?}"),
            }
        }
    }

    fn digest(body: &str) -> Vec<u8> {
        canonical_arguments(&parse(body.as_bytes()).unwrap().messages[0])
    }

    #[test]
    fn the_canonical_arguments_cannot_collide() {
        let call = |args: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{args}}}}}"#
            )
        };
        // Integers beyond 64 bits stay distinct (an f64 makes them one number).
        assert_ne!(
            digest(&call(r#"{"n":18446744073709551616}"#)),
            digest(&call(r#"{"n":18446744073709551617}"#))
        );
        assert_eq!(
            digest(&call(r#"{"n":18446744073709551617}"#)),
            br#"{"n":18446744073709551617}"#
        );
        assert_ne!(
            digest(&call(r#"{"n":0.1}"#)),
            digest(&call(r#"{"n":0.10000000000000001}"#))
        );
        // The same value written differently is the same call.
        for (a, b) in [
            (
                r#"{"a":1,"b":[true,null]}"#,
                r#"{ "b" : [ true , null ] , "a" : 1 }"#,
            ),
            (r#"{"s":"é\n\"x\""}"#, r#"{"s":"\u00e9\u000a\u0022x\""}"#),
            (r#"{"k":{"y":1,"x":2}}"#, r#"{"k":{"x":2,"y":1}}"#),
        ] {
            assert_eq!(digest(&call(a)), digest(&call(b)), "{a} {b}");
        }
        // Other values, other digests.
        for (a, b) in [
            (r#"{"a":"1"}"#, r#"{"a":1}"#),
            (r#"{"a":[1,2]}"#, r#"{"a":[2,1]}"#),
            (r#"{"a":{}}"#, r#"{"a":[]}"#),
            (r#"{"a":"x","b":"y"}"#, r#"{"a":"x\",\"b\":\"y"}"#),
        ] {
            assert_ne!(digest(&call(a)), digest(&call(b)), "{a} {b}");
        }
        // No arguments and `null` arguments are the same call; {} is another.
        let none = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#;
        assert_eq!(digest(none), b"null");
        assert_eq!(digest(&call("null")), b"null");
        assert_eq!(digest(&call("{}")), b"{}");
        // Policies see exact numbers too.
        let p = parse(call(r#"{"n":18446744073709551617,"o":{"b":1,"a":2}}"#).as_bytes()).unwrap();
        assert_eq!(
            call_of(&p.messages[0]).unwrap().arguments,
            vec![
                ("n".into(), "18446744073709551617".into()),
                ("o".into(), r#"{"a":2,"b":1}"#.into())
            ]
        );
    }

    #[test]
    fn mcp_takes_post_get_and_delete_only() {
        for (m, ok) in [
            ("POST", true),
            ("GET", true),
            ("DELETE", true),
            ("post", false),
            ("Post", false),
            ("PUT", false),
            ("PATCH", false),
            ("HEAD", false),
            ("OPTIONS", false),
        ] {
            let method = http::Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(check_http_method(&method).is_ok(), ok, "{m}");
        }
    }

    /// An SSE answer to `tools/list` (id 3), sent in these frames, as the agent gets it
    /// when it may call `echo` only.
    fn filtered_sse(frames: &[&[u8]]) -> Result<String, BoxError> {
        use http_body_util::BodyExt;
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = frames
            .iter()
            .map(|f| Ok(Frame::data(Bytes::copy_from_slice(f))))
            .collect();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
        let out = sse_filtered(body, serde_json::json!(3), Box::new(|n| n == "echo"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(out.collect())?.to_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    #[test]
    fn sse_answers_are_filtered_however_their_lines_end_and_frames_cut() {
        let note = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
        let answer =
            r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo"},{"name":"secret"}]}}"#;
        for eol in ["\n", "\r\n", "\r"] {
            let text = format!(
                ": ping{eol}data: {note}{eol}{eol}event: message{eol}id: 9{eol}data: {answer}{eol}{eol}"
            );
            for cut in 0..text.len() {
                let (a, b) = text.as_bytes().split_at(cut);
                let out = filtered_sse(&[a, b]).unwrap();
                assert!(!out.contains("secret"), "{eol:?} cut at {cut}: {out:?}");
                assert!(
                    out.contains(r#"{"name":"echo"}"#),
                    "{eol:?} cut at {cut}: {out:?}"
                );
                assert!(out.contains("notifications/message"), "{out:?}");
            }
        }
        // An event keygate cannot read ends the stream rather than pass unfiltered.
        let mut bad = format!("data: {answer}").into_bytes();
        bad.extend_from_slice(b"\xff\n\n");
        assert!(filtered_sse(&[&bad]).is_err());
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
