//! The approvals console, served by the admin listener under `/console`: pending
//! approvals with the exact request each one would let through, the inventory, agents
//! with their recent calls; approvers sign in with OpenID Connect ([`oidc`]) and hold a
//! role the configuration gives their email or group (`auditor` reads, `approver` also
//! decides, `admin` also suspends and resumes agents).
//!
//! Sessions are signed cookies ([`session`]: `HttpOnly`, `SameSite=Strict`, `Secure`
//! over https); every form carries a per-session CSRF token, and a post whose `Origin`
//! or `Sec-Fetch-Site` says it came from elsewhere is refused too. Every answer carries
//! a strict Content-Security-Policy (the console's own script and style only), is never
//! cached, and cannot be framed. The pending list refreshes itself from a server-sent
//! event stream. Nothing secret is rendered: approvals show the request as recorded,
//! secret fields already redacted.
//!
//! ```text
//! GET  /console/approvals[?done=…]     GET /console/approvals/list (the list alone)
//! POST /console/approvals/{id}/approve | /deny
//! GET  /console/inventory[?q=&state=]  GET /console/inventory.csv[?q=&state=]
//! GET  /console/agents                 POST /console/agents/{id}/suspend | /resume
//! GET  /console/events (text/event-stream)
//! GET  /console/login → identity provider → GET /console/callback;  POST /console/logout
//! ```

pub mod oidc;
pub mod pages;
pub mod session;

