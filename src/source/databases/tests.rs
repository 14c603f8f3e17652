//! The parts that need no server: names, patterns, arguments, tool
//! lookup. `tests/integration/dumps.rs` runs the real servers.

use super::*;
use std::collections::HashSet;

#[test]
fn dump_file_names_are_one_safe_path_component() {
    for (database, file) in [
        ("shop", "shop.sql"),
        ("alice it's \"odd\" ü", "alice it's \"odd\" ü.sql"),
        ("a/b", "a%2Fb.sql"),
        ("a%2Fb", "a%252Fb.sql"),
        ("..", "%2E..sql"),
        (".hidden", "%2Ehidden.sql"),
        ("a.b", "a.b.sql"),
        ("nul\0x", "nul%00x.sql"),
        ("line\nbreak", "line\nbreak.sql"),
    ] {
        assert_eq!(dump_file_name(database), file, "{database:?}");
        assert!(!file.contains('/') && !file.contains('\0') && !file.starts_with('.'));
    }
}

#[test]
fn two_databases_never_share_a_file_name() {
    let names = [
        "a/b", "a%2Fb", "a%252Fb", ".x", "%2Ex", "x", "x.sql", "x%00", "x\0",
    ];
    let files: HashSet<String> = names.iter().map(|n| dump_file_name(n)).collect();
    assert_eq!(files.len(), names.len(), "{files:?}");
}

#[test]
fn prefix_is_the_account_or_the_account_and_an_underscore() {
    assert!(named_for("alice", "alice"));
    assert!(named_for("alice_shop", "alice"));
    assert!(named_for("alice_", "alice"));
    assert!(!named_for("alicex", "alice"));
    assert!(!named_for("alice-shop", "alice"));
    assert!(!named_for("bob_alice", "alice"));
    assert!(!named_for("Alice_shop", "alice"));
    // A LIKE 'alice_%' would have let this one through.
    assert!(!named_for("alice2", "alice"));
}

#[test]
fn grants_match_like_the_server() {
    assert!(grant_matches("alice_shop", "alice_shop"));
    // An unescaped `_` is a wildcard: MariaDB gives this grant on both.
    assert!(grant_matches("alice_shop", "aliceXshop"));
    assert!(grant_matches("alice\\_%", "alice_blog"));
    assert!(grant_matches("alice\\_%", "alice_"));
    assert!(!grant_matches("alice\\_%", "aliceXblog"));
    assert!(!grant_matches("alice\\_%", "alice"));
    assert!(grant_matches("%", "anything at all"));
    assert!(!grant_matches("shop", "Shop"));
    assert!(!grant_matches("shop", "shop2"));
    assert!(grant_matches("a%b%c", "aXXbYYc"));
    assert!(!grant_matches("a%b%c", "aXXbYY"));
    assert!(grant_matches("100\\%", "100%"));
    assert!(!grant_matches("100\\%", "1000"));
    // Many `%` against a long name: no exponential backtracking.
    let pattern = "%a".repeat(30);
    assert!(!grant_matches(&pattern, &"a".repeat(29)));
    assert!(grant_matches(&pattern, &"a".repeat(64)));
}

#[test]
fn connection_string_values_are_quoted() {
    assert_eq!(conninfo_quote("shop"), "'shop'");
    assert_eq!(conninfo_quote("it's"), "'it\\'s'");
    assert_eq!(conninfo_quote("a\\b"), "'a\\\\b'");
    assert_eq!(conninfo_quote("host=/tmp dbname=x"), "'host=/tmp dbname=x'");
}

#[test]
fn hex_decodes_either_case_and_nothing_else() {
    assert_eq!(from_hex("616C").as_deref(), Some("al"));
    assert_eq!(from_hex("616c").as_deref(), Some("al"));
    assert_eq!(from_hex("").as_deref(), Some(""));
    assert_eq!(from_hex("c3bc").as_deref(), Some("ü"));
    for bad in ["6", "zz", "ff", "s", "é1"] {
        assert_eq!(from_hex(bad), None, "{bad:?}");
    }
}

