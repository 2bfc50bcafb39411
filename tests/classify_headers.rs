//! Headers that could make a tool act differently from what keygate classified: a
//! method override is removed before forwarding, and an AWS `X-Amz-Target` action is
//! classified like a Query action.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

#[tokio::test]
async fn method_override_headers_never_reach_the_tool() {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let source = secret_file(dir.path(), "CH_SECRET", "ch-secret");
    let iss = TestIssuer::new(dir.path(), "ch-iss", "keygate");
    let cfg = format!(
        "{}{}{}",
        iss.toml(),
        agent("a1", "o@x"),
        static_tool("t", &up.url(), &source)
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let auth = bearer(&iss.token("a1"));
    let r = Client::http1()
        .get(
            &gw.url("/tools/t/x"),
            &[
                ("authorization", &auth),
                ("x-http-method-override", "DELETE"),
                ("x-http-method", "DELETE"),
                ("x-method-override", "DELETE"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let raw = String::from_utf8_lossy(&up.requests()[0].raw).to_ascii_lowercase();
    assert!(
        !raw.contains("override") && !raw.contains("x-http-method"),
        "{raw}"
    );
}

#[tokio::test]
async fn an_aws_action_in_x_amz_target_is_gated() {
    let up = RawUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let source = secret_file(dir.path(), "CH_AWS_SECRET", "ch-aws-secret");
    let iss = TestIssuer::new(dir.path(), "ch-iss2", "keygate");
    let cfg = format!(
        "{}{}[[tools]]\nname = \"iam\"\nkind = \"aws\"\nupstream = {:?}\n[tools.credential]\nprovider = \"static\"\n{source}",
        iss.toml(),
        agent("a1", "o@x"),
        up.url()
    );
    let gw = TestGateway::start_in(dir, &cfg).await;
    let auth = bearer(&iss.token("a1"));
    let c = Client::http1();
    let send_with = |target: &'static str, body: &'static str| {
        let c = c.clone();
        let url = gw.url("/tools/iam/");
        let auth = auth.clone();
        async move {
            c.send(
                "POST",
                &url,
                &[
                    ("authorization", &auth),
                    ("x-amz-target", target),
                    ("content-type", "application/x-amz-json-1.1"),
                ],
                body,
            )
            .await
        }
    };
    let send = |target: &'static str| send_with(target, "{}");
    let r = send("AWSIdentityManagementV20100508.CreateAccessKey").await;
    assert_eq!(r.status, 403, "{}", r.text());
    // AWS tools refuse in AWS's own error format, which SDKs parse.
    let body = r.text();
    assert!(body.starts_with("<ErrorResponse"), "{body}");
    assert!(body.contains("<Code>approval_required</Code>"), "{body}");
    assert!(body.contains("approval_id: apr_"), "{body}");
    assert_eq!(r.headers["content-type"], "text/xml");
    assert_eq!(up.count(), 0);
    // An `Action` in the body cannot hide the identity creation the target names: the
    // call is gated as the creation, not passed as the (lesser) body action.
    let r = send_with(
        "AWSIdentityStore.CreateUser",
        r#"{"Action":"AttachUserPolicy","UserName":"u"}"#,
    )
    .await;
    assert!(
        r.text().contains("<Code>approval_required</Code>"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("creating a user"), "{}", r.text());
    assert_eq!(up.count(), 0);
    let r = send("AWSIdentityManagementV20100508.ListUsers").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
}
