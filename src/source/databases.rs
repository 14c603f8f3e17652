//! An account's databases, and a [`Dump`] of each: `pg_dump` for
//! PostgreSQL, `mariadb-dump` (or `mysqldump`) for MariaDB and MySQL.
//!
//! # Which databases are an account's
//!
//! - `owner`, PostgreSQL: owned by the role named like the account
//!   (`pg_database.datdba`).
//! - `prefix`, both servers: named `{account}` or `{account}_…`. Compared
//!   here, not with `LIKE`, where `_` is a wildcard that `alice_%` would
//!   let match `alicex`.
//! - `owner`, MariaDB, which has no owners: the databases on which a user
//!   named like the account, at any host, holds database-level privileges
//!   (the rows of `mysql.db`). A grant's database is a pattern (`_` and `%`
//!   are wildcards unless escaped, as hosting panels write `alice\_%`); it
//!   is matched the way the server matches it, case-sensitively (Linux's
//!   `lower_case_table_names = 0`). Global privileges (`ON *.*`) make
//!   nobody an owner, or an admin account would own every database; table
//!   and column grants and roles are not counted either: a user granted
//!   one table of someone else's database does not own that database.
//!
//! Never an account's: PostgreSQL templates and databases that refuse
//! connections (`datallowconn = false`), and MariaDB's own
//! `information_schema`, `mysql`, `performance_schema` and `sys`.
//!
//! # How names travel
//!
//! Database names can hold anything but NUL: spaces, quotes, `/`,
//! newlines. They are read hex-encoded (`HEX()`, `encode(…, 'hex')`), so no
//! name can break a line of the client's output; passed to the tools as one
//! argument each, never through a shell; and to `pg_dump` as a quoted
//! connection string `dbname='…'`, because a bare name holding `=` is
//! taken for a connection string: a tenant's database named
//! `host=/tmp/x dbname=other` would send the dump elsewhere. The file name
//! is [`dump_file_name`].
//!
//! # Errors
//!
//! A server that does not answer (down, wrong socket, refused login) or a
//! client tool that is not installed is [`Error::Unavailable`], naming the
//! server and quoting the tool, or naming the Debian package to install.
//! A dump that fails later (a database dropped since the listing, a table
//! the dump role may not read) is reported by
//! [`super::dump::RunningDump::finish`] for that database alone.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::dump::Dump;
use crate::display::escape_name;
use crate::error::{Error, Result};
use crate::host::config::{DatabaseSelection, MysqlConfig, PostgresqlConfig};

/// MariaDB's own databases: never an account's, whatever their names.
const MYSQL_SYSTEM: [&str; 4] = ["information_schema", "mysql", "performance_schema", "sys"];

/// Every database a connection may open, with its owner, hex-encoded.
const POSTGRESQL_LIST: &str = "SELECT encode(convert_to(d.datname::text, 'UTF8'), 'hex'), \
     encode(convert_to(r.rolname::text, 'UTF8'), 'hex') \
     FROM pg_catalog.pg_database d JOIN pg_catalog.pg_roles r ON r.oid = d.datdba \
     WHERE NOT d.datistemplate AND d.datallowconn";

const MYSQL_LIST_SCHEMAS: &str = "SELECT 's', HEX(SCHEMA_NAME) FROM information_schema.SCHEMATA";
const MYSQL_LIST_GRANTS: &str = "SELECT 'g', HEX(User), HEX(Db) FROM mysql.db";

/// The `\restrict` key of `pg_dump`'s plain output (15.14, 16.10, 17.6 and
/// later). By default it is random, so two dumps of an unchanged database
/// would differ in their first and last lines. It guards a restore
/// against a malicious *origin server* (its superuser) slipping psql
/// meta-commands into the dump; a tenant owning a database cannot, so a
/// fixed key costs nothing here.
const POSTGRESQL_RESTRICT_KEY: &str = "snapfs";

/// `pg_dump` waits at most this long for a table's lock: a tenant's
/// transaction holding an exclusive lock all night must cost its own dump,
/// not the run of every account after it.
const POSTGRESQL_LOCK_WAIT_MS: u32 = 10 * 60 * 1000;

