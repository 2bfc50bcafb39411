//! One suite of store behaviour, run against both stores: SQLite (the embedded default)
//! and PostgreSQL (replicas; a real server from Debian's `postgresql`, started once for
//! this test binary by `tests/postgres/cluster.sh`, a fresh database per test).
//!
//! Run it alone with `cargo test --test store`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

mod pg_support;

use keygate::store::*;
use std::sync::Arc;
use std::time::Duration;

const T0: Millis = 1_700_000_000_000;
const MINUTE: Millis = 60_000;

fn new_approval(agent: &str, digest: &str) -> NewApproval {
    NewApproval {
        agent_id: agent.to_owned(),
        agent_owner: "alice@example.com".to_owned(),
        tool: "aws".to_owned(),
        operation: "iam:CreateAccessKey".to_owned(),
        identity_kind: Some("aws-access-key".to_owned()),
        digest: digest.to_owned(),
        method: "POST".to_owned(),
        path: "/".to_owned(),
        policies: vec!["gate-identity-creation".to_owned(), "p2".to_owned()],
        request: Some("Action=CreateAccessKey&UserName=bob".to_owned()),
        approvers_needed: 1,
        pending_expires_at: T0 + 10 * MINUTE,
    }
}

fn approve_until(expires_at: Millis) -> Approve {
    Approve {
        approver: "bob@example.com".to_owned(),
        ticket: Some("SEC-42".to_owned()),
        identity_owner: "carol@example.com".to_owned(),
        note: Some("for the nightly export".to_owned()),
        expires_at,
        review_by: Some(T0 + 90 * 24 * 60 * MINUTE),
    }
}

pub async fn the_pending_cap_refuses_new_approvals_and_stores_nothing(store: Arc<dyn Store>) {
    for d in ["d1", "d2", "d3"] {
        let (_, created) = store
            .open_approval(new_approval("agent-1", d), T0, 3)
            .await
            .unwrap();
        assert!(created);
    }
    // (agent, new digest, at, expect created / refused)
    let cases = [
        ("agent-1", "d4", T0, Err(3)),
        ("agent-1", "d1", T0, Ok(false)), // the existing approval is still returned
        ("agent-2", "d4", T0, Ok(true)),  // other agents are not affected
        // Once the pending ones expire they no longer count.
        ("agent-1", "d5", T0 + 11 * MINUTE, Ok(true)),
    ];
    for (agent, digest, at, want) in cases {
        let mut new = new_approval(agent, digest);
        new.pending_expires_at = at + 10 * MINUTE;
        let got = match store.open_approval(new, at, 3).await {
            Ok((_, created)) => Ok(created),
            Err(StoreError::TooManyPending(n)) => Err(n),
            Err(e) => panic!("{agent} {digest}: {e}"),
        };
        assert_eq!(got, want, "{agent} {digest}");
    }
    let all = store.approvals(None, 100).await.unwrap();
    assert!(all
        .iter()
        .all(|a| a.digest != "d4" || a.agent_id == "agent-2"));
}

/// An approval two must approve: the first approval only records who; the same approver
/// again is refused; a second, different one decides; a denial needs no second.
pub async fn two_approvers_must_differ(store: Arc<dyn Store>) {
    let mut new = new_approval("agent-1", "d2a");
    new.approvers_needed = 2;
    let (a, _) = store.open_approval(new, T0, 10).await.unwrap();
    assert_eq!((a.approvers_needed, a.first_approver.as_deref()), (2, None));
    let first = store
        .approve(&a.id, approve_until(T0 + 60 * MINUTE), T0 + 1)
        .await
        .unwrap();
    assert_eq!(first.status, ApprovalStatus::Pending);
    assert_eq!(first.first_approver.as_deref(), Some("bob@example.com"));
    assert_eq!(first.approver, None);
    assert!(store.consume(&a.id, "d2a", T0 + 2).await.unwrap().is_none());
    let mut again = approve_until(T0 + 60 * MINUTE);
    again.approver = " BOB@example.com".into();
    assert!(matches!(
        store.approve(&a.id, again, T0 + 3).await,
        Err(StoreError::Conflict(_))
    ));
    let mut second = approve_until(T0 + 60 * MINUTE);
    second.approver = "erin@example.com".into();
    let done = store.approve(&a.id, second, T0 + 4).await.unwrap();
    assert_eq!(done.status, ApprovalStatus::Approved);
    assert_eq!(done.approver.as_deref(), Some("erin@example.com"));
    assert_eq!(done.first_approver.as_deref(), Some("bob@example.com"));
    assert!(store.consume(&a.id, "d2a", T0 + 5).await.unwrap().is_some());

    // Denied after a first approval.
    let mut new = new_approval("agent-1", "d2b");
    new.approvers_needed = 2;
    let (b, _) = store.open_approval(new, T0, 10).await.unwrap();
    store
        .approve(&b.id, approve_until(T0 + 60 * MINUTE), T0 + 1)
        .await
        .unwrap();
    let denied = store
        .deny(&b.id, "erin@example.com", None, T0 + 2)
        .await
        .unwrap();
    assert_eq!(denied.status, ApprovalStatus::Denied);
}

