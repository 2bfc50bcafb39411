//! GitHub REST: which GitHub App permissions one call needs, and on which repository or
//! account.
//!
//! keygate answers each agent call to GitHub's REST API with an installation access token
//! of a GitHub App (`POST /app/installations/{id}/access_tokens`) narrowed to the one
//! repository the path names (`repositories` or `repository_ids`) and to the permissions
//! this table gives for the operation (`permissions`). [`needs`] reads the method and the
//! path and returns both; when it returns `None`, keygate refuses the call or uses its
//! configured default. A permission set that is too narrow makes GitHub answer 403; one that
//! is too wide hands the agent more than the operation needs. So the table names only
//! what GitHub documents, and returns `None` where it cannot be sure.
//!
//! Source: GitHub's page "Permissions required for GitHub Apps"
//! (<https://docs.github.com/en/rest/authentication/permissions-required-for-github-apps>),
//! read from the page's data in the github/docs repository
//! (`src/github-apps/data/fpt-2022-11-28/server-to-server-permissions.json`) and from a
//! copy of the page taken in March 2026; only endpoints the page marks as usable with
//! installation access tokens are here. Permission names are the keys of the `permissions`
//! object of "Create an installation access token for an app"
//! (<https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app>).
//! GitHub Enterprise Server versions have their own copy of the page and may differ.
//!
//! Decisions:
//! - Where the page lists several permissions for one endpoint ("Additional permissions")
//!   and any one of them suffices, the table names the one that matches the resource in the
//!   path: `issues` for `/issues/…`, `/labels`, `/milestones` and `/assignees`,
//!   `pull_requests` for `GET /pulls/{pull_number}`. GitHub checks the permission of the
//!   resource the number designates, so an `/issues/{issue_number}/…` call on a pull
//!   request's number is answered 403; adding `pull_requests` would widen every issue call.
//! - Creating, updating or deleting a file (`PUT`/`DELETE /contents/{path}`) needs
//!   `contents: write`, and also `workflows: write` when the file is under
//!   `.github/workflows/`. The path is percent-decoded for this test; a decoded path with an
//!   empty, `.` or `..` component, or a malformed escape, gives `None`.
//! - `POST /git/refs`, `PATCH /git/refs/{ref}` and `POST /releases` also accept
//!   `contents` together with `workflows`, which GitHub requires when the new commit changes
//!   a workflow file. The path does not tell, so the table names `contents: write` alone.
//! - Left out, and so `None`: endpoints for which the page lists several permissions
//!   without saying whether all or any one are needed (`POST /forks`,
//!   `POST`/`PUT`/`DELETE /pages`, `GET /pages/health`, `GET /invitations`, template
//!   generation, temporary private forks of advisories, adding or removing one repository
//!   of an organization secret or variable); endpoints installation tokens cannot use
//!   (source imports, transfer, Codespaces); endpoints whose permission differs between
//!   versions of the page (rule suites, reviewing pending deployments).
//! - `/repositories/{id}/…` is matched against the same table as `/repos/{owner}/{repo}/…`:
//!   GitHub serves every repository route under the numeric id as well.
//! - Literal segments match case-insensitively, as GitHub's router does. Parameters match
//!   one non-empty segment; those GitHub documents as integers (`{issue_number:int}`) match
//!   only ASCII digits. A trailing `{name*}` takes the rest of the path (at least one
//!   segment) and is used only where GitHub's parameter itself contains slashes: file paths,
//!   Git references, `compare/{basehead}` and archive references. Branch names, commit
//!   references and tags take one segment; a name with a slash must be percent-encoded.
//! - When two entries match one path, they must name the same permissions, or the call is
//!   ambiguous and gets `None` (a unit test keeps the table free of such overlaps).
//! - Owner, repository and organization names must be 1 to 100 characters of ASCII letters,
//!   digits, `-`, `_` and `.`, which covers every name GitHub allows; anything else (such as
//!   a percent-encoded slash) gives `None`. Paths with a `?`, a `#`, an empty segment or a
//!   `.`/`..` segment give `None`; one trailing `/` is ignored.
//! - Methods other than GET, POST, PUT, PATCH and DELETE (HEAD, OPTIONS) give `None`.
//! - Endpoints whose only documented permission is `metadata: read` name it; GitHub grants
//!   it with every installation token that has any repository permission.

use http::Method;

/// A GitHub App permission level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Read-only access.
    Read,
    /// Read and write access.
    Write,
    /// Administrative access, offered by a few permissions such as `repository_projects`.
    Admin,
}

impl Access {
    /// The level as GitHub's API spells it: `"read"`, `"write"` or `"admin"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }
}

/// Which repository (or account) a call is about, borrowed from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/repos/{owner}/{repo}/…`
    Repo { owner: &'a str, repo: &'a str },
    /// `/repositories/{id}/…`
    RepoId(u64),
    /// An organization- or user-level endpoint (`/orgs/{org}/…`, `/users/{user}/…`): no repository.
    Account(&'a str),
}

/// What one call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need<'a> {
    /// The repository or account the call is about.
    pub target: Target<'a>,
    /// Sorted by name, each name once: e.g. [("issues", Access::Read)].
    pub permissions: &'static [(&'static str, Access)],
}

/// `path` is relative to the API root (GitHub.com `/repos/o/r/issues`; on GitHub
/// Enterprise Server the `/api/v3` prefix is already removed), already canonical (no dot
/// segments, no repeated slashes); it may end with '/', has no query string. Literal
/// segments match case-insensitively (GitHub's router does), owner/repo names are returned
/// as written. `method` is compared case-insensitively.
///
/// Returns `None` for a call the table does not cover or cannot judge (see the module
/// documentation); the caller then refuses the call or applies its configured default.
pub fn needs<'a>(method: &Method, path: &'a str) -> Option<Need<'a>> {
    let verb = Verb::of(method)?;
    if path.contains(['?', '#']) {
        return None;
    }
    let path = path.strip_prefix('/')?;
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&'a str> = path.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return None;
    }
    let (target, rest, table) = match segments.as_slice() {
        [first, owner, repo, rest @ ..] if first.eq_ignore_ascii_case("repos") => {
            if !is_name(owner) || !is_name(repo) {
                return None;
            }
            (Target::Repo { owner, repo }, rest, REPOSITORY)
        }
        [first, id, rest @ ..] if first.eq_ignore_ascii_case("repositories") => {
            (Target::RepoId(repository_id(id)?), rest, REPOSITORY)
        }
        [first, org, rest @ ..] if first.eq_ignore_ascii_case("orgs") => {
            if !is_name(org) {
                return None;
            }
            (Target::Account(org), rest, ORGANIZATION)
        }
        _ => return None,
    };
    let permissions = lookup(table, verb, rest)?;
    Some(Need {
        target,
        permissions,
    })
}

/// Repository permission names accepted by "Create an installation access token".
pub const REPOSITORY_PERMISSION_NAMES: &[&str] = &[
    "actions",
    "actions_variables",
    "administration",
    "artifact_metadata",
    "attestations",
    "checks",
    "codespaces",
    "contents",
    "dependabot_secrets",
    "deployments",
    "discussions",
    "environments",
    "issues",
    "merge_queues",
    "metadata",
    "packages",
    "pages",
    "pull_requests",
    "repository_custom_properties",
    "repository_hooks",
    "repository_projects",
    "secret_scanning_alerts",
    "secrets",
    "security_events",
    "single_file",
    "statuses",
    "vulnerability_alerts",
    "workflows",
];

/// Organization permission names accepted by "Create an installation access token".
pub const ORGANIZATION_PERMISSION_NAMES: &[&str] = &[
    "members",
    "organization_actions_variables",
    "organization_administration",
    "organization_custom_org_roles",
    "organization_custom_properties",
    "organization_custom_roles",
    "organization_dependabot_secrets",
    "organization_events",
    "organization_hooks",
    "organization_packages",
    "organization_personal_access_token_requests",
    "organization_personal_access_tokens",
    "organization_plan",
    "organization_projects",
    "organization_secrets",
    "organization_self_hosted_runners",
    "organization_user_blocking",
];

/// The permissions of one call, sorted by name.
type Perms = &'static [(&'static str, Access)];

/// The methods the table knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    /// The verb of `method`, compared case-insensitively; `None` for any other method.
    fn of(method: &Method) -> Option<Verb> {
        let name = method.as_str();
        [
            ("GET", Verb::Get),
            ("POST", Verb::Post),
            ("PUT", Verb::Put),
            ("PATCH", Verb::Patch),
            ("DELETE", Verb::Delete),
        ]
        .into_iter()
        .find(|(known, _)| name.eq_ignore_ascii_case(known))
        .map(|(_, verb)| verb)
    }
}

/// How an entry's permissions follow from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// These permissions, whatever the parameters.
    Fixed(Perms),
    /// `contents: write`, with `workflows: write` when the file named by the trailing
    /// wildcard is under `.github/workflows/`.
    FileWrite,
}

impl Grant {
    /// The permissions for a path whose trailing wildcard matched `rest` (empty when the
    /// pattern has no wildcard); `None` when the file path cannot be judged.
    fn resolve(self, rest: &[&str]) -> Option<Perms> {
        match self {
            Grant::Fixed(perms) => Some(perms),
            Grant::FileWrite => Some(if is_workflow_file(rest)? {
                CONTENTS_WORKFLOWS_WRITE
            } else {
                CONTENTS_WRITE
            }),
        }
    }
}

/// One operation: a method, a path pattern relative to the repository
/// (`/repos/{owner}/{repo}`) or organization (`/orgs/{org}`), and its permissions.
#[derive(Debug, Clone, Copy)]
struct Entry {
    verb: Verb,
    /// Segments separated by `/`; `""` is the repository itself. `{name}` is a parameter,
    /// `{name:int}` an integer parameter, a final `{name*}` the rest of the path.
    pattern: &'static str,
    grant: Grant,
}

const fn get(pattern: &'static str, perms: Perms) -> Entry {
    Entry {
        verb: Verb::Get,
        pattern,
        grant: Grant::Fixed(perms),
    }
}

const fn post(pattern: &'static str, perms: Perms) -> Entry {
    Entry {
        verb: Verb::Post,
        pattern,
        grant: Grant::Fixed(perms),
    }
}

const fn put(pattern: &'static str, perms: Perms) -> Entry {
    Entry {
        verb: Verb::Put,
        pattern,
        grant: Grant::Fixed(perms),
    }
}

