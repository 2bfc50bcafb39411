//! Signing a request to AWS with credentials keygate holds (SigV4, by AWS's own
//! `aws-sigv4` crate).
//!
//! Signed: `host`, `content-type`, `content-md5`, `content-encoding` and every `x-amz-*`
//! header present (S3 requires every `x-amz-*` header to be signed), plus the
//! `x-amz-date` and `x-amz-security-token` set here. Headers a proxy may change on the way
//! (`user-agent`, forwarding headers keygate adds later) are left out, as AWS's SDKs do.
//!
//! The payload is what the agent's SDK declared in `x-amz-content-sha256` (a SHA-256,
//! `UNSIGNED-PAYLOAD`, or the unsigned streaming form with checksum trailers): the body
//! passes through unread and S3 checks it against that. Without the header the body must
//! have been read, and its hash is signed. Signed streaming (`STREAMING-AWS4-HMAC-SHA256-
//! PAYLOAD`, each chunk signed with the previous signature) cannot survive a change of
//! credentials without re-signing every chunk; keygate refuses it with the SDK setting
//! that avoids it ([`Payload::from_header`]).

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign as sigv4_sign, PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody,
    SignableRequest, SignatureLocation, SigningSettings, UriPathNormalizationMode,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::SystemTime;

/// The header in which an SDK declares the payload's hash.
pub const CONTENT_SHA256: &str = "x-amz-content-sha256";

/// Credentials keygate signs with: a session's (with its token) or a long-lived key's.
pub struct SigningKey<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

/// What the signature says of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    /// The value the agent's SDK declared in `x-amz-content-sha256`, kept as it is.
    Declared(String),
    /// The body, read whole: its SHA-256 is signed.
    Bytes(&'a [u8]),
}

/// Why a request cannot be signed: a sentence for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsignable(pub String);

impl Payload<'_> {
    /// The payload as the agent's `x-amz-content-sha256` declares it, if it does.
    pub fn from_header(headers: &HeaderMap) -> Result<Option<Payload<'static>>, Unsignable> {
        let Some(v) = headers.get(CONTENT_SHA256) else {
            return Ok(None);
        };
        let v = v.to_str().map_err(|_| {
            Unsignable("the x-amz-content-sha256 header is not a valid value".into())
        })?;
        let hex = v.len() == 64
            && v.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if hex || v == "UNSIGNED-PAYLOAD" || v == "STREAMING-UNSIGNED-PAYLOAD-TRAILER" {
            return Ok(Some(Payload::Declared(v.to_string())));
        }
        if v.starts_with("STREAMING-") {
            return Err(Unsignable(format!(
                "keygate re-signs every request with the tool's credentials, and cannot re-sign a body whose chunks are signed ({v}); have the SDK send an unsigned payload (over HTTPS the AWS SDKs do by default; for the AWS SDK for Java set chunkedEncodingEnabled(false), for boto3 leave s3.payload_signing_enabled unset)"
            )));
        }
        Err(Unsignable(format!(
            "x-amz-content-sha256 must be a SHA-256 in hex, UNSIGNED-PAYLOAD or STREAMING-UNSIGNED-PAYLOAD-TRAILER, not {v:?}"
        )))
    }
}

/// Whether a header takes part in keygate's signature.
fn signed(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-amz-")
        || matches!(
            n,
            "host" | "content-type" | "content-md5" | "content-encoding"
        )
}

