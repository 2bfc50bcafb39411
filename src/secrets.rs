//! Detection of known secret formats in text: one Aho-Corasick pass over the prefixes the
//! formats start with, then a cheap check of what follows each hit (see [`PREFIXES`] and
//! `secret_end` for every format known). Used on request
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
    GitlabToken,
    SlackToken,
    SlackWebhook,
    OpenAiKey,
    AnthropicKey,
    StripeKey,
    VaultToken,
    GoogleApiKey,
    NpmToken,
    PypiToken,
    HuggingFaceToken,
    SendgridKey,
    TwilioApiKey,
    DigitalOceanToken,
    ShopifyToken,
    PrivateKey,
    Jwt,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::AwsAccessKeyId => "aws_access_key_id",
            SecretKind::GithubToken => "github_token",
            SecretKind::GitlabToken => "gitlab_token",
            SecretKind::SlackToken => "slack_token",
            SecretKind::SlackWebhook => "slack_webhook",
            SecretKind::OpenAiKey => "openai_key",
            SecretKind::AnthropicKey => "anthropic_key",
            SecretKind::StripeKey => "stripe_key",
            SecretKind::VaultToken => "vault_token",
            SecretKind::GoogleApiKey => "google_api_key",
            SecretKind::NpmToken => "npm_token",
            SecretKind::PypiToken => "pypi_token",
            SecretKind::HuggingFaceToken => "huggingface_token",
            SecretKind::SendgridKey => "sendgrid_key",
            SecretKind::TwilioApiKey => "twilio_api_key",
            SecretKind::DigitalOceanToken => "digitalocean_token",
            SecretKind::ShopifyToken => "shopify_token",
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

/// The prefixes the formats start with (case-sensitive), and the format each starts.
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
    // GitLab's token prefixes (docs: "Token prefixes"), and the legacy runner
    // registration token's.
    ("glpat-", SecretKind::GitlabToken),
    ("gldt-", SecretKind::GitlabToken),
    ("glrt-", SecretKind::GitlabToken),
    ("glrtr-", SecretKind::GitlabToken),
    ("glcbt-", SecretKind::GitlabToken),
    ("glptt-", SecretKind::GitlabToken),
    ("glft-", SecretKind::GitlabToken),
    ("glimt-", SecretKind::GitlabToken),
    ("glagent-", SecretKind::GitlabToken),
    ("gloas-", SecretKind::GitlabToken),
    ("glsoat-", SecretKind::GitlabToken),
    ("glffct-", SecretKind::GitlabToken),
    ("GR1348941", SecretKind::GitlabToken),
    ("xoxb-", SecretKind::SlackToken),
    ("xoxp-", SecretKind::SlackToken),
    ("xoxa-", SecretKind::SlackToken),
    ("xoxr-", SecretKind::SlackToken),
    ("xoxs-", SecretKind::SlackToken),
    ("xoxe-", SecretKind::SlackToken),
    ("xapp-", SecretKind::SlackToken),
    ("hooks.slack.com/services/", SecretKind::SlackWebhook),
    ("hooks.slack.com/workflows/", SecretKind::SlackWebhook),
    ("hooks.slack.com/triggers/", SecretKind::SlackWebhook),
    // OpenAI (`sk-proj-`, `sk-svcacct-`, `sk-admin-`, legacy `sk-`).
    ("sk-", SecretKind::OpenAiKey),
    ("sk-ant-", SecretKind::AnthropicKey),
    ("sk_live_", SecretKind::StripeKey),
    ("rk_live_", SecretKind::StripeKey),
    ("sk_test_", SecretKind::StripeKey),
    ("rk_test_", SecretKind::StripeKey),
    ("whsec_", SecretKind::StripeKey),
    ("hvs.", SecretKind::VaultToken),
    ("hvb.", SecretKind::VaultToken),
    ("hvr.", SecretKind::VaultToken),
    ("AIza", SecretKind::GoogleApiKey),
    ("npm_", SecretKind::NpmToken),
    // A PyPI API token is a macaroon whose location is pypi.org (or test.pypi.org).
    ("pypi-AgEIcHlwaS5vcmc", SecretKind::PypiToken),
    ("pypi-AgENdGVzdC5weXBpLm9yZw", SecretKind::PypiToken),
    ("hf_", SecretKind::HuggingFaceToken),
    ("SG.", SecretKind::SendgridKey),
    ("SK", SecretKind::TwilioApiKey),
    ("dop_v1_", SecretKind::DigitalOceanToken),
    ("doo_v1_", SecretKind::DigitalOceanToken),
    ("dor_v1_", SecretKind::DigitalOceanToken),
    ("shpat_", SecretKind::ShopifyToken),
    ("shpca_", SecretKind::ShopifyToken),
    ("shppa_", SecretKind::ShopifyToken),
    ("shpss_", SecretKind::ShopifyToken),
    ("-----BEGIN ", SecretKind::PrivateKey),
    ("eyJ", SecretKind::Jwt),
];

