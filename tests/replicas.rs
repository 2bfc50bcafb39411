//! Several keygate replicas, one truth: three replicas in-process, each with its own
//! listeners, data directory, caches and audit log, sharing one real PostgreSQL database
//! (Debian's `postgresql`, started by `tests/postgres/cluster.sh`). What is decided on one
//! replica holds on the others as soon as it is pushed (well under a second on an idle
//! machine; the tests allow 4 s), single-use steps happen once across all
//! of them, and a database that goes away stops what needs it, then comes back by itself.
//!
//! The periodic re-read is set far beyond the test's deadlines (`sync_interval = "30s"`)
//! wherever a test measures propagation, so only the pushed change (LISTEN/NOTIFY) can
//! make it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pg_support;
use common::*;

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: &str = "/tools/gh/repos/acme/app/keys";
const READ: &str = "/tools/gh/repos/acme/app";

/// A GitHub stand-in: `POST …/keys` → `201 {"id": 4242, …}`; anything else → `200 ok`.
async fn github() -> RawUpstream {
    RawUpstream::with_responder(Arc::new(|r: &Received| {
        if r.head.starts_with("POST ") && r.target().ends_with("/keys") {
            let body = json!({"id": 4242, "title": "ci", "read_only": true});
            return (
                201,
                vec![("content-type".into(), "application/json".into())],
                body.to_string().into_bytes(),
            );
        }
        (200, vec![], b"ok".to_vec())
    }))
    .await
}

struct Cluster {
    replicas: Vec<TestGateway>,
    up: RawUpstream,
    iss: TestIssuer,
    _issuer_dir: tempfile::TempDir,
    client: Client,
}

/// Three replicas `a`, `b`, `c` on the database at `url`; `store` is added to each
/// `[store]` table, `tool` to the tool's.
async fn cluster(url: &str, store: &str, tool: &str) -> Cluster {
    let up = github().await;
    let issuer_dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(issuer_dir.path(), "replica-issuer", "keygate");
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        let dir = tempfile::tempdir().unwrap();
        let source = secret_file(dir.path(), "gh", "gh-tool-credential-3f9a2c");
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\nreplica_id = {name:?}\n\
             [store]\nurl = {url:?}\n{store}\n{}{}[[tools]]\nname = \"gh\"\nkind = \"github\"\n\
             upstream = {:?}\n{tool}[tools.credential]\nprovider = \"static\"\n{source}",
            iss.toml(),
            agent("a1", "alice@example.com"),
            up.url(),
        );
        replicas.push(TestGateway::start_in(dir, &cfg).await);
    }
    Cluster {
        replicas,
        up,
        iss,
        _issuer_dir: issuer_dir,
        client: Client::http1(),
    }
}

impl Cluster {
    fn replica(&self, name: &str) -> &TestGateway {
        &self.replicas[match name {
            "a" => 0,
            "b" => 1,
            _ => 2,
        }]
    }

    async fn get(&self, on: &str, path: &str) -> Response {
        let auth = bearer(&self.iss.token("a1"));
        self.client
            .get(&self.replica(on).url(path), &[("authorization", &auth)])
            .await
    }

    /// Asks to create a deploy key (identity creation: needs an approval) through `on`.
    async fn create_key(&self, on: &str) -> Response {
        let auth = bearer(&self.iss.token("a1"));
        self.client
            .send(
                "POST",
                &self.replica(on).url(KEYS),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                json!({"title": "ci", "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplicaTest", "read_only": true})
                    .to_string(),
            )
            .await
    }

