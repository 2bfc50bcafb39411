//! The running gateway.
//!
//! - [`Shared`]: what lives as long as the process, across reloads: the audit log, the
//!   store (approvals, inventory, suspensions), the suspended agents, keygate's signing
//!   key, the admin token, the clock by which approvals and tokens expire.
//! - [`Gateway`]: one configuration snapshot and everything built from it (issuer keys,
//!   credential providers, upstream clients, policies). Immutable but for caches.
//! - [`Runtime`]: the current gateway, swapped atomically on reload. A request keeps the
//!   gateway it started with, so a reload never disturbs requests in flight, and a reload
//!   that fails keeps the running gateway.

use crate::config::{SecretSource, Snapshot};
use crate::credentials::{Provider, Signer};
use crate::http_client::{build_client, HttpClient};
use crate::pipeline::identify::Identifier;
use crate::store::Store;
use crate::telemetry::audit_log::AuditLog;
use crate::tools::ToolSet;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Process-wide state that survives reloads.
pub struct Shared {
    pub audit: AuditLog,
    pub store: Arc<dyn Store>,
    /// Suspended agents, mirrored from the store: checked on every request.
    pub suspended: RwLock<HashSet<String>>,
    /// Bumped by every suspend and resume through this process, so a periodic sync that
    /// read the store before one of them does not undo it.
    pub suspensions_epoch: AtomicU64,
    pub signer: Arc<Signer>,
    /// `/.well-known/jwks.json`, serialized once.
    pub jwks_document: Bytes,
    /// The admin API's bearer token.
    pub admin_token: String,
    /// Client for webhooks.
    pub http: HttpClient,
    /// Wakes requests held for approval when a decision is made through the admin API.
    pub decisions: tokio::sync::Notify,
    /// Prometheus metrics of this runtime (the admin API's `/metrics`).
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// Rate limit of the approval webhook's notifications.
    pub webhooks: crate::pipeline::approve::WebhookLimiter,
    /// keygate's notion of now, by which approvals, minted tokens and verified agent
    /// tokens expire (the system clock; tests move it instead of sleeping).
    pub clock: crate::clock::Clock,
    /// AWS-style keys issued to agents (their ids; secrets derived, never stored).
    pub agent_keys: crate::pipeline::identify::aws_key::AgentKeys,
    /// Captured secrets (sealed) by handle, and the keys that seal them.
    pub vault: crate::capture::Vault,
    /// How fresh this replica's view of the store is.
    pub freshness: Freshness,
    /// This process among the replicas: its replica id and a random suffix (two replicas
    /// configured with the same id still tell their announcements apart).
    pub instance: String,
    /// What each agent normally does ([`crate::anomaly`]): loaded from the store at start;
    /// every `anomalies.flush_interval`, what other replicas learnt is merged in and what
    /// this one learnt is written back.
    pub baselines: crate::anomaly::Baselines,
    /// Where the next read of other replicas' baselines starts (a store cursor).
    baselines_read: std::sync::Mutex<Option<i64>>,
    /// Tasks (agents' just-in-time access), mirrored from the store.
    pub tasks: crate::tasks::Tasks,
    /// The counts of `shared` rate limits, across reloads.
    pub shared_limits: Arc<crate::pipeline::limit::SharedLimits>,
    /// Suspensions made here (an anomaly detector's) that the store has not recorded yet:
    /// kept in force over every re-read of the store until it has, or a human resumes
    /// the agent.
    pub unrecorded_suspensions: std::sync::Mutex<HashSet<String>>,
}

/// What a replica holds in memory from the store, each read on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    Suspensions = 0,
    AgentKeys = 1,
    Captured = 2,
    Tasks = 3,
}

/// How fresh this replica's view of the store is: for each [`Dataset`], when its last
/// successful read began and whether the last read failed. Checked on every call, so
/// atomics only. Only a store shared with other processes (PostgreSQL) can change behind
/// this process's back; with SQLite every change is made through this process and applied
/// in memory at once, so the view is always usable.
pub struct Freshness {
    started: std::time::Instant,
    shared_store: bool,
    read_ok_at: [AtomicU64; 4],
    failing: [std::sync::atomic::AtomicBool; 4],
}