pub async fn approvals_are_counted_by_status(store: Arc<dyn Store>) {
    assert_eq!(
        store.approval_counts(T0).await.unwrap(),
        ApprovalCounts::default()
    );
    for d in ["d1", "d2", "d3"] {
        store
            .open_approval(new_approval("agent-1", d), T0, 1000)
            .await
            .unwrap();
    }
    let (a, _) = store
        .open_approval(new_approval("agent-2", "d1"), T0, 1000)
        .await
        .unwrap();
    store
        .deny(&a.id, "bob@example.com", None, T0 + 1)
        .await
        .unwrap();
    let counts = store.approval_counts(T0 + 2).await.unwrap();
    assert_eq!(counts.pending, 3);
    assert_eq!(
        counts.by_status,
        [("denied".to_string(), 1), ("pending".to_string(), 3)]
    );
    // Past their pending expiry they are not counted as pending.
    assert_eq!(
        store
            .approval_counts(T0 + 11 * MINUTE)
            .await
            .unwrap()
            .pending,
        0
    );
}

pub async fn open_approval_is_idempotent_per_key(store: Arc<dyn Store>) {
    let (a, created) = store
        .open_approval(new_approval("agent-1", "d1"), T0, 1000)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert!(a.id.starts_with("apr_") && a.id.len() == 24);
    assert_eq!(a.created_at, T0);
    assert_eq!(a.policies, vec!["gate-identity-creation", "p2"]);
    assert_eq!(a.identity_kind.as_deref(), Some("aws-access-key"));
    assert_eq!(a.decided_at, None);

    let (b, created) = store
        .open_approval(new_approval("agent-1", "d1"), T0 + 1000, 1000)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(b, a);

    let (c, created) = store
        .open_approval(new_approval("agent-1", "d2"), T0, 1000)
        .await
        .unwrap();
    assert!(created);
    assert_ne!(c.id, a.id);
    let (d, created) = store
        .open_approval(new_approval("agent-2", "d1"), T0, 1000)
        .await
        .unwrap();
    assert!(created);
    assert_ne!(d.id, a.id);

    assert_eq!(store.approval(&a.id).await.unwrap(), Some(a));
    assert_eq!(store.approval("apr_nosuch").await.unwrap(), None);
}

pub async fn concurrent_open_approval_creates_one(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .open_approval(new_approval("agent-1", "d1"), T0, 1000)
                    .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut created = 0;
    for task in tasks {
        let (a, c) = task.await.unwrap().unwrap();
        ids.push(a.id);
        created += usize::from(c);
    }
    assert_eq!(created, 1);
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(store.approvals(None, 100).await.unwrap().len(), 1);
}

pub async fn approve_then_consume_once(store: Arc<dyn Store>) {
    let (a, _) = store
        .open_approval(new_approval("agent-1", "d1"), T0, 1000)
        .await
        .unwrap();
    let approved = store
        .approve(&a.id, approve_until(T0 + 5 * MINUTE), T0 + MINUTE)
        .await
        .unwrap();
    assert_eq!(approved.status, ApprovalStatus::Approved);
    assert_eq!(approved.decided_at, Some(T0 + MINUTE));
    assert_eq!(approved.approver.as_deref(), Some("bob@example.com"));
    assert_eq!(approved.ticket.as_deref(), Some("SEC-42"));
    assert_eq!(
        approved.identity_owner.as_deref(),
        Some("carol@example.com")
    );
    assert_eq!(approved.note.as_deref(), Some("for the nightly export"));
    assert_eq!(approved.approval_expires_at, Some(T0 + 5 * MINUTE));
    assert_eq!(approved.review_by, Some(T0 + 90 * 24 * 60 * MINUTE));

    // While approved and unused, it is the active approval.
    let (same, created) = store
        .open_approval(new_approval("agent-1", "d1"), T0 + 2 * MINUTE, 1000)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(same.id, a.id);
    assert_eq!(same.status, ApprovalStatus::Approved);

    let used = store
        .consume(&a.id, "d1", T0 + 2 * MINUTE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.status, ApprovalStatus::Used);
    assert_eq!(used.used_at, Some(T0 + 2 * MINUTE));
    assert_eq!(
        store.consume(&a.id, "d1", T0 + 2 * MINUTE).await.unwrap(),
        None
    );

    let (next, created) = store
        .open_approval(new_approval("agent-1", "d1"), T0 + 3 * MINUTE, 1000)
        .await
        .unwrap();
    assert!(created);
    assert_ne!(next.id, a.id);
    assert_eq!(next.status, ApprovalStatus::Pending);
    assert_eq!(
        store.approval(&a.id).await.unwrap().unwrap().status,
        ApprovalStatus::Used
    );
    // Approving a used approval is a conflict.
    let err = store
        .approve(&a.id, approve_until(T0 + 9 * MINUTE), T0 + 3 * MINUTE)
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m == "approval is used, not pending"));
}

