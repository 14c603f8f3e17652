//! `snapfs run`: every account of a host from one configuration, each into
//! one snapshot with `files/` and `mails/` (the database dumps with real
//! servers are in `dumps`), one failure costing only itself.

use crate::support::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A host in a temp folder: homes, maildirs, a config, a repository.
pub struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    pub fn new(accounts: &[&str], extra: &str) -> Host {
        let host = Host {
            dir: tempfile::tempdir().unwrap(),
        };
        let names: Vec<String> = accounts.iter().map(|a| format!("\"{a}\"")).collect();
        let config = format!(
            "repository = \"{root}/repo\"\nmetrics_file = \"{root}/snapfs.prom\"\n\
             [accounts]\nnames = [{names}]\n\
             [files]\npath = \"{root}/home/{{account}}\"\nexclude = [\"{root}/home/*/.cache\"]\n\
             [mail]\npath = \"{root}/mail/{{account}}\"\n{extra}",
            root = host.root().display(),
            names = names.join(", ")
        );
        fs::write(host.config(), config).unwrap();
        host
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.root().join("snapfs.toml")
    }

    pub fn repo(&self) -> PathBuf {
        self.root().join("repo")
    }

    pub fn home(&self, account: &str) -> PathBuf {
        self.root().join("home").join(account)
    }

    pub fn maildir(&self, account: &str) -> PathBuf {
        self.root().join("mail").join(account)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_snapfs"))
            .arg("run")
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env("TZ", "UTC")
            .output()
            .unwrap()
    }

    pub fn run_json(&self, args: &[&str]) -> (Option<i32>, serde_json::Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        (out.status.code(), value)
    }

    pub fn snapfs(&self, args: &[&str]) -> String {
        snapfs_ok(&self.repo(), args)
    }
}

pub fn make_home(home: &Path, seed: u64) {
    fs::create_dir_all(home.join("www")).unwrap();
    fs::create_dir_all(home.join(".cache")).unwrap();
    fs::write(home.join("www/index.html"), random_bytes(30_000, seed)).unwrap();
    fs::write(home.join(".cache/junk"), b"cache").unwrap();
}

pub fn make_maildir(maildir: &Path, messages: usize) {
    for folder in ["cur", "new", "tmp"] {
        fs::create_dir_all(maildir.join(folder)).unwrap();
    }
    for n in 0..messages {
        let name = format!("17000{n:05}.M{n}P1.host");
        fs::write(
            maildir.join("new").join(name),
            random_bytes(2_000, n as u64),
        )
        .unwrap();
    }
}