/// How long one periodic read of the store may take before it counts as failed.
pub const STORE_READ_TIMEOUT: Duration = Duration::from_secs(2);

impl Freshness {
    pub fn new(shared_store: bool) -> Freshness {
        Freshness {
            started: std::time::Instant::now(),
            shared_store,
            read_ok_at: Default::default(),
            failing: Default::default(),
        }
    }

    /// Milliseconds since this process started (a monotonic clock: tests that move
    /// keygate's clock do not move this one).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A read of `d` that began at `began` ([`Freshness::now_ms`]) succeeded.
    pub fn read_ok(&self, d: Dataset, began: u64) {
        self.read_ok_at[d as usize].fetch_max(began, Ordering::AcqRel);
        self.failing[d as usize].store(false, Ordering::Release);
    }

    pub fn read_failed(&self, d: Dataset) {
        self.failing[d as usize].store(true, Ordering::Release);
    }

    /// Whether the last read of any dataset failed.
    pub fn is_failing(&self) -> bool {
        self.failing.iter().any(|f| f.load(Ordering::Acquire))
    }

    /// Whether a call may go through on this view: not once its oldest dataset is older
    /// than `max_staleness` while reads fail (or, with `OnUnavailable::Refuse`, as soon as
    /// one fails), and never once it is older than `max_staleness` plus one read's timeout,
    /// whatever the reads are doing.
    pub fn usable(&self, s: &crate::store::StoreSettings) -> bool {
        if !self.shared_store {
            return true;
        }
        let failing = self.is_failing();
        if failing && s.on_unavailable == crate::store::OnUnavailable::Refuse {
            return false;
        }
        let oldest = self
            .read_ok_at
            .iter()
            .map(|t| t.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        let age = self.now_ms().saturating_sub(oldest);
        let bound = u64::try_from(s.max_staleness.as_millis()).unwrap_or(u64::MAX);
        let hard = bound.saturating_add(STORE_READ_TIMEOUT.as_millis() as u64);
        !(age > hard || (failing && age > bound))
    }
}

impl Shared {
    /// Opens what the first snapshot names: audit log, store, signing key, admin token.
    pub async fn open(snapshot: &Snapshot) -> Result<Arc<Shared>, String> {
        let signer = Arc::new(Signer::load_or_generate(
            &snapshot.signing.key_file,
            snapshot.signing.algorithm,
            snapshot.signing.generated,
        )?);
        let mut nonce = [0u8; 6];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "cannot generate a random id".to_string())?;
        let instance = format!(
            "{}#{}",
            snapshot.server.replica_id,
            const_hex::encode(nonce)
        );
        let store = crate::store::open(&snapshot.store.backend, &instance)
            .await
            .map_err(|e| format!("{}: {e}", snapshot.store.backend))?;
        let suspended = store
            .suspensions()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|s| s.agent_id)
            .collect();
        crate::private_fs::create_dir_all(&snapshot.server.data_dir)
            .map_err(|e| format!("cannot create {}: {e}", snapshot.server.data_dir.display()))?;
        let agent_keys = crate::pipeline::identify::aws_key::AgentKeys::load_or_generate(
            &snapshot.server.data_dir.join("aws-agent-keys.key"),
        )?;
        agent_keys.set(&store.agent_keys().await.map_err(|e| e.to_string())?);
        let sealer =
            crate::capture::Sealer::load(&snapshot.capture.key, &snapshot.capture.previous)
                .map_err(|e| format!("capture key: {e}"))?;
        let vault = crate::capture::Vault::new(sealer);
        vault.set(store.captured().await.map_err(|e| e.to_string())?);
        let baselines = crate::anomaly::Baselines::default();
        let (stored, cursor) = store
            .baselines_changed(None)
            .await
            .map_err(|e| e.to_string())?;
        let tasks = crate::tasks::Tasks::default();
        let clock = crate::clock::Clock::default();
        baselines.merge(stored, clock.unix_millis());
        tasks.set_if_unchanged(
            store
                .tasks(clock.unix_millis() - crate::tasks::RETAIN_MS)
                .await
                .map_err(|e| e.to_string())?,
            0,
        );
        let audit = AuditLog::open_as(&snapshot.audit, Some(&snapshot.server.replica_id)).await?;
        let jwks_document = Bytes::from(crate::credentials::signer::jwks_document([&*signer]));
        Ok(Arc::new(Shared {
            audit,
            store,
            suspended: RwLock::new(suspended),
            suspensions_epoch: AtomicU64::new(0),
            signer,
            jwks_document,
            admin_token: admin_token(&snapshot.admin)?,
            http: build_client(None, Duration::from_secs(5))?,
            decisions: tokio::sync::Notify::new(),
            metrics: Arc::new(crate::telemetry::metrics::Metrics::new()),
            webhooks: Default::default(),
            clock,
            agent_keys,
            vault,
            freshness: Freshness::new(matches!(
                snapshot.store.backend,
                crate::store::Backend::Postgres(_)
            )),
            instance,
            baselines,
            baselines_read: std::sync::Mutex::new(Some(cursor)),
            tasks,
            shared_limits: Default::default(),
            unrecorded_suspensions: Default::default(),
        }))
    }

    /// Merges in the baselines other replicas wrote since the last read, then writes the
    /// ones that changed here (or hold what the stored one lacks) to the store; on
    /// failure they stay to be written.
    pub async fn sync_baselines(&self) {
        let since = *crate::locks::lock(&self.baselines_read);
        match self.store.baselines_changed(since).await {
            Ok((rows, next)) => {
                let learnt = self.baselines.merge(rows, self.clock.unix_millis());
                if learnt > 0 {
                    tracing::debug!(agents = learnt, "baselines learnt from other replicas");
                }
                *crate::locks::lock(&self.baselines_read) = Some(next);
            }
            Err(e) => {
                tracing::warn!("cannot read other replicas' baselines (next time): {e}")
            }
        }
        self.flush_baselines().await;
    }

    /// Writes the baselines that changed to the store; on failure they stay to be written.
    pub async fn flush_baselines(&self) {
        let rows = self.baselines.take_dirty();
        if rows.is_empty() {
            return;
        }
        let now = self.clock.unix_millis();
        if let Err(e) = self.store.save_baselines(&rows, now).await {
            tracing::warn!(
                "cannot write agents' baselines to the store (kept for the next try): {e}"
            );
            self.baselines.mark_dirty(&rows);
        }
    }

    /// Re-reads the tasks from the store (opened or ended through other replicas).
    pub async fn sync_tasks(&self) -> Result<(), String> {
        // Read again (a few times at most) while tasks opened or ended through this
        // process come in during the read: applying an older read would forget them.
        for _ in 0..3 {
            let epoch = self.tasks.epoch();
            let since = self.clock.unix_millis() - crate::tasks::RETAIN_MS;
            let all = self.store.tasks(since).await.map_err(|e| e.to_string())?;
            if self.tasks.set_if_unchanged(all, epoch) {
                return Ok(());
            }
        }
        Err("tasks kept changing through this process during the read: read next time".into())
    }

    /// Whether `agent` may call now: not suspended, on a view of suspensions fresh enough
    /// ([`Freshness::usable`]).
    pub fn check_agent(
        &self,
        agent: &str,
        settings: &crate::store::StoreSettings,
    ) -> Result<(), crate::error::Error> {
        use crate::error::{Error, ErrorKind};
        if self.is_suspended(agent) {
            return Err(Error::new(
                ErrorKind::AgentSuspended,
                format!(
                    "agent {agent:?} is suspended; its owner can ask an administrator to resume it"
                ),
            ));
        }
        if !self.freshness.usable(settings) {
            return Err(Error::new(
                ErrorKind::StateStale,
                "keygate cannot reach its store to check that this agent is not suspended; \
                 retry shortly",
            ));
        }
        Ok(())
    }

    pub fn is_suspended(&self, agent: &str) -> bool {
        self.suspended
            .read()
            .map(|s| s.contains(agent))
            .unwrap_or(true)
    }

    /// Suspends (or resumes) an agent in this process at once; the store was written first.
    /// Suspends an agent in this process at once; the store was written first. (A
    /// resumption is read back from the store instead, [`Shared::reread_suspensions`]: a
    /// suspension another replica made meanwhile must not be undone here.)
    pub fn set_suspended(&self, agent: &str) {
        if let Ok(mut s) = self.suspended.write() {
            s.insert(agent.to_string());
            self.suspensions_epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// [`Shared::sync_suspensions`], again (up to three times) while a suspension through
    /// this process keeps coming in during the read; the agents newly suspended.
    pub async fn reread_suspensions(&self) -> Result<Option<Vec<String>>, String> {
        for _ in 0..3 {
            if let Some(newly) = self.sync_suspensions().await? {
                return Ok(Some(newly));
            }
        }
        Ok(None)
    }

    /// Re-reads the agents' keys from the store (after a change here, or another
    /// replica's).
    pub async fn sync_agent_keys(&self) -> Result<(), String> {
        // Read again (a few times at most) while keys are added or revoked through this
        // process during the read: an older read would make a revoked key active again.
        for _ in 0..3 {
            let epoch = self.agent_keys.epoch();
            let keys = self.store.agent_keys().await.map_err(|e| e.to_string())?;
            if self.agent_keys.set_if_unchanged(&keys, epoch) {
                return Ok(());
            }
        }
        Err("agent keys kept changing through this process during the read: read next time".into())
    }

    /// Re-reads the captured secrets from the store (what other replicas captured,
    /// shared or revoked).
    pub async fn sync_captured(&self) -> Result<(), String> {
        let epoch = self.vault.epoch();
        let all = self.store.captured().await.map_err(|e| e.to_string())?;
        self.vault.set_if_unchanged(all, epoch);
        Ok(())
    }

    /// Re-reads suspensions from the store (other replicas, direct store edits). Returns
    /// the agents suspended since the last read, or `None` when a suspend or resume through
    /// this process came in while it read (what it read is older: it is not applied).
    pub async fn sync_suspensions(&self) -> Result<Option<Vec<String>>, String> {
        let epoch = self.suspensions_epoch.load(Ordering::SeqCst);
        let mut now: HashSet<String> = self
            .store
            .suspensions()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|s| s.agent_id)
            .collect();
        // A suspension the store could not record yet stays in force.
        if let Ok(u) = self.unrecorded_suspensions.lock() {
            now.extend(u.iter().cloned());
        }
        let Ok(mut s) = self.suspended.write() else {
            return Err("the suspensions lock is poisoned".into());
        };
        if self.suspensions_epoch.load(Ordering::SeqCst) != epoch {
            return Ok(None);
        }
        let newly = now.difference(&s).cloned().collect();
        *s = now;
        Ok(Some(newly))
    }
}