pub async fn concurrent_consume_succeeds_once(store: Arc<dyn Store>) {
    let (a, _) = store
        .open_approval(new_approval("agent-1", "d1"), T0, 1000)
        .await
        .unwrap();
    store
        .approve(&a.id, approve_until(T0 + 5 * MINUTE), T0)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let id = a.id.clone();
            tokio::spawn(async move { store.consume(&id, "d1", T0 + MINUTE).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if let Some(used) = task.await.unwrap().unwrap() {
            assert_eq!(used.status, ApprovalStatus::Used);
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

pub async fn consume_requires_approved_and_matching_digest(store: Arc<dyn Store>) {
    let (pending, _) = store
        .open_approval(new_approval("agent-1", "d1"), T0, 1000)
        .await
        .unwrap();
    assert_eq!(store.consume(&pending.id, "d1", T0).await.unwrap(), None);

    store
        .approve(&pending.id, approve_until(T0 + 5 * MINUTE), T0)
        .await
        .unwrap();
    assert_eq!(store.consume(&pending.id, "other", T0).await.unwrap(), None);
    // The wrong digest did not use it up.
    assert!(store
        .consume(&pending.id, "d1", T0)
        .await
        .unwrap()
        .is_some());

    let (denied, _) = store
        .open_approval(new_approval("agent-1", "d2"), T0, 1000)
        .await
        .unwrap();
    store
        .deny(&denied.id, "bob@example.com", None, T0)
        .await
        .unwrap();
    assert_eq!(store.consume(&denied.id, "d2", T0).await.unwrap(), None);
    assert_eq!(store.consume("apr_nosuch", "d2", T0).await.unwrap(), None);
}

pub async fn deny_then_approve_conflicts(store: Arc<dyn Store>) {
    let (a, _) = store
        .open_approval(new_approval("agent-1", "d1"), T0, 1000)
        .await
        .unwrap();
    let denied = store
        .deny(&a.id, "bob@example.com", Some("not this week"), T0 + MINUTE)
        .await
        .unwrap();
    assert_eq!(denied.status, ApprovalStatus::Denied);
    assert_eq!(denied.approver.as_deref(), Some("bob@example.com"));
    assert_eq!(denied.note.as_deref(), Some("not this week"));
    assert_eq!(denied.decided_at, Some(T0 + MINUTE));
    assert_eq!(denied.approval_expires_at, None);

    let err = store
        .approve(&a.id, approve_until(T0 + 5 * MINUTE), T0 + 2 * MINUTE)
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m == "approval is denied, not pending"));
    let err = store
        .deny(&a.id, "bob@example.com", None, T0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)));

    let err = store
        .approve("apr_nosuch", approve_until(T0 + 5 * MINUTE), T0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound));
    let err = store.deny("apr_nosuch", "bob", None, T0).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound));

    // A denied request may be asked again: it is no longer active.
    let (again, created) = store
        .open_approval(new_approval("agent-1", "d1"), T0, 1000)
        .await
        .unwrap();
    assert!(created);
    assert_ne!(again.id, a.id);

    // An approval must expire in the future.
    let err = store
        .approve(&again.id, approve_until(T0), T0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)));
    assert_eq!(
        store.approval(&again.id).await.unwrap().unwrap().status,
        ApprovalStatus::Pending
    );
}

pub async fn expired_approvals_are_never_active(store: Arc<dyn Store>) {
    // Pending past its expiry: open_approval expires it and opens a new one.
    let (a, _) = store
        .open_approval(new_approval("agent-1", "d1"), T0, 1000)
        .await
        .unwrap();
    let late = a.pending_expires_at;
    let (b, created) = store
        .open_approval(new_approval("agent-1", "d1"), late, 1000)
        .await
        .unwrap();
    assert!(created);
    assert_ne!(b.id, a.id);
    assert_eq!(
        store.approval(&a.id).await.unwrap().unwrap().status,
        ApprovalStatus::Expired
    );
    assert_eq!(
        store
            .approvals(Some(ApprovalStatus::Expired), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // Pending past its expiry cannot be approved; it is marked expired.
    let (c, _) = store
        .open_approval(new_approval("agent-1", "d2"), T0, 1000)
        .await
        .unwrap();
    let err = store
        .approve(&c.id, approve_until(late + 5 * MINUTE), late)
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m == "approval is expired, not pending"));
    assert_eq!(
        store.approval(&c.id).await.unwrap().unwrap().status,
        ApprovalStatus::Expired
    );

    // Approved past its expiry cannot be consumed, and is not active.
    let (d, _) = store
        .open_approval(new_approval("agent-1", "d3"), T0, 1000)
        .await
        .unwrap();
    store
        .approve(&d.id, approve_until(T0 + MINUTE), T0)
        .await
        .unwrap();
    assert_eq!(store.consume(&d.id, "d3", T0 + MINUTE).await.unwrap(), None);
    let (e, created) = store
        .open_approval(new_approval("agent-1", "d3"), T0 + MINUTE, 1000)
        .await
        .unwrap();
    assert!(created);
    assert_ne!(e.id, d.id);
    assert_eq!(
        store.approval(&d.id).await.unwrap().unwrap().status,
        ApprovalStatus::Expired
    );

    // The sweep expires what is stale everywhere.
    let (f, _) = store
        .open_approval(new_approval("agent-9", "d9"), T0, 1000)
        .await
        .unwrap();
    assert_eq!(store.expire(T0 + 5 * MINUTE).await.unwrap(), 0);
    assert!(store.expire(late + 20 * MINUTE).await.unwrap() >= 1);
    assert_eq!(
        store.approval(&f.id).await.unwrap().unwrap().status,
        ApprovalStatus::Expired
    );
}

