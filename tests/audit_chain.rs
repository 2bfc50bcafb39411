//! The tamper-evident audit log: logs written by the real gateway (and by the writer
//! directly) verify; every kind of tampering is caught, with its kind and position; a
//! restart continues the chain; rotated files verify together; `keygate audit verify`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use keygate::config::{AuditFile, AuditTarget};
use keygate::telemetry::audit_chain::{verify_files, Finding, Problem, GENESIS};
use keygate::telemetry::audit_log::{AuditLog, AuditRecord};
use std::path::{Path, PathBuf};
use std::process::Command;

const SECRET_NAME: &str = "AUDIT_CHAIN_SECRET";

fn tool_config(dir: &Path, iss: &TestIssuer, up: &RawUpstream, audit: &str) -> String {
    format!(
        "{audit}{}{}{}",
        iss.toml(),
        agent("a1", "o@x"),
        static_tool(
            "t",
            &up.url(),
            &secret_file(dir, SECRET_NAME, "chain-secret")
        )
    )
}

/// Sends `n` requests, to /tools/t/r{from}…, each answered 200.
async fn requests(gw: &TestGateway, iss: &TestIssuer, from: usize, n: usize) {
    let c = Client::http1();
    let auth = bearer(&iss.token("a1"));
    for i in from..from + n {
        let r = c
            .get(
                &gw.url(&format!("/tools/t/r{i}")),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// A gateway log of `n` records, written by keygate; returns (its lines, a tempdir).
async fn gateway_log(n: usize) -> (Vec<String>, tempfile::TempDir) {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "chain-iss", "keygate");
    let cfg = tool_config(dir.path(), &iss, &up, "");
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    requests(&gw, &iss, 1, n).await;
    gw.stop().await;
    let text = std::fs::read_to_string(&gw.audit_path).unwrap();
    let lines: Vec<String> = text.lines().map(|l| format!("{l}\n")).collect();
    assert_eq!(lines.len(), n);
    let out = tempfile::tempdir().unwrap();
    (lines, out)
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.concat()).unwrap();
    p
}

fn tampered(dir: &Path, name: &str, lines: &[String]) -> Finding {
    let p = write_lines(dir, name, lines);
    verify_files(&[&p]).expect_err(name)
}

#[tokio::test]
async fn a_gateway_log_verifies_and_every_kind_of_tampering_is_caught() {
    let (good, dir) = gateway_log(6).await;
    let p = write_lines(dir.path(), "good.jsonl", &good);
    let s = verify_files(&[&p]).unwrap();
    assert_eq!((s.records, s.first_seq, s.last_seq), (6, Some(1), Some(6)));
    assert!(s.continues_from.is_none());
    for (i, l) in good.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["seq"], i as u64 + 1);
        assert_eq!(v["path"], format!("/tools/t/r{}", i + 1));
        assert_eq!(v["hash"].as_str().unwrap().len(), 64);
        if i == 0 {
            assert_eq!(v["prev"], GENESIS);
        }
        // The hash is SHA-256 over the line without its hash member.
        let canonical = format!("{}}}", &l[..l.len() - 1 - 75]);
        assert_eq!(
            keygate::telemetry::audit_chain::sha256_hex(canonical.as_bytes()),
            v["hash"].as_str().unwrap()
        );
    }

    // A field value of record 3 edited.
    let mut lines = good.clone();
    lines[2] = lines[2].replace("/tools/t/r3", "/tools/t/rX");
    let f = tampered(dir.path(), "edited.jsonl", &lines);
    assert_eq!(
        (f.kind, f.line, f.seq),
        (Problem::Edited, 3, Some(3)),
        "{f}"
    );
    assert!(f.detail.contains("hash mismatch"), "{f}");

    // Record 3 deleted.
    let mut lines = good.clone();
    lines.remove(2);
    let f = tampered(dir.path(), "deleted.jsonl", &lines);
    assert_eq!(
        (f.kind, f.line, f.seq),
        (Problem::Deleted, 3, Some(4)),
        "{f}"
    );
    assert!(f.detail.contains("expected seq 3, found seq 4"), "{f}");

    // A copy of record 2 inserted after record 4.
    let mut lines = good.clone();
    lines.insert(4, good[1].clone());
    let f = tampered(dir.path(), "inserted.jsonl", &lines);
    assert_eq!(
        (f.kind, f.line, f.seq),
        (Problem::Inserted, 5, Some(2)),
        "{f}"
    );
    assert!(f.detail.contains("a copy of seq 2 (line 2"), "{f}");

    // Records 2 and 3 swapped.
    let mut lines = good.clone();
    lines.swap(1, 2);
    let f = tampered(dir.path(), "swapped.jsonl", &lines);
    assert_eq!(
        (f.kind, f.line, f.seq),
        (Problem::Reordered, 2, Some(3)),
        "{f}"
    );

    // The last line truncated.
    let mut lines = good.clone();
    let last = lines.last_mut().unwrap();
    last.truncate(last.len() - 30);
    let f = tampered(dir.path(), "truncated.jsonl", &lines);
    assert_eq!((f.kind, f.line), (Problem::Truncated, 6), "{f}");
    assert_eq!(f.last_good_seq, Some(5));

    // The hash of record 4 itself edited.
    let mut lines = good.clone();
    let v: serde_json::Value = serde_json::from_str(&lines[3]).unwrap();
    let h = v["hash"].as_str().unwrap();
    let forged = format!("{}{}", if h.starts_with('0') { "1" } else { "0" }, &h[1..]);
    lines[3] = lines[3].replace(h, &forged);
    let f = tampered(dir.path(), "hash-edited.jsonl", &lines);
    assert_eq!(
        (f.kind, f.line, f.seq),
        (Problem::Edited, 4, Some(4)),
        "{f}"
    );

    // The message names the kind, the file, the line and the seq.
    let msg = f.to_string();
    assert!(msg.starts_with("edited: "), "{msg}");
    assert!(msg.contains("hash-edited.jsonl line 4 (seq 4)"), "{msg}");
}

