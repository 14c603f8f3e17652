//! Repositories on a SeaweedFS cluster (`tests/servers/seaweedfs_cluster.rs`:
//! one master, three volume servers, a filer and an S3 gateway; every
//! object stored twice), where one volume server is killed (SIGKILL) in
//! the middle of a real `snapfs` process: a backup and a restore both
//! finish, and every byte comes back.
//!
//! Each test starts a cluster of its own, and they take turns: each
//! pushes a few hundred MiB through six servers and snapfs on a 2-core
//! machine, and its timings are printed (`--nocapture`).

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use snapfs::repository::backend::{Backend, FileType, S3Backend};

use crate::servers::{seaweedfs_cluster, Cluster};
use crate::support::*;

/// One cluster at a time: they compete for the same two cores.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A night's new data: 16 files of 8 MiB, pseudo-random (nothing
/// deduplicates or compresses), about 128 packs of 1 MiB.
const FILES: u64 = 16;
const FILE_SIZE: usize = 8 << 20;
const NIGHT: u64 = FILES * FILE_SIZE as u64;

/// Which volume server dies.
const VICTIM: usize = 1;

fn turn() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed holding it does not fail the other.
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn snapfs(cluster: &Cluster, location: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("SNAPFS_REPO", location)
        .envs(cluster.env())
        .env("TZ", "UTC");
    command
}

fn snapfs_ok(cluster: &Cluster, location: &str, args: &[&str]) -> String {
    let out = snapfs(cluster, location, args).output().unwrap();
    assert_success(args, &out);
    String::from_utf8(out.stdout).unwrap()
}

