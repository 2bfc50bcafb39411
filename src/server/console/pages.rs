//! The console's HTML, rendered on the server with maud (every value escaped). No inline
//! script or style: the Content-Security-Policy allows only the console's own files.

use super::session::Session;
use crate::config::ConsoleRole;
use crate::store::{Approval, InventoryEntry, Suspension};
use maud::{html, Markup, DOCTYPE};
use std::time::Duration;

/// What every page knows of who is looking.
pub struct Viewer<'a> {
    pub session: &'a Session,
    pub role: ConsoleRole,
    pub csrf: &'a str,
}

pub fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    crate::pipeline::audit::rfc3339_millis(t)
}

/// `1h 3m` (seconds dropped past a minute).
pub fn waited(ms: i64) -> String {
    let secs = u64::try_from(ms / 1000).unwrap_or(0);
    let secs = if secs >= 60 { secs - secs % 60 } else { secs };
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn layout(title: &str, viewer: Option<&Viewer<'_>>, active: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · keygate" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header {
                    span.brand { "keygate" }
                    @if let Some(v) = viewer {
                        nav {
                            @for (href, name) in [("/console/approvals", "Approvals"), ("/console/inventory", "Inventory"), ("/console/agents", "Agents")] {
                                a href=(href) class=[(name == active).then_some("active")] { (name) }
                            }
                        }
                        span #whoami {
                            (v.session.principal()) " · " span.role { (v.role.name()) }
                        }
                        form #logout method="post" action="/console/logout" {
                            input type="hidden" name="_csrf" value=(v.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn sign_in(message: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        "",
        html! {
            section.signin {
                h1 { "keygate approvals console" }
                @if let Some(m) = message { p #error { (m) } }
                p { "Approvers, auditors and administrators sign in with the organisation's identity provider." }
                a #sign-in .button href="/console/login" { "Sign in" }
            }
        },
    )
}

/// After the identity provider's redirect: a same-site navigation onward, so the
/// `SameSite=Strict` session cookie is sent with it.
pub fn signed_in() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="0;url=/console/approvals";
                title { "Signed in · keygate" }
            }
            body { p { "Signed in. " a href="/console/approvals" { "Continue" } } }
        }
    }
}

/// A refusal or failure, with its stable code.
pub fn problem(viewer: Option<&Viewer<'_>>, code: &str, message: &str) -> Markup {
    layout(
        "Refused",
        viewer,
        "",
        html! {
            section #error .problem data-code=(code) {
                h1 { "Refused: " code { (code) } }
                p { (message) }
                p { a href="/console/approvals" { "Back to approvals" } }
            }
        },
    )
}

/// `s` with what could mislead a reader shown as `\u{..}`: every character that
/// [acts on a terminal](crate::admin_client::acts_on_terminal) — controls (line breaks and
/// tabs kept when `lines`), bidi overrides and isolates, zero-width characters — is
/// escaped rather than removed, so the page still shows that it was there.
pub fn visible(s: &str, lines: bool) -> std::borrow::Cow<'_, str> {
    let hidden =
        |c: char| crate::admin_client::acts_on_terminal(c) && !(lines && (c == '\n' || c == '\t'));
    if !s.chars().any(hidden) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if hidden(c) {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// A JSON document that names no key twice in one object (serde_json keeps the last of
/// duplicates, a tool may take the first: a pretty view of such a body would not be the
/// request).
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NoDuplicateKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a.next_element::<NoDuplicateKeys>()?.is_some() {}
                Ok(NoDuplicateKeys)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(k) = a.next_key::<String>()? {
                    if !seen.insert(k) {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                    a.next_value::<NoDuplicateKeys>()?;
                }
                Ok(NoDuplicateKeys)
            }
        }
        d.deserialize_any(V)
    }
}

/// The body as JSON indented, when it is JSON without duplicate keys.
fn pretty_json(body: &str) -> Option<String> {
    serde_json::from_str::<NoDuplicateKeys>(body).ok()?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    serde_json::to_string_pretty(&v).ok()
}