use super::decide::{self, full, AdminBody, Decider, Decision};
use crate::config::{ConsoleRole, ConsoleSettings};
use crate::gateway::Runtime;
use crate::store::{Approval, ApprovalStatus, Approve, InventoryEntry};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pages::Viewer;
use session::{Login, Sealer, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The console's state in this process: the key sessions are signed with when none is
/// configured, and the identity provider once discovered.
pub struct Console {
    random: Sealer,
    providers: oidc::Providers,
    /// The pending set's version, for the event streams (started with the first one).
    feed: std::sync::OnceLock<tokio::sync::watch::Sender<String>>,
    streams: Arc<tokio::sync::Semaphore>,
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

impl Console {
    pub fn new() -> Console {
        Console {
            random: Sealer::new(session::random_token().as_bytes()),
            providers: oidc::Providers::default(),
            feed: std::sync::OnceLock::new(),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        }
    }
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn secure_headers(r: &mut Response<AdminBody>, https: bool) {
    let h = r.headers_mut();
    if https {
        h.insert(
            http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(http::header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

fn page(status: StatusCode, markup: maud::Markup) -> Response<AdminBody> {
    let mut r = Response::new(full(markup.into_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn redirect(to: &str) -> Response<AdminBody> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

fn with_cookie(mut r: Response<AdminBody>, cookie: String) -> Response<AdminBody> {
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(http::header::SET_COOKIE, v);
    }
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response<AdminBody> {
    let mut r = Response::new(full(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    r
}

/// Serves everything under `/console`.
pub async fn handle(
    rt: &Arc<Runtime>,
    console: &Console,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<AdminBody> {
    let https = rt
        .current()
        .snapshot
        .console
        .as_ref()
        .is_some_and(|c| c.secure);
    let mut r = route(rt, console, req, peer).await;
    secure_headers(&mut r, https);
    r
}

async fn route(
    rt: &Arc<Runtime>,
    console: &Console,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<AdminBody> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (&method, segs.as_slice()) {
        (&Method::GET, ["console", "assets", "console.js"]) => {
            return asset("text/javascript; charset=utf-8", include_str!("console.js"))
        }
        (&Method::GET, ["console", "assets", "console.css"]) => {
            return asset("text/css; charset=utf-8", include_str!("console.css"))
        }
        _ => {}
    }
    let gw = rt.current();
    let Some(settings) = gw.snapshot.console.clone() else {
        return page(
            StatusCode::NOT_FOUND,
            pages::problem(
                None,
                "not_found",
                "The console is not configured: add a [console] section (an OpenID Connect \
                 issuer and client, and roles) to keygate's configuration.",
            ),
        );
    };
    let keyed;
    let sealer: &Sealer = match &settings.session_key {
        Some(k) => {
            keyed = Sealer::new(k);
            &keyed
        }
        None => &console.random,
    };
    let now_s = rt.shared.clock.unix_secs();
    match (&method, segs.as_slice()) {
        (&Method::GET, ["console", "login"]) => {
            return login(console, &settings, sealer, now_s).await
        }
        (&Method::GET, ["console", "callback"]) => {
            return callback(rt, console, &settings, sealer, &req, peer).await
        }
        _ => {}
    }
    // Everything else needs a session.
    // Ended by its own expiry, or sooner when the configured lifetime was shortened since.
    let ttl = settings.session_ttl.as_secs() as i64;
    let session = session::cookie(
        req.headers(),
        &session::cookie_name(session::SESSION, settings.secure),
    )
    .and_then(|c| sealer.open::<Session>(session::SESSION, c))
    .filter(|s| s.exp > now_s && s.iat + ttl > now_s && s.iss == settings.issuer);
    let Some(session) = session else {
        return match method {
            Method::GET if segs.len() <= 2 && !matches!(segs.get(1), Some(&"events")) => {
                page(StatusCode::OK, pages::sign_in(None))
            }
            _ => page(
                StatusCode::UNAUTHORIZED,
                pages::problem(
                    None,
                    "unauthenticated",
                    "Sign in first: your session ended.",
                ),
            ),
        };
    };
    // Signing out needs no role.
    if method == Method::POST && segs.as_slice() == ["console", "logout"] {
        if let Err((status, code, message)) = read_form(&settings, sealer, &session, req).await {
            return page(status, pages::problem(None, code, message));
        }
        tracing::info!(user = %session.principal(), "console sign-out");
        return with_cookie(
            page(StatusCode::OK, pages::sign_in(Some("Signed out."))),
            session::set_cookie(session::SESSION, "", 0, "Strict", settings.secure),
        );
    }
    let Some(role) = settings.role_of(session.email.as_deref(), &session.groups) else {
        return page(
            StatusCode::FORBIDDEN,
            pages::problem(
                None,
                "no_role",
                &format!(
                    "You are signed in as {}, but the configuration gives you no role in the \
                     console (console.roles).",
                    session.principal()
                ),
            ),
        );
    };
    let csrf = sealer.csrf(&session.sid);
    let viewer = Viewer {
        session: &session,
        role,
        csrf: &csrf,
    };
    if method == Method::POST {
        let form = match read_form(&settings, sealer, &session, req).await {
            Ok(f) => f,
            Err((status, code, message)) => {
                tracing::warn!(user = %session.principal(), %path, code, "console post refused");
                return page(status, pages::problem(Some(&viewer), code, message));
            }
        };
        return post(rt, &viewer, &segs, form, peer, &path).await;
    }
    if method != Method::GET {
        return page(
            StatusCode::METHOD_NOT_ALLOWED,
            pages::problem(Some(&viewer), "method_not_allowed", "Not a console method."),
        );
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    match segs.as_slice() {
        ["console"] => redirect("/console/approvals"),
        ["console", "approvals"] => {
            // Only what is true of that approval (a link cannot make up a banner).
            let shown = match param("id") {
                Some(id) => rt.shared.store.approval(&id).await.ok().flatten(),
                None => None,
            };
            let flash = match (param("done").as_deref(), shown) {
                (Some("approve"), Some(a))
                    if a.status != ApprovalStatus::Pending && a.approver.is_some() =>
                {
                    Some(format!("Approval {} approved.", a.id))
                }
                (Some("deny"), Some(a)) if a.status == ApprovalStatus::Denied => {
                    Some(format!("Approval {} denied.", a.id))
                }
                (Some("first"), Some(a)) if a.first_approver.is_some() => Some(format!(
                    "Approval {}: your approval is recorded; a second, different approver \
                     must approve.",
                    a.id
                )),
                _ => None,
            };
            approvals_page(rt, &viewer, flash.as_deref()).await
        }
        ["console", "approvals", "list"] => match pending_list(rt, &viewer).await {
            Ok(m) => page(StatusCode::OK, m),
            Err(r) => r,
        },
        ["console", "inventory"] => inventory_page(rt, &viewer, param("q"), param("state")).await,
        ["console", "inventory.csv"] => {
            inventory_csv(rt, &viewer, param("q"), param("state")).await
        }
        ["console", "agents"] => agents_page(rt, &viewer).await,
        ["console", "events"] => events(rt, console, session.exp),
        _ => page(
            StatusCode::NOT_FOUND,
            pages::problem(
                Some(&viewer),
                "not_found",
                &format!("No console page {path}."),
            ),
        ),
    }
}

fn store_problem(viewer: Option<&Viewer<'_>>, e: crate::store::StoreError) -> Response<AdminBody> {
    let r = decide::store_error(e);
    let status = r.status();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "No such approval."),
        StatusCode::CONFLICT => ("conflict", "It was decided already, or has expired."),
        _ => (
            "store_unavailable",
            "The store cannot be reached; try again.",
        ),
    };
    page(status, pages::problem(viewer, code, message))
}

// ----- sign-in -----

async fn login(
    console: &Console,
    s: &ConsoleSettings,
    sealer: &Sealer,
    now_s: i64,
) -> Response<AdminBody> {
    let provider = match console.providers.get(s).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("console sign-in: the identity provider cannot be used: {e}");
            return page(
                StatusCode::BAD_GATEWAY,
                pages::problem(
                    None,
                    "identity_provider_unavailable",
                    "The identity provider cannot be reached or is misconfigured; the log says why.",
                ),
            );
        }
    };
    let login = Login {
        state: session::random_token(),
        nonce: session::random_token(),
        verifier: session::random_token(),
        exp: now_s + 600,
    };
    let url = oidc::authorization_url(
        &provider,
        s,
        &login.state,
        &login.nonce,
        &session::pkce_challenge(&login.verifier),
    );
    let cookie = session::set_cookie(
        session::LOGIN,
        &sealer.seal(session::LOGIN, &login),
        600,
        "Lax",
        s.secure,
    );
    with_cookie(redirect(&url), cookie)
}

async fn callback(
    rt: &Runtime,
    console: &Console,
    s: &ConsoleSettings,
    sealer: &Sealer,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Response<AdminBody> {
    let refuse = |code: &str, message: &str| {
        let r = page(StatusCode::BAD_REQUEST, pages::sign_in(Some(message)));
        tracing::warn!(code, "console sign-in refused: {message}");
        // The sign-in state is spent either way.
        with_cookie(
            r,
            session::set_cookie(session::LOGIN, "", 0, "Lax", s.secure),
        )
    };
    let now_s = rt.shared.clock.unix_secs();
    let q = req.uri().query().unwrap_or("");
    let param = |name: &str| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(err) = param("error") {
        // The provider's error code only, at most a short token of safe characters.
        let err: String = err
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return refuse(
            "identity_provider_error",
            &format!("The identity provider refused the sign-in ({err})."),
        );
    }
    let Some(login) = session::cookie(
        req.headers(),
        &session::cookie_name(session::LOGIN, s.secure),
    )
    .and_then(|c| sealer.open::<Login>(session::LOGIN, c))
    .filter(|l| l.exp > now_s) else {
        return refuse(
            "sign_in_expired",
            "This sign-in expired or was not started here; sign in again.",
        );
    };
    let state_ok = param("state").is_some_and(|st| {
        aws_lc_rs::constant_time::verify_slices_are_equal(st.as_bytes(), login.state.as_bytes())
            .is_ok()
    });
    if !state_ok {
        return refuse(
            "state_mismatch",
            "The sign-in's state does not match; sign in again.",
        );
    }
    let Some(code) = param("code") else {
        return refuse("no_code", "The identity provider returned no code.");
    };
    let provider = match console.providers.get(s).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("console sign-in: the identity provider cannot be used: {e}");
            return refuse(
                "identity_provider_unavailable",
                "The identity provider cannot be reached.",
            );
        }
    };
    let who = match oidc::exchange(&provider, s, &code, &login.verifier, &login.nonce).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("console sign-in failed: {e}");
            return refuse(
                "sign_in_failed",
                "The sign-in could not be verified; the log says why.",
            );
        }
    };
    let session = Session {
        sid: session::random_token(),
        iss: s.issuer.clone(),
        sub: who.sub,
        email: who.email,
        name: who.name,
        // Only the groups that give a role: a large groups claim would not fit a cookie.
        groups: who
            .groups
            .into_iter()
            .filter(|g| s.groups.contains_key(g))
            .collect(),
        iat: now_s,
        exp: now_s + s.session_ttl.as_secs() as i64,
    };
    let role = s.role_of(session.email.as_deref(), &session.groups);
    tracing::info!(user = %session.principal(), role = role.map(|r| r.name()).unwrap_or("none"), "console sign-in");
    decide::audit_admin(
        rt,
        "/console/callback",
        None,
        None,
        "oidc",
        crate::telemetry::audit_log::AdminAction {
            action: "sign_in",
            by: session.principal(),
            reason: role.map(|r| format!("role {}", r.name())),
            via: Some("console"),
            from: Some(format!("{} from {}", session.sub, peer.ip())),
            ..Default::default()
        },
        200,
    );
    let r = page(StatusCode::OK, pages::signed_in());
    let r = with_cookie(
        r,
        session::set_cookie(session::LOGIN, "", 0, "Lax", s.secure),
    );
    with_cookie(
        r,
        session::set_cookie(
            session::SESSION,
            &sealer.seal(session::SESSION, &session),
            s.session_ttl.as_secs() as i64,
            "Strict",
            s.secure,
        ),
    )
}

// ----- posts -----

type Form = Vec<(String, String)>;

/// Reads a posted form after the CSRF checks: the session's token in `_csrf`, and no
/// `Origin` or `Sec-Fetch-Site` saying the post came from another site.
async fn read_form(
    s: &ConsoleSettings,
    sealer: &Sealer,
    session: &Session,
    req: Request<Incoming>,
) -> Result<Form, (StatusCode, &'static str, &'static str)> {
    let csrf_refused = (
        StatusCode::FORBIDDEN,
        "csrf_failed",
        "This form did not come from the console (its CSRF token is missing or wrong): \
         reload the page and try again.",
    );
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return Err(csrf_refused);
        }
    }
    if let Some(origin) = h.get(http::header::ORIGIN) {
        let ours = origin_of(&s.public_url);
        if origin.to_str().ok() != Some(ours) {
            return Err(csrf_refused);
        }
    }
    let body = http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "The form could not be read.",
            )
        })?
        .to_bytes();
    let form: Form = form_urlencoded::parse(&body).into_owned().collect();
    let token = form
        .iter()
        .find(|(k, _)| k == "_csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !sealer.csrf_ok(&session.sid, token) {
        return Err(csrf_refused);
    }
    Ok(form)
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

fn field<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

async fn post(
    rt: &Runtime,
    viewer: &Viewer<'_>,
    segs: &[&str],
    form: Form,
    peer: SocketAddr,
    path: &str,
) -> Response<AdminBody> {
    let refuse = |status: StatusCode, code: &str, message: &str| {
        page(status, pages::problem(Some(viewer), code, message))
    };
    let principal = viewer.session.principal();
    match segs {
        ["console", "approvals", id, action @ ("approve" | "deny")] => {
            if viewer.role < ConsoleRole::Approver {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &format!(
                        "Your role ({}) cannot decide approvals.",
                        viewer.role.name()
                    ),
                );
            }
            // Decisions are recorded by a verified email: without one there is nobody to
            // record, and separation of duties could not be checked.
            if viewer.session.email.is_none() {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "no_verified_email",
                    "keygate records approvers by their verified email, and your identity \
                     provider did not give one: ask for the email scope, or a verified email.",
                );
            }
            let now = rt.shared.clock.unix_millis();
            let decision = if *action == "approve" {
                let settings = &rt.current().snapshot.approvals;
                let Some(owner) = field(&form, "owner") else {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "Name the owner of the identity to be created.",
                    );
                };
                let review_by = match field(&form, "review").map(parse_date) {
                    None => now + settings.review_after.as_millis() as i64,
                    Some(Some(ms)) if ms > now => ms,
                    Some(_) => {
                        return refuse(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "The review date must be a date (YYYY-MM-DD) in the future.",
                        )
                    }
                };
                let expires = match field(&form, "expires_in").map(humantime::parse_duration) {
                    None => settings.approval_ttl,
                    Some(Ok(d))
                        if d >= Duration::from_secs(60) && d <= Duration::from_secs(7 * 86400) =>
                    {
                        d
                    }
                    Some(_) => {
                        return refuse(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "The approval must be usable for between 1 minute and 7 days.",
                        )
                    }
                };
                Decision::Approve(Approve {
                    approver: principal.clone(),
                    ticket: field(&form, "ticket").map(str::to_string),
                    identity_owner: owner.to_string(),
                    note: field(&form, "note").map(str::to_string),
                    expires_at: now + expires.as_millis() as i64,
                    review_by: Some(review_by),
                })
            } else {
                let Some(reason) = field(&form, "reason") else {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "Give a reason for denying.",
                    );
                };
                Decision::Deny {
                    reason: Some(reason.to_string()),
                }
            };
            let who = Decider {
                approver: &principal,
                via: "console",
                identity: "oidc",
                from: format!("{} from {}", viewer.session.sub, peer.ip()),
                path,
            };
            match decide::decide(rt, id, decision, who, now).await {
                Ok(a) => {
                    let done = if a.status == ApprovalStatus::Pending {
                        "first"
                    } else {
                        action
                    };
                    redirect(&format!(
                        "/console/approvals?done={done}&id={}",
                        form_urlencoded::byte_serialize(a.id.as_bytes()).collect::<String>()
                    ))
                }
                Err(r) => problem_from(viewer, r).await,
            }
        }
        ["console", "agents", id, action @ ("suspend" | "resume")] => {
            if viewer.role < ConsoleRole::Admin {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &format!(
                        "Your role ({}) cannot suspend or resume agents.",
                        viewer.role.name()
                    ),
                );
            }
            if !rt.current().snapshot.agents.by_id.contains_key(*id) {
                return refuse(StatusCode::NOT_FOUND, "unknown_agent", "No such agent.");
            }
            let done = if *action == "suspend" {
                let Some(reason) = field(&form, "reason") else {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "Give a reason for suspending.",
                    );
                };
                decide::suspend(rt, id, &principal, Some(reason)).await
            } else {
                decide::resume(rt, id).await.map(|_| ())
            };
            if let Err(e) = done {
                return store_problem(Some(viewer), e);
            }
            decide::audit_admin(
                rt,
                path,
                None,
                None,
                "oidc",
                crate::telemetry::audit_log::AdminAction {
                    action: if *action == "suspend" {
                        "suspend"
                    } else {
                        "resume"
                    },
                    by: principal.clone(),
                    reason: field(&form, "reason").map(str::to_string),
                    agent: Some(id.to_string()),
                    via: Some("console"),
                    from: Some(format!("{} from {}", viewer.session.sub, peer.ip())),
                },
                200,
            );
            redirect("/console/agents")
        }
        _ => refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such console action.",
        ),
    }
}

