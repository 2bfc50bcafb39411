//! What in a request, beyond method, path, query and body, decides what the call does, and
//! what in it is a secret: per kind, the headers an approval must cover, the agent's own
//! credentials that strip removes, and the fields whose values never reach the approval
//! store.
//!
//! Every list errs towards more: a header wrongly listed as effect-changing costs at most a
//! second approval when an agent changes it between retries; a header wrongly left out is
//! an approval spent on a call nobody saw.

use super::body::Json;
use super::table::Kind;

/// Headers that change who a call acts as, where it acts or how its body is read, on a
/// tool of any kind. Harmless where a tool ignores them (an agent repeats the same headers
/// on its retry), so they are covered everywhere rather than only where known to matter:
/// a generic tool may well be a Kubernetes API server, a GitLab or a Vault.
///
/// - `Content-Type`, `Content-Encoding`: how the tool reads the body (a Kubernetes PATCH
///   is a merge, a strategic merge, a JSON patch or a server-side apply by its type);
/// - `Impersonate-User`, `-Group`, `-Uid`, `-Extra-*`: Kubernetes acts as that user;
/// - `Sudo`: GitLab acts as that user (for an administrator's token);
/// - `X-Vault-Namespace`: Vault acts in that namespace (Enterprise / HCP).
const EFFECT_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "impersonate-user",
    "impersonate-group",
    "impersonate-uid",
    "sudo",
    "x-vault-namespace",
];

/// Header name prefixes covered like [`EFFECT_HEADERS`].
const EFFECT_HEADER_PREFIXES: &[&str] = &["impersonate-extra-"];

/// Effect-changing headers of one kind, beyond [`EFFECT_HEADERS`].
fn kind_effect_headers(kind: Kind) -> &'static [&'static str] {
    match kind {
        // The JSON protocol names the action in `X-Amz-Target` (classify reads it too).
        Kind::Aws => &["x-amz-target"],
        // The project billed and whose quota and, for some APIs, whose resources are used.
        Kind::Gcp => &["x-goog-user-project"],
        // The REST API version, and preview media types in `Accept`, decide how the body
        // is read and which fields take effect.
        Kind::Github => &["x-github-api-version", "accept"],
        // Response wrapping hands the result to whoever unwraps it; a policy override
        // lifts soft-mandatory Sentinel policies.
        Kind::Vault => &["x-vault-wrap-ttl", "x-vault-policy-override"],
        // `Stripe-Account` / `Stripe-Context` act on a connected account; the API version
        // decides how the body is read.
        Kind::Stripe => &["stripe-account", "stripe-context", "stripe-version"],
        // GitLab (`Sudo`) and Kubernetes (`Impersonate-*`) are covered by the generic list;
        // Okta and Microsoft Graph have no header that changes the acting principal or
        // tenant (the token and host decide); a generic tool has only the generic list.
        Kind::Gitlab | Kind::Kubernetes | Kind::Okta | Kind::MsGraph | Kind::Generic => &[],
    }
}

/// Whether a request header (its lowercase name) changes what a call to a tool of this
/// kind does, so an approval must cover it and the approver must see it.
pub fn is_effect_header(kind: Kind, name: &str) -> bool {
    EFFECT_HEADERS.contains(&name)
        || EFFECT_HEADER_PREFIXES.iter().any(|p| name.starts_with(p))
        || kind_effect_headers(kind).contains(&name)
        || (kind == Kind::Aws && aws_effect_header(name))
}

/// AWS's `x-amz-*` headers change what a call does (S3's `x-amz-copy-source`, `x-amz-acl`,
/// `x-amz-grant-*`, `x-amz-tagging`, object lock, ...), but for those that only sign or
/// frame the request: its time, its payload hash and checksums (the body is bound
/// itself), and a session token strip removes.
fn aws_effect_header(name: &str) -> bool {
    name.starts_with("x-amz-")
        && !matches!(
            name,
            "x-amz-date"
                | "x-amz-content-sha256"
                | "x-amz-security-token"
                | "x-amz-decoded-content-length"
                | "x-amz-trailer"
                | "x-amz-sdk-checksum-algorithm"
        )
        && !name.starts_with("x-amz-checksum-")
}