pub async fn approvals_list_newest_first_with_limit(store: Arc<dyn Store>) {
    for (i, digest) in ["d1", "d2", "d3"].iter().enumerate() {
        let at = T0 + i64::try_from(i).unwrap() * MINUTE;
        store
            .open_approval(new_approval("agent-1", digest), at, 1000)
            .await
            .unwrap();
    }
    let listed = store.approvals(None, 2).await.unwrap();
    let digests: Vec<_> = listed.iter().map(|a| a.digest.as_str()).collect();
    assert_eq!(digests, ["d3", "d2"]);
    assert!(store
        .approvals(Some(ApprovalStatus::Denied), 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn inventory_round_trips_newest_first(store: Arc<dyn Store>) {
    let (a, _) = store
        .open_approval(new_approval("agent-1", "d1"), T0, 1000)
        .await
        .unwrap();
    let first = store
        .record_identity(NewIdentity {
            kind: "aws-access-key".to_owned(),
            tool: "aws".to_owned(),
            operation: "iam:CreateAccessKey".to_owned(),
            identifier: Some("AKIAIOSFODNN7EXAMPLE".to_owned()),
            agent_id: "agent-1".to_owned(),
            approver: Some("bob@example.com".to_owned()),
            owner: "carol@example.com".to_owned(),
            ticket: Some("SEC-42".to_owned()),
            approval_id: Some(a.id.clone()),
            request_id: "req-1".to_owned(),
            created_at: T0,
            review_by: Some(T0 + 90 * 24 * 60 * MINUTE),
        })
        .await
        .unwrap();
    assert!(first.id.starts_with("idn_") && first.id.len() == 24);
    let second = store
        .record_identity(NewIdentity {
            kind: "github-token".to_owned(),
            tool: "github".to_owned(),
            operation: "createInstallationToken".to_owned(),
            identifier: None,
            agent_id: "agent-2".to_owned(),
            approver: None,
            owner: "dave@example.com".to_owned(),
            ticket: None,
            approval_id: None,
            request_id: "req-2".to_owned(),
            created_at: T0 + MINUTE,
            review_by: None,
        })
        .await
        .unwrap();
    assert_eq!(store.inventory().await.unwrap(), vec![second, first]);

    // An identity cannot point at an approval that does not exist.
    let err = store
        .record_identity(NewIdentity {
            kind: "k".to_owned(),
            tool: "t".to_owned(),
            operation: "o".to_owned(),
            identifier: None,
            agent_id: "agent-3".to_owned(),
            approver: None,
            owner: "o".to_owned(),
            ticket: None,
            approval_id: Some("apr_nosuch".to_owned()),
            request_id: "req-3".to_owned(),
            created_at: T0,
            review_by: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)));
}

pub async fn suspend_list_resume(store: Arc<dyn Store>) {
    store
        .suspend("agent-1", "bob@example.com", Some("odd traffic"), T0)
        .await
        .unwrap();
    store
        .suspend("agent-2", "bob@example.com", None, T0 + MINUTE)
        .await
        .unwrap();
    assert_eq!(
        store.suspensions().await.unwrap(),
        vec![
            Suspension {
                agent_id: "agent-2".to_owned(),
                by: "bob@example.com".to_owned(),
                reason: None,
                at: T0 + MINUTE,
            },
            Suspension {
                agent_id: "agent-1".to_owned(),
                by: "bob@example.com".to_owned(),
                reason: Some("odd traffic".to_owned()),
                at: T0,
            },
        ]
    );
    assert!(store.resume("agent-1").await.unwrap());
    assert!(!store.resume("agent-1").await.unwrap());
    let left = store.suspensions().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].agent_id, "agent-2");
}

pub async fn a_denial_is_found_for_its_request_only(store: Arc<dyn Store>) {
    let (a, _) = store
        .open_approval(new_approval("agent-1", "d1"), T0, 1000)
        .await
        .unwrap();
    assert_eq!(
        a.request.as_deref(),
        Some("Action=CreateAccessKey&UserName=bob")
    );
    assert!(store
        .denied_since("agent-1", "iam:CreateAccessKey", "d1", 0)
        .await
        .unwrap()
        .is_none());
    store.deny(&a.id, "bob", None, T0 + 1).await.unwrap();
    let d = store
        .denied_since("agent-1", "iam:CreateAccessKey", "d1", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.id, a.id);
    assert!(store
        .denied_since("agent-1", "iam:CreateAccessKey", "d2", 0)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .denied_since("agent-2", "iam:CreateAccessKey", "d1", 0)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .denied_since("agent-1", "iam:CreateAccessKey", "d1", T0 + 1)
        .await
        .unwrap()
        .is_none());
}

/// Agent keys and captured secrets: recorded, listed, shared, re-sealed, revoked with
/// their identity (keys included), in one transaction each.
pub async fn keys_and_captured_secrets_round_trip(store: Arc<dyn Store>) {
    let identity = store
        .record_identity(NewIdentity {
            kind: "aws-access-key".into(),
            tool: "aws".into(),
            operation: "iam:CreateAccessKey".into(),
            identifier: Some("AKIAEXAMPLE".into()),
            agent_id: "agent-1".into(),
            approver: Some("bob@example.com".into()),
            owner: "carol@example.com".into(),
            ticket: None,
            approval_id: None,
            request_id: "req-1".into(),
            created_at: T0,
            review_by: None,
        })
        .await
        .unwrap();
    let secret = CapturedSecret {
        handle_hash: "h1".into(),
        identity_id: identity.id.clone(),
        tool: "aws".into(),
        agent_id: "agent-1".into(),
        shared_with: vec![],
        field: "SecretAccessKey".into(),
        shape: Shape::AwsSecretKey,
        sealed: Sealed {
            key_id: "k1".into(),
            nonce: vec![1; 12],
            ciphertext: vec![2; 48],
        },
        created_at: T0,
    };
    let key = AgentKey {
        key_hash: "kh1".into(),
        agent_id: "agent-1".into(),
        created_by: format!("capture:{}", identity.id),
        created_at: T0,
        revoked_at: None,
    };
    store.record_captured(&secret, Some(&key)).await.unwrap();
    store
        .add_agent_key(&AgentKey {
            key_hash: "kh2".into(),
            agent_id: "agent-2".into(),
            created_by: "admin".into(),
            created_at: T0 + 1,
            revoked_at: None,
        })
        .await
        .unwrap();
    let keys = store.agent_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.key_hash.as_str()).collect::<Vec<_>>(),
        ["kh1", "kh2"]
    );
    let got = store.captured().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sealed, secret.sealed);
    assert_eq!(got[0].shape, Shape::AwsSecretKey);
    assert_eq!(store.inventory().await.unwrap()[0].captured, 1);

    assert_eq!(
        store.share_captured(&identity.id, "agent-3").await.unwrap(),
        1
    );
    assert_eq!(
        store.share_captured(&identity.id, "agent-3").await.unwrap(),
        1
    );
    assert_eq!(store.captured().await.unwrap()[0].shared_with, ["agent-3"]);
    let resealed = Sealed {
        key_id: "k2".into(),
        nonce: vec![3; 12],
        ciphertext: vec![4; 48],
    };
    store.reseal("h1", &resealed).await.unwrap();
    assert_eq!(store.captured().await.unwrap()[0].sealed, resealed);

    assert!(store.revoke_agent_key("kh2", T0 + 5).await.unwrap());
    assert!(!store.revoke_agent_key("kh2", T0 + 6).await.unwrap());
    let revoked = store
        .revoke_identity(&identity.id, "dave", T0 + 10)
        .await
        .unwrap();
    assert!(!revoked.already);
    let mut handles = revoked.handles.clone();
    handles.sort();
    assert_eq!(handles, ["h1", "kh1"]);
    assert!(store.captured().await.unwrap().is_empty());
    assert!(store
        .agent_keys()
        .await
        .unwrap()
        .iter()
        .all(|k| k.revoked_at.is_some()));
    let again = store
        .revoke_identity(&identity.id, "dave", T0 + 20)
        .await
        .unwrap();
    assert!(again.already);
    let entry = &store.inventory().await.unwrap()[0];
    assert_eq!(
        (entry.revoked_at, entry.revoked_by.as_deref()),
        (Some(T0 + 10), Some("dave"))
    );
    assert!(matches!(
        store.revoke_identity("idn_missing", "dave", T0).await,
        Err(StoreError::NotFound)
    ));
}