fn args(command: &Command) -> Vec<String> {
    command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

fn env(command: &Command, key: &str) -> Option<Option<String>> {
    command
        .get_envs()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
}

fn postgresql(host: &str) -> PostgresqlConfig {
    PostgresqlConfig {
        host: host.into(),
        port: 5433,
        user: "backup".into(),
        databases: DatabaseSelection::Owner,
    }
}

#[test]
fn pg_dump_gets_the_server_from_the_configuration_and_one_quoted_name() {
    let cfg = postgresql("/run/postgresql");
    let command = pg_dump_command(Path::new("/usr/bin/pg_dump"), true, &cfg, "it's x");
    assert_eq!(command.get_program(), "/usr/bin/pg_dump");
    assert_eq!(
        args(&command),
        [
            "--format=plain",
            "--no-password",
            "--quote-all-identifiers",
            "--lock-wait-timeout=600000",
            "--restrict-key=snapfs",
            "--dbname=dbname='it\\'s x'",
        ]
    );
    assert_eq!(
        env(&command, "PGHOST"),
        Some(Some("/run/postgresql".into()))
    );
    assert_eq!(env(&command, "PGPORT"), Some(Some("5433".into())));
    assert_eq!(env(&command, "PGUSER"), Some(Some("backup".into())));
    assert_eq!(env(&command, "PGHOSTADDR"), Some(None), "removed");
    let older = pg_dump_command(Path::new("pg_dump"), false, &cfg, "x");
    assert!(!args(&older).iter().any(|a| a.starts_with("--restrict-key")));
}

#[test]
fn a_postgresql_server_is_named_by_its_socket_or_its_address() {
    assert_eq!(
        postgresql_server(&postgresql("/run/postgresql")),
        "PostgreSQL at /run/postgresql/.s.PGSQL.5433"
    );
    assert_eq!(
        postgresql_server(&postgresql("db.example")),
        "PostgreSQL at db.example:5433"
    );
}

#[test]
fn mariadb_dump_connects_like_the_configuration_and_ends_options_before_the_name() {
    let cfg = MysqlConfig {
        socket: "/run/my sql/x.sock".into(),
        user: "root".into(),
        databases: DatabaseSelection::Prefix,
    };
    let command = mysql_dump_command(Path::new("/usr/bin/mariadb-dump"), &cfg, "-alice odd");
    assert_eq!(
        args(&command),
        [
            "--protocol=SOCKET",
            "--socket=/run/my sql/x.sock",
            "--user=root",
            "--single-transaction",
            "--routines",
            "--events",
            "--triggers",
            "--skip-dump-date",
            "--",
            "-alice odd",
        ]
    );
    assert_eq!(mysql_flavour(Path::new("/usr/bin/mariadb-dump")), "MariaDB");
    assert_eq!(mysql_flavour(Path::new("/usr/bin/mysqldump")), "MySQL");
}

#[test]
fn a_missing_tool_names_its_package() {
    let empty = tempfile::tempdir().unwrap();
    let search = empty.path().as_os_str();
    let err = find_tool(&["pg_dump"], "postgresql-client", Some(search)).unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("pg_dump is not installed"), "{msg}");
    assert!(msg.contains("postgresql-client"), "{msg}");
    let err = find_tool(
        &["mariadb-dump", "mysqldump"],
        "mariadb-client",
        Some(search),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("neither mariadb-dump nor mysqldump is installed"),
        "{err}"
    );
}

#[test]
fn tools_are_found_in_order_and_only_if_executable() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let write = |dir: &Path, name: &str, mode: u32| {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    write(one.path(), "mariadb-dump", 0o644);
    let fallback = write(one.path(), "mysqldump", 0o755);
    let search = std::env::join_paths([one.path(), two.path()]).unwrap();
    let names = ["mariadb-dump", "mysqldump"];
    let found = find_tool(&names, "mariadb-client", Some(&search)).unwrap();
    assert_eq!(found, fallback, "a file that is not executable is no tool");
    let preferred = write(two.path(), "mariadb-dump", 0o755);
    let found = find_tool(&names, "mariadb-client", Some(&search)).unwrap();
    assert_eq!(found, preferred, "mariadb-dump first, in whichever folder");
}
