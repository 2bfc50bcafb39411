//! **respond**: the response-side work; today the removal of keygate's credential from
//! responses.
//!
//! keygate's credential is for the tool, never for the agent. A tool that echoes its
//! request (Apache's `TRACE`, a debug endpoint such as httpbin's `/anything`, `keygate
//! echo`) would otherwise hand it back. inject hands the exact values it put on the
//! request to this phase ([`Injected`]), and every occurrence is overwritten in:
//!
//! - the status line's reason phrase (dropped: the standard phrase is sent instead),
//! - every response header value (`Location`, `Set-Cookie`, any other); a header whose
//!   *name* carries it is dropped,
//! - the body, as it streams (never buffered whole), including a value split across
//!   any number of frames, and the trailers.
//!
//! Forms looked for, for each value inject set (the token after `Bearer `, the whole value
//! of a custom header, the query value both as sent and decoded, for `Basic` both the
//! base64 and the decoded `user:password`): the value as is; JSON-escaped (what a JSON
//! string holds, with `/` both plain and as `\/`); form-encoded (`+` for space) and
//! percent-encoded (every byte but `A-Za-z0-9-._~`, upper-case hex). Not covered: other
//! encodings a tool chooses deliberately (base64 of the value, lower-case hex escapes,
//! `\u` escapes of plain characters, compression inside the body); a tool holds the
//! credential and can always encode it, the guarantee is about tools that echo.
//!
//! Each occurrence is replaced by a marker of exactly its length (`keygate-redacted`
//! followed by `*`, or only `*` for values shorter than that), so the body's length never
//! changes: `Content-Length`, `HEAD` answers and ranges stay true, and nothing is
//! re-framed.
//!
//! A compressed body (`Content-Encoding` other than `identity`) cannot be scanned. inject
//! asks for `Accept-Encoding: identity`; a tool that compresses anyway gets its response
//! refused with `upstream_unavailable` (502) unless the body is empty: fail closed.
//!
//! The secret values live in the [`Injected`] inject returns; the driver hands them to
//! this phase, and they are dropped with the request's context once the response is done.
//! No `Debug` prints them.

use crate::error::{BoxError, Error, ErrorKind, ProxyBody};
use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The marker that overwrites an occurrence of keygate's credential (then `*` up to the
/// occurrence's length).
const MARKER: &[u8] = b"keygate-redacted";

/// Bytes kept unencoded by the strict percent-encoding (RFC 3986 unreserved).
const STRICT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The values keygate injected into one request, compiled for the search of responses.
///
/// Holds secrets: no `Debug` that prints them, no `Clone`; dropped with the response.
pub struct Injected {
    search: Search,
    /// Every form looked for (for the check of a value cut at the end of a frame).
    needles: Vec<Vec<u8>>,
    longest: usize,
}

impl std::fmt::Debug for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The needles are the secret: only how many.
        f.debug_struct("Injected")
            .field("forms", &self.needles.len())
            .finish_non_exhaustive()
    }
}

