//! The CLI's side of the admin API: `keygate approvals …`, `keygate inventory …`,
//! `keygate agents …`, `keygate reload`. The address and token come from the same
//! configuration file the gateway runs on (or `--admin-url` / `KEYGATE_ADMIN_URL` and
//! `KEYGATE_ADMIN_TOKEN`).

use crate::http_client::{build_client, HttpClient};
use http::Method;
use http_body_util::BodyExt;
use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

pub struct AdminClient {
    base: String,
    token: String,
    client: HttpClient,
    /// How long a call may take.
    timeout: Duration,
}

impl AdminClient {
    pub fn new(config: &Path, url: Option<String>) -> Result<AdminClient, String> {
        let env_url = std::env::var("KEYGATE_ADMIN_URL").ok();
        let env_token = std::env::var("KEYGATE_ADMIN_TOKEN").ok();
        let (base, token) = match (url.or(env_url), env_token) {
            (Some(u), Some(t)) => (u, t),
            (u, t) => {
                let s = crate::config::load(config).map_err(|e| e.to_string())?;
                let token = match (t, &s.admin.token_env) {
                    (Some(t), _) => t,
                    (None, Some(var)) => std::env::var(var).map_err(|_| format!("environment variable {var} (admin token) is not set"))?,
                    (None, None) => std::fs::read_to_string(&s.admin.token_file)
                        .map_err(|e| format!("cannot read the admin token {}: {e} (is keygate running with this config?)", s.admin.token_file.display()))?
                        .trim()
                        .to_string(),
                };
                let scheme = if s.admin.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                (
                    u.unwrap_or_else(|| format!("{scheme}://{}", s.admin.listen)),
                    token,
                )
            }
        };
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            // The admin listener's CA when it is not a public one (KEYGATE_ADMIN_CA_FILE).
            client: build_client(
                std::env::var_os("KEYGATE_ADMIN_CA_FILE")
                    .map(std::path::PathBuf::from)
                    .as_deref(),
                Duration::from_secs(5),
            )?,
            timeout: Duration::from_secs(30),
        })
    }

    /// The same client, its calls allowed `timeout` (a reconcile lists a whole account).
    pub fn with_timeout(mut self, timeout: Duration) -> AdminClient {
        self.timeout = timeout;
        self
    }

    /// Calls the admin API; an error answer becomes `Err("<code>: <message>")`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let uri = format!("{}{path}", self.base);
        let req = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-keygate-client", "cli")
            .body(crate::error::full_body(
                body.map(|b| b.to_string()).unwrap_or_default(),
            ))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| format!("{uri}: timed out"))?
            .map_err(|e| format!("cannot reach the admin API at {}: {e}", self.base))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            Ok(v)
        } else {
            // Printed on the operator's terminal; a message may quote what an agent sent.
            Err(format!(
                "{}: {}",
                terminal_text(v["error"].as_str().unwrap_or(status.as_str())),
                terminal_text(v["message"].as_str().unwrap_or(""))
            ))
        }
    }
}

/// Milliseconds since the epoch as RFC 3339 (seconds), or "-".
pub fn time(v: &serde_json::Value) -> String {
    match v.as_i64() {
        Some(ms) if ms >= 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms as u64))
                .to_string()
        }
        _ => "-".into(),
    }
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A plain-text table: columns aligned, no borders, every header and cell made safe for a
/// terminal ([`terminal_text`]).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_header(headers.iter().map(|h| terminal_text(h).into_owned()));
    for r in rows {
        t.add_row(r.iter().map(|c| terminal_text(c).into_owned()));
    }
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Rows of approvals for a table.
pub fn approval_rows(list: &[serde_json::Value]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let headers = vec![
        "ID",
        "STATUS",
        "AGENT",
        "AGENT OWNER",
        "TOOL",
        "OPERATION",
        "KIND",
        "CREATED",
        "APPROVER",
    ];
    let rows = list
        .iter()
        .map(|a| {
            vec![
                cell(&a["id"]),
                cell(&a["status"]),
                cell(&a["agent_id"]),
                cell(&a["agent_owner"]),
                cell(&a["tool"]),
                cell(&a["operation"]),
                cell(&a["identity_kind"]),
                time(&a["created_at"]),
                cell(&a["approver"]),
            ]
        })
        .collect();
    (headers, rows)
}

