//! Two operational guarantees, end to end on loopback:
//! - an audit log that cannot be written stops service (`audit.fail_closed`, on by
//!   default): `/readyz` is not ready, `keygate_audit_write_failures_total` counts, and new
//!   requests get 503 `audit_unavailable` instead of being served unaudited;
//! - every file keygate creates is owner-only (0600), every directory it creates 0700.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

async fn admin_get(gw: &TestGateway, path: &str) -> Response {
    Client::http1()
        .get(&format!("http://{}{path}", gw.admin_addr), &[])
        .await
}

/// The value of one `/metrics` sample.
async fn metric(gw: &TestGateway, series: &str) -> Option<f64> {
    admin_get(gw, "/metrics")
        .await
        .text()
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|v| v.strip_prefix(' '))
                .map(|v| v.parse().unwrap())
        })
}

#[tokio::test]
async fn an_audit_log_that_cannot_be_written_stops_service() {
    // /dev/full: every write fails with "no space left on device" (root ignores modes, so
    // a read-only file would not do).
    for (fail_closed, second_status) in [(true, 503), (false, 200)] {
        let up = RawUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.secret"), "audit-tool-credential-31f0").unwrap();
        let iss = TestIssuer::new(dir.path(), "audit-issuer", "keygate");
        let cfg = format!(
            "[audit]\npath = \"/dev/full\"\nfail_closed = {fail_closed}\n{}{}[[tools]]\nname = \"t\"\nupstream = {:?}\n[tools.credential]\nprovider = \"static\"\nfrom_file = \"t.secret\"\n",
            iss.toml(),
            agent("a1", "alice@example.com"),
            up.url(),
        );
        let gw = TestGateway::start_in(dir, &cfg).await;
        let auth = bearer(&iss.token("a1"));
        let url = gw.url("/tools/t/x");
        let get = || async {
            Client::http1()
                .get(&url, &[("authorization", auth.as_str())])
                .await
        };
        assert_eq!(admin_get(&gw, "/readyz").await.status, 200);
        // The first request is served; writing its record fails.
        assert_eq!(get().await.status, 200);
        let deadline = Instant::now() + WAIT;
        let ready = loop {
            let r = admin_get(&gw, "/readyz").await;
            if r.status != 200 {
                break r;
            }
            assert!(Instant::now() < deadline, "/readyz stayed ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(ready.status, 503, "{}", ready.text());
        assert_eq!(
            ready.json()["reason"],
            "audit_unavailable",
            "{}",
            ready.text()
        );
        assert!(metric(&gw, "keygate_audit_write_failures_total").await >= Some(1.0));
        assert_eq!(metric(&gw, "keygate_audit_writing").await, Some(0.0));

        let r = get().await;
        assert_eq!(
            r.status,
            second_status,
            "fail_closed = {fail_closed}: {}",
            r.text()
        );
        if fail_closed {
            assert_eq!(r.json()["error"], "audit_unavailable", "{}", r.text());
            assert_eq!(up.count(), 1, "a request was forwarded unaudited");
            assert_eq!(
                metric(&gw, "keygate_audit_unavailable_refusals_total").await,
                Some(1.0)
            );
        } else {
            assert_eq!(up.count(), 2);
        }
    }
}

/// Every path under `root`, depth first.
fn walk(root: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if p.is_dir() {
            walk(&p, out);
        }
    }
}

#[tokio::test]
async fn every_file_and_directory_keygate_creates_is_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data/deep\"\n\
        [audit]\npath = \"logs/a/audit.jsonl\"\n\
        [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"secrets/admin.token\"\n\
        [store]\npath = \"state/db/keygate.db\"\n\
        [[identity.issuers]]\nname = \"dev\"\nissuer = \"dev\"\naudiences = [\"keygate\"]\n\
        jwks_file = \"dev/jwks/jwks.json\"\ndev_signing_key = \"dev/keys/issuer.pem\"\n";
    let gw = TestGateway::start_in(dir, cfg).await;
    // A request, so that the audit log and the store are written.
    let r = Client::http1().get(&gw.url("/tools/none/x"), &[]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    gw.runtime.shared.audit.close().await;
    let (s, _) = gw.admin("GET", "/approvals", None).await;
    assert_eq!(s, 200);

    let root = gw.dir.path();
    let mut created = Vec::new();
    walk(root, &mut created);
    // What the test wrote itself.
    created.retain(|p| {
        let rel = p.strip_prefix(root).unwrap();
        !(rel == Path::new("keygate.toml") || rel.starts_with("policies"))
    });
    let rel: Vec<String> = created
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect();
    for want in [
        "logs/a/audit.jsonl",
        "secrets/admin.token",
        "state/db/keygate.db",
        "state/db/keygate.db-wal",
        "state/db/keygate.db-shm",
        "dev/keys/issuer.pem",
        "dev/jwks/jwks.json",
    ] {
        assert!(rel.iter().any(|r| r == want), "{want} not created: {rel:?}");
    }
    assert!(
        rel.iter()
            .any(|r| r.starts_with("data/deep/") && r.ends_with(".pem")),
        "no signing key in the data directory: {rel:?}"
    );
    let wrong: Vec<String> = created
        .iter()
        .filter_map(|p| {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            (mode != want)
                .then(|| format!("{} is {mode:o}", p.strip_prefix(root).unwrap().display()))
        })
        .collect();
    assert!(wrong.is_empty(), "not owner-only: {wrong:?}");
}
