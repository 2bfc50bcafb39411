//! `github_app`: a GitHub App installation token for each call, narrowed to the one
//! repository the path names and to the permissions the operation needs.
//!
//! keygate holds the App's private key (a file only its owner can read) and mints the App
//! JWT itself (RS256, `iss` the App id, nine minutes: GitHub allows ten). For a call it:
//! 1. finds the permissions: the tool's `operations.<name>.permissions` for its own
//!    routes, else the catalog's table of GitHub REST operations
//!    ([`crate::catalog::github_permissions`]), else the tool's `default_permissions`;
//!    a call with none of these is refused, never given the App's full rights;
//! 2. finds the repository from the path (`/repos/{owner}/{repo}/…`, or
//!    `/repositories/{id}/…`); an account-level path (`/orgs/{org}/…`) names none, and its
//!    token is limited by permissions only;
//! 3. finds the installation: `installation_id`, or looked up from the owner
//!    (`GET /repos/{owner}/{repo}/installation`, `/orgs/{org}/installation`,
//!    `/users/{user}/installation`) and cached for an hour;
//! 4. asks `POST /app/installations/{id}/access_tokens` for a token with `repositories`
//!    (or `repository_ids`) and `permissions`, cached per installation, repository and
//!    permissions until shortly before its `expires_at`.
//!
//! The audit log and the span get the token's fingerprint, the repository and permissions
//! it was limited to, and its expiry; never the token.

use super::cache::{IssuedCache, Key};
use super::issued::{Issued, Unavailable};
use super::oauth2::Token;
use crate::catalog::github_permissions::{self, Access, Target, ORGANIZATION_PERMISSION_NAMES};
use crate::clock::Clock;
use crate::config::{GithubAppSpec, Injection, Permissions};
use crate::http_client::HttpClient;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// How long a call to GitHub's App API may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of GitHub's answer keygate reads.
const MAX_ANSWER: usize = 256 * 1024;
/// The life of an App JWT (GitHub refuses more than ten minutes); `iat` is set a minute
/// back for clock drift, as GitHub advises.
const APP_JWT_LIFE: u64 = 9 * 60;
/// How long an owner's installation id is kept.
const INSTALLATION_TTL: Duration = Duration::from_secs(3600);
/// How long a refusal by GitHub is answered from memory.
const REFUSAL_TTL: Duration = Duration::from_secs(30);
/// The `X-GitHub-Api-Version` keygate speaks.
const API_VERSION: &str = "2022-11-28";

/// Where a call's token may reach: which repository of which owner.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    Repo {
        owner: String,
        repo: String,
    },
    RepoId(u64),
    /// An account-level path: the owner, and whether it is an organization (`/orgs/`).
    Account {
        owner: String,
        org: bool,
    },
    /// A path that names no owner (`/user`, `/search/…`).
    Nothing,
}

/// The `github_app` provider of one tool.
pub struct GithubAppProvider {
    spec: Arc<GithubAppSpec>,
    injection: Injection,
    http: HttpClient,
    cache: IssuedCache<Token>,
    installations: moka::future::Cache<String, u64, crate::FastHash>,
    /// What GitHub refused (a token, an installation lookup), kept [`REFUSAL_TTL`]: an
    /// agent repeating a call GitHub refuses does not spend the App's rate limit, shared
    /// by every agent, on it.
    refused: moka::sync::Cache<Arc<str>, Unavailable, crate::FastHash>,
    app_key: Arc<jsonwebtoken::EncodingKey>,
    clock: Clock,
}

impl std::fmt::Debug for GithubAppProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubAppProvider")
            .field("app_id", &self.spec.app_id)
            .field("installation_id", &self.spec.installation_id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct AppClaims {
    iat: u64,
    exp: u64,
    iss: String,
}

#[derive(Serialize)]
struct TokenRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    repositories: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repository_ids: Option<[u64; 1]>,
    permissions: std::collections::BTreeMap<&'a str, &'a str>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: String,
    expires_at: String,
    repositories: Option<Vec<RepoAnswer>>,
}

#[derive(Deserialize)]
struct RepoAnswer {
    full_name: Option<String>,
    id: Option<u64>,
}

#[derive(Deserialize)]
struct InstallationAnswer {
    id: u64,
}

#[derive(Deserialize)]
struct GithubError {
    message: Option<String>,
}

