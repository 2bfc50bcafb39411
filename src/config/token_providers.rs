//! The credential sections of the providers that ask someone else for a token on a call's
//! behalf: `oauth2` (an authorization server's token endpoint) and `github_app` (GitHub's
//! installation access tokens).

use super::check::{Checker, SecretSource};
use super::file::{CredentialEntry, OperationCredentialEntry};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// An `oauth2` tool: which token endpoint keygate asks, as which client, and what each
/// operation's token is scoped to.
#[derive(Debug)]
pub struct OAuth2Spec {
    pub token_endpoint: http::Uri,
    /// RFC 7009: where the tokens issued for a task are revoked when it ends.
    pub revocation_endpoint: Option<http::Uri>,
    pub client_id: String,
    pub client_auth: ClientAuthSpec,
    pub grant: Grant,
    /// What an operation without its own entry asks for.
    pub default: TokenScope,
    /// By operation name: each field not set there is the default's.
    pub operations: BTreeMap<String, TokenScope>,
}

impl OAuth2Spec {
    /// What the token of `operation` is asked for: its own entry's fields, else the
    /// tool's. None: no scope is configured for it (keygate then refuses the call rather
    /// than ask for whatever the server gives by default).
    pub fn scope_for(&self, operation: &str) -> Option<TokenScope> {
        let own = self.operations.get(operation);
        let pick = |f: fn(&TokenScope) -> &Option<String>| {
            own.and_then(|o| f(o).clone())
                .or_else(|| f(&self.default).clone())
        };
        let scope = TokenScope {
            scope: pick(|s| &s.scope),
            audience: pick(|s| &s.audience),
            resource: pick(|s| &s.resource),
        };
        scope.scope.is_some().then_some(scope)
    }
}

/// How keygate authenticates to the token endpoint as its client.
#[derive(Debug, Clone)]
pub enum ClientAuthSpec {
    /// `client_secret_basic`: HTTP Basic with the client id and secret.
    SecretBasic(SecretSource),
    /// `client_secret_post`: the id and secret as form parameters.
    SecretPost(SecretSource),
    /// `private_key_jwt` (RFC 7523): a client assertion signed with this key.
    PrivateKeyJwt {
        key_file: PathBuf,
        key_id: Option<String>,
    },
}

impl ClientAuthSpec {
    pub fn name(&self) -> &'static str {
        match self {
            ClientAuthSpec::SecretBasic(_) => "client_secret_basic",
            ClientAuthSpec::SecretPost(_) => "client_secret_post",
            ClientAuthSpec::PrivateKeyJwt { .. } => "private_key_jwt",
        }
    }
}

/// The grant keygate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// `client_credentials`: a token for keygate's client, narrowed to the operation.
    ClientCredentials,
    /// RFC 8693 token exchange: a token for the agent, acting through keygate.
    TokenExchange,
}

/// What one token is asked for. `scope = Some("")` asks for no scope explicitly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TokenScope {
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
}

/// GitHub App permissions, sorted by name: `[("issues", "read")]`.
pub type Permissions = Arc<[(String, String)]>;

/// A `github_app` tool: the App keygate acts as, and what each operation's installation
/// token may do beyond GitHub's own operations (which the catalog maps).
#[derive(Debug)]
pub struct GithubAppSpec {
    pub app_id: u64,
    pub private_key_file: PathBuf,
    pub installation_id: Option<u64>,
    /// Without `installation_id`: the accounts whose installations may be used.
    pub owners: Vec<String>,
    /// Where the App's calls go, without a trailing slash.
    pub api_url: String,
    pub default_permissions: Option<Permissions>,
    /// By operation name (the tool's own routes).
    pub operations: BTreeMap<String, Permissions>,
    /// How often the deploy keys are reconciled unasked (none: only when asked).
    pub reconcile_every: Option<std::time::Duration>,
    /// A record younger than this is never taken for gone.
    pub reconcile_grace: std::time::Duration,
    /// The repositories (`owner/name`) whose deploy keys a reconcile lists.
    pub reconcile_repositories: Vec<String>,
    /// How often deploy keys are retired at their review date unasked (none: only when
    /// asked).
    pub retire_every: Option<std::time::Duration>,
    /// How long before its review date a key's owner is notified.
    pub retire_notice: std::time::Duration,
    /// The scheduled passes only report what they would do.
    pub retire_dry_run: bool,
}