/// Where tools are looked for when `PATH` is unset (a bare `env -i`).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The account's PostgreSQL databases, sorted by name. The listing
/// connects to the `postgres` database, which every cluster has unless an
/// operator dropped it.
pub fn postgresql_databases(cfg: &PostgresqlConfig, account: &str) -> Result<Vec<String>> {
    let psql = find_tool(&["psql"], "postgresql-client", None)?;
    let mut command = Command::new(&psql);
    postgresql_connection(&mut command, cfg);
    command
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--no-password",
        ])
        .args(["--dbname=postgres", "-c", POSTGRESQL_LIST]);
    let out = run_client(command, &postgresql_server(cfg))?;
    let mut names = Vec::new();
    for line in out.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split('|').collect();
        let [name, owner] = fields[..] else {
            return Err(unexpected(&postgresql_server(cfg), line));
        };
        let (name, owner) = (from_hex(name), from_hex(owner));
        let (Some(name), Some(owner)) = (name, owner) else {
            return Err(unexpected(&postgresql_server(cfg), line));
        };
        let mine = match cfg.databases {
            DatabaseSelection::Owner => owner == account,
            DatabaseSelection::Prefix => named_for(&name, account),
        };
        if mine {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A dump of each of the account's PostgreSQL databases: `pg_dump
/// --format=plain`, one transaction, so consistent by itself. Its output
/// holds no timestamp, and the same bytes for an unchanged database day
/// after day (the `\restrict` key is fixed); identifiers are all quoted, so
/// a dump still loads into a later server where a name became a keyword.
pub fn postgresql_dumps(cfg: &PostgresqlConfig, account: &str) -> Result<Vec<Dump>> {
    let pg_dump = find_tool(&["pg_dump"], "postgresql-client", None)?;
    let restrict_key = has_restrict_key(&pg_dump);
    let names = postgresql_databases(cfg, account)?;
    Ok(names
        .iter()
        .map(|name| Dump {
            database: name.clone(),
            file_name: dump_file_name(name),
            what: format!("PostgreSQL database {}", escape_name(name.as_bytes())),
            command: pg_dump_command(&pg_dump, restrict_key, cfg, name),
        })
        .collect())
}

fn pg_dump_command(
    pg_dump: &Path,
    restrict_key: bool,
    cfg: &PostgresqlConfig,
    database: &str,
) -> Command {
    let mut command = Command::new(pg_dump);
    postgresql_connection(&mut command, cfg);
    command
        .args(["--format=plain", "--no-password", "--quote-all-identifiers"])
        .arg(format!("--lock-wait-timeout={POSTGRESQL_LOCK_WAIT_MS}"));
    if restrict_key {
        command.arg(format!("--restrict-key={POSTGRESQL_RESTRICT_KEY}"));
    }
    command.arg(format!("--dbname=dbname={}", conninfo_quote(database)));
    command
}

/// Whether this `pg_dump` takes `--restrict-key`: an older one refuses the
/// option, and writes no `\restrict` line either.
fn has_restrict_key(pg_dump: &Path) -> bool {
    Command::new(pg_dump)
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("--restrict-key"))
}

/// The server named by the configuration, through libpq's variables (a
/// host may be a socket folder). A variable inherited from whoever started
/// snapfs must not send the connection elsewhere: `PGHOSTADDR` would
/// override the host, a `PGSERVICE` entry could name another one.
fn postgresql_connection(command: &mut Command, cfg: &PostgresqlConfig) {
    command
        .env("PGHOST", &cfg.host)
        .env("PGPORT", cfg.port.to_string())
        .env("PGUSER", &cfg.user)
        .env("PGAPPNAME", "snapfs")
        // A host that drops packets must not hang the night's run.
        .env("PGCONNECT_TIMEOUT", "30")
        .env_remove("PGHOSTADDR")
        .env_remove("PGSERVICE");
}

/// "PostgreSQL at /var/run/postgresql/.s.PGSQL.5432" (the socket libpq
/// opens) or "PostgreSQL at db.example:5432".
fn postgresql_server(cfg: &PostgresqlConfig) -> String {
    if cfg.host.starts_with('/') {
        format!("PostgreSQL at {}/.s.PGSQL.{}", cfg.host, cfg.port)
    } else {
        format!("PostgreSQL at {}:{}", cfg.host, cfg.port)
    }
}

