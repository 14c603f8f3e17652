//! Database dumps against real servers (`tests/servers`): which databases
//! are an account's, dumps that load back to the same rows and repeat byte
//! for byte, a failing dump that fails alone, a server that is not there.
//!
//! The servers are shared by these tests: each test uses its own account
//! names (alice and bob, carol, dave, erin, ...), none a prefix of another.

use std::io::Read;

use snapfs::error::Error;
use snapfs::host::config::{DatabaseSelection, MysqlConfig, PostgresqlConfig};
use snapfs::source::databases::{
    mysql_databases, mysql_dumps, postgresql_databases, postgresql_dumps,
};
use snapfs::source::dump::Dump;

use crate::servers::{self, mariadb, postgres, Mariadb, Postgres};

use DatabaseSelection::{Owner, Prefix};

/// Stream a dump to its end as the backup does; its bytes, or `finish`'s
/// error.
fn run(dump: &mut Dump) -> Result<Vec<u8>, String> {
    let mut running = dump.start().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    running.read_to_end(&mut out).map_err(|e| e.to_string())?;
    running.finish()?;
    Ok(out)
}

fn pg_names(pg: &Postgres, databases: DatabaseSelection, account: &str) -> Vec<String> {
    postgresql_databases(&pg.config(databases), account).unwrap()
}

#[test]
fn postgresql_databases_by_owner_and_by_prefix() {
    let Some(pg) = servers::postgres("postgresql_databases_by_owner_and_by_prefix") else {
        return;
    };
    let odd = "alice_it's \"odd\"/ü";
    pg.sql(
        "postgres",
        &format!(
            "CREATE ROLE alice; CREATE ROLE bob;
             CREATE DATABASE alice_shop OWNER alice;
             CREATE DATABASE {} OWNER alice;
             CREATE DATABASE blog OWNER alice;
             CREATE DATABASE bob_x OWNER alice;
             CREATE DATABASE bob OWNER bob;
             CREATE DATABASE alicex OWNER bob;
             CREATE DATABASE alice_template OWNER alice IS_TEMPLATE true;
             CREATE DATABASE alice_closed OWNER alice ALLOW_CONNECTIONS false;",
            postgres::ident(odd)
        ),
    );
    assert_eq!(
        pg_names(pg, Owner, "alice"),
        ["alice_it's \"odd\"/ü", "alice_shop", "blog", "bob_x"]
    );
    assert_eq!(pg_names(pg, Owner, "bob"), ["alicex", "bob"]);
    assert_eq!(
        pg_names(pg, Prefix, "alice"),
        ["alice_it's \"odd\"/ü", "alice_shop"]
    );
    assert_eq!(pg_names(pg, Prefix, "bob"), ["bob", "bob_x"]);
    assert!(pg_names(pg, Owner, "nobody").is_empty());

    let dumps = postgresql_dumps(&pg.config(Prefix), "alice").unwrap();
    let files: Vec<&str> = dumps.iter().map(|d| d.file_name.as_str()).collect();
    assert_eq!(files, ["alice_it's \"odd\"%2Fü.sql", "alice_shop.sql"]);
    assert_eq!(dumps[1].what, "PostgreSQL database alice_shop");
}