impl GithubAppProvider {
    /// Builds the provider: the App's key must be a PEM RSA key only its owner can read.
    pub fn new(
        spec: Arc<GithubAppSpec>,
        injection: Injection,
        http: HttpClient,
        clock: Clock,
    ) -> Result<GithubAppProvider, String> {
        let app_key = read_app_key(&spec.private_key_file)?;
        Ok(GithubAppProvider {
            cache: IssuedCache::new(clock.clone()),
            installations: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(INSTALLATION_TTL)
                .build_with_hasher(crate::FastHash::default()),
            refused: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(REFUSAL_TTL)
                .build_with_hasher(crate::FastHash::default()),
            app_key: Arc::new(app_key),
            spec,
            injection,
            http,
            clock,
        })
    }

    /// The tool's settings.
    pub fn spec(&self) -> &GithubAppSpec {
        &self.spec
    }

    /// The installation token for one call: `operation` by name, `path` relative to the
    /// API root.
    pub async fn issue(
        &self,
        operation: &str,
        method: &http::Method,
        path: &str,
        task: Option<&str>,
    ) -> Result<Issued, Unavailable> {
        self.issue_with(Some(operation), method, path, task).await
    }

    /// An installation token for keygate's own call (a reconcile's listing, a
    /// retirement's deletion): the permissions are the catalog's for the call, never a
    /// tool's `operations` or `default_permissions`.
    pub async fn issue_own(
        &self,
        method: &http::Method,
        path: &str,
    ) -> Result<Issued, Unavailable> {
        self.issue_with(None, method, path, None).await
    }

    async fn issue_with(
        &self,
        operation: Option<&str>,
        method: &http::Method,
        path: &str,
        task: Option<&str>,
    ) -> Result<Issued, Unavailable> {
        let path = api_path(path);
        let (reach, permissions) = self.needs(operation, method, path)?;
        if matches!(reach, Reach::Account { .. } | Reach::Nothing) {
            // A token that names no repository reaches every repository of the
            // installation: it may carry organization permissions only.
            if let Some((name, _)) = permissions
                .iter()
                .find(|(n, _)| !ORGANIZATION_PERMISSION_NAMES.contains(&n.as_str()))
            {
                return Err(Unavailable::new(format!(
                    "{method} {path} names no repository, and its token would carry the repository permission {name:?} on every repository of the installation"
                )));
            }
        }
        let installation = self.installation(&reach).await?;
        let scope = describe(&reach, &permissions);
        let key = Key {
            agent: "".into(),
            scope: format!("{installation}\n{scope}").into(),
            task: task.map(Arc::from),
        };
        if let Some(why) = self.refused.get(&key.scope) {
            return Err(why);
        }
        let request = Arc::new(Request {
            api_url: self.spec.api_url.clone(),
            app_id: self.spec.app_id,
            app_key: self.app_key.clone(),
            http: self.http.clone(),
            clock: self.clock.clone(),
            injection: self.injection.clone(),
            installation,
            reach,
            permissions,
            scope: scope.into(),
        });
        let (entry, served) = self
            .cache
            .get_or_issue(key.clone(), move || {
                let request = request.clone();
                async move { request.token().await }
            })
            .await
            .inspect_err(|why| self.refused.insert(key.scope.clone(), why.clone()))?;
        Ok(entry.value.issued(served))
    }

    /// Drops the installation tokens made for `task`'s calls and revokes each at GitHub
    /// (`DELETE /installation/token`, authenticated by the token itself). Returns how many
    /// were dropped, and the revocations that failed.
    pub async fn end_task(&self, task: &str) -> (usize, Vec<String>) {
        let tokens = self.cache.take_task(task);
        let mut failed = Vec::new();
        for t in &tokens {
            if let Err(e) = self.revoke(&t.value.value).await {
                failed.push(e.reason);
            }
        }
        (tokens.len(), failed)
    }

