//! STS `AssumeRole`: short-lived session credentials for one agent and one action.
//!
//! The request is the Query protocol (a form `POST`), signed with keygate's base
//! credentials by [`super::sign`]; the answer's XML is read with `quick-xml`. A refusal,
//! an unreadable answer or a timeout is an error that names the role and STS's code, never
//! a credential.

use super::sign::{sign, Payload, SigningKey};
use crate::http_client::HttpClient;
use http::{header, HeaderMap, HeaderValue};
use serde::Deserialize;
use std::time::{Duration, SystemTime};

/// How long an AssumeRole call may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an STS answer keygate reads.
const MAX_ANSWER: usize = 64 * 1024;

/// What keygate asks STS for.
pub struct AssumeRole<'a> {
    pub role_arn: &'a str,
    pub session_name: &'a str,
    pub source_identity: Option<&'a str>,
    /// The session policy: the session can do at most what it allows.
    pub policy: Option<&'a str>,
    pub duration: Duration,
    pub tags: &'a [(&'a str, &'a str)],
    pub external_id: Option<&'a str>,
}

/// Session credentials STS issued.
pub struct Session {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expires: SystemTime,
    /// The assumed role's session ARN.
    pub arn: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("access_key_id", &self.access_key_id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    assume_role_result: AnswerResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AnswerResult {
    credentials: AnswerCredentials,
    assumed_role_user: Option<AnswerUser>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AnswerCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AnswerUser {
    arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorAnswer {
    error: ErrorDetail,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NestedErrorAnswer {
    errors: ErrorAnswer,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
}

/// What the AWS SDKs leave unencoded in a Query-protocol form: RFC 3986's unreserved
/// characters. Everything else is percent-encoded (a space as `%20`, never `+`), so STS and
/// servers that re-encode the form they parsed before checking the signature read the
/// same bytes.
pub(super) const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The form of an AssumeRole request.
fn form(req: &AssumeRole<'_>) -> String {
    let duration = req.duration.as_secs().to_string();
    let mut pairs: Vec<(String, &str)> = vec![
        ("Action".into(), "AssumeRole"),
        ("Version".into(), "2011-06-15"),
        ("RoleArn".into(), req.role_arn),
        ("RoleSessionName".into(), req.session_name),
        ("DurationSeconds".into(), &duration),
    ];
    if let Some(p) = req.policy {
        pairs.push(("Policy".into(), p));
    }
    if let Some(s) = req.source_identity {
        pairs.push(("SourceIdentity".into(), s));
    }
    if let Some(e) = req.external_id {
        pairs.push(("ExternalId".into(), e));
    }
    for (i, (k, v)) in req.tags.iter().enumerate() {
        let n = i + 1;
        pairs.push((format!("Tags.member.{n}.Key"), k));
        pairs.push((format!("Tags.member.{n}.Value"), v));
    }
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.extend(percent_encoding::utf8_percent_encode(&k, QUERY_VALUE));
        out.push('=');
        out.extend(percent_encoding::utf8_percent_encode(v, QUERY_VALUE));
    }
    out
}

/// Calls AssumeRole at `endpoint` (`https://sts.amazonaws.com`, a regional endpoint, or a
/// test server), signed with `base` for `region`.
pub async fn assume_role(
    client: &HttpClient,
    endpoint: &http::Uri,
    region: &str,
    base: &SigningKey<'_>,
    req: &AssumeRole<'_>,
    now: SystemTime,
) -> Result<Session, String> {
    let body = form(req);
    let uri = endpoint.to_string();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    if let Some(a) = endpoint.authority() {
        let host = match (endpoint.scheme_str(), a.port_u16()) {
            (Some("https"), Some(443)) | (Some("http"), Some(80)) => a.host().to_string(),
            _ => a.as_str().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&host) {
            headers.insert(header::HOST, v);
        }
    }
    sign(
        &http::Method::POST,
        &uri,
        &mut headers,
        Payload::Bytes(body.as_bytes()),
        base,
        region,
        "sts",
        now,
    )
    .map_err(|e| e.0)?;
    let mut request = http::Request::post(endpoint.clone())
        .body(crate::error::full_body(body))
        .map_err(|e| format!("cannot build the STS request: {e}"))?;
    *request.headers_mut() = headers;
    let who = format!("STS at {endpoint}");
    let answer = crate::http_client::send_small(client, request, MAX_ANSWER, TIMEOUT, &who).await?;
    read_answer(req.role_arn, answer.0, &answer.1, now)
}

fn read_answer(
    role: &str,
    status: http::StatusCode,
    body: &[u8],
    now: SystemTime,
) -> Result<Session, String> {
    let text = std::str::from_utf8(body).map_err(|_| "STS answered with non-UTF-8".to_string())?;
    if !status.is_success() {
        // STS writes `<ErrorResponse><Error>`; some servers nest it in `<Errors>`.
        let why = quick_xml::de::from_str::<ErrorAnswer>(text)
            .ok()
            .map(|e| (e.error.code, e.error.message))
            .or_else(|| {
                quick_xml::de::from_str::<NestedErrorAnswer>(text)
                    .ok()
                    .map(|e| (e.errors.error.code, e.errors.error.message))
            })
            .map(|(code, message)| {
                format!(
                    "{}: {}",
                    code.unwrap_or_default(),
                    message.unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "no error code".into());
        return Err(format!(
            "STS refused AssumeRole of {role} (HTTP {}): {why}",
            status.as_u16()
        ));
    }
    let answer: Answer = quick_xml::de::from_str(text)
        .map_err(|e| format!("STS's AssumeRole answer could not be read: {e}"))?;
    let c = answer.assume_role_result.credentials;
    let expires = humantime::parse_rfc3339_weak(c.expiration.trim())
        .map_err(|_| format!("STS's expiration {:?} is not a date", c.expiration))?;
    if expires <= now {
        return Err("STS issued credentials that have already expired".into());
    }
    Ok(Session {
        access_key_id: c.access_key_id,
        secret_access_key: c.secret_access_key,
        session_token: c.session_token,
        expires,
        arn: answer.assume_role_result.assumed_role_user.map(|u| u.arn),
    })
}

/// A name STS accepts for `RoleSessionName` and `SourceIdentity` (2 to 64 of
/// `[A-Za-z0-9_+=,.@-]`): other characters become `-`.
pub fn session_name(agent: &str) -> String {
    let mut s: String = agent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while s.len() < 2 {
        s.push('-');
    }
    s
}

/// A value STS accepts in a session tag (at most 256 of letters, digits, spaces and
/// `_.:/=+-@`): other characters become `-`.
pub fn tag_value(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_assume_role_answer() {
        // The shape of STS's documented AssumeRole response.
        let xml = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>agent-1</SourceIdentity>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/demo/agent-1</Arn>
      <AssumedRoleId>ARO123EXAMPLE123:agent-1</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>AQoDYXdzEPT//////////wEXAMPLEtc764</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2099-07-15T23:28:33.359Z</Expiration>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <PackedPolicySize>8</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#;
        let s = read_answer("r", http::StatusCode::OK, xml.as_bytes(), SystemTime::now()).unwrap();
        assert_eq!(s.access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(s.session_token, "AQoDYXdzEPT//////////wEXAMPLEtc764");
        assert_eq!(
            s.arn.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/demo/agent-1")
        );
        assert!(s.expires > SystemTime::now());
        // Debug never shows the secret.
        assert!(!format!("{s:?}").contains("wJalr"));
    }

    #[test]
    fn a_refusal_names_the_role_and_stss_code() {
        let xml = r#"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not authorized</Message></Error></ErrorResponse>"#;
        let e = read_answer(
            "arn:aws:iam::1:role/r",
            http::StatusCode::FORBIDDEN,
            xml.as_bytes(),
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(
            e.contains("arn:aws:iam::1:role/r") && e.contains("AccessDenied"),
            "{e}"
        );
        assert!(read_answer("r", http::StatusCode::OK, b"<x/>", SystemTime::now()).is_err());
    }

    #[test]
    fn the_form_names_policy_source_identity_and_tags() {
        let f = form(&AssumeRole {
            role_arn: "arn:aws:iam::1:role/r",
            session_name: "agent-1",
            source_identity: Some("agent-1"),
            policy: Some(r#"{"Version":"2012-10-17","Resource":"*"}"#),
            duration: Duration::from_secs(900),
            tags: &[("keygate:agent", "agent-1"), ("keygate:owner", "team a")],
            external_id: None,
        });
        let pairs: Vec<(String, String)> = form_urlencoded::parse(f.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Action"), Some("AssumeRole"));
        assert_eq!(get("DurationSeconds"), Some("900"));
        assert_eq!(
            get("Policy"),
            Some(r#"{"Version":"2012-10-17","Resource":"*"}"#)
        );
        assert_eq!(get("SourceIdentity"), Some("agent-1"));
        assert_eq!(get("Tags.member.2.Value"), Some("team a"));
        // Encoded as the SDKs encode: nothing but unreserved characters left raw.
        assert!(f.contains("Tags.member.2.Value=team%20a"), "{f}");
        assert!(!f.contains('+') && !f.contains('*'), "{f}");
    }

    #[test]
    fn names_are_made_acceptable_to_sts() {
        assert_eq!(session_name("spiffe://x/agent 1"), "spiffe---x-agent-1");
        assert_eq!(session_name("a"), "a-");
        assert_eq!(session_name(&"x".repeat(100)).len(), 64);
        assert_eq!(tag_value("team<a>"), "team-a-");
    }
}
