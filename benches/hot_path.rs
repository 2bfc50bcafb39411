//! Micro-benchmarks of the per-request hot path: identify (cached and cold token), the
//! secret scan of a 4 KiB body, minting a JWT, building and serializing the audit
//! record, and the per-request helpers (request id, percent-decoding). Run with `cargo bench --bench hot_path`; figures are in BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keygate::config::SigningAlgorithm;
use keygate::conn::ConnInfo;
use keygate::credentials::Signer;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// strip's decoder of a path or form body (`+` as space).
const PERCENT_DECODE: fn(&[u8]) -> std::borrow::Cow<'_, [u8]> = keygate::percent::decode_plus;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Fixture {
    _dir: tempfile::TempDir,
    snapshot: keygate::config::Snapshot,
    issuer: Signer,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let issuer =
        Signer::load_or_generate(&dir.path().join("iss.pem"), SigningAlgorithm::EdDsa, true)
            .unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        keygate::credentials::signer::jwks_document([&issuer]),
    )
    .unwrap();
    let text = format!(
        "[policies]\ndir = {:?}\n[[identity.issuers]]\nname = \"b\"\nissuer = \"bench\"\naudiences = [\"keygate\"]\njwks_file = {:?}\n\
         [[agents]]\nid = \"agent-1\"\nowner = \"owner@example.com\"\n\
         [[tools]]\nname = \"t\"\nupstream = \"http://127.0.0.1:1\"\n[tools.credential]\nprovider = \"jwt\"\nscope = \"read\"\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
        jwks.display().to_string()
    );
    let snapshot = keygate::config::parse(&dir.path().join("k.toml"), &text).unwrap();
    Fixture {
        _dir: dir,
        snapshot,
        issuer,
    }
}

fn token(issuer: &Signer, sub: &str) -> String {
    issuer
        .sign_jwt(
            &serde_json::json!({"iss": "bench", "aud": "keygate", "sub": sub, "exp": now() + 3600}),
        )
        .unwrap()
}

fn identify(c: &mut Criterion) {
    let f = fixture();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ident = keygate::pipeline::identify::Identifier::new(&f.snapshot.identity).unwrap();
    assert!(rt.block_on(ident.load_keys()).is_empty());
    let conn = ConnInfo::new("127.0.0.1:1".parse().unwrap(), false, None);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {}", token(&f.issuer, "agent-1"))
            .parse()
            .unwrap(),
    );
    c.bench_function("identify/cached_token", |b| {
        b.iter(|| {
            ident
                .identify(&f.snapshot.agents, &conn, black_box(&headers))
                .unwrap()
        })
    });
    c.bench_function("identify/cold_token_ed25519", |b| {
        b.iter(|| {
            // A fresh cache every time: the signature is verified on each call.
            ident.invalidate_tokens();
            ident
                .identify(&f.snapshot.agents, &conn, black_box(&headers))
                .unwrap()
        })
    });
}

fn secret_scan(c: &mut Criterion) {
    let mut body = String::from("{\"items\":[");
    while body.len() < 4096 - 64 {
        body.push_str("{\"id\":12345,\"name\":\"deploy the service\",\"state\":\"open\"},");
    }
    body.push_str("{}]}");
    c.bench_function("strip/secret_scan_4KiB_clean", |b| {
        b.iter(|| assert!(keygate::secrets::find_first(black_box(body.as_bytes())).is_none()))
    });
}

fn mint(c: &mut Criterion) {
    let f = fixture();
    let agent = f.snapshot.agents.by_id.values().next().unwrap().clone();
    for alg in [SigningAlgorithm::EdDsa, SigningAlgorithm::Es256] {
        let dir = tempfile::tempdir().unwrap();
        let signer =
            Arc::new(Signer::load_or_generate(&dir.path().join("k.pem"), alg, true).unwrap());
        let p = keygate::credentials::MintedJwt::new(
            signer,
            "keygate".into(),
            "t".into(),
            Some("read".into()),
            std::time::Duration::from_secs(300),
            std::time::Duration::ZERO,
            keygate::config::Injection::Bearer,
        );
        c.bench_function(&format!("inject/mint_jwt_{alg:?}"), |b| {
            b.iter(|| p.issue(black_box(&agent), None, None).unwrap())
        });
    }
}

