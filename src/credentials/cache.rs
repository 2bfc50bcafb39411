//! The cache of issued credentials that every provider which asks someone else (STS, a
//! token endpoint) shares.
//!
//! Keyed by agent and scope (one cache per tool, so the tool is implied); an entry is
//! served until shortly before its credential expires ([`EXPIRY_MARGIN`]), and refreshed
//! ahead of time in the background once most of its life is spent ([`REFRESH_AT`]), so a
//! warm call never waits on the provider. Concurrent cold calls for one key make one
//! request to the provider (moka's `try_get_with` coalesces them). The cache is bounded by
//! bytes, and an agent's entries are dropped when it is suspended; a reload builds new
//! tools, and with them new caches.
//!
//! Expiry is judged by keygate's [`Clock`], not only by moka's own timer, so a credential
//! is never served past its margin whichever clock moves.

use super::issued::Unavailable;
use crate::clock::Clock;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A credential is not handed out with less than this left: the call it is for must
/// reach the tool and be checked there before it expires.
pub const EXPIRY_MARGIN: u64 = 60;
/// The share of a credential's life after which a call that finds it starts a background
/// refresh (two thirds: a 900 s session is refreshed from 600 s on).
pub const REFRESH_AT: (u64, u64) = (2, 3);
/// The most the cache holds, in bytes of keys and credentials.
pub const MAX_BYTES: u64 = 32 * 1024 * 1024;

/// What a cached credential must tell the cache.
pub trait Cacheable: Send + Sync + 'static {
    /// When it expires (Unix seconds).
    fn expires_unix(&self) -> u64;
    /// Its size in bytes, roughly (for the cache's bound).
    fn weight(&self) -> usize;
}

/// The cache's key: the agent, the scope asked for (for AWS the role and the session
/// policy; for OAuth2 the scopes), and the task the credential is for (a task's calls get
/// credentials of their own, dropped when it ends).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub agent: Arc<str>,
    pub scope: Arc<str>,
    pub task: Option<Arc<str>>,
}

/// A cached credential and when it was issued.
pub struct Entry<V> {
    pub value: V,
    pub issued_unix: u64,
    refreshing: AtomicBool,
}

impl<V: Cacheable> Entry<V> {
    fn new(value: V, now: u64) -> Entry<V> {
        Entry {
            value,
            issued_unix: now,
            refreshing: AtomicBool::new(false),
        }
    }

    /// An entry no cache holds (a captured key a call is signed with).
    pub fn uncached(value: V) -> Entry<V> {
        Entry::new(value, 0)
    }

    /// The last second it is handed out.
    fn usable_until(&self) -> u64 {
        self.value.expires_unix().saturating_sub(EXPIRY_MARGIN)
    }

    /// From when a call that finds it refreshes it in the background.
    fn refresh_from(&self) -> u64 {
        let life = self.value.expires_unix().saturating_sub(self.issued_unix);
        self.issued_unix.saturating_add(
            life / REFRESH_AT.1 * REFRESH_AT.0 + life % REFRESH_AT.1 * REFRESH_AT.0 / REFRESH_AT.1,
        )
    }
}

/// How a call was served: from the cache, or issued now (for the audit record and span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Cached,
    Issued,
}

/// Issued credentials of one tool, by agent and scope.
pub struct IssuedCache<V: Cacheable> {
    cache: moka::future::Cache<Key, Arc<Entry<V>>, crate::FastHash>,
    clock: Clock,
}

struct UntilMargin;

impl<V: Cacheable> moka::Expiry<Key, Arc<Entry<V>>> for UntilMargin {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<Entry<V>>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.usable_until().saturating_sub(value.issued_unix),
        ))
    }
}

impl<V: Cacheable> IssuedCache<V> {
    pub fn new(clock: Clock) -> IssuedCache<V> {
        IssuedCache::with_capacity(clock, MAX_BYTES)
    }

