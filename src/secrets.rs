//! Detection of known secret formats in text: one Aho-Corasick pass over the prefixes the
//! formats start with, then a cheap check of what follows each hit. Used on request
//! headers, query values, paths and text bodies (strip), and for redaction.
//!
//! Every format is anchored at a token boundary (the byte before it is not a letter or
//! digit), so `task-…` is not read as an `sk-…` key.

use aho_corasick::{AhoCorasick, MatchKind};
use std::sync::OnceLock;

/// A kind of secret keygate recognizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    AwsAccessKeyId,
    GithubToken,
    SlackToken,
    OpenAiKey,
    StripeKey,
    PrivateKey,
    Jwt,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::AwsAccessKeyId => "aws_access_key_id",
            SecretKind::GithubToken => "github_token",
            SecretKind::SlackToken => "slack_token",
            SecretKind::OpenAiKey => "openai_key",
            SecretKind::StripeKey => "stripe_key",
            SecretKind::PrivateKey => "private_key",
            SecretKind::Jwt => "jwt",
        }
    }
}

/// One secret found: its kind and byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub kind: SecretKind,
    pub start: usize,
    pub end: usize,
}

const PREFIXES: &[(&str, SecretKind)] = &[
    ("AKIA", SecretKind::AwsAccessKeyId),
    ("ASIA", SecretKind::AwsAccessKeyId),
    ("ABIA", SecretKind::AwsAccessKeyId),
    ("ACCA", SecretKind::AwsAccessKeyId),
    ("ghp_", SecretKind::GithubToken),
    ("gho_", SecretKind::GithubToken),
    ("ghu_", SecretKind::GithubToken),
    ("ghs_", SecretKind::GithubToken),
    ("ghr_", SecretKind::GithubToken),
    ("github_pat_", SecretKind::GithubToken),
    ("xoxb-", SecretKind::SlackToken),
    ("xoxp-", SecretKind::SlackToken),
    ("xoxa-", SecretKind::SlackToken),
    ("xoxr-", SecretKind::SlackToken),
    ("xoxs-", SecretKind::SlackToken),
    ("xoxe-", SecretKind::SlackToken),
    ("xapp-", SecretKind::SlackToken),
    ("sk-", SecretKind::OpenAiKey),
    ("sk_live_", SecretKind::StripeKey),
    ("rk_live_", SecretKind::StripeKey),
    ("sk_test_", SecretKind::StripeKey),
    ("-----BEGIN ", SecretKind::PrivateKey),
    ("eyJ", SecretKind::Jwt),
];

fn automaton() -> Option<&'static AhoCorasick> {
    static AC: OnceLock<Option<AhoCorasick>> = OnceLock::new();
    AC.get_or_init(|| {
        AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(PREFIXES.iter().map(|(p, _)| p))
            .ok()
    })
    .as_ref()
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn run(hay: &[u8], from: usize, ok: impl Fn(u8) -> bool) -> usize {
    hay[from..].iter().take_while(|&&b| ok(b)).count()
}

fn b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The end of the secret that starts at `start` with `prefix`, if the text there really
/// is one of `kind`.
fn secret_end(hay: &[u8], start: usize, prefix_len: usize, kind: SecretKind) -> Option<usize> {
    let body = start + prefix_len;
    let end = match kind {
        SecretKind::AwsAccessKeyId => {
            let n = run(hay, body, |b| b.is_ascii_uppercase() || b.is_ascii_digit());
            (n == 16).then_some(body + n)?
        }
        SecretKind::GithubToken => {
            let n = run(hay, body, |b| b.is_ascii_alphanumeric() || b == b'_');
            (n >= 30).then_some(body + n)?
        }
        SecretKind::SlackToken => {
            let n = run(hay, body, |b| b.is_ascii_alphanumeric() || b == b'-');
            (n >= 10).then_some(body + n)?
        }
        SecretKind::OpenAiKey => {
            let n = run(hay, body, b64url);
            (n >= 20).then_some(body + n)?
        }
        SecretKind::StripeKey => {
            let n = run(hay, body, |b| b.is_ascii_alphanumeric());
            (n >= 16).then_some(body + n)?
        }
        SecretKind::PrivateKey => {
            // "-----BEGIN [RSA |EC |OPENSSH |ENCRYPTED ]PRIVATE KEY-----" … "-----END …-----"
            let window = &hay[body..hay.len().min(body + 40)];
            let marker = b"PRIVATE KEY-----";
            let pos = window.windows(marker.len()).position(|w| w == marker)?;
            let head_end = body + pos + marker.len();
            // The whole block is the secret; without an END line, everything after it is.
            let end_marker = b"-----END ";
            match hay[head_end..]
                .windows(end_marker.len())
                .position(|w| w == end_marker)
            {
                Some(p) => {
                    let after = head_end + p + end_marker.len();
                    let close = hay[after..]
                        .windows(5)
                        .position(|w| w == b"-----")
                        .map(|q| after + q + 5)
                        .unwrap_or(hay.len());
                    close
                }
                None => hay.len(),
            }
        }
        SecretKind::Jwt => {
            // header.payload.signature, both JSON parts base64url of an object ("eyJ").
            let h = run(hay, body, b64url);
            let dot1 = body + h;
            if h < 10 || hay.get(dot1) != Some(&b'.') || !hay[dot1 + 1..].starts_with(b"eyJ") {
                return None;
            }
            let p = run(hay, dot1 + 1, b64url);
            let dot2 = dot1 + 1 + p;
            if p < 10 || hay.get(dot2) != Some(&b'.') {
                return None;
            }
            dot2 + 1 + run(hay, dot2 + 1, b64url)
        }
    };
    // A key id or token that runs on into more word characters is something else.
    if kind != SecretKind::PrivateKey && hay.get(end).copied().is_some_and(is_word) {
        return None;
    }
    Some(end)
}