impl Injected {
    /// Compiles the search for `values` (each exactly as inject set it or as its tool
    /// reads it) in every form the module documents. `None` when there is nothing to
    /// look for.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Injected> {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        let mut add = |n: Vec<u8>| {
            if !n.is_empty() && !needles.contains(&n) {
                needles.push(n);
            }
        };
        for v in values {
            add(v.to_vec());
            if let Ok(s) = std::str::from_utf8(v) {
                if let Ok(json) = serde_json::to_string(s) {
                    let inner = &json[1..json.len() - 1];
                    add(inner.as_bytes().to_vec());
                    add(inner.replace('/', "\\/").into_bytes());
                }
            }
            add(form_urlencoded::byte_serialize(v)
                .collect::<String>()
                .into_bytes());
            add(percent_encoding::percent_encode(v, STRICT)
                .collect::<String>()
                .into_bytes());
        }
        if needles.is_empty() {
            return None;
        }
        // One form (a JWT or token whose forms all spell the same): a substring finder,
        // built in well under a microsecond, as a credential minted for one call needs.
        // Several: the cheapest automaton to build; searching is led by the prefilter (a
        // SIMD scan for the needles' starts) whatever the automaton, and a DFA costs
        // several times more to build.
        let search = match needles.as_slice() {
            [one] => Search::One(Box::new(memchr::memmem::Finder::new(one).into_owned())),
            _ => Search::Many(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .kind(Some(AhoCorasickKind::NoncontiguousNFA))
                    .build(&needles)
                    .ok()?,
            ),
        };
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        Some(Injected {
            search,
            needles,
            longest,
        })
    }

    /// Whether `hay` holds a form of the credential.
    pub fn is_in(&self, hay: &[u8]) -> bool {
        self.search.is_match(hay)
    }

    /// `hay` with every form of the credential overwritten, or `None` when it holds none.
    pub fn redact(&self, hay: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for (start, end) in self.search.matches(hay) {
            let o = out.get_or_insert_with(|| hay.to_vec());
            overwrite(&mut o[start..end]);
        }
        out
    }

    /// The length of the longest end of `buf` that is the start of some form (shorter than
    /// the whole form): what must wait for the next frame before it can be sent.
    fn pending_prefix(&self, buf: &[u8]) -> usize {
        let window = buf.len().min(self.longest.saturating_sub(1));
        let tail = &buf[buf.len() - window..];
        let mut best = 0;
        for n in &self.needles {
            let first = n[0];
            // Longest first: the first fit of a needle is its longest.
            let max = window.min(n.len() - 1);
            for k in (best + 1..=max).rev() {
                let s = &tail[window - k..];
                if s[0] == first && n.starts_with(s) {
                    best = k;
                    break;
                }
            }
        }
        best
    }

    /// Scans `buf` (held bytes then a new frame). Returns how many leading bytes are
    /// final, having overwritten every form found in them; the rest must wait for more
    /// data (a form may continue there). With `last`, everything is final.
    fn scan(&self, buf: &mut [u8], last: bool) -> usize {
        let hold_from = if last {
            buf.len()
        } else {
            buf.len() - self.pending_prefix(buf)
        };
        let mut ready = hold_from;
        let mut found: Vec<(usize, usize)> = Vec::new();
        for (start, end) in self.search.matches(buf) {
            if end > hold_from {
                // A longer form may start here: wait with the whole match.
                ready = ready.min(start);
                break;
            }
            found.push((start, end));
        }
        for (s, e) in found {
            overwrite(&mut buf[s..e]);
        }
        ready
    }
}

/// The compiled search: one form, or several (leftmost-longest).
enum Search {
    One(Box<memchr::memmem::Finder<'static>>),
    Many(AhoCorasick),
}

impl Search {
    fn is_match(&self, hay: &[u8]) -> bool {
        match self {
            Search::One(f) => f.find(hay).is_some(),
            Search::Many(ac) => ac.is_match(hay),
        }
    }