    pub fn with_capacity(clock: Clock, max_bytes: u64) -> IssuedCache<V> {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &Key, v: &Arc<Entry<V>>| {
                u32::try_from(64 + k.agent.len() + k.scope.len() + v.value.weight())
                    .unwrap_or(u32::MAX)
            })
            .expire_after(UntilMargin)
            .support_invalidation_closures()
            .build_with_hasher(crate::FastHash::default());
        IssuedCache { cache, clock }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.clock.unix_secs()).unwrap_or(0)
    }

    /// The credential cached for `key` when it is usable and not yet due for a refresh:
    /// the warm path, which builds nothing (None: call [`Self::get_or_issue`]).
    pub async fn get_warm(&self, key: &Key) -> Option<Arc<Entry<V>>> {
        let hit = self.cache.get(key).await?;
        let now = self.now();
        (now < hit.usable_until() && now < hit.refresh_from()).then_some(hit)
    }

    /// The credential for `key`: cached while it is usable (refreshed in the background
    /// once most of its life is spent), else issued by `issue` now, once for all the calls
    /// waiting on the same key. An issuer's failure is every waiting call's failure, and
    /// nothing is cached for it.
    pub async fn get_or_issue<F, Fut>(
        &self,
        key: Key,
        issue: F,
    ) -> Result<(Arc<Entry<V>>, Served), Unavailable>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, Unavailable>> + Send + 'static,
    {
        let issue = Arc::new(issue);
        let now = self.now();
        if let Some(hit) = self.cache.get(&key).await {
            if now < hit.usable_until() {
                if now >= hit.refresh_from() && !hit.refreshing.swap(true, Ordering::AcqRel) {
                    self.refresh_in_background(key, hit.clone(), issue);
                }
                return Ok((hit, Served::Cached));
            }
            // Past its margin by keygate's clock, before moka's timer noticed.
            self.cache.invalidate(&key).await;
        }
        let clock = self.clock.clone();
        // Calls that join another's issue are served by it: issued now, for them too.
        let entry = self
            .cache
            .try_get_with(key, async move {
                let value = issue().await?;
                let now = u64::try_from(clock.unix_secs()).unwrap_or(0);
                let entry = Entry::new(value, now);
                if entry.usable_until() <= now {
                    return Err(Unavailable::new(
                        "the provider issued a credential that expires too soon to use",
                    ));
                }
                Ok(Arc::new(entry))
            })
            .await
            .map_err(|e: Arc<Unavailable>| (*e).clone())?;
        Ok((entry, Served::Issued))
    }

    fn refresh_in_background<F, Fut>(&self, key: Key, old: Arc<Entry<V>>, issue: Arc<F>)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, Unavailable>> + Send + 'static,
    {
        let (cache, clock) = (self.cache.clone(), self.clock.clone());
        tokio::spawn(async move {
            match issue().await {
                Ok(value) => {
                    let now = u64::try_from(clock.unix_secs()).unwrap_or(0);
                    let entry = Entry::new(value, now);
                    if entry.usable_until() > now {
                        cache.insert(key, Arc::new(entry)).await;
                        return;
                    }
                    old.refreshing.store(false, Ordering::Release);
                }
                Err(e) => {
                    // The cached credential stays until its margin; the next call tries again.
                    tracing::warn!(agent = %key.agent, "refreshing a credential ahead of its expiry failed: {}", e.reason);
                    old.refreshing.store(false, Ordering::Release);
                }
            }
        });
    }

    /// Drops every credential issued for `agent` (suspended, or its task ended).
    pub fn invalidate_agent(&self, agent: &str) {
        let agent: Arc<str> = agent.into();
        if let Err(e) = self
            .cache
            .invalidate_entries_if(move |k, _| k.agent == agent)
        {
            tracing::error!("could not drop an agent's cached credentials: {e}");
        }
    }

    /// Drops every credential issued for `task`, and returns them (to be revoked where
    /// their issuer allows).
    pub fn take_task(&self, task: &str) -> Vec<Arc<Entry<V>>> {
        let taken: Vec<_> = self
            .cache
            .iter()
            .filter(|(k, _)| k.task.as_deref() == Some(task))
            .map(|(_, v)| v)
            .collect();
        let task: Arc<str> = task.into();
        if let Err(e) = self
            .cache
            .invalidate_entries_if(move |k, _| k.task.as_ref() == Some(&task))
        {
            tracing::error!("could not drop a task's cached credentials: {e}");
        }
        taken
    }

    /// How many credentials are cached (after pending maintenance).
    pub async fn cached_count(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Cred {
        expires: u64,
        n: usize,
    }
    impl Cacheable for Cred {
        fn expires_unix(&self) -> u64 {
            self.expires
        }
        fn weight(&self) -> usize {
            16
        }
    }

    fn key(agent: &str, scope: &str) -> Key {
        Key {
            agent: agent.into(),
            scope: scope.into(),
            task: None,
        }
    }

    fn issuer(
        clock: Clock,
        calls: Arc<AtomicUsize>,
        life: u64,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<Cred, Unavailable>> + Send>>
           + Send
           + Sync
           + 'static {
        move || {
            let (clock, calls) = (clock.clone(), calls.clone());
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(Cred {
                    expires: u64::try_from(clock.unix_secs()).unwrap_or(0) + life,
                    n,
                })
            })
        }
    }

    #[tokio::test]
    async fn concurrent_cold_calls_make_one_request_and_warm_calls_none() {
        let clock = Clock::default();
        let cache = Arc::new(IssuedCache::<Cred>::new(clock.clone()));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (cache, issue) = (cache.clone(), issuer(clock.clone(), calls.clone(), 900));
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_issue(key("a", "s"), issue)
                    .await
                    .map(|(e, _)| e.value.n)
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 1);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let (_, served) = cache
            .get_or_issue(key("a", "s"), issuer(clock.clone(), calls.clone(), 900))
            .await
            .unwrap();
        assert_eq!(served, Served::Cached);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Another scope or agent is another credential.
        cache
            .get_or_issue(key("a", "t"), issuer(clock.clone(), calls.clone(), 900))
            .await
            .unwrap();
        cache
            .get_or_issue(key("b", "s"), issuer(clock.clone(), calls.clone(), 900))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn refreshed_ahead_of_expiry_in_the_background_and_never_served_past_the_margin() {
        let clock = Clock::default();
        let cache = IssuedCache::<Cred>::new(clock.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        async fn get(
            cache: &IssuedCache<Cred>,
            clock: &Clock,
            calls: &Arc<AtomicUsize>,
        ) -> Result<(Arc<Entry<Cred>>, Served), Unavailable> {
            cache
                .get_or_issue(key("a", "s"), issuer(clock.clone(), calls.clone(), 900))
                .await
        }
        assert_eq!(get(&cache, &clock, &calls).await.unwrap().0.value.n, 1);
        // Two thirds in: still the first, and a refresh starts behind the call.
        clock.advance(Duration::from_secs(601));
        let (e, served) = get(&cache, &clock, &calls).await.unwrap();
        assert_eq!((e.value.n, served), (1, Served::Cached));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while calls.load(Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "no background refresh"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The refreshed credential is served once it is in.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (e, served) = get(&cache, &clock, &calls).await.unwrap();
            if e.value.n == 2 {
                assert_eq!(served, Served::Cached);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "refresh never landed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Past the margin of the refreshed one (by keygate's clock): issued anew, at once.
        clock.advance(Duration::from_secs(900 - EXPIRY_MARGIN));
        let (e, served) = get(&cache, &clock, &calls).await.unwrap();
        assert_eq!(served, Served::Issued);
        assert!(e.value.n >= 3);
    }

    #[tokio::test]
    async fn failures_are_not_cached_and_suspension_drops_an_agents_entries() {
        let clock = Clock::default();
        let cache = IssuedCache::<Cred>::new(clock.clone());
        let failing = || async { Err::<Cred, _>(Unavailable::new("sts said no")) };
        let e = cache
            .get_or_issue(key("a", "s"), failing)
            .await
            .err()
            .unwrap();
        assert_eq!(e.reason, "sts said no");
        let calls = Arc::new(AtomicUsize::new(0));
        for agent in ["a", "b"] {
            cache
                .get_or_issue(key(agent, "s"), issuer(clock.clone(), calls.clone(), 900))
                .await
                .unwrap();
        }
        assert_eq!(cache.cached_count().await, 2);
        cache.invalidate_agent("a");
        assert_eq!(cache.cached_count().await, 1);
        let (_, served) = cache
            .get_or_issue(key("a", "s"), issuer(clock.clone(), calls.clone(), 900))
            .await
            .unwrap();
        assert_eq!(served, Served::Issued);
        let (_, served) = cache
            .get_or_issue(key("b", "s"), issuer(clock.clone(), calls.clone(), 900))
            .await
            .unwrap();
        assert_eq!(served, Served::Cached);
    }

    #[tokio::test]
    async fn a_credential_too_short_to_use_is_refused() {
        let clock = Clock::default();
        let cache = IssuedCache::<Cred>::new(clock.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        let r = cache
            .get_or_issue(key("a", "s"), issuer(clock.clone(), calls, EXPIRY_MARGIN))
            .await;
        assert!(r.is_err());
    }
}