/// The automaton over [`PREFIXES`], and for each prefix the shorter prefixes it starts
/// with (tried when the longest one at a place is not followed by its format: `sk-ant-`
/// too short for an Anthropic key may still be an OpenAI `sk-` key).
struct Scanner {
    ac: AhoCorasick,
    shorter: Vec<Vec<usize>>,
}

fn scanner() -> Option<&'static Scanner> {
    static SCANNER: OnceLock<Option<Scanner>> = OnceLock::new();
    SCANNER
        .get_or_init(|| {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(PREFIXES.iter().map(|(p, _)| p))
                .ok()?;
            let shorter = PREFIXES
                .iter()
                .map(|(p, _)| {
                    PREFIXES
                        .iter()
                        .enumerate()
                        .filter(|(_, (q, _))| q.len() < p.len() && p.starts_with(q))
                        .map(|(i, _)| i)
                        .collect()
                })
                .collect();
            Some(Scanner { ac, shorter })
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
        SecretKind::OpenAiKey | SecretKind::AnthropicKey => {
            let n = run(hay, body, b64url);
            (n >= 20).then_some(body + n)?
        }
        SecretKind::GitlabToken => {
            let n = run(hay, body, |b| b64url(b) || b == b'.');
            (n >= 20).then_some(body + n)?
        }
        SecretKind::SlackWebhook => {
            let n = run(hay, body, |b| b64url(b) || b == b'/');
            (n >= 20).then_some(body + n)?
        }
        SecretKind::VaultToken => {
            let n = run(hay, body, b64url);
            (n >= 24).then_some(body + n)?
        }
        SecretKind::GoogleApiKey => {
            let n = run(hay, body, b64url);
            (n == 35).then_some(body + n)?
        }
        SecretKind::NpmToken => {
            let n = run(hay, body, |b| b.is_ascii_alphanumeric());
            (n == 36).then_some(body + n)?
        }
        SecretKind::PypiToken => {
            let n = run(hay, body, b64url);
            (n >= 50).then_some(body + n)?
        }
        SecretKind::HuggingFaceToken => {
            let n = run(hay, body, |b| b.is_ascii_alphanumeric());
            (n >= 30).then_some(body + n)?
        }
        SecretKind::SendgridKey => {
            // SG.<22 base64url>.<43 base64url>
            let a = run(hay, body, b64url);
            let dot = body + a;
            if a != 22 || hay.get(dot) != Some(&b'.') {
                return None;
            }
            let b = run(hay, dot + 1, b64url);
            (b == 43).then_some(dot + 1 + b)?
        }
        SecretKind::TwilioApiKey => {
            let n = run(hay, body, |b| b.is_ascii_hexdigit());
            (n == 32).then_some(body + n)?
        }
        SecretKind::DigitalOceanToken => {
            let n = run(hay, body, |b| b.is_ascii_hexdigit());
            (n == 64).then_some(body + n)?
        }
        SecretKind::ShopifyToken => {
            let n = run(hay, body, |b| b.is_ascii_hexdigit());
            (n == 32).then_some(body + n)?
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

/// The shortest text any format can be (a Slack token: `xoxb-` and 10 characters).
/// Shorter text (most header values, a tiny body) holds none, and is not searched.
const MIN_SECRET_LEN: usize = 15;

/// Calls `f` for each secret in `hay`, left to right; stops when `f` returns false.
fn scan(hay: &[u8], mut f: impl FnMut(Finding) -> bool) {
    if hay.len() < MIN_SECRET_LEN {
        return;
    }
    let Some(Scanner { ac, shorter }) = scanner() else {
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
        let i = m.pattern().as_usize();
        // A token glued to a preceding word is part of something else; a PEM block,
        // which starts with dashes, is a key wherever it starts (`x-----BEGIN …`).
        let pem = PREFIXES[i].1 == SecretKind::PrivateKey;
        let boundary = pem || start == 0 || !is_word(hay[start - 1]);
        let found = boundary
            .then(|| {
                std::iter::once(&i).chain(&shorter[i]).find_map(|&j| {
                    let (prefix, kind) = PREFIXES[j];
                    secret_end(hay, start, prefix.len(), kind).map(|end| (kind, end))
                })
            })
            .flatten();
        match found {
            Some((kind, end)) => {
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
///
/// Redaction can make a secret the scanner would find: a run of key characters that was
/// too long to be a key becomes one when the marker cuts it (found by fuzzing
/// `secret_scan`). So the output is scanned again until nothing is found; should that not
/// settle within a few rounds, the whole text is replaced.
pub fn redact(hay: &[u8]) -> Option<(Vec<u8>, Vec<SecretKind>)> {
    const ROUNDS: usize = 4;
    let mut found = find_all(hay);
    if found.is_empty() {
        return None;
    }
    let mut kinds = Vec::new();
    let mut text = hay.to_vec();
    for _ in 0..ROUNDS {
        text = replace_found(&text, &found);
        kinds.extend(found.iter().map(|f| f.kind));
        found = find_all(&text);
        if found.is_empty() {
            return Some((text, kinds));
        }
    }
    Some((REDACTED.as_bytes().to_vec(), kinds))
}

fn replace_found(hay: &[u8], found: &[Finding]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut last = 0;
    for f in found {
        out.extend_from_slice(&hay[last..f.start]);
        out.extend_from_slice(REDACTED.as_bytes());
        last = f.end;
    }
    out.extend_from_slice(&hay[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(s: &str) -> Option<SecretKind> {
        find_first(s.as_bytes()).map(|f| f.kind)
    }

    #[test]
    fn no_format_is_shorter_than_the_length_below_which_text_is_not_searched() {
        // The shortest of each format, as the checks in `secret_end` accept it.
        let shortest = [
            "AKIA0123456789ABCDEF",
            "xoxb-0123456789",
            "sk-0123456789abcdefghij",
            "whsec_0123456789abcdef",
            "hvs.0123456789abcdefghijklmn",
            "eyJ0123456789.eyJ0123456.",
            "-----BEGIN PRIVATE KEY-----",
        ];
        for s in shortest {
            assert!(find_first(s.as_bytes()).is_some(), "{s}");
            assert!(s.len() >= MIN_SECRET_LEN, "{s}");
        }
        assert_eq!(shortest.iter().map(|s| s.len()).min(), Some(MIN_SECRET_LEN));
        for s in PREFIXES.iter().map(|(p, _)| p) {
            // A prefix alone is never a secret.
            assert!(find_first(s.as_bytes()).is_none(), "{s}");
        }
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
            // Glued to a word before it (found by fuzzing secret_scan).
            (
                "key=x-----BEGIN PRIVATE KEY-----\nMC4C",
                SecretKind::PrivateKey,
            ),
            (
                "a eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl b",
                SecretKind::Jwt,
            ),
            (
                "PRIVATE-TOKEN: glpat-xYz12AbC34dEf56GhI78",
                SecretKind::GitlabToken,
            ),
            (
                "glpat-Abcdefghij0123456789klmnop.01.0w1r2s3t4",
                SecretKind::GitlabToken,
            ),
            ("gldt-AbCdEfGhIjKlMnOpQrSt", SecretKind::GitlabToken),
            ("glrt-t1_AbCdEfGhIjKlMnOpQrSt", SecretKind::GitlabToken),
            ("glcbt-64_AbCdEfGhIjKlMnOpQrSt", SecretKind::GitlabToken),
            (
                "token=GR1348941AbCdEfGhIjKlMnOpQrSt",
                SecretKind::GitlabToken,
            ),
            (
                "X-Vault-Token: hvs.CAESIJ4pYvbL8Jk2x0WqVh5qZ1nT3Gh",
                SecretKind::VaultToken,
            ),
            (
                "hvb.AAAAAQJgTqk6fmFh4nZ4PqWrS5tUvWxYz0123456789",
                SecretKind::VaultToken,
            ),
            (
                "key=AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
                SecretKind::GoogleApiKey,
            ),
            (
                "xoxp-1234567890-1234567890-abcdefabcdef",
                SecretKind::SlackToken,
            ),
            (
                "xapp-1-A0123456789-0123456789-abcdef",
                SecretKind::SlackToken,
            ),
            (
                "https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF2/AbCdEfGhIjKlMnOpQrStUvWx",
                SecretKind::SlackWebhook,
            ),
            ("rk_live_4eC39HqLyjWDarjtT1zdp7dc", SecretKind::StripeKey),
            ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", SecretKind::StripeKey),
            (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                SecretKind::StripeKey,
            ),
            (
                "//registry.npmjs.org/:_authToken=npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
                SecretKind::NpmToken,
            ),
            (
                "pypi-AgEIcHlwaS5vcmcCJDAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMAACKlsz",
                SecretKind::PypiToken,
            ),
            (
                "github_pat_11ABCDEFG0_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123",
                SecretKind::GithubToken,
            ),
            (
                "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
                SecretKind::OpenAiKey,
            ),
            (
                "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
                SecretKind::AnthropicKey,
            ),
            // Too short for an Anthropic key, long enough for an OpenAI `sk-` one.
            ("sk-ant-AbCdEfGhIjKlMnOp", SecretKind::OpenAiKey),
            (
                "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
                SecretKind::HuggingFaceToken,
            ),
            (
                "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",
                SecretKind::SendgridKey,
            ),
            (
                "SK0123456789abcdef0123456789abcdef",
                SecretKind::TwilioApiKey,
            ),
            (
                "dop_v1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                SecretKind::DigitalOceanToken,
            ),
            (
                "shpat_0123456789abcdef0123456789abcdef",
                SecretKind::ShopifyToken,
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
            "skip_this_step and skip-that",
            "npm_config_cache=/tmp/npm",
            "npm_package_name",
            "keyboard key=value monkey",
            "hf_hub_download(repo_id)",
            "hvs.short",
            "AIzaShort",
            "glpat-short",
            "gloassary glpatch glrt",
            "SKU-1234 SKIPPED",
            "SG.abc.def",
            "pypi-AgEIcHlwaS5vcmc short",
            "https://hooks.slack.com/services/",
            "risk-assessment whsec short",
            "dop_v1_notahexvalue",
            "shpat_xyz",
            "https://example.com/hooks.slack.comx",
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

    #[test]
    fn redaction_leaves_nothing_the_scanner_finds() {
        // A run of key characters too long for a Google API key, cut by the marker of the
        // private key after it, is one (found by fuzzing secret_scan).
        let text =
            b"x AIza4AI----------a-AIza4AI------------------BEGIN PRIVATE KEY-----\\nAn----- y";
        let (out, kinds) = redact(text).unwrap();
        assert!(
            find_first(&out).is_none(),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(
            kinds,
            vec![SecretKind::PrivateKey, SecretKind::GoogleApiKey]
        );
    }
}