/// Headers (lowercase) that carry the agent's own credential for a tool of this kind,
/// beyond `Authorization` and the others strip removes from every request.
pub fn credential_headers(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Gitlab => &["private-token", "job-token"],
        Kind::Vault => &["x-vault-token"],
        Kind::Gcp => &["x-goog-api-key", "x-goog-iam-authorization-token"],
        Kind::Aws => &["x-amz-security-token"],
        // These send their credentials in `Authorization` only.
        Kind::Github
        | Kind::Kubernetes
        | Kind::Okta
        | Kind::MsGraph
        | Kind::Stripe
        | Kind::Generic => &[],
    }
}

/// Query parameters (compared case-insensitively) that carry the agent's own credential
/// for a tool of this kind, beyond those strip removes from every request.
pub fn credential_query(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Gitlab => &["private_token", "job_token"],
        Kind::Gcp => &["key", "oauth_token"],
        // A presigned URL's signature: the token and signature are credentials, and the
        // rest of the set would make the tool check a signature keygate does not send.
        Kind::Aws => &[
            "x-amz-security-token",
            "x-amz-signature",
            "x-amz-credential",
            "x-amz-algorithm",
            "x-amz-date",
            "x-amz-expires",
            "x-amz-signedheaders",
        ],
        Kind::Vault
        | Kind::Github
        | Kind::Kubernetes
        | Kind::Okta
        | Kind::MsGraph
        | Kind::Stripe
        | Kind::Generic => &[],
    }
}

/// Field names (normalized: lowercase, without `_`, `-`, `.` and spaces) that hold a
/// secret in requests to any tool.
const SECRET_FIELDS: &[&str] = &[
    "secrettext",
    "secretstring",
    "secretbinary",
    "secretid",
    "secretaccesskey",
    "keymaterial",
    "privatekeydata",
    "pem",
    "encryptedvalue",
    "clientassertion",
];

/// Normalized name endings that hold a secret (`password`, `NewPassword`,
/// `TemporaryPassword`, `client_secret`, `access_token`, `private_key`, …).
const SECRET_SUFFIXES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "privatekey",
    "apikey",
];

/// Secret field names of one kind, beyond the generic ones.
fn kind_secret_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        // A Secret's `data` and `stringData`.
        Kind::Kubernetes => &["data", "stringdata"],
        // A KV write's `data`; a token created with a chosen `id` is that token.
        Kind::Vault => &["data", "id"],
        // A user's recovery answer (`recovery_question.answer`).
        Kind::Okta => &["answer"],
        // A key credential's `key` may be a PFX with its private key.
        Kind::MsGraph => &["key"],
        // A Secret Manager version's `payload`.
        Kind::Gcp => &["payload"],
        Kind::Aws | Kind::Github | Kind::Gitlab | Kind::Stripe | Kind::Generic => &[],
    }
}

fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a request field of this name holds a secret on a tool of this kind.
pub fn is_secret_field(kind: Kind, name: &str) -> bool {
    let n = normalized(name);
    !n.is_empty()
        && (SECRET_FIELDS.contains(&n.as_str())
            || SECRET_SUFFIXES.iter().any(|s| n.ends_with(s))
            || kind_secret_fields(kind).contains(&n.as_str()))
}

/// What replaces a secret field's value.
pub const REDACTED: &str = "[REDACTED]";

/// A request body with the values of its secret fields replaced by [`REDACTED`]; the rest
/// is the exact text sent.
#[derive(Debug, PartialEq, Eq)]
pub enum RedactedBody {
    /// Nothing secret was found: the body as it is.
    Unchanged,
    /// The body with every secret field's value replaced.
    Redacted(Vec<u8>),
    /// The body could not be read field by field and names a secret field: it must not be
    /// shown at all.
    Withheld,
}