/// A record's review date is renewed only forward and only while it is live; retirement
/// steps are recorded (notified, failures counted, deactivated clears them).
pub async fn retirement_steps_and_renewal(store: Arc<dyn Store>) {
    let new = |id: &str| NewIdentity {
        kind: "access_key".to_owned(),
        tool: "aws".to_owned(),
        operation: "iam:CreateAccessKey".to_owned(),
        identifier: Some(id.to_owned()),
        agent_id: "agent-1".to_owned(),
        approver: None,
        owner: "carol@example.com".to_owned(),
        ticket: None,
        approval_id: None,
        request_id: "req-1".to_owned(),
        created_at: T0,
        review_by: Some(T0 + MINUTE),
    };
    let e = store.record_identity(new("AKIA1")).await.unwrap();
    assert_eq!(
        (
            e.notified_at,
            e.deactivated_at,
            e.retire_attempts,
            e.retire_error.clone()
        ),
        (None, None, 0, None)
    );
    store
        .retire_step(&e.id, &RetireStep::Notified(T0 + 1))
        .await
        .unwrap();
    for why in ["IAM refused", "IAM refused again"] {
        store
            .retire_step(&e.id, &RetireStep::Failed(why.into()))
            .await
            .unwrap();
    }
    let got = store.inventory().await.unwrap().remove(0);
    assert_eq!(got.notified_at, Some(T0 + 1));
    assert_eq!(got.retire_attempts, 2);
    assert_eq!(got.retire_error.as_deref(), Some("IAM refused again"));
    // A past or present date is refused; a later one clears the notice and the failures.
    for past in [T0, T0 + 5] {
        assert!(matches!(
            store.renew_identity(&e.id, past, T0 + 5).await,
            Err(StoreError::Conflict(_))
        ));
    }
    let renewed = store
        .renew_identity(&e.id, T0 + 60 * MINUTE, T0 + 5)
        .await
        .unwrap();
    assert_eq!(renewed.review_by, Some(T0 + 60 * MINUTE));
    assert_eq!(
        (
            renewed.notified_at,
            renewed.retire_attempts,
            renewed.retire_error
        ),
        (None, 0, None)
    );
    assert_eq!(
        store.inventory().await.unwrap().remove(0).review_by,
        Some(T0 + 60 * MINUTE)
    );
    // Deactivated: the failures cleared, no renewal.
    store
        .retire_step(&e.id, &RetireStep::Failed("x".into()))
        .await
        .unwrap();
    store
        .retire_step(&e.id, &RetireStep::Deactivated(T0 + 7))
        .await
        .unwrap();
    let got = store.inventory().await.unwrap().remove(0);
    assert_eq!(
        (got.deactivated_at, got.retire_attempts, got.retire_error),
        (Some(T0 + 7), 0, None)
    );
    assert!(matches!(
        store.renew_identity(&e.id, T0 + 90 * MINUTE, T0 + 8).await,
        Err(StoreError::Conflict(_))
    ));
    // Revoked: no renewal.
    let other = store.record_identity(new("AKIA2")).await.unwrap();
    store
        .revoke_identity(&other.id, "retire", T0 + 9)
        .await
        .unwrap();
    assert!(matches!(
        store
            .renew_identity(&other.id, T0 + 90 * MINUTE, T0 + 9)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .renew_identity("idn_missing", T0 + 90 * MINUTE, T0)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .retire_step("idn_missing", &RetireStep::Notified(T0))
            .await,
        Err(StoreError::NotFound)
    ));
}

