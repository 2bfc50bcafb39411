//! The `keygate` command.

use clap::{Parser, Subcommand};
use keygate::admin_client::{self, AdminClient};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "The agent gateway: identify, strip, inject, gate, audit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve agents until SIGTERM or SIGINT.
    Run {
        #[arg(long, default_value = "config/keygate.toml")]
        config: PathBuf,
    },
    /// Apply the store's schema migrations and exit (`run` applies them too); refuses a
    /// schema newer than this keygate knows.
    Migrate {
        #[arg(long, default_value = "config/keygate.toml")]
        config: PathBuf,
    },
    /// Validate the configuration and report every problem.
    Check {
        #[arg(long, default_value = "config/keygate.toml")]
        config: PathBuf,
    },
    /// Print an agent token signed by the configuration's dev issuer (development only).
    DevToken {
        #[arg(long, default_value = "config/keygate.toml")]
        config: PathBuf,
        /// The agent id (`sub`).
        #[arg(long)]
        agent: String,
        /// An `owner` claim, for issuers that take agents from claims.
        #[arg(long)]
        owner: Option<String>,
        /// Lifetime, such as 15m or 1h.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Run a small upstream that echoes what it receives (to see what keygate forwards).
    Echo {
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: String,
    },
    /// Print the forward proxy's CA certificate (PEM), for clients to trust; generates
    /// keygate's own CA first if it has none yet.
    Ca {
        #[arg(long, default_value = "config/keygate.toml")]
        config: PathBuf,
    },
    /// Print the complete Cedar schema policies are validated against.
    Schema {
        #[arg(long, default_value = "config/keygate.toml")]
        config: PathBuf,
    },
    /// Pending and decided approvals (through the admin API).
    Approvals {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Identities created through keygate: who created what, approved by whom, owned by
    /// whom, due for review when.
    Inventory {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: InventoryCommand,
    },
    /// Suspend or resume an agent (effective on its next request); issue, list and
    /// revoke the AWS-style keys an agent's AWS SDK signs with.
    Agents {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Tasks: an agent's just-in-time access (open one with a purpose, a ticket, a time
    /// limit and optionally the tools and operations it allows; list them; end one).
    Tasks {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// Captured secrets: `rekey` seals every one again under the current capture key
    /// (after a key rotation; then the previous keys can be dropped from the config).
    Capture {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: CaptureCommand,
    },
    /// Reload the configuration and policies of the running gateway.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The audit log's hash chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check that audit log files are intact: nothing edited, deleted, inserted, reordered.
    ///
    /// Exits 0 with a summary when the chain is intact, 1 with the first problem (its kind,
    /// file, line and seq).
    Verify {
        /// Rotated files oldest first, then the current file: `audit.jsonl.* audit.jsonl`.
        /// Files of several replicas are told apart by the replica their records name, and
        /// each replica's chain is reported.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct AdminArgs {
    /// The configuration the gateway runs on (for the admin address and token).
    #[arg(long, global = true, default_value = "config/keygate.toml")]
    config: PathBuf,
    /// The admin API's URL (default: from the configuration, or KEYGATE_ADMIN_URL).
    #[arg(long, global = true)]
    admin_url: Option<String>,
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// List approvals, newest first.
    List {
        /// pending, approved, denied, used or expired.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one approval.
    Show { id: String },
    /// Approve a pending request, once.
    Approve {
        id: String,
        /// Who approves.
        #[arg(long)]
        approver: String,
        /// The human who will own the identity created.
        #[arg(long)]
        owner: String,
        /// Change or incident ticket.
        #[arg(long)]
        ticket: Option<String>,
        #[arg(long)]
        note: Option<String>,
        /// How long the approval may be used, such as 1h.
        #[arg(long)]
        expires_in: Option<String>,
        /// When the created identity is due for review, such as 90d.
        #[arg(long)]
        review_in: Option<String>,
    },
    /// Deny a pending request.
    Deny {
        id: String,
        #[arg(long)]
        approver: String,
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Subcommand)]
enum InventoryCommand {
    /// List every identity created through keygate.
    List {
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        #[arg(long)]
        csv: bool,
    },
    /// Revoke an inventory record in keygate: its captured secrets are deleted and its
    /// handles stop working at once (the identity itself is not deleted at the tool).
    Revoke {
        id: String,
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let another agent use the handles of an inventory record's captured secrets.
    Share {
        id: String,
        #[arg(long)]
        agent: String,
        #[arg(long)]
        by: Option<String>,
    },
    /// Show the captured secrets of an inventory record (audited, with who and why).
    Reveal {
        id: String,
        #[arg(long)]
        approver: String,
        #[arg(long)]
        reason: String,
    },
    /// Compare the inventory of an AWS tool with the IAM users and access keys that
    /// really exist (of a GitHub App tool: with the deploy keys of its
    /// reconcile_repositories): present, gone (retired in keygate: revoked by
    /// "reconcile"), and shadow (created around keygate).
    Reconcile {
        tool: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        by: Option<String>,
    },
    /// Run a retirement pass of an AWS tool's access keys (a GitHub App tool's deploy keys)
    /// now: owners notified ahead of the review date, overdue keys deactivated and
    /// deleted after the grace (deploy keys: deleted at once).
    Retire {
        tool: String,
        /// Report what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        by: Option<String>,
    },
    /// Move an inventory record's review date to a later day.
    Renew {
        id: String,
        /// The new review date, YYYY-MM-DD.
        #[arg(long)]
        until: String,
        /// Who decided to keep it.
        #[arg(long)]
        approver: String,
    },
    /// Record a shadow identity (one a reconcile found) in the inventory.
    Adopt {
        tool: String,
        /// The access key id, the user name, or the deploy key id.
        identifier: String,
        /// access_key or user (aws), deploy_key (github_app).
        #[arg(long)]
        kind: String,
        /// The human who owns it.
        #[arg(long)]
        owner: String,
        /// When it is due for review, such as 90d.
        #[arg(long)]
        review_in: Option<String>,
        /// Who decided to adopt it.
        #[arg(long)]
        approver: String,
        #[arg(long)]
        ticket: Option<String>,
    },
}

#[derive(Subcommand)]
enum CaptureCommand {
    /// Seal every captured secret again under the current key.
    Rekey {
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Subcommand)]
enum TasksCommand {
    /// Open a task for an agent; prints its id (the agent's calls name it in the
    /// Keygate-Task header).
    Open {
        /// The agent.
        #[arg(long)]
        agent: String,
        #[arg(long)]
        purpose: String,
        #[arg(long)]
        ticket: Option<String>,
        /// Its time limit (`30m`, `2h`); default `tasks.default_ttl`.
        #[arg(long)]
        ttl: Option<String>,
        /// A tool its calls may reach (repeat; default: any the policies allow).
        #[arg(long = "tool")]
        tools: Vec<String>,
        /// An operation (name or tag) its calls may do (repeat; default: any).
        #[arg(long = "operation")]
        operations: Vec<String>,
        #[arg(long, default_value = "admin")]
        by: String,
    },
    /// List open tasks and those ended or expired within the last day.
    List {
        #[arg(long)]
        json: bool,
    },
    /// End a task: its credentials are dropped and revoked, its calls refused.
    End {
        id: String,
        #[arg(long, default_value = "admin")]
        by: String,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    Suspend {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value = "admin")]
        by: String,
    },
    Resume {
        id: String,
    },
    /// List suspended agents.
    Suspended,
    /// An agent: its suspension, what it normally does (its baseline: tools with their
    /// call rates, operations, forward-proxy hosts) and its recent anomalies.
    Show {
        id: String,
    },
    /// Issue an AWS-style key pair to an agent (printed once, as the environment an AWS
    /// SDK reads); with --list, its keys; with --revoke ID, revoke one.
    AwsKey {
        id: String,
        #[arg(long, conflicts_with = "revoke")]
        list: bool,
        /// The key's id, or the fingerprint --list shows.
        #[arg(long, value_name = "KEY_ID_OR_FINGERPRINT")]
        revoke: Option<String>,
    },
}

/// mimalloc (without transparent huge pages, which would inflate RSS): less time in
/// malloc and free than glibc's allocator on the request path (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match keygate::config::load(&config)
            .and_then(|s| keygate::policy::load(&s).map(|_| s))
        {
            Ok(s) => {
                println!(
                    "{}: ok ({} tools, {} agents, {} issuers)",
                    config.display(),
                    s.tools.by_name.len(),
                    s.agents.by_id.len(),
                    s.identity.issuers.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} problem(s) found", errors.0.len());
                ExitCode::from(2)
            }
        },
        Command::DevToken {
            config,
            agent,
            owner,
            ttl,
        } => {
            let result = keygate::config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|s| keygate::dev::dev_token(&s, &agent, owner.as_deref(), ttl));
            match result {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keygate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => runtime(|| run(config)),
        Command::Migrate { config } => runtime(|| async move {
            let s = keygate::config::load(&config).map_err(|e| e.to_string())?;
            keygate::store::open(&s.store.backend, &s.server.replica_id)
                .await
                .map_err(|e| format!("{}: {e}", s.store.backend))?;
            println!("{}: schema up to date", s.store.backend);
            Ok(())
        }),
        Command::Echo { listen } => runtime(|| async move {
            keygate::telemetry::init_logging();
            keygate::echo::run(&listen).await
        }),
        Command::Ca { config } => {
            let ca = keygate::config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|s| match &s.proxy {
                    Some(p) => keygate::proxy::ca::Ca::load_or_generate(p),
                    None => Err(format!(
                        "{}: no [proxy] section: the forward proxy (and its CA) is off",
                        config.display()
                    )),
                });
            match ca {
                Ok(ca) => {
                    print!("{}", ca.cert_pem());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Schema { config } => {
            match keygate::config::load(&config).and_then(|s| keygate::policy::load(&s)) {
                Ok(p) => {
                    print!("{}", p.schema_text);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Approvals { admin, command } => client(admin, |c| approvals(c, command)),
        Command::Inventory { admin, command } => client(admin, |c| inventory(c, command)),
        Command::Agents { admin, command } => client(admin, |c| agents(c, command)),
        Command::Tasks { admin, command } => client(admin, |c| tasks(c, command)),
        Command::Capture {
            admin,
            command: CaptureCommand::Rekey { by },
        } => client(admin, |c| async move {
            let v = c
                .call(
                    http::Method::POST,
                    "/capture/rekey",
                    Some(serde_json::json!({ "by": by })),
                )
                .await?;
            println!(
                "{} captured secrets sealed again under key {}",
                v["resealed"], v["key_id"]
            );
            Ok(())
        }),
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => {
            let chains = keygate::telemetry::audit_chain::verify_replicas(&files);
            let several = chains.len() > 1;
            let mut code = ExitCode::SUCCESS;
            for c in chains {
                let name = match (&c.replica, several) {
                    (_, false) => String::new(),
                    (Some(r), true) => format!("replica {r}: "),
                    (None, true) => "files naming no replica: ".to_string(),
                };
                match c.result {
                    Ok(summary) => println!("{name}{summary}"),
                    Err(finding) => {
                        eprintln!("keygate: {name}audit chain broken: {finding}");
                        code = ExitCode::FAILURE;
                    }
                }
            }
            code
        }
        Command::Reload { admin } => client(admin, |c| async move {
            c.call(http::Method::POST, "/reload", None).await?;
            println!("reloaded");
            Ok(())
        }),
    }
}

fn client<F, Fut>(admin: AdminArgs, f: F) -> ExitCode
where
    F: FnOnce(AdminClient) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keygate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = AdminClient::new(&admin.config, admin.admin_url).map(f);
    let result = match result {
        Ok(fut) => rt.block_on(fut),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(v: &serde_json::Value) {
    println!("{}", admin_client::terminal_json(v));
}

async fn approvals(c: AdminClient, cmd: ApprovalsCommand) -> Result<(), String> {
    use http::Method;
    match cmd {
        ApprovalsCommand::List { status, json } => {
            let path = match status {
                Some(s) => format!("/approvals?status={s}"),
                None => "/approvals".into(),
            };
            let v = c.call(Method::GET, &path, None).await?;
            if json {
                print_json(&v["approvals"]);
            } else {
                let list = v["approvals"].as_array().cloned().unwrap_or_default();
                let (h, rows) = admin_client::approval_rows(&list);
                print!("{}", admin_client::table(&h, &rows));
            }
        }
        ApprovalsCommand::Show { id } => print_json(
            &c.call(Method::GET, &format!("/approvals/{id}"), None)
                .await?,
        ),
        ApprovalsCommand::Approve {
            id,
            approver,
            owner,
            ticket,
            note,
            expires_in,
            review_in,
        } => {
            let body = serde_json::json!({
                "approver": approver, "owner": owner, "ticket": ticket, "note": note,
                "expires_in": expires_in, "review_in": review_in,
            });
            let a = c
                .call(
                    Method::POST,
                    &format!("/approvals/{id}/approve"),
                    Some(body),
                )
                .await?;
            println!(
                "approved {id}: the agent's next identical request goes through once (until {})",
                admin_client::time(&a["approval_expires_at"])
            );
        }
        ApprovalsCommand::Deny { id, approver, note } => {
            let body = serde_json::json!({"approver": approver, "note": note});
            c.call(Method::POST, &format!("/approvals/{id}/deny"), Some(body))
                .await?;
            println!("denied {id}");
        }
    }
    Ok(())
}

async fn inventory(c: AdminClient, cmd: InventoryCommand) -> Result<(), String> {
    use http::Method;
    let (json, csv) = match cmd {
        InventoryCommand::List { json, csv } => (json, csv),
        InventoryCommand::Revoke { id, by, reason } => {
            let v = c
                .call(
                    Method::POST,
                    &format!("/inventory/{id}/revoke"),
                    Some(serde_json::json!({"by": by, "reason": reason})),
                )
                .await?;
            println!(
                "revoked {} ({} handles revoked)",
                admin_client::terminal_text(&id),
                v["handles_revoked"]
            );
            return Ok(());
        }
        InventoryCommand::Share { id, agent, by } => {
            c.call(
                Method::POST,
                &format!("/inventory/{id}/share"),
                Some(serde_json::json!({"agent": agent, "by": by})),
            )
            .await?;
            println!(
                "{} may now use the handles of {}",
                admin_client::terminal_text(&agent),
                admin_client::terminal_text(&id)
            );
            return Ok(());
        }
        InventoryCommand::Reveal {
            id,
            approver,
            reason,
        } => {
            let v = c
                .call(
                    Method::POST,
                    &format!("/inventory/{id}/reveal"),
                    Some(serde_json::json!({"approver": approver, "reason": reason})),
                )
                .await?;
            print_json(&v["secrets"]);
            return Ok(());
        }
        InventoryCommand::Reconcile { tool, json, by } => {
            let v = c
                .with_timeout(std::time::Duration::from_secs(600))
                .call(
                    Method::POST,
                    &format!("/inventory/reconcile/{tool}"),
                    Some(serde_json::json!({"by": by})),
                )
                .await?;
            if json {
                print_json(&v);
            } else {
                let (headers, rows) = admin_client::reconcile_rows(&v);
                print!("{}", admin_client::table(&headers, &rows));
            }
            return Ok(());
        }
        InventoryCommand::Retire {
            tool,
            dry_run,
            json,
            by,
        } => {
            let v = c
                .with_timeout(std::time::Duration::from_secs(600))
                .call(
                    Method::POST,
                    &format!("/inventory/retire/{tool}"),
                    Some(serde_json::json!({"by": by, "dry_run": dry_run})),
                )
                .await?;
            if json {
                print_json(&v);
            } else {
                let (headers, rows) = admin_client::retire_rows(&v);
                print!("{}", admin_client::table(&headers, &rows));
                let (headers, rows) = admin_client::not_retired_rows(&v);
                if !rows.is_empty() {
                    print!("{}", admin_client::table(&headers, &rows));
                }
                println!(
                    "{}{} failed",
                    if dry_run {
                        "dry run, nothing changed; "
                    } else {
                        ""
                    },
                    v["failed"]
                );
            }
            return Ok(());
        }
        InventoryCommand::Renew {
            id,
            until,
            approver,
        } => {
            let v = c
                .call(
                    Method::POST,
                    &format!("/inventory/{id}/renew"),
                    Some(serde_json::json!({"until": until, "approver": approver})),
                )
                .await?;
            println!(
                "{} is due for review on {}",
                admin_client::terminal_text(&id),
                admin_client::terminal_text(&admin_client::time(&v["review_by"]))
            );
            return Ok(());
        }
        InventoryCommand::Adopt {
            tool,
            identifier,
            kind,
            owner,
            review_in,
            approver,
            ticket,
        } => {
            let v = c
                .call(
                    Method::POST,
                    "/inventory/adopt",
                    Some(serde_json::json!({
                        "tool": tool, "identifier": identifier, "kind": kind, "owner": owner,
                        "review_in": review_in, "approver": approver, "ticket": ticket,
                    })),
                )
                .await?;
            println!(
                "adopted {} {} as {}",
                admin_client::terminal_text(&kind),
                admin_client::terminal_text(&identifier),
                admin_client::terminal_text(v["id"].as_str().unwrap_or("-"))
            );
            return Ok(());
        }
    };
    let v = c.call(http::Method::GET, "/inventory", None).await?;
    let list = v["identities"].as_array().cloned().unwrap_or_default();
    let headers: Vec<&str> = admin_client::INVENTORY_COLUMNS
        .iter()
        .map(|(h, _)| *h)
        .collect();
    let rows: Vec<Vec<String>> = list.iter().map(admin_client::inventory_row).collect();
    if json {
        print_json(&v["identities"]);
    } else if csv {
        print!("{}", admin_client::csv(&headers, &rows)?);
    } else {
        print!("{}", admin_client::table(&headers, &rows));
    }
    Ok(())
}

async fn tasks(c: AdminClient, cmd: TasksCommand) -> Result<(), String> {
    use http::Method;
    let text =
        |v: &serde_json::Value| admin_client::terminal_text(v.as_str().unwrap_or("-")).into_owned();
    match cmd {
        TasksCommand::Open {
            agent,
            purpose,
            ticket,
            ttl,
            tools,
            operations,
            by,
        } => {
            let v = c
                .call(
                    Method::POST,
                    "/tasks",
                    Some(serde_json::json!({
                        "agent": agent, "purpose": purpose, "ticket": ticket, "ttl": ttl,
                        "tools": tools, "operations": operations, "by": by,
                    })),
                )
                .await?;
            println!("{}", text(&v["id"]));
            eprintln!(
                "task opened for {} until {}",
                text(&v["agent_id"]),
                admin_client::time(&v["expires_at"])
            );
        }
        TasksCommand::List { json } => {
            let v = c.call(Method::GET, "/tasks", None).await?;
            if json {
                print_json(&v["tasks"]);
                return Ok(());
            }
            let list = v["tasks"].as_array().cloned().unwrap_or_default();
            let join = |v: &serde_json::Value| {
                let items: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| admin_client::terminal_text(s.as_str().unwrap_or("")).into_owned())
                    .collect();
                if items.is_empty() {
                    "any".to_string()
                } else {
                    items.join(",")
                }
            };
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    vec![
                        text(&t["id"]),
                        text(&t["agent_id"]),
                        text(&t["state"]),
                        text(&t["purpose"]),
                        text(&t["ticket"]),
                        join(&t["tools"]),
                        join(&t["operations"]),
                        admin_client::time(&t["expires_at"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                admin_client::table(
                    &[
                        "ID",
                        "AGENT",
                        "STATE",
                        "PURPOSE",
                        "TICKET",
                        "TOOLS",
                        "OPERATIONS",
                        "UNTIL"
                    ],
                    &rows
                )
            );
        }
        TasksCommand::End { id, by } => {
            let v = c
                .call(
                    Method::POST,
                    &format!("/tasks/{id}/end"),
                    Some(serde_json::json!({ "by": by })),
                )
                .await?;
            if v["already_ended"].as_bool() == Some(true) {
                println!("{} had already ended", text(&v["id"]));
            } else {
                println!(
                    "ended {}: its credentials are revoked and its calls refused",
                    text(&v["id"])
                );
            }
        }
    }
    Ok(())
}

async fn agents(c: AdminClient, cmd: AgentsCommand) -> Result<(), String> {
    use http::Method;
    match cmd {
        AgentsCommand::Suspend { id, reason, by } => {
            c.call(
                Method::POST,
                &format!("/agents/{id}/suspend"),
                Some(serde_json::json!({"by": by, "reason": reason})),
            )
            .await?;
            println!("suspended {id}: its next request is refused");
        }
        AgentsCommand::Resume { id } => {
            c.call(Method::POST, &format!("/agents/{id}/resume"), None)
                .await?;
            println!("resumed {id}");
        }
        AgentsCommand::AwsKey {
            id,
            list: false,
            revoke: None,
        } => {
            let v = c
                .call(Method::POST, &format!("/agents/{id}/aws-keys"), None)
                .await?;
            let field =
                |k: &str| admin_client::terminal_text(v[k].as_str().unwrap_or("")).into_owned();
            println!(
                "# AWS key for agent {}: shown once, keep it where the agent runs",
                admin_client::terminal_text(&id)
            );
            println!("AWS_ACCESS_KEY_ID={}", field("access_key_id"));
            println!("AWS_SECRET_ACCESS_KEY={}", field("secret_access_key"));
        }
        AgentsCommand::AwsKey {
            id, revoke: None, ..
        } => {
            let v = c
                .call(Method::GET, &format!("/agents/{id}/aws-keys"), None)
                .await?;
            let rows: Vec<Vec<String>> = v["keys"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|k| {
                    vec![
                        k["fingerprint"].as_str().unwrap_or("").to_string(),
                        k["created_by"].as_str().unwrap_or("").to_string(),
                        admin_client::time(&k["created_at"]),
                        if k["revoked_at"].is_null() {
                            "active".to_string()
                        } else {
                            format!("revoked {}", admin_client::time(&k["revoked_at"]))
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                admin_client::table(
                    &[
                        "FINGERPRINT (SHA-256 OF THE KEY ID)",
                        "BY",
                        "CREATED",
                        "STATUS"
                    ],
                    &rows
                )
            );
        }
        AgentsCommand::AwsKey {
            revoke: Some(key), ..
        } => {
            c.call(Method::DELETE, &format!("/aws-keys/{key}"), None)
                .await?;
            println!("revoked {}", admin_client::terminal_text(&key));
        }
        AgentsCommand::Show { id } => {
            let v = c.call(Method::GET, &format!("/agents/{id}"), None).await?;
            print!("{}", show_agent(&v));
        }
        AgentsCommand::Suspended => {
            let v = c.call(Method::GET, "/agents/suspended", None).await?;
            let rows: Vec<Vec<String>> = v["suspended"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    vec![
                        s["agent_id"].as_str().unwrap_or("").to_string(),
                        s["by"].as_str().unwrap_or("").to_string(),
                        s["reason"].as_str().unwrap_or("-").to_string(),
                        admin_client::time(&s["at"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                admin_client::table(&["AGENT", "BY", "REASON", "SINCE"], &rows)
            );
        }
    }
    Ok(())
}

/// `keygate agents show`: the agent, its suspension, its baseline, its recent anomalies.
fn show_agent(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let text =
        |v: &serde_json::Value| admin_client::terminal_text(v.as_str().unwrap_or("-")).into_owned();
    let mut out = String::new();
    let _ = writeln!(out, "agent      {}", text(&v["agent_id"]));
    let _ = writeln!(out, "owner      {}", text(&v["owner"]));
    let s = &v["suspension"];
    if s.is_null() {
        let _ = writeln!(out, "suspended  no");
    } else {
        let _ = writeln!(
            out,
            "suspended  since {} by {}: {}",
            admin_client::time(&s["at"]),
            text(&s["by"]),
            text(&s["reason"])
        );
    }
    let b = &v["baseline"];
    if b.is_null() {
        let _ = writeln!(out, "baseline   none yet (no call seen by this replica)");
        return out;
    }
    let _ = writeln!(
        out,
        "first call {}",
        admin_client::time(&b["first_seen_ms"])
    );
    if !b["require_approval_until_ms"].is_null() {
        let _ = writeln!(
            out,
            "writes     need approval until {} (anomaly: {})",
            admin_client::time(&b["require_approval_until_ms"]),
            text(&b["require_approval_by"])
        );
    }
    let list = |k: &str| -> String {
        let items: Vec<String> = b[k]
            .as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        if items.is_empty() {
            "-".into()
        } else {
            items.join(", ")
        }
    };
    let _ = writeln!(out, "operations {}", list("operations"));
    let _ = writeln!(out, "hosts      {}", list("hosts"));
    let tools: Vec<Vec<String>> = b["tools"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            vec![
                text(&t["tool"]),
                t["calls_per_minute_mean"].to_string(),
                t["calls_per_minute_deviation"].to_string(),
                t["calls_this_minute"].to_string(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&admin_client::table(
        &["TOOL", "CALLS/MIN (MEAN)", "DEVIATION", "THIS MINUTE"],
        &tools,
    ));
    let recent: Vec<Vec<String>> = b["recent_anomalies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            vec![
                admin_client::time(&a["at_ms"]),
                text(&a["detector"]),
                text(&a["action"]),
                text(&a["observed"]),
                text(&a["baseline"]),
            ]
        })
        .collect();
    out.push('\n');
    if recent.is_empty() {
        out.push_str("no recent anomalies\n");
    } else {
        out.push_str(&admin_client::table(
            &["WHEN", "DETECTOR", "ACTION", "OBSERVED", "BASELINE"],
            &recent,
        ));
    }
    out
}

fn runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let threads = std::env::var("KEYGATE_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    // One worker: a current-thread runtime, so every task runs on the thread that accepts
    // (no work-stealing or cross-thread wake-ups): the cheapest form for one core.
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all();
    if let Some(n) = threads.filter(|n| *n > 1) {
        builder.worker_threads(n);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keygate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: PathBuf) -> Result<(), String> {
    let snapshot = keygate::config::load(&config).map_err(|e| e.to_string())?;
    let exporting = keygate::telemetry::init(Some(&snapshot.telemetry))?;
    let rt = keygate::gateway::Runtime::start(snapshot).await?;
    let running = keygate::server::serve(rt.clone()).await?;
    keygate::gateway::spawn_file_watch(&rt, Duration::from_secs(2));
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let rt = rt.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading");
                    if let Err(e) = rt.reload().await {
                        tracing::error!("reload refused, the running configuration stays:\n{e}");
                    }
                }
            });
        }
    }
    let shutdown = running.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down");
        let _ = shutdown.send(true);
    });
    running.wait().await;
    if exporting {
        // Spans still queued go out before exit (bounded wait).
        keygate::telemetry::otel::flush().await;
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