/// Replaces the values of secret fields in a JSON or form body.
///
/// Safe because it never guesses: a form body (by its content type) is read pair by pair,
/// any other body that is one JSON value is read member by member (every duplicate, at any
/// depth), and a body read neither way that contains a secret field's name anywhere is
/// withheld whole. Booleans and nulls are kept (a flag such as `reset_password: true` is
/// what an approver needs to see, and cannot hide a secret).
pub fn redact_body(kind: Kind, content_type: Option<&str>, body: &[u8]) -> RedactedBody {
    if body.is_empty() {
        return RedactedBody::Unchanged;
    }
    let form = super::body::essence(content_type)
        .is_some_and(|ct| ct == "application/x-www-form-urlencoded");
    if form {
        return match redact_pairs(kind, body) {
            Some(out) => RedactedBody::Redacted(out),
            None => RedactedBody::Unchanged,
        };
    }
    let json_like = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[');
    if json_like && Json::parse(body).is_some() {
        let mut spans = Vec::new();
        let mut r = JsonSpans {
            s: body,
            i: 0,
            kind,
            spans: &mut spans,
        };
        if r.value(false).is_some() {
            if spans.is_empty() {
                return RedactedBody::Unchanged;
            }
            return RedactedBody::Redacted(replace(body, &spans, b"\"[REDACTED]\""));
        }
        return RedactedBody::Withheld;
    }
    // Neither form nor JSON (multipart, YAML, XML, text …): shown only when no word in it
    // is the name of a secret field.
    let names_a_secret = body
        .split(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
        .filter(|w| !w.is_empty())
        .any(|w| std::str::from_utf8(w).is_ok_and(|w| is_secret_field(kind, w)));
    if names_a_secret {
        RedactedBody::Withheld
    } else {
        RedactedBody::Unchanged
    }
}

/// A query string with the values of secret parameters replaced; `None` when none is.
pub fn redact_query(kind: Kind, query: &str) -> Option<String> {
    redact_pairs(kind, query.as_bytes()).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `name=value&…` with secret values replaced, the rest byte for byte; `None` when
/// nothing was. A name is secret when it, or any of its `[…]`/`.` parts (`user[password]`,
/// `LoginProfile.Password`), is.
fn redact_pairs(kind: Kind, text: &[u8]) -> Option<Vec<u8>> {
    let mut spans = Vec::new();
    let mut at = 0;
    for pair in text.split(|b| *b == b'&') {
        let (start, end) = (at, at + pair.len());
        at = end + 1;
        let Some(eq) = pair.iter().position(|b| *b == b'=') else {
            continue;
        };
        let name: String = form_urlencoded::parse(&pair[..eq])
            .map(|(k, _)| k.into_owned())
            .collect();
        let secret = is_secret_field(kind, &name)
            || name
                .split(['[', ']', '.'])
                .any(|part| is_secret_field(kind, part));
        if secret && start + eq + 1 < end {
            spans.push((start + eq + 1, end));
        }
    }
    (!spans.is_empty()).then(|| replace(text, &spans, REDACTED.as_bytes()))
}

fn replace(text: &[u8], spans: &[(usize, usize)], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut last = 0;
    for &(s, e) in spans {
        out.extend_from_slice(&text[last..s]);
        out.extend_from_slice(with);
        last = e;
    }
    out.extend_from_slice(&text[last..]);
    out
}

/// Finds the byte spans of secret members' values in text already known to be one JSON
/// value (serde_json checked it, and bounded its depth).
struct JsonSpans<'a, 'b> {
    s: &'a [u8],
    i: usize,
    kind: Kind,
    spans: &'b mut Vec<(usize, usize)>,
}

impl JsonSpans<'_, '_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips one string; returns its span, quotes included.
    fn string(&mut self) -> Option<(usize, usize)> {
        let start = self.i;
        if self.peek()? != b'"' {
            return None;
        }
        self.i += 1;
        loop {
            match self.peek()? {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Some((start, self.i));
                }
                _ => self.i += 1,
            }
        }
    }

    /// Walks one value; when `secret`, records its span unless it is a boolean or null.
    fn value(&mut self, secret: bool) -> Option<()> {
        self.ws();
        let start = self.i;
        let keep = match self.peek()? {
            b'{' => {
                self.object()?;
                false
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                } else {
                    loop {
                        self.value(false)?;
                        self.ws();
                        match self.peek()? {
                            b',' => self.i += 1,
                            b']' => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                false
            }
            b'"' => {
                self.string()?;
                false
            }
            b't' | b'f' | b'n' => {
                while self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
                    self.i += 1;
                }
                true
            }
            _ => {
                while self
                    .peek()
                    .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                {
                    self.i += 1;
                }
                false
            }
        };
        if secret && !keep {
            // A secret inside a secret is covered by the outer span.
            self.spans.retain(|&(s, _)| s < start);
            self.spans.push((start, self.i));
        }
        Some(())
    }

    fn object(&mut self) -> Option<()> {
        self.i += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            let (ks, ke) = self.string()?;
            let name: String = serde_json::from_slice(&self.s[ks..ke]).ok()?;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            self.value(is_secret_field(self.kind, &name))?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_aws_calls_effect_headers_are_its_x_amz_headers_but_signing_and_framing() {
        for h in [
            "x-amz-copy-source",
            "x-amz-acl",
            "x-amz-grant-full-control",
            "x-amz-tagging",
            "x-amz-target",
        ] {
            assert!(is_effect_header(Kind::Aws, h), "{h}");
            assert!(
                !is_effect_header(Kind::Github, h) || h == "x-amz-target",
                "{h}"
            );
        }
        for h in [
            "x-amz-date",
            "x-amz-content-sha256",
            "x-amz-security-token",
            "x-amz-checksum-crc32",
            "x-amz-trailer",
        ] {
            assert!(!is_effect_header(Kind::Aws, h), "{h}");
        }
    }

    use super::*;

    #[test]
    fn effect_headers_by_kind() {
        let cases: &[(Kind, &str, bool)] = &[
            (Kind::Generic, "sudo", true),
            (Kind::Generic, "impersonate-user", true),
            (Kind::Generic, "impersonate-extra-scopes", true),
            (Kind::Generic, "x-vault-namespace", true),
            (Kind::Generic, "content-type", true),
            (Kind::Generic, "accept", false),
            (Kind::Generic, "x-request-id", false),
            (Kind::Generic, "user-agent", false),
            (Kind::Github, "accept", true),
            (Kind::Github, "x-github-api-version", true),
            (Kind::Aws, "x-amz-target", true),
            (Kind::Gcp, "x-goog-user-project", true),
            (Kind::Vault, "x-vault-wrap-ttl", true),
            (Kind::Stripe, "stripe-account", true),
            (Kind::Okta, "stripe-account", false),
        ];
        for (kind, name, want) in cases {
            assert_eq!(is_effect_header(*kind, name), *want, "{kind} {name}");
        }
    }

    #[test]
    fn secret_field_names() {
        let cases: &[(Kind, &str, bool)] = &[
            (Kind::Aws, "Password", true),
            (Kind::Aws, "NewPassword", true),
            (Kind::Aws, "TemporaryPassword", true),
            (Kind::Aws, "PasswordResetRequired", false),
            (Kind::Gitlab, "password", true),
            (Kind::Gitlab, "reset_password", true),
            (Kind::Gitlab, "username", false),
            (Kind::Generic, "client_secret", true),
            (Kind::Generic, "private-key", true),
            (Kind::Generic, "SecretString", true),
            (Kind::Generic, "title", false),
            (Kind::Generic, "data", false),
            (Kind::Kubernetes, "data", true),
            (Kind::Kubernetes, "stringData", true),
            (Kind::Kubernetes, "metadata", false),
            (Kind::Okta, "answer", true),
            (Kind::Generic, "", false),
        ];
        for (kind, name, want) in cases {
            assert_eq!(is_secret_field(*kind, name), *want, "{kind} {name}");
        }
    }

    fn shown(kind: Kind, ct: Option<&str>, body: &str) -> String {
        match redact_body(kind, ct, body.as_bytes()) {
            RedactedBody::Unchanged => body.to_string(),
            RedactedBody::Redacted(b) => String::from_utf8(b).unwrap(),
            RedactedBody::Withheld => "(withheld)".to_string(),
        }
    }

    #[test]
    fn secret_values_are_redacted_and_the_rest_kept_as_sent() {
        let json = Some("application/json");
        let form = Some("application/x-www-form-urlencoded");
        let cases: &[(Kind, Option<&str>, &str, &str)] = &[
            // AWS CreateLoginProfile (Query protocol).
            (
                Kind::Aws,
                form,
                "Action=CreateLoginProfile&UserName=bob&Password=Hunter2%21x&PasswordResetRequired=true",
                "Action=CreateLoginProfile&UserName=bob&Password=[REDACTED]&PasswordResetRequired=true",
            ),
            // GitLab create_user.
            (
                Kind::Gitlab,
                json,
                r#"{"username":"bob","password":"Hunter2!x","reset_password":false}"#,
                r#"{"username":"bob","password":"[REDACTED]","reset_password":false}"#,
            ),
            (
                Kind::Gitlab,
                form,
                "username=bob&user%5Bpassword%5D=Hunter2",
                "username=bob&user%5Bpassword%5D=[REDACTED]",
            ),
            // Okta user creation: the whole password object.
            (
                Kind::Okta,
                json,
                r#"{"profile":{"login":"b@x"},"credentials":{"password":{"value":"Hunter2!x"},"recovery_question":{"question":"q","answer":"a1"}}}"#,
                r#"{"profile":{"login":"b@x"},"credentials":{"password":"[REDACTED]","recovery_question":{"question":"q","answer":"[REDACTED]"}}}"#,
            ),
            // Microsoft Graph user creation.
            (
                Kind::MsGraph,
                json,
                r#"{"displayName":"Bob","passwordProfile":{"forceChangePasswordNextSignIn":true,"password":"Hunter2!x"}}"#,
                r#"{"displayName":"Bob","passwordProfile":{"forceChangePasswordNextSignIn":true,"password":"[REDACTED]"}}"#,
            ),
            // A Kubernetes Secret, whitespace and key order as sent, duplicates too.
            (
                Kind::Kubernetes,
                json,
                "{ \"kind\": \"Secret\", \"data\": {\"k\": \"aHVudGVyMg==\"},\n \"stringData\": {\"p\": \"x\"}, \"data\": [1] }",
                "{ \"kind\": \"Secret\", \"data\": \"[REDACTED]\",\n \"stringData\": \"[REDACTED]\", \"data\": \"[REDACTED]\" }",
            ),
            // An escaped key is still the key.
            (
                Kind::Generic,
                None,
                r#"[{"pass\u0077ord": 12345678}]"#,
                r#"[{"pass\u0077ord": "[REDACTED]"}]"#,
            ),
            // Nothing secret: untouched.
            (
                Kind::Github,
                json,
                r#"{"title":"ci","key":"ssh-ed25519 AAAA","read_only":true}"#,
                r#"{"title":"ci","key":"ssh-ed25519 AAAA","read_only":true}"#,
            ),
            // Neither JSON nor form: withheld when it names a secret field, shown otherwise.
            (
                Kind::Kubernetes,
                Some("application/yaml"),
                "kind: Secret\nstringData:\n  p: hunter2\n",
                "(withheld)",
            ),
            (
                Kind::Gitlab,
                Some("multipart/form-data; boundary=x"),
                "--x\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nhunter2\r\n--x--",
                "(withheld)",
            ),
            (Kind::Generic, Some("text/plain"), "hello world", "hello world"),
            (Kind::Generic, json, "{\"password\": ", "(withheld)"),
        ];
        for (kind, ct, body, want) in cases {
            assert_eq!(&shown(*kind, *ct, body), want, "{kind} {body}");
        }
    }

    #[test]
    fn secret_query_parameters_are_redacted() {
        assert_eq!(
            redact_query(Kind::Gitlab, "username=bob&password=hunter2&x").as_deref(),
            Some("username=bob&password=[REDACTED]&x")
        );
        assert_eq!(redact_query(Kind::Gitlab, "page=2&per_page=3"), None);
    }
}