/// A URL keygate sends a credential to (a client secret, an assertion, the App JWT):
/// https, or http to the loopback interface only; no user or password in it.
fn http_url(c: &mut Checker, key: String, text: &str) -> Option<http::Uri> {
    let uri = match text.parse::<http::Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.authority().is_some()
                && u.query().is_none() =>
        {
            u
        }
        _ => {
            c.error(key, format!("{text:?} is not an http(s) URL"));
            return None;
        }
    };
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if authority.contains('@') {
        c.error(
            key,
            "must not hold a user or password: keygate authenticates on its own",
        );
        return None;
    }
    let host = uri.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if uri.scheme_str() != Some("https") && !loopback {
        c.error(
            key,
            "must be https (credentials are sent to it); http is allowed to the loopback interface only",
        );
        return None;
    }
    Some(uri)
}

fn scope_of(e: &OperationCredentialEntry) -> TokenScope {
    TokenScope {
        scope: e.scope.clone(),
        audience: e.audience.clone(),
        resource: e.resource.clone(),
    }
}

/// An `oauth2` tool's credential section.
pub(super) fn compile_oauth2(c: &mut Checker, key: &str, e: &CredentialEntry) -> OAuth2Spec {
    let token_endpoint = match &e.token_endpoint {
        Some(t) => http_url(c, format!("{key}.token_endpoint"), t),
        None => {
            c.error(
                format!("{key}.token_endpoint"),
                "is required for the oauth2 provider",
            );
            None
        }
    }
    .unwrap_or_else(|| http::Uri::from_static("http://invalid"));
    let revocation_endpoint = e
        .revocation_endpoint
        .as_ref()
        .and_then(|r| http_url(c, format!("{key}.revocation_endpoint"), r));
    let client_id = match &e.client_id {
        Some(id) if !id.is_empty() => id.clone(),
        _ => {
            c.error(
                format!("{key}.client_id"),
                "is required for the oauth2 provider",
            );
            String::new()
        }
    };
    let secret = |c: &mut Checker| match (&e.from_env, &e.from_file) {
        (Some(v), None) if !v.is_empty() => SecretSource::Env(v.clone()),
        (None, Some(p)) => SecretSource::File(c.path(p)),
        _ => {
            c.error(
                key.to_string(),
                "a client secret needs exactly one of from_env and from_file",
            );
            SecretSource::Env(String::new())
        }
    };
    let method = e.client_auth.as_deref().unwrap_or("client_secret_basic");
    let client_auth = match method {
        "client_secret_basic" | "client_secret_post" => {
            for (name, set) in [
                ("client_key_file", e.client_key_file.is_some()),
                ("client_key_id", e.client_key_id.is_some()),
            ] {
                if set {
                    c.error(
                        format!("{key}.{name}"),
                        "applies to client_auth = \"private_key_jwt\" only",
                    );
                }
            }
            let s = secret(c);
            if method == "client_secret_basic" {
                ClientAuthSpec::SecretBasic(s)
            } else {
                ClientAuthSpec::SecretPost(s)
            }
        }
        "private_key_jwt" => {
            if e.from_env.is_some() || e.from_file.is_some() {
                c.error(
                    key.to_string(),
                    "private_key_jwt signs with client_key_file: no client secret is read",
                );
            }
            match &e.client_key_file {
                Some(p) => ClientAuthSpec::PrivateKeyJwt {
                    key_file: c.path(p),
                    key_id: e.client_key_id.clone(),
                },
                None => {
                    c.error(
                        format!("{key}.client_key_file"),
                        "is required with client_auth = \"private_key_jwt\"",
                    );
                    ClientAuthSpec::SecretBasic(SecretSource::Env(String::new()))
                }
            }
        }
        other => {
            c.error(
                format!("{key}.client_auth"),
                format!("{other:?} is not one of \"client_secret_basic\", \"client_secret_post\", \"private_key_jwt\""),
            );
            ClientAuthSpec::SecretBasic(SecretSource::Env(String::new()))
        }
    };
    let grant = match e.grant.as_deref().unwrap_or("client_credentials") {
        "client_credentials" => Grant::ClientCredentials,
        "token_exchange" => Grant::TokenExchange,
        other => {
            c.error(
                format!("{key}.grant"),
                format!("{other:?} is not one of \"client_credentials\", \"token_exchange\""),
            );
            Grant::ClientCredentials
        }
    };
    let mut operations = BTreeMap::new();
    for (name, op) in &e.operations {
        if op.permissions.is_some() {
            c.error(
                format!("{key}.operations.{name}.permissions"),
                "applies to the github_app provider only",
            );
        }
        operations.insert(name.clone(), scope_of(op));
    }
    OAuth2Spec {
        token_endpoint,
        revocation_endpoint,
        client_id,
        client_auth,
        grant,
        default: TokenScope {
            scope: e.scope.clone(),
            audience: e.audience.clone(),
            resource: e.resource.clone(),
        },
        operations,
    }
}