/// A review-date notice is claimed by exactly one of many concurrent callers (replicas);
/// the claim reads as not notified, is released when the notice was not delivered, lapses
/// after its lease, and is replaced by the delivery.
pub async fn a_notice_is_claimed_by_one_replica(store: Arc<dyn Store>) {
    const LEASE: i64 = 60_000;
    let e = store
        .record_identity(NewIdentity {
            kind: "deploy_key".to_owned(),
            tool: "github".to_owned(),
            operation: "github:create_deploy_key".to_owned(),
            identifier: Some("4201".to_owned()),
            agent_id: "agent-1".to_owned(),
            approver: None,
            owner: "carol@example.com".to_owned(),
            ticket: None,
            approval_id: None,
            request_id: "req-1".to_owned(),
            created_at: T0,
            review_by: Some(T0 + MINUTE),
        })
        .await
        .unwrap();
    let claims = (0..8).map(|_| {
        let (store, id) = (store.clone(), e.id.clone());
        tokio::spawn(async move { store.claim_notice(&id, T0 + 1, LEASE).await.unwrap() })
    });
    let won: Vec<bool> = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    // Held: read as not notified; nobody else claims it within the lease.
    assert_eq!(store.inventory().await.unwrap()[0].notified_at, None);
    assert!(!store.claim_notice(&e.id, T0 + LEASE, LEASE).await.unwrap());
    // Released (the webhook refused): claimed again at once.
    store.release_notice(&e.id, T0 + 1).await.unwrap();
    assert!(store.claim_notice(&e.id, T0 + 2, LEASE).await.unwrap());
    // A release of a claim another replica took over leaves it alone.
    store.release_notice(&e.id, T0 + 1).await.unwrap();
    assert!(!store.claim_notice(&e.id, T0 + 3, LEASE).await.unwrap());
    // A claim whose holder went away lapses after the lease.
    assert!(store
        .claim_notice(&e.id, T0 + 2 + LEASE, LEASE)
        .await
        .unwrap());
    // Delivered: notified, never claimed again.
    store
        .retire_step(&e.id, &RetireStep::Notified(T0 + 3 + LEASE))
        .await
        .unwrap();
    assert_eq!(
        store.inventory().await.unwrap()[0].notified_at,
        Some(T0 + 3 + LEASE)
    );
    assert!(!store
        .claim_notice(&e.id, T0 + 10 * LEASE, LEASE)
        .await
        .unwrap());
    // Renewed: a notice is due again, and claimed once.
    store
        .renew_identity(&e.id, T0 + 90 * MINUTE, T0 + 10 * LEASE)
        .await
        .unwrap();
    assert!(store
        .claim_notice(&e.id, T0 + 11 * LEASE, LEASE)
        .await
        .unwrap());
    // Revoked or missing: nothing to claim.
    store
        .revoke_identity(&e.id, "retire", T0 + 12 * LEASE)
        .await
        .unwrap();
    assert!(!store
        .claim_notice(&e.id, T0 + 20 * LEASE, LEASE)
        .await
        .unwrap());
    assert!(!store.claim_notice("idn_missing", T0, LEASE).await.unwrap());
}