    /// Non-overlapping matches, leftmost first, as (start, end).
    fn matches(&self, hay: &[u8]) -> Vec<(usize, usize)> {
        match self {
            Search::One(f) => {
                let n = f.needle().len();
                f.find_iter(hay).map(|s| (s, s + n)).collect()
            }
            Search::Many(ac) => ac.find_iter(hay).map(|m| (m.start(), m.end())).collect(),
        }
    }
}

/// Overwrites `b` with the redaction marker, same length: `keygate-redacted` then `*`, or
/// only `*` when shorter (shared with the response scanner, [`super::scan`]).
pub(crate) fn overwrite(b: &mut [u8]) {
    b.fill(b'*');
    if b.len() >= MARKER.len() {
        b[..MARKER.len()].copy_from_slice(MARKER);
    }
}

/// Runs the respond phase on the tool's response: removes keygate's credential from the
/// reason phrase, the headers, the body and the trailers. Refuses (fails closed) a
/// compressed non-empty body when a credential was injected.
pub fn respond(
    injected: Option<Arc<Injected>>,
    tool: &str,
    resp: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, Error> {
    // Nothing injected, nothing to look for: the response passes untouched.
    let Some(injected) = injected else {
        return Ok(resp);
    };
    let (mut parts, body) = resp.into_parts();
    // Every value and every coding of them: one `identity` beside a `gzip` is compressed.
    let mut encodings = parts.headers.get_all(http::header::CONTENT_ENCODING).iter();
    if let Some(enc) = encodings.find(|enc| {
        !enc.to_str().is_ok_and(|e| {
            e.split(',')
                .all(|c| c.trim().is_empty() || c.trim().eq_ignore_ascii_case("identity"))
        })
    }) {
        if !body.is_end_stream() {
            let detail = format!(
                "content-encoding: {}",
                String::from_utf8_lossy(enc.as_bytes())
            );
            return Err(Error::new(
                ErrorKind::UpstreamUnavailable,
                format!(
                    "tool {:?} answered with a compressed body, which keygate cannot check for its credential",
                    tool
                ),
            )
            .with_detail(detail));
        }
    }
    if let Some(reason) = parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        if injected.is_in(reason.as_bytes()) {
            parts.extensions.remove::<hyper::ext::ReasonPhrase>();
        }
    }
    redact_headers(&injected, &mut parts.headers);
    Ok(Response::from_parts(parts, redacting(injected, body)))
}

/// `body` with every form of the injected credential overwritten as it streams (the
/// length is unchanged); the body lets go of the secret when it ends.
pub fn redacting(injected: Arc<Injected>, body: ProxyBody) -> ProxyBody {
    Redacting {
        inner: body,
        injected: Some(injected),
        held: Vec::new(),
        trailers: None,
    }
    .boxed()
}

/// Overwrites the credential in every header value; drops a header whose name holds it.
fn redact_headers(injected: &Injected, headers: &mut HeaderMap) {
    // Usually nothing matches: one pass that only looks.
    let hit = headers
        .iter()
        .any(|(n, v)| injected.is_in(v.as_bytes()) || injected.is_in(n.as_str().as_bytes()));
    if !hit {
        return;
    }
    let old = std::mem::take(headers);
    let mut name = None;
    for (n, v) in old {
        if n.is_some() {
            name = n;
        }
        let Some(n) = &name else { continue };
        if injected.is_in(n.as_str().as_bytes()) {
            continue;
        }
        let v = match injected.redact(v.as_bytes()) {
            // The marker is visible ASCII, and replaced bytes were valid: still a value.
            Some(r) => match HeaderValue::from_bytes(&r) {
                Ok(r) => r,
                Err(_) => continue,
            },
            None => v,
        };
        headers.append(n.clone(), v);
    }
}

/// The tool's response body with keygate's credential overwritten as it streams. Holds
/// back only the end of a frame that could be the start of a form of the credential, so
/// an event stream is not delayed by a frame.
struct Redacting {
    inner: ProxyBody,
    /// `None` once the body ended: the secret is let go then.
    injected: Option<Arc<Injected>>,
    /// Bytes held back from the previous frames.
    held: Vec<u8>,
    /// Trailers to send after the held bytes.
    trailers: Option<HeaderMap>,
}

impl Redacting {
    /// The held bytes, as final (the body ended).
    fn flush(&mut self) -> Option<Bytes> {
        let mut held = std::mem::take(&mut self.held);
        if let Some(inj) = &self.injected {
            inj.scan(&mut held, true);
        }
        (!held.is_empty()).then(|| Bytes::from(held))
    }