/// GitHub App permissions as configured: names of lowercase letters and underscores,
/// levels read, write or admin.
fn permissions(
    c: &mut Checker,
    key: String,
    map: &BTreeMap<String, String>,
) -> Option<Permissions> {
    let mut out = Vec::new();
    for (name, level) in map {
        let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !name_ok {
            c.error(
                format!("{key}.{name}"),
                "is not a GitHub App permission name (such as \"issues\" or \"pull_requests\")",
            );
            continue;
        }
        if !matches!(level.as_str(), "read" | "write" | "admin") {
            c.error(
                format!("{key}.{name}"),
                format!("{level:?} is not one of \"read\", \"write\", \"admin\""),
            );
            continue;
        }
        out.push((name.clone(), level.clone()));
    }
    if out.is_empty() {
        c.error(key, "names no permission");
        return None;
    }
    // A BTreeMap iterates sorted by name.
    Some(out.into())
}

/// A `github_app` tool's credential section. `upstream` is the tool's upstream URL.
pub(super) fn compile_github_app(
    c: &mut Checker,
    key: &str,
    e: &CredentialEntry,
    upstream: &str,
) -> GithubAppSpec {
    let app_id = e.app_id.unwrap_or_else(|| {
        c.error(
            format!("{key}.app_id"),
            "is required for the github_app provider",
        );
        0
    });
    let private_key_file = match &e.private_key_file {
        Some(p) => c.path(p),
        None => {
            c.error(
                format!("{key}.private_key_file"),
                "is required for the github_app provider",
            );
            PathBuf::new()
        }
    };
    if e.installation_id.is_none() && e.owners.is_empty() {
        c.error(
            format!("{key}.owners"),
            "set installation_id, or owners: the accounts whose installations of the App keygate may use",
        );
    }
    let api_url = e.api_url.as_deref().unwrap_or(upstream);
    http_url(c, format!("{key}.api_url"), api_url);
    let default_permissions = e
        .default_permissions
        .as_ref()
        .and_then(|m| permissions(c, format!("{key}.default_permissions"), m));
    let mut operations = BTreeMap::new();
    for (name, op) in &e.operations {
        let k = format!("{key}.operations.{name}");
        for (field, set) in [
            ("scope", op.scope.is_some()),
            ("audience", op.audience.is_some()),
            ("resource", op.resource.is_some()),
        ] {
            if set {
                c.error(
                    format!("{k}.{field}"),
                    "applies to the oauth2 provider only",
                );
            }
        }
        match &op.permissions {
            Some(m) => {
                if let Some(p) = permissions(c, format!("{k}.permissions"), m) {
                    operations.insert(name.clone(), p);
                }
            }
            None => c.error(format!("{k}.permissions"), "is required"),
        }
    }
    check_lifecycle(c, key, e);
    let mut reconcile_repositories = Vec::new();
    for r in &e.reconcile_repositories {
        match r.split_once('/') {
            Some((o, n)) if is_repo_name(o) && is_repo_name(n) => {
                reconcile_repositories.push(r.clone())
            }
            _ => c.error(
                format!("{key}.reconcile_repositories"),
                format!("{r:?} is not a repository such as \"octo/hello\""),
            ),
        }
    }
    GithubAppSpec {
        app_id,
        private_key_file,
        installation_id: e.installation_id,
        owners: e.owners.clone(),
        api_url: api_url.trim_end_matches('/').to_string(),
        default_permissions,
        operations,
        reconcile_every: e.reconcile_every,
        reconcile_grace: e.reconcile_grace.unwrap_or(AWS_RECONCILE_GRACE),
        reconcile_repositories,
        retire_every: e
            .retire_overdue
            .then(|| e.retire_every.unwrap_or(AWS_RETIRE_EVERY)),
        retire_notice: e.retire_notice.unwrap_or(AWS_RETIRE_NOTICE),
        retire_dry_run: e.retire_dry_run,
    }
}

