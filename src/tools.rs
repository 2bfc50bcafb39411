//! The tools of one configuration snapshot at run time: each with its credential provider
//! and its pooled upstream client, found by name or by the host an agent addressed.

use crate::clock::Clock;
use crate::config::{ProviderSpec, Snapshot, Tool};
use crate::credentials::oauth2::Minter;
use crate::credentials::{
    AwsProvider, GithubAppProvider, MintedJwt, OAuth2Provider, Provider, Signer, StaticSecret,
};
use crate::http_client::{build_client, HttpClient};
use std::collections::HashMap;
use std::sync::Arc;

/// A tool with its credential provider and its pooled upstream client.
pub struct ToolRuntime {
    pub tool: Arc<Tool>,
    pub provider: Provider,
    pub client: HttpClient,
}

/// Every tool of a snapshot, by name and by host.
#[derive(Default)]
pub struct ToolSet {
    pub by_name: HashMap<Arc<str>, Arc<ToolRuntime>>,
    /// By host (lowercase, no port): the tools it selects.
    pub by_host: HashMap<String, HostTools>,
    /// Hosts the forward proxy tunnels blind (`host:port`), by the tool that declared them.
    pub by_tunnel_host: HashMap<String, Arc<ToolRuntime>>,
}

/// The tools one host selects: by path prefix where several share the host, and one for
/// every other path.
#[derive(Default)]
pub struct HostTools {
    /// Longest prefix first.
    by_prefix: Vec<(String, Arc<ToolRuntime>)>,
    rest: Option<Arc<ToolRuntime>>,
}

impl HostTools {
    /// The tool for a canonical path: the longest prefix it falls under (whole segments,
    /// ASCII case ignored, so `/Billing/x` cannot fall through to another tool), else the
    /// host's tool for every other path.
    pub fn tool_for(&self, path: &str) -> Option<&Arc<ToolRuntime>> {
        self.by_prefix
            .iter()
            .find(|(prefix, _)| under(path, prefix))
            .map(|(_, tool)| tool)
            .or(self.rest.as_ref())
    }
}

/// Whether canonical `path` is `prefix` or below it, segment by segment, ASCII case
/// ignored, and each path segment read without its `;` parameters (`/billing;v=1/x` is
/// under `/billing` for the servers that drop them, so it must be here too).
fn under(path: &str, prefix: &str) -> bool {
    let mut segs = path.split('/').skip(1);
    prefix.split('/').skip(1).all(|want| {
        segs.next().is_some_and(|seg| {
            let bare = seg.split(';').next().unwrap_or(seg);
            bare.eq_ignore_ascii_case(want)
        })
    })
}

impl ToolSet {
    /// Builds each tool's provider and client. A provider that cannot load its credential
    /// (a static secret that is missing) is logged, and that tool answers
    /// `credential_unavailable` until it loads.
    pub fn build(
        snapshot: &Snapshot,
        signer: &Arc<Signer>,
        clock: &Clock,
    ) -> Result<ToolSet, String> {
        let mut set = ToolSet::default();
        for tool in snapshot.tools.by_name.values() {
            let provider = match &tool.credential.provider {
                ProviderSpec::Static {
                    source,
                    credential_id,
                } => {
                    let p = StaticSecret::new(
                        source.clone(),
                        tool.credential.inject.clone(),
                        credential_id.clone(),
                    );
                    if let Err(e) = p.status() {
                        tracing::error!(tool = %tool.name, "static credential unavailable (calls to this tool fail until it loads): {e}");
                    }
                    Provider::Static(p)
                }
                ProviderSpec::Jwt {
                    scope,
                    audience,
                    ttl,
                    reuse,
                } => Provider::Jwt(
                    MintedJwt::new(
                        signer.clone(),
                        snapshot.signing.issuer.clone(),
                        audience.clone(),
                        scope.clone(),
                        *ttl,
                        *reuse,
                        tool.credential.inject.clone(),
                    )
                    .with_clock(clock.clone()),
                ),
                ProviderSpec::Aws(spec) => {
                    // STS is called with the system's roots (never the tool's CA file).
                    let sts = build_client(None, tool.connect_timeout)?;
                    let p = AwsProvider::new(spec.clone(), sts, clock.clone());
                    if let Err(e) = p.status() {
                        tracing::error!(tool = %tool.name, "AWS base key unavailable (calls to this tool fail until it can be read): {e}");
                    }
                    Provider::Aws(Box::new(p))
                }
                ProviderSpec::OAuth2(spec) => {
                    // The token endpoint is trusted as the tool is (its CA file, if any).
                    let http = build_client(tool.ca_file.as_deref(), tool.connect_timeout)?;
                    let minter = Arc::new(Minter {
                        signer: signer.clone(),
                        issuer: snapshot.signing.issuer.clone(),
                    });
                    let p = OAuth2Provider::new(
                        spec.clone(),
                        tool.credential.inject.clone(),
                        http,
                        clock.clone(),
                        minter,
                    )
                    .map_err(|e| format!("tool {}: {e}", tool.name))?;
                    if let Err(e) = p.status() {
                        tracing::error!(tool = %tool.name, "OAuth2 client secret unavailable (calls to this tool fail until it can be read): {e}");
                    }
                    Provider::OAuth2(Box::new(p))
                }
                ProviderSpec::GithubApp(spec) => {
                    let http = build_client(tool.ca_file.as_deref(), tool.connect_timeout)?;
                    let p = GithubAppProvider::new(
                        spec.clone(),
                        tool.credential.inject.clone(),
                        http,
                        clock.clone(),
                    )
                    .map_err(|e| format!("tool {}: {e}", tool.name))?;
                    Provider::GithubApp(Box::new(p))
                }
            };
            let client = build_client(tool.ca_file.as_deref(), tool.connect_timeout)?;
            let rt = Arc::new(ToolRuntime {
                tool: tool.clone(),
                provider,
                client,
            });
            for h in &tool.hosts {
                let (host, prefix) = match h.find('/') {
                    Some(i) => (&h[..i], Some(&h[i..])),
                    None => (h.as_str(), None),
                };
                let entry = set.by_host.entry(host.to_string()).or_default();
                match prefix {
                    Some(p) => entry.by_prefix.push((p.to_string(), rt.clone())),
                    None => entry.rest = Some(rt.clone()),
                }
            }
            for h in &tool.tunnel_hosts {
                set.by_tunnel_host.insert(h.clone(), rt.clone());
            }
            set.by_name.insert(tool.name.clone(), rt);
        }
        for h in set.by_host.values_mut() {
            h.by_prefix.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn a_path_is_under_a_prefix_by_whole_segments_without_parameters() {
        for (path, yes) in [
            ("/repos/acme-secure", true),
            ("/repos/acme-secure/app", true),
            ("/REPOS/Acme-Secure/app", true),
            ("/repos/acme-secure;x/app", true),
            ("/repos;/acme-secure/app", true),
            ("/repos/acme-secure/", true),
            ("/repos/acme-secure-not/app", false),
            ("/repos/acme", false),
            ("/repos", false),
            ("/", false),
            ("/other/repos/acme-secure", false),
        ] {
            assert_eq!(under(path, "/repos/acme-secure"), yes, "{path}");
        }
    }
}
