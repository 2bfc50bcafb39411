//! **respond**, its second half: known secret formats in a tool's response (the formats
//! the request-side scanner knows, [`crate::secrets`]) are redacted, block the response,
//! or pass, per tool (`response_secrets`).
//!
//! What is scanned: the reason phrase (dropped when it holds a secret), every header value
//! (location `header:<name>`), the body (`body`) and the trailers (`trailer:<name>`). A body
//! is scanned unless its media type is clearly binary ([`is_binary`]): JSON, XML, forms,
//! `text/*`, server-sent events, NDJSON and MCP results are all text here, and so is a body
//! without a `Content-Type`.
//!
//! Besides the formats of [`crate::secrets`], an AWS secret access key (which has no
//! prefix of its own) is recognised by its pairing: a run of exactly 40 `[A-Za-z0-9/+]`
//! that starts within 256 bytes after an access key id (format `aws_secret_access_key`).
//!
//! - **Redact** (the default): each secret is overwritten in place with a marker of its
//!   exact length (`keygate-redacted` then `*`), so `Content-Length` stays true and
//!   nothing is re-framed. The body streams; it is never buffered whole.
//! - **Block**: a secret refuses the response (502 `secret_in_response`). The reason
//!   phrase and headers are checked first; a body is buffered whole (up to
//!   `max_buffered`, beyond it 502 `upstream_unavailable`) and then decided, except an
//!   event stream (`text/event-stream`), which streams and is cut with an error before
//!   the data that holds the secret.
//! - **Pass**: nothing changes, nothing is delayed, but every secret is still recorded.
//!
//! Every secret found is recorded in [`Findings`] by format and location, never by value.
//!
//! ## Streaming: what is held back
//!
//! Every format but a PEM private key is a run of token bytes (`[A-Za-z0-9._/+-]`) and
//! ends only where that run ends, so whether such a secret is there is decided by the run
//! alone. The end of a frame that is a run of token bytes (the run still growing) is held
//! back until the run ends in a later frame or the body ends; everything before it is final
//! and sent. A frame that ends with a non-token byte (`\n\n` ends every event of an event
//! stream) holds nothing back, so events are not delayed. Besides that, a PEM private key
//! is held from its `-----BEGIN ` until its `-----END …-----` line (or the body's end: like
//! the request side, a key without an END line runs to the end), and a `-----BEGIN `
//! whose header is not complete yet is held until it is.
//!
//! Cost: a frame in which the scanner finds no prefix of a format is sent as a slice of
//! itself, not copied. When a held run ends in the next frame, that run (and only it) is
//! copied and sent as a frame of its own, and the rest of the frame follows uncopied.
//!
//! What is held is capped at [`HOLD_CAP`] (64 KiB): a PEM block still open beyond it is
//! redacted wholesale (recorded once) and everything after it too, up to and including its
//! END line (fail closed: the key is never sent); a run of token bytes longer than the cap
//! (a large base64 value) is sent but for its last KiB, and its scan goes on from there
//! (a secret that would start exactly at that cut could be missed: an accepted limit).
//!
//! ## Compression
//!
//! A compressed body (`Content-Encoding` other than `identity`, in any header instance)
//! cannot be scanned as it is. With [`Compressed::Decompress`], `gzip` (`x-gzip`) and
//! `deflate` (zlib, or raw deflate as some servers send) are decompressed as they stream,
//! up to `max_decompressed` bytes (beyond: the body ends with an error), and sent
//! uncompressed without `Content-Encoding` and `Content-Length`. Any other coding, several
//! stacked, or [`Compressed::Refuse`], refuses the response (502 `upstream_unavailable`)
//! unless its body is empty: fail closed. A binary body is neither scanned nor
//! decompressed.

use crate::error::{BoxError, Error, ErrorKind, ProxyBody};
use crate::pipeline::respond::overwrite;
use crate::secrets::{self, SecretKind};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

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

/// The most held back from a streaming body (see the module's doc).
pub const HOLD_CAP: usize = 64 * 1024;

/// What of a run of token bytes longer than [`HOLD_CAP`] stays held when the rest is sent.
const RUN_KEEP: usize = 1024;

/// How far after an access key id a secret access key is looked for.
const AWS_PAIR_WINDOW: usize = 256;

/// An AWS secret access key's length.
const AWS_SECRET_LEN: usize = 40;

/// The format name of an AWS secret access key (recognised by its pairing).
pub const AWS_SECRET_ACCESS_KEY: &str = "aws_secret_access_key";

const PEM_BEGIN: &[u8] = b"-----BEGIN ";
/// How far after `-----BEGIN ` secrets.rs looks for `PRIVATE KEY-----`.
const PEM_HEADER_WINDOW: usize = 40;
const PEM_MARKER: &[u8] = b"PRIVATE KEY-----";
const PEM_END: &[u8] = b"-----END ";
const PEM_CLOSE: &[u8] = b"-----";
/// The bytes of an open PEM block kept to find its END line across frames.
const PEM_TAIL: usize = 128;

/// A byte a secret other than a PEM block can hold: every format of [`crate::secrets`]
/// (and an AWS secret access key) is a run of these.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'+' | b'-')
}

fn is_aws_secret_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'/' || b == b'+'
}

/// Whether a body of this `Content-Type` is clearly binary: not scanned (nor
/// decompressed). Anything else, and a body without a type, is text.
pub fn is_binary(content_type: Option<&[u8]>) -> bool {
    let Some((top, sub)) = content_type.map(essence) else {
        return false;
    };
    let is = |a: &[u8], b: &str| a.eq_ignore_ascii_case(b.as_bytes());
    if ["image", "audio", "video", "font"]
        .iter()
        .any(|t| is(top, t))
    {
        return true;
    }
    is(top, "application")
        && (["octet-stream", "zip", "gzip", "pdf", "wasm", "x-protobuf"]
            .iter()
            .any(|t| is(sub, t))
            || sub.len() >= 4 && is(&sub[..4], "grpc"))
}

/// A media type's type and subtype (before any `;` parameter, spaces trimmed), as bytes:
/// this runs on every response, so nothing is allocated.
fn essence(ct: &[u8]) -> (&[u8], &[u8]) {
    let e = ct.split(|&b| b == b';').next().unwrap_or(&[]).trim_ascii();
    match e.iter().position(|&b| b == b'/') {
        Some(i) => (&e[..i], &e[i + 1..]),
        None => (e, &[]),
    }
}

fn is_event_stream(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|ct| {
        let (top, sub) = essence(ct);
        top.eq_ignore_ascii_case(b"text") && sub.eq_ignore_ascii_case(b"event-stream")
    })
}

/// One secret found: its format name and byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hit {
    format: &'static str,
    start: usize,
    end: usize,
}