/// The request an approval is for: as recorded (what the digest binds, with anything
/// that could mislead shown as `\u{..}`), and beside it a reading aid: JSON indented, or
/// form fields one per line.
fn request_view(summary: &str) -> Markup {
    let (head, body) = summary.split_once("\n\n").unwrap_or((summary, ""));
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("");
    let headers: Vec<&str> = lines.collect();
    let content_type = headers
        .iter()
        .find_map(|h| h.strip_prefix("content-type: "))
        .unwrap_or("");
    let reading = if body.is_empty() {
        None
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        Some(
            form_urlencoded::parse(body.as_bytes())
                .map(|(k, v)| format!("{} = {}", visible(&k, false), visible(&v, false)))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    } else {
        pretty_json(body).map(|p| visible(&p, true).into_owned())
    };
    html! {
        div.request {
            code.request-line { (visible(request_line, false)) }
            @if !headers.is_empty() {
                pre.headers { (visible(&headers.join("\n"), true)) }
            }
            @if let Some(r) = &reading {
                pre.body { (r) }
            }
            @if !body.is_empty() {
                details.raw open[reading.is_none()] {
                    summary { "The body exactly as it will be sent" }
                    pre.raw { (visible(body, true)) }
                }
            }
        }
    }
}

/// The list of pending approvals: the part of the page the event stream refreshes.
pub fn pending_list(
    viewer: &Viewer<'_>,
    pending: &[Approval],
    version: &str,
    now: i64,
    defaults: &Defaults,
    separation_of_duties: bool,
) -> Markup {
    html! {
        div #approvals data-version=(version) {
            @if pending.is_empty() {
                p.empty { "No approval is pending." }
            }
            @for a in pending {
                (approval_card(viewer, a, now, defaults, separation_of_duties))
            }
        }
    }
}

/// What the approve form is filled with.
pub struct Defaults {
    /// `YYYY-MM-DD`.
    pub review_date: String,
    pub expires_in: Duration,
}

fn approval_card(
    viewer: &Viewer<'_>,
    a: &Approval,
    now: i64,
    d: &Defaults,
    separation_of_duties: bool,
) -> Markup {
    let me = viewer.session.principal();
    let own = separation_of_duties && super::super::decide::owns_agent(a, &me);
    let approved_already = a
        .first_approver
        .as_deref()
        .is_some_and(|f| f.trim().eq_ignore_ascii_case(me.trim()));
    let can_decide = viewer.role >= ConsoleRole::Approver;
    let expiries = [
        ("15m", "15 minutes"),
        ("1h", "1 hour"),
        ("4h", "4 hours"),
        ("24h", "24 hours"),
    ];
    let default_expiry = humantime::format_duration(d.expires_in).to_string();
    html! {
        article.approval data-id=(a.id) {
            h2 {
                code { (a.method) } " " (a.operation) " on " strong { (a.tool) }
                @if let Some(k) = &a.identity_kind { " — creates a " span.kind { (k) } }
            }
            dl.facts {
                dt { "Agent" } dd.agent { (a.agent_id) }
                dt { "Agent owner" } dd.owner { (a.agent_owner) }
                dt { "Path" } dd { code { (a.path) } }
                dt { "Policies" } dd.policies { (a.policies.join(", ")) }
                dt { "Waiting" } dd.waited { (waited(now - a.created_at)) }
                dt { "Expires" } dd { (time(a.pending_expires_at)) }
                dt { "Approval" } dd { code.id { (a.id) } }
                @if a.approvers_needed > 1 {
                    dt { "Approvers" }
                    dd.approvers {
                        "two different approvers must approve"
                        @if let Some(f) = &a.first_approver { "; approved by " (f) ", one more needed" }
                    }
                }
            }
            @match &a.request {
                Some(r) => (request_view(r)),
                None => p { "(the request was not recorded)" },
            }
            @if !can_decide {
                p.readonly { "Read-only: your role (" (viewer.role.name()) ") cannot decide." }
            } @else {
                div.decide {
                    @if own {
                        p.sod { "You own agent " (a.agent_id) ": someone else must approve its request." }
                    } @else if approved_already {
                        p.second { "You approved it: a second, different approver must approve." }
                    } @else {
                        form.approve method="post" action={"/console/approvals/" (a.id) "/approve"} {
                            input type="hidden" name="_csrf" value=(viewer.csrf);
                            label { "Ticket " input type="text" name="ticket" placeholder="SEC-123"; }
                            label { "Owner of the identity " input type="email" name="owner" required value=(a.agent_owner); }
                            label { "Review by " input type="date" name="review" required value=(d.review_date); }
                            label { "Usable for "
                                select name="expires_in" {
                                    @for (v, text) in expiries {
                                        option value=(v) selected[v == default_expiry] { (text) }
                                    }
                                }
                            }
                            label { "Note " input type="text" name="note"; }
                            button.approve type="submit" { "Approve" }
                        }
                    }
                    form.deny method="post" action={"/console/approvals/" (a.id) "/deny"} {
                        input type="hidden" name="_csrf" value=(viewer.csrf);
                        label { "Reason " input type="text" name="reason" required; }
                        button.deny type="submit" { "Deny" }
                    }
                }
            }
        }
    }
}

