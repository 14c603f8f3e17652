//! `forget` never removes what nobody asked it to: every policy that keeps
//! nothing is refused with nothing removed; named snapshots and a departed
//! account's `--all` remove exactly those.

use crate::support::*;
use std::fs;

/// Two accounts, three days each.
fn two_accounts() -> TestRepo {
    let t = TestRepo::new();
    let source = t.path("home");
    fs::create_dir_all(&source).unwrap();
    for day in 1..=3 {
        fs::write(source.join("f"), format!("day {day}")).unwrap();
        for account in ["alice", "bob"] {
            t.ok(&[
                "backup",
                "--account",
                account,
                "--time",
                &format!("2026-11-0{day} 02:00:00"),
                source.to_str().unwrap(),
            ]);
        }
    }
    t
}

fn ids_of(t: &TestRepo, account: &str) -> Vec<String> {
    t.snapshots()
        .iter()
        .filter(|s| s["account"] == account)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_policy_that_keeps_nothing_is_refused() {
    let t = two_accounts();
    let refused: &[&[&str]] = &[
        &["--keep-last", "0"],
        &["--keep-daily", "0"],
        &["--keep-weekly", "0"],
        &["--keep-monthly", "0"],
        &["--keep-within", "0d"],
        &["--keep-last", "0", "--keep-daily", "0"],
        &["--keep-daily", "0", "--keep-weekly", "2"],
        &["--account", "alice", "--keep-last", "0"],
    ];
    for policy in refused {
        for dry_run in [false, true] {
            let mut args = vec!["forget"];
            args.extend_from_slice(policy);
            if dry_run {
                args.push("--dry-run");
            }
            let out = t.run(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_ne!(out.status.code(), Some(0), "{args:?} was not refused");
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            assert_eq!(t.snapshots().len(), 6, "{args:?} removed something");
        }
    }
    // --all needs an account; named snapshots cannot be every snapshot.
    assert_eq!(t.run(&["forget", "--all"]).status.code(), Some(2));
    let mut every = vec!["forget".to_string()];
    every.extend(
        t.snapshots()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string()),
    );
    let every: Vec<&str> = every.iter().map(String::as_str).collect();
    let out = t.run(&every);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("every snapshot"));
    assert_eq!(t.snapshots().len(), 6);
}

#[test]
fn keep_within_forever_keeps_everything_and_too_long_is_an_error() {
    let t = two_accounts();
    t.ok(&["forget", "--keep-within", "99999999d"]);
    assert_eq!(t.snapshots().len(), 6);
    let out = t.run(&["forget", "--keep-within", "999999999999999d"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("too long"));
    assert_eq!(t.snapshots().len(), 6);
}

#[test]
fn named_snapshots_and_a_departed_account_go_exactly() {
    let t = two_accounts();
    let alice = ids_of(&t, "alice");
    let bob = ids_of(&t, "bob");

    // One snapshot by id prefix: exactly that one.
    t.ok(&["forget", &alice[1][..10]]);
    assert_eq!(
        ids_of(&t, "alice"),
        vec![alice[0].clone(), alice[2].clone()]
    );
    assert_eq!(ids_of(&t, "bob"), bob);

    // Bob left: his backups, all of them, and nobody else's.
    let dry = t.ok(&["forget", "--account", "bob", "--all", "--dry-run"]);
    assert_eq!(dry.matches("would remove").count(), 4, "{dry}");
    assert_eq!(ids_of(&t, "bob").len(), 3);
    let out = t.ok(&["forget", "--account", "bob", "--all", "--json"]);
    let groups: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(groups[0]["remove"].as_array().unwrap().len(), 3);
    assert!(ids_of(&t, "bob").is_empty());
    assert_eq!(ids_of(&t, "alice").len(), 2);
    t.ok(&["check"]);
}