    async fn revoke(&self, token: &str) -> Result<(), Unavailable> {
        let mut auth = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Unavailable::new("the installation token is not a valid header"))?;
        auth.set_sensitive(true);
        let url = format!("{}/installation/token", self.spec.api_url);
        let req = http::Request::delete(&url)
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION)
            .header(http::header::USER_AGENT, "keygate")
            .body(crate::error::full_body(bytes::Bytes::new()))
            .map_err(|e| Unavailable::new(format!("cannot build the request to {url}: {e}")))?;
        let who = format!("GitHub at {}", self.spec.api_url);
        let (status, _) =
            crate::http_client::send_small(&self.http, req, MAX_ANSWER, TIMEOUT, &who)
                .await
                .map_err(Unavailable::new)?;
        // 401: the token had expired or was revoked already.
        if status.is_success() || status == http::StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        Err(Unavailable::new(format!(
            "GitHub refused to revoke an installation token (HTTP {})",
            status.as_u16()
        )))
    }

    /// What a call may reach, and the permissions it needs; `operation` `None`: keygate's
    /// own call, which only the catalog's table maps.
    fn needs(
        &self,
        operation: Option<&str>,
        method: &http::Method,
        path: &str,
    ) -> Result<(Reach, Vec<(String, String)>), Unavailable> {
        let reach = reach_of(path)?;
        let owned = |p: &Permissions| p.iter().cloned().collect::<Vec<_>>();
        if let Some(p) = operation.and_then(|o| self.spec.operations.get(o)) {
            return Ok((reach, owned(p)));
        }
        if let Some(need) = github_permissions::needs(method, path) {
            let permissions = need
                .permissions
                .iter()
                .map(|(name, access)| (name.to_string(), level(*access).to_string()))
                .collect();
            // The table and the path agree on the repository (both read the same path).
            let reach = match need.target {
                Target::Repo { owner, repo } => Reach::Repo {
                    owner: owner.to_string(),
                    repo: repo.to_string(),
                },
                Target::RepoId(id) => Reach::RepoId(id),
                Target::Account(_) => reach,
            };
            return Ok((reach, permissions));
        }
        match (&self.spec.default_permissions, operation) {
            (Some(p), Some(_)) => Ok((reach, owned(p))),
            (_, None) => Err(Unavailable::new(format!(
                "keygate's own call {method} {path} is not in the catalog's table of GitHub operations"
            ))),
            (None, Some(_)) => Err(Unavailable::new(format!(
                "keygate cannot tell which GitHub App permissions {method} {path} needs, and the tool has no default_permissions"
            ))),
        }
    }

    /// The installation whose token a call gets.
    async fn installation(&self, reach: &Reach) -> Result<u64, Unavailable> {
        if let Some(id) = self.spec.installation_id {
            return Ok(id);
        }
        let owner = match reach {
            Reach::Repo { owner, .. } | Reach::Account { owner, .. } => owner.as_str(),
            Reach::RepoId(_) | Reach::Nothing => "",
        };
        if !owner.is_empty()
            && !self
                .spec
                .owners
                .iter()
                .any(|o| o.eq_ignore_ascii_case(owner))
        {
            return Err(Unavailable::new(format!(
                "{owner:?} is not among the tool's owners: keygate uses only the installations of the accounts configured"
            )));
        }
        let lookup = match reach {
            Reach::Repo { owner, repo } => format!("/repos/{owner}/{repo}/installation"),
            Reach::Account { owner, org: true } => format!("/orgs/{owner}/installation"),
            Reach::Account { owner, org: false } => format!("/users/{owner}/installation"),
            Reach::RepoId(_) | Reach::Nothing => return Err(Unavailable::new(
                "this path names no owner to find the App's installation by; set installation_id",
            )),
        };
        let request = Request {
            api_url: self.spec.api_url.clone(),
            app_id: self.spec.app_id,
            app_key: self.app_key.clone(),
            http: self.http.clone(),
            clock: self.clock.clone(),
            injection: self.injection.clone(),
            installation: 0,
            reach: reach.clone(),
            permissions: Vec::new(),
            scope: "".into(),
        };
        let key: Arc<str> = lookup.to_ascii_lowercase().into();
        if let Some(why) = self.refused.get(&key) {
            return Err(why);
        }
        self.installations
            .try_get_with(key.to_string(), async move {
                request.find_installation(&lookup).await
            })
            .await
            .map_err(|e: Arc<Unavailable>| {
                self.refused.insert(key, (*e).clone());
                (*e).clone()
            })
    }
}

/// One call to GitHub's App API, kept for the cache to send (again, for a refresh).
struct Request {
    api_url: String,
    app_id: u64,
    app_key: Arc<jsonwebtoken::EncodingKey>,
    http: HttpClient,
    clock: Clock,
    injection: Injection,
    installation: u64,
    reach: Reach,
    permissions: Vec<(String, String)>,
    scope: Arc<str>,
}

impl Request {
    fn now(&self) -> Result<u64, Unavailable> {
        u64::try_from(self.clock.unix_secs())
            .ok()
            .filter(|s| *s > 60)
            .ok_or_else(|| Unavailable::new("system clock is before 1970"))
    }

