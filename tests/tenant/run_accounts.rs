//! `snapfs run` over real users: the uid range selects the users that have
//! a home, each snapshot belongs to its user (the root folder and the
//! made-up folders), and a user without a home is skipped with a note.

use crate::support::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn the_uid_range_backs_up_every_user_with_a_home() {
    if !can_run("the_uid_range_backs_up_every_user_with_a_home") {
        return;
    }
    let users: Vec<TenantUser> = ["snapfs-run-a", "snapfs-run-b", "snapfs-run-c"]
        .iter()
        .map(|n| TenantUser::create(n))
        .collect();
    let tmp = shared_tempdir();
    for user in &users[..2] {
        let home = tmp.path().join("home").join(&user.name);
        fs::create_dir_all(home.join("www")).unwrap();
        fs::write(home.join("www/index.html"), &user.name).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o711)).unwrap();
        user.give(&home);
    }
    // snapfs-run-c has no home: no hosting account.
    let (min, max) = (
        users.iter().map(|u| u.uid).min().unwrap(),
        users.iter().map(|u| u.uid).max().unwrap(),
    );
    let config = tmp.path().join("snapfs.toml");
    fs::write(
        &config,
        format!(
            "repository = \"{root}/repo\"\n[accounts]\nuid_min = {min}\nuid_max = {max}\n\
             [files]\npath = \"{root}/home/{{account}}\"\n",
            root = tmp.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(SNAPFS)
        .args(["run", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("skipped snapfs-run-c:"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let backed_up: Vec<&str> = report["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    // Other tests' users may fall in the range meanwhile; without a home
    // they are skipped too.
    assert!(backed_up.contains(&"snapfs-run-a") && backed_up.contains(&"snapfs-run-b"));
    assert!(!backed_up.contains(&"snapfs-run-c"), "{report}");

    // Each day folder belongs to its user, 0700; files/ is the home, 0711.
    for user in &users[..2] {
        let long = Command::new(SNAPFS)
            .arg("--repo")
            .arg(tmp.path().join("repo"))
            .args(["ls", "-l", "--account", &user.name, "latest"])
            .output()
            .unwrap();
        let long = String::from_utf8_lossy(&long.stdout);
        assert!(long.starts_with("drwx--x--x"), "{long}");
        assert!(long.contains(&user.name), "{long}");
        let snapshots = Command::new(SNAPFS)
            .arg("--repo")
            .arg(tmp.path().join("repo"))
            .args(["snapshots", "--json", "--account", &user.name])
            .output()
            .unwrap();
        let snapshots: serde_json::Value = serde_json::from_slice(&snapshots.stdout).unwrap();
        assert_eq!(snapshots.as_array().unwrap().len(), 1);
    }
}

/// The nightly picture end to end: `snapfs run` with a real PostgreSQL,
/// one mount per account as deployed, and each user reading their own
/// dump through it (which loads back to the same rows), never another's.
#[test]
fn each_user_reads_their_own_dump_through_the_mount_and_no_other() {
    let test = "each_user_reads_their_own_dump_through_the_mount_and_no_other";
    if !fuse_available(test) {
        return;
    }
    let Some(pg) = crate::servers::postgres(test) else {
        return;
    };
    let users: Vec<TenantUser> = ["snapfs-dump-a", "snapfs-dump-b"]
        .iter()
        .map(|n| TenantUser::create(n))
        .collect();
    let tmp = shared_tempdir();
    for user in &users {
        let home = tmp.path().join("home").join(&user.name);
        fs::create_dir_all(&home).unwrap();
        user.give(&home);
        let role = crate::servers::postgres::ident(&user.name);
        pg.sql(
            "postgres",
            &format!("CREATE ROLE {role}; CREATE DATABASE {role} OWNER {role}"),
        );
        pg.sql(
            &user.name,
            &format!(
                "SET ROLE {role}; CREATE TABLE t (id int, v text);
                 INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 300) g;"
            ),
        );
    }
    let config = tmp.path().join("snapfs.toml");
    let names: Vec<String> = users.iter().map(|u| format!("\"{}\"", u.name)).collect();
    fs::write(
        &config,
        format!(
            "repository = \"{root}/repo\"\n[accounts]\nnames = [{names}]\n\
             [files]\npath = \"{root}/home/{{account}}\"\n{pg}",
            root = tmp.path().display(),
            names = names.join(", "),
            pg = pg.toml("owner"),
        ),
    )
    .unwrap();
    let out = Command::new(SNAPFS)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let mut mounts = Vec::new();
    for user in &users {
        let at = tmp.path().join("mnt").join(&user.name);
        run(Command::new(SNAPFS)
            .arg("--repo")
            .arg(tmp.path().join("repo"))
            .args(["mount", "--daemon", "--allow-other", "--mkdir", "--account"])
            .arg(&user.name)
            .arg(&at));
        mounts.push(Unmount(at));
    }
    let dump_of = |owner: &TenantUser| {
        tmp.path()
            .join("mnt")
            .join(&owner.name)
            .join("latest/postgresql")
            .join(format!("{}.sql", owner.name))
    };
    for (user, other) in [(&users[0], &users[1]), (&users[1], &users[0])] {
        // Their own: readable through the mount, and it loads back.
        let own = user.command("cat").arg(dump_of(user)).output().unwrap();
        assert!(own.status.success(), "{own:?}");
        let copy = format!("{}_copy", user.name.replace('-', "_"));
        pg.sql("postgres", &format!("CREATE DATABASE {copy}"));
        pg.load(&copy, &own.stdout);
        let sum = "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t";
        assert_eq!(pg.sql(&copy, sum), pg.sql(&user.name, sum));
        // Another's: refused.
        let theirs = user.command("cat").arg(dump_of(other)).output().unwrap();
        assert!(
            String::from_utf8_lossy(&theirs.stderr).contains("Permission denied"),
            "{} read {}'s dump: {theirs:?}",
            user.name,
            other.name
        );
    }
}