/// Signs a request for `service` in `region`: `uri` is the absolute URI it is sent to (as
/// it will be sent: its path and query exactly), `headers` its headers, which get
/// `x-amz-date`, `x-amz-security-token` (for a session) and `authorization`.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &http::Method,
    uri: &str,
    headers: &mut HeaderMap,
    payload: Payload<'_>,
    key: &SigningKey<'_>,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), Unsignable> {
    // Whatever the agent's SDK set for its own signature goes; keygate sets its own.
    headers.remove(http::header::AUTHORIZATION);
    headers.remove("x-amz-date");
    headers.remove("x-amz-security-token");
    let identity = Credentials::new(
        key.access_key_id,
        key.secret_access_key,
        key.session_token.map(str::to_string),
        None,
        "keygate",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::Headers;
    settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    settings.session_token_mode = SessionTokenMode::Include;
    if service == "s3" {
        // S3 signs the path as sent, encoded once, never normalized.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| Unsignable(format!("cannot sign for AWS: {e}")))?
        .into();
    let body = match &payload {
        Payload::Declared(v) => SignableBody::Precomputed(v.clone()),
        Payload::Bytes(b) => SignableBody::Bytes(b),
    };
    let signed_headers: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(n, _)| signed(n))
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let request = SignableRequest::new(method.as_str(), uri, signed_headers.into_iter(), body)
        .map_err(|e| Unsignable(format!("cannot sign this request for AWS: {e}")))?;
    let (instructions, _signature) = sigv4_sign(request, &params)
        .map_err(|e| Unsignable(format!("cannot sign this request for AWS: {e}")))?
        .into_parts();
    let (set, _) = instructions.into_parts();
    for h in set {
        let mut v = HeaderValue::from_str(h.value())
            .map_err(|_| Unsignable("the signature is not a valid header value".into()))?;
        v.set_sensitive(true);
        headers.insert(h.name(), v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    // AWS's published SigV4 test suite, "get-vanilla": the signature below is the suite's.
    #[test]
    fn signs_the_published_get_vanilla_vector() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        let key = SigningKey {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: None,
        };
        // 20150830T123600Z
        let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        sign(
            &http::Method::GET,
            "https://example.amazonaws.com/",
            &mut h,
            Payload::Bytes(b""),
            &key,
            "us-east-1",
            "service",
            t,
        )
        .unwrap();
        assert_eq!(
            h.get("authorization").unwrap(),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(h.get("x-amz-date").unwrap(), "20150830T123600Z");
    }

    #[test]
    fn replaces_the_agents_signature_and_signs_the_session_token() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=KGAKAGENT/x"),
        );
        h.insert("x-amz-date", HeaderValue::from_static("20000101T000000Z"));
        h.insert(
            "x-amz-security-token",
            HeaderValue::from_static("agent-token"),
        );
        h.insert(CONTENT_SHA256, HeaderValue::from_static("UNSIGNED-PAYLOAD"));
        h.insert("x-amz-meta-a", HeaderValue::from_static("1"));
        h.insert("user-agent", HeaderValue::from_static("boto3"));
        let key = SigningKey {
            access_key_id: "ASIASESSION",
            secret_access_key: "s",
            session_token: Some("session-token"),
        };
        let payload = Payload::from_header(&h).unwrap().unwrap();
        sign(
            &http::Method::PUT,
            "http://127.0.0.1:9000/b/k",
            &mut h,
            payload,
            &key,
            "us-east-1",
            "s3",
            SystemTime::now(),
        )
        .unwrap();
        let auth = h.get("authorization").unwrap().to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=ASIASESSION/"),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-meta-a;x-amz-security-token,"),
            "{auth}"
        );
        assert_eq!(h.get("x-amz-security-token").unwrap(), "session-token");
        assert_ne!(h.get("x-amz-date").unwrap(), "20000101T000000Z");
        assert_eq!(h.get(CONTENT_SHA256).unwrap(), "UNSIGNED-PAYLOAD");
    }

    #[test]
    fn signed_chunks_are_refused_with_the_setting_to_change() {
        for v in [
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
        ] {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_SHA256, HeaderValue::from_static(v));
            let e = Payload::from_header(&h).unwrap_err();
            assert!(e.0.contains("chunkedEncodingEnabled(false)"), "{}", e.0);
        }
        let mut h = HeaderMap::new();
        h.insert(CONTENT_SHA256, HeaderValue::from_static("not-a-hash"));
        assert!(Payload::from_header(&h).is_err());
        h.insert(
            CONTENT_SHA256,
            HeaderValue::from_static("STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        );
        assert!(Payload::from_header(&h).unwrap().is_some());
        assert_eq!(Payload::from_header(&HeaderMap::new()).unwrap(), None);
    }
}