/// Every secret in `buf`, by start: the formats of [`crate::secrets`], and AWS secret
/// access keys after an access key id. `aws_until`: the last index of `buf` at which a
/// secret access key may start because of an access key id before `buf`. `buf`'s end is
/// taken as the end of a run (the caller holds back what may go on).
fn find_in(buf: &[u8], aws_until: Option<usize>) -> Vec<Hit> {
    let mut hits: Vec<Hit> = secrets::find_all(buf)
        .into_iter()
        .map(|f| Hit {
            format: f.kind.as_str(),
            start: f.start,
            end: f.end,
        })
        .collect();
    let akid = SecretKind::AwsAccessKeyId.as_str();
    if aws_until.is_none() && !hits.iter().any(|h| h.format == akid) {
        return hits;
    }
    // Where a secret access key may start: after each access key id, within the window.
    let windows: Vec<(usize, usize)> = aws_until
        .map(|u| (0, u))
        .into_iter()
        .chain(
            hits.iter()
                .filter(|h| h.format == akid)
                .map(|h| (h.end, h.end + AWS_PAIR_WINDOW)),
        )
        .collect();
    let last = windows.iter().map(|w| w.1).max().unwrap_or(0);
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < buf.len() && i <= last {
        if !is_aws_secret_byte(buf[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < buf.len() && is_aws_secret_byte(buf[i]) {
            i += 1;
        }
        let in_window = windows.iter().any(|&(a, b)| a <= start && start <= b);
        let overlaps = hits.iter().any(|h| h.start < i && start < h.end);
        if i - start == AWS_SECRET_LEN && in_window && !overlaps {
            pairs.push(Hit {
                format: AWS_SECRET_ACCESS_KEY,
                start,
                end: i,
            });
        }
    }
    if !pairs.is_empty() {
        hits.extend(pairs);
        hits.sort_by_key(|h| h.start);
    }
    hits
}

/// Whether a PEM block found by [`crate::secrets`] is closed by its END line (else it ran
/// to the end of what was scanned, and may go on).
fn pem_closed(block: &[u8]) -> bool {
    let Some(m) = memchr::memmem::find(block, PEM_MARKER) else {
        return false;
    };
    let after = m + PEM_MARKER.len();
    memchr::memmem::find(&block[after..], PEM_END).is_some_and(|e| {
        memchr::memmem::find(&block[after + e + PEM_END.len()..], PEM_CLOSE).is_some()
    })
}

/// The first `-----BEGIN ` at or after `from` whose header is not complete yet (cut by the
/// end of `buf` before `PRIVATE KEY-----` could be seen): it may start a private key.
fn pem_header_pending(buf: &[u8], from: usize) -> Option<usize> {
    let need = PEM_BEGIN.len() + PEM_HEADER_WINDOW;
    let region = buf.len().saturating_sub(need).max(from);
    memchr::memmem::find_iter(&buf[region..], PEM_BEGIN)
        .map(|p| region + p)
        .find(|&p| {
            p + need > buf.len()
                && memchr::memmem::find(&buf[p + PEM_BEGIN.len()..], PEM_MARKER).is_none()
        })
}

/// Where the bytes to hold back start in `buf` (scanned from `from`), by the cheap rules
/// alone: its trailing run of token bytes, and a PEM header not complete yet.
fn tail_hold(buf: &[u8], from: usize) -> usize {
    let run = buf[from..]
        .iter()
        .rev()
        .take_while(|&&b| is_token(b))
        .count();
    let hold = buf.len() - run;
    match pem_header_pending(buf, from) {
        Some(p) => hold.min(p),
        None => hold,
    }
}

/// Records `hits` at `location`; in redact mode overwrites them in `buf`. Block mode:
/// the first hit's format is returned as the refusal.
fn apply(
    mode: Mode,
    buf: &mut [u8],
    hits: impl IntoIterator<Item = Hit>,
    findings: &Findings,
    location: &str,
) -> Result<(), &'static str> {
    let mut refused = None;
    for h in hits {
        findings.add(h.format, location);
        match mode {
            Mode::Redact => overwrite(&mut buf[h.start..h.end]),
            Mode::Block => {
                refused.get_or_insert(h.format);
            }
            Mode::Pass => {}
        }
    }
    refused.map_or(Ok(()), Err)
}

/// The refusal of a response that holds a secret (block mode): names the format and where,
/// never the value.
fn refusal(tool: &str, format: &str, location: &str) -> Error {
    Error::new(
        ErrorKind::SecretInResponse,
        format!(
            "tool {tool:?} answered with a secret ({format} in {location}), which its settings do not let through"
        ),
    )
    .with_detail(format!("{format} in {location}"))
}

/// Scans every value of `headers` (location `<kind>:<name>`): redacts in place (a value
/// that would not be valid redacted is dropped), or returns the first refusal (block).
fn scan_headers(
    mode: Mode,
    kind: &str,
    headers: &mut HeaderMap,
    findings: &Findings,
) -> Result<(), (&'static str, String)> {
    // Usually nothing is found: one pass that only looks, over every value at once (one
    // search instead of one per header; a newline between values, which no format
    // contains, keeps each value's ends token boundaries).
    let mut all = Vec::with_capacity(256);
    for v in headers.values() {
        all.extend_from_slice(v.as_bytes());
        all.push(b'\n');
    }
    if find_in(&all, None).is_empty() {
        return Ok(());
    }
    let old = std::mem::take(headers);
    let mut name: Option<HeaderName> = None;
    let mut refused = None;
    for (n, v) in old {
        if n.is_some() {
            name = n;
        }
        let Some(n) = &name else { continue };
        let hits = find_in(v.as_bytes(), None);
        if hits.is_empty() {
            headers.append(n.clone(), v);
            continue;
        }
        let location = format!("{kind}:{}", n.as_str());
        let mut bytes = v.as_bytes().to_vec();
        if let Err(format) = apply(mode, &mut bytes, hits, findings, &location) {
            refused.get_or_insert((format, location));
        }
        match mode {
            Mode::Redact => {
                // The marker is visible ASCII over valid bytes: still a valid value.
                if let Ok(r) = HeaderValue::from_bytes(&bytes) {
                    headers.append(n.clone(), r);
                }
            }
            Mode::Block | Mode::Pass => {
                headers.append(n.clone(), v);
            }
        }
    }
    refused.map_or(Ok(()), Err)
}

/// The non-identity codings of a response, in order, over every `Content-Encoding`.
fn codings(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "identity")
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A compressed text body decompressed (gzip, deflate; up to `max_decompressed`), so that
/// it can be scanned, `Content-Encoding` and `Content-Length` removed; per
/// `settings.compressed`, or for any other coding, refused. A binary or empty body, or an
/// uncompressed one, is returned as it is. Runs before respond removes keygate's own
/// credential from the body, which needs it uncompressed too.
pub fn decompress(
    settings: &Settings,
    tool: &str,
    resp: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, Error> {
    let (mut parts, body) = resp.into_parts();
    let binary = is_binary(
        parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
    );
    let codings = codings(&parts.headers);
    if binary || codings.is_empty() || body.is_end_stream() {
        return Ok(Response::from_parts(parts, body));
    }
    let decoder = match (settings.compressed, codings.as_slice()) {
        (Compressed::Decompress, [one]) => Decoder::for_coding(one),
        _ => None,
    };
    let Some(decoder) = decoder else {
        return Err(Error::new(
            ErrorKind::UpstreamUnavailable,
            format!(
                "tool {tool:?} answered with a compressed body, which keygate cannot check for secrets"
            ),
        )
        .with_detail(format!("content-encoding: {}", codings.join(", "))));
    };
    parts.headers.remove(http::header::CONTENT_ENCODING);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let body = Decompressing {
        inner: body,
        decoder: Some(decoder),
        total: 0,
        max: settings.max_decompressed,
        trailers: None,
    }
    .boxed();
    Ok(Response::from_parts(parts, body))
}

/// Scans the response per `settings`: the reason phrase and headers now, the body and
/// trailers as they stream (block mode: a body is read whole first, but an event stream).
/// Every secret found is recorded in `findings` (format and location).
pub async fn scan(
    settings: &Settings,
    tool: &str,
    resp: Response<ProxyBody>,
    findings: Arc<Findings>,
) -> Result<Response<ProxyBody>, Error> {
    let mode = settings.mode;
    let (mut parts, body) = resp.into_parts();
    if let Some(reason) = parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        let hits = find_in(reason.as_bytes(), None);
        if !hits.is_empty() {
            let mut scratch = reason.as_bytes().to_vec();
            if let Err(format) = apply(mode, &mut scratch, hits, &findings, "reason") {
                return Err(refusal(tool, format, "reason"));
            }
            if mode == Mode::Redact {
                // The standard phrase is sent instead.
                parts.extensions.remove::<hyper::ext::ReasonPhrase>();
            }
        }
    }
    if let Err((format, location)) = scan_headers(mode, "header", &mut parts.headers, &findings) {
        return Err(refusal(tool, format, &location));
    }
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes().to_vec());
    let binary = is_binary(content_type.as_deref());
    if body.is_end_stream() {
        return Ok(Response::from_parts(parts, body));
    }
    let (parts, body) = decompress(settings, tool, Response::from_parts(parts, body))?.into_parts();
    if mode == Mode::Block && !binary && !is_event_stream(content_type.as_deref()) {
        let body = buffered(settings, tool, body, &findings).await?;
        return Ok(Response::from_parts(parts, body));
    }
    let body = Scanning {
        inner: body,
        tool: tool.into(),
        findings,
        scan_data: !binary,
        stream: Stream::new(mode),
        pending: None,
        trailers: None,
        done: false,
    }
    .boxed();
    Ok(Response::from_parts(parts, body))
}