pub fn approvals(
    viewer: &Viewer<'_>,
    list: Markup,
    decided: &[Approval],
    flash: Option<&str>,
) -> Markup {
    layout(
        "Approvals",
        Some(viewer),
        "Approvals",
        html! {
            @if let Some(f) = flash { p #flash { (f) } }
            h1 { "Pending approvals" }
            p #stale hidden { "New approvals arrived: " a href="/console/approvals" { "reload" } }
            (list)
            h2 { "Recently decided" }
            table #decided {
                thead { tr { th { "Decided" } th { "Approval" } th { "Agent" } th { "Operation" } th { "Status" } th { "By" } th { "Note" } } }
                tbody {
                    @for a in decided {
                        tr data-id=(a.id) {
                            td { (a.decided_at.map(time).unwrap_or_default()) }
                            td { code { (a.id) } }
                            td { (a.agent_id) }
                            td { (a.operation) }
                            td.status { (a.status.as_str()) }
                            td.by {
                                @if let Some(f) = &a.first_approver { (f) ", " }
                                (a.approver.as_deref().unwrap_or(""))
                            }
                            td { (a.note.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        },
    )
}

/// Whether an identity is past its review date and still active.
pub fn overdue(e: &InventoryEntry, now: i64) -> bool {
    e.revoked_at.is_none() && e.review_by.is_some_and(|r| r < now)
}

pub fn inventory(
    viewer: &Viewer<'_>,
    rows: &[&InventoryEntry],
    q: &str,
    state: &str,
    now: i64,
) -> Markup {
    let csv = format!(
        "/console/inventory.csv?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("q", q)
            .append_pair("state", state)
            .finish()
    );
    html! {
        (layout("Inventory", Some(viewer), "Inventory", html! {
            h1 { "Identities created through keygate" }
            form #filter method="get" action="/console/inventory" {
                input type="search" name="q" value=(q) placeholder="agent, owner, tool, kind, id…";
                select name="state" {
                    @for s in ["all", "active", "overdue", "revoked"] {
                        option value=(s) selected[s == state] { (s) }
                    }
                }
                button type="submit" { "Filter" }
                a #export-csv href=(csv) { "Export CSV" }
            }
            table #inventory {
                thead { tr { th { "Created" } th { "Kind" } th { "Identifier" } th { "Tool" } th { "Agent" } th { "Owner" } th { "Approver" } th { "Ticket" } th { "Review by" } th { "State" } } }
                tbody {
                    @for e in rows {
                        @let late = overdue(e, now);
                        tr.identity.overdue[late] data-id=(e.id) {
                            td { (time(e.created_at)) }
                            td { (e.kind) }
                            td { code { (e.identifier.as_deref().unwrap_or("")) } }
                            td { (e.tool) }
                            td { (e.agent_id) }
                            td { (e.owner) }
                            td { (e.approver.as_deref().unwrap_or("")) }
                            td { (e.ticket.as_deref().unwrap_or("")) }
                            td.review { (e.review_by.map(time).unwrap_or_default()) @if late { " (overdue)" } }
                            td { (state_of(e, now)) }
                        }
                    }
                }
            }
        }))
    }
}

pub fn state_of(e: &InventoryEntry, now: i64) -> &'static str {
    if e.revoked_at.is_some() {
        "revoked"
    } else if overdue(e, now) {
        "overdue"
    } else {
        "active"
    }
}

/// One call of an agent, from the audit log.
pub struct Call {
    pub time: String,
    pub tool: String,
    pub operation: String,
    pub decision: String,
    pub status: u64,
    pub error: String,
}

pub struct AgentRow<'a> {
    pub id: &'a str,
    pub owner: &'a str,
    pub suspension: Option<&'a Suspension>,
    pub calls: &'a [Call],
    /// What the anomaly detectors found, newest first (this replica's view).
    pub anomalies: Vec<crate::anomaly::Recent>,
}

pub fn agents(viewer: &Viewer<'_>, rows: &[AgentRow<'_>], audit_note: Option<&str>) -> Markup {
    let admin = viewer.role >= ConsoleRole::Admin;
    layout(
        "Agents",
        Some(viewer),
        "Agents",
        html! {
            h1 { "Agents" }
            @if let Some(n) = audit_note { p.note { (n) } }
            @for r in rows {
                section.agent data-id=(r.id) {
                    h2 { (r.id) " " span.owner { "owned by " (r.owner) }
                        @if let Some(s) = r.suspension {
                            " " span.suspended { "suspended" }
                            span.why { " by " (s.by) " at " (time(s.at)) @if let Some(w) = &s.reason { ": " (w) } }
                        }
                    }
                    @if admin {
                        @if r.suspension.is_some() {
                            form.resume method="post" action={"/console/agents/" (r.id) "/resume"} {
                                input type="hidden" name="_csrf" value=(viewer.csrf);
                                button type="submit" { "Resume" }
                            }
                        } @else {
                            form.suspend method="post" action={"/console/agents/" (r.id) "/suspend"} {
                                input type="hidden" name="_csrf" value=(viewer.csrf);
                                label { "Reason " input type="text" name="reason" required; }
                                button type="submit" { "Suspend" }
                            }
                        }
                    }
                    @if !r.anomalies.is_empty() {
                        table.anomalies {
                            thead { tr { th { "Time" } th { "Anomaly" } th { "Action" } th { "Observed" } th { "Baseline" } } }
                            tbody {
                                @for a in &r.anomalies {
                                    tr {
                                        td { (time(a.at_ms)) } td { (a.detector) } td { (a.action.as_str()) }
                                        td { (a.observed) } td { (a.baseline) }
                                    }
                                }
                            }
                        }
                    }
                    table.calls {
                        thead { tr { th { "Time" } th { "Tool" } th { "Operation" } th { "Decision" } th { "Status" } th { "Error" } } }
                        tbody {
                            @if r.calls.is_empty() { tr { td colspan="6" { "No recent call in this replica's audit log." } } }
                            @for c in r.calls {
                                tr {
                                    td { (c.time) } td { (c.tool) } td { (c.operation) }
                                    td.decision { (c.decision) } td { (c.status) } td { (c.error) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn what_could_mislead_is_shown_escaped() {
        assert_eq!(visible("plain\ntext", true), "plain\ntext");
        assert_eq!(visible("a\nb", false), "a\\u{a}b");
        assert_eq!(visible("pay\u{202E}lortnoc", true), "pay\\u{202e}lortnoc");
        assert_eq!(visible("x\u{200B}y", true), "x\\u{200b}y");
    }

    #[test]
    fn json_with_a_key_twice_gets_no_pretty_view() {
        assert!(pretty_json(r#"{"to":"a","n":[1,{"x":2}]}"#).is_some());
        assert!(pretty_json(r#"{"to":"attacker","to":"payroll"}"#).is_none());
        assert!(pretty_json(r#"{"a":{"to":1,"to":2}}"#).is_none());
        assert!(pretty_json("not json").is_none());
    }

    #[test]
    fn a_form_line_break_cannot_fake_a_field() {
        let html = request_view(
            "POST /x\ncontent-type: application/x-www-form-urlencoded\n\nto=attacker&memo=x%0Ato+%3D+payroll",
        )
        .into_string();
        assert!(html.contains("memo = x\\u{a}to = payroll"), "{html}");
    }
}
