//! Verifies the SigV4 header signature an agent made with its keygate-issued AWS key pair.
//!
//! An agent runs unmodified boto3 or the AWS CLI with keygate as its endpoint. The
//! signature proves that the caller holds the secret keygate issued to the access key id
//! in the credential scope, and binds the method, the path and query as sent, the signed
//! headers and the payload hash. keygate then re-signs the request with its own short-lived
//! credentials; nothing the agent signed is forwarded as a credential.
//!
//! The signature is recomputed with `aws-sigv4`, AWS's own signer, rather than a canonical
//! request written here: the canonical form has many corner cases (query sorting and
//! re-encoding, header value trimming, S3's single encoding) that the SDK signer and AWS
//! agree on. What this module adds is the part a signer does not do: reading the
//! `Authorization` header, choosing exactly the headers the agent signed, the clock check,
//! and a constant-time comparison.
//!
//! Presigned URLs (`X-Amz-Signature` in the query) are not handled.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody,
    SignableRequest, SignatureLocation, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

/// The only algorithm keygate verifies (SigV4A's `AWS4-ECDSA-P256-SHA256` is not).
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header, borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigV4Header<'a> {
    /// The access key id the agent signed with: keygate looks up its secret by this.
    pub access_key_id: &'a str,
    /// The credential scope's date, `yyyymmdd`.
    pub date: &'a str,
    /// The credential scope's region, e.g. `us-east-1`.
    pub region: &'a str,
    /// The credential scope's signing name, e.g. `iam`, `s3`, `dynamodb`.
    pub service: &'a str,
    /// The signed header names: lowercase, sorted, without duplicates, `host` among them.
    pub signed_headers: Vec<&'a str>,
    /// The signature: 64 lowercase hex digits.
    pub signature: &'a str,
}

/// Why a request's SigV4 signature was refused. [`AwsAuthError::code`] is the AWS error
/// code to answer with, so an SDK shows the agent a familiar error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsAuthError {
    /// The `Authorization` header, or a header it depends on, is not what SigV4 requires.
    #[error("{0}")]
    Malformed(String),
    /// The recomputed signature differs: wrong secret, or the request was changed.
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")]
    SignatureDoesNotMatch,
    /// The credential scope's date is not the day of the request's `X-Amz-Date`.
    #[error("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{scope}' != '{request}'")]
    ScopeDateMismatch {
        /// The credential scope's date.
        scope: String,
        /// The day of `X-Amz-Date`.
        request: String,
    },
    /// The request's `X-Amz-Date` is further from keygate's clock than the allowed skew
    /// (in either direction): an old signature cannot be replayed for long.
    #[error("The difference between the request time and the current time is too large.")]
    RequestTimeTooSkewed,
    /// `aws-sigv4` did not sign what was asked of it; a bug, never the agent's fault.
    #[error("internal error verifying the signature: {0}")]
    Internal(String),
}