/// How young a record is never taken for gone, unless configured.
pub const AWS_RECONCILE_GRACE: std::time::Duration = std::time::Duration::from_secs(600);
/// How often the retirement pass runs with `retire_overdue`, unless configured.
pub const AWS_RETIRE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// The notice and the grace of a retirement, unless configured.
pub const AWS_RETIRE_NOTICE: std::time::Duration = std::time::Duration::from_secs(7 * 86400);
pub const AWS_RETIRE_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 86400);
/// The shortest `reconcile_every`.
pub const AWS_MIN_RECONCILE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Checks the reconcile and retirement settings (aws and github_app alike).
pub(super) fn check_lifecycle(c: &mut Checker, key: &str, e: &CredentialEntry) {
    if e.reconcile_every
        .is_some_and(|d| d < AWS_MIN_RECONCILE_EVERY)
    {
        c.error(
            format!("{key}.reconcile_every"),
            "must be at least 1s (a reconcile lists every identity at the tool)",
        );
    }
    if e.retire_every.is_some_and(|d| d < AWS_MIN_RECONCILE_EVERY) {
        c.error(
            format!("{key}.retire_every"),
            "must be at least 1s (a retirement pass lists every identity at the tool)",
        );
    }
    if !e.retire_overdue {
        for (field, set) in [
            ("retire_every", e.retire_every.is_some()),
            ("retire_dry_run", e.retire_dry_run),
        ] {
            if set {
                c.error(
                    format!("{key}.{field}"),
                    "needs retire_overdue = true (it applies to the scheduled retirement)",
                );
            }
        }
    }
}

