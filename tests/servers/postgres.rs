//! A throwaway PostgreSQL: `initdb` into a temp folder, `postgres` in the
//! foreground, a Unix socket in that folder and no TCP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use snapfs::host::config::{DatabaseSelection, PostgresqlConfig};

use super::{as_user, on_path, output, server_dir, service_user, unavailable, Server};

/// The superuser `initdb` creates; local connections are trusted.
pub const SUPERUSER: &str = "postgres";

/// Port numbers only name the socket (`.s.PGSQL.<port>`) in the server's
/// own folder, so they cannot clash and need no probing; they differ from
/// 5432 so that code ignoring the configured port fails.
static NEXT_PORT: AtomicU16 = AtomicU16::new(15432);

pub struct Postgres {
    /// The socket's folder: `host` in the configuration.
    pub socket_dir: PathBuf,
    pub port: u16,
    _server: Server,
}

/// The test binary's shared server, started at the first call; `None`
/// (after a message) when the packages are missing.
pub fn postgres(test: &str) -> Option<&'static Postgres> {
    static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
    match SHARED.get_or_init(Postgres::start) {
        Ok(server) => Some(server),
        Err(why) => unavailable(test, why),
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with a server in it.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("postgres").exists() && bin.join("initdb").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

impl Postgres {
    /// A new server of its own, stopped and removed on drop. `Err` says
    /// what is missing; a server that is there but does not start panics.
    pub fn start() -> Result<Postgres, String> {
        let bin = server_bin().ok_or(
            "no PostgreSQL server in /usr/lib/postgresql/*/bin (Debian package postgresql)",
        )?;
        for tool in ["psql", "pg_dump"] {
            if !on_path(tool) {
                return Err(format!("no {tool} (Debian package postgresql-client)"));
            }
        }
        let setup_started = Instant::now();
        let user = service_user("postgres")?;
        let dir = server_dir("snapfs-postgres-", user);
        let data = dir.path().join("data");
        let initdb = output(
            as_user(&mut Command::new(bin.join("initdb")), user)
                .current_dir(dir.path())
                .arg("--pgdata")
                .arg(&data)
                .args(["--username", SUPERUSER, "--auth=trust", "--no-sync"])
                .args(["--encoding=UTF8", "--locale=C"]),
            b"",
        );
        if let Err(why) = initdb {
            panic!("initdb: {why}");
        }
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let mut command = Command::new(bin.join("postgres"));
        as_user(&mut command, user)
            .current_dir(dir.path())
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            // No TCP at all.
            .args(["-h", "", "-p", &port.to_string()])
            // Start-up and test speed: nothing here needs to survive a
            // crash.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "shared_buffers=16MB"])
            .args(["-c", "max_connections=40"]);
        let socket_dir = dir.path().to_path_buf();
        let log = dir.path().join("server.log");
        let probe_dir = socket_dir.clone();
        let server = Server::start(
            command,
            libc::SIGQUIT,
            dir,
            &log,
            setup_started,
            move || {
                psql_command(&probe_dir, port, "postgres")
                    .arg("--command=SELECT 1")
                    .output()
                    .is_ok_and(|out| out.status.success())
            },
        );
        Ok(Postgres {
            socket_dir,
            port,
            _server: server,
        })
    }

    /// `[postgresql]` of a `snapfs run` configuration, connecting as the
    /// superuser.
    pub fn config(&self, databases: DatabaseSelection) -> PostgresqlConfig {
        PostgresqlConfig {
            host: self.socket_dir.to_str().unwrap().to_string(),
            port: self.port,
            user: SUPERUSER.into(),
            databases,
        }
    }

    /// The same as a section of a configuration file; `databases` is
    /// `"owner"` or `"prefix"`.
    pub fn toml(&self, databases: &str) -> String {
        format!(
            "[postgresql]\nhost = {}\nport = {}\nuser = {}\ndatabases = {}\n",
            super::toml_string(self.socket_dir.to_str().unwrap()),
            self.port,
            super::toml_string(SUPERUSER),
            super::toml_string(databases),
        )
    }

    /// Run SQL (several statements, each committed on its own, so
    /// `CREATE DATABASE` works) as the superuser; its unaligned output.
    pub fn try_sql(&self, database: &str, sql: &str) -> Result<String, String> {
        output(
            &mut psql_command(&self.socket_dir, self.port, database),
            sql.as_bytes(),
        )
    }

    pub fn sql(&self, database: &str, sql: &str) -> String {
        self.try_sql(database, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Load a plain dump into `database`, stopping at its first error.
    pub fn load(&self, database: &str, dump: &[u8]) {
        output(
            &mut psql_command(&self.socket_dir, self.port, database),
            dump,
        )
        .unwrap_or_else(|e| panic!("loading a dump into {database}: {e}"));
    }
}

fn psql_command(socket_dir: &Path, port: u16, database: &str) -> Command {
    let mut command = Command::new("psql");
    command
        .env("PGHOST", socket_dir)
        .env("PGPORT", port.to_string())
        .env("PGUSER", SUPERUSER)
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--no-password",
        ])
        .arg(format!("--dbname=dbname={}", quote(database)));
    command
}

/// A libpq connection-string value.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An SQL identifier, for names with spaces and quotes.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