/// Calls `f` for each secret in `hay`, left to right; stops when `f` returns false.
fn scan(hay: &[u8], mut f: impl FnMut(Finding) -> bool) {
    let Some(ac) = automaton() else {
        // The patterns are constant, so this cannot happen; if it did, failing closed
        // means treating the whole text as a secret.
        f(Finding {
            kind: SecretKind::PrivateKey,
            start: 0,
            end: hay.len(),
        });
        return;
    };
    let mut at = 0;
    while at < hay.len() {
        let Some(m) = ac.find(&hay[at..]) else {
            return;
        };
        let start = at + m.start();
        let (prefix, kind) = PREFIXES[m.pattern().as_usize()];
        let boundary = start == 0 || !is_word(hay[start - 1]);
        match boundary
            .then(|| secret_end(hay, start, prefix.len(), kind))
            .flatten()
        {
            Some(end) => {
                if !f(Finding { kind, start, end }) {
                    return;
                }
                at = end.max(start + 1);
            }
            None => at = start + 1,
        }
    }
}

/// The first secret in `hay`, if any.
pub fn find_first(hay: &[u8]) -> Option<Finding> {
    let mut found = None;
    scan(hay, |f| {
        found = Some(f);
        false
    });
    found
}

/// Every secret in `hay`.
pub fn find_all(hay: &[u8]) -> Vec<Finding> {
    let mut all = Vec::new();
    scan(hay, |f| {
        all.push(f);
        true
    });
    all
}

/// What replaces a redacted secret.
pub const REDACTED: &str = "[REDACTED]";

/// `hay` with every secret replaced by [`REDACTED`], and the kinds replaced; `None` when
/// there was nothing to redact.
pub fn redact(hay: &[u8]) -> Option<(Vec<u8>, Vec<SecretKind>)> {
    let found = find_all(hay);
    if found.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut last = 0;
    for f in &found {
        out.extend_from_slice(&hay[last..f.start]);
        out.extend_from_slice(REDACTED.as_bytes());
        last = f.end;
    }
    out.extend_from_slice(&hay[last..]);
    Some((out, found.iter().map(|f| f.kind).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(s: &str) -> Option<SecretKind> {
        find_first(s.as_bytes()).map(|f| f.kind)
    }

    #[test]
    fn known_formats_are_found() {
        let cases = [
            ("key=AKIAIOSFODNN7EXAMPLE&x=1", SecretKind::AwsAccessKeyId),
            ("ASIAY34FZKBOKMUTVV7A", SecretKind::AwsAccessKeyId),
            (
                "token ghp_0123456789abcdefghijABCDEFGHIJ012345",
                SecretKind::GithubToken,
            ),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
                SecretKind::GithubToken,
            ),
            ("\"xoxb-1234567890-abcdefghij\"", SecretKind::SlackToken),
            ("sk-proj-abcdefghijklmnopqrstuvwx", SecretKind::OpenAiKey),
            ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", SecretKind::StripeKey),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
                SecretKind::PrivateKey,
            ),
            ("-----BEGIN PRIVATE KEY-----\nMC4C", SecretKind::PrivateKey),
            (
                "a eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl b",
                SecretKind::Jwt,
            ),
        ];
        for (text, kind) in cases {
            assert_eq!(kind_of(text), Some(kind), "{text}");
        }
    }

    #[test]
    fn near_misses_are_not_secrets() {
        for text in [
            "AKIAIOSFODNN7EXAMPL",   // one character short
            "AKIAIOSFODNN7EXAMPLEX", // runs on
            "XAKIAIOSFODNN7EXAMPLE", // no boundary
            "ghp_short",
            "task-abcdefghijklmnopqrstuvwxyz", // "sk-" inside a word
            "sk-short",
            "-----BEGIN CERTIFICATE-----\nMIIB",
            "eyJhbGciOiJFUzI1NiJ9 only a header",
            "xoxb-123",
            "plain text with no secret at all",
        ] {
            assert_eq!(kind_of(text), None, "{text}");
        }
    }

    #[test]
    fn redaction_replaces_every_secret() {
        let text = b"a=AKIAIOSFODNN7EXAMPLE b=xoxp-1234567890-abcdef c=ok";
        let (out, kinds) = redact(text).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a=[REDACTED] b=[REDACTED] c=ok"
        );
        assert_eq!(
            kinds,
            vec![SecretKind::AwsAccessKeyId, SecretKind::SlackToken]
        );
        assert!(redact(b"nothing here").is_none());
    }
}