/// A JSON refusal of the shared decision path, as a page with the same code.
async fn problem_from(viewer: &Viewer<'_>, r: Response<AdminBody>) -> Response<AdminBody> {
    let status = r.status();
    let body = r
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let code = v["error"].as_str().unwrap_or("refused");
    let message = v["message"].as_str().unwrap_or("The decision was refused.");
    page(status, pages::problem(Some(viewer), code, message))
}

/// `YYYY-MM-DD` → the start of that day (UTC), in Unix milliseconds.
fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let y: i32 = it.next()?.parse().ok()?;
    let m: u8 = it.next()?.parse().ok()?;
    let d: u8 = it.next()?.parse().ok()?;
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1000)
}

fn date_of(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms / 1000) {
        Ok(t) => format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        Err(_) => String::new(),
    }
}

// ----- pages -----

/// The approvals still pending (read only: those past their expiry are left out, not
/// written as expired).
async fn pending(rt: &Runtime) -> Result<Vec<Approval>, crate::store::StoreError> {
    let now = rt.shared.clock.unix_millis();
    let mut list = rt
        .shared
        .store
        .approvals(Some(ApprovalStatus::Pending), 500)
        .await?;
    list.retain(|a| a.pending_expires_at > now);
    Ok(list)
}

/// Identifies the pending set, so the page asks for the list only when it changed.
fn version_of(list: &[Approval]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for a in list {
        ctx.update(a.id.as_bytes());
        ctx.update(b"\n");
    }
    const_hex::encode(&ctx.finish().as_ref()[..8])
}