/// The admin token: from the configured environment variable, or from the token file,
/// which is generated (random, owner-only) on first start.
fn admin_token(a: &crate::config::AdminSettings) -> Result<String, String> {
    if let Some(var) = &a.token_env {
        return match std::env::var(var) {
            Ok(t) if t.len() >= 16 => Ok(t),
            Ok(_) => Err(format!(
                "the admin token in {var} is shorter than 16 characters"
            )),
            Err(_) => Err(format!(
                "environment variable {var} (admin token) is not set"
            )),
        };
    }
    read_or_create_token(&a.token_file)
}

pub fn read_or_create_token(path: &Path) -> Result<String, String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_string();
        if t.len() >= 16 {
            return Ok(t);
        }
        return Err(format!(
            "{}: the admin token is shorter than 16 characters",
            path.display()
        ));
    }
    let mut b = [0u8; 24];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| "cannot generate the admin token".to_string())?;
    let token = const_hex::encode(b);
    if let Some(dir) = path.parent() {
        crate::private_fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    use std::io::Write;
    crate::private_fs::file_options()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .map_err(|e| format!("cannot write the admin token {}: {e}", path.display()))?;
    Ok(token)
}

/// The current gateway, swapped on reload.
pub struct Runtime {
    pub shared: Arc<Shared>,
    current: ArcSwap<Gateway>,
    config_path: PathBuf,
    reload_lock: tokio::sync::Mutex<()>,
}

