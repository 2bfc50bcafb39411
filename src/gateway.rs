//! The running gateway: the compiled configuration plus everything built from it once at
//! start (issuer keys, credential providers, upstream clients, the audit writer). Phases
//! read it; nothing in it changes per request except the caches inside.

use crate::config::{ProviderSpec, SecretSource, Snapshot, Tool};
use crate::credentials::{MintedJwt, Provider, Signer, StaticSecret};
use crate::pipeline::forward::{build_client, HttpClient};
use crate::pipeline::identify::Identifier;
use crate::telemetry::audit_log::AuditLog;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A tool with its credential provider and its pooled upstream client.
pub struct ToolRuntime {
    pub tool: Arc<Tool>,
    pub provider: Provider,
    pub client: HttpClient,
}

pub struct Gateway {
    pub snapshot: Arc<Snapshot>,
    pub identifier: Identifier,
    pub tools_by_name: HashMap<Arc<str>, Arc<ToolRuntime>>,
    pub tools_by_host: HashMap<String, Arc<ToolRuntime>>,
    pub signer: Arc<Signer>,
    /// `/.well-known/jwks.json`, serialized once.
    pub jwks_document: Bytes,
    pub audit: AuditLog,
    id_prefix: String,
    id_counter: AtomicU64,
}

impl Gateway {
    /// Builds the gateway: loads keys and secrets, opens the audit log, starts the
    /// background refreshers. Problems that leave a tool unusable (a static secret that
    /// is missing) are logged, and that tool answers `credential_unavailable`; problems
    /// that leave nothing usable (the signing key, the audit log) are errors.
    pub async fn start(snapshot: Snapshot) -> Result<Arc<Gateway>, String> {
        let snapshot = Arc::new(snapshot);
        for issuer in &snapshot.identity.issuers {
            if let Some(key) = &issuer.dev_signing_key {
                crate::dev::ensure_dev_issuer(issuer, key)?;
            }
        }
        let signer = Arc::new(Signer::load_or_generate(
            &snapshot.signing.key_file,
            snapshot.signing.algorithm,
            snapshot.signing.generated,
        )?);
        let identifier = Identifier::new(&snapshot.identity)?;
        for (name, e) in identifier.load_keys().await {
            tracing::error!(issuer = %name, "cannot load the issuer's keys (its tokens are refused until they load): {e}");
        }
        let mut tools_by_name = HashMap::new();
        let mut tools_by_host = HashMap::new();
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
                } => Provider::Jwt(MintedJwt::new(
                    signer.clone(),
                    snapshot.signing.issuer.clone(),
                    audience.clone(),
                    scope.clone(),
                    *ttl,
                    tool.credential.inject.clone(),
                )),
            };
            let client = build_client(tool.ca_file.as_deref(), tool.connect_timeout)?;
            let rt = Arc::new(ToolRuntime {
                tool: tool.clone(),
                provider,
                client,
            });
            for h in &tool.hosts {
                tools_by_host.insert(h.clone(), rt.clone());
            }
            tools_by_name.insert(tool.name.clone(), rt);
        }
        let audit = AuditLog::open(&snapshot.audit).await?;
        let jwks_document = Bytes::from(crate::credentials::signer::jwks_document([&*signer]));
        let gw = Arc::new(Gateway {
            snapshot,
            identifier,
            tools_by_name,
            tools_by_host,
            signer,
            jwks_document,
            audit,
            id_prefix: format!("{:08x}", rand_u32()),
            id_counter: AtomicU64::new(0),
        });
        spawn_refreshers(&gw);
        Ok(gw)
    }

    /// A request id, unique within this process and, by its random prefix, across replicas.
    pub fn next_request_id(&self) -> Arc<str> {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:010}", self.id_prefix).into()
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u32::from_le_bytes(b)
}

/// Background work: refresh issuer keys, re-read rotated secret files. Each task ends
/// when the gateway is dropped.
fn spawn_refreshers(gw: &Arc<Gateway>) {
    for (i, _) in gw.identifier.issuers.iter().enumerate() {
        let weak: Weak<Gateway> = Arc::downgrade(gw);
        tokio::spawn(async move {
            loop {
                let issuer = match weak.upgrade() {
                    Some(gw) => gw.identifier.issuers[i].clone(),
                    None => return,
                };
                issuer.wait_for_refresh().await;
                let Some(gw) = weak.upgrade() else { return };
                match issuer.refresh().await {
                    Ok(true) => {
                        tracing::info!(issuer = %issuer.settings.name, "issuer keys changed");
                        gw.identifier.invalidate_tokens();
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(issuer = %issuer.settings.name, "keeping the current keys: {e}")
                    }
                }
            }
        });
    }
    let has_files = gw.tools_by_name.values().any(|t| {
        matches!(&t.provider, Provider::Static(s) if matches!(s.source(), SecretSource::File(_)))
    });
    if has_files {
        let weak = Arc::downgrade(gw);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let Some(gw) = weak.upgrade() else { return };
                for t in gw.tools_by_name.values() {
                    if let Provider::Static(s) = &t.provider {
                        if matches!(s.source(), SecretSource::File(_)) && s.reload() {
                            match s.status() {
                                Ok(()) => {
                                    tracing::info!(tool = %t.tool.name, "static credential reloaded")
                                }
                                Err(e) => {
                                    tracing::error!(tool = %t.tool.name, "static credential unavailable: {e}")
                                }
                            }
                        }
                    }
                }
            }
        });
    }
}