async fn pending_list(
    rt: &Runtime,
    viewer: &Viewer<'_>,
) -> Result<maud::Markup, Response<AdminBody>> {
    let list = pending(rt)
        .await
        .map_err(|e| store_problem(Some(viewer), e))?;
    let now = rt.shared.clock.unix_millis();
    let gw = rt.current();
    let a = &gw.snapshot.approvals;
    let defaults = pages::Defaults {
        review_date: date_of(now + a.review_after.as_millis() as i64),
        expires_in: a.approval_ttl,
    };
    Ok(pages::pending_list(
        viewer,
        &list,
        &version_of(&list),
        now,
        &defaults,
        a.separation_of_duties,
    ))
}

async fn approvals_page(
    rt: &Runtime,
    viewer: &Viewer<'_>,
    flash: Option<&str>,
) -> Response<AdminBody> {
    let list = match pending_list(rt, viewer).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let decided = match rt.shared.store.approvals(None, 200).await {
        Ok(all) => all
            .into_iter()
            .filter(|a| a.status != ApprovalStatus::Pending && a.decided_at.is_some())
            .take(20)
            .collect::<Vec<_>>(),
        Err(e) => return store_problem(Some(viewer), e),
    };
    page(
        StatusCode::OK,
        pages::approvals(viewer, list, &decided, flash),
    )
}