/// Block mode, a body that is not an event stream: read whole (up to `max_buffered`),
/// decided, and passed on as read when it holds no secret.
async fn buffered(
    settings: &Settings,
    tool: &str,
    mut body: ProxyBody,
    findings: &Findings,
) -> Result<ProxyBody, Error> {
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e.downcast::<Error>() {
            Ok(e) => *e,
            Err(e) => Error::new(
                ErrorKind::UpstreamUnavailable,
                format!("tool {tool:?} broke off its response"),
            )
            .with_detail(e.to_string()),
        })?;
        match frame.into_data() {
            Ok(d) => {
                if (data.len() + d.len()) as u64 > settings.max_buffered {
                    return Err(Error::new(
                        ErrorKind::UpstreamUnavailable,
                        format!("tool {tool:?} answered with a response too large to check"),
                    )
                    .with_detail(format!("body over {} bytes", settings.max_buffered)));
                }
                data.extend_from_slice(&d);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    let hits = find_in(&data, None);
    let mut refused = apply(Mode::Block, &mut data, hits, findings, "body")
        .err()
        .map(|f| (f, "body".to_string()));
    if let Some(t) = trailers.as_mut() {
        if let Err(r) = scan_headers(Mode::Block, "trailer", t, findings) {
            refused.get_or_insert(r);
        }
    }
    if let Some((format, location)) = refused {
        return Err(refusal(tool, format, &location));
    }
    let frames = std::iter::once(Frame::data(Bytes::from(data)))
        .chain(trailers.map(Frame::trailers))
        .map(Ok::<_, BoxError>);
    Ok(http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed())
}

/// The streaming scan of a body, independent of how frames arrive: what is held back,
/// and what is known from the bytes already sent.
struct Stream {
    mode: Mode,
    /// Bytes not final yet (redact, block: not sent; pass: sent, not scanned), after
    /// `ctx` bytes that are final (context for a scan that resumes inside a run).
    held: Vec<u8>,
    ctx: usize,
    /// The stream offset of `held[0]`.
    base: usize,
    /// The last stream offset at which an AWS secret access key may start.
    aws_until: Option<usize>,
    /// A PEM block released open (longer than [`HOLD_CAP`]): its last bytes, to find its
    /// END line; everything up to that line is redacted.
    pem_open: Option<Vec<u8>>,
}

/// What one step of the stream gives: bytes to send, and bytes to push again (after a
/// PEM block released open was closed).
type Step = (Bytes, Option<Bytes>);

impl Stream {
    fn new(mode: Mode) -> Stream {
        Stream {
            mode,
            held: Vec::new(),
            ctx: 0,
            base: 0,
            aws_until: None,
            pem_open: None,
        }
    }

    /// Whether a secret access key may still start in bytes not scanned yet.
    fn aws_active(&mut self) -> bool {
        if self.aws_until.is_some_and(|u| u < self.base) {
            self.aws_until = None;
        }
        self.aws_until.is_some()
    }

    /// A new frame's data: what may be sent now (possibly nothing), and what to push
    /// again; `Err` (block) names the format found.
    fn push(&mut self, data: Bytes, findings: &Findings) -> Result<Step, &'static str> {
        if self.pem_open.is_some() {
            return self.push_in_open_pem(data);
        }
        if self.held.is_empty() && !self.aws_active() && secrets::find_first(&data).is_none() {
            // The common case: nothing in the frame. Sent as is (no copy) but for an end
            // that may start a secret, which waits for the next frame.
            let keep = tail_hold(&data, 0);
            self.held.extend_from_slice(&data[keep..]);
            self.base += keep;
            let out = match self.mode {
                Mode::Pass => data,
                Mode::Redact | Mode::Block => data.slice(..keep),
            };
            return Ok((out, None));
        }
        if let Some(k) = self.run_ends_at(&data) {
            // The held run of token bytes ends in this frame: it is decided alone (the
            // byte after it is not a token byte), and the rest of the frame, which starts
            // at a boundary, is pushed again (usually the common case: not copied).
            self.held.extend_from_slice(&data[..k]);
            let hits = find_in(&self.held, None);
            for h in &hits {
                if h.format == SecretKind::AwsAccessKeyId.as_str() {
                    self.aws_until = Some(self.base + h.end + AWS_PAIR_WINDOW);
                }
            }
            apply(self.mode, &mut self.held, hits, findings, "body")?;
            self.base += self.held.len();
            if self.mode == Mode::Pass {
                // Nothing is changed: the frame goes whole, its rest is only scanned.
                self.held.clear();
                let (_, again) = self.push(data.slice(k..), findings)?;
                return Ok((data, again));
            }
            let out = Bytes::copy_from_slice(&self.held);
            self.held.clear();
            return Ok((out, Some(data.slice(k..))));
        }
        self.held.extend_from_slice(&data);
        let out = self.process(false, findings)?;
        Ok((
            match self.mode {
                Mode::Pass => data,
                Mode::Redact | Mode::Block => out,
            },
            None,
        ))
    }

    /// Where in `data` the run of token bytes held (and nothing else held) ends, when it
    /// does and nothing else needs the general scan (an AWS pairing, a PEM header).
    fn run_ends_at(&mut self, data: &[u8]) -> Option<usize> {
        if self.held.is_empty() || self.ctx != 0 || self.aws_active() {
            return None;
        }
        if !self.held.iter().all(|&b| is_token(b)) {
            return None;
        }
        let k = data.iter().position(|&b| !is_token(b))?;
        // `-----BEGIN` then a space starts a PEM header: the general scan holds it.
        let begin = &PEM_BEGIN[..PEM_BEGIN.len() - 1];
        let pem = data[k] == b' '
            && if k >= begin.len() {
                data[..k].ends_with(begin)
            } else {
                let r = begin.len() - k;
                data[..k] == begin[r..] && self.held.ends_with(&begin[..r])
            };
        (!pem).then_some(k)
    }

    /// The body ended: everything held is final.
    fn finish(&mut self, findings: &Findings) -> Result<Option<Bytes>, &'static str> {
        if self.pem_open.take().is_some() {
            // An open block runs to the end: what is held is part of it.
            return Ok(None);
        }
        let out = self.process(true, findings)?;
        Ok((self.mode != Mode::Pass && !out.is_empty()).then_some(out))
    }

    /// Scans `held`; makes final what can be (recorded, redacted), returns it (the final
    /// bytes, as sent in redact or block mode) and keeps the rest.
    fn process(&mut self, last: bool, findings: &Findings) -> Result<Bytes, &'static str> {
        let len = self.held.len();
        let aws_until = self.aws_until.and_then(|u| u.checked_sub(self.base));
        let hits = find_in(&self.held, aws_until);
        let mut hold = if last {
            len
        } else {
            tail_hold(&self.held, self.ctx)
        };
        // A secret that reaches into the held bytes, or a PEM block not closed yet, is
        // held whole.
        if !last {
            loop {
                let crossing = hits.iter().filter(|h| h.start >= self.ctx).find(|h| {
                    h.start < hold
                        && (h.end > hold
                            || (h.format == SecretKind::PrivateKey.as_str()
                                && !pem_closed(&self.held[h.start..h.end])))
                });
                match crossing {
                    Some(h) => hold = h.start,
                    None => break,
                }
            }
        }
        let mut keep_ctx = 0;
        if !last && len - hold > HOLD_CAP {
            let pem = hits
                .iter()
                .find(|h| h.start == hold && h.format == SecretKind::PrivateKey.as_str());
            match pem {
                Some(_) => {
                    // Released open: redacted wholesale (it runs to `len`, so it is final
                    // below); the rest up to its END line too.
                    self.pem_open = Some(self.held[len.saturating_sub(PEM_TAIL)..].to_vec());
                    hold = len;
                }
                None => {
                    // A run of token bytes too long to hold: sent but for its end. A
                    // secret reaching past the cut is held whole.
                    let mut cut = len - RUN_KEEP;
                    while let Some(h) = hits
                        .iter()
                        .find(|h| h.start >= self.ctx && h.start < cut && h.end > cut)
                    {
                        cut = h.start;
                    }
                    if cut > hold {
                        hold = cut;
                        keep_ctx = 1;
                    }
                }
            }
        }
        let final_hits = hits
            .iter()
            .filter(|h| h.start >= self.ctx && h.end <= hold)
            .copied();
        let mut aws = None;
        for h in final_hits.clone() {
            if h.format == SecretKind::AwsAccessKeyId.as_str() {
                aws = Some(self.base + h.end + AWS_PAIR_WINDOW);
            }
        }
        apply(self.mode, &mut self.held, final_hits, findings, "body")?;
        if aws.is_some() {
            self.aws_until = aws;
        }
        let out = Bytes::copy_from_slice(&self.held[self.ctx..hold]);
        let drop = hold - keep_ctx.min(hold);
        self.held.drain(..drop);
        self.base += drop;
        self.ctx = keep_ctx.min(hold);
        Ok(out)
    }

    /// After a PEM block was released open: everything up to and including its END line
    /// is redacted; what follows is pushed again.
    fn push_in_open_pem(&mut self, data: Bytes) -> Result<Step, &'static str> {
        let Some(tail) = self.pem_open.take() else {
            return Ok((data, None));
        };
        let mut seen = tail;
        let from = seen.len();
        seen.extend_from_slice(&data);
        let close = memchr::memmem::find_iter(&seen, PEM_END).find_map(|e| {
            let after = e + PEM_END.len();
            memchr::memmem::find(&seen[after..], PEM_CLOSE).map(|c| after + c + PEM_CLOSE.len())
        });
        let (upto, rest) = match close {
            Some(c) if c > from => (c - from, Some(data.slice(c - from..))),
            Some(_) => (0, Some(data.clone())),
            None => {
                self.pem_open = Some(seen[seen.len().saturating_sub(PEM_TAIL)..].to_vec());
                (data.len(), None)
            }
        };
        self.base += upto;
        let rest = rest.filter(|r| !r.is_empty());
        match self.mode {
            Mode::Pass => Ok((data.slice(..upto), rest)),
            // The block was refused when it was found.
            Mode::Block => Err(SecretKind::PrivateKey.as_str()),
            Mode::Redact => {
                let mut out = data[..upto].to_vec();
                overwrite(&mut out);
                Ok((Bytes::from(out), rest))
            }
        }
    }
}