fn audit_record(c: &mut Criterion) {
    let id: Arc<str> = "0a1b2c3d-0000000042".into();
    let agent: Arc<str> = "agent-1".into();
    let owner: Arc<str> = "owner@example.com".into();
    let tool: Arc<str> = "github".into();
    let cred: Arc<str> = "2b0f3c5e-8d7a-4c1b-9e6f-0123456789ab".into();
    let op: Arc<str> = "github:list_issues".into();
    let read: Arc<str> = "read".into();
    let mut buf = Vec::with_capacity(1024);
    let mut line = Vec::with_capacity(1024);
    let mut chain = keygate::telemetry::audit_chain::Chain::new();
    c.bench_function("audit/build_serialize_and_chain", |b| {
        b.iter(|| {
            let r = keygate::telemetry::audit_log::AuditRecord {
                time: keygate::pipeline::audit::rfc3339_millis(SystemTime::now()),
                request_id: id.clone(),
                agent_id: Some(agent.clone()),
                agent_owner: Some(owner.clone()),
                identity: Some("jwt"),
                issuer: None,
                spiffe_id: None,
                client: "127.0.0.1:50000".into(),
                tool: Some(tool.clone()),
                operation: Some(op.clone()),
                tags: vec![read.clone()],
                identity_kind: None,
                policies: vec!["agents-may-call-tools".into()],
                policy_errors: vec![],
                approval_id: None,
                inventory_id: None,
                mcp: None,
                method: "GET".into(),
                path: "/tools/github/repos/acme/app/issues".into(),
                decision: "allow",
                error: None,
                error_detail: None,
                status: 200,
                duration_ms: 1.234,
                bytes_in: 0,
                bytes_out: 512,
                completed: true,
                client_gone: false,
                credential_provider: Some("jwt"),
                credential_id: Some(cred.clone()),
                credential_role: None,
                credential_expires: None,
                credential_cached: None,
                credential_scope: None,
                stripped: vec!["header:authorization".into()],
                handle: None,
                task: None,
                captured: None,
                response_secrets: Vec::new(),
                admin: None,
                anomaly: None,
            };
            buf.clear();
            serde_json::to_writer(&mut buf, black_box(&r)).unwrap();
            // The writer thread's part: chain the record (seq, prev, SHA-256) into its line.
            line.clear();
            chain.append(&buf, &mut line).unwrap();
        })
    });
}

fn classify_and_authorize(c: &mut Criterion) {
    let f = fixture();
    let snap = &f.snapshot;
    let agent = snap.agents.by_id.values().next().unwrap().clone();
    let tool = snap.tools.by_name.values().next().unwrap().clone();
    let policies = keygate::policy::load(snap).unwrap();
    let method = http::Method::POST;
    let view = keygate::catalog::RequestView {
        method: &method,
        path: "/repos/acme/app/keys",
        query: None,
        content_type: Some("application/json"),
        body: None,
    };
    c.bench_function("classify/github_catalog_deploy_key", |b| {
        b.iter(|| {
            keygate::catalog::classify(keygate::catalog::Kind::Github, black_box(&view)).unwrap()
        })
    });
    let get = http::Method::GET;
    let read_view = keygate::catalog::RequestView {
        method: &get,
        path: "/repos/acme/app/issues",
        ..view
    };
    c.bench_function("classify/github_catalog_miss", |b| {
        b.iter(|| keygate::catalog::classify(keygate::catalog::Kind::Github, black_box(&read_view)))
    });
    let read = snap.operations.read.clone();
    let input = keygate::policy::Input {
        agent: &agent,
        tool: &tool,
        operation: &read,
        method: "GET",
        path: "/repos/acme/app/issues",
        now_unix: 1_800_000_000,
        approved: false,
        mcp: None,
        aws: None,
        task: None,
    };
    c.bench_function("authorize/cedar_default_policies_evaluated", |b| {
        b.iter(|| policies.evaluate_uncached(black_box(&input)))
    });
    c.bench_function("authorize/cedar_default_policies_cached_decision", |b| {
        b.iter(|| policies.authorize(black_box(&input)))
    });
}