impl AwsAuthError {
    /// The AWS error code for the response body, as AWS itself answers these failures.
    ///
    /// A clock outside the skew answers `RequestTimeTooSkewed` (S3's code; other services
    /// say `RequestExpired` for a past date and `SignatureDoesNotMatch` for a future one):
    /// one code whose text tells the agent's operator to look at the clock either way.
    pub fn code(&self) -> &'static str {
        match self {
            AwsAuthError::Malformed(_) => "IncompleteSignature",
            AwsAuthError::SignatureDoesNotMatch | AwsAuthError::ScopeDateMismatch { .. } => {
                "SignatureDoesNotMatch"
            }
            AwsAuthError::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            AwsAuthError::Internal(_) => "InternalFailure",
        }
    }

    /// The HTTP status AWS answers with for [`AwsAuthError::code`].
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            AwsAuthError::Malformed(_) => http::StatusCode::BAD_REQUEST,
            AwsAuthError::SignatureDoesNotMatch
            | AwsAuthError::ScopeDateMismatch { .. }
            | AwsAuthError::RequestTimeTooSkewed => http::StatusCode::FORBIDDEN,
            AwsAuthError::Internal(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn malformed(msg: impl Into<String>) -> AwsAuthError {
    AwsAuthError::Malformed(msg.into())
}

/// Parses `Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/iam/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=<64 hex>`.
///
/// Whitespace around the value, after the algorithm and around the commas is tolerated, as
/// AWS tolerates it; the three components may come in any order. Everything else is strict,
/// because a lenient reading is a second canonical form an attacker could play with: each
/// component exactly once and nothing else, a five-part credential ending in
/// `aws4_request`, signed header names lowercase and sorted without duplicates with `host`
/// among them (a signature that does not cover `host` could be replayed at another
/// endpoint), and a signature of 64 lowercase hex digits.
pub fn parse_authorization(value: &str) -> Result<SigV4Header<'_>, AwsAuthError> {
    let value = value.trim_matches(is_space);
    let rest = value
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| malformed(format!("Authorization must start with {ALGORITHM}")))?;
    if !rest.starts_with(is_space) {
        return Err(malformed(format!(
            "Authorization must have a space after {ALGORITHM}"
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim_matches(is_space);
        let (key, val) = part.split_once('=').ok_or_else(|| {
            malformed(format!("Authorization component '{part}' is not key=value"))
        })?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(malformed(format!(
                    "Authorization has an unknown component '{key}'"
                )))
            }
        };
        if slot.replace(val).is_some() {
            return Err(malformed(format!("Authorization repeats {key}")));
        }
    }
    let credential = credential.ok_or_else(|| malformed("Authorization lacks Credential"))?;
    let signed_headers =
        signed_headers.ok_or_else(|| malformed("Authorization lacks SignedHeaders"))?;
    let signature = signature.ok_or_else(|| malformed("Authorization lacks Signature"))?;

    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = parts[..] else {
        return Err(malformed(
            "Credential must be <access key id>/<yyyymmdd>/<region>/<service>/aws4_request",
        ));
    };
    if terminator != "aws4_request" {
        return Err(malformed("Credential must end in aws4_request"));
    }
    if access_key_id.is_empty()
        || access_key_id.len() > 128
        || !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(malformed("Credential has an invalid access key id"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("Credential date must be yyyymmdd"));
    }
    for (what, v) in [("region", region), ("service", service)] {
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(malformed(format!("Credential has an invalid {what}")));
        }
    }

    let names: Vec<&str> = signed_headers.split(';').collect();
    for name in &names {
        if name.is_empty() || !name.bytes().all(is_lower_token_byte) {
            return Err(malformed(format!(
                "SignedHeaders has an invalid header name '{name}'"
            )));
        }
    }
    if names.windows(2).any(|w| w[0] >= w[1]) {
        return Err(malformed(
            "SignedHeaders must be sorted and without duplicates",
        ));
    }
    if !names.contains(&"host") {
        return Err(malformed("SignedHeaders must include host"));
    }

    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(malformed("Signature must be 64 lowercase hex digits"));
    }

    Ok(SigV4Header {
        access_key_id,
        date,
        region,
        service,
        signed_headers: names,
        signature,
    })
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A header name's bytes (RFC 9110 token), lowercase as SigV4's canonical form has them.
fn is_lower_token_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Verifies the signature of a request against the agent's `secret`.
///
/// - `method`, `uri`: as received. Only the URI's path and query take part, byte for byte
///   as the agent sent them (including a prefix such as `/tools/aws/` that the agent's
///   `endpoint_url` had); `host` comes from the `Host` header, or from the URI's authority
///   when there is none (HTTP/2).
/// - `headers`: the request's headers; exactly those named in `SignedHeaders` take part,
///   several values of one name joined with `,` as SigV4 does.
/// - `payload_hash`: the value of `x-amz-content-sha256` when the agent sent one, else the
///   hex SHA-256 of the body the caller read. A caller that takes the header's word for a
///   hex hash must forward the body to a service that checks it (S3 does). The literals
///   `UNSIGNED-PAYLOAD` and `STREAMING-*` are accepted for S3 only: elsewhere they would
///   leave the body outside the signature, and no other service's SDK sends them.
/// - `now`, `skew`: keygate's clock and the allowed difference from `X-Amz-Date`, either way.
///
/// `X-Amz-Date` must be signed: `aws-sigv4` always puts it in the canonical request (from
/// the signing time, which is set to the parsed header), so a request signed with the
/// `Date` header alone cannot be recomputed with it. Every AWS SDK and the CLI sign
/// `X-Amz-Date`; botocore switches to `Date` only when the caller set a `Date` header.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    h: &SigV4Header<'_>,
    secret: &str,
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    payload_hash: &str,
    now: SystemTime,
    skew: Duration,
) -> Result<(), AwsAuthError> {
    let is_s3 = h.service == "s3";

    // The clock first: it is the cheapest refusal, and tells a stale replay apart.
    if !h.signed_headers.contains(&"x-amz-date") {
        return Err(malformed(
            "keygate requires x-amz-date among SignedHeaders (a Date-only signature is not supported)",
        ));
    }
    let amz_date = single_header(headers, "x-amz-date")?;
    let time = parse_amz_date(amz_date)?;
    let day = amz_date.get(..8).unwrap_or_default();
    if day != h.date {
        return Err(AwsAuthError::ScopeDateMismatch {
            scope: h.date.to_owned(),
            request: day.to_owned(),
        });
    }
    let off = match now.duration_since(time) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if off > skew {
        return Err(AwsAuthError::RequestTimeTooSkewed);
    }

    check_payload_hash(payload_hash, is_s3)?;

    // Exactly the headers the agent signed, with their values as received.
    let mut signed: Vec<(&str, &str)> = Vec::with_capacity(h.signed_headers.len());
    for &name in &h.signed_headers {
        let mut found = false;
        for value in headers.get_all(name) {
            let value = value.to_str().map_err(|_| {
                malformed(format!("signed header {name} has a value that is not text"))
            })?;
            signed.push((name, value));
            found = true;
        }
        if !found {
            if name == "host" {
                let authority = uri
                    .authority()
                    .ok_or_else(|| malformed("the request has no Host header"))?;
                signed.push((name, authority.as_str()));
            } else {
                return Err(malformed(format!(
                    "signed header {name} is not in the request"
                )));
            }
        }
    }

    let target = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .ok_or_else(|| malformed("the request target has no path"))?;

    let mut settings = SigningSettings::default();
    // The agent chose what to sign; nothing it signed may be left out (the default
    // excludes user-agent and others that proxies change).
    settings.excluded_headers = None;
    // x-amz-content-sha256 takes part only when the agent signed it (then it is in
    // `signed` as received); the signer must not add it on its own.
    settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    settings.signature_location = SignatureLocation::Headers;
    // There is no session token in the identity below; a signed x-amz-security-token
    // header would be in `signed` like any other.
    settings.session_token_mode = SessionTokenMode::Include;
    // S3 signs the path as sent; every other service normalizes it and encodes it again.
    (
        settings.percent_encoding_mode,
        settings.uri_path_normalization_mode,
    ) = if is_s3 {
        (
            PercentEncodingMode::Single,
            UriPathNormalizationMode::Disabled,
        )
    } else {
        (
            PercentEncodingMode::Double,
            UriPathNormalizationMode::Enabled,
        )
    };

    // The key id takes no part in a signature (the scope does, and the secret): aws-sigv4
    // is given a stand-in, because it logs the identity it signs with (at trace level),
    // and an agent's key id appears in no log line.
    let identity: Identity =
        Credentials::new("KEYGATEAGENTKEY", secret, None, None, "keygate-agent").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(h.region)
        .name(h.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| AwsAuthError::Internal(e.to_string()))?
        .into();
    let request = SignableRequest::new(
        method.as_str(),
        Cow::Borrowed(target),
        signed.into_iter(),
        SignableBody::Precomputed(payload_hash.to_owned()),
    )
    .map_err(|e| malformed(format!("the request cannot be signed: {e}")))?;
    let (instructions, expected) = sign(request, &params)
        .map_err(|e| malformed(format!("the request cannot be signed: {e}")))?
        .into_parts();

    // The signer reports which headers it signed; if that is not the agent's list, it
    // added one of its own, and the comparison below would mean nothing.
    let ours = instructions
        .headers()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value)
        .ok_or_else(|| AwsAuthError::Internal("aws-sigv4 made no Authorization".into()))?;
    let ours = parse_authorization(ours).map_err(|e| AwsAuthError::Internal(e.to_string()))?;
    if ours.signed_headers != h.signed_headers {
        return Err(AwsAuthError::Internal(format!(
            "aws-sigv4 signed {:?}, the agent {:?}",
            ours.signed_headers, h.signed_headers
        )));
    }

    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), h.signature.as_bytes())
        .map_err(|_| AwsAuthError::SignatureDoesNotMatch)
}

