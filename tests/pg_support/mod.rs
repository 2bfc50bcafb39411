//! A real PostgreSQL (Debian's `postgresql`, which `scripts/test` installs) for the tests:
//! one cluster per test binary, started on first use by `tests/postgres/cluster.sh` on a
//! loopback port, stopped when the binary ends. Each test takes a database of its own.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    password: String,
    control: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    _child: Mutex<Child>,
}

static SHARED: OnceLock<Postgres> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The test binary's shared cluster.
pub fn postgres() -> &'static Postgres {
    SHARED.get_or_init(Postgres::start)
}

impl Postgres {
    /// A new cluster of its own (for a test that stops and restarts the database).
    pub fn start() -> Postgres {
        // The port is free when chosen, but the cluster binds it seconds later (initdb
        // first): another test may take it meanwhile, so a failed start tries another.
        let mut last = None;
        for _attempt in 0..3 {
            match Postgres::start_on_a_free_port() {
                Ok(p) => return p,
                Err(e) => {
                    eprintln!("PostgreSQL did not start, trying another port: {e}");
                    last = Some(e);
                }
            }
        }
        panic!(
            "PostgreSQL did not start (is Debian's postgresql installed? run scripts/test): {}",
            last.unwrap_or_default()
        );
    }

    fn start_on_a_free_port() -> Result<Postgres, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("keygate-pg-{}-{}", std::process::id(), port));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/postgres/cluster.sh");
        let mut child = Command::new("bash")
            .arg(script)
            .arg(&dir)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot run tests/postgres/cluster.sh");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let _ = child.wait();
            return Err(format!("see {}/server.log", dir.display()));
        }
        let password = std::fs::read_to_string(dir.join("password"))
            .unwrap()
            .trim()
            .to_string();
        Ok(Postgres {
            port,
            dir,
            password,
            control: Mutex::new((stdin, stdout)),
            _child: Mutex::new(child),
        })
    }

    /// The URL of database `db` as user keygate.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://keygate:{}@127.0.0.1:{}/{db}?sslmode=disable",
            self.password, self.port
        )
    }

    /// A new, empty database; its URL.
    pub async fn database(&self) -> String {
        let name = format!(
            "kg_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        self.url(&name)
    }

    fn command(&self, cmd: &str, expect: &str) {
        let mut c = self.control.lock().unwrap();
        writeln!(c.0, "{cmd}").unwrap();
        c.0.flush().unwrap();
        let mut line = String::new();
        c.1.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), expect, "PostgreSQL {cmd}");
    }

    /// Stops the server at once (as a crash would).
    pub fn stop(&self) {
        self.command("stop", "stopped");
    }

    /// Starts it again (same data).
    pub fn restart(&self) {
        self.command("start", "started");
    }
}
