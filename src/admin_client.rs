//! The CLI's side of the admin API: `keygate approvals …`, `keygate inventory list`,
//! `keygate agents …`, `keygate reload`. The address and token come from the same
//! configuration file the gateway runs on (or `--admin-url` / `KEYGATE_ADMIN_URL` and
//! `KEYGATE_ADMIN_TOKEN`).

use crate::http_client::{build_client, HttpClient};
use http::Method;
use http_body_util::BodyExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

pub struct AdminClient {
    base: String,
    token: String,
    client: HttpClient,
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
                (
                    u.unwrap_or_else(|| format!("http://{}", s.admin.listen)),
                    token,
                )
            }
        };
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            client: build_client(None, Duration::from_secs(5))?,
        })
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
            .body(crate::error::full_body(
                body.map(|b| b.to_string()).unwrap_or_default(),
            ))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
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
            Err(format!(
                "{}: {}",
                v["error"].as_str().unwrap_or(status.as_str()),
                v["message"].as_str().unwrap_or("")
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

/// A plain-text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
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
pub const INVENTORY_COLUMNS: [(&str, &str); 11] = [
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

/// CSV with RFC 4180 quoting.
pub fn csv(headers: &[&str], rows: &[Vec<String>]) -> String {
    let q = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = headers.iter().map(|h| q(h)).collect::<Vec<_>>().join(",");
    out.push('\n');
    for r in rows {
        out.push_str(&r.iter().map(|c| q(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}