/// The one value of a header the signature depends on; two would be ambiguous.
fn single_header<'h>(headers: &'h http::HeaderMap, name: &str) -> Result<&'h str, AwsAuthError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v
            .to_str()
            .map_err(|_| malformed(format!("{name} is not text"))),
        (None, _) => Err(malformed(format!("the request has no {name} header"))),
        (Some(_), Some(_)) => Err(malformed(format!("the request has several {name} headers"))),
    }
}

/// `yyyymmddThhmmssZ` (SigV4's basic ISO 8601 form) to a time. Only that exact form is
/// accepted, so that the signer, which formats the time back, signs the header's own text.
/// The calendar is checked by humantime's RFC 3339 parser.
fn parse_amz_date(v: &str) -> Result<SystemTime, AwsAuthError> {
    let b = v.as_bytes();
    let shape_ok = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !shape_ok {
        return Err(malformed("X-Amz-Date must be yyyymmddThhmmssZ"));
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &v[0..4],
        &v[4..6],
        &v[6..8],
        &v[9..11],
        &v[11..13],
        &v[13..15]
    );
    humantime::parse_rfc3339(&rfc3339).map_err(|_| malformed("X-Amz-Date is not a valid time"))
}

/// A payload hash is 64 lowercase hex digits, or (S3 only) one of S3's unsigned or
/// streaming literals. Anything else would put agent-chosen text into the canonical
/// request's last line.
fn check_payload_hash(v: &str, is_s3: bool) -> Result<(), AwsAuthError> {
    let hex = v.len() == 64
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex {
        return Ok(());
    }
    let literal = v == "UNSIGNED-PAYLOAD"
        || (v.starts_with("STREAMING-")
            && v.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-'));
    if literal && is_s3 {
        return Ok(());
    }
    if literal {
        return Err(malformed(format!(
            "x-amz-content-sha256 {v} is accepted for s3 only"
        )));
    }
    Err(malformed(
        "x-amz-content-sha256 must be a lowercase hex SHA-256 or an S3 payload literal",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

    // The reference signatures below were made once with botocore 1.44.8, the signer of
    // boto3 and the AWS CLI, independent of aws-sigv4: `botocore.auth.SigV4Auth` (and
    // `S3SigV4Auth` for s3) with `get_current_datetime` fixed at 2026-12-04T10:00:00Z,
    // credentials KGAGENTEXAMPLE000001 / SECRET, region us-east-1, on an `AWSRequest` for
    // the method, URL, headers and body shown; the Authorization header it produced is
    // pasted as is. `host` is what botocore signs for `https://keygate.test:8443/...`.
    const AKID: &str = "KGAGENTEXAMPLE000001";
    const SECRET: &str = "kgSecretExample/abc+DEF0123456789xyzEXAMPLE";
    const HOST: &str = "keygate.test:8443";
    const AMZ_DATE: &str = "20261204T100000Z";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    struct Case {
        name: &'static str,
        method: &'static str,
        target: &'static str,
        /// Headers besides host and x-amz-date, as botocore sent them.
        headers: &'static [(&'static str, &'static str)],
        payload_hash: &'static str,
        authorization: &'static str,
    }

    /// IAM, Query protocol: POST of a form body; payload hash = sha256 of the body.
    const IAM_POST: Case = Case {
        name: "iam_post",
        method: "POST",
        target: "/",
        headers: &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        // sha256("Action=ListUsers&Version=2010-05-08")
        payload_hash: "b6359072c78d70ebee1e81adcbab4f01bf2c23245fa365ef83fe8f1f955085e2",
        authorization: "AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=d85768920145812862acd47972fecab214a489d579a9712542333bf1a4afbd7d",
    };

    /// STS GET with a query string: botocore signs its params percent-encoded (`%3A`,
    /// `%20`) while the URL it sends has `+` for the space; the canonical forms agree.
    const STS_GET: Case = Case {
        name: "sts_get",
        method: "GET",
        target: "/?Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fdemo&RoleSessionName=a+b~c",
        headers: &[],
        payload_hash: EMPTY_SHA256,
        authorization: "AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=eda3ca040215f7ddbb189524d6ee4fc179aaf23ad4ebe2c91b6c5c85a56ddf84",
    };

    /// S3 PUT with payload signing off (`UNSIGNED-PAYLOAD`), and a header value with runs
    /// of spaces that SigV4 trims.
    const S3_PUT_UNSIGNED: Case = Case {
        name: "s3_put_unsigned",
        method: "PUT",
        target: "/my-bucket/photos/cat.jpg",
        headers: &[
            ("content-type", "image/jpeg"),
            ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
            ("x-amz-meta-note", "  hello   world  "),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ],
        payload_hash: "UNSIGNED-PAYLOAD",
        authorization: "AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/s3/aws4_request, SignedHeaders=content-md5;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-note, Signature=f4d9f3fb1e51ea812bbdb842627913ce228c432aa7d65a67597c3dfe4e5b3547",
    };

    /// S3 GET of key `my dir/a+b/ünï©ode.txt` (space, plus, unicode), URL-encoded once by
    /// botocore and signed without a second encoding.
    const S3_GET_ENCODED: Case = Case {
        name: "s3_get_encoded",
        method: "GET",
        target: "/my-bucket/my%20dir/a%2Bb/%C3%BCn%C3%AF%C2%A9ode.txt?versionId=3%2F4",
        headers: &[("x-amz-content-sha256", EMPTY_SHA256)],
        payload_hash: EMPTY_SHA256,
        authorization: "AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=f84224105c1e61f734feb6258492c3fde87b932f054561dd547d219c98d9a688",
    };

    /// STS POST to an endpoint_url with a path prefix, `https://keygate.test:8443/tools/aws`.
    const STS_POST_PREFIX: Case = Case {
        name: "sts_post_prefix",
        method: "POST",
        target: "/tools/aws/",
        headers: &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        // sha256("Action=GetCallerIdentity&Version=2011-06-15")
        payload_hash: "ab821ae955788b0e33ebd34c208442ccfc2d406e2edc5e7a39bd6458fbb4f843",
        authorization: "AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=20e54e64883a1cfd613ef33cc963d053373c3150476711d452b44bfd23cb3351",
    };

    /// A non-S3 REST path with escapes: signed with the path encoded a second time.
    const LAMBDA_DOUBLE: Case = Case {
        name: "lambda_double",
        method: "POST",
        target: "/tools/aws/2015-03-31/functions/my%20fn%3Av1/invocations",
        headers: &[("content-type", "application/json")],
        // sha256("{}")
        payload_hash: "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        authorization: "AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/lambda/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=9b28d2578ddaa8495d07daf718dce0a94dc7274580f164e20207b081a97bcdd0",
    };

    /// S3 PUT with a signed body, through the `/tools/aws` prefix.
    const S3_PUT_PREFIX: Case = Case {
        name: "s3_put_prefix",
        method: "PUT",
        target: "/tools/aws/my-bucket/notes/today.txt",
        headers: &[
            ("content-type", "text/plain"),
            (
                "x-amz-content-sha256",
                "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            ),
        ],
        // sha256("hello")
        payload_hash: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        authorization: "AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/s3/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature=cb7d0d5c9ad8718b6acaf1c85578b169420728bb779b4cd42d5889e4596308e3",
    };

    /// Headers that botocore and aws-sigv4 leave out by default (`user-agent`,
    /// `x-amzn-trace-id`) signed by the agent, and a header sent twice. Made with botocore's
    /// `SIGNED_HEADERS_BLACKLIST` emptied, as a client that signs every header would.
    const IAM_GET_ALL_HEADERS: Case = Case {
        name: "iam_get_all_headers",
        method: "GET",
        target: "/?Action=ListRoles&Version=2010-05-08",
        headers: &[
            ("user-agent", "agent/1.0  (test)"),
            ("x-amzn-trace-id", "Root=1-abc"),
            ("x-amz-meta-tag", "one"),
            ("x-amz-meta-tag", " two "),
        ],
        payload_hash: EMPTY_SHA256,
        authorization: "AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/iam/aws4_request, SignedHeaders=host;user-agent;x-amz-date;x-amz-meta-tag;x-amzn-trace-id, Signature=84eb3abdff171ff61306125db2e9ff10efa225ab2dc94ac9d7d2284e4f61e318",
    };

    const ALL: [&Case; 8] = [
        &IAM_GET_ALL_HEADERS,
        &IAM_POST,
        &STS_GET,
        &S3_PUT_UNSIGNED,
        &S3_GET_ENCODED,
        &STS_POST_PREFIX,
        &LAMBDA_DOUBLE,
        &S3_PUT_PREFIX,
    ];

    fn at(amz_date: &str) -> SystemTime {
        parse_amz_date(amz_date).unwrap()
    }

    fn headers_of(c: &Case) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static(HOST));
        h.insert("x-amz-date", HeaderValue::from_static(AMZ_DATE));
        for (k, v) in c.headers {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    /// Verifies `c` with changes: the Authorization, secret, target, headers, payload hash
    /// and clock as given.
    fn check(
        c: &Case,
        authorization: &str,
        secret: &str,
        target: &str,
        headers: &HeaderMap,
        payload_hash: &str,
        now: SystemTime,
    ) -> Result<(), AwsAuthError> {
        let h = parse_authorization(authorization)?;
        assert_eq!(h.access_key_id, AKID);
        verify(
            &h,
            secret,
            &Method::from_bytes(c.method.as_bytes()).unwrap(),
            &target.parse::<Uri>().unwrap(),
            headers,
            payload_hash,
            now,
            Duration::from_secs(300),
        )
    }

    fn check_case(c: &Case) -> Result<(), AwsAuthError> {
        check(
            c,
            c.authorization,
            SECRET,
            c.target,
            &headers_of(c),
            c.payload_hash,
            at("20261204T100200Z"),
        )
    }

    #[test]
    fn botocore_signatures_verify() {
        for c in ALL {
            assert_eq!(check_case(c), Ok(()), "{}", c.name);
        }
    }

    #[test]
    fn aws_test_suite_get_vanilla() {
        // From AWS's published SigV4 test suite (aws-sig-v4-test-suite/get-vanilla).
        let h = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        let ok = |secret: &str| {
            verify(
                &h,
                secret,
                &Method::GET,
                &Uri::from_static("/"),
                &headers,
                EMPTY_SHA256,
                at("20150830T123600Z"),
                Duration::from_secs(300),
            )
        };
        assert_eq!(ok("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), Ok(()));
        assert_eq!(
            ok("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEz"),
            Err(AwsAuthError::SignatureDoesNotMatch)
        );
    }

    #[test]
    fn host_from_the_uri_authority_when_no_host_header() {
        // HTTP/2 carries the host in :authority, which hyper puts in the URI.
        let c = &IAM_POST;
        let mut headers = headers_of(c);
        headers.remove("host");
        let target = format!("https://{HOST}/");
        let r = check(
            c,
            c.authorization,
            SECRET,
            &target,
            &headers,
            c.payload_hash,
            at(AMZ_DATE),
        );
        assert_eq!(r, Ok(()));
        let r = check(
            c,
            c.authorization,
            SECRET,
            "/",
            &headers,
            c.payload_hash,
            at(AMZ_DATE),
        );
        assert!(matches!(r, Err(AwsAuthError::Malformed(_))), "{r:?}");
    }

    #[test]
    fn query_order_does_not_matter_but_values_do() {
        let c = &STS_GET;
        let reordered = "/?RoleSessionName=a+b~c&Version=2011-06-15&Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fdemo";
        let run = |target: &str| {
            check(
                c,
                c.authorization,
                SECRET,
                target,
                &headers_of(c),
                c.payload_hash,
                at(AMZ_DATE),
            )
        };
        assert_eq!(run(reordered), Ok(()));
        let changed = c.target.replace("role%2Fdemo", "role%2Fadmin");
        assert_eq!(run(&changed), Err(AwsAuthError::SignatureDoesNotMatch));
    }

    #[test]
    fn wrong_secret() {
        for c in ALL {
            let r = check(
                c,
                c.authorization,
                "kgSecretExample/abc+DEF0123456789xyzEXAMPLF",
                c.target,
                &headers_of(c),
                c.payload_hash,
                at(AMZ_DATE),
            );
            assert_eq!(r, Err(AwsAuthError::SignatureDoesNotMatch), "{}", c.name);
        }
    }

    #[test]
    fn modified_request() {
        let run = |c: &Case, target: &str, headers: &HeaderMap, payload_hash: &str| {
            check(
                c,
                c.authorization,
                SECRET,
                target,
                headers,
                payload_hash,
                at(AMZ_DATE),
            )
        };
        // A signed header's value.
        let c = &IAM_POST;
        let mut h = headers_of(c);
        h.insert("content-type", HeaderValue::from_static("application/json"));
        assert_eq!(
            run(c, c.target, &h, c.payload_hash),
            Err(AwsAuthError::SignatureDoesNotMatch)
        );
        // A second value appended to a signed header.
        let mut h = headers_of(c);
        h.append("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            run(c, c.target, &h, c.payload_hash),
            Err(AwsAuthError::SignatureDoesNotMatch)
        );
        // The host.
        let mut h = headers_of(c);
        h.insert("host", HeaderValue::from_static("evil.test:8443"));
        assert_eq!(
            run(c, c.target, &h, c.payload_hash),
            Err(AwsAuthError::SignatureDoesNotMatch)
        );
        // The body (its hash): ListUsers became DeleteUser.
        let other = "2c5b2f1c53aa6bbcbefd0fa9b0ff0e4d2a3ebb4ac1a16fd4e0d2a8ee34c1c31b";
        assert_eq!(
            run(c, c.target, &headers_of(c), other),
            Err(AwsAuthError::SignatureDoesNotMatch)
        );
        // The method.
        let r = verify(
            &parse_authorization(c.authorization).unwrap(),
            SECRET,
            &Method::PUT,
            &Uri::from_static("/"),
            &headers_of(c),
            c.payload_hash,
            at(AMZ_DATE),
            Duration::from_secs(300),
        );
        assert_eq!(r, Err(AwsAuthError::SignatureDoesNotMatch));
        // The path: the prefix is part of what was signed.
        let c = &STS_POST_PREFIX;
        assert_eq!(
            run(c, "/", &headers_of(c), c.payload_hash),
            Err(AwsAuthError::SignatureDoesNotMatch)
        );
        // An S3 key.
        let c = &S3_GET_ENCODED;
        let t = c.target.replace("a%2Bb", "a+b");
        assert_eq!(
            run(c, &t, &headers_of(c), c.payload_hash),
            Err(AwsAuthError::SignatureDoesNotMatch)
        );
        // An unsigned header may change: it is not part of the signature.
        let c = &IAM_POST;
        let mut h = headers_of(c);
        h.insert("user-agent", HeaderValue::from_static("anything"));
        assert_eq!(run(c, c.target, &h, c.payload_hash), Ok(()));
    }

    #[test]
    fn repeated_header_values_in_order() {
        let c = &IAM_GET_ALL_HEADERS;
        let mut h = headers_of(c);
        h.remove("x-amz-meta-tag");
        h.append("x-amz-meta-tag", HeaderValue::from_static("two"));
        h.append("x-amz-meta-tag", HeaderValue::from_static("one"));
        let r = check(
            c,
            c.authorization,
            SECRET,
            c.target,
            &h,
            c.payload_hash,
            at(AMZ_DATE),
        );
        assert_eq!(r, Err(AwsAuthError::SignatureDoesNotMatch));
    }

    #[test]
    fn signed_header_missing_from_request() {
        let c = &S3_PUT_UNSIGNED;
        let mut h = headers_of(c);
        h.remove("x-amz-meta-note");
        let r = check(
            c,
            c.authorization,
            SECRET,
            c.target,
            &h,
            c.payload_hash,
            at(AMZ_DATE),
        );
        assert!(
            matches!(r, Err(AwsAuthError::Malformed(ref m)) if m.contains("x-amz-meta-note")),
            "{r:?}"
        );
    }

    #[test]
    fn clock_outside_skew() {
        let c = &IAM_POST;
        let run = |now: &str| {
            check(
                c,
                c.authorization,
                SECRET,
                c.target,
                &headers_of(c),
                c.payload_hash,
                at(now),
            )
        };
        assert_eq!(run("20261204T100500Z"), Ok(()));
        assert_eq!(run("20261204T095500Z"), Ok(()));
        assert_eq!(
            run("20261204T100501Z"),
            Err(AwsAuthError::RequestTimeTooSkewed)
        );
        assert_eq!(
            run("20261204T095459Z"),
            Err(AwsAuthError::RequestTimeTooSkewed)
        );
        assert_eq!(
            AwsAuthError::RequestTimeTooSkewed.code(),
            "RequestTimeTooSkewed"
        );
    }

    #[test]
    fn scope_date_must_be_the_request_day() {
        let c = &IAM_POST;
        let auth = c.authorization.replace("/20261204/", "/20261203/");
        let r = check(
            c,
            &auth,
            SECRET,
            c.target,
            &headers_of(c),
            c.payload_hash,
            at(AMZ_DATE),
        );
        assert!(
            matches!(r, Err(AwsAuthError::ScopeDateMismatch { .. })),
            "{r:?}"
        );
        assert_eq!(r.unwrap_err().code(), "SignatureDoesNotMatch");
    }

    #[test]
    fn x_amz_date_must_be_signed_and_well_formed() {
        let c = &IAM_POST;
        let run = |auth: &str, date: &'static str| {
            let mut h = headers_of(c);
            h.insert("x-amz-date", HeaderValue::from_static(date));
            h.insert(
                "date",
                HeaderValue::from_static("Fri, 04 Dec 2026 10:00:00 GMT"),
            );
            check(c, auth, SECRET, c.target, &h, c.payload_hash, at(AMZ_DATE))
        };
        let date_only = c.authorization.replace(
            "SignedHeaders=content-type;host;x-amz-date",
            "SignedHeaders=content-type;date;host",
        );
        // Signed with Date alone: aws-sigv4 would sign x-amz-date regardless.
        let r = run(&date_only, AMZ_DATE);
        assert!(
            matches!(r, Err(AwsAuthError::Malformed(ref m)) if m.contains("x-amz-date")),
            "{r:?}"
        );
        for (auth, date) in [
            (c.authorization, "2026-12-04T10:00:00Z"),
            (c.authorization, "20261204T100000"),
            (c.authorization, "20261304T100000Z"),
            (c.authorization, "20261204t100000Z"),
        ] {
            let r = run(auth, date);
            assert!(
                matches!(r, Err(AwsAuthError::Malformed(_))),
                "{date}: {r:?}"
            );
        }
        let mut h = headers_of(c);
        h.append("x-amz-date", HeaderValue::from_static(AMZ_DATE));
        let r = check(
            c,
            c.authorization,
            SECRET,
            c.target,
            &h,
            c.payload_hash,
            at(AMZ_DATE),
        );
        assert!(matches!(r, Err(AwsAuthError::Malformed(_))), "{r:?}");
    }

    #[test]
    fn payload_literals_only_for_s3() {
        let c = &IAM_POST;
        for hash in [
            "UNSIGNED-PAYLOAD",
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "B6359072C78D70EBEE1E81ADCBAB4F01BF2C23245FA365EF83FE8F1F955085E2",
            "x\nhost:evil",
        ] {
            let r = check(
                c,
                c.authorization,
                SECRET,
                c.target,
                &headers_of(c),
                hash,
                at(AMZ_DATE),
            );
            assert!(
                matches!(r, Err(AwsAuthError::Malformed(_))),
                "{hash}: {r:?}"
            );
        }
        // For S3 a literal is a payload hash like any other: signed, so it must match.
        let c = &S3_PUT_UNSIGNED;
        let r = check(
            c,
            c.authorization,
            SECRET,
            c.target,
            &headers_of(c),
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            at(AMZ_DATE),
        );
        assert_eq!(r, Err(AwsAuthError::SignatureDoesNotMatch));
    }

    #[test]
    fn parse_tolerates_whitespace_and_order() {
        let expect = SigV4Header {
            access_key_id: AKID,
            date: "20261204",
            region: "us-east-1",
            service: "iam",
            signed_headers: vec!["content-type", "host", "x-amz-date"],
            signature: "d85768920145812862acd47972fecab214a489d579a9712542333bf1a4afbd7d",
        };
        for v in [
            IAM_POST.authorization,
            "  AWS4-HMAC-SHA256   Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/iam/aws4_request ,SignedHeaders=content-type;host;x-amz-date,\tSignature=d85768920145812862acd47972fecab214a489d579a9712542333bf1a4afbd7d ",
            "AWS4-HMAC-SHA256 Signature=d85768920145812862acd47972fecab214a489d579a9712542333bf1a4afbd7d, SignedHeaders=content-type;host;x-amz-date, Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/iam/aws4_request",
        ] {
            assert_eq!(parse_authorization(v), Ok(expect.clone()), "{v}");
        }
    }

    #[test]
    fn parse_rejects_malformed() {
        const CRED: &str = "Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/iam/aws4_request";
        const SH: &str = "SignedHeaders=host;x-amz-date";
        const SIG: &str =
            "Signature=d85768920145812862acd47972fecab214a489d579a9712542333bf1a4afbd7d";
        let cases: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("other algorithm", format!("AWS4-ECDSA-P256-SHA256 {CRED}, {SH}, {SIG}")),
            ("sigv2", "AWS KGAGENTEXAMPLE000001:c2lnbmF0dXJl".into()),
            ("no space after algorithm", format!("AWS4-HMAC-SHA256{CRED}, {SH}, {SIG}")),
            ("lowercase algorithm", format!("aws4-hmac-sha256 {CRED}, {SH}, {SIG}")),
            ("missing signature", format!("AWS4-HMAC-SHA256 {CRED}, {SH}")),
            ("missing signed headers", format!("AWS4-HMAC-SHA256 {CRED}, {SIG}")),
            ("missing credential", format!("AWS4-HMAC-SHA256 {SH}, {SIG}")),
            ("repeated component", format!("AWS4-HMAC-SHA256 {CRED}, {SH}, {SIG}, {SIG}")),
            ("unknown component", format!("AWS4-HMAC-SHA256 {CRED}, {SH}, {SIG}, Foo=bar")),
            ("trailing comma", format!("AWS4-HMAC-SHA256 {CRED}, {SH}, {SIG},")),
            ("space instead of comma", format!("AWS4-HMAC-SHA256 {CRED} {SH}, {SIG}")),
            ("not aws4_request", format!("AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/iam/aws4_requesx, {SH}, {SIG}")),
            ("four-part credential", format!("AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/20261204/us-east-1/aws4_request, {SH}, {SIG}")),
            ("six-part credential", format!("AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/x/20261204/us-east-1/iam/aws4_request, {SH}, {SIG}")),
            ("empty access key", format!("AWS4-HMAC-SHA256 Credential=/20261204/us-east-1/iam/aws4_request, {SH}, {SIG}")),
            ("short date", format!("AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/2026124/us-east-1/iam/aws4_request, {SH}, {SIG}")),
            ("empty region", format!("AWS4-HMAC-SHA256 Credential=KGAGENTEXAMPLE000001/20261204//iam/aws4_request, {SH}, {SIG}")),
            ("host not signed", format!("AWS4-HMAC-SHA256 {CRED}, SignedHeaders=x-amz-date, {SIG}")),
            ("unsorted headers", format!("AWS4-HMAC-SHA256 {CRED}, SignedHeaders=x-amz-date;host, {SIG}")),
            ("duplicate header", format!("AWS4-HMAC-SHA256 {CRED}, SignedHeaders=host;host;x-amz-date, {SIG}")),
            ("uppercase header", format!("AWS4-HMAC-SHA256 {CRED}, SignedHeaders=Host;x-amz-date, {SIG}")),
            ("empty header name", format!("AWS4-HMAC-SHA256 {CRED}, SignedHeaders=host;;x-amz-date, {SIG}")),
            ("uppercase signature", format!("AWS4-HMAC-SHA256 {CRED}, {SH}, Signature=D85768920145812862ACD47972FECAB214A489D579A9712542333BF1A4AFBD7D")),
            ("short signature", format!("AWS4-HMAC-SHA256 {CRED}, {SH}, Signature=d857")),
            ("long signature", format!("AWS4-HMAC-SHA256 {CRED}, {SH}, {SIG}00")),
        ];
        for (name, v) in cases {
            let r = parse_authorization(&v);
            assert!(
                matches!(r, Err(AwsAuthError::Malformed(_))),
                "{name}: {r:?}"
            );
            assert_eq!(r.unwrap_err().code(), "IncompleteSignature");
        }
    }
}