impl Runtime {
    /// Opens shared state and builds the first gateway.
    pub async fn start(snapshot: Snapshot) -> Result<Arc<Runtime>, String> {
        let config_path = snapshot.source.clone();
        // Policies that do not load stop the start before anything is opened or created
        // (the signing key, the store, the audit log, the admin token).
        crate::policy::load(&snapshot).map_err(|e| e.to_string())?;
        let shared = Shared::open(&snapshot).await?;
        let gw = Gateway::build(snapshot, shared.clone()).await?;
        let rt = Arc::new(Runtime {
            shared,
            current: ArcSwap::new(gw),
            config_path,
            reload_lock: tokio::sync::Mutex::new(()),
        });
        spawn_suspension_sync(&rt);
        spawn_baseline_flush(&rt);
        spawn_limit_sharing(&rt);
        Ok(rt)
    }

    /// The gateway a new request runs on.
    pub fn current(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Re-reads the configuration and policies; on any error the running gateway stays.
    pub async fn reload(&self) -> Result<(), String> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let snapshot = crate::config::load(&self.config_path).map_err(|e| e.to_string())?;
        let old = self.current();
        if snapshot.server.listen != old.snapshot.server.listen
            || snapshot.admin.listen != old.snapshot.admin.listen
        {
            tracing::warn!("listener addresses change only on restart");
        }
        if snapshot.server.replica_id != old.snapshot.server.replica_id
            || snapshot.store.backend.to_string() != old.snapshot.store.backend.to_string()
        {
            tracing::warn!("the replica id and the store change only on restart");
        }
        let gw = Gateway::build(snapshot, self.shared.clone()).await?;
        self.current.store(gw);
        tracing::info!("configuration and policies reloaded");
        Ok(())
    }