/// A libpq connection-string value: single-quoted, `\` and `'` escaped.
fn conninfo_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

/// The account's MariaDB (or MySQL) databases, sorted by name.
pub fn mysql_databases(cfg: &MysqlConfig, account: &str) -> Result<Vec<String>> {
    let client = find_tool(&["mariadb", "mysql"], "mariadb-client", None)?;
    let server = mysql_server(&client, cfg);
    let mut query = MYSQL_LIST_SCHEMAS.to_string();
    if cfg.databases == DatabaseSelection::Owner {
        // Read only when needed: a prefix setup may connect as a user
        // that cannot read the grant tables.
        query = format!("{query}; {MYSQL_LIST_GRANTS}");
    }
    let mut command = Command::new(&client);
    mysql_connection(&mut command, cfg);
    command
        .args(["--batch", "--skip-column-names"])
        .arg(format!("--execute={query}"));
    let out = run_client(command, &server)?;
    let (mut schemas, mut grants) = (Vec::new(), Vec::new());
    for line in out.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.split('\t');
        let tag = fields.next();
        let values: Option<Vec<String>> = fields.map(from_hex).collect();
        match (tag, values.as_deref()) {
            (Some("s"), Some([name])) => schemas.push(name.clone()),
            (Some("g"), Some([user, db])) => grants.push((user.clone(), db.clone())),
            _ => return Err(unexpected(&server, line)),
        }
    }
    let mut names: Vec<String> = schemas
        .into_iter()
        .filter(|name| !MYSQL_SYSTEM.contains(&name.as_str()))
        .filter(|name| match cfg.databases {
            DatabaseSelection::Prefix => named_for(name, account),
            DatabaseSelection::Owner => grants
                .iter()
                .any(|(user, db)| user == account && grant_matches(db, name)),
        })
        .collect();
    names.sort();
    Ok(names)
}

/// A dump of each of the account's MariaDB databases: `mariadb-dump
/// --single-transaction` (one consistent snapshot of InnoDB tables, no
/// lock held against the site; MyISAM tables are read as they are),
/// with its stored routines, events and triggers, and no date in it, so
/// an unchanged database dumps to the same bytes. `mysqldump` when
/// `mariadb-dump` is not installed (MySQL, or an older MariaDB).
pub fn mysql_dumps(cfg: &MysqlConfig, account: &str) -> Result<Vec<Dump>> {
    let tool = find_tool(&["mariadb-dump", "mysqldump"], "mariadb-client", None)?;
    let server = mysql_flavour(&tool);
    let names = mysql_databases(cfg, account)?;
    Ok(names
        .iter()
        .map(|name| Dump {
            database: name.clone(),
            file_name: dump_file_name(name),
            what: format!("{server} database {}", escape_name(name.as_bytes())),
            command: mysql_dump_command(&tool, cfg, name),
        })
        .collect())
}

fn mysql_dump_command(tool: &Path, cfg: &MysqlConfig, database: &str) -> Command {
    let mut command = Command::new(tool);
    mysql_connection(&mut command, cfg);
    command
        .args([
            "--single-transaction",
            "--routines",
            "--events",
            "--triggers",
        ])
        .arg("--skip-dump-date")
        // Without `--databases` the dump has no CREATE DATABASE or USE: it
        // loads into whichever database the restorer picks. `--` because a
        // name may begin with `-`.
        .arg("--")
        .arg(database);
    command
}

/// The socket and user of the configuration. Option files are still read
/// (`~/.my.cnf` may hold the password); these flags override them, and
/// `--protocol` keeps a `host=` there from turning this into TCP.
fn mysql_connection(command: &mut Command, cfg: &MysqlConfig) {
    let mut socket = OsString::from("--socket=");
    socket.push(&cfg.socket);
    command
        .arg("--protocol=SOCKET")
        .arg(socket)
        .arg(format!("--user={}", cfg.user));
}

/// "MariaDB at /run/mysqld/mysqld.sock", or MySQL where its client is
/// the one installed.
fn mysql_server(client: &Path, cfg: &MysqlConfig) -> String {
    format!("{} at {}", mysql_flavour(client), cfg.socket.display())
}