#[tokio::test]
async fn a_restarted_gateway_continues_the_chain() {
    let up = RawUpstream::start().await;
    let keep = tempfile::tempdir().unwrap();
    let audit = keep.path().join("audit.jsonl");
    let section = format!("[audit]\npath = {:?}\n", audit.display().to_string());
    for (from, n) in [(1, 3), (4, 2), (6, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let iss = TestIssuer::new(dir.path(), "chain-iss", "keygate");
        let cfg = tool_config(dir.path(), &iss, &up, &section);
        let mut gw = TestGateway::start_in(dir, &cfg).await;
        requests(&gw, &iss, from, n).await;
        gw.stop().await;
    }
    let s = verify_files(&[&audit]).unwrap();
    assert_eq!((s.records, s.first_seq, s.last_seq), (6, Some(1), Some(6)));
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains("audit_chain_restart"));
}

#[tokio::test]
async fn a_gateway_on_a_log_with_a_broken_last_line_starts_a_new_chain_and_says_so() {
    let up = RawUpstream::start().await;
    let keep = tempfile::tempdir().unwrap();
    let audit = keep.path().join("audit.jsonl");
    // An unchained line from an older keygate, then one cut short by a crash.
    std::fs::write(&audit, "{\"old\":\"unchained\"}\n{\"time\":\"2026-").unwrap();
    let section = format!("[audit]\npath = {:?}\n", audit.display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let iss = TestIssuer::new(dir.path(), "chain-iss", "keygate");
    let cfg = tool_config(dir.path(), &iss, &up, &section);
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    requests(&gw, &iss, 1, 2).await;
    gw.stop().await;
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<String> = text.lines().map(|l| format!("{l}\n")).collect();
    assert_eq!(lines.len(), 5, "{text}");
    let marker: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(marker["event"], "audit_chain_restart");
    assert_eq!(
        (marker["seq"].as_u64(), marker["prev"].as_str()),
        (Some(1), Some(GENESIS))
    );
    assert!(
        marker["reason"].as_str().unwrap().contains("cut short"),
        "{marker}"
    );
    // verify reports the first broken line; from the marker on, the chain is intact.
    let f = verify_files(&[&audit]).unwrap_err();
    assert_eq!((f.kind, f.line), (Problem::Malformed, 1), "{f}");
    let rest = write_lines(keep.path(), "rest.jsonl", &lines[2..]);
    let s = verify_files(&[&rest]).unwrap();
    assert_eq!((s.records, s.first_seq, s.last_seq), (3, Some(1), Some(3)));
}

#[tokio::test]
async fn size_rotation_keeps_the_chain_across_files() {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let audit = logs.join("audit.jsonl");
    let section = format!(
        "[audit]\npath = {:?}\nrotate_bytes = 1024\n",
        audit.display().to_string()
    );
    let iss = TestIssuer::new(dir.path(), "chain-iss", "keygate");
    let cfg = tool_config(dir.path(), &iss, &up, &section);
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    requests(&gw, &iss, 1, 8).await;
    gw.stop().await;

    let mut rotated: Vec<PathBuf> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &audit)
        .collect();
    rotated.sort();
    assert!(rotated.len() >= 3, "{rotated:?}");
    for p in &rotated {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("audit.jsonl.") && name.contains('Z'),
            "{name}"
        );
        assert!(std::fs::metadata(p).unwrap().len() <= 1024, "{name}");
    }
    let mut all = rotated.clone();
    all.push(audit.clone());
    let s = verify_files(&all).unwrap();
    assert_eq!(
        (s.records, s.files, s.first_seq, s.last_seq),
        (8, all.len(), Some(1), Some(8))
    );

    // A middle file left out (deleted): a gap at the start of the next file.
    let mut without = all.clone();
    let gone = without.remove(1);
    let f = verify_files(&without).unwrap_err();
    assert_eq!((f.kind, f.line), (Problem::Deleted, 1), "{f}");
    assert_eq!(f.file, without[1]);
    assert!(f.detail.contains("rotated file"), "{f}");
    assert!(!gone.as_os_str().is_empty());

    // Only the later files: verified from their first record, and said so.
    let s = verify_files(&all[1..]).unwrap();
    assert!(s.continues_from.is_some());
    assert!(s.first_seq.unwrap() > 1);
    assert!(s.to_string().contains("verified from seq"), "{s}");
}

