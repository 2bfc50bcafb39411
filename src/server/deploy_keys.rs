//! GitHub deploy keys, for a reconcile of a `github_app` tool's inventory and for their
//! retirement: `GET /repos/{owner}/{repo}/keys` (every page, following `Link: rel="next"`)
//! and `DELETE /repos/{owner}/{repo}/keys/{key_id}`.
//!
//! The calls are keygate's own, with an installation token of the tool's App narrowed to
//! the one repository and to what the call needs by the catalog's table of GitHub
//! operations (`administration: read` to list, `administration: write` to delete; never a
//! tool's `operations` or `default_permissions`). They go to the tool's upstream (with its
//! base path, e.g. GitHub Enterprise Server's `/api/v3`).
//! A refusal, an unreadable answer or a timeout is an error naming the call and GitHub's
//! status and message, never the token.

use crate::credentials::Provider;
use serde::Deserialize;
use std::time::Duration;

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The most of one answer keygate reads (a page of 100 keys is about 60 KiB).
const MAX_ANSWER: usize = 4 << 20;
/// Keys asked for per page (GitHub's most).
const PER_PAGE: u32 = 100;
/// The most pages of one repository's listing keygate reads.
const MAX_PAGES: u32 = 1000;
/// The `X-GitHub-Api-Version` keygate speaks.
const API_VERSION: &str = "2022-11-28";

/// A deploy key as GitHub lists it (its public half is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployKey {
    pub id: u64,
    /// `owner/name`, as configured.
    pub repository: String,
    pub title: Option<String>,
    /// `created_at` as GitHub wrote it (ISO 8601).
    pub created: Option<String>,
    pub read_only: Option<bool>,
    /// Who added it (GitHub's `added_by`, when it says).
    pub added_by: Option<String>,
}

#[derive(Deserialize)]
struct KeyAnswer {
    id: u64,
    title: Option<String>,
    created_at: Option<String>,
    read_only: Option<bool>,
    added_by: Option<String>,
}

#[derive(Deserialize)]
struct GithubError {
    message: Option<String>,
}

/// What deleting a deploy key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// GitHub deleted it.
    Now,
    /// It was not there (404): deleted already.
    Already,
}

/// The repository (`owner/name`) of a deploy key's creating path, as the approval
/// recorded it: the path ends with `repos/{owner}/{repo}/keys` (the catalog's route,
/// after any prefix: the tool's, GitHub Enterprise Server's `/api/v3`).
pub fn repository_of_path(path: &str) -> Option<String> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let segs: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.split(';').next().unwrap_or(s))
        .collect();
    let [.., repos, owner, name, keys] = segs.as_slice() else {
        return None;
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    (repos.eq_ignore_ascii_case("repos")
        && keys.eq_ignore_ascii_case("keys")
        && ok(owner)
        && ok(name))
    .then(|| format!("{owner}/{name}"))
}

/// The repository a deploy key was created in, as the approval of its creating call
/// recorded it (`None`: pre-approved by a policy, or adopted).
pub async fn creating_repository(
    rt: &crate::gateway::Runtime,
    e: &crate::store::InventoryEntry,
) -> Result<Option<String>, String> {
    let Some(approval) = &e.approval_id else {
        return Ok(None);
    };
    match rt.shared.store.approval(approval).await {
        Ok(a) => Ok(a.and_then(|a| repository_of_path(&a.path))),
        Err(e) => Err(format!("the approval of the record could not be read: {e}")),
    }
}

/// One call with an installation token for it: (status, body).
async fn call(
    t: &crate::tools::ToolRuntime,
    method: http::Method,
    path_and_query: &str,
) -> Result<(http::StatusCode, http::HeaderMap, bytes::Bytes), String> {
    let Provider::GithubApp(provider) = &t.provider else {
        return Err("the tool's credential provider is not github_app".into());
    };
    let path = path_and_query.split('?').next().unwrap_or(path_and_query);
    let issued = provider.issue_own(&method, path).await.map_err(|e| {
        format!(
            "keygate could not obtain an installation token: {}",
            e.reason
        )
    })?;
    let up = &t.tool.upstream;
    let mut url = format!(
        "{}://{}{}{path_and_query}",
        up.scheme, up.authority, up.base_path
    );
    let mut req = http::Request::builder()
        .method(method.clone())
        .header(http::header::HOST, up.host_header.clone())
        .header(http::header::ACCEPT, "application/vnd.github+json")
        .header("x-github-api-version", API_VERSION)
        .header(http::header::USER_AGENT, "keygate");
    match &issued.placement {
        crate::credentials::Placement::Header(name, value) => {
            req = req.header(name.clone(), value.clone());
        }
        crate::credentials::Placement::Query { name, encoded } => {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("{name}={encoded}"));
        }
    }
    let req = req
        .uri(&url)
        .body(crate::error::full_body(Vec::new()))
        .map_err(|e| format!("cannot build the request {method} {path}: {e}"))?;
    let who = format!("GitHub ({method} {path})");
    let exchange = async {
        let resp = t
            .client
            .request(req)
            .await
            .map_err(|e| format!("{who} could not be reached: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_ANSWER))
            .await
            .map_err(|e| format!("{who}'s answer could not be read: {e}"))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{who} did not answer within {TIMEOUT:?}"))?
}

/// Whether a `Link` header names a next page.
fn has_next(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::LINK).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|link| {
                link.split(';')
                    .skip(1)
                    .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\""))
            })
        })
    })
}