    /// A new frame's data: what may be sent now (possibly nothing).
    fn data(&mut self, data: Bytes) -> Bytes {
        let Some(inj) = &self.injected else {
            return data;
        };
        if self.held.is_empty() {
            if !inj.is_in(&data) {
                // The common case: nothing in the frame; sent as is (no copy), but for an
                // end that may start the credential, which waits for the next frame.
                let keep = data.len() - inj.pending_prefix(&data);
                self.held.extend_from_slice(&data[keep..]);
                return data.slice(..keep);
            }
            self.held = data.to_vec();
        } else {
            self.held.extend_from_slice(&data);
        }
        let ready = inj.scan(&mut self.held, false);
        let rest = self.held.split_off(ready);
        Bytes::from(std::mem::replace(&mut self.held, rest))
    }
}

impl Body for Redacting {
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
            if this.injected.is_none() {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    let last = this.flush();
                    this.injected = None;
                    if let Some(d) = last {
                        return Poll::Ready(Some(Ok(Frame::data(d))));
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            let out = this.data(data);
                            if out.is_empty() {
                                continue;
                            }
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        Err(frame) => frame,
                    };
                    let Ok(mut trailers) = frame.into_trailers() else {
                        // A frame neither data nor trailers: nothing keygate knows to
                        // scan, so it is not passed on.
                        continue;
                    };
                    if let Some(inj) = &this.injected {
                        redact_headers(inj, &mut trailers);
                    }
                    // Trailers end the body: held bytes go first.
                    let last = this.flush();
                    this.injected = None;
                    match last {
                        Some(d) => {
                            this.trailers = Some(trailers);
                            return Poll::Ready(Some(Ok(Frame::data(d))));
                        }
                        None => return Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers.is_none()
            && self.held.is_empty()
            && (self.injected.is_none() || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        // Replacements keep lengths: what is left is what the tool has left plus what is
        // held.
        if self.injected.is_none() {
            return SizeHint::with_exact(0);
        }
        let inner = self.inner.size_hint();
        let held = self.held.len() as u64;
        let mut h = SizeHint::new();
        h.set_lower(inner.lower().saturating_add(held));
        if let Some(u) = inner.upper() {
            h.set_upper(u.saturating_add(held));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    const SECRET: &str = "s3cr3t/t0ken+value=";

    fn injected() -> Arc<Injected> {
        Arc::new(Injected::new([SECRET.as_bytes()]).unwrap())
    }

    /// Streams `frames` through the filter; returns what came out, frame by frame.
    fn run(inj: Arc<Injected>, frames: Vec<Vec<u8>>) -> Vec<Bytes> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            let stream = futures_util::stream::iter(
                frames
                    .into_iter()
                    .map(|f| Ok::<_, BoxError>(Frame::data(Bytes::from(f)))),
            );
            let mut body = redacting(inj, StreamBody::new(stream).boxed());
            let mut out = Vec::new();
            while let Some(f) = body.frame().await {
                out.push(f.unwrap().into_data().unwrap());
            }
            assert!(body.is_end_stream());
            out
        })
    }

    fn joined(frames: &[Bytes]) -> Vec<u8> {
        frames.iter().flat_map(|f| f.iter().copied()).collect()
    }

    #[test]
    fn forms_looked_for() {
        let inj = injected();
        let forms: Vec<String> = inj
            .needles
            .iter()
            .map(|n| String::from_utf8(n.clone()).unwrap())
            .collect();
        assert_eq!(
            forms,
            [SECRET, "s3cr3t\\/t0ken+value=", "s3cr3t%2Ft0ken%2Bvalue%3D",]
        );
        assert!(Injected::new([&b""[..]]).is_none());
        assert!(format!("{inj:?}").contains("forms: 3"));
        assert!(!format!("{inj:?}").contains("s3cr3t"));
    }

    #[test]
    fn every_form_is_overwritten_with_its_length() {
        let inj = injected();
        for (hay, want) in [
            (format!("a {SECRET} b"), "a keygate-redacted*** b"),
            (
                "{\"h\":\"s3cr3t\\/t0ken+value=\"}".to_string(),
                "{\"h\":\"keygate-redacted****\"}",
            ),
            (
                "/x?k=s3cr3t%2Ft0ken%2Bvalue%3D".to_string(),
                "/x?k=keygate-redacted*********",
            ),
            ("nothing here".to_string(), "nothing here"),
        ] {
            let got = inj
                .redact(hay.as_bytes())
                .unwrap_or_else(|| hay.clone().into_bytes());
            assert_eq!(String::from_utf8(got).unwrap(), want, "{hay}");
            assert_eq!(want.len(), hay.len());
        }
        let short = Injected::new([&b"abc"[..]]).unwrap();
        assert_eq!(short.redact(b"xabcx").unwrap(), b"x***x");
    }

    /// The secret split at every position, into two frames and into one-byte frames, in
    /// each form: it never comes out, and everything else comes out unchanged.
    #[test]
    fn a_secret_split_at_every_position_is_caught() {
        let probe = injected();
        let forms = probe.needles.clone();
        for form in &forms {
            let body = [b"{\"echo\":\"".as_slice(), form, b"\",\"n\":1}"].concat();
            let marker_len = form.len();
            let mut want = body.clone();
            let at = 9;
            overwrite(&mut want[at..at + marker_len]);
            for cut in 0..=body.len() {
                let frames = vec![body[..cut].to_vec(), body[cut..].to_vec()];
                let out = joined(&run(injected(), frames));
                assert_eq!(out, want, "form {form:?} cut at {cut}");
            }
            for cut in 1..body.len() {
                // Three pieces, the middle one inside the secret.
                let frames = vec![
                    body[..cut].to_vec(),
                    body[cut..(cut + 3).min(body.len())].to_vec(),
                    body[(cut + 3).min(body.len())..].to_vec(),
                ];
                assert_eq!(joined(&run(injected(), frames)), want);
            }
            let bytes: Vec<Vec<u8>> = body.iter().map(|b| vec![*b]).collect();
            assert_eq!(joined(&run(injected(), bytes)), want);
        }
    }

    #[test]
    fn frames_without_the_secret_pass_unchanged_and_undelayed() {
        let frames = vec![b"data: one\n\n".to_vec(), b"data: two\n\n".to_vec()];
        let out = run(injected(), frames.clone());
        assert_eq!(out.len(), 2, "a frame was held back");
        assert_eq!(out[0].as_ref(), frames[0].as_slice());
        // A frame ending with what could start the secret waits only for that part.
        let out = run(injected(), vec![b"abc s3c".to_vec(), b"ond".to_vec()]);
        assert_eq!(out[0].as_ref(), b"abc ");
        assert_eq!(joined(&out), b"abc s3cond");
    }

    #[test]
    fn overlapping_forms_take_the_longest() {
        // A value that is the start of another: the longer one wins even across frames.
        let inj = || Arc::new(Injected::new([&b"abc"[..], &b"abcdefgh"[..]]).unwrap());
        assert_eq!(
            joined(&run(inj(), vec![b"xxabc".to_vec(), b"defghyy".to_vec()])),
            b"xx********yy"
        );
        assert_eq!(joined(&run(inj(), vec![b"xxabc".to_vec()])), b"xx***");
        assert_eq!(
            joined(&run(inj(), vec![b"abcab".to_vec(), b"cdefgh".to_vec()])),
            b"***********"
        );
    }

    #[test]
    fn trailers_are_redacted_and_follow_the_held_bytes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-echo", SECRET.parse().unwrap());
            let frames = vec![
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x s3cr"))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut body = redacting(
                injected(),
                StreamBody::new(futures_util::stream::iter(frames)).boxed(),
            );
            let mut data = Vec::new();
            let mut got = None;
            while let Some(f) = body.frame().await {
                match f.unwrap().into_data() {
                    Ok(d) => {
                        assert!(got.is_none(), "data after the trailers");
                        data.extend_from_slice(&d);
                    }
                    Err(f) => got = f.into_trailers().ok(),
                }
            }
            assert_eq!(data, b"x s3cr");
            assert_eq!(got.unwrap()["x-echo"], "keygate-redacted***");
        });
    }

    #[test]
    fn headers_are_redacted() {
        let inj = injected();
        let mut h = HeaderMap::new();
        h.insert("location", format!("/x?t={SECRET}").parse().unwrap());
        h.append("set-cookie", "a=1".parse().unwrap());
        h.append("set-cookie", format!("k={SECRET}").parse().unwrap());
        h.insert("x-plain", "plain".parse().unwrap());
        redact_headers(&inj, &mut h);
        assert_eq!(h["location"], "/x?t=keygate-redacted***");
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "k=keygate-redacted***"]);
        assert_eq!(h["x-plain"], "plain");
        let name = Injected::new([&b"x-named"[..]]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-named", "v".parse().unwrap());
        h.insert("x-other", "v".parse().unwrap());
        redact_headers(&name, &mut h);
        assert!(h.get("x-named").is_none());
        assert_eq!(h.len(), 1);
    }
}