    /// The files whose change triggers a reload: the config and the policy folder's files.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let gw = self.current();
        let mut files = vec![self.config_path.clone()];
        if let Ok(rd) = std::fs::read_dir(&gw.snapshot.policies_dir) {
            files.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
        }
        files
    }
}

/// Keeps this replica's view of the store current: every `store.sync_interval` it re-reads
/// suspensions, agent keys and captured secrets, and with a store that pushes changes
/// (PostgreSQL) it applies each as it comes (changes that arrive together are applied
/// with one read each): a suspension or resumption, a decision (held requests wake), keys,
/// captured secrets, another replica's reload (in a task of its own). The periodic read
/// keeps its schedule however many changes come. A read that fails or takes longer than
/// [`STORE_READ_TIMEOUT`] marks its dataset as failing ([`Freshness::usable`]).
fn spawn_suspension_sync(rt: &Arc<Runtime>) {
    let weak = Arc::downgrade(rt);
    let mut changes = rt.shared.store.changes();
    tokio::spawn(async move {
        let mut period = Duration::ZERO;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let interval = match weak.upgrade() {
                Some(rt) => rt.current().snapshot.store.sync_interval,
                None => return,
            };
            if interval != period {
                period = interval;
                tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            let mut todo = Todo::default();
            match changes.as_mut() {
                Some(rx) => tokio::select! {
                    _ = tick.tick() => todo.everything(),
                    c = rx.recv() => {
                        todo.add(c);
                        // Whatever else has arrived is applied with the same reads.
                        loop {
                            match rx.try_recv() {
                                Ok(c) => todo.add(Ok(c)),
                                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
                                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                                    todo.add(Err(tokio::sync::broadcast::error::RecvError::Lagged(n)))
                                }
                                Err(tokio::sync::broadcast::error::TryRecvError::Closed) => break,
                            }
                        }
                    }
                },
                None => {
                    tick.tick().await;
                    todo.everything();
                }
            }
            if todo.closed {
                changes = None;
            }
            let Some(rt) = weak.upgrade() else { return };
            apply(&rt, todo).await;
        }
    });
}

/// Shares the agents' baselines through the store every `anomalies.flush_interval`, off
/// the request path ([`Shared::sync_baselines`]). Ends when the runtime is dropped.
fn spawn_baseline_flush(rt: &Arc<Runtime>) {
    let weak = Arc::downgrade(rt);
    tokio::spawn(async move {
        loop {
            let interval = match weak.upgrade() {
                Some(rt) => rt.current().snapshot.anomalies.flush_interval,
                None => return,
            };
            tokio::time::sleep(interval).await;
            let Some(rt) = weak.upgrade() else { return };
            rt.shared.sync_baselines().await;
        }
    });
}