/// The inventory columns, in order: (header, field).
pub const INVENTORY_COLUMNS: [(&str, &str); 17] = [
    ("ID", "id"),
    ("KIND", "kind"),
    ("TOOL", "tool"),
    ("IDENTIFIER", "identifier"),
    ("CREATED BY AGENT", "agent_id"),
    ("APPROVER", "approver"),
    ("OWNER", "owner"),
    ("TICKET", "ticket"),
    ("CREATED", "created_at"),
    ("REVIEW BY", "review_by"),
    ("APPROVAL", "approval_id"),
    ("CAPTURED", "captured"),
    ("REVOKED", "revoked_at"),
    ("NOTIFIED", "notified_at"),
    ("DEACTIVATED", "deactivated_at"),
    ("RETIRE ATTEMPTS", "retire_attempts"),
    ("RETIRE ERROR", "retire_error"),
];

pub fn inventory_row(e: &serde_json::Value) -> Vec<String> {
    INVENTORY_COLUMNS
        .iter()
        .map(|(_, f)| {
            if f.ends_with("_at") || *f == "review_by" {
                time(&e[*f])
            } else {
                cell(&e[*f])
            }
        })
        .collect()
}

/// Rows of a retirement pass's report for a table: each step due, done or not.
pub fn retire_rows(report: &serde_json::Value) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let headers = vec![
        "ACTION",
        "DONE",
        "INVENTORY ID",
        "IDENTIFIER",
        "OWNER",
        "REVIEW BY",
        "ATTEMPTS",
        "ERROR",
    ];
    let rows = report["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                cell(&e["action"]),
                cell(&e["done"]),
                cell(&e["id"]),
                cell(&e["identifier"]),
                cell(&e["owner"]),
                time(&e["review_by"]),
                cell(&e["attempts"]),
                cell(&e["error"]),
            ]
        })
        .collect();
    (headers, rows)
}

/// Rows of a retirement pass's overdue records it cannot retire, and why.
pub fn not_retired_rows(report: &serde_json::Value) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let headers = vec!["NOT RETIRED", "INVENTORY ID", "IDENTIFIER", "OWNER", "WHY"];
    let rows = report["not_retired"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                cell(&e["kind"]),
                cell(&e["id"]),
                cell(&e["identifier"]),
                cell(&e["owner"]),
                cell(&e["reason"]),
            ]
        })
        .collect();
    (headers, rows)
}

/// Rows of a reconcile's report for a table: present, then gone, then shadow. `USER/REPO`
/// is an access key's IAM user, a deploy key's repository.
pub fn reconcile_rows(report: &serde_json::Value) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let headers = vec![
        "STATE",
        "KIND",
        "IDENTIFIER",
        "USER/REPO",
        "STATUS",
        "CREATED",
        "OWNER",
        "INVENTORY ID",
    ];
    let mut rows = Vec::new();
    for state in ["present", "gone", "shadow"] {
        for e in report[state].as_array().into_iter().flatten() {
            let shown = match (state, e["retired"].as_bool()) {
                ("gone", Some(true)) => "gone (retired)",
                _ => state,
            };
            rows.push(vec![
                shown.to_string(),
                cell(&e["kind"]),
                cell(&e["identifier"]),
                cell(if e["user"].is_null() {
                    &e["repository"]
                } else {
                    &e["user"]
                }),
                cell(&e["status"]),
                cell(&e["created"]),
                cell(&e["owner"]),
                cell(&e["id"]),
            ]);
        }
    }
    (headers, rows)
}

/// CSV (RFC 4180 quoting, by the csv crate). Values stay data, line breaks included, with
/// two exceptions for the places a CSV export ends up: characters that would act on a
/// terminal are removed as for a table (a line break is kept: it is quoted), and a cell a
/// spreadsheet would read as a formula (one starting with `=`, `+`, `-` or `@`) gets a
/// leading `'`, so opening the export never runs what an agent put in a field.
pub fn csv(headers: &[&str], rows: &[Vec<String>]) -> Result<String, String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let err = |e: ::csv::Error| format!("cannot write CSV: {e}");
    w.write_record(headers.iter().map(|h| csv_cell(h)))
        .map_err(err)?;
    for r in rows {
        w.write_record(r.iter().map(|c| csv_cell(c))).map_err(err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| format!("cannot write CSV: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("cannot write CSV: {e}"))
}

fn csv_cell(s: &str) -> String {
    let mut out: String = s
        .split('\n')
        .map(|line| terminal_text(line))
        .collect::<Vec<_>>()
        .join("\n");
    if out.starts_with(['=', '+', '-', '@']) {
        out.insert(0, '\'');
    }
    out
}

/// Whether `c` would act on a terminal, or on how it lays text out, rather than be shown:
/// C0 and C1 controls and DEL (escape sequences, carriage return, bell: an ESC or a C1 CSI
/// can clear the screen or rewrite a line), and the invisible formatting characters that
/// reorder or hide text (bidi embeddings, overrides and isolates such as U+202E, zero-width
/// characters, line and paragraph separators, byte-order mark, tag characters).
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// Text from the server (which agents partly control: request bodies, names) made safe to
/// print: every character that [acts on a terminal](acts_on_terminal) is removed, except
/// that a tab or a line break becomes a space (so a cell stays on its line and words stay
/// apart). What remains is printable, so an approver sees what was sent and nothing can
/// rewrite the screen around it.
pub fn terminal_text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(acts_on_terminal) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .filter_map(|c| match c {
                '\t' | '\n' => Some(' '),
                c if acts_on_terminal(c) => None,
                c => Some(c),
            })
            .collect(),
    )
}