fn at_scale(c: &mut Criterion) {
    use keygate::routes::{Operation, RouteTable};
    // 1,000 route templates.
    let mut table = RouteTable::default();
    for i in 0..1000 {
        let op = Arc::new(Operation::new(&format!("op{i}"), &["read"], None));
        table
            .insert(
                Some(http::Method::GET),
                &format!("/svc{}/{{id}}/items{}/{{item}}", i % 50, i),
                op,
            )
            .unwrap();
    }
    let post = http::Method::POST;
    let get = http::Method::GET;
    let view = keygate::catalog::RequestView {
        method: &post,
        path: "/repos/acme/app/keys",
        query: None,
        content_type: Some("application/json"),
        body: None,
    };
    c.bench_function("classify/1000_routes_plus_catalog", |b| {
        b.iter(|| {
            let cat = keygate::catalog::classify(keygate::catalog::Kind::Github, black_box(&view));
            let route = table.lookup(&get, black_box("/svc7/42/items957/abc"));
            assert!(cat.is_some() && route.is_some());
        })
    });

    // 100 Cedar policies.
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies/keygate.cedarschema"),
        pol.join("keygate.cedarschema"),
    )
    .unwrap();
    let mut text = String::new();
    for i in 0..99 {
        text.push_str(&format!(
            "@id(\"p{i}\") permit (principal == Agent::\"agent-{i}\", action in Action::\"read\", resource) when {{ context.path like \"/repos/*\" }};\n"
        ));
    }
    text.push_str("@id(\"bench\") permit (principal == Agent::\"agent-1\", action, resource);\n");
    std::fs::write(pol.join("bench.cedar"), text).unwrap();
    let cfgtext = format!(
        "[policies]\ndir = {:?}\n[[agents]]\nid = \"agent-1\"\nowner = \"o\"\n[[tools]]\nname = \"t\"\nupstream = \"http://127.0.0.1:1\"\n[tools.credential]\nprovider = \"jwt\"\n",
        pol.display().to_string()
    );
    let snap = keygate::config::parse(&dir.path().join("k.toml"), &cfgtext).unwrap();
    let policies = keygate::policy::load(&snap).unwrap();
    assert_eq!(policies.policy_count, 100);
    let agent = snap.agents.by_id.values().next().unwrap().clone();
    let tool = snap.tools.by_name.values().next().unwrap().clone();
    let read = snap.operations.read.clone();
    let input = keygate::policy::Input {
        agent: &agent,
        tool: &tool,
        operation: &read,
        method: "GET",
        path: "/repos/acme/app/issues",
        now_unix: 1_800_000_000,
        approved: false,
        mcp: None,
        aws: None,
        task: None,
    };
    c.bench_function("authorize/cedar_100_policies_evaluated", |b| {
        b.iter(|| policies.evaluate_uncached(black_box(&input)))
    });
    // The applicable policy reads context.path: its decisions are not cached, so
    // authorize evaluates every time (compare the default policies' cached decision).
    c.bench_function(
        "authorize/cedar_100_policies_path_condition_uncacheable",
        |b| b.iter(|| policies.authorize(black_box(&input))),
    );

    // A minted credential reused within its window.
    let signer = Arc::new(
        Signer::load_or_generate(&dir.path().join("k.pem"), SigningAlgorithm::EdDsa, true).unwrap(),
    );
    let p = keygate::credentials::MintedJwt::new(
        signer,
        "keygate".into(),
        "t".into(),
        Some("read".into()),
        std::time::Duration::from_secs(300),
        std::time::Duration::from_secs(150),
        keygate::config::Injection::Bearer,
    );
    c.bench_function("inject/jwt_reused_within_window", |b| {
        b.iter(|| p.issue(black_box(&agent), None, None).unwrap())
    });
}