/// GitHub's refusal: its status and (the start of) its message.
fn refused(what: &str, status: http::StatusCode, body: &[u8]) -> String {
    let message = serde_json::from_slice::<GithubError>(body)
        .ok()
        .and_then(|e| e.message)
        .unwrap_or_default();
    let message: String = message.chars().take(200).collect();
    format!(
        "GitHub refused {what} (HTTP {}): {message}",
        status.as_u16()
    )
}

/// Every deploy key of `repository` (`owner/name`).
pub async fn list(
    t: &crate::tools::ToolRuntime,
    repository: &str,
) -> Result<Vec<DeployKey>, String> {
    let mut out = Vec::new();
    for page in 1..=MAX_PAGES {
        let path = format!("/repos/{repository}/keys?per_page={PER_PAGE}&page={page}");
        let (status, headers, body) = call(t, http::Method::GET, &path).await?;
        if status != http::StatusCode::OK {
            return Err(refused(
                &format!("to list the deploy keys of {repository}"),
                status,
                &body,
            ));
        }
        let keys: Vec<KeyAnswer> = serde_json::from_slice(&body).map_err(|_| {
            format!("GitHub's list of the deploy keys of {repository} could not be read")
        })?;
        // GitHub names the next page in `Link` (it may answer fewer than asked per page).
        let last = keys.is_empty() || !has_next(&headers);
        out.extend(keys.into_iter().map(|k| DeployKey {
            id: k.id,
            repository: repository.to_string(),
            title: k.title,
            created: k.created_at,
            read_only: k.read_only,
            added_by: k.added_by,
        }));
        if last {
            return Ok(out);
        }
    }
    Err(format!(
        "the deploy keys of {repository} run to more than {MAX_PAGES} pages"
    ))
}

/// Deletes deploy key `id` of `repository`.
pub async fn delete(
    t: &crate::tools::ToolRuntime,
    repository: &str,
    id: u64,
) -> Result<Deleted, String> {
    let path = format!("/repos/{repository}/keys/{id}");
    let (status, _, body) = call(t, http::Method::DELETE, &path).await?;
    match status {
        s if s.is_success() => Ok(Deleted::Now),
        http::StatusCode::NOT_FOUND => Ok(Deleted::Already),
        s => Err(refused(
            &format!("to delete deploy key {id} of {repository}"),
            s,
            &body,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_is_read_from_the_creating_path() {
        assert_eq!(
            repository_of_path("/tools/github/repos/octo/hello/keys").as_deref(),
            Some("octo/hello")
        );
        assert_eq!(
            repository_of_path("/api/v3/Repos/Octo/hello.js/KEYS/").as_deref(),
            Some("Octo/hello.js")
        );
        assert_eq!(repository_of_path("/user/keys"), None);
        assert_eq!(repository_of_path("/repos/octo/../keys"), None);
        assert_eq!(repository_of_path("/repos/o%2e/r/keys"), None);
        assert_eq!(repository_of_path("/repos/octo/hello/keys/7"), None);
    }

    #[test]
    fn a_next_page_is_named_by_link() {
        let mut h = http::HeaderMap::new();
        assert!(!has_next(&h));
        h.insert(
            http::header::LINK,
            http::HeaderValue::from_static(
                "<https://api.github.com/repositories/1/keys?page=2>; rel=\"next\", <https://api.github.com/repositories/1/keys?page=3>; rel=\"last\"",
            ),
        );
        assert!(has_next(&h));
        h.insert(
            http::header::LINK,
            http::HeaderValue::from_static("<https://x/keys?page=1>; rel=\"prev\""),
        );
        assert!(!has_next(&h));
    }
}