/// Shares this replica's counts of `shared` rate limits with the others, and reads theirs,
/// every `store.share_interval` (one round trip to the store, off the request path),
/// while a configuration has such a rule ([`crate::pipeline::limit`]). Ends when the
/// runtime is dropped.
fn spawn_limit_sharing(rt: &Arc<Runtime>) {
    let weak = Arc::downgrade(rt);
    tokio::spawn(async move {
        loop {
            let interval = match weak.upgrade() {
                Some(rt) => rt.current().snapshot.store.share_interval,
                None => return,
            };
            tokio::time::sleep(interval).await;
            let Some(rt) = weak.upgrade() else { return };
            let limits = &rt.shared.shared_limits;
            if limits.is_empty() {
                continue;
            }
            let now = rt.shared.clock.unix_millis();
            let (began, mine) = limits.begin_share(interval, now);
            // Replicas that shared within a few intervals count as alive.
            let alive = interval * 5 + crate::pipeline::limit::SHARE_TIMEOUT;
            let share = rt
                .shared
                .store
                .share_limit_counts(&rt.shared.instance, &mine, now, alive);
            let result = tokio::time::timeout(crate::pipeline::limit::SHARE_TIMEOUT, share).await;
            rt.shared.metrics.limit_share(matches!(result, Ok(Ok(_))));
            match result {
                Ok(Ok(counts)) => limits.shared(began, counts),
                Ok(Err(e)) => {
                    limits.share_failed(&mine);
                    tracing::warn!("cannot share rate limit counts through the store: {e}");
                }
                Err(_) => {
                    limits.share_failed(&mine);
                    tracing::warn!(
                        "cannot share rate limit counts through the store: no answer in time"
                    );
                }
            }
        }
    });
}

/// What a batch of changes (or a periodic tick) asks a replica to do.
#[derive(Default)]
struct Todo {
    suspensions: bool,
    keys: bool,
    captured: bool,
    tasks: bool,
    wake: bool,
    reload_from: Option<String>,
    closed: bool,
}

impl Todo {
    fn everything(&mut self) {
        self.suspensions = true;
        self.keys = true;
        self.captured = true;
        self.tasks = true;
    }

    fn add(&mut self, c: Result<crate::store::Change, tokio::sync::broadcast::error::RecvError>) {
        use crate::store::Change;
        use tokio::sync::broadcast::error::RecvError;
        match c {
            Ok(Change::Suspensions) => self.suspensions = true,
            Ok(Change::AgentKeys) => self.keys = true,
            Ok(Change::Captured) => self.captured = true,
            Ok(Change::Tasks) => self.tasks = true,
            Ok(Change::Decision(_)) => self.wake = true,
            Ok(Change::Reload { from }) => self.reload_from = Some(from),
            // Changes may have been missed: read everything, and held requests re-read
            // their approvals.
            Ok(Change::Resync) | Err(RecvError::Lagged(_)) => {
                self.everything();
                self.wake = true;
            }
            Err(RecvError::Closed) => {
                self.everything();
                self.closed = true;
            }
        }
    }
}