/// respond: compiling the search for an injected credential (once per minted-for-the-call
/// token; otherwise a cache lookup), and the response filter on
/// a 64 KiB body in 16 KiB frames, without the credential (the common case) and with it
/// once, split across two frames; `respond/body_64KiB_unfiltered` is the same body
/// collected without the filter, for comparison.
fn respond_filter(c: &mut Criterion) {
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use keygate::pipeline::respond::{redacting, Injected};
    let token = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6ImJlbmNoIn0.eyJpc3MiOiJrZXlnYXRlIiwic3ViIjoiYWdlbnQtMSIsImF1ZCI6InQiLCJzY29wZSI6InJlYWQiLCJleHAiOjE4MDAwMDAwMDAsImp0aSI6IjJiMGYzYzVlIn0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2lnbmF0dXJlLXNpZ25hdHVyZQ";
    c.bench_function("respond/compile_search_jwt", |b| {
        b.iter(|| Injected::new([black_box(token.as_bytes())]).unwrap())
    });
    let value = format!("Bearer {token}");
    let key: [&[u8]; 3] = [b"authorization", b":", value.as_bytes()];
    let compile = || Injected::new([token.as_bytes()]);
    keygate::pipeline::inject::search_for(&key, false, compile).unwrap();
    c.bench_function("respond/cached_search_jwt", |b| {
        b.iter(|| keygate::pipeline::inject::search_for(black_box(&key), false, compile).unwrap())
    });
    let mut clean = String::with_capacity(65536);
    while clean.len() < 65536 - 64 {
        clean.push_str("{\"id\":12345,\"name\":\"deploy the service\",\"state\":\"open\"},");
    }
    let frames = |body: &str| -> Vec<Bytes> {
        body.as_bytes()
            .chunks(16384)
            .map(Bytes::copy_from_slice)
            .collect()
    };
    let clean_frames = frames(&clean);
    // The token once, across the first frame boundary.
    let mut with = clean.clone();
    with.replace_range(16384 - 40..16384 - 40 + token.len(), token);
    let with_frames = frames(&with);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let body_of = |frames: &[Bytes]| {
        let frames: Vec<Bytes> = frames.to_vec();
        let stream = futures_util::stream::iter(
            frames
                .into_iter()
                .map(|f| Ok::<_, keygate::error::BoxError>(http_body::Frame::data(f))),
        );
        http_body_util::StreamBody::new(stream).boxed()
    };
    c.bench_function("respond/body_64KiB_unfiltered", |b| {
        b.iter(|| rt.block_on(body_of(&clean_frames).collect()).unwrap())
    });
    let inj = || std::sync::Arc::new(Injected::new([token.as_bytes()]).unwrap());
    c.bench_function("respond/body_64KiB_filtered_clean", |b| {
        b.iter_batched(
            inj,
            |i| {
                rt.block_on(redacting(i, body_of(&clean_frames)).collect())
                    .unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let out = rt
        .block_on(redacting(inj(), body_of(&with_frames)).collect())
        .unwrap()
        .to_bytes();
    assert!(!out.windows(token.len()).any(|w| w == token.as_bytes()));
    assert_eq!(out.len(), with.len());
    c.bench_function("respond/body_64KiB_filtered_one_token", |b| {
        b.iter_batched(
            inj,
            |i| {
                rt.block_on(redacting(i, body_of(&with_frames)).collect())
                    .unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

/// The response scan for known secret formats (`response_secrets`, on by default): its
/// cost per KiB of a JSON answer, clean and with a token split across frames, and with
/// the scan off (`pass` still scans, to count; the baseline is no scan at all).
fn response_scan(c: &mut Criterion) {
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use keygate::pipeline::scan::{scan, Compressed, Findings, Mode, Settings};
    let mut clean = String::with_capacity(65536);
    while clean.len() < 65536 - 64 {
        clean.push_str("{\"id\":12345,\"name\":\"deploy the service\",\"state\":\"open\"},");
    }
    let token = "ghp_BenchTokenBenchTokenBenchToken0123456";
    let mut with = clean.clone();
    with.replace_range(16384 - 20..16384 - 20 + token.len(), token);
    let frames = |body: &str| -> Vec<Bytes> {
        body.as_bytes()
            .chunks(16384)
            .map(Bytes::copy_from_slice)
            .collect()
    };
    let (clean_frames, with_frames) = (frames(&clean), frames(&with));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let response = |frames: &[Bytes]| {
        let frames: Vec<Bytes> = frames.to_vec();
        let stream = futures_util::stream::iter(
            frames
                .into_iter()
                .map(|f| Ok::<_, keygate::error::BoxError>(http_body::Frame::data(f))),
        );
        let mut r = http::Response::new(http_body_util::StreamBody::new(stream).boxed());
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    };
    let settings = Settings {
        mode: Mode::Redact,
        compressed: Compressed::Decompress,
        max_decompressed: 16 << 20,
        max_buffered: 16 << 20,
    };
    let run = |frames: &[Bytes]| {
        rt.block_on(async {
            let f = std::sync::Arc::new(Findings::default());
            let r = scan(&settings, "t", response(frames), f).await.unwrap();
            r.into_body().collect().await.unwrap().to_bytes()
        })
    };
    let out = run(&with_frames);
    assert_eq!(out.len(), with.len());
    assert!(!out.windows(token.len()).any(|w| w == token.as_bytes()));
    let mut g = c.benchmark_group("respond_scan");
    g.throughput(criterion::Throughput::Bytes(clean.len() as u64));
    g.bench_function("body_64KiB_no_scan", |b| {
        b.iter(|| {
            rt.block_on(response(&clean_frames).into_body().collect())
                .unwrap()
        })
    });
    g.bench_function("body_64KiB_redact_clean", |b| b.iter(|| run(&clean_frames)));
    g.bench_function("body_64KiB_redact_one_token", |b| {
        b.iter(|| run(&with_frames))
    });
    g.finish();
}

/// The per-request helpers: the request id, and percent-decoding as the path
/// canonicalizer, the catalog matcher and strip's secret scan each do it.
fn helpers(c: &mut Criterion) {
    let mut n = 1_234_567u64;
    c.bench_function("gateway/request_id", |b| {
        b.iter(|| {
            n += 1;
            keygate::gateway::request_id(black_box("0a1b2c3d"), black_box(n))
        })
    });
    let encoded = "/repos/%61cme//app/./issues/%E2%82%AC/../%6Beys";
    c.bench_function("classify/canonicalize_encoded_path", |b| {
        b.iter(|| keygate::pipeline::classify::canonicalize(black_box(encoded)).unwrap())
    });
    let post = http::Method::POST;
    let view = keygate::catalog::RequestView {
        method: &post,
        path: "/repos/%61cme/app/%6Beys",
        query: None,
        content_type: Some("application/json"),
        body: None,
    };
    c.bench_function("classify/github_catalog_encoded_path", |b| {
        b.iter(|| {
            keygate::catalog::classify(keygate::catalog::Kind::Github, black_box(&view)).unwrap()
        })
    });
    let form = "name=deploy+the+service&state=open&note=%E2%82%AC%20100%25&id=12345".repeat(8);
    c.bench_function("strip/percent_decode_form_512B", |b| {
        b.iter(|| PERCENT_DECODE(black_box(form.as_bytes())).len())
    });
}

/// What an AWS call costs keygate beyond the rest of the pipeline: re-signing it with the
/// session's credentials (and, with an agent key, checking the agent's own signature).
fn aws(c: &mut Criterion) {
    use keygate::aws::sign::{sign, Payload, SigningKey};
    let key = SigningKey {
        access_key_id: "ASIAEXAMPLESESSION01",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token: Some("FwoGZXIvYXdzEXAMPLEsessiontokenFwoGZXIvYXdzEXAMPLEsessiontoken"),
    };
    let mut base = http::HeaderMap::new();
    base.insert("host", http::HeaderValue::from_static("iam.amazonaws.com"));
    base.insert(
        "content-type",
        http::HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    base.insert(
        "user-agent",
        http::HeaderValue::from_static("Boto3/1.35 md/Botocore#1.35"),
    );
    let body = b"Action=ListUsers&Version=2010-05-08";
    c.bench_function("inject/aws_sigv4_sign_query_call", |b| {
        b.iter(|| {
            let mut h = base.clone();
            sign(
                &http::Method::POST,
                "https://iam.amazonaws.com/",
                &mut h,
                Payload::Bytes(black_box(body)),
                &key,
                "us-east-1",
                "iam",
                std::time::SystemTime::now(),
            )
            .unwrap();
            h
        })
    });
    let mut s3 = http::HeaderMap::new();
    s3.insert(
        "host",
        http::HeaderValue::from_static("s3.us-east-1.amazonaws.com"),
    );
    s3.insert(
        "x-amz-content-sha256",
        http::HeaderValue::from_static("UNSIGNED-PAYLOAD"),
    );
    // identify with an agent's AWS key: its SigV4 signature recomputed and compared.
    {
        let agent_key = SigningKey {
            access_key_id: "KGAK0123456789ABCDEF",
            secret_access_key: "agentSecretOfFortyCharactersForTheBench0",
            session_token: None,
        };
        let mut signed = base.clone();
        sign(
            &http::Method::POST,
            "http://127.0.0.1:8080/tools/aws",
            &mut signed,
            Payload::Bytes(body),
            &agent_key,
            "us-east-1",
            "iam",
            std::time::SystemTime::now(),
        )
        .unwrap();
        let uri: http::Uri = "/tools/aws".parse().unwrap();
        let payload =
            const_hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body).as_ref());
        let auth = signed["authorization"].to_str().unwrap().to_string();
        c.bench_function("identify/aws_sigv4_verify_agent_signature", |b| {
            b.iter(|| {
                let h = keygate::aws::verify::parse_authorization(black_box(&auth)).unwrap();
                keygate::aws::verify::verify(
                    &h,
                    agent_key.secret_access_key,
                    &http::Method::POST,
                    &uri,
                    &signed,
                    &payload,
                    std::time::SystemTime::now(),
                    std::time::Duration::from_secs(300),
                )
                .unwrap()
            })
        });
    }
    c.bench_function("inject/aws_sigv4_sign_s3_unsigned_payload", |b| {
        b.iter(|| {
            let mut h = s3.clone();
            sign(
                &http::Method::PUT,
                "https://s3.us-east-1.amazonaws.com/bucket/some/key.bin",
                &mut h,
                Payload::Declared("UNSIGNED-PAYLOAD".into()),
                &key,
                "us-east-1",
                "s3",
                std::time::SystemTime::now(),
            )
            .unwrap();
            h
        })
    });
}

/// A token endpoint on loopback that answers every request with the same one-hour token
/// (one connection at a time; the bench asks it once).
fn token_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let body = r#"{"access_token":"bench-token-0123456789abcdefghijklmnopqrstuvwxyz","token_type":"Bearer","expires_in":3600,"scope":"up:read"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/token")
}

/// inject's provider call on a warm path: a static secret (the baseline), and an OAuth2
/// token served from the provider's cache (issue 15: a warm call must cost no more). Both
/// through `Provider::issue`, polled once: a warm call completes without waiting.
fn providers(c: &mut Criterion) {
    use futures_util::FutureExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "bench-client-secret").unwrap();
    let text = format!(
        "[[agents]]\nid = \"agent-1\"\nowner = \"owner@example.com\"\n\
         [[tools]]\nname = \"s\"\nupstream = \"http://127.0.0.1:1\"\n[tools.credential]\nprovider = \"static\"\nfrom_file = \"secret\"\n\
         [[tools]]\nname = \"o\"\nupstream = \"http://127.0.0.1:1\"\n[tools.credential]\nprovider = \"oauth2\"\ntoken_endpoint = {:?}\nclient_id = \"bench\"\nfrom_file = \"secret\"\nscope = \"up:read\"\n",
        token_endpoint()
    );
    let snapshot = keygate::config::parse(&dir.path().join("k.toml"), &text).unwrap();
    let signer = Arc::new(
        Signer::load_or_generate(&dir.path().join("k.pem"), SigningAlgorithm::EdDsa, true).unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tools = rt.block_on(async {
        keygate::tools::ToolSet::build(&snapshot, &signer, &keygate::clock::Clock::default())
            .unwrap()
    });
    let agent = snapshot.agents.by_id.values().next().unwrap().clone();
    let read = keygate::routes::Operation::new("read", &["read"], None);
    let call = keygate::credentials::CallInfo {
        agent: &agent,
        operation: &read,
        method: &http::Method::GET,
        tool_path: "/items",
        task: None,
        task_ends_ms: None,
    };
    let warm = rt
        .block_on(tools.by_name["o"].provider.issue(&call))
        .unwrap();
    assert_eq!(warm.cached, Some(false));
    for (name, tool) in [("static_secret", "s"), ("oauth2_cached_token", "o")] {
        let p = &tools.by_name[tool].provider;
        c.bench_function(&format!("inject/{name}"), |b| {
            b.iter(|| {
                p.issue(black_box(&call))
                    .now_or_never()
                    .expect("a warm call does not wait")
                    .unwrap()
            })
        });
    }
}

/// The anomaly baseline's update on every call (issue 21): one agent's warm call to a
/// tool and operation it knows, with every detector on (past the learning period), and the
/// rate limit check of one matching `[[rate_limits]]` entry.
fn guard(c: &mut Criterion) {
    use keygate::anomaly::{Baselines, Call};
    use keygate::config::{AnomalyAction, AnomalySettings, OffHours, RateSpike, RefusalBurst};
    use std::time::Duration;
    let settings = AnomalySettings {
        learning_period: Duration::from_secs(60),
        new_tool: Some(AnomalyAction::Suspend),
        new_operation: Some(AnomalyAction::Record),
        new_host: Some(AnomalyAction::Notify),
        rate_spike: Some(RateSpike {
            action: AnomalyAction::Notify,
            sigmas: 4.0,
            min_per_minute: u32::MAX,
        }),
        refusal_burst: Some(RefusalBurst {
            action: AnomalyAction::Suspend,
            count: 20,
            window: Duration::from_secs(60),
        }),
        off_hours_identity_creation: Some(OffHours {
            action: AnomalyAction::RequireApproval,
            default: Default::default(),
            owners: Default::default(),
        }),
        ..Default::default()
    };
    let baselines = Baselines::default();
    let (agent, tool, op): (Arc<str>, Arc<str>, Arc<str>) =
        ("agent-1".into(), "github".into(), "read".into());
    // Other agents and tools in the map, as in a busy gateway.
    for i in 0..1000 {
        let other: Arc<str> = format!("agent-{i}").into();
        for t in 0..8 {
            let t: Arc<str> = format!("tool-{t}").into();
            let call = Call {
                tool: &t,
                operation: &op,
                identity_creation: false,
                host: None,
                owner: "o",
            };
            baselines.observe(&other, &call, &settings, 1, &mut Vec::new());
        }
    }
    let call = Call {
        tool: &tool,
        operation: &op,
        identity_creation: false,
        host: None,
        owner: "o",
    };
    baselines.observe(&agent, &call, &settings, 1, &mut Vec::new());
    let mut now = 3_600_000_i64;
    let mut found = Vec::new();
    c.bench_function("watch/baseline_update_warm_call", |b| {
        b.iter(|| {
            // A new millisecond per call: the minute rolls over every 60,000 calls.
            now += 1;
            baselines.observe(black_box(&agent), &call, &settings, now, &mut found);
            assert!(found.is_empty());
        })
    });
    let clock = keygate::clock::Clock::default();
    let rule = keygate::config::RateLimitRule {
        agent: None,
        tool: None,
        tag: None,
        per: keygate::config::LimitPer::Agent,
        quota: governor::Quota::per_second(std::num::NonZeroU32::MAX),
        name: "rate_limits[0]".into(),
        shared: None,
    };
    let shared = std::sync::Arc::default();
    let limits =
        keygate::pipeline::limit::RateLimits::new(std::slice::from_ref(&rule), &clock, &shared);
    c.bench_function("limit/one_matching_entry", |b| {
        b.iter(|| limits.check(black_box(&agent), &tool, None, false).unwrap())
    });
    // `shared = true`: the window's count (one more lock) besides the GCRA.
    let shared_rule = keygate::config::RateLimitRule {
        shared: Some(keygate::config::SharedWindow {
            count: std::num::NonZeroU32::MAX,
            period: std::time::Duration::from_secs(1),
        }),
        ..rule
    };
    let limits = keygate::pipeline::limit::RateLimits::new(&[shared_rule], &clock, &shared);
    c.bench_function("limit/one_matching_shared_entry", |b| {
        b.iter(|| limits.check(black_box(&agent), &tool, None, false).unwrap())
    });
}

criterion_group!(
    benches,
    guard,
    providers,
    aws,
    helpers,
    identify,
    secret_scan,
    mint,
    audit_record,
    classify_and_authorize,
    at_scale,
    respond_filter,
    response_scan
);
criterion_main!(benches);
