#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

#[tokio::test]
async fn harness_works() {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let source = secret_file(dir.path(), "SMOKE_SECRET", "tool-secret-123");
    let iss = TestIssuer::new(dir.path(), "test-iss", "keygate");
    let cfg = format!(
        "{}{}{}",
        iss.toml(),
        agent("a1", "o@x"),
        static_tool("t", &up.url(), &source)
    );
    let mut gw = TestGateway::start_in(dir, &cfg).await;
    let c = Client::http1();
    let r = c
        .get(
            &gw.url("/tools/t/x"),
            &[("authorization", &bearer(&iss.token("a1")))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        up.requests()[0].header("authorization").as_deref(),
        Some("Bearer tool-secret-123")
    );
    gw.stop().await;
    assert_eq!(gw.audit().await.len(), 1);
}
