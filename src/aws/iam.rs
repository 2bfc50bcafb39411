//! IAM's listings, for a reconcile of the inventory against the account: `ListUsers`,
//! `ListAccessKeys` (per user) and `ListUserTags` (per user), over the Query protocol (a
//! form `POST`, signed with [`super::sign`]), every page (`IsTruncated` / `Marker`), the
//! XML answers read with `quick-xml`. A refusal, an unreadable answer or a timeout is an
//! error naming the action and IAM's code, never a credential. The only writes are the
//! retirement's: `UpdateAccessKey` (to `Inactive`) and `DeleteAccessKey`.

use super::sign::{sign, Payload, SigningKey};
use crate::http_client::HttpClient;
use http::{header, HeaderMap, HeaderValue};
use serde::Deserialize;
use std::time::{Duration, SystemTime};

/// How long one IAM call may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// The most of one IAM answer keygate reads (a page of 1000 users is about 300 KiB).
const MAX_ANSWER: usize = 4 << 20;
/// The most pages of one listing keygate reads: 1000 pages of 1000.
const MAX_PAGES: usize = 1000;
/// IAM's API version.
const VERSION: &str = "2010-05-08";
/// IAM is global: its endpoint signs for us-east-1.
pub const REGION: &str = "us-east-1";

/// An IAM user as `ListUsers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub arn: String,
    /// `CreateDate` as IAM wrote it (ISO 8601).
    pub created: String,
}

/// An access key as `ListAccessKeys` shows it (never its secret: IAM does not list it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    pub user: String,
    /// `Active` or `Inactive`.
    pub status: String,
    pub created: String,
}