fn record(i: u64) -> AuditRecord {
    AuditRecord {
        agent_id: Some("agent-1".into()),
        agent_owner: Some("owner@example.com".into()),
        identity: Some("jwt"),
        tool: Some("t".into()),
        tags: vec!["read".into()],
        policies: vec!["p".into()],
        decision: "allow",
        error_detail: Some("a \"quoted\" detail }".into()),
        duration_ms: 0.5,
        bytes_out: 2,
        credential_provider: Some("static"),
        stripped: vec!["header:cookie".into()],
        ..AuditRecord::event(
            humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            format!("req-{i}").into(),
            "127.0.0.1:50000".into(),
            "read".into(),
            "GET".into(),
            format!("/tools/t/{i}"),
            200,
        )
    }
}

#[tokio::test]
async fn the_writer_chains_records_queued_from_many_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let target = AuditTarget::File(AuditFile {
        path: audit.clone(),
        rotate_bytes: Some(64 * 1024),
        rotate_every: None,
    });
    let log = AuditLog::open(&target).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250u64 {
                log.record(record(t * 1000 + i));
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    log.close().await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &audit)
        .collect();
    files.sort();
    assert!(files.len() > 1);
    files.push(audit);
    let s = verify_files(&files).unwrap();
    assert_eq!((s.records, s.last_seq), (2000, Some(2000)));
}

#[tokio::test]
async fn keygate_audit_verify_exits_0_when_intact_and_1_when_tampered() {
    let (good, dir) = gateway_log(4).await;
    let p = write_lines(dir.path(), "audit.jsonl", &good);
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["audit", "verify"])
        .arg(&p)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("4 records in 1 file(s), chain intact, first seq 1, last seq 4"),
        "{stdout}"
    );

    let mut lines = good.clone();
    lines.remove(2);
    let q = write_lines(dir.path(), "cut.jsonl", &lines);
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["audit", "verify"])
        .arg(&p)
        .arg(&q)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The second file restarts the chain at seq 1 after seq 4 of the first.
    assert!(stderr.contains("restarted: "), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["audit", "verify"])
        .arg(&q)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("audit chain broken: deleted: ")
            && stderr.contains("cut.jsonl line 3 (seq 4)")
            && stderr.contains("expected seq 3, found seq 4"),
        "{stderr}"
    );
}

#[test]
fn rotation_settings_are_validated() {
    let parse = |audit: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = TestGateway::write_config(&dir, audit);
        let text = std::fs::read_to_string(&path).unwrap();
        keygate::config::parse(&path, &text)
    };
    let s = parse("[audit]\npath = \"a.jsonl\"\nrotate_bytes = 1048576\nrotate_every = \"24h\"\n")
        .unwrap();
    match s.audit {
        AuditTarget::File(f) => {
            assert!(f.path.ends_with("a.jsonl"));
            assert_eq!(f.rotate_bytes, Some(1_048_576));
            assert_eq!(f.rotate_every, Some(std::time::Duration::from_secs(86_400)));
        }
        other => panic!("{other:?}"),
    }
    let s = parse("[audit]\npath = \"a.jsonl\"\n").unwrap();
    assert!(matches!(
        s.audit,
        AuditTarget::File(AuditFile {
            rotate_bytes: None,
            rotate_every: None,
            ..
        })
    ));
    for (audit, key) in [
        (
            "path = \"a.jsonl\"\nrotate_bytes = 1000\n",
            "audit.rotate_bytes",
        ),
        (
            "path = \"a.jsonl\"\nrotate_every = \"500ms\"\n",
            "audit.rotate_every",
        ),
        (
            "path = \"stdout\"\nrotate_bytes = 4096\n",
            "audit.rotate_bytes",
        ),
    ] {
        let e = parse(&format!("[audit]\n{audit}")).expect_err(audit);
        assert!(e.0.iter().any(|e| e.key == key), "{audit}: {e}");
    }
}