    /// The App JWT: RS256, `iss` the App id, issued a minute back, nine minutes long.
    fn app_jwt(&self, now: u64) -> Result<String, Unavailable> {
        let claims = AppClaims {
            iat: now - 60,
            exp: now - 60 + APP_JWT_LIFE,
            iss: self.app_id.to_string(),
        };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        jsonwebtoken::encode(&header, &claims, &self.app_key)
            .map_err(|e| Unavailable::new(format!("cannot sign the App JWT: {e}")))
    }

    /// Sends an App-authenticated request to `path` of the API.
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(http::StatusCode, bytes::Bytes), Unavailable> {
        let now = self.now()?;
        let mut auth = http::HeaderValue::from_str(&format!("Bearer {}", self.app_jwt(now)?))
            .map_err(|_| Unavailable::new("the App JWT is not a valid header"))?;
        auth.set_sensitive(true);
        let url = format!("{}{path}", self.api_url);
        let mut req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION)
            .header(http::header::USER_AGENT, "keygate");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(crate::error::full_body(body.unwrap_or_default()))
            .map_err(|e| Unavailable::new(format!("cannot build the request to {url}: {e}")))?;
        let who = format!("GitHub at {}", self.api_url);
        crate::http_client::send_small(&self.http, req, MAX_ANSWER, TIMEOUT, &who)
            .await
            .map_err(Unavailable::new)
    }

    fn refused(&self, what: &str, status: http::StatusCode, body: &[u8]) -> Unavailable {
        let message = serde_json::from_slice::<GithubError>(body)
            .ok()
            .and_then(|e| e.message)
            .unwrap_or_default();
        let message: String = message.chars().take(200).collect();
        Unavailable::new(format!(
            "GitHub refused {what} (HTTP {}): {message}",
            status.as_u16()
        ))
    }

    async fn find_installation(&self, lookup: &str) -> Result<u64, Unavailable> {
        let (status, body) = self.call(http::Method::GET, lookup, None).await?;
        if status != http::StatusCode::OK {
            return Err(self.refused(
                &format!("to name the App's installation ({lookup})"),
                status,
                &body,
            ));
        }
        serde_json::from_slice::<InstallationAnswer>(&body)
            .map(|a| a.id)
            .map_err(|_| Unavailable::new(format!("GitHub's answer to {lookup} has no id")))
    }

    async fn token(&self) -> Result<Token, Unavailable> {
        let now = self.now()?;
        let permissions = self
            .permissions
            .iter()
            .map(|(n, l)| (n.as_str(), l.as_str()))
            .collect();
        let request = match &self.reach {
            Reach::Repo { repo, .. } => TokenRequest {
                repositories: Some([repo.as_str()]),
                repository_ids: None,
                permissions,
            },
            Reach::RepoId(id) => TokenRequest {
                repositories: None,
                repository_ids: Some([*id]),
                permissions,
            },
            Reach::Account { .. } | Reach::Nothing => TokenRequest {
                repositories: None,
                repository_ids: None,
                permissions,
            },
        };
        let body = serde_json::to_vec(&request)
            .map_err(|e| Unavailable::new(format!("cannot encode the token request: {e}")))?;
        let path = format!("/app/installations/{}/access_tokens", self.installation);
        let (status, answer) = self.call(http::Method::POST, &path, Some(body)).await?;
        if status != http::StatusCode::CREATED {
            return Err(self.refused("an installation token", status, &answer));
        }
        let answer: TokenAnswer = serde_json::from_slice(&answer).map_err(|_| {
            Unavailable::new("GitHub's access_tokens answer has no token and expires_at")
        })?;
        let expires = humantime::parse_rfc3339_weak(answer.expires_at.trim())
            .map_err(|_| Unavailable::new("GitHub's expires_at is not a date"))?
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| Unavailable::new("GitHub's expires_at is before 1970"))?
            .as_secs();
        if expires <= now {
            return Err(Unavailable::new("GitHub issued a token that has expired"));
        }
        // The token must reach the repository the call names, not a namesake of the
        // installation's account (a fixed installation_id with another owner in the path).
        let repos = answer.repositories.as_deref().unwrap_or_default();
        let reaches = match &self.reach {
            Reach::Repo { owner, repo } => {
                let want = format!("{owner}/{repo}");
                repos.len() == 1
                    && repos[0]
                        .full_name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(&want))
            }
            Reach::RepoId(id) => repos.len() == 1 && repos[0].id == Some(*id),
            Reach::Account { .. } | Reach::Nothing => true,
        };
        if !reaches {
            return Err(Unavailable::new(format!(
                "the installation's token does not reach the repository the call names ({})",
                self.scope
            )));
        }
        let id = super::static_secret::fingerprint(&answer.token);
        Token::new(
            &self.injection,
            &answer.token,
            id.into(),
            self.scope.clone(),
            expires,
        )
    }
}