fn matches(e: &InventoryEntry, q: &str, state: &str, now: i64) -> bool {
    let q = q.to_lowercase();
    let fits = q.is_empty()
        || [
            Some(e.id.as_str()),
            Some(e.kind.as_str()),
            Some(e.tool.as_str()),
            Some(e.operation.as_str()),
            e.identifier.as_deref(),
            Some(e.agent_id.as_str()),
            e.approver.as_deref(),
            Some(e.owner.as_str()),
            e.ticket.as_deref(),
        ]
        .into_iter()
        .flatten()
        .any(|f| f.to_lowercase().contains(&q));
    fits && (state == "all" || pages::state_of(e, now) == state)
}

fn inventory_filter(state: Option<String>) -> String {
    match state.as_deref() {
        Some(s @ ("active" | "overdue" | "revoked")) => s.to_string(),
        _ => "all".into(),
    }
}

/// The inventory records the filter keeps (text `q`, `state`), the filter as applied,
/// and the time they were judged at.
struct Filtered {
    rows: Vec<InventoryEntry>,
    q: String,
    state: String,
    now: i64,
}

async fn filtered_inventory(
    rt: &Runtime,
    viewer: &Viewer<'_>,
    q: Option<String>,
    state: Option<String>,
) -> Result<Filtered, Response<AdminBody>> {
    let all = rt
        .shared
        .store
        .inventory()
        .await
        .map_err(|e| store_problem(Some(viewer), e))?;
    let now = rt.shared.clock.unix_millis();
    let q = q.unwrap_or_default();
    let state = inventory_filter(state);
    let rows = all
        .into_iter()
        .filter(|e| matches(e, &q, &state, now))
        .collect();
    Ok(Filtered {
        rows,
        q,
        state,
        now,
    })
}

