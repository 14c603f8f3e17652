//! Repositories on S3, against a real SeaweedFS started by the tests
//! (`tests/servers/seaweedfs.rs`): the backend contract, create-if-absent
//! under a race, every command through the CLI, and the failures an
//! operator meets (server down, wrong credentials, no bucket, a server
//! killed in the middle of a backup).

use std::process::{Command, Output};

use snapfs::repository::backend::contract::{backend_contract, one_creator_wins};
use snapfs::repository::backend::{Backend, FileType};

use crate::servers::{seaweedfs, Seaweed};
use crate::support::*;

/// A prefix no other test (or earlier run on a kept server) uses.
fn prefix(test: &str) -> String {
    format!("{test}-{}-{}", std::process::id(), rand_suffix())
}

/// `snapfs` with `location` as its repository and the server's
/// credentials in the environment.
fn s3(server: &Seaweed, location: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SNAPFS_REPO", location)
        .envs(server.env())
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

fn s3_ok(server: &Seaweed, location: &str, args: &[&str]) -> String {
    let out = s3(server, location, args);
    assert!(
        out.status.success(),
        "snapfs {args:?} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every object under a location, as the store lists it.
fn objects(server: &Seaweed, location: &str) -> Vec<String> {
    let backend = server.backend_at(location);
    [
        FileType::Config,
        FileType::Pack,
        FileType::Index,
        FileType::Snapshot,
        FileType::Lock,
    ]
    .iter()
    .flat_map(|kind| backend.list(*kind).unwrap())
    .map(|(name, _)| name)
    .collect()
}

#[test]
fn s3_backend_keeps_the_contract() {
    let Some(server) = seaweedfs("s3_backend_keeps_the_contract") else {
        return;
    };
    backend_contract(&server.backend_at(&server.location(&prefix("contract"))));
}

#[test]
fn the_disk_cache_in_front_of_s3_keeps_the_contract() {
    let Some(server) = seaweedfs("the_disk_cache_in_front_of_s3_keeps_the_contract") else {
        return;
    };
    let remote = server.backend_at(&server.location(&prefix("cached-contract")));
    let cache = tempfile::tempdir().unwrap();
    let cached = snapfs::repository::backend::cached::CachedBackend::new(
        std::sync::Arc::new(remote),
        cache.path(),
        1 << 20,
    )
    .unwrap();
    backend_contract(&cached);
}

#[test]
fn s3_backend_keeps_the_contract_at_the_top_of_a_bucket_too() {
    let Some(server) = seaweedfs("s3_backend_keeps_the_contract_at_the_top") else {
        return;
    };
    // A prefix-less location in a bucket of its own is the other key
    // mapping; the shared bucket has other tests' prefixes in it.
    let backend = server.backend_at(&server.location(""));
    assert!(
        backend.occupant().unwrap().is_some(),
        "other tests' objects"
    );
    backend.create_if_absent().unwrap();
}

#[test]
fn of_racing_creators_of_one_lock_exactly_one_wins() {
    let Some(server) = seaweedfs("of_racing_creators_of_one_lock_exactly_one_wins") else {
        return;
    };
    let backend = server.backend_at(&server.location(&prefix("race")));
    assert_eq!(
        backend.create_if_absent().unwrap(),
        snapfs::repository::backend::CreateIfAbsent::Atomic,
        "SeaweedFS honours If-None-Match"
    );
    one_creator_wins(&backend, 10);
}

#[test]
fn listings_page_through_every_object() {
    let Some(server) = seaweedfs("listings_page_through_every_object") else {
        return;
    };
    let backend = server
        .backend_at(&server.location(&prefix("pages")))
        .with_page_size(7);
    let mut written = Vec::new();
    for n in 0..24u8 {
        let name = format!("{n:02x}{}", "0".repeat(62));
        backend.write(FileType::Pack, &name, &[n; 3]).unwrap();
        written.push((name, 3));
    }
    for n in 0..9 {
        backend
            .write(FileType::Snapshot, &format!("acct{}/{n}", n % 2), b"s")
            .unwrap();
    }
    let mut packs = backend.list(FileType::Pack).unwrap();
    packs.sort();
    assert_eq!(packs, written);
    assert_eq!(backend.list(FileType::Snapshot).unwrap().len(), 9);
    assert_eq!(
        backend
            .list_folder(FileType::Snapshot, "acct0")
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn of_two_inits_of_one_location_one_wins() {
    let Some(server) = seaweedfs("of_two_inits_of_one_location_one_wins") else {
        return;
    };
    for _ in 0..3 {
        let location = server.location(&prefix("inits"));
        let outs: Vec<Output> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..2)
                .map(|_| s.spawn(|| s3(server, &location, &["init", "--json"])))
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let won: Vec<&Output> = outs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(
            won.len(),
            1,
            "{:?}",
            outs.iter().map(stderr).collect::<Vec<_>>()
        );
        let lost = outs.iter().find(|o| !o.status.success()).unwrap();
        assert_eq!(lost.status.code(), Some(1));
        let why = stderr(lost);
        assert!(
            why.contains("already holds a snapfs repository") || why.contains("is not empty"),
            "{why}"
        );
        // The repository is the winner's.
        let json: serde_json::Value = serde_json::from_slice(&won[0].stdout).unwrap();
        assert_eq!(json["conditional_writes"], true);
        let config = server
            .backend_at(&location)
            .read(FileType::Config, "config")
            .unwrap();
        let config = snapfs::repository::config::Config::decode(&config).unwrap();
        assert_eq!(json["id"], config.id.to_hex());
        s3_ok(server, &location, &["check"]);
    }
}

#[test]
fn every_command_round_trips_on_s3() {
    let Some(server) = seaweedfs("every_command_round_trips_on_s3") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let location = server.location(&prefix("roundtrip"));
    let init = s3_ok(
        server,
        &location,
        &[
            "init",
            "--chunk-sizes",
            "1KiB/4KiB/16KiB",
            "--pack-size",
            "64KiB",
        ],
    );
    assert!(init.contains(&format!("at {location}")), "{init}");
    assert!(init.contains("honoured by the server"), "{init}");

    let source = tmp.path().join("home");
    make_rich_tree(&source);
    let backup = |account: &str, time: &str| {
        let out = s3_ok(
            server,
            &location,
            &[
                "backup",
                "--json",
                "--account",
                account,
                "--time",
                time,
                source.to_str().unwrap(),
            ],
        );
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        json["id"].as_str().unwrap().to_string()
    };
    let first = backup("alice", "2026-11-23 02:00:00");
    std::fs::write(source.join("new-file"), random_bytes(50_000, 7)).unwrap();
    let second = backup("alice", "2026-11-24 02:00:00");
    backup("bob", "2026-11-24 03:00:00");
    // Several packs: the multi-pack paths ran.
    let packs = server.backend_at(&location).list(FileType::Pack).unwrap();
    assert!(packs.len() > 2, "{packs:?}");

    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&s3_ok(server, &location, &["snapshots", "--json"])).unwrap();
    assert_eq!(listed.len(), 3);
    let alice: Vec<serde_json::Value> = serde_json::from_str(&s3_ok(
        server,
        &location,
        &["snapshots", "--json", "--account", "alice"],
    ))
    .unwrap();
    assert_eq!(alice.len(), 2);
    assert_eq!(alice[1]["parent"], first.as_str());

    let ls = s3_ok(server, &location, &["ls", "--account", "alice", "latest"]);
    assert!(ls.lines().any(|l| l == "new-file"), "{ls}");

    let target = tmp.path().join("restored");
    s3_ok(
        server,
        &location,
        &[
            "restore",
            "--account",
            "alice",
            &second,
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_same_tree(&source, &target);

    let check = s3_ok(server, &location, &["check", "--read-data"]);
    assert!(check.contains("no errors"), "{check}");

    s3_ok(
        server,
        &location,
        &["forget", "--account", "alice", "--keep-last", "1"],
    );
    let prune = s3_ok(server, &location, &["prune", "--max-unused", "0%"]);
    assert!(prune.contains("freed"), "{prune}");
    let left: Vec<serde_json::Value> =
        serde_json::from_str(&s3_ok(server, &location, &["snapshots", "--json"])).unwrap();
    assert_eq!(left.len(), 2);
    let check = s3_ok(server, &location, &["check", "--read-data"]);
    assert!(check.contains("no errors"), "{check}");
    let again = tmp.path().join("again");
    s3_ok(
        server,
        &location,
        &[
            "restore",
            "--account",
            "alice",
            "latest",
            "--target",
            again.to_str().unwrap(),
        ],
    );
    assert_same_tree(&source, &again);
    // Nothing held, nothing stale.
    assert!(objects(server, &location)
        .iter()
        .all(|o| !o.starts_with("locks")));
    s3_ok(server, &location, &["unlock"]);
}

#[test]
fn unreachable_refused_and_missing_stores_are_clear_errors_that_write_nothing() {
    let Some(server) = seaweedfs("unreachable_refused_and_missing_stores") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("src");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("f"), b"data").unwrap();
    let src = source.to_str().unwrap();

    // Nothing listens on that port (the kernel gave it, then it was closed).
    let down = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("s3:http://127.0.0.1:{port}/snapfs-test/x")
    };
    for args in [&["init"][..], &["snapshots"], &["backup", src]] {
        let out = s3(server, &down, args);
        assert_eq!(out.status.code(), Some(6), "{args:?}: {}", stderr(&out));
        let why = stderr(&out);
        assert!(
            why.contains("Connection refused") && why.contains("tries"),
            "{why}"
        );
    }

    let location = server.location(&prefix("refused"));
    let wrong = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("SNAPFS_REPO", &location)
            .envs(server.env())
            .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
            .output()
            .unwrap()
    };
    for args in [&["init"][..], &["backup", src]] {
        let out = wrong(args);
        assert_eq!(out.status.code(), Some(6), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("refused access: 403"),
            "{}",
            stderr(&out)
        );
    }
    assert!(objects(server, &location).is_empty(), "nothing written");

    let no_bucket = server.location("").replace("snapfs-test", "no-such-bucket");
    for args in [&["init"][..], &["backup", src], &["snapshots"]] {
        let out = s3(server, &format!("{no_bucket}p"), args);
        assert_eq!(out.status.code(), Some(6), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("bucket no-such-bucket does not exist at http://127.0.0.1:"),
            "{}",
            stderr(&out)
        );
    }

    // A missing credential is named, before any request.
    let out = Command::new(BIN)
        .args(["snapshots"])
        .env("SNAPFS_REPO", &location)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("AWS_ACCESS_KEY_ID is not set"),
        "{}",
        stderr(&out)
    );
    // A malformed location is a usage error.
    let out = Command::new(BIN)
        .args(["--repo", "s3:http://127.0.0.1/B", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bucket \"B\""), "{}", stderr(&out));
}

#[test]
fn a_store_killed_during_a_backup_leaves_earlier_snapshots_whole() {
    let Ok(mut server) = Seaweed::start() else {
        // Says why once, through the shared server's check.
        let _ = seaweedfs("a_store_killed_during_a_backup");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let location = server.location("killed");
    s3_ok(
        &server,
        &location,
        &[
            "init",
            "--chunk-sizes",
            "1KiB/4KiB/16KiB",
            "--pack-size",
            "16KiB",
        ],
    );
    let source = tmp.path().join("src");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("small"), b"first night").unwrap();
    let src = source.to_str().unwrap();
    s3_ok(&server, &location, &["backup", "--account", "a", src]);
    // About 100 packs: the kill lands in the middle.
    for n in 0..30 {
        std::fs::write(source.join(format!("f{n}")), random_bytes(100_000, n)).unwrap();
    }
    let backup = Command::new(BIN)
        .args(["backup", "--account", "a", src])
        .env("SNAPFS_REPO", &location)
        .envs(server.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_packs(&server, &location, 4);
    let dir = server.kill();
    let out = backup.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    server.restart(dir);
    // The gateway answers at once, the volume server only once it has
    // re-registered (500 InternalError until then): what the retries of a
    // real night would ride out.
    let config = server.backend_at(&location);
    let started = std::time::Instant::now();
    while let Err(e) = config.read(FileType::Config, "config") {
        assert!(started.elapsed().as_secs() < 60, "not serving data: {e}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!(
        "data served {:.1} s after the restart",
        started.elapsed().as_secs_f64()
    );
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&s3_ok(&server, &location, &["snapshots", "--json"])).unwrap();
    assert_eq!(listed.len(), 1, "only the first night's");
    let check = s3_ok(&server, &location, &["check", "--read-data"]);
    assert!(check.contains("no errors"), "{check}");
    // The backup's lock outlived it; a rerun removes it as stale (same
    // host, no such process) and finishes the night.
    s3_ok(&server, &location, &["backup", "--account", "a", src]);
    let target = tmp.path().join("restored");
    s3_ok(
        &server,
        &location,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_same_tree(&source, &target);
}

fn wait_for_packs(server: &Seaweed, location: &str, at_least: usize) {
    let backend = server.backend_at(location);
    let started = std::time::Instant::now();
    while backend.list(FileType::Pack).unwrap().len() < at_least {
        assert!(started.elapsed().as_secs() < 60, "no packs written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `snapfs run` into an S3 repository with its credentials in the host
/// configuration's `[s3]`, none in the environment; refused while the
/// file is readable by others.
#[test]
fn run_takes_s3_credentials_from_a_private_host_configuration() {
    use crate::servers::seaweedfs::{ACCESS_KEY, SECRET_KEY};
    use std::os::unix::fs::PermissionsExt;
    let Some(server) = seaweedfs("run_takes_s3_credentials_from_a_private_host_configuration")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let location = server.location(&prefix("run-config"));
    make_rich_tree(&tmp.path().join("home/alice"));
    let config = tmp.path().join("snapfs.toml");
    std::fs::write(
        &config,
        format!(
            "repository = \"{location}\"\n[accounts]\nnames = [\"alice\"]\n\
             [files]\npath = \"{root}/home/{{account}}\"\n\
             [s3]\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n",
            root = tmp.path().display()
        ),
    )
    .unwrap();
    let run = || {
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("SNAPFS_CACHE_DIR", tmp.path().join("cache"))
            .env("SNAPFS_S3_RETRY", "3s")
            .output()
            .unwrap()
    };
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains(SECRET_KEY),
        "the secret is never printed"
    );
    assert!(objects(server, &location).is_empty(), "nothing written");

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&s3_ok(server, &location, &["snapshots", "--json"])).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["account"], "alice");
}