fn mysql_flavour(tool: &Path) -> &'static str {
    let name = tool.file_name().unwrap_or_default().to_string_lossy();
    if name.starts_with("mariadb") {
        "MariaDB"
    } else {
        "MySQL"
    }
}

/// Whether a `mysql.db` grant's database pattern covers `name`, as the
/// server decides: `%` any run of characters, `_` any one, `\` makes the
/// next one literal; case-sensitive.
fn grant_matches(pattern: &str, name: &str) -> bool {
    enum Token {
        Any,
        One,
        Char(char),
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '%' => Token::Any,
            '_' => Token::One,
            '\\' => Token::Char(chars.next().unwrap_or('\\')),
            c => Token::Char(c),
        });
    }
    let name: Vec<char> = name.chars().collect();
    // matched[j]: the tokens so far match the first j characters. One row
    // at a time, so a pattern of many `%` costs no backtracking.
    let mut matched = vec![false; name.len() + 1];
    matched[0] = true;
    for token in &tokens {
        let mut next = vec![false; name.len() + 1];
        for j in 0..=name.len() {
            next[j] = match token {
                Token::Any => matched[j] || (j > 0 && next[j - 1]),
                Token::One => j > 0 && matched[j - 1],
                Token::Char(c) => j > 0 && matched[j - 1] && name[j - 1] == *c,
            };
        }
        matched = next;
    }
    matched[name.len()]
}

/// The `prefix` rule: `account` itself or `account_…`.
fn named_for(database: &str, account: &str) -> bool {
    database
        .strip_prefix(account)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
}

/// A database's file name in the snapshot, `<database>.sql`, safe as one
/// path component and one name per database: `%` is written `%25`, `/`
/// `%2F`, NUL `%00`, and a leading `.` `%2E` (no dump hides as a dot
/// file, and `.`/`..` never arise). Everything else, spaces, quotes and
/// non-ASCII letters, stays as it is.
pub fn dump_file_name(database: &str) -> String {
    let mut name = String::with_capacity(database.len() + 4);
    for (i, c) in database.chars().enumerate() {
        match c {
            '%' => name.push_str("%25"),
            '/' => name.push_str("%2F"),
            '\0' => name.push_str("%00"),
            '.' if i == 0 => name.push_str("%2E"),
            c => name.push(c),
        }
    }
    name.push_str(".sql");
    name
}

/// Run a client for a listing; its standard error is the message when it
/// fails (it names the socket and says why: no such file, refused login).
fn run_client(mut command: Command, server: &str) -> Result<String> {
    let program = Path::new(command.get_program()).display().to_string();
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Unavailable(format!("{server}: cannot run {program}: {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = said
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let why = if said.is_empty() {
            format!("{program} {}", out.status)
        } else {
            said.join(" ")
        };
        return Err(Error::Unavailable(format!(
            "{server}: cannot list the databases: {why}"
        )));
    }
    String::from_utf8(out.stdout).map_err(|_| unexpected(server, "output that is not UTF-8"))
}

fn unexpected(server: &str, what: &str) -> Error {
    Error::Unavailable(format!(
        "{server}: unexpected answer to the database listing: {}",
        escape_name(what.as_bytes())
    ))
}

/// Hex (either case) to a UTF-8 string; `None` for anything else.
fn from_hex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The first of `names` found on `search` (default: `PATH`); otherwise an
/// error that says which package provides it.
fn find_tool(names: &[&str], package: &str, search: Option<&OsStr>) -> Result<PathBuf> {
    let search = search
        .map(OsStr::to_os_string)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| DEFAULT_PATH.into());
    for name in names {
        for dir in std::env::split_paths(&search) {
            let candidate = dir.join(name);
            let executable = std::fs::metadata(&candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if executable {
                return Ok(candidate);
            }
        }
    }
    let missing = match names {
        [one] => format!("{one} is not"),
        more => format!("neither {} is", more.join(" nor ")),
    };
    Err(Error::Unavailable(format!(
        "{missing} installed (Debian package {package}; looked in {})",
        search.to_string_lossy()
    )))
}

#[cfg(test)]
mod tests;