async fn apply(rt: &Arc<Runtime>, todo: Todo) {
    if todo.wake {
        rt.shared.decisions.notify_waiters();
    }
    if let Some(from) = todo.reload_from {
        if from != rt.shared.instance {
            // In a task of its own: building a gateway may fetch issuers' keys, and this
            // loop must keep the view of suspensions fresh meanwhile.
            let rt = rt.clone();
            tokio::spawn(async move {
                if let Err(e) = rt.reload().await {
                    tracing::error!(
                        "reload announced by replica {from} refused here, the running \
                         configuration stays:\n{e}"
                    );
                }
            });
        }
    }
    let f = &rt.shared.freshness;
    if todo.suspensions {
        let began = f.now_ms();
        match tokio::time::timeout(STORE_READ_TIMEOUT, rt.shared.reread_suspensions()).await {
            Ok(Ok(Some(newly))) => {
                f.read_ok(Dataset::Suspensions, began);
                for agent in newly {
                    rt.current().forget_agent(&agent);
                }
            }
            // Suspensions through this process kept coming in: they are applied, and the
            // next read picks the store up.
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                f.read_failed(Dataset::Suspensions);
                tracing::warn!("cannot refresh suspensions from the store: {e}");
            }
            Err(_) => {
                f.read_failed(Dataset::Suspensions);
                tracing::warn!("cannot refresh suspensions from the store: no answer in time");
            }
        }
    }
    if todo.keys {
        let began = f.now_ms();
        match tokio::time::timeout(STORE_READ_TIMEOUT, rt.shared.sync_agent_keys()).await {
            Ok(Ok(())) => f.read_ok(Dataset::AgentKeys, began),
            Ok(Err(e)) => {
                f.read_failed(Dataset::AgentKeys);
                tracing::warn!("cannot refresh agent keys from the store: {e}");
            }
            Err(_) => {
                f.read_failed(Dataset::AgentKeys);
                tracing::warn!("cannot refresh agent keys from the store: no answer in time");
            }
        }
    }
    if todo.captured {
        let began = f.now_ms();
        match tokio::time::timeout(STORE_READ_TIMEOUT, rt.shared.sync_captured()).await {
            Ok(Ok(())) => f.read_ok(Dataset::Captured, began),
            Ok(Err(e)) => {
                f.read_failed(Dataset::Captured);
                tracing::warn!("cannot refresh captured secrets from the store: {e}");
            }
            Err(_) => {
                f.read_failed(Dataset::Captured);
                tracing::warn!("cannot refresh captured secrets from the store: no answer in time");
            }
        }
    }
    if todo.tasks {
        let began = f.now_ms();
        match tokio::time::timeout(STORE_READ_TIMEOUT, rt.shared.sync_tasks()).await {
            Ok(Ok(())) => f.read_ok(Dataset::Tasks, began),
            Ok(Err(e)) => {
                f.read_failed(Dataset::Tasks);
                tracing::warn!("cannot refresh tasks from the store: {e}");
            }
            Err(_) => {
                f.read_failed(Dataset::Tasks);
                tracing::warn!("cannot refresh tasks from the store: no answer in time");
            }
        }
    }
    // Tasks that ended (here or on another replica) or expired: what this replica issued
    // for them is dropped and revoked.
    close_tasks(&rt.current());
}

/// Drops (and revokes where the issuer allows) what this replica issued for the tasks
/// that closed since it last looked, in a task of its own (revocation is a network call).
pub fn close_tasks(gw: &Arc<Gateway>) {
    let closed = gw.shared.tasks.take_closed(gw.shared.clock.unix_millis());
    if closed.is_empty() {
        return;
    }
    let gw = gw.clone();
    tokio::spawn(async move {
        for task in closed {
            let (dropped, failed) = gw.end_task(&task.id).await;
            if dropped > 0 || !failed.is_empty() {
                tracing::info!(
                    task = %task.id,
                    agent = %task.agent_id,
                    dropped,
                    revocations_failed = failed.len(),
                    "task closed: its credentials are dropped"
                );
            }
            for f in failed {
                tracing::warn!(task = %task.id, "revoking a task's credential failed: {f}");
            }
        }
    });
}

/// Watches the config file and the policy folder (by modification time and size, every
/// `interval`) and reloads on change, once the files have stayed the same for a whole
/// interval: a file caught half-written (a policy file cut before its `forbid`) is never
/// loaded. Ends when the runtime is dropped.
pub fn spawn_file_watch(rt: &Arc<Runtime>, interval: Duration) {
    fn stamp(files: &[PathBuf]) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
        files
            .iter()
            .map(|f| {
                (
                    f.clone(),
                    std::fs::metadata(f).and_then(|m| m.modified()).ok(),
                )
            })
            .collect()
    }
    let weak = Arc::downgrade(rt);
    let mut last = stamp(&rt.watched_files());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(rt) = weak.upgrade() else { return };
            let now = stamp(&rt.watched_files());
            if now != last {
                last = now;
                if let Err(e) = rt.reload().await {
                    tracing::error!("reload refused, the running configuration stays:\n{e}");
                }
            }
        }
    });
}

pub struct Gateway {
    pub snapshot: Arc<Snapshot>,
    pub shared: Arc<Shared>,
    pub identifier: Identifier,
    /// The compiled policies of this snapshot.
    pub policies: Arc<crate::policy::PolicyEngine>,
    pub tools: ToolSet,
    /// `[[rate_limits]]`: the allowances of this configuration.
    pub limits: crate::pipeline::limit::RateLimits,
    id_prefix: String,
    id_counter: Arc<AtomicU64>,
}