/// The tool's response body, scanned as it streams (see the module's doc).
struct Scanning {
    inner: ProxyBody,
    tool: Arc<str>,
    findings: Arc<Findings>,
    /// False for a binary body: only its trailers are scanned.
    scan_data: bool,
    stream: Stream,
    /// Data to push again (what followed an open PEM block's END line).
    pending: Option<Bytes>,
    /// Trailers to send after the held bytes.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl Scanning {
    fn refused(&mut self, format: &'static str, location: &str) -> BoxError {
        self.done = true;
        self.trailers = None;
        self.pending = None;
        Box::new(refusal(&self.tool, format, location))
    }
}

impl Body for Scanning {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(t) = this.trailers.take() {
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(data) = this.pending.take() {
                match this.stream.push(data, &this.findings) {
                    Ok((out, rest)) => {
                        this.pending = rest;
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        continue;
                    }
                    Err(f) => return Poll::Ready(Some(Err(this.refused(f, "body")))),
                }
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if !this.scan_data {
                        return Poll::Ready(None);
                    }
                    return match this.stream.finish(&this.findings) {
                        Ok(Some(d)) => Poll::Ready(Some(Ok(Frame::data(d)))),
                        Ok(None) => Poll::Ready(None),
                        Err(f) => Poll::Ready(Some(Err(this.refused(f, "body")))),
                    };
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let frame = match frame.into_data() {
                Ok(data) if !this.scan_data => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(data) => {
                    this.pending = Some(data);
                    continue;
                }
                Err(frame) => frame,
            };
            let Ok(mut trailers) = frame.into_trailers() else {
                // A frame neither data nor trailers: nothing keygate knows to scan, so
                // it is not passed on.
                continue;
            };
            // Trailers end the body: held bytes go first.
            this.done = true;
            let last = if this.scan_data {
                match this.stream.finish(&this.findings) {
                    Ok(d) => d,
                    Err(f) => return Poll::Ready(Some(Err(this.refused(f, "body")))),
                }
            } else {
                None
            };
            let mode = this.stream.mode;
            if let Err((f, location)) = scan_headers(mode, "trailer", &mut trailers, &this.findings)
            {
                return Poll::Ready(Some(Err(this.refused(f, &location))));
            }
            match last {
                Some(d) => {
                    this.trailers = Some(trailers);
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                None => return Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers.is_none()
            && self.pending.is_none()
            && (self.done
                || (self.stream.held.len() == self.stream.ctx && self.inner.is_end_stream()))
    }

    fn size_hint(&self) -> SizeHint {
        // Redaction keeps lengths: what is left is what the tool has left plus what is
        // held (and pending).
        if self.done && self.trailers.is_none() {
            return SizeHint::with_exact(0);
        }
        let inner = self.inner.size_hint();
        let held = if self.stream.mode == Mode::Pass {
            0
        } else {
            (self.stream.held.len() - self.stream.ctx) as u64
        } + self.pending.as_ref().map_or(0, |p| p.len() as u64);
        let mut h = SizeHint::new();
        h.set_lower(inner.lower().saturating_add(held));
        if let Some(u) = inner.upper() {
            h.set_upper(u.saturating_add(held));
        }
        h
    }
}

/// A streaming decompressor of one coding.
enum Decoder {
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    /// `deflate`, before its first byte tells zlib from raw deflate.
    Deflate,
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
    Raw(flate2::write::DeflateDecoder<Vec<u8>>),
}

impl Decoder {
    fn for_coding(coding: &str) -> Option<Decoder> {
        match coding {
            "gzip" | "x-gzip" => Some(Decoder::Gzip(
                flate2::write::MultiGzDecoder::new(Vec::new()),
            )),
            "deflate" => Some(Decoder::Deflate),
            _ => None,
        }
    }

    /// Feeds compressed bytes; the decompressed ones are taken with [`Decoder::take`].
    fn write(&mut self, input: &[u8]) -> std::io::Result<()> {
        if let (Decoder::Deflate, Some(&first)) = (&*self, input.first()) {
            // zlib's first byte: method 8, window at most 32 KiB.
            *self = if first & 0x0f == 8 && first >> 4 <= 7 {
                Decoder::Zlib(flate2::write::ZlibDecoder::new(Vec::new()))
            } else {
                Decoder::Raw(flate2::write::DeflateDecoder::new(Vec::new()))
            };
        }
        match self {
            Decoder::Gzip(d) => d.write_all(input),
            Decoder::Zlib(d) => d.write_all(input),
            Decoder::Raw(d) => d.write_all(input),
            Decoder::Deflate => Ok(()),
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Zlib(d) => d.try_finish(),
            Decoder::Raw(d) => d.try_finish(),
            Decoder::Deflate => Ok(()),
        }
    }

    fn take(&mut self) -> Vec<u8> {
        match self {
            Decoder::Gzip(d) => std::mem::take(d.get_mut()),
            Decoder::Zlib(d) => std::mem::take(d.get_mut()),
            Decoder::Raw(d) => std::mem::take(d.get_mut()),
            Decoder::Deflate => Vec::new(),
        }
    }
}

/// A compressed body, decompressed as it streams, up to `max` bytes.
struct Decompressing {
    inner: ProxyBody,
    /// `None` once the body ended.
    decoder: Option<Decoder>,
    total: u64,
    max: u64,
    trailers: Option<HeaderMap>,
}

impl Decompressing {
    fn broken(&mut self) -> BoxError {
        self.decoder = None;
        Box::new(Error::new(
            ErrorKind::UpstreamUnavailable,
            "the tool's compressed response could not be decompressed",
        ))
    }

    /// Decompresses `input` in small steps, so a highly compressed frame cannot grow past
    /// the limit by much before it is seen.
    fn feed(&mut self, input: &[u8]) -> Result<Vec<u8>, BoxError> {
        let mut out = Vec::new();
        for piece in input.chunks(1024) {
            let Some(d) = self.decoder.as_mut() else {
                break;
            };
            if d.write(piece).is_err() {
                return Err(self.broken());
            }
            let more = d.take();
            self.count(more.len())?;
            if out.is_empty() {
                out = more;
            } else {
                out.extend_from_slice(&more);
            }
        }
        Ok(out)
    }

    fn count(&mut self, n: usize) -> Result<(), BoxError> {
        self.total = self.total.saturating_add(n as u64);
        if self.total > self.max {
            self.decoder = None;
            return Err(Box::new(
                Error::new(
                    ErrorKind::UpstreamUnavailable,
                    "the tool's response is larger decompressed than keygate checks",
                )
                .with_detail(format!("decompressed body over {} bytes", self.max)),
            ));
        }
        Ok(())
    }

    /// The end of the compressed data: what the decoder still holds.
    fn end(&mut self) -> Result<Vec<u8>, BoxError> {
        let Some(mut d) = self.decoder.take() else {
            return Ok(Vec::new());
        };
        if d.finish().is_err() {
            return Err(self.broken());
        }
        let out = d.take();
        self.count(out.len())?;
        Ok(out)
    }
}

impl Body for Decompressing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(t) = this.trailers.take() {
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            if this.decoder.is_none() {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.decoder = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    return match this.end() {
                        Ok(out) if out.is_empty() => Poll::Ready(None),
                        Ok(out) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(out))))),
                        Err(e) => Poll::Ready(Some(Err(e))),
                    };
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            match frame.into_data() {
                Ok(data) => match this.feed(&data) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out))))),
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                Err(frame) => {
                    let Ok(trailers) = frame.into_trailers() else {
                        continue;
                    };
                    return match this.end() {
                        Ok(out) if out.is_empty() => {
                            Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                        }
                        Ok(out) => {
                            this.trailers = Some(trailers);
                            Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
                        }
                        Err(e) => Poll::Ready(Some(Err(e))),
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers.is_none() && self.decoder.is_none()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use futures_util::FutureExt;
    use http_body_util::StreamBody;

    const GH: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const PEM: &str =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAx1y2z3\n-----END RSA PRIVATE KEY-----";

    fn settings(mode: Mode) -> Settings {
        Settings {
            mode,
            compressed: Compressed::Decompress,
            max_decompressed: 1 << 20,
            max_buffered: 1 << 20,
        }
    }

    fn redacted(s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        overwrite(&mut b);
        String::from_utf8(b).unwrap()
    }

    fn body_of(frames: Vec<Frame<Bytes>>) -> ProxyBody {
        StreamBody::new(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, BoxError>),
        ))
        .boxed()
    }

    fn response(headers: &[(&str, &str)], body: ProxyBody) -> Response<ProxyBody> {
        let mut r = Response::new(body);
        for (n, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    /// What came out of a scanned body: its data frames, trailers, and the error it ended
    /// with.
    struct Out {
        frames: Vec<Bytes>,
        trailers: Option<HeaderMap>,
        error: Option<String>,
    }

    impl Out {
        fn text(&self) -> String {
            let all: Vec<u8> = self.frames.iter().flat_map(|f| f.to_vec()).collect();
            String::from_utf8(all).unwrap()
        }
    }

    async fn collect(mut body: ProxyBody) -> Out {
        let mut out = Out {
            frames: Vec::new(),
            trailers: None,
            error: None,
        };
        while let Some(f) = body.frame().await {
            match f {
                Ok(f) => match f.into_data() {
                    Ok(d) => {
                        assert!(out.trailers.is_none(), "data after the trailers");
                        out.frames.push(d);
                    }
                    Err(f) => out.trailers = f.into_trailers().ok(),
                },
                Err(e) => {
                    out.error = Some(e.to_string());
                    break;
                }
            }
        }
        out
    }

    /// Scans a response of `frames` (data) with `headers`; returns its parts, what its body
    /// gave, and the findings.
    async fn run_frames(
        s: Settings,
        headers: &[(&str, &str)],
        frames: Vec<&[u8]>,
    ) -> (Result<(http::response::Parts, Out), Error>, Arc<Findings>) {
        let frames = frames
            .into_iter()
            .map(|f| Frame::data(Bytes::copy_from_slice(f)))
            .collect();
        let findings = Arc::new(Findings::default());
        let resp = response(headers, body_of(frames));
        let r = match scan(&s, "t", resp, findings.clone()).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                Ok((parts, collect(body).await))
            }
            Err(e) => Err(e),
        };
        (r, findings)
    }

    async fn redact(frames: Vec<&[u8]>) -> (String, Arc<Findings>) {
        let (r, f) = run_frames(settings(Mode::Redact), &[], frames).await;
        let (_, out) = r.unwrap();
        assert!(out.error.is_none());
        (out.text(), f)
    }

    #[tokio::test]
    async fn a_token_and_an_aws_key_pair_are_redacted_same_length() {
        let body = format!(
            "{{\"token\":\"{GH}\",\"Credentials\":{{\"AccessKeyId\":\"{AKID}\",\"SecretAccessKey\":\"{AWS_SECRET}\"}},\"n\":1}}"
        );
        let len = body.len().to_string();
        let (r, findings) = run_frames(
            settings(Mode::Redact),
            &[
                ("content-type", "application/json"),
                ("content-length", &len),
            ],
            vec![body.as_bytes()],
        )
        .await;
        let (parts, out) = r.unwrap();
        let want = body
            .replace(GH, &redacted(GH))
            .replace(AKID, &redacted(AKID))
            .replace(AWS_SECRET, &redacted(AWS_SECRET));
        assert_eq!(out.text(), want);
        assert_eq!(out.text().len(), body.len());
        assert_eq!(parts.headers["content-length"], len.as_str());
        let mut got = findings.snapshot();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("aws_access_key_id", "body".to_string(), 1),
                ("aws_secret_access_key", "body".to_string(), 1),
                ("github_token", "body".to_string(), 1),
            ]
        );
        // A 40-character run without an access key id before it is not a secret.
        let (text, findings) = redact(vec![format!("x {AWS_SECRET} y").as_bytes()]).await;
        assert_eq!(text, format!("x {AWS_SECRET} y"));
        assert!(findings.snapshot().is_empty());
    }

    /// Each secret split at every position into two frames, and into three (the middle
    /// one inside the secret), and into one-byte frames: redacted all the same.
    #[tokio::test]
    async fn a_secret_split_across_frames_is_caught() {
        for secret in [GH, PEM] {
            let body = format!("{{\"echo\":\"{secret}\",\"n\":1}}\n");
            let want = body.replace(secret, &redacted(secret));
            let b = body.as_bytes();
            for cut in 0..=b.len() {
                let (text, f) = redact(vec![&b[..cut], &b[cut..]]).await;
                assert_eq!(text, want, "cut at {cut}");
                assert_eq!(f.snapshot().len(), 1);
                assert_eq!(f.snapshot()[0].2, 1);
            }
            for cut in 1..b.len() - 5 {
                let (text, _) = redact(vec![&b[..cut], &b[cut..cut + 5], &b[cut + 5..]]).await;
                assert_eq!(text, want, "cut at {cut}, {}", cut + 5);
            }
            let bytes: Vec<&[u8]> = b.chunks(1).collect();
            assert_eq!(redact(bytes).await.0, want);
        }
        // The AWS pair split too: the secret key in a later frame than its key id.
        let body = format!("id={AKID}\nsecret={AWS_SECRET}\n");
        let want = body
            .replace(AKID, &redacted(AKID))
            .replace(AWS_SECRET, &redacted(AWS_SECRET));
        let b = body.as_bytes();
        for cut in 0..=b.len() {
            assert_eq!(redact(vec![&b[..cut], &b[cut..]]).await.0, want, "{cut}");
        }
    }

    /// A channel-fed body: frames are sent one by one, and what the scanner gives is
    /// checked before the next is sent.
    fn channel_body() -> (tokio::sync::mpsc::UnboundedSender<Frame<Bytes>>, ProxyBody) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Frame<Bytes>>();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|f| (Ok::<_, BoxError>(f), rx))
        });
        (tx, StreamBody::new(stream).boxed())
    }

    /// Everything the body gives without waiting for more frames.
    fn ready(body: &mut ProxyBody) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(Some(f)) = body.frame().now_or_never() {
            match f {
                Ok(f) => out.extend_from_slice(&f.into_data().unwrap()),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(out)
    }

    async fn sse(
        mode: Mode,
    ) -> (
        ProxyBody,
        tokio::sync::mpsc::UnboundedSender<Frame<Bytes>>,
        Arc<Findings>,
    ) {
        let (tx, body) = channel_body();
        let findings = Arc::new(Findings::default());
        let resp = response(&[("content-type", "text/event-stream")], body);
        let resp = scan(&settings(mode), "t", resp, findings.clone())
            .await
            .unwrap();
        (resp.into_body(), tx, findings)
    }

    #[tokio::test]
    async fn an_event_stream_is_delivered_event_by_event() {
        let (mut body, tx, findings) = sse(Mode::Redact).await;
        let ev1 = "event: message\ndata: {\"n\":1}\n\n";
        let ev2 = format!("data: {{\"token\":\"{GH}\"}}\n\n");
        let ev3 = "data: {\"n\":3}\n\n";
        let cut = ev2.find("ghp_").unwrap() + 10;
        tx.send(Frame::data(Bytes::from(ev1))).unwrap();
        assert_eq!(ready(&mut body).unwrap(), ev1.as_bytes());
        tx.send(Frame::data(Bytes::from(ev2[..cut].to_string())))
            .unwrap();
        let first = ready(&mut body).unwrap();
        assert!(ev2.as_bytes().starts_with(&first));
        assert!(!String::from_utf8_lossy(&first).contains("ghp_"));
        tx.send(Frame::data(Bytes::from(ev2[cut..].to_string())))
            .unwrap();
        let mut second = first;
        second.extend(ready(&mut body).unwrap());
        assert_eq!(
            String::from_utf8(second).unwrap(),
            ev2.replace(GH, &redacted(GH))
        );
        tx.send(Frame::data(Bytes::from(ev3))).unwrap();
        assert_eq!(ready(&mut body).unwrap(), ev3.as_bytes());
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(
            findings.snapshot(),
            vec![("github_token", "body".to_string(), 1)]
        );
    }

    #[tokio::test]
    async fn block_mode_refuses_a_json_body_with_a_secret() {
        let body = format!("{{\"a\":1,\"t\":\"{GH}\"}}");
        let (r, findings) = run_frames(
            settings(Mode::Block),
            &[("content-type", "application/json")],
            vec![&body.as_bytes()[..10], &body.as_bytes()[10..]],
        )
        .await;
        let e = r.err().unwrap();
        assert_eq!(e.kind, ErrorKind::SecretInResponse);
        assert_eq!(e.kind.status(), http::StatusCode::BAD_GATEWAY);
        assert!(!e.message.contains("ghp_"));
        assert_eq!(
            findings.snapshot(),
            vec![("github_token", "body".to_string(), 1)]
        );
        // Without a secret, the body is passed as it came.
        let (r, _) = run_frames(
            settings(Mode::Block),
            &[("content-type", "application/json")],
            vec![b"{\"a\":", b"1}"],
        )
        .await;
        assert_eq!(r.unwrap().1.text(), "{\"a\":1}");
        // Too large to hold: refused, but not as a secret.
        let mut s = settings(Mode::Block);
        s.max_buffered = 4;
        let (r, _) = run_frames(s, &[], vec![b"{\"a\":", b"1}"]).await;
        assert_eq!(r.err().unwrap().kind, ErrorKind::UpstreamUnavailable);
        // A header is checked first.
        let (r, findings) =
            run_frames(settings(Mode::Block), &[("x-token", GH)], vec![b"ok"]).await;
        assert_eq!(r.err().unwrap().kind, ErrorKind::SecretInResponse);
        assert_eq!(
            findings.snapshot(),
            vec![("github_token", "header:x-token".to_string(), 1)]
        );
    }

    #[tokio::test]
    async fn block_mode_cuts_an_event_stream() {
        let (mut body, tx, findings) = sse(Mode::Block).await;
        let ev1 = "data: {\"n\":1}\n\n";
        tx.send(Frame::data(Bytes::from(ev1))).unwrap();
        assert_eq!(ready(&mut body).unwrap(), ev1.as_bytes());
        tx.send(Frame::data(Bytes::from(format!("data: \"{GH}\"\n\n"))))
            .unwrap();
        let e = ready(&mut body).unwrap_err();
        assert!(e.contains("secret_in_response"), "{e}");
        assert!(!e.contains("ghp_"));
        tx.send(Frame::data(Bytes::from("data: 3\n\n"))).unwrap();
        assert!(
            body.frame().await.is_none(),
            "the stream goes on after the cut"
        );
        assert_eq!(
            findings.snapshot(),
            vec![("github_token", "body".to_string(), 1)]
        );
    }

    #[tokio::test]
    async fn pass_mode_records_and_changes_nothing() {
        let body = format!("a {GH} b {GH}\n");
        let b = body.as_bytes();
        let (r, findings) =
            run_frames(settings(Mode::Pass), &[("x-t", GH)], vec![&b[..8], &b[8..]]).await;
        let (parts, out) = r.unwrap();
        assert_eq!(out.frames.len(), 2, "a frame was held back");
        assert_eq!(out.frames[0].as_ref(), &b[..8]);
        assert_eq!(out.text(), body);
        assert_eq!(parts.headers["x-t"], GH);
        let mut got = findings.snapshot();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("github_token", "body".to_string(), 2),
                ("github_token", "header:x-t".to_string(), 1),
            ]
        );
    }

    #[tokio::test]
    async fn findings_are_counted_per_format_and_location() {
        let findings = Arc::new(Findings::default());
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", HeaderValue::from_static(GH));
        let body = body_of(vec![
            Frame::data(Bytes::from(format!("{GH} {AKID} {GH}"))),
            Frame::trailers(trailers),
        ]);
        let mut resp = response(
            &[("x-a", GH), ("set-cookie", GH), ("set-cookie", "a=1")],
            body,
        );
        resp.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b"OK"));
        let resp = scan(&settings(Mode::Redact), "t", resp, findings.clone())
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-a"], redacted(GH).as_str());
        let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, [redacted(GH).as_str(), "a=1"]);
        let out = collect(resp.into_body()).await;
        assert_eq!(out.trailers.unwrap()["x-t"], redacted(GH).as_str());
        let mut got = findings.snapshot();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("aws_access_key_id", "body".to_string(), 1),
                ("github_token", "body".to_string(), 2),
                ("github_token", "header:set-cookie".to_string(), 1),
                ("github_token", "header:x-a".to_string(), 1),
                ("github_token", "trailer:x-t".to_string(), 1),
            ]
        );
    }

    #[tokio::test]
    async fn a_reason_phrase_with_a_secret_is_dropped() {
        let findings = Arc::new(Findings::default());
        let mut resp = response(&[], body_of(vec![]));
        resp.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::try_from(format!("Bad {GH}").into_bytes()).unwrap());
        let resp = scan(&settings(Mode::Redact), "t", resp, findings.clone())
            .await
            .unwrap();
        assert!(resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .is_none());
        assert_eq!(
            findings.snapshot(),
            vec![("github_token", "reason".to_string(), 1)]
        );
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[tokio::test]
    async fn a_gzip_body_is_decompressed_and_redacted() {
        let body = format!("{{\"t\":\"{GH}\"}}\n").repeat(3);
        let z = gzip(body.as_bytes());
        let len = z.len().to_string();
        let (r, findings) = run_frames(
            settings(Mode::Redact),
            &[("content-encoding", "gzip"), ("content-length", &len)],
            z.chunks(7).collect(),
        )
        .await;
        let (parts, out) = r.unwrap();
        assert!(out.error.is_none());
        assert_eq!(out.text(), body.replace(GH, &redacted(GH)));
        assert!(parts.headers.get("content-encoding").is_none());
        assert!(parts.headers.get("content-length").is_none());
        assert_eq!(
            findings.snapshot(),
            vec![("github_token", "body".to_string(), 3)]
        );
        // deflate (zlib), and "identity" beside it.
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(body.as_bytes()).unwrap();
        let z = e.finish().unwrap();
        let (r, _) = run_frames(
            settings(Mode::Redact),
            &[
                ("content-encoding", "identity"),
                ("content-encoding", "deflate"),
            ],
            vec![&z],
        )
        .await;
        assert_eq!(r.unwrap().1.text(), body.replace(GH, &redacted(GH)));
        // Larger decompressed than allowed: the body ends with an error.
        let big = gzip(&vec![b'a'; 100_000]);
        let mut s = settings(Mode::Redact);
        s.max_decompressed = 10_000;
        let (r, _) = run_frames(s, &[("content-encoding", "gzip")], vec![&big]).await;
        assert!(r.unwrap().1.error.is_some());
        // Block mode reads the decompressed body.
        let (r, _) = run_frames(
            settings(Mode::Block),
            &[("content-encoding", "x-gzip")],
            vec![&gzip(body.as_bytes())],
        )
        .await;
        assert_eq!(r.err().unwrap().kind, ErrorKind::SecretInResponse);
    }

    #[tokio::test]
    async fn unknown_or_refused_codings_are_refused() {
        for (s, enc) in [
            (settings(Mode::Redact), "br"),
            (settings(Mode::Redact), "gzip, gzip"),
            (settings(Mode::Pass), "zstd"),
            (
                Settings {
                    compressed: Compressed::Refuse,
                    ..settings(Mode::Redact)
                },
                "gzip",
            ),
        ] {
            let (r, _) = run_frames(s, &[("content-encoding", enc)], vec![b"xx"]).await;
            let e = r.err().unwrap();
            assert_eq!(e.kind, ErrorKind::UpstreamUnavailable, "{enc}");
            assert!(e.message.contains("compressed"));
            assert!(e.detail.unwrap().starts_with("content-encoding: "));
        }
        // An empty body has nothing to hide.
        let resp = response(&[("content-encoding", "br")], crate::error::full_body(""));
        let findings = Arc::new(Findings::default());
        assert!(scan(&settings(Mode::Redact), "t", resp, findings)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_binary_body_passes_untouched() {
        let body = format!("\u{89}PNG {GH}");
        for ct in [
            "image/png",
            "application/octet-stream",
            "application/grpc+proto",
        ] {
            let (r, findings) = run_frames(
                settings(Mode::Redact),
                &[("content-type", ct), ("content-encoding", "br")],
                vec![body.as_bytes()],
            )
            .await;
            assert_eq!(r.unwrap().1.text(), body, "{ct}");
            assert!(findings.snapshot().is_empty());
        }
        assert!(!is_binary(None));
        assert!(!is_binary(Some(b"application/json; charset=utf-8")));
        assert!(!is_binary(Some(b"application/x-ndjson")));
        assert!(is_binary(Some(b"Image/PNG")));
    }

    #[tokio::test]
    async fn ordinary_text_is_not_a_secret() {
        let text = "task-1234567890abcdefghijklmnop risk-assessment-abcdefghijklmnopqrstuvwxyz \
                    skip_this AKIAtoolong1234567890ABCDEF -----BEGIN CERTIFICATE-----\nMIIB\n";
        let b = text.as_bytes();
        for cut in 0..=b.len() {
            let (out, findings) = redact(vec![&b[..cut], &b[cut..]]).await;
            assert_eq!(out, text);
            assert!(findings.snapshot().is_empty(), "{cut}");
        }
    }

    #[test]
    fn frames_without_secrets_are_not_copied() {
        let f = Findings::default();
        let mut s = Stream::new(Mode::Redact);
        let one = Bytes::from_static(b"{\"a\":\"abc def");
        let (out, rest) = s.push(one.clone(), &f).unwrap();
        assert_eq!(out.as_ptr(), one.as_ptr(), "copied");
        assert_eq!(out.as_ref(), b"{\"a\":\"abc ");
        assert!(rest.is_none());
        // The held run ends in the next frame: only it is copied, the rest is a slice.
        let two = Bytes::from_static(b"ghi\",\"b\":1}\n");
        let (out, rest) = s.push(two.clone(), &f).unwrap();
        assert_eq!(out.as_ref(), b"defghi");
        let rest = rest.unwrap();
        let (out, rest2) = s.push(rest, &f).unwrap();
        assert!(rest2.is_none());
        assert_eq!(out.as_ptr(), two[3..].as_ptr(), "copied");
        assert_eq!(out.as_ref(), b"\",\"b\":1}\n");
        assert!(s.held.is_empty());
        assert!(f.snapshot().is_empty());
    }

    #[tokio::test]
    async fn long_runs_and_open_pem_blocks_are_capped() {
        // A run of token bytes longer than the cap is sent in pieces; a token after it
        // is still found.
        let run = "A".repeat(3 * HOLD_CAP);
        let body = format!("{run}/{GH}\n");
        let b = body.as_bytes();
        let frames: Vec<&[u8]> = b.chunks(16 * 1024).collect();
        let (out, f) = redact(frames).await;
        assert_eq!(out, body.replace(GH, &redacted(GH)));
        assert_eq!(f.snapshot(), vec![("github_token", "body".to_string(), 1)]);
        // A PEM block open past the cap: redacted wholesale up to its END line.
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----",
            "M".repeat(2 * HOLD_CAP)
        );
        let body = format!("a {pem} b {GH}\n");
        let b = body.as_bytes();
        let (out, f) = redact(b.chunks(16 * 1024).collect()).await;
        assert_eq!(out.len(), body.len());
        assert!(out.starts_with("a keygate-redacted"));
        assert!(
            out.ends_with(&format!(" b {}\n", redacted(GH))),
            "{}",
            &out[out.len() - 80..]
        );
        assert!(!out.contains("MMM"));
        assert!(!out.contains("END"));
        let mut got = f.snapshot();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("github_token", "body".to_string(), 1),
                ("private_key", "body".to_string(), 1),
            ]
        );
    }
}