fn level(a: Access) -> &'static str {
    a.as_str()
}

/// The path relative to the API root: GitHub Enterprise Server's `/api/v3` prefix, when a
/// tool forwards whole paths, removed.
fn api_path(path: &str) -> &str {
    match path.get(..8) {
        Some(p) if p.eq_ignore_ascii_case("/api/v3/") => &path[7..],
        _ => path,
    }
}

/// Whether a path segment can be a GitHub owner or repository name.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The repository or account a path is about.
fn reach_of(path: &str) -> Result<Reach, Unavailable> {
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    let first = segs.next().unwrap_or_default().to_ascii_lowercase();
    let (a, b) = (segs.next(), segs.next());
    let bad = || {
        Unavailable::new("the path does not name a GitHub repository keygate can scope a token to")
    };
    match first.as_str() {
        "repos" => match (a, b) {
            (Some(owner), Some(repo)) if is_name(owner) && is_name(repo) => Ok(Reach::Repo {
                owner: owner.to_string(),
                repo: repo.to_string(),
            }),
            _ => Err(bad()),
        },
        "repositories" => a
            .and_then(|id| id.parse::<u64>().ok())
            .map(Reach::RepoId)
            .ok_or_else(bad),
        "orgs" | "users" => match a {
            Some(owner) if is_name(owner) => Ok(Reach::Account {
                owner: owner.to_string(),
                org: first == "orgs",
            }),
            _ => Err(bad()),
        },
        _ => Ok(Reach::Nothing),
    }
}

/// What a token reaches and may do, for the audit record: `octo/hello issues=read`.
fn describe(reach: &Reach, permissions: &[(String, String)]) -> String {
    let mut s = match reach {
        Reach::Repo { owner, repo } => format!("{owner}/{repo}"),
        Reach::RepoId(id) => format!("repository_id={id}"),
        Reach::Account { owner, .. } => format!("{owner} (account)"),
        Reach::Nothing => "(no repository)".to_string(),
    };
    for (name, level) in permissions {
        let _ = write!(s, " {name}={level}");
    }
    s
}

/// Reads the App's private key: PEM RSA (GitHub hands out PKCS#1), readable by its owner
/// only.
fn read_app_key(path: &std::path::Path) -> Result<jsonwebtoken::EncodingKey, String> {
    crate::private_fs::check_owner_only(path, "the App's private key")?;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
        .map_err(|_| format!("{} holds no RSA private key in PEM", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_repository_or_account() {
        assert_eq!(
            reach_of("/repos/Octo/hello.js/issues").ok(),
            Some(Reach::Repo {
                owner: "Octo".into(),
                repo: "hello.js".into()
            })
        );
        assert_eq!(
            reach_of("/repositories/42/issues").ok(),
            Some(Reach::RepoId(42))
        );
        assert_eq!(
            reach_of("/orgs/acme/members").ok(),
            Some(Reach::Account {
                owner: "acme".into(),
                org: true
            })
        );
        assert_eq!(reach_of("/user").ok(), Some(Reach::Nothing));
        assert!(reach_of("/repos/octo").is_err());
        assert!(reach_of("/repos/octo/..").is_err());
        assert!(reach_of("/repos/oc%74o/x").is_err());
        assert!(reach_of("/repositories/x/issues").is_err());
        assert_eq!(api_path("/api/v3/repos/o/r"), "/repos/o/r");
        assert_eq!(api_path("/API/V3/repos/o/r"), "/repos/o/r");
        assert_eq!(api_path("/repos/o/r"), "/repos/o/r");
    }

    #[test]
    fn a_token_is_described_by_what_it_reaches() {
        let r = Reach::Repo {
            owner: "octo".into(),
            repo: "hello".into(),
        };
        let p = vec![
            ("issues".to_string(), "read".to_string()),
            ("metadata".to_string(), "read".to_string()),
        ];
        assert_eq!(describe(&r, &p), "octo/hello issues=read metadata=read");
    }
}