/// Agents' baselines (issue 21): written, replaced, read back.
pub async fn baselines_are_saved_and_replaced(store: Arc<dyn Store>) {
    assert!(store.baselines().await.unwrap().is_empty());
    let rows = vec![
        ("agent-1".to_string(), r#"{"first_seen_ms":1}"#.to_string()),
        ("agent-2".to_string(), r#"{"first_seen_ms":2}"#.to_string()),
    ];
    store.save_baselines(&rows, T0).await.unwrap();
    let again = vec![("agent-1".to_string(), r#"{"first_seen_ms":3}"#.to_string())];
    store.save_baselines(&again, T0 + MINUTE).await.unwrap();
    assert_eq!(
        store.baselines().await.unwrap(),
        vec![
            ("agent-1".to_string(), r#"{"first_seen_ms":3}"#.to_string()),
            ("agent-2".to_string(), r#"{"first_seen_ms":2}"#.to_string()),
        ]
    );
}

/// Tasks: opened once per id, listed while they matter, ended once (who and when), the
/// end of an unknown one refused.
async fn tasks_open_list_and_end_once(store: Arc<dyn Store>) {
    let task = |id: &str, expires_at: Millis| keygate::store::Task {
        id: id.into(),
        agent_id: "agent-1".into(),
        purpose: "rotate the deploy key".into(),
        ticket: Some("OPS-7".into()),
        tools: vec!["github".into()],
        operations: vec!["read".into(), "create_deploy_key".into()],
        opened_by: "agent".into(),
        opened_at: T0,
        expires_at,
        ended_at: None,
        ended_by: None,
    };
    let t = task("task_a", T0 + 30 * MINUTE);
    store.open_task(&t).await.unwrap();
    assert!(matches!(
        store.open_task(&t).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .open_task(&task("task_old", T0 - MINUTE))
        .await
        .unwrap();
    // Listed: those expiring after `since` only, as stored.
    assert_eq!(store.tasks(T0).await.unwrap(), vec![t.clone()]);
    assert_eq!(store.tasks(T0 - 2 * MINUTE).await.unwrap().len(), 2);
    let (ended, now) = store
        .end_task("task_a", "carol", T0 + MINUTE)
        .await
        .unwrap();
    assert!(now);
    assert_eq!(
        (ended.ended_at, ended.ended_by.as_deref()),
        (Some(T0 + MINUTE), Some("carol"))
    );
    assert!(!ended.is_open(T0 + MINUTE));
    // Ending again changes nothing.
    let (again, now) = store
        .end_task("task_a", "dave", T0 + 2 * MINUTE)
        .await
        .unwrap();
    assert!(!now);
    assert_eq!(again, ended);
    assert!(matches!(
        store.end_task("task_missing", "carol", T0).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.tasks(T0).await.unwrap(), vec![ended]);
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = keygate::store::open_store(&dir.path().join("keygate.db"))
                        .await
                        .unwrap();
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::pg_store("replica-a").await.0).await;
                }
            )*
        }
    };
}

both_stores!(
    baselines_are_saved_and_replaced,
    the_pending_cap_refuses_new_approvals_and_stores_nothing,
    two_approvers_must_differ,
    approvals_are_counted_by_status,
    open_approval_is_idempotent_per_key,
    approve_then_consume_once,
    consume_requires_approved_and_matching_digest,
    deny_then_approve_conflicts,
    expired_approvals_are_never_active,
    approvals_list_newest_first_with_limit,
    inventory_round_trips_newest_first,
    suspend_list_resume,
    a_denial_is_found_for_its_request_only,
    concurrent_open_approval_creates_one,
    concurrent_consume_succeeds_once,
    keys_and_captured_secrets_round_trip,
    retirement_steps_and_renewal,
    a_notice_is_claimed_by_one_replica,
    tasks_open_list_and_end_once,
);

/// A PostgreSQL store on a fresh database of the shared cluster; its URL.
async fn pg_store(replica: &str) -> (Arc<dyn Store>, String) {
    let url = pg_support::postgres().database().await;
    let store = open_pg(&url, replica).await.unwrap();
    (store, url)
}

async fn open_pg(url: &str, replica: &str) -> Result<Arc<dyn Store>, StoreError> {
    keygate::store::open(
        &Backend::Postgres(PgTarget {
            url: url.to_string(),
            ca_file: None,
            max_connections: 4,
        }),
        replica,
    )
    .await
}

/// Two replicas on one database, each claiming the same notice many times at once: one
/// claim in all wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_claim_a_notice_once() {
    let (a, url) = pg_store("replica-a").await;
    let b = open_pg(&url, "replica-b").await.unwrap();
    let e = a
        .record_identity(NewIdentity {
            kind: "access_key".to_owned(),
            tool: "aws".to_owned(),
            operation: "iam:CreateAccessKey".to_owned(),
            identifier: Some("AKIA1".to_owned()),
            agent_id: "agent-1".to_owned(),
            approver: None,
            owner: "carol@example.com".to_owned(),
            ticket: None,
            approval_id: None,
            request_id: "req-1".to_owned(),
            created_at: T0,
            review_by: Some(T0 + MINUTE),
        })
        .await
        .unwrap();
    let claims = (0..16).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = e.id.clone();
        tokio::spawn(async move { store.claim_notice(&id, T0 + 1, 60_000).await.unwrap() })
    });
    let won = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(won, 1);
}

/// The next change pushed, past any `Resync` (the warm-up's, still in flight, or the
/// listener's own after it connects): those are not what the tests look for.
async fn next_change(rx: &mut tokio::sync::broadcast::Receiver<Change>) -> Change {
    loop {
        let c = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("no change pushed within 5 s")
            .unwrap();
        if c != Change::Resync {
            return c;
        }
    }
}

/// What one replica writes, every other replica on the same database is told at once:
/// suspensions, decisions, keys, captured secrets and reloads (named by their replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_pushes_every_change_to_every_replica() {
    let (a, url) = pg_store("replica-a").await;
    let b = open_pg(&url, "replica-b").await.unwrap();
    let mut on_b = b.changes().expect("PostgreSQL pushes changes");
    // The listener connects in the background: wait until it hears something.
    loop {
        a.announce(Change::Resync).await.unwrap();
        if tokio::time::timeout(Duration::from_millis(300), on_b.recv())
            .await
            .is_ok()
        {
            break;
        }
    }
    a.suspend("agent-1", "admin", Some("loop"), T0)
        .await
        .unwrap();
    assert_eq!(next_change(&mut on_b).await, Change::Suspensions);
    assert!(b.resume("agent-1").await.unwrap());
    assert_eq!(next_change(&mut on_b).await, Change::Suspensions);
    let (ap, _) = a
        .open_approval(new_approval("agent-1", "d1"), T0, 10)
        .await
        .unwrap();
    a.approve(&ap.id, approve_until(T0 + 5 * MINUTE), T0)
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut on_b).await,
        Change::Decision(ap.id.clone())
    );
    let task = keygate::store::Task {
        id: "task_push".into(),
        agent_id: "agent-1".into(),
        purpose: "p".into(),
        ticket: None,
        tools: vec![],
        operations: vec![],
        opened_by: "agent".into(),
        opened_at: T0,
        expires_at: T0 + MINUTE,
        ended_at: None,
        ended_by: None,
    };
    a.open_task(&task).await.unwrap();
    assert_eq!(next_change(&mut on_b).await, Change::Tasks);
    a.end_task("task_push", "agent", T0).await.unwrap();
    assert_eq!(next_change(&mut on_b).await, Change::Tasks);
    a.announce(Change::Reload {
        from: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(
        next_change(&mut on_b).await,
        Change::Reload {
            from: "replica-a".into()
        }
    );
    // The SQLite store pushes nothing: a single process applies its own changes.
    let dir = tempfile::tempdir().unwrap();
    let sqlite = keygate::store::open_store(&dir.path().join("k.db"))
        .await
        .unwrap();
    assert!(sqlite.changes().is_none());
}

/// Replicas starting together migrate once; a database migrated by a newer keygate is
/// refused, never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_migrations_run_once_and_refuse_a_newer_schema() {
    let url = pg_support::postgres().database().await;
    let opened = futures_util::future::join_all((0..4).map(|i| {
        let url = url.clone();
        async move { open_pg(&url, &format!("r{i}")).await.map(|_| ()) }
    }))
    .await;
    assert!(
        opened.iter().all(|r| r.is_ok()),
        "{:?}",
        opened
            .iter()
            .filter_map(|r| r.as_ref().err())
            .collect::<Vec<_>>()
    );
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_version")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(versions, [7]);
    // A database keygate migrated to version 1 is brought to version 7.
    for undo in [
        "DELETE FROM schema_version",
        "INSERT INTO schema_version (version) VALUES (1)",
        "ALTER TABLE approvals DROP COLUMN approvers_needed",
        "ALTER TABLE approvals DROP COLUMN first_approver",
        "ALTER TABLE inventory DROP COLUMN notified_at",
        "ALTER TABLE inventory DROP COLUMN deactivated_at",
        "ALTER TABLE inventory DROP COLUMN retire_attempts",
        "ALTER TABLE inventory DROP COLUMN retire_error",
        "DROP TABLE agent_baselines",
        "DROP TABLE tasks",
        "DROP TABLE rate_limit_counts",
        "DROP TABLE rate_limit_replicas",
    ] {
        sqlx::query(undo).execute(&mut c).await.unwrap();
    }
    open_pg(&url, "r5").await.map(|_| ()).unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(versions, [1, 7]);
    let needed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.columns \
         WHERE table_name = 'approvals' AND column_name IN ('approvers_needed', 'first_approver')",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(needed, 2);
    sqlx::query("INSERT INTO schema_version (version) VALUES (99)")
        .execute(&mut c)
        .await
        .unwrap();
    let err = open_pg(&url, "r9")
        .await
        .err()
        .expect("a newer schema must be refused");
    assert!(
        err.to_string().contains("newer than this keygate supports"),
        "{err}"
    );
}

