//! `snapfs run` with real PostgreSQL and MariaDB servers (`tests/servers`):
//! each account's snapshot holds exactly its files, dumps and mail; the
//! dumps load back to the same rows; an unchanged night stores almost
//! nothing; a dump that fails costs only itself.
//!
//! The servers are shared with `dumps`: these tests use their own account
//! names (rina, ravi, rudy), none a prefix of another test's.

use crate::run::{account, make_home, make_maildir, Host};
use crate::servers::{self, mariadb, postgres, Mariadb, Postgres};
use std::fs;

/// Rows and a checksum of every table of a PostgreSQL database.
fn pg_fingerprint(pg: &Postgres, db: &str) -> String {
    pg.sql(
        db,
        "SELECT string_agg(format('%s:%s', c.relname,
                (xpath('/row/c/text()', query_to_xml(
                    format('SELECT count(*) || %L || coalesce(md5(string_agg(t::text, %L ORDER BY t::text)), %L) AS c FROM %I t',
                        ':', ',', '', c.relname), false, true, '')))[1]::text), ' ' ORDER BY c.relname)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r'",
    )
}

/// Rows and a checksum of every table of a MariaDB database.
fn my_fingerprint(my: &Mariadb, db: &str) -> String {
    let tables = my.sql(&format!(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = {} \
         AND table_type = 'BASE TABLE' ORDER BY table_name",
        mariadb::literal(db)
    ));
    tables
        .lines()
        .map(|t| {
            let table = format!("{}.{}", mariadb::ident(db), mariadb::ident(t));
            let rows = my.sql(&format!("SELECT count(*) FROM {table}"));
            let sum = my.sql(&format!("CHECKSUM TABLE {table}"));
            format!(
                "{t}:{}:{}",
                rows.trim(),
                sum.split('\t').nth(1).unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn create_pg(pg: &Postgres, owner: &str, db: &str, rows: u32) {
    pg.sql(
        "postgres",
        &format!(
            "CREATE DATABASE {} OWNER {}",
            postgres::ident(db),
            postgres::ident(owner)
        ),
    );
    pg.sql(
        db,
        &format!(
            "SET ROLE {owner};
             CREATE TABLE item (id int PRIMARY KEY, name text, price numeric);
             INSERT INTO item SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, {rows}) g;
             CREATE TABLE note (body text);
             INSERT INTO note VALUES ('it''s \"quoted\"'), (E'line\\nbreak'), (NULL);"
        ),
    );
}

fn create_my(my: &Mariadb, db: &str, rows: u32) {
    let d = mariadb::ident(db);
    my.sql(&format!(
        "CREATE DATABASE {d}; USE {d};
         CREATE TABLE {d}.item (id INT PRIMARY KEY, name TEXT, price DECIMAL(10,2));
         INSERT INTO {d}.item SELECT seq, CONCAT('item ', seq), seq * 1.5 FROM seq_1_to_{rows};"
    ));
}

/// `latest`'s file at `path` for `account`, restored.
fn restored(host: &Host, account: &str, path: &str) -> Vec<u8> {
    let target = host
        .root()
        .join(format!("restored-{account}-{}", path.replace('/', "_")));
    host.snapfs(&[
        "restore",
        "--account",
        account,
        &format!("latest:{path}"),
        "--target",
        target.to_str().unwrap(),
    ]);
    let name = path.rsplit('/').next().unwrap();
    fs::read(target.join(name)).unwrap()
}

#[test]
fn each_account_gets_exactly_its_files_dumps_and_mail() {
    let test = "each_account_gets_exactly_its_files_dumps_and_mail";
    let (Some(pg), Some(my)) = (servers::postgres(test), servers::mariadb(test)) else {
        return;
    };
    pg.sql("postgres", "CREATE ROLE rina; CREATE ROLE ravi;");
    create_pg(pg, "rina", "rina_shop", 500);
    create_pg(pg, "rina", "rina_blog", 50);
    create_pg(pg, "ravi", "ravi_db", 200);
    create_my(my, "rina_wp", 300);
    create_my(my, "ravi", 100);
    let extra = format!("{}{}", pg.toml("owner"), my.toml("prefix"));
    let host = Host::new(&["rina", "ravi"], &extra);
    for (n, name) in ["rina", "ravi"].iter().enumerate() {
        make_home(&host.home(name), n as u64);
        make_maildir(&host.maildir(name), 10);
    }

    let (code, report) = host.run_json(&["--time", "2026-11-24 02:00:00"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(account(&report, "rina")["databases"], 3, "{report}");
    assert_eq!(account(&report, "ravi")["databases"], 2, "{report}");
    let listing = |name: &str| host.snapfs(&["ls", "-R", "--account", name, "latest"]);
    let rina = listing("rina");
    for want in [
        "files/www/index.html",
        "mails/new/1700000009.M9P1.host",
        "postgresql/rina_blog.sql",
        "postgresql/rina_shop.sql",
        "mysql/rina_wp.sql",
    ] {
        assert!(rina.lines().any(|l| l == want), "{want} not in {rina}");
    }
    assert!(!rina.contains("ravi"), "{rina}");
    let ravi = listing("ravi");
    assert!(
        ravi.contains("postgresql/ravi_db.sql") && ravi.contains("mysql/ravi.sql"),
        "{ravi}"
    );
    assert!(!ravi.contains("rina"), "{ravi}");
    // Dumps belong to the account's user, 0600, in its 0700 folders.
    let long = host.snapfs(&["ls", "-l", "--account", "rina", "latest", "postgresql"]);
    assert!(long.lines().all(|l| l.starts_with("-rw-------")), "{long}");

    // Every dump, taken from the snapshot and loaded into a fresh
    // database, gives the same rows (the fingerprints do see them).
    assert!(
        pg_fingerprint(pg, "rina_shop").starts_with("item:500:"),
        "{}",
        pg_fingerprint(pg, "rina_shop")
    );
    assert!(
        my_fingerprint(my, "rina_wp").starts_with("item:300:"),
        "{}",
        my_fingerprint(my, "rina_wp")
    );
    for (account, db) in [
        ("rina", "rina_shop"),
        ("rina", "rina_blog"),
        ("ravi", "ravi_db"),
    ] {
        let dump = restored(&host, account, &format!("postgresql/{db}.sql"));
        let copy = format!("{db}_copy");
        pg.sql("postgres", &format!("CREATE DATABASE {copy}"));
        pg.load(&copy, &dump);
        assert_eq!(pg_fingerprint(pg, &copy), pg_fingerprint(pg, db), "{db}");
    }
    for (account, db) in [("rina", "rina_wp"), ("ravi", "ravi")] {
        let dump = restored(&host, account, &format!("mysql/{db}.sql"));
        let copy = format!("{db}_copy");
        my.sql(&format!("CREATE DATABASE {copy}"));
        my.load(&copy, &dump);
        assert_eq!(
            my_fingerprint(my, &copy).replace(&copy, db),
            my_fingerprint(my, db),
            "{db}"
        );
    }

    // A second night with nothing changed stores almost nothing: the
    // dumps repeat byte for byte and deduplicate.
    let before = crate::support::dir_size(&host.repo().join("data"));
    let (code, second) = host.run_json(&["--time", "2026-11-25 02:00:00"]);
    assert_eq!(code, Some(0), "{second}");
    let grown = crate::support::dir_size(&host.repo().join("data")) - before;
    assert!(
        grown < 24 * 1024,
        "the repository grew by {grown} bytes: {second}"
    );
}

#[test]
fn a_dump_that_fails_costs_only_itself() {
    let test = "a_dump_that_fails_costs_only_itself";
    let (Some(pg), Some(my)) = (servers::postgres(test), servers::mariadb(test)) else {
        return;
    };
    pg.sql("postgres", "CREATE ROLE rudy;");
    create_pg(pg, "rudy", "rudy_ok", 20);
    create_my(my, "rudy_ok", 20);
    create_my(my, "rudy_bad", 20);
    // A view over a table that is gone: mariadb-dump fails on it.
    my.sql("CREATE VIEW rudy_bad.v AS SELECT * FROM rudy_bad.item; DROP TABLE rudy_bad.item;");
    let extra = format!("{}{}", pg.toml("owner"), my.toml("prefix"));
    let host = Host::new(&["rudy"], &extra);
    make_home(&host.home("rudy"), 7);
    let out = host.run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("rudy: mysql/rudy_bad.sql: not backed up: MariaDB database rudy_bad"),
        "{stderr}"
    );
    let listing = host.snapfs(&["ls", "-R", "--account", "rudy", "latest"]);
    for want in [
        "files/www/index.html",
        "postgresql/rudy_ok.sql",
        "mysql/rudy_ok.sql",
    ] {
        assert!(
            listing.lines().any(|l| l == want),
            "{want} not in {listing}"
        );
    }
    assert!(!listing.contains("rudy_bad"), "{listing}");
    // The snapshot records what failed.
    let snapshots: serde_json::Value =
        serde_json::from_str(&host.snapfs(&["snapshots", "--json", "--account", "rudy"])).unwrap();
    let sources = snapshots[0]["sources"].as_array().unwrap();
    let bad = sources.iter().find(|s| s["name"] == "rudy_bad").unwrap();
    assert_eq!(bad["kind"], "mysql");
    assert!(
        bad["failure"].as_str().unwrap().contains("rudy_bad"),
        "{bad}"
    );
}

#[test]
fn a_dump_tool_that_is_not_installed_is_named() {
    let test = "a_dump_tool_that_is_not_installed_is_named";
    let Some(pg) = servers::postgres(test) else {
        return;
    };
    let host = Host::new(&["rita"], &pg.toml("owner"));
    make_home(&host.home("rita"), 3);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snapfs"))
        .arg("run")
        .arg("--config")
        .arg(host.config())
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("rita: postgresql: left out:") && stderr.contains("not installed"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