/// A JSON value pretty-printed for a terminal: every character that
/// [acts on a terminal](acts_on_terminal) inside a string is written as a `\uXXXX` escape.
/// The output parses back to exactly the same value (the data is kept; unlike a table, JSON
/// output is for machines too) and shows no control to the terminal.
pub fn terminal_json(v: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    if !text.chars().any(|c| c != '\n' && acts_on_terminal(c)) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        // serde_json escapes C0 controls in strings, so a raw line break is the pretty
        // printer's; anything else escaped here can only be inside a string, where a
        // `\uXXXX` escape means the same character.
        if c != '\n' && acts_on_terminal(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn terminal_text_removes_what_acts_on_a_terminal() {
        for (input, want) in [
            ("plain text, ünïcode ✓", "plain text, ünïcode ✓"),
            ("\x1b[2Jcleared", "[2Jcleared"),
            ("\x1b]0;title\x07x", "]0;titlex"),
            ("over\rwrite", "overwrite"),
            ("bell\x07", "bell"),
            ("nul\0del\x7f", "nuldel"),
            ("c1 csi \u{9b}2J", "c1 csi 2J"),
            ("gpj.\u{202e}exe", "gpj.exe"),
            ("\u{2066}iso\u{2069}\u{200f}\u{61c}", "iso"),
            ("zero\u{200b}width\u{feff}", "zerowidth"),
            ("line\u{2028}sep", "linesep"),
            ("tag\u{e0041}", "tag"),
            ("two\nlines\tand a tab", "two lines and a tab"),
        ] {
            assert_eq!(terminal_text(input), want, "{input:?}");
        }
        assert!(matches!(terminal_text("ok"), Cow::Borrowed(_)));
    }

    #[test]
    fn terminal_json_escapes_and_keeps_the_data() {
        let v = serde_json::json!({
            "body": "\x1b[2J \u{202e}gnp \u{9b}31m \x7f \u{e0041} ok ✓",
            "n": 1,
        });
        let text = terminal_json(&v);
        assert!(
            !text.chars().any(|c| c != '\n' && acts_on_terminal(c)),
            "{text:?}"
        );
        assert!(
            text.contains(r"\u202e") && text.contains(r"\udb40\udc41"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
        let plain = serde_json::json!({"a": "b ✓"});
        assert_eq!(
            terminal_json(&plain),
            serde_json::to_string_pretty(&plain).unwrap()
        );
    }

    #[test]
    fn table_aligns_columns_and_cleans_cells() {
        let rows = vec![
            vec!["a".to_string(), "\x1b[31mred\u{202e}".to_string()],
            vec!["longer".to_string(), "x\ny".to_string()],
        ];
        assert_eq!(
            table(&["ID", "NAME"], &rows),
            "ID      NAME\na       [31mred\nlonger  x y\n"
        );
    }

    #[test]
    fn csv_quotes_values_and_guards_formulas() {
        let rows = vec![
            vec!["=1+1".to_string(), "a, \"b\"".to_string()],
            vec!["+x".to_string(), "-1".to_string()],
            vec!["@SUM(A1)".to_string(), "two\nlines\x1b[2J".to_string()],
            vec!["plain".to_string(), "a=b".to_string()],
        ];
        assert_eq!(
            csv(&["A", "B"], &rows).unwrap(),
            "A,B\n'=1+1,\"a, \"\"b\"\"\"\n'+x,'-1\n'@SUM(A1),\"two\nlines[2J\"\nplain,a=b\n"
        );
    }
}