/// Whether a repository's owner or name is one GitHub allows.
fn is_repo_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, ProviderSpec};
    use std::path::Path;

    fn errors(credential: &str) -> Vec<(String, String)> {
        let text = format!(
            "[[tools]]\nname = \"t\"\nupstream = \"http://t.example\"\n[tools.credential]\n{credential}"
        );
        parse(Path::new("k.toml"), &text)
            .err()
            .map(|e| e.0.into_iter().map(|e| (e.key, e.message)).collect())
            .unwrap_or_default()
    }

    fn keys(credential: &str) -> Vec<String> {
        errors(credential).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn an_oauth2_section_needs_its_endpoint_client_and_secret() {
        let k = keys("provider = \"oauth2\"");
        for want in [
            "tools.t.credential.token_endpoint",
            "tools.t.credential.client_id",
            "tools.t.credential",
        ] {
            assert!(k.iter().any(|x| x == want), "{want} in {k:?}");
        }
        let k = keys(
            "provider = \"oauth2\"\ntoken_endpoint = \"ftp://x\"\nclient_id = \"c\"\nfrom_env = \"S\"\ngrant = \"password\"\nclient_auth = \"magic\"",
        );
        assert!(
            k.contains(&"tools.t.credential.token_endpoint".into()),
            "{k:?}"
        );
        assert!(k.contains(&"tools.t.credential.grant".into()), "{k:?}");
        assert!(
            k.contains(&"tools.t.credential.client_auth".into()),
            "{k:?}"
        );
        let k = keys(
            "provider = \"oauth2\"\ntoken_endpoint = \"https://as/token\"\nclient_id = \"c\"\nclient_auth = \"private_key_jwt\"",
        );
        assert_eq!(k, vec!["tools.t.credential.client_key_file".to_string()]);
    }

    #[test]
    fn fields_of_another_provider_are_refused() {
        let e = errors(
            "provider = \"static\"\nfrom_env = \"S\"\napp_id = 1\nscope = \"x\"\ntoken_endpoint = \"http://as\"",
        );
        let k: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert!(k.contains(&"tools.t.credential.app_id"), "{e:?}");
        assert!(k.contains(&"tools.t.credential.scope"), "{e:?}");
        assert!(k.contains(&"tools.t.credential.token_endpoint"), "{e:?}");
        assert!(
            e.iter()
                .any(|(k, m)| k.ends_with(".scope")
                    && m == "applies to the jwt, oauth2 providers only"),
            "{e:?}"
        );
        let k = keys("provider = \"jwt\"\nrole_arn = \"arn:aws:iam::1:role/r\"");
        assert_eq!(k, vec!["tools.t.credential.role_arn".to_string()]);
        let k = keys("provider = \"jwt\"\nreconcile_every = \"1h\"");
        assert_eq!(k, vec!["tools.t.credential.reconcile_every".to_string()]);
    }

    #[test]
    fn reconcile_every_is_at_least_a_second() {
        let keys = |every: &str| -> Vec<String> {
            let text = format!(
                "[[tools]]\nname = \"t\"\nkind = \"aws\"\nupstream = \"http://t.example\"\n\
                 [tools.credential]\nprovider = \"aws\"\nfrom_env = \"AWS\"\nreconcile_every = {every:?}\n"
            );
            parse(Path::new("k.toml"), &text)
                .err()
                .map(|e| e.0.into_iter().map(|e| e.key).collect())
                .unwrap_or_default()
        };
        assert!(keys("24h").is_empty(), "{:?}", keys("24h"));
        assert_eq!(
            keys("500ms"),
            vec!["tools.t.credential.reconcile_every".to_string()]
        );
    }

    #[test]
    fn retirement_settings_are_checked() {
        let aws = |extra: &str| -> Vec<String> {
            let text = format!(
                "[[tools]]\nname = \"t\"\nkind = \"aws\"\nupstream = \"http://t.example\"\n\
                 [tools.credential]\nprovider = \"aws\"\nfrom_env = \"AWS\"\n{extra}\n"
            );
            parse(Path::new("k.toml"), &text)
                .err()
                .map(|e| e.0.into_iter().map(|e| e.key).collect())
                .unwrap_or_default()
        };
        let ok = "retire_overdue = true\nretire_every = \"1h\"\nretire_notice = \"3d\"\nretire_grace = \"1d\"\nretire_dry_run = true";
        assert!(aws(ok).is_empty(), "{:?}", aws(ok));
        assert!(aws("retire_notice = \"3d\"").is_empty());
        assert_eq!(
            aws("retire_overdue = true\nretire_every = \"10ms\""),
            vec!["tools.t.credential.retire_every".to_string()]
        );
        assert_eq!(
            aws("retire_every = \"1h\"\nretire_dry_run = true"),
            vec![
                "tools.t.credential.retire_every".to_string(),
                "tools.t.credential.retire_dry_run".to_string()
            ]
        );
        let k = keys("provider = \"jwt\"\nretire_overdue = true");
        assert_eq!(k, vec!["tools.t.credential.retire_overdue".to_string()]);
        assert_eq!(
            aws("reconcile_repositories = [\"octo/hello\"]"),
            vec!["tools.t.credential.reconcile_repositories".to_string()]
        );
    }

    #[test]
    fn a_github_app_tool_is_reconciled_and_retired_without_a_grace() {
        let gh = |extra: &str| {
            keys(&format!(
                "provider = \"github_app\"\napp_id = 1\nprivate_key_file = \"app.pem\"\ninstallation_id = 2\napi_url = \"https://api.github.com\"\n{extra}"
            ))
        };
        let ok = "retire_overdue = true\nretire_every = \"1h\"\nretire_notice = \"3d\"\nretire_dry_run = true\n\
                  reconcile_every = \"1h\"\nreconcile_grace = \"1m\"\nreconcile_repositories = [\"octo/hello\", \"Octo/hello.js\"]";
        assert!(gh(ok).is_empty(), "{:?}", gh(ok));
        // A deploy key is deleted at once: there is no grace to configure.
        assert_eq!(
            gh("retire_grace = \"1d\""),
            vec!["tools.t.credential.retire_grace".to_string()]
        );
        for bad in ["octo", "octo/hello/x", "../x", "octo/"] {
            assert_eq!(
                gh(&format!("reconcile_repositories = [{bad:?}]")),
                vec!["tools.t.credential.reconcile_repositories".to_string()],
                "{bad}"
            );
        }
        let text = format!(
            "[[tools]]\nname = \"t\"\nupstream = \"http://t.example\"\n[tools.credential]\n\
             provider = \"github_app\"\napp_id = 1\nprivate_key_file = \"app.pem\"\ninstallation_id = 2\napi_url = \"https://api.github.com\"\n{ok}"
        );
        let snap = parse(Path::new("k.toml"), &text).unwrap();
        let ProviderSpec::GithubApp(spec) = &snap.tools.by_name["t"].credential.provider else {
            panic!("not github_app")
        };
        assert_eq!(spec.reconcile_repositories, ["octo/hello", "Octo/hello.js"]);
        assert_eq!(
            spec.retire_every,
            Some(std::time::Duration::from_secs(3600))
        );
        assert!(spec.retire_dry_run);
    }

    #[test]
    fn credentials_go_to_https_or_loopback_urls_without_user_info() {
        let base = "provider = \"oauth2\"\nclient_id = \"c\"\nfrom_env = \"S\"\nscope = \"\"\n";
        for (url, ok) in [
            ("https://as.example/token", true),
            ("http://127.0.0.1:8080/token", true),
            ("http://[::1]:8080/token", true),
            ("http://localhost/token", true),
            ("http://as.example/token", false),
            ("http://10.0.0.1/token", false),
            ("https://user:pw@as.example/token", false),
        ] {
            let k = keys(&format!("{base}token_endpoint = {url:?}"));
            assert_eq!(k.is_empty(), ok, "{url}: {k:?}");
        }
        let k = keys(
            "provider = \"github_app\"\napp_id = 1\nprivate_key_file = \"k.pem\"\ninstallation_id = 2\napi_url = \"http://ghe.example/api/v3\"",
        );
        assert_eq!(k, vec!["tools.t.credential.api_url".to_string()]);
    }

    #[test]
    fn github_permissions_are_checked() {
        let k = keys(
            "provider = \"github_app\"\napp_id = 1\nprivate_key_file = \"k.pem\"\ndefault_permissions = { Issues = \"read\", contents = \"all\" }\n[tools.credential.operations.x]\nscope = \"s\"",
        );
        for want in [
            "tools.t.credential.default_permissions.Issues",
            "tools.t.credential.default_permissions.contents",
            "tools.t.credential.default_permissions",
            "tools.t.credential.operations.x.scope",
            "tools.t.credential.operations.x.permissions",
        ] {
            assert!(k.iter().any(|x| x == want), "{want} in {k:?}");
        }
    }

    #[test]
    fn an_operation_takes_the_tools_scope_for_what_it_does_not_set() {
        let text = "[[tools]]\nname = \"t\"\nupstream = \"http://t.example\"\n[tools.credential]\nprovider = \"oauth2\"\ntoken_endpoint = \"https://as/token\"\nclient_id = \"c\"\nfrom_env = \"S\"\nscope = \"read\"\nresource = \"https://r\"\n[tools.credential.operations.w]\nscope = \"write\"\n";
        let snap = parse(Path::new("k.toml"), text).unwrap();
        let ProviderSpec::OAuth2(spec) = &snap.tools.by_name["t"].credential.provider else {
            panic!("not oauth2");
        };
        let w = spec.scope_for("w").unwrap();
        assert_eq!(w.scope.as_deref(), Some("write"));
        assert_eq!(w.resource.as_deref(), Some("https://r"));
        assert_eq!(
            spec.scope_for("other").unwrap().scope.as_deref(),
            Some("read")
        );
        let text = text.replace("scope = \"read\"\n", "");
        let snap = parse(Path::new("k.toml"), &text).unwrap();
        let ProviderSpec::OAuth2(spec) = &snap.tools.by_name["t"].credential.provider else {
            panic!("not oauth2");
        };
        assert!(spec.scope_for("other").is_none());
        assert!(spec.scope_for("w").is_some());
    }
}