pub fn account<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[test]
fn each_account_gets_its_files_and_mail_and_a_missing_home_fails_alone() {
    let host = Host::new(&["alice", "bob", "carol"], "");
    make_home(&host.home("alice"), 1);
    make_maildir(&host.maildir("alice"), 30);
    make_home(&host.home("bob"), 2);
    // carol: no home, no mail: nothing to back up.
    let (code, report) = host.run_json(&["--time", "2026-11-24 02:00:00"]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(account(&report, "alice")["status"], "ok");
    assert_eq!(account(&report, "alice")["mail"], true);
    assert_eq!(account(&report, "bob")["status"], "ok");
    assert_eq!(account(&report, "bob")["mail"], false);
    let carol = account(&report, "carol");
    assert_eq!(carol["status"], "failed");
    assert!(
        carol["error"].as_str().unwrap().contains("does not exist"),
        "{carol}"
    );

    // Each snapshot: its own account, files/ (without the excluded cache)
    // and mails/ where there is mail.
    let alice = host.snapfs(&["ls", "-R", "--account", "alice", "latest"]);
    assert!(alice.contains("files/www/index.html"), "{alice}");
    assert!(alice.contains("mails/new/1700000029.M29P1.host"), "{alice}");
    assert!(!alice.contains(".cache/junk"), "{alice}");
    let bob = host.snapfs(&["ls", "--account", "bob", "latest"]);
    assert_eq!(bob.lines().collect::<Vec<_>>(), ["files"], "{bob}");
    let restored = host.root().join("restored");
    host.snapfs(&[
        "restore",
        "--account",
        "alice",
        "latest:files",
        "--target",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read(restored.join("www/index.html")).unwrap(),
        fs::read(host.home("alice").join("www/index.html")).unwrap()
    );

    // The metrics file, for node_exporter's textfile collector.
    let metrics = fs::read_to_string(host.root().join("snapfs.prom")).unwrap();
    assert!(
        metrics.contains("snapfs_account_errors{account=\"carol\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("snapfs_run_accounts_failed 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE snapfs_account_bytes_added gauge"),
        "{metrics}"
    );
}

#[test]
fn a_second_night_with_nothing_changed_stores_almost_nothing() {
    let host = Host::new(&["alice"], "");
    make_home(&host.home("alice"), 1);
    make_maildir(&host.maildir("alice"), 50);
    let (code, first) = host.run_json(&["--time", "2026-11-24 02:00:00"]);
    assert_eq!(code, Some(0), "{first}");
    let before = dir_size(&host.repo().join("data"));
    let (code, second) = host.run_json(&["--time", "2026-11-25 02:00:00"]);
    assert_eq!(code, Some(0), "{second}");
    let alice = account(&second, "alice");
    assert_eq!(alice["files_read"], 0, "{alice}");
    let grown = dir_size(&host.repo().join("data")) - before;
    assert!(grown < 16 * 1024, "the repository grew by {grown} bytes");
    // Overnight the mail server marks 5 messages read: only new mail is read.
    for n in 0..5 {
        let name = format!("17000{n:05}.M{n}P1.host");
        fs::rename(
            host.maildir("alice").join("new").join(&name),
            host.maildir("alice")
                .join("cur")
                .join(format!("{name}:2,S")),
        )
        .unwrap();
    }
    fs::write(
        host.maildir("alice").join("new/1800000000.M1P1.host"),
        b"hello",
    )
    .unwrap();
    let (_, third) = host.run_json(&["--time", "2026-11-26 02:00:00"]);
    assert_eq!(account(&third, "alice")["files_read"], 1, "{third}");
}

#[test]
fn only_the_accounts_asked_for_and_clear_errors_for_bad_configurations() {
    let host = Host::new(&["alice", "bob"], "");
    make_home(&host.home("alice"), 1);
    make_home(&host.home("bob"), 2);
    let (code, report) = host.run_json(&["--account", "bob"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["accounts"].as_array().unwrap().len(), 1);
    assert_eq!(report["accounts"][0]["account"], "bob");

    // An unknown key, named with its line; a missing file: exit 1, no panic.
    fs::write(
        host.config(),
        "repository = \"/r\"\n[files]\npaht = \"/home/{account}\"\n",
    )
    .unwrap();
    let out = host.run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("paht") && stderr.contains("line 3"),
        "{stderr}"
    );
    fs::remove_file(host.config()).unwrap();
    let out = host.run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no configuration at"), "{stderr}");
}

/// SIGKILL a run part-way, at several points: the repository checks clean,
/// the accounts already done keep their snapshots, and a rerun completes.
#[test]
fn a_run_killed_part_way_is_completed_by_the_next() {
    let names: Vec<String> = (0..6).map(|n| format!("user{n}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let host = Host::new(&refs, "");
    for (n, name) in names.iter().enumerate() {
        let home = host.home(name);
        fs::create_dir_all(&home).unwrap();
        for f in 0..10 {
            let bytes = random_bytes(200_000, (n * 100 + f) as u64);
            fs::write(home.join(format!("f{f}")), bytes).unwrap();
        }
    }
    // Time a whole run (into another repository) to spread the kills.
    let probe = Host::new(&refs, "");
    fs::rename(host.root().join("home"), probe.root().join("home")).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(probe.run(&["--jobs", "1"]).status.code(), Some(0));
    let full = started.elapsed();
    fs::rename(probe.root().join("home"), host.root().join("home")).unwrap();

    // The repository exists before the first kill: a kill during its
    // creation is `init`'s business (crash.rs), not the run's.
    snapfs_ok(&host.repo(), &["init"]);
    let mut killed = 0;
    for step in 1..5u32 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_snapfs"))
            .arg("run")
            .arg("--config")
            .arg(host.config())
            .args(["--jobs", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(step as f64 / 5.0));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let check = snapfs(&host.repo(), &["check", "--read-data"]);
        assert_eq!(check.status.code(), Some(0), "after kill {step}: {check:?}");
    }
    assert!(killed >= 2, "only {killed} runs were killed part-way");
    let (code, report) = host.run_json(&[]);
    assert_eq!(code, Some(0), "{report}");
    for name in &names {
        let listing = host.snapfs(&["ls", "-R", "--account", name, "latest"]);
        assert!(listing.contains("files/f9"), "{name}: {listing}");
    }
    host.snapfs(&["check", "--read-data"]);
}