/// A regression guard: a bare name holding `=` is a connection string to
/// pg_dump, and an option to mariadb-dump when it begins with `-`.
#[test]
fn a_database_named_like_a_connection_string_or_an_option_is_dumped_as_named() {
    let test = "a_database_named_like_a_connection_string_or_an_option_is_dumped_as_named";
    let Some(pg) = servers::postgres(test) else {
        return;
    };
    let name = "dbname=postgres host=/nonexistent";
    pg.sql(
        "postgres",
        &format!(
            "CREATE ROLE frank; CREATE DATABASE {} OWNER frank",
            postgres::ident(name)
        ),
    );
    pg.sql(name, "CREATE TABLE frank_marker (x int)");
    let mut dumps = postgresql_dumps(&pg.config(Owner), "frank").unwrap();
    assert_eq!(dumps.len(), 1);
    let dump = run(&mut dumps[0]).unwrap();
    assert!(String::from_utf8_lossy(&dump).contains("frank_marker"));

    let Some(my) = servers::mariadb(test) else {
        return;
    };
    let name = "--all-databases";
    my.sql(&format!(
        "CREATE DATABASE {0}; CREATE TABLE {0}.frank_marker (x int);
         CREATE USER frank@localhost; GRANT ALL ON {0}.* TO frank@localhost;",
        mariadb::ident(name)
    ));
    let mut dumps = mysql_dumps(&my.config(Owner), "frank").unwrap();
    assert_eq!(dumps.len(), 1);
    assert_eq!(dumps[0].file_name, "--all-databases.sql");
    let dump = String::from_utf8(run(&mut dumps[0]).unwrap()).unwrap();
    assert!(dump.contains("frank_marker"), "{dump}");
    assert!(!dump.contains("CREATE DATABASE"), "one database, not all");
}

/// Rows of every table of `database`: name, count and an md5 of the rows
/// in a fixed order.
fn pg_fingerprint(pg: &Postgres, database: &str) -> Vec<String> {
    let tables = pg.sql(
        database,
        "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    );
    tables
        .lines()
        .map(|table| {
            let sums = pg.sql(
                database,
                &format!(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) \
                     FROM {table} t"
                ),
            );
            format!("{table}: {}", sums.trim())
        })
        .collect()
}

#[test]
fn postgresql_dumps_load_back_to_the_same_rows_and_repeat_byte_for_byte() {
    let test = "postgresql_dumps_load_back_to_the_same_rows_and_repeat_byte_for_byte";
    let Some(pg) = servers::postgres(test) else {
        return;
    };
    let odd = "carol_it's \"odd\"/ü";
    pg.sql(
        "postgres",
        &format!(
            "CREATE ROLE carol; CREATE DATABASE carol_shop OWNER carol;
             CREATE DATABASE {} OWNER carol;",
            postgres::ident(odd)
        ),
    );
    pg.sql(
        "carol_shop",
        "SET ROLE carol;
         CREATE TABLE product (id serial PRIMARY KEY, name text NOT NULL, price numeric(10,2),
                               photo bytea, added timestamptz DEFAULT '2025-01-02 03:04:05+00');
         INSERT INTO product (name, price, photo)
             SELECT 'product ' || i || ' ü €', i * 1.25, CASE WHEN i % 3 = 0 THEN NULL
                    ELSE decode(md5(i::text), 'hex') END
             FROM generate_series(1, 500) i;
         CREATE TABLE \"order\" (id bigint PRIMARY KEY, product int REFERENCES product,
                                 note text);
         INSERT INTO \"order\" SELECT i, 1 + i % 500, E'tab\\tnewline\\n''quote' FROM generate_series(1, 300) i;
         CREATE INDEX ON product (name);
         CREATE VIEW cheap AS SELECT * FROM product WHERE price < 10;
         CREATE FUNCTION total() RETURNS numeric LANGUAGE sql AS 'SELECT sum(price) FROM product';",
    );
    pg.sql(
        odd,
        "SET ROLE carol; CREATE TABLE t (k text); INSERT INTO t VALUES ('x'), (NULL);",
    );

    let mut dumps = postgresql_dumps(&pg.config(Owner), "carol").unwrap();
    assert_eq!(dumps.len(), 2);
    let first: Vec<Vec<u8>> = dumps.iter_mut().map(|d| run(d).unwrap()).collect();
    // A second later: a timestamp in the output would show.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut again = postgresql_dumps(&pg.config(Owner), "carol").unwrap();
    for ((dump, bytes), repeat) in dumps.iter().zip(&first).zip(again.iter_mut()) {
        assert!(
            run(repeat).unwrap() == *bytes,
            "{}: two dumps differ",
            dump.what
        );
    }

    for (i, (database, dump)) in ["carol_it's \"odd\"/ü", "carol_shop"]
        .iter()
        .zip(&first)
        .enumerate()
    {
        let fresh = format!("carol_restored_{i}");
        pg.sql("postgres", &format!("CREATE DATABASE {fresh} OWNER carol"));
        pg.load(&fresh, dump);
        let expected = pg_fingerprint(pg, database);
        assert!(!expected.is_empty());
        assert_eq!(pg_fingerprint(pg, &fresh), expected, "{database}");
    }
    let total = |db: &str| pg.sql(db, "SELECT total()");
    assert_eq!(total("carol_restored_1"), total("carol_shop"));
}