async fn inventory_page(
    rt: &Runtime,
    viewer: &Viewer<'_>,
    q: Option<String>,
    state: Option<String>,
) -> Response<AdminBody> {
    let f = match filtered_inventory(rt, viewer, q, state).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let rows: Vec<&InventoryEntry> = f.rows.iter().collect();
    page(
        StatusCode::OK,
        pages::inventory(viewer, &rows, &f.q, &f.state, f.now),
    )
}

/// A cell that a spreadsheet would run as a formula is quoted (OWASP's CSV injection).
fn csv_cell(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

async fn inventory_csv(
    rt: &Runtime,
    viewer: &Viewer<'_>,
    q: Option<String>,
    state: Option<String>,
) -> Response<AdminBody> {
    let Filtered { rows, now, .. } = match filtered_inventory(rt, viewer, q, state).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    // Every cell quoted: a separator inside one (`;` in some locales) cannot split it.
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(Vec::new());
    let _ = w.write_record([
        "id",
        "kind",
        "identifier",
        "tool",
        "operation",
        "agent",
        "owner",
        "approver",
        "ticket",
        "approval_id",
        "created_at",
        "review_by",
        "state",
        "revoked_at",
        "revoked_by",
    ]);
    for e in &rows {
        let created = pages::time(e.created_at);
        let review = e.review_by.map(pages::time).unwrap_or_default();
        let revoked = e.revoked_at.map(pages::time).unwrap_or_default();
        let row = [
            e.id.as_str(),
            &e.kind,
            e.identifier.as_deref().unwrap_or(""),
            &e.tool,
            &e.operation,
            &e.agent_id,
            &e.owner,
            e.approver.as_deref().unwrap_or(""),
            e.ticket.as_deref().unwrap_or(""),
            e.approval_id.as_deref().unwrap_or(""),
            &created,
            &review,
            pages::state_of(e, now),
            &revoked,
            e.revoked_by.as_deref().unwrap_or(""),
        ];
        let _ = w.write_record(row.iter().map(|c| csv_cell(c).into_owned()));
    }
    let body = w.into_inner().unwrap_or_default();
    let mut r = Response::new(full(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    r.headers_mut().insert(
        http::header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"keygate-inventory.csv\""),
    );
    r
}

/// The most recent calls per agent, from the tail of this replica's audit log file.
async fn recent_calls(
    rt: &Runtime,
) -> (
    std::collections::HashMap<String, Vec<pages::Call>>,
    Option<String>,
) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    const TAIL: u64 = 1 << 20;
    const PER_AGENT: usize = 10;
    let mut out: std::collections::HashMap<String, Vec<pages::Call>> = Default::default();
    let path = match &rt.current().snapshot.audit {
        crate::config::AuditTarget::File(f) => f.path.clone(),
        crate::config::AuditTarget::Stdout => {
            return (
                out,
                Some("The audit log goes to standard output: recent calls are not shown.".into()),
            )
        }
    };
    let read = async {
        let mut f = tokio::fs::File::open(&path).await?;
        let len = f.metadata().await?.len();
        let start = len.saturating_sub(TAIL);
        f.seek(std::io::SeekFrom::Start(start)).await?;
        let mut buf = Vec::new();
        f.take(TAIL).read_to_end(&mut buf).await?;
        // A partial first line is dropped.
        if start > 0 {
            let cut = memchr::memchr(b'\n', &buf)
                .map(|i| i + 1)
                .unwrap_or(buf.len());
            buf.drain(..cut);
        }
        Ok::<_, std::io::Error>(buf)
    };
    let buf = match read.await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("console: cannot read the audit log: {e}");
            return (
                out,
                Some("The audit log cannot be read: recent calls are not shown.".into()),
            );
        }
    };
    for line in buf.split(|b| *b == b'\n').rev() {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let Some(agent) = v["agent_id"].as_str() else {
            continue;
        };
        let calls = out.entry(agent.to_string()).or_default();
        if calls.len() >= PER_AGENT {
            continue;
        }
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        calls.push(pages::Call {
            time: s("time"),
            tool: s("tool"),
            operation: s("operation"),
            decision: s("decision"),
            status: v["status"].as_u64().unwrap_or(0),
            error: s("error"),
        });
    }
    (out, None)
}