impl Gateway {
    /// Builds a gateway for a snapshot: loads issuer keys and secrets, builds clients,
    /// starts the background refreshers. Problems that leave a tool unusable (a static
    /// secret that is missing) are logged, and that tool answers `credential_unavailable`.
    pub async fn build(snapshot: Snapshot, shared: Arc<Shared>) -> Result<Arc<Gateway>, String> {
        let snapshot = Arc::new(snapshot);
        let signer = shared.signer.clone();
        for issuer in &snapshot.identity.issuers {
            if let Some(key) = &issuer.dev_signing_key {
                crate::dev::ensure_dev_issuer(issuer, key)?;
            }
        }
        let identifier = Identifier::new(&snapshot.identity)?
            .with_metrics(shared.metrics.clone())
            .with_clock(shared.clock.clone());
        for (name, e) in identifier.load_keys().await {
            tracing::error!(issuer = %name, "cannot load the issuer's keys (its tokens are refused until they load): {e}");
        }
        let policies = crate::policy::load(&snapshot).map_err(|e| e.to_string())?;
        let tools = ToolSet::build(&snapshot, &signer, &shared.clock)?;
        let limits = crate::pipeline::limit::RateLimits::new(
            &snapshot.rate_limits,
            &shared.clock,
            &shared.shared_limits,
        );
        let gw = Arc::new(Gateway {
            snapshot,
            shared,
            identifier,
            policies,
            tools,
            limits,
            id_prefix: format!("{:08x}", rand_u32()),
            id_counter: Arc::new(AtomicU64::new(0)),
        });
        spawn_refreshers(&gw);
        Ok(gw)
    }

    /// A request id, unique within this process and, by its random prefix, across replicas.
    /// Drops every credential issued for `agent` and cached (it was suspended).
    pub fn forget_agent(&self, agent: &str) {
        for t in self.tools.by_name.values() {
            t.provider.invalidate_agent(agent);
        }
    }

    /// Drops (and revokes where the issuer allows) every credential issued for `task`'s
    /// calls: how many were dropped, and the revocations that failed.
    pub async fn end_task(&self, task: &str) -> (usize, Vec<String>) {
        let mut dropped = 0;
        let mut failed = Vec::new();
        for t in self.tools.by_name.values() {
            let (d, f) = t.provider.end_task(task).await;
            dropped += d;
            failed.extend(f.into_iter().map(|f| format!("{}: {f}", t.tool.name)));
        }
        (dropped, failed)
    }

    pub fn next_request_id(&self) -> Arc<str> {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        request_id(&self.id_prefix, n)
    }
}

/// `<prefix>-<n, 10 digits at least>`, without the formatting machinery (per request).
#[doc(hidden)]
pub fn request_id(prefix: &str, n: u64) -> Arc<str> {
    const WIDTH: usize = 10;
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    let zeros = WIDTH.saturating_sub(digits.len());
    let mut id = String::with_capacity(prefix.len() + 1 + zeros + digits.len());
    id.push_str(prefix);
    id.push('-');
    id.extend(std::iter::repeat_n('0', zeros));
    id.push_str(digits);
    id.into()
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
    if !gw.limits.is_empty() {
        let weak = Arc::downgrade(gw);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let Some(gw) = weak.upgrade() else { return };
                gw.limits.forget_idle();
            }
        });
    }
    let has_files = gw.tools.by_name.values().any(|t| {
        matches!(&t.provider, Provider::Static(s) if matches!(s.source(), SecretSource::File(_)))
    });
    if has_files {
        let weak = Arc::downgrade(gw);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let Some(gw) = weak.upgrade() else { return };
                for t in gw.tools.by_name.values() {
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

#[cfg(test)]
mod request_id_tests {
    #[test]
    fn request_ids_are_prefix_dash_ten_digits_at_least() {
        for n in [0, 7, 1_234_567_890, 12_345_678_901, u64::MAX] {
            assert_eq!(
                &*super::request_id("48a327f0", n),
                format!("48a327f0-{n:010}")
            );
        }
    }
}