const fn patch(pattern: &'static str, perms: Perms) -> Entry {
    Entry {
        verb: Verb::Patch,
        pattern,
        grant: Grant::Fixed(perms),
    }
}

const fn delete(pattern: &'static str, perms: Perms) -> Entry {
    Entry {
        verb: Verb::Delete,
        pattern,
        grant: Grant::Fixed(perms),
    }
}

const fn put_file(pattern: &'static str) -> Entry {
    Entry {
        verb: Verb::Put,
        pattern,
        grant: Grant::FileWrite,
    }
}

const fn delete_file(pattern: &'static str) -> Entry {
    Entry {
        verb: Verb::Delete,
        pattern,
        grant: Grant::FileWrite,
    }
}

/// One segment of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part<'p> {
    /// Matches this text, ignoring ASCII case.
    Literal(&'p str),
    /// Matches any one segment.
    Any,
    /// Matches one segment of ASCII digits.
    Int,
    /// Matches the rest of the path: one segment or more.
    Rest,
}

impl<'p> Part<'p> {
    fn parse(part: &'p str) -> Part<'p> {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            None => Part::Literal(part),
            Some(name) if name.ends_with('*') => Part::Rest,
            Some(name) if name.ends_with(":int") => Part::Int,
            Some(_) => Part::Any,
        }
    }
}

/// The parts of a pattern; none for `""`.
fn parts(pattern: &str) -> impl Iterator<Item = Part<'_>> {
    pattern
        .split('/')
        .filter(|part| !part.is_empty())
        .map(Part::parse)
}

/// Whether `pattern` matches `segments`; if so, the segments its trailing wildcard took
/// (empty when it has none).
fn capture<'s, 'a>(pattern: &str, segments: &'s [&'a str]) -> Option<&'s [&'a str]> {
    let mut index = 0;
    for part in parts(pattern) {
        if part == Part::Rest {
            return segments.get(index..).filter(|rest| !rest.is_empty());
        }
        let segment = segments.get(index)?;
        let fits = match part {
            Part::Literal(text) => segment.eq_ignore_ascii_case(text),
            Part::Int => is_digits(segment),
            Part::Any | Part::Rest => true,
        };
        if !fits {
            return None;
        }
        index += 1;
    }
    if index == segments.len() {
        segments.get(index..)
    } else {
        None
    }
}

/// The permissions of the entries of `table` that match; `None` when none matches, when
/// matching entries disagree, or when the matching entry cannot judge the path.
fn lookup(table: &[Entry], verb: Verb, segments: &[&str]) -> Option<Perms> {
    let mut found: Option<Perms> = None;
    for entry in table.iter().filter(|entry| entry.verb == verb) {
        let Some(rest) = capture(entry.pattern, segments) else {
            continue;
        };
        let perms = entry.grant.resolve(rest)?;
        match found {
            Some(earlier) if earlier != perms => return None,
            _ => found = Some(perms),
        }
    }
    found
}