#[test]
fn a_postgresql_dump_that_fails_names_its_database_and_the_others_still_dump() {
    let test = "a_postgresql_dump_that_fails_names_its_database_and_the_others_still_dump";
    let Some(pg) = servers::postgres(test) else {
        return;
    };
    // dave_b is dropped between the listing and its dump; in dave_c the
    // dump role (not a superuser) loses one table.
    pg.sql(
        "postgres",
        "CREATE ROLE dave; CREATE ROLE dumper LOGIN;
         CREATE DATABASE dave_a OWNER dave; CREATE DATABASE dave_b OWNER dave;
         CREATE DATABASE dave_c OWNER dave;",
    );
    for db in ["dave_a", "dave_c"] {
        pg.sql(
            db,
            "SET ROLE dave; CREATE TABLE open (x int); CREATE TABLE secret (x int);
             GRANT SELECT ON open, secret TO dumper;",
        );
    }
    pg.sql(
        "dave_c",
        "SET ROLE dave; REVOKE SELECT ON secret FROM dumper;",
    );
    let mut cfg = pg.config(Prefix);
    cfg.user = "dumper".into();
    let mut dumps = postgresql_dumps(&cfg, "dave").unwrap();
    pg.sql("postgres", "DROP DATABASE dave_b");

    let results: Vec<Result<Vec<u8>, String>> = dumps.iter_mut().map(run).collect();
    let a = results[0].as_ref().unwrap();
    assert!(String::from_utf8_lossy(a).contains("CREATE TABLE \"public\".\"secret\""));
    let b = results[1].as_ref().unwrap_err();
    assert!(b.starts_with("PostgreSQL database dave_b: "), "{b}");
    assert!(b.contains("pg_dump") && b.contains("does not exist"), "{b}");
    let c = results[2].as_ref().unwrap_err();
    assert!(c.starts_with("PostgreSQL database dave_c: "), "{c}");
    assert!(c.contains("permission denied for table secret"), "{c}");
}

fn unavailable(err: Error) -> String {
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    err.to_string()
}

#[test]
fn an_unreachable_postgresql_is_a_clear_error() {
    let Some(pg) = servers::postgres("an_unreachable_postgresql_is_a_clear_error") else {
        return;
    };
    let nowhere = tempfile::tempdir().unwrap();
    let cfg = PostgresqlConfig {
        host: nowhere.path().to_str().unwrap().into(),
        ..pg.config(Owner)
    };
    let err = unavailable(postgresql_dumps(&cfg, "alice").err().unwrap());
    let socket = format!("PostgreSQL at {}/.s.PGSQL.{}", cfg.host, cfg.port);
    assert!(err.starts_with(&socket), "{err}");
    assert!(err.contains("psql: error:"), "{err}");
    // The right folder, the wrong port: no such socket either.
    let cfg = PostgresqlConfig {
        port: pg.port + 1000,
        ..pg.config(Owner)
    };
    let err = unavailable(postgresql_databases(&cfg, "alice").err().unwrap());
    assert!(
        err.contains(&format!(".s.PGSQL.{}", pg.port + 1000)),
        "{err}"
    );
    // A role that does not exist: the server says so.
    let cfg = PostgresqlConfig {
        user: "nosuchrole".into(),
        ..pg.config(Owner)
    };
    let err = unavailable(postgresql_databases(&cfg, "alice").err().unwrap());
    assert!(err.contains("\"nosuchrole\" does not exist"), "{err}");
}

fn my_names(my: &Mariadb, databases: DatabaseSelection, account: &str) -> Vec<String> {
    mysql_databases(&my.config(databases), account).unwrap()
}