/// A URL with a password never shows it: not in the settings' debug form, not in an error.
#[tokio::test]
async fn the_database_password_is_never_printed() {
    let target = PgTarget {
        url: "postgres://keygate:hunter2-very-secret@127.0.0.1:1/db".into(),
        ca_file: None,
        max_connections: 1,
    };
    assert!(!format!("{target:?}").contains("hunter2"));
    assert!(!Backend::Postgres(target.clone())
        .to_string()
        .contains("hunter2"));
    let err = keygate::store::open(&Backend::Postgres(target), "r")
        .await
        .err()
        .unwrap();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// TLS to the database is rustls, and verified: the database's certificate against
/// `ca_file` (or the Mozilla roots) and its host name. A certificate from another CA is
/// refused, and so is any answer without TLS when the URL asks for verify-full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_database_certificate() {
    let pg = pg_support::postgres();
    let url = pg
        .database()
        .await
        .replace("sslmode=disable", "sslmode=verify-full");
    let target = |ca: Option<std::path::PathBuf>| {
        Backend::Postgres(PgTarget {
            url: url.clone(),
            ca_file: ca,
            max_connections: 2,
        })
    };
    let store = keygate::store::open(&target(Some(pg.dir.join("ca.crt"))), "r")
        .await
        .unwrap();
    store.suspend("agent-1", "admin", None, T0).await.unwrap();
    assert_eq!(store.suspensions().await.unwrap().len(), 1);
    // The connection is TLS (the server says so about this very session).
    use sqlx::Connection;
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let mut c = sqlx::PgConnection::connect_with(&opts.ssl_root_cert(pg.dir.join("ca.crt")))
        .await
        .unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert!(ssl);
    // Another CA (the system's roots): the certificate does not verify, nothing opens.
    for ca in [None, Some("/etc/ssl/certs/ca-certificates.crt".into())] {
        let err = keygate::store::open(&target(ca), "r").await.err();
        assert!(
            err.is_some(),
            "a database certificate from an unknown CA was accepted"
        );
    }
}

/// Shared rate limit counts: each replica reads the others' (summed per rule, key and
/// window; never its own), a count never goes down, windows that ended long ago are
/// forgotten, and the replicas that shared recently are counted. SQLite shares nothing.
#[tokio::test]
async fn postgres_shares_rate_limit_counts_between_replicas() {
    let url = pg_support::postgres().database().await;
    let (a, b, c) = (
        open_pg(&url, "a").await.unwrap(),
        open_pg(&url, "b").await.unwrap(),
        open_pg(&url, "c").await.unwrap(),
    );
    let now = 10_000_000;
    let row = |key: &str, start: Millis, count: i64| LimitCount {
        rule: "r".into(),
        key: key.into(),
        window_start: start,
        window_end: start + 60_000,
        count,
    };
    let alive = Duration::from_secs(60);
    a.share_limit_counts("a", &[row("x", now, 3), row("y", now, 1)], now, alive)
        .await
        .unwrap();
    // An older write (a retry) does not lower the count.
    a.share_limit_counts("a", &[row("x", now, 2)], now, alive)
        .await
        .unwrap();
    b.share_limit_counts(
        "b",
        &[row("x", now, 4), row("x", now - 600_000, 9)],
        now,
        alive,
    )
    .await
    .unwrap();
    let seen = c.share_limit_counts("c", &[], now, alive).await.unwrap();
    assert_eq!(seen.replicas, 3);
    let mut others = seen.others;
    others.sort_by(|p, q| p.key.cmp(&q.key));
    assert_eq!(others, [row("x", now, 7), row("y", now, 1)]);
    let seen = a.share_limit_counts("a", &[], now, alive).await.unwrap();
    assert_eq!(seen.others, [row("x", now, 4)], "only the others' counts");
    // B's window that ended ten minutes ago was deleted.
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rate_limit_counts")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows, 3);

    let dir = tempfile::tempdir().unwrap();
    let sqlite = open_store(&dir.path().join("s.db")).await.unwrap();
    let seen = sqlite
        .share_limit_counts("s", &[row("x", now, 3)], now, alive)
        .await
        .unwrap();
    assert!(seen.others.is_empty());
    assert_eq!(seen.replicas, 1);
}