/// Where and how IAM is called: the endpoint, its `Host`, the client and the key that
/// signs (with [`REGION`]).
pub struct Iam<'a> {
    pub client: &'a HttpClient,
    /// The endpoint's URL, e.g. `https://iam.amazonaws.com/`.
    pub endpoint: &'a http::Uri,
    pub host: &'a HeaderValue,
    pub key: SigningKey<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUsersAnswer {
    list_users_result: ListUsersResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUsersResult {
    #[serde(default)]
    users: Members<UserMember>,
    #[serde(default)]
    is_truncated: bool,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UserMember {
    user_name: String,
    #[serde(default)]
    arn: String,
    #[serde(default)]
    create_date: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAccessKeysAnswer {
    list_access_keys_result: ListAccessKeysResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAccessKeysResult {
    #[serde(default)]
    access_key_metadata: Members<KeyMember>,
    #[serde(default)]
    is_truncated: bool,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMember {
    access_key_id: String,
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    create_date: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUserTagsAnswer {
    list_user_tags_result: ListUserTagsResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUserTagsResult {
    #[serde(default)]
    tags: Members<TagMember>,
    #[serde(default)]
    is_truncated: bool,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagMember {
    key: String,
    #[serde(default)]
    value: String,
}

/// A Query-protocol list: `<member>` elements.
#[derive(Deserialize)]
struct Members<T> {
    #[serde(default = "Vec::new")]
    member: Vec<T>,
}

impl<T> Default for Members<T> {
    fn default() -> Self {
        Members { member: Vec::new() }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorAnswer {
    error: ErrorDetail,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
}

/// The form of a Query-protocol call.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.extend(percent_encoding::utf8_percent_encode(
            k,
            super::sts::QUERY_VALUE,
        ));
        out.push('=');
        out.extend(percent_encoding::utf8_percent_encode(
            v,
            super::sts::QUERY_VALUE,
        ));
    }
    out
}

impl Iam<'_> {
    /// One call: the answer's text when IAM said yes, else an error naming the action.
    async fn call(&self, action: &str, params: &[(&str, &str)]) -> Result<String, String> {
        let mut pairs = vec![("Action", action), ("Version", VERSION)];
        pairs.extend_from_slice(params);
        let body = form(&pairs);
        let uri = self.endpoint.to_string();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        headers.insert(header::HOST, self.host.clone());
        sign(
            &http::Method::POST,
            &uri,
            &mut headers,
            Payload::Bytes(body.as_bytes()),
            &self.key,
            REGION,
            "iam",
            SystemTime::now(),
        )
        .map_err(|e| e.0)?;
        let mut request = http::Request::post(self.endpoint.clone())
            .body(crate::error::full_body(body))
            .map_err(|e| format!("cannot build the IAM request: {e}"))?;
        *request.headers_mut() = headers;
        let who = format!("IAM at {}", self.endpoint);
        let (status, bytes) =
            crate::http_client::send_small(self.client, request, MAX_ANSWER, TIMEOUT, &who).await?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("{who} answered {action} with non-UTF-8"))?;
        if !status.is_success() {
            let why = quick_xml::de::from_str::<ErrorAnswer>(&text)
                .ok()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.error.code.unwrap_or_default(),
                        e.error.message.unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "no error code".into());
            return Err(format!(
                "{who} refused {action} (HTTP {}): {why}",
                status.as_u16()
            ));
        }
        Ok(text)
    }

    /// Every page of a listing: `page` reads one answer into `out` and returns the marker
    /// of the next page, if any.
    async fn pages<T>(
        &self,
        action: &str,
        params: &[(&str, &str)],
        mut page: impl FnMut(&str, &mut Vec<T>) -> Result<Option<String>, String>,
    ) -> Result<Vec<T>, String> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut p = params.to_vec();
            if let Some(m) = &marker {
                p.push(("Marker", m));
            }
            let text = self.call(action, &p).await?;
            match page(&text, &mut out)? {
                Some(next) if !next.is_empty() => marker = Some(next),
                _ => return Ok(out),
            }
        }
        Err(format!(
            "IAM's {action} answered more than {MAX_PAGES} pages"
        ))
    }

    /// Every user of the account.
    pub async fn users(&self) -> Result<Vec<User>, String> {
        self.pages("ListUsers", &[], |text, out| {
            let a: ListUsersAnswer = quick_xml::de::from_str(text)
                .map_err(|e| format!("IAM's ListUsers answer could not be read: {e}"))?;
            let r = a.list_users_result;
            out.extend(r.users.member.into_iter().map(|u| User {
                name: u.user_name,
                arn: u.arn,
                created: u.create_date,
            }));
            next(r.is_truncated, r.marker, "ListUsers")
        })
        .await
    }

    /// Every access key of `user`.
    pub async fn access_keys(&self, user: &str) -> Result<Vec<AccessKey>, String> {
        self.pages("ListAccessKeys", &[("UserName", user)], |text, out| {
            let a: ListAccessKeysAnswer = quick_xml::de::from_str(text)
                .map_err(|e| format!("IAM's ListAccessKeys answer could not be read: {e}"))?;
            let r = a.list_access_keys_result;
            out.extend(r.access_key_metadata.member.into_iter().map(|k| AccessKey {
                id: k.access_key_id,
                user: if k.user_name.is_empty() {
                    user.to_string()
                } else {
                    k.user_name
                },
                status: k.status,
                created: k.create_date,
            }));
            next(r.is_truncated, r.marker, "ListAccessKeys")
        })
        .await
    }

    /// Sets the status of `user`'s access key `id` (`Active` or `Inactive`).
    pub async fn update_access_key(
        &self,
        user: &str,
        id: &str,
        status: &str,
    ) -> Result<(), String> {
        self.call(
            "UpdateAccessKey",
            &[("UserName", user), ("AccessKeyId", id), ("Status", status)],
        )
        .await
        .map(|_| ())
    }

    /// Deletes `user`'s access key `id`.
    pub async fn delete_access_key(&self, user: &str, id: &str) -> Result<(), String> {
        self.call(
            "DeleteAccessKey",
            &[("UserName", user), ("AccessKeyId", id)],
        )
        .await
        .map(|_| ())
    }

    /// The tags of `user`: (key, value).
    pub async fn user_tags(&self, user: &str) -> Result<Vec<(String, String)>, String> {
        self.pages("ListUserTags", &[("UserName", user)], |text, out| {
            let a: ListUserTagsAnswer = quick_xml::de::from_str(text)
                .map_err(|e| format!("IAM's ListUserTags answer could not be read: {e}"))?;
            let r = a.list_user_tags_result;
            out.extend(r.tags.member.into_iter().map(|t| (t.key, t.value)));
            next(r.is_truncated, r.marker, "ListUserTags")
        })
        .await
    }
}

/// The marker of the next page: none when the answer is complete; a truncated answer
/// without a marker cannot be continued, and is an error (a listing is never cut short).
fn next(truncated: bool, marker: Option<String>, action: &str) -> Result<Option<String>, String> {
    match (truncated, marker) {
        (false, _) => Ok(None),
        (true, Some(m)) if !m.trim().is_empty() => Ok(Some(m.trim().to_string())),
        (true, _) => Err(format!(
            "IAM's {action} answer is truncated and has no Marker"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn answers_are_read_with_their_markers() {
        let users = r#"<ListUsersResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <ListUsersResult>
    <Users>
      <member><UserId>A1</UserId><Path>/</Path><UserName>alice</UserName>
        <Arn>arn:aws:iam::123456789012:user/alice</Arn><CreateDate>2024-01-02T03:04:05Z</CreateDate></member>
      <member><UserName>bob</UserName><Arn>arn:aws:iam::123456789012:user/bob</Arn><CreateDate>2024-02-02T03:04:05Z</CreateDate></member>
    </Users>
    <IsTruncated>true</IsTruncated>
    <Marker>page-2</Marker>
  </ListUsersResult>
  <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>
</ListUsersResponse>"#;
        let a: ListUsersAnswer = quick_xml::de::from_str(users).unwrap();
        let r = a.list_users_result;
        let names: Vec<&str> = r
            .users
            .member
            .iter()
            .map(|u| u.user_name.as_str())
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(r.users.member[0].create_date, "2024-01-02T03:04:05Z");
        assert_eq!(
            next(r.is_truncated, r.marker, "ListUsers").unwrap(),
            Some("page-2".into())
        );

        let empty = "<ListUsersResponse><ListUsersResult><Users/><IsTruncated>false</IsTruncated></ListUsersResult></ListUsersResponse>";
        let a: ListUsersAnswer = quick_xml::de::from_str(empty).unwrap();
        assert!(a.list_users_result.users.member.is_empty());

        let keys = "<ListAccessKeysResponse><ListAccessKeysResult><AccessKeyMetadata><member><UserName>alice</UserName><AccessKeyId>AKIAEXAMPLE</AccessKeyId><Status>Inactive</Status><CreateDate>2024-01-02T03:04:05Z</CreateDate></member></AccessKeyMetadata><IsTruncated>false</IsTruncated></ListAccessKeysResult></ListAccessKeysResponse>";
        let a: ListAccessKeysAnswer = quick_xml::de::from_str(keys).unwrap();
        let k = &a.list_access_keys_result.access_key_metadata.member[0];
        assert_eq!(
            (k.access_key_id.as_str(), k.status.as_str()),
            ("AKIAEXAMPLE", "Inactive")
        );

        let tags = "<ListUserTagsResponse><ListUserTagsResult><Tags><member><Key>owner</Key><Value>a@example.com</Value></member></Tags><IsTruncated>false</IsTruncated></ListUserTagsResult></ListUserTagsResponse>";
        let a: ListUserTagsAnswer = quick_xml::de::from_str(tags).unwrap();
        assert_eq!(a.list_user_tags_result.tags.member[0].key, "owner");
    }

    #[test]
    fn a_truncated_answer_without_a_marker_is_an_error() {
        assert!(next(true, None, "ListUsers").is_err());
        assert!(next(true, Some(" ".into()), "ListUsers").is_err());
        assert_eq!(next(false, Some("x".into()), "ListUsers").unwrap(), None);
    }
}