#[test]
fn mariadb_databases_by_grants_and_by_prefix() {
    let Some(my) = servers::mariadb("mariadb_databases_by_grants_and_by_prefix") else {
        return;
    };
    let odd = mariadb::ident("alice_it's a/b ü");
    my.sql(&format!(
        "CREATE DATABASE alice_shop; CREATE DATABASE {odd}; CREATE DATABASE legacy;
         CREATE DATABASE bob; CREATE DATABASE bob_blog; CREATE DATABASE bob_wiki;
         CREATE DATABASE bobcat; CREATE DATABASE aliceblog;
         CREATE TABLE alice_shop.t (x int);
         CREATE USER alice@localhost; CREATE USER 'alice'@'%'; CREATE USER bob@localhost;
         CREATE USER 'alice'@'10.0.0.1';
         GRANT ALL ON alice_shop.* TO alice@localhost;
         GRANT SELECT ON legacy.* TO 'alice'@'%';
         GRANT ALL ON *.* TO 'alice'@'10.0.0.1';
         GRANT ALL ON `bob\\_%`.* TO bob@localhost;
         GRANT ALL ON bob.* TO bob@localhost;
         GRANT SELECT ON alice_shop.t TO bob@localhost;"
    ));
    // Database-level grants, at any host; not the global one, not a
    // table's.
    assert_eq!(my_names(my, Owner, "alice"), ["alice_shop", "legacy"]);
    // `bob\_%` covers bob_blog and bob_wiki, not bobcat.
    assert_eq!(my_names(my, Owner, "bob"), ["bob", "bob_blog", "bob_wiki"]);
    assert_eq!(
        my_names(my, Prefix, "alice"),
        ["alice_it's a/b ü", "alice_shop"]
    );
    assert_eq!(my_names(my, Prefix, "bob"), ["bob", "bob_blog", "bob_wiki"]);
    // The server's own databases are nobody's.
    assert!(my_names(my, Prefix, "mysql").is_empty());
    assert!(my_names(my, Prefix, "sys").is_empty());

    let dumps = mysql_dumps(&my.config(Prefix), "alice").unwrap();
    let files: Vec<&str> = dumps.iter().map(|d| d.file_name.as_str()).collect();
    assert_eq!(files, ["alice_it's a%2Fb ü.sql", "alice_shop.sql"]);
    assert_eq!(dumps[1].what, "MariaDB database alice_shop");
}

/// Every table of `database`: name, row count and `CHECKSUM TABLE`.
fn my_fingerprint(my: &Mariadb, database: &str) -> Vec<String> {
    let tables = my.sql(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} ORDER BY 1",
        mariadb::literal(database)
    ));
    tables
        .lines()
        .map(|table| {
            let name = format!("{}.{}", mariadb::ident(database), mariadb::ident(table));
            let count = my.sql(&format!("SELECT COUNT(*) FROM {name}"));
            let checksum = my.sql(&format!("CHECKSUM TABLE {name}"));
            let checksum = checksum.trim().rsplit('\t').next().unwrap().to_string();
            format!("{table}: {} {checksum}", count.trim())
        })
        .collect()
}