fn assert_success(args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "snapfs {args:?} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `snapfs ARGS` in the background, its stderr in `log` (a pipe nobody
/// reads while it runs could fill).
fn spawn(cluster: &Cluster, location: &str, args: &[&str], log: &Path) -> Child {
    snapfs(cluster, location, args)
        .stdout(Stdio::piped())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Wait for `child`, which must succeed; its stdout, and how many
/// requests it had to retry.
fn finish(child: Child, args: &[&str], log: &Path) -> (String, usize) {
    let mut out = child.wait_with_output().unwrap();
    out.stderr = std::fs::read(log).unwrap();
    assert_success(args, &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let retried = stderr.matches("retrying for up to").count();
    (String::from_utf8(out.stdout).unwrap(), retried)
}

/// Poll `progress` until it reaches `target`; `child` must still be
/// running then, or a kill would prove nothing.
fn wait_for(child: &mut Child, target: u64, progress: impl Fn() -> u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while progress() < target {
        assert!(
            child.try_wait().unwrap().is_none(),
            "snapfs finished before the kill: give it more to do"
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn random_files(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    for n in 0..FILES {
        let name = dir.join(format!("f{n:02}"));
        std::fs::write(name, random_bytes(FILE_SIZE, seed + n)).unwrap();
    }
}

fn init(cluster: &Cluster, location: &str) {
    snapfs_ok(
        cluster,
        location,
        &[
            "init",
            "--chunk-sizes",
            "64KiB/256KiB/1MiB",
            "--pack-size",
            "1MiB",
        ],
    );
}

fn snapshot_id(json: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    json["id"].as_str().unwrap().to_string()
}

fn restore_args(target: &str) -> [&str; 6] {
    ["restore", "--account", "a", "latest", "--target", target]
}

/// Bytes a restore has written so far into the flat folder `target`:
/// blocks, not sizes (a file may get its size before its bytes), and
/// nothing for what a rename or an unfinished folder hides.
fn written(target: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(target) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

fn packs(store: &S3Backend) -> u64 {
    store.list(FileType::Pack).unwrap().len() as u64
}

/// A night's backup, with a volume server killed a third of the way
/// through its packs: it finishes (the gateway writes the packs whose
/// second copy failed again, to volumes of the two servers left; our
/// retries cover what it cannot), `check --read-data` is clean, and both
/// nights restore bit-identically.
#[test]
fn a_backup_outlives_a_volume_server_killed_under_it() {
    let test = "a_backup_outlives_a_volume_server_killed_under_it";
    let _turn = turn();
    let Some(mut cluster) = seaweedfs_cluster(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let location = cluster.location("backup");
    init(&cluster, &location);
    let source = tmp.path().join("home");
    random_files(&source.join("first"), 0);
    let src = source.to_str().unwrap();

    let night = |time: &'static str| ["backup", "--json", "--account", "a", "--time", time, src];
    let args = night("2026-11-23 02:00:00");
    let started = Instant::now();
    let first = snapshot_id(&snapfs_ok(&cluster, &location, &args));
    let quiet = started.elapsed();

    random_files(&source.join("second"), 100);
    let args = night("2026-11-24 02:00:00");
    let log = tmp.path().join("backup.log");
    let before = packs(&cluster.backend_at(&location));
    let started = Instant::now();
    let mut backup = spawn(&cluster, &location, &args, &log);
    let store = cluster.backend_at(&location);
    wait_for(&mut backup, before + 40, || packs(&store));
    cluster.kill_volume_server(VICTIM);
    let killed_after = started.elapsed();
    let (out, retried) = finish(backup, &args, &log);
    let second = snapshot_id(&out);
    eprintln!(
        "backup of {} MiB: {:.1} s; with volume server {VICTIM} killed after {:.1} s: \
         {:.1} s, {retried} requests retried by snapfs",
        NIGHT >> 20,
        quiet.as_secs_f64(),
        killed_after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    let check = snapfs_ok(&cluster, &location, &["check", "--read-data"]);
    assert!(check.contains("no errors"), "{check}");
    let restore = |id: &str, target: &Path| {
        let target = target.to_str().unwrap();
        snapfs_ok(
            &cluster,
            &location,
            &["restore", "--account", "a", id, "--target", target],
        );
    };
    let target = tmp.path().join("first");
    restore(&first, &target);
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        1,
        "first/ only"
    );
    assert_same_tree(&source.join("first"), &target.join("first"));
    let target = tmp.path().join("second");
    restore(&second, &target);
    assert_same_tree(&source, &target);
}

/// A restore with a volume server killed a third of the way through:
/// every chunk has its other copy, the restore finishes and its bytes
/// are the source's; with the server still gone, `check --read-data`
/// reads every pack from the copies left.
#[test]
fn a_restore_outlives_a_volume_server_killed_under_it() {
    let test = "a_restore_outlives_a_volume_server_killed_under_it";
    let _turn = turn();
    let Some(mut cluster) = seaweedfs_cluster(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let location = cluster.location("restore");
    init(&cluster, &location);
    let source = tmp.path().join("home");
    random_files(&source, 200);
    let src = source.to_str().unwrap();
    snapfs_ok(&cluster, &location, &["backup", "--account", "a", src]);

    let quiet_target = tmp.path().join("quiet");
    let args = restore_args(quiet_target.to_str().unwrap());
    let started = Instant::now();
    snapfs_ok(&cluster, &location, &args);
    let quiet = started.elapsed();
    assert_same_tree(&source, &quiet_target);
    std::fs::remove_dir_all(&quiet_target).unwrap();

    let target = tmp.path().join("restored");
    let args = restore_args(target.to_str().unwrap());
    let log = tmp.path().join("restore.log");
    let started = Instant::now();
    let mut child = spawn(&cluster, &location, &args, &log);
    wait_for(&mut child, NIGHT / 3, || written(&target));
    cluster.kill_volume_server(VICTIM);
    let killed_after = started.elapsed();
    let (_, retried) = finish(child, &args, &log);
    eprintln!(
        "restore of {} MiB: {:.1} s; with volume server {VICTIM} killed after {:.1} s: \
         {:.1} s, {retried} requests retried by snapfs",
        NIGHT >> 20,
        quiet.as_secs_f64(),
        killed_after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_same_tree(&source, &target);
    let check = snapfs_ok(&cluster, &location, &["check", "--read-data"]);
    assert!(check.contains("no errors"), "{check}");
}
