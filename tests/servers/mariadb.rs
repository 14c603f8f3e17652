//! A throwaway MariaDB: `mariadb-install-db` into a temp folder,
//! `mariadbd` in the foreground, a Unix socket in that folder and no TCP.
//! Grants are real (no `--skip-grant-tables`): the `owner` selection reads
//! them.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use snapfs::host::config::{DatabaseSelection, MysqlConfig};

use super::{
    as_user, first_existing, on_path, output, server_dir, service_user, unavailable, Server,
};

/// `root@localhost` with no password (`--auth-root-authentication-method=
/// normal`): any local user may connect as it through the socket.
pub const SUPERUSER: &str = "root";

pub struct Mariadb {
    pub socket: PathBuf,
    _server: Server,
}

/// The test binary's shared server, started at the first call; `None`
/// (after a message) when the packages are missing.
pub fn mariadb(test: &str) -> Option<&'static Mariadb> {
    static SHARED: OnceLock<Result<Mariadb, String>> = OnceLock::new();
    match SHARED.get_or_init(Mariadb::start) {
        Ok(server) => Some(server),
        Err(why) => unavailable(test, why),
    }
}

impl Mariadb {
    /// A new server of its own, stopped and removed on drop. `Err` says
    /// what is missing; a server that is there but does not start panics.
    pub fn start() -> Result<Mariadb, String> {
        let server_missing = "no mariadbd (Debian package mariadb-server)";
        let mariadbd =
            first_existing(&["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]).ok_or(server_missing)?;
        let install = first_existing(&["/usr/bin/mariadb-install-db", "/usr/bin/mysql_install_db"])
            .ok_or(server_missing)?;
        for tool in ["mariadb", "mariadb-dump"] {
            if !on_path(tool) {
                return Err(format!("no {tool} (Debian package mariadb-client)"));
            }
        }
        let setup_started = Instant::now();
        let user = service_user("mysql")?;
        let dir = server_dir("snapfs-mariadb-", user);
        let data = dir.path().join("data");
        let installed = output(
            as_user(&mut Command::new(install), user)
                .current_dir(dir.path())
                // Nothing from /etc/mysql: it describes the system instance.
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
                .arg("--skip-name-resolve"),
            b"",
        );
        if let Err(why) = installed {
            panic!("mariadb-install-db: {why}");
        }
        let socket = dir.path().join("mysqld.sock");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let mut command = Command::new(mariadbd);
        as_user(&mut command, user)
            .current_dir(dir.path())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", path("mysqld.pid")))
            .arg(format!("--log-error={}", path("error.log")))
            .arg(format!("--tmpdir={}", dir.path().display()))
            .args(["--skip-networking", "--skip-name-resolve", "--skip-log-bin"])
            // Start-up and test speed: nothing here needs to survive a
            // crash.
            .args(["--innodb-buffer-pool-size=16M", "--innodb-doublewrite=0"])
            .arg("--innodb-flush-log-at-trx-commit=0")
            // Debian's default, which --no-defaults drops (latin1 otherwise).
            .args([
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
            ]);
        let log = dir.path().join("server.log");
        let probe = socket.clone();
        let server = Server::start(
            command,
            libc::SIGKILL,
            dir,
            &log,
            setup_started,
            move || {
                client(&probe, None)
                    .arg("--execute=SELECT 1")
                    .output()
                    .is_ok_and(|out| out.status.success())
            },
        );
        Ok(Mariadb {
            socket,
            _server: server,
        })
    }

    /// `[mysql]` of a `snapfs run` configuration, connecting as root.
    pub fn config(&self, databases: DatabaseSelection) -> MysqlConfig {
        MysqlConfig {
            socket: self.socket.clone(),
            user: SUPERUSER.into(),
            databases,
        }
    }

    /// The same as a section of a configuration file; `databases` is
    /// `"owner"` or `"prefix"`.
    pub fn toml(&self, databases: &str) -> String {
        format!(
            "[mysql]\nsocket = {}\nuser = {}\ndatabases = {}\n",
            super::toml_string(self.socket.to_str().unwrap()),
            super::toml_string(SUPERUSER),
            super::toml_string(databases),
        )
    }

    /// Run SQL as root; tab-separated rows without the header.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        output(&mut client(&self.socket, None), sql.as_bytes())
    }

    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Load a dump into `database`, stopping at its first error.
    pub fn load(&self, database: &str, dump: &[u8]) {
        output(&mut client(&self.socket, Some(database)), dump)
            .unwrap_or_else(|e| panic!("loading a dump into {database}: {e}"));
    }
}

fn client(socket: &std::path::Path, database: Option<&str>) -> Command {
    let mut command = Command::new("mariadb");
    command
        .arg("--no-defaults")
        .arg("--protocol=SOCKET")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--user={SUPERUSER}"))
        .args(["--batch", "--skip-column-names"]);
    if let Some(database) = database {
        command.arg(format!("--database={database}"));
    }
    command
}

/// An SQL identifier, for names with spaces and quotes.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// An SQL string literal (the default SQL mode: `\` escapes).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}