#[test]
fn mariadb_dumps_load_back_to_the_same_rows_and_repeat_byte_for_byte() {
    let test = "mariadb_dumps_load_back_to_the_same_rows_and_repeat_byte_for_byte";
    let Some(my) = servers::mariadb(test) else {
        return;
    };
    let odd = "carol_it's a/b ü";
    my.sql(&format!(
        "CREATE DATABASE carol_shop; CREATE DATABASE {0};
         CREATE TABLE {0}.t (k text); INSERT INTO {0}.t VALUES ('x'), (NULL);
         USE carol_shop;
         CREATE TABLE product (id int AUTO_INCREMENT PRIMARY KEY, name varchar(100) NOT NULL,
                               price decimal(10,2), photo blob, KEY (name));
         INSERT INTO product (name, price, photo)
             SELECT CONCAT('product ', seq, ' ü €'), seq * 1.25,
                    IF(seq % 3 = 0, NULL, UNHEX(MD5(seq))) FROM seq_1_to_500;
         CREATE TABLE `order` (id bigint PRIMARY KEY, product int, note text);
         INSERT INTO `order` SELECT seq, 1 + seq % 500, 'tab\\tnewline\\n\\'quote'
             FROM seq_1_to_300;
         CREATE TABLE log (n int) ENGINE=MyISAM; INSERT INTO log VALUES (1), (2);
         CREATE TRIGGER logged AFTER INSERT ON `order` FOR EACH ROW INSERT INTO log VALUES (NEW.id);
         CREATE PROCEDURE total() SELECT SUM(price) FROM product;
         CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO DELETE FROM log;",
        mariadb::ident(odd)
    ));

    let mut dumps = mysql_dumps(&my.config(Prefix), "carol").unwrap();
    assert_eq!(dumps.len(), 2);
    let first: Vec<Vec<u8>> = dumps.iter_mut().map(|d| run(d).unwrap()).collect();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut again = mysql_dumps(&my.config(Prefix), "carol").unwrap();
    for ((dump, bytes), repeat) in dumps.iter().zip(&first).zip(again.iter_mut()) {
        assert!(
            run(repeat).unwrap() == *bytes,
            "{}: two dumps differ",
            dump.what
        );
    }

    for (i, (database, dump)) in [odd, "carol_shop"].iter().zip(&first).enumerate() {
        let fresh = format!("carol_restored_{i}");
        my.sql(&format!("CREATE DATABASE {fresh}"));
        my.load(&fresh, dump);
        let expected = my_fingerprint(my, database);
        assert!(!expected.is_empty());
        assert_eq!(my_fingerprint(my, &fresh), expected, "{database}");
    }
    // Routines, events and triggers came along.
    let objects = |db: &str| {
        my.sql(&format!(
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{db}'
             UNION ALL SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{db}'
             UNION ALL SELECT COUNT(*) FROM information_schema.TRIGGERS
                 WHERE TRIGGER_SCHEMA = '{db}'"
        ))
    };
    assert_eq!(objects("carol_restored_1"), "1\n1\n1\n");
}

#[test]
fn a_mariadb_dump_that_fails_names_its_database_and_the_others_still_dump() {
    let test = "a_mariadb_dump_that_fails_names_its_database_and_the_others_still_dump";
    let Some(my) = servers::mariadb(test) else {
        return;
    };
    my.sql(
        "CREATE DATABASE dave_a; CREATE DATABASE dave_b; CREATE DATABASE dave_c;
         CREATE TABLE dave_a.t (x int); CREATE TABLE dave_c.t (x int);",
    );
    let mut dumps = mysql_dumps(&my.config(Prefix), "dave").unwrap();
    my.sql("DROP DATABASE dave_b");
    let results: Vec<Result<Vec<u8>, String>> = dumps.iter_mut().map(run).collect();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let b = results[1].as_ref().unwrap_err();
    assert!(b.starts_with("MariaDB database dave_b: "), "{b}");
    assert!(b.contains("Unknown database 'dave_b'"), "{b}");
}

#[test]
fn an_unreachable_mariadb_is_a_clear_error() {
    let Some(my) = servers::mariadb("an_unreachable_mariadb_is_a_clear_error") else {
        return;
    };
    let nowhere = tempfile::tempdir().unwrap();
    let cfg = MysqlConfig {
        socket: nowhere.path().join("mysqld.sock"),
        ..my.config(Prefix)
    };
    let err = unavailable(mysql_dumps(&cfg, "alice").err().unwrap());
    let socket = cfg.socket.display().to_string();
    assert!(err.starts_with(&format!("MariaDB at {socket}")), "{err}");
    assert!(err.contains("Can't connect"), "{err}");
    // A user that does not exist: the server says so.
    let cfg = MysqlConfig {
        user: "nosuchuser".into(),
        ..my.config(Prefix)
    };
    let err = unavailable(mysql_databases(&cfg, "alice").err().unwrap());
    assert!(err.contains("Access denied for user 'nosuchuser'"), "{err}");
}