    async fn admin(&self, on: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, b) = self.replica(on).admin(method, path, body).await;
        assert!(s < 300, "{method} {path} on {on}: {s} {b}");
        b
    }

    async fn approve(&self, on: &str, id: &str) {
        let body =
            json!({"approver": "bob@example.com", "owner": "carol@example.com", "ticket": "CHG-7"});
        let b = self
            .admin(on, "POST", &format!("/approvals/{id}/approve"), Some(body))
            .await;
        assert_eq!(b["status"], "approved", "{b}");
    }

    /// Waits (polling every 20 ms, up to `within`) until a read on `on` answers `status`;
    /// how long that took.
    async fn until_status(&self, on: &str, status: u16, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let r = self.get(on, READ).await;
            if r.status == status {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "replica {on} still answers {} after {within:?}: {}",
                r.status,
                r.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Settings under which only a pushed change can propagate within the test's deadlines.
const PUSH_ONLY: &str = "sync_interval = \"30s\"\nmax_staleness = \"60s\"";

/// How long a pushed change may take to hold on every replica in these tests: well under
/// the periodic re-read (30 s) and a held request's own re-read (5 s), so only the push
/// can meet it, and far over what it takes (well under a second on an idle machine), so a
/// loaded one does not fail it.
const PUSHED: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspension_on_one_replica_holds_on_the_others_once_pushed() {
    let url = pg_support::postgres().database().await;
    let c = cluster(&url, PUSH_ONLY, "").await;
    for r in ["a", "b", "c"] {
        assert_eq!(c.get(r, READ).await.status, 200);
    }
    c.admin(
        "a",
        "POST",
        "/agents/a1/suspend",
        Some(json!({"by": "sec@example.com", "reason": "looping"})),
    )
    .await;
    let t0 = Instant::now();
    for r in ["b", "c"] {
        c.until_status(r, 403, PUSHED).await;
    }
    let took = t0.elapsed();
    assert!(took < PUSHED, "took {took:?}");
    let r = c.get("c", READ).await;
    assert_eq!(r.json()["error"], "agent_suspended", "{}", r.text());

    // Resumed on C: A and B serve the agent again, as fast.
    c.admin("c", "POST", "/agents/a1/resume", Some(json!({})))
        .await;
    for r in ["a", "b"] {
        c.until_status(r, 200, PUSHED).await;
    }
    // Nothing was forwarded while the agent was suspended: three reads before, and the
    // ones that answered 200 after.
    let audits = futures_util::future::join_all(c.replicas.iter().map(|g| g.audit())).await;
    let forwarded: usize = audits
        .iter()
        .flatten()
        .filter(|r| r["decision"] == "allow")
        .count();
    assert_eq!(forwarded, c.up.count());

    // Each replica wrote its own chain, naming itself in every record; `verify` reports
    // each.
    for (g, name) in c.replicas.iter().zip(["a", "b", "c"]) {
        let records = g.audit().await;
        assert!(!records.is_empty());
        assert!(records.iter().all(|r| r["replica"] == name), "{records:#?}");
    }
    let files: Vec<_> = c.replicas.iter().map(|g| g.audit_path.clone()).collect();
    let chains = keygate::telemetry::audit_chain::verify_replicas(&files);
    assert_eq!(chains.len(), 3);
    for (chain, name) in chains.iter().zip(["a", "b", "c"]) {
        assert_eq!(chain.replica.as_deref(), Some(name));
        assert!(
            chain.result.is_ok(),
            "{:?}",
            chain.result.as_ref().err().map(|f| f.to_string())
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["audit", "verify"])
        .args(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["a", "b", "c"] {
        assert!(stdout.contains(&format!("replica {name}: ")), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_decided_on_b_releases_the_request_held_on_c_once() {
    let url = pg_support::postgres().database().await;
    let c = cluster(
        &url,
        PUSH_ONLY,
        "approval = \"hold\"\nhold_timeout = \"20s\"\n",
    )
    .await;
    let held = {
        let (url, auth, client) = (
            c.replica("c").url(KEYS),
            bearer(&c.iss.token("a1")),
            c.client.clone(),
        );
        tokio::spawn(async move {
            client
                .send(
                    "POST",
                    &url,
                    &[("authorization", &auth), ("content-type", "application/json")],
                    json!({"title": "ci", "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplicaTest", "read_only": true})
                        .to_string(),
                )
                .await
        })
    };
    // The pending approval is visible on B (the shared store).
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let b = c.admin("b", "GET", "/approvals?status=pending", None).await;
        if let Some(a) = b["approvals"].as_array().and_then(|l| l.first()) {
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no pending approval");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!held.is_finished());
    let decided = Instant::now();
    c.approve("b", &id).await;
    let r = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .unwrap()
        .unwrap();
    let waited = decided.elapsed();
    assert_eq!(r.status, 201, "{}", r.text());
    // Woken by the pushed decision: a held request re-reads on its own only every 5 s.
    assert!(waited < PUSHED, "released {waited:?} after the decision");
    assert_eq!(c.up.count(), 1);
    let a = c.admin("a", "GET", &format!("/approvals/{id}"), None).await;
    assert_eq!(a["status"], "used");
    // Once: the same request again, on A, needs a new approval.
    let again = tokio::time::timeout(Duration::from_secs(2), c.create_key("a")).await;
    if let Ok(r) = again {
        assert_ne!(r.status, 201, "{}", r.text());
    }
    assert_eq!(c.up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_retries_over_three_replicas_reach_the_tool_once() {
    let url = pg_support::postgres().database().await;
    let c = Arc::new(cluster(&url, "", "").await);
    let r = c.create_key("a").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "approval_required");
    let id = r.json()["approval_id"].as_str().unwrap().to_string();
    c.approve("b", &id).await;
    let retries = (0..50).map(|i| {
        let c = c.clone();
        tokio::spawn(async move { c.create_key(["a", "b", "c"][i % 3]).await.status })
    });
    let statuses: Vec<u16> = futures_util::future::join_all(retries)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 403),
        "{statuses:?}"
    );
    assert_eq!(c.up.count(), 1, "the tool saw the request more than once");
    let inventory = c.admin("c", "GET", "/inventory", None).await;
    assert_eq!(inventory["identities"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_database_gone_replicas_refuse_what_needs_it_and_recover_by_themselves() {
    // A cluster of its own: this test stops it.
    let pg = pg_support::Postgres::start();
    let url = pg.database().await;
    let c = cluster(
        &url,
        "sync_interval = \"200ms\"\nmax_staleness = \"2s\"",
        "",
    )
    .await;
    for r in ["a", "b", "c"] {
        assert_eq!(c.get(r, READ).await.status, 200);
        let (s, _) = c.replica(r).admin("GET", "/readyz", None).await;
        assert_eq!(s, 200);
    }
    let forwarded = c.up.count();

    // (Measured from before the stop: the last good read may be up to one sync before.)
    let stopped = Instant::now();
    pg.stop();
    // A call that needs an approval decision: 503, nothing forwarded.
    let r = c.create_key("b").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "approvals_unavailable", "{}", r.text());
    // Readiness fails on every replica.
    for r in ["a", "b", "c"] {
        let (s, b) = c.replica(r).admin("GET", "/readyz", None).await;
        assert_eq!(s, 503, "{b}");
        assert_eq!(b["reason"], "store_unavailable", "{b}");
    }
    // Once the view of suspensions is older than max_staleness, every call is refused.
    c.until_status("a", 503, Duration::from_secs(10)).await;
    assert!(stopped.elapsed() >= Duration::from_secs(2) - Duration::from_millis(300));
    for r in ["a", "b", "c"] {
        let resp = c.get(r, READ).await;
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert_eq!(resp.json()["error"], "store_unavailable", "{}", resp.text());
    }
    // Calls went through only on the cached view, while it was fresh enough; from then on
    // nothing reaches the tool.
    let before_restart = c.up.count();
    assert!(before_restart >= forwarded);
    for r in ["a", "b", "c", "a", "b", "c"] {
        assert_eq!(c.get(r, READ).await.status, 503);
    }
    assert_eq!(
        c.up.count(),
        before_restart,
        "calls were forwarded on a stale view"
    );

    // The database comes back: every replica serves again, without a restart.
    pg.restart();
    for r in ["a", "b", "c"] {
        c.until_status(r, 200, Duration::from_secs(15)).await;
        let (s, b) = c.replica(r).admin("GET", "/readyz", None).await;
        assert_eq!(s, 200, "{b}");
    }
    // And changes are pushed again (the listening connection came back too).
    c.admin(
        "a",
        "POST",
        "/agents/a1/suspend",
        Some(json!({"by": "sec"})),
    )
    .await;
    c.until_status("c", 403, Duration::from_secs(3)).await;
    assert!(c.up.count() > before_restart);
    let refused = futures_util::future::join_all(c.replicas.iter().map(|g| g.audit()))
        .await
        .into_iter()
        .flatten()
        .filter(|r| r["error"] == "store_unavailable")
        .count();
    assert!(refused >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refuse_mode_serves_nothing_once_the_store_cannot_be_read() {
    let pg = pg_support::Postgres::start();
    let url = pg.database().await;
    let c = cluster(
        &url,
        "sync_interval = \"200ms\"\nmax_staleness = \"30s\"\non_unavailable = \"refuse\"",
        "",
    )
    .await;
    assert_eq!(c.get("a", READ).await.status, 200);
    let forwarded = c.up.count();
    pg.stop();
    // Well before max_staleness: the first failed read refuses everything.
    for r in ["a", "b", "c"] {
        let took = c.until_status(r, 503, Duration::from_secs(15)).await;
        assert!(took < Duration::from_secs(15));
    }
    let r = c.get("b", READ).await;
    assert_eq!(r.json()["error"], "store_unavailable", "{}", r.text());
    // From then on nothing reaches the tool.
    let refused_at = c.up.count();
    assert!(refused_at >= forwarded);
    for r in ["a", "b", "c", "a", "b", "c"] {
        assert_eq!(c.get(r, READ).await.status, 503);
    }
    assert_eq!(c.up.count(), refused_at);
    pg.restart();
    c.until_status("a", 200, Duration::from_secs(15)).await;
}

/// A task opened on one replica is usable on the others as soon as the change is pushed;
/// ended on another, every replica refuses its calls once the change is pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_opened_on_a_and_ended_on_c_is_refused_everywhere_once_pushed() {
    let url = pg_support::postgres().database().await;
    let c = cluster(&url, PUSH_ONLY, "").await;
    let task = c
        .admin(
            "a",
            "POST",
            "/tasks",
            Some(
                json!({"agent": "a1", "purpose": "read the app", "ticket": "OPS-1", "ttl": "10m"}),
            ),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_string();
    let in_task = |on: &'static str| {
        let (c, id) = (&c, id.clone());
        async move {
            let auth = bearer(&c.iss.token("a1"));
            c.client
                .get(
                    &c.replica(on).url(READ),
                    &[("authorization", &auth), ("keygate-task", &id)],
                )
                .await
        }
    };
    let until = |on: &'static str, status: u16| {
        let in_task = &in_task;
        async move {
            let t0 = Instant::now();
            loop {
                let r = in_task(on).await;
                if r.status == status {
                    return r;
                }
                assert!(
                    t0.elapsed() < PUSHED,
                    "replica {on} answers {}: {}",
                    r.status,
                    r.text()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    for r in ["a", "b", "c"] {
        until(r, 200).await;
    }
    c.admin(
        "c",
        "POST",
        &format!("/tasks/{id}/end"),
        Some(json!({"by": "carol"})),
    )
    .await;
    for r in ["a", "b", "c"] {
        let resp = until(r, 403).await;
        assert_eq!(resp.json()["error"], "task_ended", "{}", resp.text());
    }
}

/// `[store]` settings, then `[[rate_limits]]` for agent a1: `per_minute`, shared or not.
/// (The entries follow the `[store]` keys: the next table header ends them.)
fn limited(per_minute: u32, shared: bool, store: &str) -> String {
    format!(
        "share_interval = \"100ms\"\n{store}\n\
         [[rate_limits]]\nagent = \"a1\"\nper_minute = {per_minute}\nshared = {shared}\n"
    )
}

impl Cluster {
    /// Moves every replica's clock (each has its own) by `by`.
    fn advance_clocks(&self, by: Duration) {
        for g in &self.replicas {
            g.advance_clock(by);
        }
    }

    /// Moves every replica's clock to the start of a minute, so that a test's calls fall
    /// in one window of a `per_minute` limit.
    fn to_next_minute(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        self.advance_clocks(Duration::from_millis(60_000 - now % 60_000));
    }
}

/// A shared per-agent limit of 4 a minute, with calls spread over three replicas: the
/// fifth is refused on every replica (429 `rate_limited`, `Retry-After` within the
/// minute), whichever it reaches, and the next minute allows calls again. Each call waits
/// until every replica has read its count, so that the count is exact (the documented
/// bound is for calls faster than the sharing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_limit_counts_the_calls_of_every_replica() {
    let url = pg_support::postgres().database().await;
    let c = cluster(&url, &limited(4, true, ""), "").await;
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    c.to_next_minute();
    for (i, r) in ["a", "b", "c", "a"].into_iter().enumerate() {
        let resp = c.get(r, READ).await;
        assert_eq!(resp.status, 200, "on {r}: {}", resp.text());
        shared_everywhere(&mut db, i as i64 + 1).await;
    }
    for r in ["b", "c", "a"] {
        let resp = c.get(r, READ).await;
        assert_eq!(resp.status, 429, "on {r}: {}", resp.text());
        assert_eq!(resp.json()["error"], "rate_limited", "{}", resp.text());
        let wait: u64 = resp.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
    }
    assert_eq!(c.up.count(), 4, "four calls reached the tool in all");
    // The counts are in the database, one row per replica that admitted calls.
    let counts: Vec<i64> =
        sqlx::query_scalar("SELECT count FROM rate_limit_counts ORDER BY count, replica")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(counts, [1, 1, 2], "{counts:?}");
    let m = c.replica("b").metrics().await;
    assert!(
        m.contains("keygate_rate_limit_shares_total{result=\"failed\"} 0"),
        "{m}"
    );
    assert!(
        !m.contains("keygate_rate_limit_shares_total{result=\"ok\"} 0"),
        "{m}"
    );
    // The next minute starts a new window (every replica's GCRA has refilled too).
    c.advance_clocks(Duration::from_secs(60));
    assert_eq!(c.get("c", READ).await.status, 200);
}

/// Waits until the replicas' counts in the database add up to `total`, then until every
/// replica has shared since (a share reads the others' counts in the transaction that
/// writes its own, which began after they were committed).
async fn shared_everywhere(db: &mut sqlx::PgConnection, total: i64) {
    let t0 = Instant::now();
    let written = loop {
        let (sum, now): (Option<i64>, i64) = sqlx::query_as(
            "SELECT SUM(count)::BIGINT, (extract(epoch FROM now()) * 1000000)::BIGINT \
             FROM rate_limit_counts",
        )
        .fetch_one(&mut *db)
        .await
        .unwrap();
        if sum == Some(total) {
            break now;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "counts {sum:?}, not {total}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    all_shared_since(db, written, t0).await;
}

/// Waits until every one of the three replicas has shared since `since` (database time,
/// µs); `t0` is when the waiting began.
async fn all_shared_since(db: &mut sqlx::PgConnection, since: i64, t0: Instant) {
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM rate_limit_replicas \
             WHERE (extract(epoch FROM seen_at) * 1000000)::BIGINT <= $1",
        )
        .bind(since)
        .fetch_one(&mut *db)
        .await
        .unwrap();
        let all: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rate_limit_replicas")
            .fetch_one(&mut *db)
            .await
            .unwrap();
        if behind == 0 && all == 3 {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{behind} replicas behind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same limit, not shared, is per replica: each of three replicas allows 4 calls a
/// minute, 12 in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limit_that_is_not_shared_stays_per_replica() {
    let url = pg_support::postgres().database().await;
    let c = cluster(&url, &limited(4, false, ""), "").await;
    c.to_next_minute();
    for r in ["a", "b", "c"] {
        for i in 0..4 {
            let resp = c.get(r, READ).await;
            assert_eq!(resp.status, 200, "call {i} on {r}: {}", resp.text());
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    for r in ["a", "b", "c"] {
        assert_eq!(c.get(r, READ).await.status, 429);
    }
    assert_eq!(c.up.count(), 12);
}

/// With the database gone, a shared limit holds on each replica to its share of the count
/// (6 a minute over 3 replicas: 2 each) rather than the whole count: never looser than
/// what the replicas could admit together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_database_each_replica_holds_to_its_share_of_a_shared_limit() {
    // A cluster of its own: this test stops it.
    let pg = pg_support::Postgres::start();
    let url = pg.database().await;
    // The cached view of suspensions stays usable for the whole test.
    let c = cluster(&url, &limited(6, true, "max_staleness = \"120s\""), "").await;
    // Every replica has shared since all three were there (each sees three replicas).
    {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        let t0 = Instant::now();
        let all_there = loop {
            let (n, now): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), (extract(epoch FROM now()) * 1000000)::BIGINT \
                 FROM rate_limit_replicas",
            )
            .fetch_one(&mut db)
            .await
            .unwrap();
            if n == 3 {
                break now;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{n} replicas shared"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        all_shared_since(&mut db, all_there, t0).await;
    }
    pg.stop();
    // Sharing fails within a read's timeout (2 s) on each replica.
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.to_next_minute();
    for r in ["a", "b", "c"] {
        for i in 0..2 {
            let resp = c.get(r, READ).await;
            assert_eq!(resp.status, 200, "call {i} on {r}: {}", resp.text());
        }
        let resp = c.get(r, READ).await;
        assert_eq!(resp.status, 429, "third call on {r}: {}", resp.text());
    }
    assert_eq!(c.up.count(), 6);
    // The failed rounds are counted.
    let m = c.replica("a").metrics().await;
    let failed = m
        .lines()
        .find_map(|l| l.strip_prefix("keygate_rate_limit_shares_total{result=\"failed\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(failed.is_some_and(|n| n >= 1), "{m}");
    pg.restart();
}

// ---------------------------------------------------------------- baselines

/// Baselines are shared through the store: what the agent did on one replica is not new
/// on another once learnt, and a `require_approval` hold set on one holds on every
/// replica until a human resumes the agent on any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baselines_are_shared_between_replicas() {
    let url = pg_support::postgres().database().await;
    let anomalies = "[anomalies]\nlearning_period = \"10m\"\nflush_interval = \"1s\"\n\
                     [anomalies.new_operation]\naction = \"require_approval\"\n";
    let c = cluster(
        &url,
        anomalies,
        "routes = [{ method = \"GET\", path = \"/repos/{owner}/{repo}/issues\", operation = \"list_issues\", tags = [\"read\"] }]\n",
    )
    .await;
    let post = |on: &'static str| {
        let c = &c;
        async move {
            let auth = bearer(&c.iss.token("a1"));
            c.client
                .send(
                    "POST",
                    &c.replica(on).url("/tools/gh/repos/acme/app/issues"),
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    "{}".to_string(),
                )
                .await
        }
    };
    // Learning: one operation on a, another on b.
    const ISSUES: &str = "/tools/gh/repos/acme/app/issues";
    assert_eq!(c.get("a", READ).await.status, 200);
    assert_eq!(c.get("b", ISSUES).await.status, 200);
    let ops = |on: &'static str| {
        let c = &c;
        async move {
            let b = c.admin(on, "GET", "/agents/a1", None).await;
            b["baseline"]["operations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        }
    };
    // Within a few flushes every replica has learnt both (c has seen no call at all).
    let t0 = Instant::now();
    for on in ["a", "b", "c"] {
        while ops(on).await.len() < 2 {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{on} did not learn the others' operations: {:?}",
                ops(on).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Past the learning period: the operation learnt on b is not new on a, nor a's on b.
    c.advance_clocks(Duration::from_secs(11 * 60));
    assert_eq!(c.get("a", ISSUES).await.status, 200);
    assert_eq!(c.get("b", READ).await.status, 200);
    for on in ["a", "b"] {
        let b = c.admin(on, "GET", "/agents/a1", None).await;
        assert_eq!(b["baseline"]["recent_anomalies"], json!([]), "on {on}: {b}");
    }

    // A new operation on a (a write) holds a1's writes: on a at once, on b and c once
    // they read the store.
    let r = post("a").await;
    assert_eq!(r.json()["error"], "approval_required", "{}", r.text());
    let t0 = Instant::now();
    for on in ["b", "c"] {
        loop {
            let b = c.admin(on, "GET", "/agents/a1", None).await;
            if b["baseline"]["require_approval_by"] == "new_operation" {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no hold on {on}: {b}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let r = post("b").await;
    assert_eq!(r.json()["error"], "approval_required", "{}", r.text());
    assert_eq!(c.up.count(), 4, "only the reads reached the tool");
    // A human resumes a1 on c: the hold ends everywhere.
    c.admin("c", "POST", "/agents/a1/resume", None).await;
    let t0 = Instant::now();
    for on in ["a", "b", "c"] {
        loop {
            let b = c.admin(on, "GET", "/agents/a1", None).await;
            if b["baseline"]["require_approval_by"].is_null() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "still held on {on}: {b}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(post("b").await.status, 200);
    assert_eq!(post("a").await.status, 200);
}
