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