async fn agents_page(rt: &Runtime, viewer: &Viewer<'_>) -> Response<AdminBody> {
    let suspensions = match rt.shared.store.suspensions().await {
        Ok(s) => s,
        Err(e) => return store_problem(Some(viewer), e),
    };
    let (calls, note) = recent_calls(rt).await;
    let gw = rt.current();
    let mut agents: Vec<_> = gw.snapshot.agents.by_id.values().collect();
    agents.sort_by(|a, b| a.id.cmp(&b.id));
    let none = Vec::new();
    let rows: Vec<pages::AgentRow<'_>> = agents
        .iter()
        .map(|a| pages::AgentRow {
            id: &a.id,
            owner: &a.owner,
            suspension: suspensions.iter().find(|s| *s.agent_id == *a.id),
            calls: calls.get(&*a.id).unwrap_or(&none),
            anomalies: rt.shared.baselines.recent(&a.id),
        })
        .collect();
    page(
        StatusCode::OK,
        pages::agents(viewer, &rows, note.as_deref()),
    )
}

// ----- live updates -----

/// Open event streams at most, in this process: each is one connection; past it a new
/// one gets 503 (the page still works, without live updates).
const MAX_STREAMS: usize = 64;

impl Console {
    /// The pending set's version, kept by one poller for every stream of this process: it
    /// reads the store each second while anyone listens,
    /// and ends with the runtime.
    fn feed(&self, rt: &Arc<Runtime>) -> tokio::sync::watch::Receiver<String> {
        self.feed
            .get_or_init(|| {
                let (tx, _) = tokio::sync::watch::channel(String::new());
                let weak = Arc::downgrade(rt);
                let poller = tx.clone();
                tokio::spawn(async move {
                    loop {
                        let Some(rt) = weak.upgrade() else { return };
                        if poller.receiver_count() > 0 {
                            if let Ok(list) = pending(&rt).await {
                                let v = version_of(&list);
                                poller.send_if_modified(|cur| {
                                    let changed = *cur != v;
                                    if changed {
                                        *cur = v;
                                    }
                                    changed
                                });
                            }
                        }
                        drop(rt);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                });
                tx
            })
            .subscribe()
    }
}

/// `text/event-stream`: an `approvals` event with the pending set's version at once and
/// whenever it changes, a comment every 15 s to keep the connection open, and the end of
/// the stream when the session expires.
fn events(rt: &Arc<Runtime>, console: &Console, session_exp: i64) -> Response<AdminBody> {
    use futures_util::StreamExt;
    let Ok(permit) = console.streams.clone().try_acquire_owned() else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::problem(
                None,
                "too_many_streams",
                "Too many consoles are open for live updates.",
            ),
        );
    };
    struct State {
        rt: std::sync::Weak<Runtime>,
        rx: tokio::sync::watch::Receiver<String>,
        _permit: tokio::sync::OwnedSemaphorePermit,
        first: bool,
    }
    let mut rx = console.feed(rt);
    rx.mark_changed();
    let state = State {
        rt: Arc::downgrade(rt),
        rx,
        _permit: permit,
        first: true,
    };
    let stream = futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            let wait = if st.first {
                Duration::ZERO
            } else {
                Duration::from_secs(15)
            };
            st.first = false;
            let changed =
                tokio::time::timeout(wait.max(Duration::from_millis(1)), st.rx.changed()).await;
            let now = st.rt.upgrade()?.shared.clock.unix_secs();
            if now >= session_exp {
                return None;
            }
            let frame = match changed {
                Ok(Ok(())) => {
                    let v = st.rx.borrow_and_update().clone();
                    if v.is_empty() {
                        continue;
                    }
                    format!("event: approvals\ndata: {v}\n\n")
                }
                Ok(Err(_)) => return None,
                Err(_) => ": keep-alive\n\n".to_string(),
            };
            return Some((Ok(hyper::body::Frame::data(Bytes::from(frame))), st));
        }
    });
    let body = http_body_util::StreamBody::new(stream.boxed());
    let mut r = Response::new(BodyExt::boxed_unsync(body));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn dates_and_origins() {
        assert_eq!(parse_date("2027-03-01"), Some(1_803_859_200_000));
        assert_eq!(date_of(1_803_859_200_000), "2027-03-01");
        assert_eq!(parse_date("2027-02-30"), None);
        assert_eq!(parse_date("tomorrow"), None);
        assert_eq!(
            origin_of("https://kg.example.com/admin"),
            "https://kg.example.com"
        );
        assert_eq!(origin_of("http://127.0.0.1:8081"), "http://127.0.0.1:8081");
    }

    #[test]
    fn csv_cells_never_run_as_formulas() {
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("alice@example.com"), "alice@example.com");
    }
}