fn is_digits(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `name` can be a GitHub owner, repository or organization name.
fn is_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A repository id: ASCII digits, not zero, within `u64`.
fn repository_id(segment: &str) -> Option<u64> {
    if !is_digits(segment) {
        return None;
    }
    segment.parse().ok().filter(|&id| id != 0)
}

/// Whether the file path made of `segments` is under `.github/workflows/`, after
/// percent-decoding; `None` for a malformed escape or a decoded path with an empty, `.` or
/// `..` component.
fn is_workflow_file(segments: &[&str]) -> Option<bool> {
    let mut decoded = Vec::new();
    for (n, segment) in segments.iter().enumerate() {
        if n > 0 {
            decoded.push(b'/');
        }
        let mut bytes = segment.bytes();
        while let Some(b) = bytes.next() {
            if b == b'%' {
                let high = hex(bytes.next()?)?;
                let low = hex(bytes.next()?)?;
                decoded.push((high << 4) | low);
            } else {
                decoded.push(b);
            }
        }
    }
    if decoded
        .split(|&b| b == b'/')
        .any(|component| matches!(component, b"" | b"." | b".."))
    {
        return None;
    }
    Some(decoded.starts_with(b".github/workflows/"))
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// Creating, changing or deleting a workflow file.
const CONTENTS_WORKFLOWS_WRITE: Perms =
    &[("contents", Access::Write), ("workflows", Access::Write)];

// The single-permission sets of the tables, named after permission and level.
const ACTIONS_READ: Perms = &[("actions", Access::Read)];
const ACTIONS_WRITE: Perms = &[("actions", Access::Write)];
const VARIABLES_READ: Perms = &[("actions_variables", Access::Read)];
const VARIABLES_WRITE: Perms = &[("actions_variables", Access::Write)];
const ADMIN_READ: Perms = &[("administration", Access::Read)];
const ADMIN_WRITE: Perms = &[("administration", Access::Write)];
const CHECKS_READ: Perms = &[("checks", Access::Read)];
const CHECKS_WRITE: Perms = &[("checks", Access::Write)];
const CONTENTS_READ: Perms = &[("contents", Access::Read)];
const CONTENTS_WRITE: Perms = &[("contents", Access::Write)];
const DEPENDABOT_SECRETS_READ: Perms = &[("dependabot_secrets", Access::Read)];
const DEPENDABOT_SECRETS_WRITE: Perms = &[("dependabot_secrets", Access::Write)];
const DEPLOYMENTS_READ: Perms = &[("deployments", Access::Read)];
const DEPLOYMENTS_WRITE: Perms = &[("deployments", Access::Write)];
const ENVIRONMENTS_READ: Perms = &[("environments", Access::Read)];
const ENVIRONMENTS_WRITE: Perms = &[("environments", Access::Write)];
const ISSUES_READ: Perms = &[("issues", Access::Read)];
const ISSUES_WRITE: Perms = &[("issues", Access::Write)];
const MEMBERS_READ: Perms = &[("members", Access::Read)];
const MEMBERS_WRITE: Perms = &[("members", Access::Write)];
const METADATA_READ: Perms = &[("metadata", Access::Read)];
const ORG_VARIABLES_READ: Perms = &[("organization_actions_variables", Access::Read)];
const ORG_VARIABLES_WRITE: Perms = &[("organization_actions_variables", Access::Write)];
const ORG_DEPENDABOT_SECRETS_READ: Perms = &[("organization_dependabot_secrets", Access::Read)];
const ORG_DEPENDABOT_SECRETS_WRITE: Perms = &[("organization_dependabot_secrets", Access::Write)];
const ORG_HOOKS_READ: Perms = &[("organization_hooks", Access::Read)];
const ORG_HOOKS_WRITE: Perms = &[("organization_hooks", Access::Write)];
const ORG_SECRETS_READ: Perms = &[("organization_secrets", Access::Read)];
const ORG_SECRETS_WRITE: Perms = &[("organization_secrets", Access::Write)];
const ORG_RUNNERS_READ: Perms = &[("organization_self_hosted_runners", Access::Read)];
const ORG_RUNNERS_WRITE: Perms = &[("organization_self_hosted_runners", Access::Write)];
const PAGES_READ: Perms = &[("pages", Access::Read)];
const PAGES_WRITE: Perms = &[("pages", Access::Write)];
const PULLS_READ: Perms = &[("pull_requests", Access::Read)];
const PULLS_WRITE: Perms = &[("pull_requests", Access::Write)];
const CUSTOM_PROPERTIES_WRITE: Perms = &[("repository_custom_properties", Access::Write)];
const REPO_HOOKS_READ: Perms = &[("repository_hooks", Access::Read)];
const REPO_HOOKS_WRITE: Perms = &[("repository_hooks", Access::Write)];
const SECRET_SCANNING_READ: Perms = &[("secret_scanning_alerts", Access::Read)];
const SECRET_SCANNING_WRITE: Perms = &[("secret_scanning_alerts", Access::Write)];
const SECRETS_READ: Perms = &[("secrets", Access::Read)];
const SECRETS_WRITE: Perms = &[("secrets", Access::Write)];
const SECURITY_EVENTS_READ: Perms = &[("security_events", Access::Read)];
const SECURITY_EVENTS_WRITE: Perms = &[("security_events", Access::Write)];
const STATUSES_READ: Perms = &[("statuses", Access::Read)];
const STATUSES_WRITE: Perms = &[("statuses", Access::Write)];
const DEPENDABOT_ALERTS_READ: Perms = &[("vulnerability_alerts", Access::Read)];
const DEPENDABOT_ALERTS_WRITE: Perms = &[("vulnerability_alerts", Access::Write)];

/// Operations on one repository: patterns relative to `/repos/{owner}/{repo}` and
/// `/repositories/{id}`, in the order of their paths.
static REPOSITORY: &[Entry] = &[
    // (the repository itself)
    get("", METADATA_READ),
    patch("", ADMIN_WRITE),
    delete("", ADMIN_WRITE),
    // actions/artifacts
    get("actions/artifacts", ACTIONS_READ),
    get("actions/artifacts/{artifact_id:int}", ACTIONS_READ),
    delete("actions/artifacts/{artifact_id:int}", ACTIONS_WRITE),
    get(
        "actions/artifacts/{artifact_id:int}/{archive_format}",
        ACTIONS_READ,
    ),
    // actions/caches
    get("actions/caches", ACTIONS_READ),
    delete("actions/caches", ACTIONS_WRITE),
    delete("actions/caches/{cache_id:int}", ACTIONS_WRITE),
    // actions/jobs
    get("actions/jobs/{job_id:int}", ACTIONS_READ),
    get("actions/jobs/{job_id:int}/logs", ACTIONS_READ),
    post("actions/jobs/{job_id:int}/rerun", ACTIONS_WRITE),
    // actions/organization-secrets
    get("actions/organization-secrets", SECRETS_READ),
    // actions/organization-variables
    get("actions/organization-variables", VARIABLES_READ),
    // actions/permissions
    get("actions/permissions", ADMIN_READ),
    put("actions/permissions", ADMIN_WRITE),
    get("actions/permissions/access", ADMIN_READ),
    put("actions/permissions/access", ADMIN_WRITE),
    get("actions/permissions/selected-actions", ADMIN_READ),
    put("actions/permissions/selected-actions", ADMIN_WRITE),
    get("actions/permissions/workflow", ADMIN_READ),
    put("actions/permissions/workflow", ADMIN_WRITE),
    // actions/runners
    get("actions/runners", ADMIN_READ),
    get("actions/runners/downloads", ADMIN_READ),
    post("actions/runners/generate-jitconfig", ADMIN_WRITE),
    post("actions/runners/registration-token", ADMIN_WRITE),
    post("actions/runners/remove-token", ADMIN_WRITE),
    get("actions/runners/{runner_id:int}", ADMIN_READ),
    delete("actions/runners/{runner_id:int}", ADMIN_WRITE),
    get("actions/runners/{runner_id:int}/labels", ADMIN_READ),
    post("actions/runners/{runner_id:int}/labels", ADMIN_WRITE),
    put("actions/runners/{runner_id:int}/labels", ADMIN_WRITE),
    delete("actions/runners/{runner_id:int}/labels", ADMIN_WRITE),
    delete("actions/runners/{runner_id:int}/labels/{name}", ADMIN_WRITE),
    // actions/runs
    get("actions/runs", ACTIONS_READ),
    get("actions/runs/{run_id:int}", ACTIONS_READ),
    delete("actions/runs/{run_id:int}", ACTIONS_WRITE),
    get("actions/runs/{run_id:int}/approvals", ACTIONS_READ),
    post("actions/runs/{run_id:int}/approve", ACTIONS_WRITE),
    get("actions/runs/{run_id:int}/artifacts", ACTIONS_READ),
    get(
        "actions/runs/{run_id:int}/attempts/{attempt_number:int}",
        ACTIONS_READ,
    ),
    get(
        "actions/runs/{run_id:int}/attempts/{attempt_number:int}/jobs",
        ACTIONS_READ,
    ),
    get(
        "actions/runs/{run_id:int}/attempts/{attempt_number:int}/logs",
        ACTIONS_READ,
    ),
    post("actions/runs/{run_id:int}/cancel", ACTIONS_WRITE),
    post(
        "actions/runs/{run_id:int}/deployment_protection_rule",
        DEPLOYMENTS_WRITE,
    ),
    post("actions/runs/{run_id:int}/force-cancel", ACTIONS_WRITE),
    get("actions/runs/{run_id:int}/jobs", ACTIONS_READ),
    get("actions/runs/{run_id:int}/logs", ACTIONS_READ),
    delete("actions/runs/{run_id:int}/logs", ACTIONS_WRITE),
    get(
        "actions/runs/{run_id:int}/pending_deployments",
        ACTIONS_READ,
    ),
    post("actions/runs/{run_id:int}/rerun", ACTIONS_WRITE),
    post("actions/runs/{run_id:int}/rerun-failed-jobs", ACTIONS_WRITE),
    get("actions/runs/{run_id:int}/timing", ACTIONS_READ),
    // actions/secrets
    get("actions/secrets", SECRETS_READ),
    get("actions/secrets/public-key", SECRETS_READ),
    get("actions/secrets/{secret_name}", SECRETS_READ),
    put("actions/secrets/{secret_name}", SECRETS_WRITE),
    delete("actions/secrets/{secret_name}", SECRETS_WRITE),
    // actions/variables
    get("actions/variables", VARIABLES_READ),
    post("actions/variables", VARIABLES_WRITE),
    get("actions/variables/{name}", VARIABLES_READ),
    patch("actions/variables/{name}", VARIABLES_WRITE),
    delete("actions/variables/{name}", VARIABLES_WRITE),
    // actions/workflows
    get("actions/workflows", ACTIONS_READ),
    get("actions/workflows/{workflow_id}", ACTIONS_READ),
    put("actions/workflows/{workflow_id}/disable", ACTIONS_WRITE),
    post("actions/workflows/{workflow_id}/dispatches", ACTIONS_WRITE),
    put("actions/workflows/{workflow_id}/enable", ACTIONS_WRITE),
    get("actions/workflows/{workflow_id}/runs", ACTIONS_READ),
    get("actions/workflows/{workflow_id}/timing", ACTIONS_READ),
    // activity
    get("activity", CONTENTS_READ),
    // assignees
    get("assignees", ISSUES_READ),
    get("assignees/{assignee}", ISSUES_READ),
    // autolinks
    get("autolinks", ADMIN_READ),
    post("autolinks", ADMIN_WRITE),
    get("autolinks/{autolink_id:int}", ADMIN_READ),
    delete("autolinks/{autolink_id:int}", ADMIN_WRITE),
    // automated-security-fixes
    get("automated-security-fixes", ADMIN_READ),
    put("automated-security-fixes", ADMIN_WRITE),
    delete("automated-security-fixes", ADMIN_WRITE),
    // branches
    get("branches", CONTENTS_READ),
    get("branches/{branch}", CONTENTS_READ),
    get("branches/{branch}/protection", ADMIN_READ),
    put("branches/{branch}/protection", ADMIN_WRITE),
    delete("branches/{branch}/protection", ADMIN_WRITE),
    get("branches/{branch}/protection/enforce_admins", ADMIN_READ),
    post("branches/{branch}/protection/enforce_admins", ADMIN_WRITE),
    delete("branches/{branch}/protection/enforce_admins", ADMIN_WRITE),
    get(
        "branches/{branch}/protection/required_pull_request_reviews",
        ADMIN_READ,
    ),
    patch(
        "branches/{branch}/protection/required_pull_request_reviews",
        ADMIN_WRITE,
    ),
    delete(
        "branches/{branch}/protection/required_pull_request_reviews",
        ADMIN_WRITE,
    ),
    get(
        "branches/{branch}/protection/required_signatures",
        ADMIN_READ,
    ),
    post(
        "branches/{branch}/protection/required_signatures",
        ADMIN_WRITE,
    ),
    delete(
        "branches/{branch}/protection/required_signatures",
        ADMIN_WRITE,
    ),
    get(
        "branches/{branch}/protection/required_status_checks",
        ADMIN_READ,
    ),
    patch(
        "branches/{branch}/protection/required_status_checks",
        ADMIN_WRITE,
    ),
    delete(
        "branches/{branch}/protection/required_status_checks",
        ADMIN_WRITE,
    ),
    get(
        "branches/{branch}/protection/required_status_checks/contexts",
        ADMIN_READ,
    ),
    post(
        "branches/{branch}/protection/required_status_checks/contexts",
        ADMIN_WRITE,
    ),
    put(
        "branches/{branch}/protection/required_status_checks/contexts",
        ADMIN_WRITE,
    ),
    delete(
        "branches/{branch}/protection/required_status_checks/contexts",
        ADMIN_WRITE,
    ),
    get("branches/{branch}/protection/restrictions", ADMIN_READ),
    delete("branches/{branch}/protection/restrictions", ADMIN_WRITE),
    get("branches/{branch}/protection/restrictions/apps", ADMIN_READ),
    post(
        "branches/{branch}/protection/restrictions/apps",
        ADMIN_WRITE,
    ),
    put(
        "branches/{branch}/protection/restrictions/apps",
        ADMIN_WRITE,
    ),
    delete(
        "branches/{branch}/protection/restrictions/apps",
        ADMIN_WRITE,
    ),
    get(
        "branches/{branch}/protection/restrictions/teams",
        ADMIN_READ,
    ),
    post(
        "branches/{branch}/protection/restrictions/teams",
        ADMIN_WRITE,
    ),
    put(
        "branches/{branch}/protection/restrictions/teams",
        ADMIN_WRITE,
    ),
    delete(
        "branches/{branch}/protection/restrictions/teams",
        ADMIN_WRITE,
    ),
    get(
        "branches/{branch}/protection/restrictions/users",
        ADMIN_READ,
    ),
    post(
        "branches/{branch}/protection/restrictions/users",
        ADMIN_WRITE,
    ),
    put(
        "branches/{branch}/protection/restrictions/users",
        ADMIN_WRITE,
    ),
    delete(
        "branches/{branch}/protection/restrictions/users",
        ADMIN_WRITE,
    ),
    post("branches/{branch}/rename", CONTENTS_WRITE),
    // check-runs
    post("check-runs", CHECKS_WRITE),
    get("check-runs/{check_run_id:int}", CHECKS_READ),
    patch("check-runs/{check_run_id:int}", CHECKS_WRITE),
    get("check-runs/{check_run_id:int}/annotations", CHECKS_READ),
    post("check-runs/{check_run_id:int}/rerequest", CHECKS_WRITE),
    // check-suites
    post("check-suites", CHECKS_WRITE),
    patch("check-suites/preferences", CHECKS_WRITE),
    get("check-suites/{check_suite_id:int}", CHECKS_READ),
    get("check-suites/{check_suite_id:int}/check-runs", CHECKS_READ),
    post("check-suites/{check_suite_id:int}/rerequest", CHECKS_WRITE),
    // code-scanning/alerts
    get("code-scanning/alerts", SECURITY_EVENTS_READ),
    get(
        "code-scanning/alerts/{alert_number:int}",
        SECURITY_EVENTS_READ,
    ),
    patch(
        "code-scanning/alerts/{alert_number:int}",
        SECURITY_EVENTS_WRITE,
    ),
    get(
        "code-scanning/alerts/{alert_number:int}/instances",
        SECURITY_EVENTS_READ,
    ),
    // code-scanning/analyses
    get("code-scanning/analyses", SECURITY_EVENTS_READ),
    get(
        "code-scanning/analyses/{analysis_id:int}",
        SECURITY_EVENTS_READ,
    ),
    delete(
        "code-scanning/analyses/{analysis_id:int}",
        SECURITY_EVENTS_WRITE,
    ),
    // code-scanning/sarifs
    post("code-scanning/sarifs", SECURITY_EVENTS_WRITE),
    get("code-scanning/sarifs/{sarif_id}", SECURITY_EVENTS_READ),
    // codeowners
    get("codeowners/errors", CONTENTS_READ),
    // collaborators
    get("collaborators", METADATA_READ),
    get("collaborators/{username}", METADATA_READ),
    put("collaborators/{username}", ADMIN_WRITE),
    delete("collaborators/{username}", ADMIN_WRITE),
    get("collaborators/{username}/permission", METADATA_READ),
    // comments
    get("comments", METADATA_READ),
    get("comments/{comment_id:int}", METADATA_READ),
    patch("comments/{comment_id:int}", CONTENTS_WRITE),
    delete("comments/{comment_id:int}", CONTENTS_WRITE),
    get("comments/{comment_id:int}/reactions", METADATA_READ),
    post("comments/{comment_id:int}/reactions", CONTENTS_WRITE),
    delete(
        "comments/{comment_id:int}/reactions/{reaction_id:int}",
        CONTENTS_WRITE,
    ),
    // commits
    get("commits", CONTENTS_READ),
    get("commits/{commit_sha}/branches-where-head", CONTENTS_READ),
    get("commits/{commit_sha}/comments", METADATA_READ),
    post("commits/{commit_sha}/comments", CONTENTS_READ),
    get("commits/{commit_sha}/pulls", PULLS_READ),
    get("commits/{ref}", CONTENTS_READ),
    get("commits/{ref}/check-runs", CHECKS_READ),
    get("commits/{ref}/check-suites", CHECKS_READ),
    get("commits/{ref}/status", STATUSES_READ),
    get("commits/{ref}/statuses", STATUSES_READ),
    // community
    get("community/profile", CONTENTS_READ),
    // compare
    get("compare/{basehead*}", CONTENTS_READ),
    // contents
    get("contents", CONTENTS_READ),
    get("contents/{path*}", CONTENTS_READ),
    put_file("contents/{path*}"),
    delete_file("contents/{path*}"),
    // contributors
    get("contributors", METADATA_READ),
    // dependabot/alerts
    get("dependabot/alerts", DEPENDABOT_ALERTS_READ),
    get(
        "dependabot/alerts/{alert_number:int}",
        DEPENDABOT_ALERTS_READ,
    ),
    patch(
        "dependabot/alerts/{alert_number:int}",
        DEPENDABOT_ALERTS_WRITE,
    ),
    // dependabot/secrets
    get("dependabot/secrets", DEPENDABOT_SECRETS_READ),
    get("dependabot/secrets/public-key", DEPENDABOT_SECRETS_READ),
    get("dependabot/secrets/{secret_name}", DEPENDABOT_SECRETS_READ),
    put("dependabot/secrets/{secret_name}", DEPENDABOT_SECRETS_WRITE),
    delete("dependabot/secrets/{secret_name}", DEPENDABOT_SECRETS_WRITE),
    // deployments
    get("deployments", DEPLOYMENTS_READ),
    post("deployments", DEPLOYMENTS_WRITE),
    get("deployments/{deployment_id:int}", DEPLOYMENTS_READ),
    delete("deployments/{deployment_id:int}", DEPLOYMENTS_WRITE),
    get("deployments/{deployment_id:int}/statuses", DEPLOYMENTS_READ),
    post(
        "deployments/{deployment_id:int}/statuses",
        DEPLOYMENTS_WRITE,
    ),
    get(
        "deployments/{deployment_id:int}/statuses/{status_id:int}",
        DEPLOYMENTS_READ,
    ),
    // dispatches
    post("dispatches", CONTENTS_WRITE),
    // environments
    get("environments", ACTIONS_READ),
    get("environments/{environment_name}", ACTIONS_READ),
    put("environments/{environment_name}", ADMIN_WRITE),
    delete("environments/{environment_name}", ADMIN_WRITE),
    get(
        "environments/{environment_name}/deployment-branch-policies",
        ACTIONS_READ,
    ),
    post(
        "environments/{environment_name}/deployment-branch-policies",
        ADMIN_WRITE,
    ),
    get(
        "environments/{environment_name}/deployment-branch-policies/{branch_policy_id:int}",
        ACTIONS_READ,
    ),
    put(
        "environments/{environment_name}/deployment-branch-policies/{branch_policy_id:int}",
        ADMIN_WRITE,
    ),
    delete(
        "environments/{environment_name}/deployment-branch-policies/{branch_policy_id:int}",
        ADMIN_WRITE,
    ),
    get(
        "environments/{environment_name}/deployment_protection_rules",
        ACTIONS_READ,
    ),
    post(
        "environments/{environment_name}/deployment_protection_rules",
        ADMIN_WRITE,
    ),
    get(
        "environments/{environment_name}/deployment_protection_rules/apps",
        ADMIN_READ,
    ),
    get(
        "environments/{environment_name}/deployment_protection_rules/{protection_rule_id:int}",
        ACTIONS_READ,
    ),
    delete(
        "environments/{environment_name}/deployment_protection_rules/{protection_rule_id:int}",
        ADMIN_WRITE,
    ),
    get("environments/{environment_name}/secrets", ENVIRONMENTS_READ),
    get(
        "environments/{environment_name}/secrets/public-key",
        ENVIRONMENTS_READ,
    ),
    get(
        "environments/{environment_name}/secrets/{secret_name}",
        ENVIRONMENTS_READ,
    ),
    put(
        "environments/{environment_name}/secrets/{secret_name}",
        ENVIRONMENTS_WRITE,
    ),
    delete(
        "environments/{environment_name}/secrets/{secret_name}",
        ENVIRONMENTS_WRITE,
    ),
    get(
        "environments/{environment_name}/variables",
        ENVIRONMENTS_READ,
    ),
    post(
        "environments/{environment_name}/variables",
        ENVIRONMENTS_WRITE,
    ),
    get(
        "environments/{environment_name}/variables/{name}",
        ENVIRONMENTS_READ,
    ),
    patch(
        "environments/{environment_name}/variables/{name}",
        ENVIRONMENTS_WRITE,
    ),
    delete(
        "environments/{environment_name}/variables/{name}",
        ENVIRONMENTS_WRITE,
    ),
    // events
    get("events", METADATA_READ),
    // forks
    get("forks", METADATA_READ),
    // git
    post("git/blobs", CONTENTS_WRITE),
    get("git/blobs/{file_sha}", CONTENTS_READ),
    post("git/commits", CONTENTS_WRITE),
    get("git/commits/{commit_sha}", CONTENTS_READ),
    get("git/matching-refs/{ref*}", CONTENTS_READ),
    get("git/ref/{ref*}", CONTENTS_READ),
    post("git/refs", CONTENTS_WRITE),
    patch("git/refs/{ref*}", CONTENTS_WRITE),
    delete("git/refs/{ref*}", CONTENTS_WRITE),
    post("git/tags", CONTENTS_WRITE),
    get("git/tags/{tag_sha}", CONTENTS_READ),
    post("git/trees", CONTENTS_WRITE),
    get("git/trees/{tree_sha}", CONTENTS_READ),
    // hooks
    get("hooks", REPO_HOOKS_READ),
    post("hooks", REPO_HOOKS_WRITE),
    get("hooks/{hook_id:int}", REPO_HOOKS_READ),
    patch("hooks/{hook_id:int}", REPO_HOOKS_WRITE),
    delete("hooks/{hook_id:int}", REPO_HOOKS_WRITE),
    get("hooks/{hook_id:int}/config", REPO_HOOKS_READ),
    patch("hooks/{hook_id:int}/config", REPO_HOOKS_WRITE),
    get("hooks/{hook_id:int}/deliveries", REPO_HOOKS_READ),
    get(
        "hooks/{hook_id:int}/deliveries/{delivery_id:int}",
        REPO_HOOKS_READ,
    ),
    post(
        "hooks/{hook_id:int}/deliveries/{delivery_id:int}/attempts",
        REPO_HOOKS_WRITE,
    ),
    post("hooks/{hook_id:int}/pings", REPO_HOOKS_READ),
    post("hooks/{hook_id:int}/tests", REPO_HOOKS_READ),
    // interaction-limits
    get("interaction-limits", ADMIN_READ),
    put("interaction-limits", ADMIN_WRITE),
    delete("interaction-limits", ADMIN_WRITE),
    // invitations
    patch("invitations/{invitation_id:int}", ADMIN_WRITE),
    delete("invitations/{invitation_id:int}", ADMIN_WRITE),
    // issues
    get("issues", ISSUES_READ),
    post("issues", ISSUES_WRITE),
    get("issues/comments", ISSUES_READ),
    get("issues/comments/{comment_id:int}", ISSUES_READ),
    patch("issues/comments/{comment_id:int}", ISSUES_WRITE),
    delete("issues/comments/{comment_id:int}", ISSUES_WRITE),
    put("issues/comments/{comment_id:int}/pin", ISSUES_WRITE),
    delete("issues/comments/{comment_id:int}/pin", ISSUES_WRITE),
    get("issues/comments/{comment_id:int}/reactions", ISSUES_READ),
    post("issues/comments/{comment_id:int}/reactions", ISSUES_WRITE),
    delete(
        "issues/comments/{comment_id:int}/reactions/{reaction_id:int}",
        ISSUES_WRITE,
    ),
    get("issues/events", ISSUES_READ),
    get("issues/events/{event_id:int}", ISSUES_READ),
    get("issues/{issue_number:int}", ISSUES_READ),
    patch("issues/{issue_number:int}", ISSUES_WRITE),
    post("issues/{issue_number:int}/assignees", ISSUES_WRITE),
    delete("issues/{issue_number:int}/assignees", ISSUES_WRITE),
    get(
        "issues/{issue_number:int}/assignees/{assignee}",
        ISSUES_READ,
    ),
    get("issues/{issue_number:int}/comments", ISSUES_READ),
    post("issues/{issue_number:int}/comments", ISSUES_WRITE),
    get(
        "issues/{issue_number:int}/dependencies/blocked_by",
        ISSUES_READ,
    ),
    post(
        "issues/{issue_number:int}/dependencies/blocked_by",
        ISSUES_WRITE,
    ),
    delete(
        "issues/{issue_number:int}/dependencies/blocked_by/{issue_id:int}",
        ISSUES_WRITE,
    ),
    get(
        "issues/{issue_number:int}/dependencies/blocking",
        ISSUES_READ,
    ),
    get("issues/{issue_number:int}/events", ISSUES_READ),
    get("issues/{issue_number:int}/issue-field-values", ISSUES_READ),
    get("issues/{issue_number:int}/labels", ISSUES_READ),
    post("issues/{issue_number:int}/labels", ISSUES_WRITE),
    put("issues/{issue_number:int}/labels", ISSUES_WRITE),
    delete("issues/{issue_number:int}/labels", ISSUES_WRITE),
    delete("issues/{issue_number:int}/labels/{name}", ISSUES_WRITE),
    put("issues/{issue_number:int}/lock", ISSUES_WRITE),
    delete("issues/{issue_number:int}/lock", ISSUES_WRITE),
    get("issues/{issue_number:int}/parent", ISSUES_READ),
    get("issues/{issue_number:int}/reactions", ISSUES_READ),
    post("issues/{issue_number:int}/reactions", ISSUES_WRITE),
    delete(
        "issues/{issue_number:int}/reactions/{reaction_id:int}",
        ISSUES_WRITE,
    ),
    delete("issues/{issue_number:int}/sub_issue", ISSUES_WRITE),
    get("issues/{issue_number:int}/sub_issues", ISSUES_READ),
    post("issues/{issue_number:int}/sub_issues", ISSUES_WRITE),
    patch(
        "issues/{issue_number:int}/sub_issues/priority",
        ISSUES_WRITE,
    ),
    get("issues/{issue_number:int}/timeline", ISSUES_READ),
    // keys
    get("keys", ADMIN_READ),
    post("keys", ADMIN_WRITE),
    get("keys/{key_id:int}", ADMIN_READ),
    delete("keys/{key_id:int}", ADMIN_WRITE),
    // labels
    get("labels", ISSUES_READ),
    post("labels", ISSUES_WRITE),
    get("labels/{name}", ISSUES_READ),
    patch("labels/{name}", ISSUES_WRITE),
    delete("labels/{name}", ISSUES_WRITE),
    // languages
    get("languages", METADATA_READ),
    // license
    get("license", METADATA_READ),
    // merge-upstream
    post("merge-upstream", CONTENTS_WRITE),
    // merges
    post("merges", CONTENTS_WRITE),
    // milestones
    get("milestones", ISSUES_READ),
    post("milestones", ISSUES_WRITE),
    get("milestones/{milestone_number:int}", ISSUES_READ),
    patch("milestones/{milestone_number:int}", ISSUES_WRITE),
    delete("milestones/{milestone_number:int}", ISSUES_WRITE),
    get("milestones/{milestone_number:int}/labels", ISSUES_READ),
    // pages
    get("pages", PAGES_READ),
    get("pages/builds", PAGES_READ),
    post("pages/builds", PAGES_WRITE),
    get("pages/builds/latest", PAGES_READ),
    get("pages/builds/{build_id:int}", PAGES_READ),
    post("pages/deployments", PAGES_WRITE),
    get("pages/deployments/{pages_deployment_id}", PAGES_READ),
    post(
        "pages/deployments/{pages_deployment_id}/cancel",
        PAGES_WRITE,
    ),
    // private-vulnerability-reporting
    get("private-vulnerability-reporting", METADATA_READ),
    put("private-vulnerability-reporting", ADMIN_WRITE),
    delete("private-vulnerability-reporting", ADMIN_WRITE),
    // properties
    get("properties/values", METADATA_READ),
    patch("properties/values", CUSTOM_PROPERTIES_WRITE),
    // pulls
    get("pulls", PULLS_READ),
    post("pulls", PULLS_WRITE),
    get("pulls/comments", PULLS_READ),
    get("pulls/comments/{comment_id:int}", PULLS_READ),
    patch("pulls/comments/{comment_id:int}", PULLS_WRITE),
    delete("pulls/comments/{comment_id:int}", PULLS_WRITE),
    get("pulls/comments/{comment_id:int}/reactions", PULLS_READ),
    post("pulls/comments/{comment_id:int}/reactions", PULLS_WRITE),
    delete(
        "pulls/comments/{comment_id:int}/reactions/{reaction_id:int}",
        PULLS_WRITE,
    ),
    get("pulls/{pull_number:int}", PULLS_READ),
    patch("pulls/{pull_number:int}", PULLS_WRITE),
    get("pulls/{pull_number:int}/comments", PULLS_READ),
    post("pulls/{pull_number:int}/comments", PULLS_WRITE),
    post(
        "pulls/{pull_number:int}/comments/{comment_id:int}/replies",
        PULLS_WRITE,
    ),
    get("pulls/{pull_number:int}/commits", PULLS_READ),
    get("pulls/{pull_number:int}/files", PULLS_READ),
    get("pulls/{pull_number:int}/merge", PULLS_READ),
    put("pulls/{pull_number:int}/merge", CONTENTS_WRITE),
    get("pulls/{pull_number:int}/requested_reviewers", PULLS_READ),
    post("pulls/{pull_number:int}/requested_reviewers", PULLS_WRITE),
    delete("pulls/{pull_number:int}/requested_reviewers", PULLS_WRITE),
    get("pulls/{pull_number:int}/reviews", PULLS_READ),
    post("pulls/{pull_number:int}/reviews", PULLS_WRITE),
    get(
        "pulls/{pull_number:int}/reviews/{review_id:int}",
        PULLS_READ,
    ),
    put(
        "pulls/{pull_number:int}/reviews/{review_id:int}",
        PULLS_WRITE,
    ),
    delete(
        "pulls/{pull_number:int}/reviews/{review_id:int}",
        PULLS_WRITE,
    ),
    get(
        "pulls/{pull_number:int}/reviews/{review_id:int}/comments",
        PULLS_READ,
    ),
    put(
        "pulls/{pull_number:int}/reviews/{review_id:int}/dismissals",
        PULLS_WRITE,
    ),
    post(
        "pulls/{pull_number:int}/reviews/{review_id:int}/events",
        PULLS_WRITE,
    ),
    put("pulls/{pull_number:int}/update-branch", PULLS_WRITE),
    // readme
    get("readme", CONTENTS_READ),
    get("readme/{dir}", CONTENTS_READ),
    // releases
    get("releases", CONTENTS_READ),
    post("releases", CONTENTS_WRITE),
    get("releases/assets/{asset_id:int}", CONTENTS_READ),
    patch("releases/assets/{asset_id:int}", CONTENTS_WRITE),
    delete("releases/assets/{asset_id:int}", CONTENTS_WRITE),
    post("releases/generate-notes", CONTENTS_WRITE),
    get("releases/latest", CONTENTS_READ),
    get("releases/tags/{tag}", CONTENTS_READ),
    get("releases/{release_id:int}", CONTENTS_READ),
    patch("releases/{release_id:int}", CONTENTS_WRITE),
    delete("releases/{release_id:int}", CONTENTS_WRITE),
    get("releases/{release_id:int}/assets", CONTENTS_READ),
    // rules
    get("rules/branches/{branch}", METADATA_READ),
    // rulesets
    get("rulesets", METADATA_READ),
    post("rulesets", ADMIN_WRITE),
    get("rulesets/{ruleset_id:int}", METADATA_READ),
    put("rulesets/{ruleset_id:int}", ADMIN_WRITE),
    delete("rulesets/{ruleset_id:int}", ADMIN_WRITE),
    // secret-scanning/alerts
    get("secret-scanning/alerts", SECRET_SCANNING_READ),
    get(
        "secret-scanning/alerts/{alert_number:int}",
        SECRET_SCANNING_READ,
    ),
    patch(
        "secret-scanning/alerts/{alert_number:int}",
        SECRET_SCANNING_WRITE,
    ),
    get(
        "secret-scanning/alerts/{alert_number:int}/locations",
        SECRET_SCANNING_READ,
    ),
    // secret-scanning/scan-history
    get("secret-scanning/scan-history", SECRET_SCANNING_READ),
    // stargazers
    get("stargazers", METADATA_READ),
    // stats
    get("stats/code_frequency", METADATA_READ),
    get("stats/commit_activity", METADATA_READ),
    get("stats/contributors", METADATA_READ),
    get("stats/participation", METADATA_READ),
    get("stats/punch_card", METADATA_READ),
    // statuses
    post("statuses/{sha}", STATUSES_WRITE),
    // subscribers
    get("subscribers", METADATA_READ),
    // tags
    get("tags", METADATA_READ),
    // tarball
    get("tarball/{ref*}", CONTENTS_READ),
    // teams
    get("teams", ADMIN_READ),
    // topics
    get("topics", METADATA_READ),
    put("topics", ADMIN_WRITE),
    // traffic
    get("traffic/clones", ADMIN_READ),
    get("traffic/popular/paths", ADMIN_READ),
    get("traffic/popular/referrers", ADMIN_READ),
    get("traffic/views", ADMIN_READ),
    // vulnerability-alerts
    get("vulnerability-alerts", ADMIN_READ),
    put("vulnerability-alerts", ADMIN_WRITE),
    delete("vulnerability-alerts", ADMIN_WRITE),
    // zipball
    get("zipball/{ref*}", CONTENTS_READ),
];

/// Operations on an organization: patterns relative to `/orgs/{org}`.
static ORGANIZATION: &[Entry] = &[
    // actions/runners
    get("actions/runners", ORG_RUNNERS_READ),
    get("actions/runners/downloads", ORG_RUNNERS_READ),
    post("actions/runners/generate-jitconfig", ORG_RUNNERS_WRITE),
    post("actions/runners/registration-token", ORG_RUNNERS_WRITE),
    post("actions/runners/remove-token", ORG_RUNNERS_WRITE),
    get("actions/runners/{runner_id:int}", ORG_RUNNERS_READ),
    delete("actions/runners/{runner_id:int}", ORG_RUNNERS_WRITE),
    get("actions/runners/{runner_id:int}/labels", ORG_RUNNERS_READ),
    post("actions/runners/{runner_id:int}/labels", ORG_RUNNERS_WRITE),
    put("actions/runners/{runner_id:int}/labels", ORG_RUNNERS_WRITE),
    delete("actions/runners/{runner_id:int}/labels", ORG_RUNNERS_WRITE),
    delete(
        "actions/runners/{runner_id:int}/labels/{name}",
        ORG_RUNNERS_WRITE,
    ),
    // actions/secrets
    get("actions/secrets", ORG_SECRETS_READ),
    get("actions/secrets/public-key", ORG_SECRETS_READ),
    get("actions/secrets/{secret_name}", ORG_SECRETS_READ),
    put("actions/secrets/{secret_name}", ORG_SECRETS_WRITE),
    delete("actions/secrets/{secret_name}", ORG_SECRETS_WRITE),
    get(
        "actions/secrets/{secret_name}/repositories",
        ORG_SECRETS_READ,
    ),
    put(
        "actions/secrets/{secret_name}/repositories",
        ORG_SECRETS_WRITE,
    ),
    // actions/variables
    get("actions/variables", ORG_VARIABLES_READ),
    post("actions/variables", ORG_VARIABLES_WRITE),
    get("actions/variables/{name}", ORG_VARIABLES_READ),
    patch("actions/variables/{name}", ORG_VARIABLES_WRITE),
    delete("actions/variables/{name}", ORG_VARIABLES_WRITE),
    get("actions/variables/{name}/repositories", ORG_VARIABLES_READ),
    put("actions/variables/{name}/repositories", ORG_VARIABLES_WRITE),
    // dependabot/secrets
    get("dependabot/secrets", ORG_DEPENDABOT_SECRETS_READ),
    get("dependabot/secrets/public-key", ORG_DEPENDABOT_SECRETS_READ),
    get(
        "dependabot/secrets/{secret_name}",
        ORG_DEPENDABOT_SECRETS_READ,
    ),
    put(
        "dependabot/secrets/{secret_name}",
        ORG_DEPENDABOT_SECRETS_WRITE,
    ),
    delete(
        "dependabot/secrets/{secret_name}",
        ORG_DEPENDABOT_SECRETS_WRITE,
    ),
    get(
        "dependabot/secrets/{secret_name}/repositories",
        ORG_DEPENDABOT_SECRETS_READ,
    ),
    put(
        "dependabot/secrets/{secret_name}/repositories",
        ORG_DEPENDABOT_SECRETS_WRITE,
    ),
    // hooks
    get("hooks", ORG_HOOKS_READ),
    post("hooks", ORG_HOOKS_WRITE),
    get("hooks/{hook_id:int}", ORG_HOOKS_READ),
    patch("hooks/{hook_id:int}", ORG_HOOKS_WRITE),
    delete("hooks/{hook_id:int}", ORG_HOOKS_WRITE),
    get("hooks/{hook_id:int}/config", ORG_HOOKS_READ),
    patch("hooks/{hook_id:int}/config", ORG_HOOKS_WRITE),
    get("hooks/{hook_id:int}/deliveries", ORG_HOOKS_READ),
    get(
        "hooks/{hook_id:int}/deliveries/{delivery_id:int}",
        ORG_HOOKS_READ,
    ),
    post(
        "hooks/{hook_id:int}/deliveries/{delivery_id:int}/attempts",
        ORG_HOOKS_WRITE,
    ),
    post("hooks/{hook_id:int}/pings", ORG_HOOKS_WRITE),
    // invitations
    get("invitations", MEMBERS_READ),
    post("invitations", MEMBERS_WRITE),
    delete("invitations/{invitation_id:int}", MEMBERS_WRITE),
    get("invitations/{invitation_id:int}/teams", MEMBERS_READ),
    // members
    get("members", MEMBERS_READ),
    get("members/{username}", MEMBERS_READ),
    delete("members/{username}", MEMBERS_WRITE),
    // memberships
    get("memberships/{username}", MEMBERS_READ),
    put("memberships/{username}", MEMBERS_WRITE),
    delete("memberships/{username}", MEMBERS_WRITE),
    // outside_collaborators
    get("outside_collaborators", MEMBERS_READ),
    put("outside_collaborators/{username}", MEMBERS_WRITE),
    delete("outside_collaborators/{username}", MEMBERS_WRITE),
    // public_members
    get("public_members", MEMBERS_READ),
    get("public_members/{username}", MEMBERS_READ),
    // teams
    get("teams", MEMBERS_READ),
    post("teams", MEMBERS_WRITE),
    get("teams/{team_slug}", MEMBERS_READ),
    patch("teams/{team_slug}", MEMBERS_WRITE),
    delete("teams/{team_slug}", MEMBERS_WRITE),
    get("teams/{team_slug}/invitations", MEMBERS_READ),
    get("teams/{team_slug}/members", MEMBERS_READ),
    get("teams/{team_slug}/memberships/{username}", MEMBERS_READ),
    put("teams/{team_slug}/memberships/{username}", MEMBERS_WRITE),
    delete("teams/{team_slug}/memberships/{username}", MEMBERS_WRITE),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> [(&'static str, &'static [Entry], &'static [&'static str]); 2] {
        [
            ("repository", REPOSITORY, REPOSITORY_PERMISSION_NAMES),
            ("organization", ORGANIZATION, ORGANIZATION_PERMISSION_NAMES),
        ]
    }

    /// Every permission set an entry can produce.
    fn grants(entry: &Entry) -> Vec<Perms> {
        match entry.grant {
            Grant::Fixed(perms) => vec![perms],
            Grant::FileWrite => vec![CONTENTS_WRITE, CONTENTS_WORKFLOWS_WRITE],
        }
    }

    fn method(name: &str) -> Method {
        Method::from_bytes(name.as_bytes()).unwrap()
    }

    fn need<'a>(verb: &str, path: &'a str) -> Option<Need<'a>> {
        needs(&method(verb), path)
    }

    /// The permissions of a call on repository `o/r`, asserting the target.
    fn repo(verb: &str, path: &str) -> Option<Vec<(&'static str, Access)>> {
        let found = need(verb, path)?;
        assert_eq!(
            found.target,
            Target::Repo {
                owner: "o",
                repo: "r"
            },
            "{verb} {path}"
        );
        Some(found.permissions.to_vec())
    }

    /// The permissions of a call on organization `acme`, asserting the target.
    fn org(verb: &str, path: &str) -> Option<Vec<(&'static str, Access)>> {
        let found = need(verb, path)?;
        assert_eq!(found.target, Target::Account("acme"), "{verb} {path}");
        Some(found.permissions.to_vec())
    }

    fn one(name: &'static str, access: Access) -> Option<Vec<(&'static str, Access)>> {
        Some(vec![(name, access)])
    }

    use Access::{Read, Write};

    #[test]
    fn permissions_are_sorted_and_unique() {
        for (table_name, table, _) in tables() {
            for entry in table {
                for perms in grants(entry) {
                    assert!(!perms.is_empty(), "{table_name}: {}", entry.pattern);
                    assert!(
                        perms.windows(2).all(|pair| pair[0].0 < pair[1].0),
                        "{table_name}: {} {perms:?}",
                        entry.pattern
                    );
                }
            }
        }
        let fixed = [CONTENTS_WRITE, CONTENTS_WORKFLOWS_WRITE];
        assert!(fixed
            .iter()
            .all(|perms| perms.windows(2).all(|pair| pair[0].0 < pair[1].0)));
    }

    #[test]
    fn permission_names_are_githubs() {
        for (table_name, table, names) in tables() {
            for entry in table {
                for perms in grants(entry) {
                    for (name, access) in perms {
                        assert!(
                            names.contains(name),
                            "{table_name}: {} uses {name}",
                            entry.pattern
                        );
                        // GitHub offers `workflows` only as write.
                        assert!(*name != "workflows" || *access == Write);
                        // No entry asks for admin: GitHub documents none of these with it.
                        assert!(*access != Access::Admin);
                    }
                }
            }
        }
    }

    #[test]
    fn patterns_are_well_formed_and_unique() {
        for (table_name, table, _) in tables() {
            for (i, entry) in table.iter().enumerate() {
                let pattern = entry.pattern;
                if !pattern.is_empty() {
                    assert!(
                        pattern.split('/').all(|part| !part.is_empty()),
                        "{table_name}: {pattern:?}"
                    );
                }
                let parsed: Vec<Part> = parts(pattern).collect();
                for (n, (part, text)) in parsed.iter().zip(pattern.split('/')).enumerate() {
                    match part {
                        Part::Literal(literal) => assert!(
                            !literal.contains(['{', '}', '*', ':', '%']),
                            "{table_name}: {pattern}"
                        ),
                        Part::Rest => {
                            assert_eq!(n + 1, parsed.len(), "{table_name}: {pattern}")
                        }
                        Part::Any | Part::Int => {
                            let name = text.trim_start_matches('{').trim_end_matches('}');
                            let name = name.strip_suffix(":int").unwrap_or(name);
                            assert!(
                                !name.is_empty()
                                    && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                                "{table_name}: {pattern}"
                            );
                        }
                    }
                }
                assert!(
                    matches!(entry.grant, Grant::Fixed(_)) || parsed.last() == Some(&Part::Rest),
                    "{table_name}: {pattern}"
                );
                for other in &table[..i] {
                    assert!(
                        !(other.verb == entry.verb && other.pattern == pattern),
                        "{table_name}: {:?} {pattern} twice",
                        entry.verb
                    );
                }
            }
        }
    }

    fn compatible(a: Part, b: Part) -> bool {
        match (a, b) {
            (Part::Literal(x), Part::Literal(y)) => x.eq_ignore_ascii_case(y),
            (Part::Literal(x), Part::Int) | (Part::Int, Part::Literal(x)) => is_digits(x),
            _ => true,
        }
    }

    /// Whether some path matches both patterns.
    fn overlap(a: &[Part], b: &[Part]) -> bool {
        match (a.split_first(), b.split_first()) {
            (None, None) => true,
            (Some((Part::Rest, _)), Some(_)) | (Some(_), Some((Part::Rest, _))) => true,
            (Some((x, a_rest)), Some((y, b_rest))) => compatible(*x, *y) && overlap(a_rest, b_rest),
            _ => false,
        }
    }

    #[test]
    fn overlapping_patterns_agree() {
        for (table_name, table, _) in tables() {
            for (i, entry) in table.iter().enumerate() {
                let parsed: Vec<Part> = parts(entry.pattern).collect();
                for other in &table[..i] {
                    let other_parsed: Vec<Part> = parts(other.pattern).collect();
                    if other.verb == entry.verb && overlap(&parsed, &other_parsed) {
                        assert_eq!(
                            other.grant, entry.grant,
                            "{table_name}: {:?} {} and {}",
                            entry.verb, other.pattern, entry.pattern
                        );
                    }
                }
            }
        }
    }

    /// A path for `pattern` with every parameter filled in.
    fn sample(prefix: &str, pattern: &str) -> String {
        let mut path = prefix.to_string();
        for part in parts(pattern) {
            path.push('/');
            path.push_str(match part {
                Part::Literal(text) => text,
                Part::Any => "x",
                Part::Int => "7",
                Part::Rest => "a/b",
            });
        }
        path
    }

    fn verb_name(verb: Verb) -> &'static str {
        match verb {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
        }
    }

    #[test]
    fn every_entry_is_reachable() {
        for entry in REPOSITORY {
            let verb = verb_name(entry.verb);
            for (prefix, target) in [
                (
                    "/repos/o/r",
                    Target::Repo {
                        owner: "o",
                        repo: "r",
                    },
                ),
                ("/repositories/42", Target::RepoId(42)),
            ] {
                let path = sample(prefix, entry.pattern);
                let found = need(verb, &path).unwrap_or_else(|| panic!("{verb} {path}"));
                assert_eq!(found.target, target);
                assert_eq!(Some(found.permissions), entry.grant.resolve(&["a", "b"]));
            }
        }
        for entry in ORGANIZATION {
            let verb = verb_name(entry.verb);
            let path = sample("/orgs/acme", entry.pattern);
            let found = need(verb, &path).unwrap_or_else(|| panic!("{verb} {path}"));
            assert_eq!(found.target, Target::Account("acme"));
            assert_eq!(Some(found.permissions), entry.grant.resolve(&[]));
        }
    }

    #[test]
    fn access_strings() {
        assert_eq!(Access::Read.as_str(), "read");
        assert_eq!(Access::Write.as_str(), "write");
        assert_eq!(Access::Admin.as_str(), "admin");
        assert!(Access::Read < Access::Write && Access::Write < Access::Admin);
    }

    #[test]
    fn repository_itself() {
        assert_eq!(repo("GET", "/repos/o/r"), one("metadata", Read));
        assert_eq!(repo("GET", "/repos/o/r/"), one("metadata", Read));
        assert_eq!(repo("PATCH", "/repos/o/r"), one("administration", Write));
        assert_eq!(repo("POST", "/repos/o/r"), None);
    }

    #[test]
    fn names_are_returned_as_written_and_literals_ignore_case() {
        let found = need("GET", "/Repos/Octo-Cat/Hello.World_2/ISSUES").unwrap();
        assert_eq!(
            found.target,
            Target::Repo {
                owner: "Octo-Cat",
                repo: "Hello.World_2"
            }
        );
        assert_eq!(found.permissions, &[("issues", Read)]);
        assert_eq!(
            repo("get", "/repos/o/r/Pulls/3/Files"),
            one("pull_requests", Read)
        );
        assert_eq!(
            repo("Delete", "/REPOS/o/r/KEYS/9"),
            one("administration", Write)
        );
    }

    #[test]
    fn issues() {
        assert_eq!(repo("GET", "/repos/o/r/issues"), one("issues", Read));
        assert_eq!(repo("GET", "/repos/o/r/issues/"), one("issues", Read));
        assert_eq!(repo("POST", "/repos/o/r/issues"), one("issues", Write));
        assert_eq!(repo("GET", "/repos/o/r/issues/12"), one("issues", Read));
        assert_eq!(repo("PATCH", "/repos/o/r/issues/12"), one("issues", Write));
        assert_eq!(
            repo("PUT", "/repos/o/r/issues/12/lock"),
            one("issues", Write)
        );
        assert_eq!(
            repo("DELETE", "/repos/o/r/issues/12/lock"),
            one("issues", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/issues/12/comments"),
            one("issues", Read)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/issues/12/comments"),
            one("issues", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/issues/comments"),
            one("issues", Read)
        );
        assert_eq!(
            repo("PATCH", "/repos/o/r/issues/comments/5"),
            one("issues", Write)
        );
        assert_eq!(
            repo("DELETE", "/repos/o/r/issues/comments/5"),
            one("issues", Write)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/issues/12/labels"),
            one("issues", Write)
        );
        assert_eq!(
            repo("PUT", "/repos/o/r/issues/12/labels"),
            one("issues", Write)
        );
        assert_eq!(
            repo("DELETE", "/repos/o/r/issues/12/labels/bug"),
            one("issues", Write)
        );
        assert_eq!(repo("GET", "/repos/o/r/labels"), one("issues", Read));
        assert_eq!(repo("POST", "/repos/o/r/labels"), one("issues", Write));
        assert_eq!(repo("PATCH", "/repos/o/r/labels/bug"), one("issues", Write));
        assert_eq!(repo("GET", "/repos/o/r/milestones"), one("issues", Read));
        assert_eq!(repo("POST", "/repos/o/r/milestones"), one("issues", Write));
        assert_eq!(
            repo("PATCH", "/repos/o/r/milestones/3"),
            one("issues", Write)
        );
        assert_eq!(repo("GET", "/repos/o/r/assignees"), one("issues", Read));
        assert_eq!(
            repo("GET", "/repos/o/r/assignees/octocat"),
            one("issues", Read)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/issues/12/assignees"),
            one("issues", Write)
        );
        assert_eq!(
            repo("DELETE", "/repos/o/r/issues/12/assignees"),
            one("issues", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/issues/12/timeline"),
            one("issues", Read)
        );
        // Integer parameters take digits only.
        assert_eq!(repo("GET", "/repos/o/r/issues/abc"), None);
        assert_eq!(repo("GET", "/repos/o/r/issues/-1"), None);
        // One segment too many.
        assert_eq!(repo("GET", "/repos/o/r/issues/1/comments/2/extra"), None);
        assert_eq!(repo("GET", "/repos/o/r/issues/12/comments/extra"), None);
    }

    #[test]
    fn pull_requests() {
        assert_eq!(repo("GET", "/repos/o/r/pulls"), one("pull_requests", Read));
        assert_eq!(
            repo("POST", "/repos/o/r/pulls"),
            one("pull_requests", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/pulls/4"),
            one("pull_requests", Read)
        );
        assert_eq!(
            repo("PATCH", "/repos/o/r/pulls/4"),
            one("pull_requests", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/pulls/4/merge"),
            one("pull_requests", Read)
        );
        assert_eq!(
            repo("PUT", "/repos/o/r/pulls/4/merge"),
            one("contents", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/pulls/4/files"),
            one("pull_requests", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/pulls/4/commits"),
            one("pull_requests", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/pulls/4/reviews"),
            one("pull_requests", Read)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/pulls/4/reviews"),
            one("pull_requests", Write)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/pulls/4/reviews/8/events"),
            one("pull_requests", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/pulls/4/comments"),
            one("pull_requests", Read)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/pulls/4/comments"),
            one("pull_requests", Write)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/pulls/4/comments/9/replies"),
            one("pull_requests", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/pulls/comments"),
            one("pull_requests", Read)
        );
        assert_eq!(
            repo("PATCH", "/repos/o/r/pulls/comments/9"),
            one("pull_requests", Write)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/pulls/4/requested_reviewers"),
            one("pull_requests", Write)
        );
        assert_eq!(repo("DELETE", "/repos/o/r/pulls/4"), None);
    }

    #[test]
    fn contents() {
        assert_eq!(repo("GET", "/repos/o/r/contents"), one("contents", Read));
        assert_eq!(repo("GET", "/repos/o/r/contents/"), one("contents", Read));
        assert_eq!(
            repo("GET", "/repos/o/r/contents/README.md"),
            one("contents", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/contents/a/b/c.txt"),
            one("contents", Read)
        );
        assert_eq!(
            repo("PUT", "/repos/o/r/contents/a/b/c.txt"),
            one("contents", Write)
        );
        assert_eq!(
            repo("DELETE", "/repos/o/r/contents/a/b/c.txt"),
            one("contents", Write)
        );
        assert_eq!(repo("PUT", "/repos/o/r/contents"), None);
        assert_eq!(repo("POST", "/repos/o/r/contents/a.txt"), None);
    }

    #[test]
    fn workflow_files_need_workflows() {
        let both = Some(vec![("contents", Write), ("workflows", Write)]);
        assert_eq!(
            repo("PUT", "/repos/o/r/contents/.github/workflows/ci.yml"),
            both
        );
        assert_eq!(
            repo("DELETE", "/repos/o/r/contents/.github/workflows/ci.yml"),
            both
        );
        assert_eq!(
            repo("PUT", "/repos/o/r/contents/.github%2Fworkflows%2Fci.yml"),
            both
        );
        assert_eq!(
            repo("PUT", "/repos/o/r/contents/%2egithub/workflows/ci.yml"),
            both
        );
        // Reading a workflow file needs no more than contents.
        assert_eq!(
            repo("GET", "/repos/o/r/contents/.github/workflows/ci.yml"),
            one("contents", Read)
        );
        // Not workflow files: Git paths are case-sensitive.
        assert_eq!(
            repo("PUT", "/repos/o/r/contents/.GitHub/workflows/ci.yml"),
            one("contents", Write)
        );
        assert_eq!(
            repo("PUT", "/repos/o/r/contents/.github/ci.yml"),
            one("contents", Write)
        );
        assert_eq!(
            repo("PUT", "/repos/o/r/contents/docs/.github/workflows/ci.yml"),
            one("contents", Write)
        );
        // Cannot be judged.
        assert_eq!(repo("PUT", "/repos/o/r/contents/a%zz"), None);
        assert_eq!(repo("PUT", "/repos/o/r/contents/a%2"), None);
        assert_eq!(
            repo("PUT", "/repos/o/r/contents/.github/workflows/%2E%2E/x.yml"),
            None
        );
        assert_eq!(repo("PUT", "/repos/o/r/contents/a%2F%2Fb"), None);
    }

    #[test]
    fn git_data_branches_commits_releases() {
        assert_eq!(
            repo("GET", "/repos/o/r/git/ref/heads/main"),
            one("contents", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/git/matching-refs/heads/feature"),
            one("contents", Read)
        );
        assert_eq!(repo("POST", "/repos/o/r/git/refs"), one("contents", Write));
        assert_eq!(
            repo("PATCH", "/repos/o/r/git/refs/heads/feature/x"),
            one("contents", Write)
        );
        assert_eq!(
            repo("DELETE", "/repos/o/r/git/refs/tags/v1"),
            one("contents", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/git/trees/abc123"),
            one("contents", Read)
        );
        assert_eq!(repo("POST", "/repos/o/r/git/trees"), one("contents", Write));
        assert_eq!(
            repo("GET", "/repos/o/r/git/blobs/abc123"),
            one("contents", Read)
        );
        assert_eq!(repo("POST", "/repos/o/r/git/blobs"), one("contents", Write));
        assert_eq!(
            repo("GET", "/repos/o/r/git/commits/abc123"),
            one("contents", Read)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/git/commits"),
            one("contents", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/git/tags/abc123"),
            one("contents", Read)
        );
        assert_eq!(repo("POST", "/repos/o/r/git/tags"), one("contents", Write));
        assert_eq!(repo("GET", "/repos/o/r/branches"), one("contents", Read));
        assert_eq!(
            repo("GET", "/repos/o/r/branches/main"),
            one("contents", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/branches/feature%2Fx"),
            one("contents", Read)
        );
        assert_eq!(repo("GET", "/repos/o/r/branches/feature/x"), None);
        assert_eq!(repo("GET", "/repos/o/r/commits"), one("contents", Read));
        assert_eq!(
            repo("GET", "/repos/o/r/commits/abc123"),
            one("contents", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/compare/main...feature/x"),
            one("contents", Read)
        );
        assert_eq!(repo("GET", "/repos/o/r/releases"), one("contents", Read));
        assert_eq!(repo("POST", "/repos/o/r/releases"), one("contents", Write));
        assert_eq!(
            repo("GET", "/repos/o/r/releases/latest"),
            one("contents", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/releases/tags/v1.0"),
            one("contents", Read)
        );
        assert_eq!(repo("GET", "/repos/o/r/releases/5"), one("contents", Read));
        assert_eq!(
            repo("PATCH", "/repos/o/r/releases/5"),
            one("contents", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/releases/5/assets"),
            one("contents", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/releases/assets/6"),
            one("contents", Read)
        );
        assert_eq!(
            repo("DELETE", "/repos/o/r/releases/assets/6"),
            one("contents", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/tarball/main"),
            one("contents", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/zipball/v1.0"),
            one("contents", Read)
        );
        assert_eq!(repo("GET", "/repos/o/r/readme"), one("contents", Read));
    }

    #[test]
    fn administration_keys_hooks_collaborators() {
        assert_eq!(repo("GET", "/repos/o/r/keys"), one("administration", Read));
        assert_eq!(
            repo("POST", "/repos/o/r/keys"),
            one("administration", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/keys/3"),
            one("administration", Read)
        );
        assert_eq!(
            repo("DELETE", "/repos/o/r/keys/3"),
            one("administration", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/hooks"),
            one("repository_hooks", Read)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/hooks"),
            one("repository_hooks", Write)
        );
        assert_eq!(
            repo("PATCH", "/repos/o/r/hooks/1/config"),
            one("repository_hooks", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/collaborators"),
            one("metadata", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/collaborators/u"),
            one("metadata", Read)
        );
        assert_eq!(
            repo("PUT", "/repos/o/r/collaborators/u"),
            one("administration", Write)
        );
        assert_eq!(
            repo("DELETE", "/repos/o/r/collaborators/u"),
            one("administration", Write)
        );
        assert_eq!(
            repo("PUT", "/repos/o/r/branches/main/protection"),
            one("administration", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/branches/main/protection"),
            one("administration", Read)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/actions/runners/registration-token"),
            one("administration", Write)
        );
        assert_eq!(repo("GET", "/repos/o/r/topics"), one("metadata", Read));
        assert_eq!(
            repo("PUT", "/repos/o/r/topics"),
            one("administration", Write)
        );
        for listing in ["languages", "contributors", "tags", "forks", "stargazers"] {
            let path = format!("/repos/o/r/{listing}");
            assert_eq!(repo("GET", &path), one("metadata", Read), "{path}");
        }
        // The page names two permissions without saying whether both are needed.
        assert_eq!(repo("POST", "/repos/o/r/forks"), None);
        assert_eq!(repo("POST", "/repos/o/r/pages"), None);
    }

    #[test]
    fn actions() {
        assert_eq!(
            repo("GET", "/repos/o/r/actions/workflows"),
            one("actions", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/actions/workflows/ci.yml"),
            one("actions", Read)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/actions/workflows/ci.yml/dispatches"),
            one("actions", Write)
        );
        assert_eq!(repo("GET", "/repos/o/r/actions/runs"), one("actions", Read));
        assert_eq!(
            repo("GET", "/repos/o/r/actions/runs/77"),
            one("actions", Read)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/actions/runs/77/rerun"),
            one("actions", Write)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/actions/runs/77/cancel"),
            one("actions", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/actions/runs/77/logs"),
            one("actions", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/actions/artifacts"),
            one("actions", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/actions/artifacts/5/zip"),
            one("actions", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/actions/jobs/9/logs"),
            one("actions", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/actions/secrets"),
            one("secrets", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/actions/secrets/public-key"),
            one("secrets", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/actions/secrets/TOKEN"),
            one("secrets", Read)
        );
        assert_eq!(
            repo("PUT", "/repos/o/r/actions/secrets/TOKEN"),
            one("secrets", Write)
        );
        assert_eq!(
            repo("DELETE", "/repos/o/r/actions/secrets/TOKEN"),
            one("secrets", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/actions/variables"),
            one("actions_variables", Read)
        );
        assert_eq!(
            repo("PATCH", "/repos/o/r/actions/variables/V"),
            one("actions_variables", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/dependabot/secrets"),
            one("dependabot_secrets", Read)
        );
        assert_eq!(
            repo("PUT", "/repos/o/r/dependabot/secrets/NPM"),
            one("dependabot_secrets", Write)
        );
    }

    #[test]
    fn environments_statuses_checks_deployments_pages() {
        assert_eq!(repo("GET", "/repos/o/r/environments"), one("actions", Read));
        assert_eq!(
            repo("PUT", "/repos/o/r/environments/prod"),
            one("administration", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/environments/prod/secrets"),
            one("environments", Read)
        );
        assert_eq!(
            repo("PUT", "/repos/o/r/environments/prod/secrets/KEY"),
            one("environments", Write)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/environments/prod/variables"),
            one("environments", Write)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/statuses/abc123"),
            one("statuses", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/commits/main/status"),
            one("statuses", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/commits/main/statuses"),
            one("statuses", Read)
        );
        assert_eq!(repo("POST", "/repos/o/r/check-runs"), one("checks", Write));
        assert_eq!(
            repo("PATCH", "/repos/o/r/check-runs/3"),
            one("checks", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/commits/main/check-runs"),
            one("checks", Read)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/check-suites/3"),
            one("checks", Read)
        );
        assert_eq!(
            repo("PATCH", "/repos/o/r/check-suites/preferences"),
            one("checks", Write)
        );
        assert_eq!(
            repo("GET", "/repos/o/r/deployments"),
            one("deployments", Read)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/deployments"),
            one("deployments", Write)
        );
        assert_eq!(
            repo("POST", "/repos/o/r/deployments/2/statuses"),
            one("deployments", Write)
        );
        assert_eq!(repo("GET", "/repos/o/r/pages"), one("pages", Read));
        assert_eq!(repo("POST", "/repos/o/r/pages/builds"), one("pages", Write));
    }

    #[test]
    fn repository_by_id() {
        let found = need("GET", "/repositories/123/issues").unwrap();
        assert_eq!(found.target, Target::RepoId(123));
        assert_eq!(found.permissions, &[("issues", Read)]);
        let found = need("PUT", "/repositories/123/contents/.github/workflows/a.yml").unwrap();
        assert_eq!(found.target, Target::RepoId(123));
        assert_eq!(found.permissions, CONTENTS_WORKFLOWS_WRITE);
        assert_eq!(
            need("GET", "/repositories/123").map(|n| n.permissions),
            Some(METADATA_READ)
        );
        assert_eq!(need("GET", "/repositories/12a/issues"), None);
        assert_eq!(need("GET", "/repositories/+12/issues"), None);
        assert_eq!(need("GET", "/repositories/0/issues"), None);
        assert_eq!(
            need("GET", "/repositories/99999999999999999999999/issues"),
            None
        );
        assert_eq!(need("GET", "/repositories"), None);
    }

    #[test]
    fn organizations() {
        assert_eq!(org("GET", "/orgs/acme/members"), one("members", Read));
        assert_eq!(org("GET", "/orgs/acme/members/u"), one("members", Read));
        assert_eq!(org("DELETE", "/orgs/acme/members/u"), one("members", Write));
        assert_eq!(
            org("PUT", "/orgs/acme/memberships/u"),
            one("members", Write)
        );
        assert_eq!(
            org("GET", "/orgs/acme/actions/secrets"),
            one("organization_secrets", Read)
        );
        assert_eq!(
            org("PUT", "/orgs/acme/actions/secrets/TOKEN"),
            one("organization_secrets", Write)
        );
        assert_eq!(
            org("PUT", "/orgs/acme/actions/secrets/TOKEN/repositories/5"),
            None
        );
        assert_eq!(
            org("GET", "/orgs/acme/hooks"),
            one("organization_hooks", Read)
        );
        assert_eq!(
            org("POST", "/orgs/acme/hooks"),
            one("organization_hooks", Write)
        );
        assert_eq!(
            org("POST", "/orgs/acme/actions/runners/registration-token"),
            one("organization_self_hosted_runners", Write)
        );
        assert_eq!(
            org("GET", "/orgs/acme/actions/variables"),
            one("organization_actions_variables", Read)
        );
        assert_eq!(
            org("PUT", "/orgs/acme/dependabot/secrets/NPM"),
            one("organization_dependabot_secrets", Write)
        );
        assert_eq!(org("GET", "/orgs/acme"), None);
        assert_eq!(org("GET", "/orgs/acme/repos"), None);
        assert_eq!(need("GET", "/orgs"), None);
    }

    #[test]
    fn unknown_or_malformed_calls_are_refused() {
        assert_eq!(need("GET", "/repos/o"), None);
        assert_eq!(need("GET", "/repos/o/"), None);
        assert_eq!(need("GET", "/repos"), None);
        assert_eq!(need("GET", "/"), None);
        assert_eq!(need("GET", ""), None);
        assert_eq!(need("GET", "repos/o/r/issues"), None);
        assert_eq!(need("GET", "/repos/o/r/unknown"), None);
        assert_eq!(need("GET", "/repos/o/r/issues//1"), None);
        assert_eq!(
            need("GET", "/repos/o/r/issues/").map(|n| n.permissions),
            Some(ISSUES_READ)
        );
        assert_eq!(need("GET", "/repos/o/r/issues//"), None);
        assert_eq!(need("GET", "/repos/o/r/../x/issues"), None);
        assert_eq!(need("GET", "/repos/o/./r"), None);
        assert_eq!(need("GET", "/repos/o/r/issues?state=open"), None);
        assert_eq!(need("GET", "/repos/o/r/issues#x"), None);
        assert_eq!(need("GET", "/repos/o%2Fx/r/issues"), None);
        assert_eq!(need("GET", "/repos/o/r%20s/issues"), None);
        assert_eq!(
            need("GET", &format!("/repos/o/{}/issues", "r".repeat(101))),
            None
        );
        assert_eq!(need("GET", "/users/u/repos"), None);
        assert_eq!(need("GET", "/user/repos"), None);
        assert_eq!(need("GET", "/api/v3/repos/o/r/issues"), None);
        assert_eq!(need("HEAD", "/repos/o/r/issues"), None);
        assert_eq!(need("OPTIONS", "/repos/o/r/issues"), None);
        assert_eq!(need("TRACE", "/repos/o/r"), None);
        assert_eq!(need("PUT", "/repos/o/r/issues"), None);
    }
}
