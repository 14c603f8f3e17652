use super::*;
use crate::backup::{self, BackupOptions};
use crate::chunker::tests::{pseudo_random, small_params};
use crate::snapshot::Timestamp;
use std::fs;
use std::path::{Path, PathBuf};

fn init(path: &Path) -> Repository {
    Repository::init(path, small_params(), Some(16 * 1024)).unwrap()
}

fn back_up(repo: &Repository, account: &str, src: &Path, secs: i64) -> Id {
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        account: account.into(),
        hostname: "h".into(),
        time: Some((Timestamp { secs, nanos: 0 }, 0)),
        excludes: vec![],
        one_file_system: false,
        tags: vec![],
        progress: false,
        lock_wait: Duration::from_secs(10),
    };
    backup::run(repo, &opts).unwrap().id
}

fn options(accounts: &[&str]) -> CopyOptions {
    CopyOptions {
        accounts: accounts.iter().map(|a| a.to_string()).collect(),
        lock_wait: Duration::from_secs(10),
    }
}

fn run(from: &Path, to: &Path, accounts: &[&str]) -> Result<CopySummary> {
    let from = Repository::open(from)?;
    let to = Repository::open_without_index(to)?;
    copy(&from, &to, &options(accounts), &Progress::steps(false))
}

/// A source folder with a few multi-chunk files.
fn source(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let src = dir.join(name);
    fs::create_dir_all(src.join("sub")).unwrap();
    for n in 0..4 {
        fs::write(src.join(format!("f{n}")), pseudo_random(40_000, seed + n)).unwrap();
    }
    fs::write(src.join("sub/text"), "some text\n".repeat(2000)).unwrap();
    src
}

fn ids(repo: &Path) -> Vec<Id> {
    let repo = Repository::open(repo).unwrap();
    let (entries, bad) = snapshot::list(&repo, None).unwrap();
    assert!(bad.is_empty());
    entries.iter().map(|e| e.id).collect()
}

/// Every blob every snapshot of `repo` needs, read and verified.
fn assert_whole(repo: &Path) {
    let repo = Repository::open(repo).unwrap();
    for entry in snapshot::list_warn(&repo, None).unwrap() {
        let mut trees = vec![entry.snapshot.tree];
        while let Some(id) = trees.pop() {
            let tree = snapshot::load_tree(&repo, &id).unwrap();
            for node in &tree.nodes {
                trees.extend(node.subtree);
                for chunk in &node.content {
                    repo.load_blob(chunk).unwrap();
                }
            }
        }
    }
}

#[test]
fn copies_what_is_missing_and_nothing_on_a_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let repo = init(&a);
    let src = source(tmp.path(), "src", 1);
    back_up(&repo, "alice", &src, 1_000);
    fs::write(src.join("f9"), pseudo_random(30_000, 99)).unwrap();
    back_up(&repo, "alice", &src, 2_000);
    back_up(&repo, "bob", &source(tmp.path(), "bob", 50), 1_500);
    init(&b);

    let first = run(&a, &b, &[]).unwrap();
    assert_eq!(first.snapshots_copied, 3);
    assert_eq!(first.snapshots_skipped, 0);
    assert!(first.is_ok());
    assert!(first.packs_written > 1, "several packs: {first:?}");
    // Oldest first, and the very records: same ids.
    assert_eq!(ids(&b), ids(&a));
    let times: Vec<&str> = first.copied.iter().map(|c| c.time.as_str()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    assert_whole(&b);

    let again = run(&a, &b, &[]).unwrap();
    assert_eq!(
        (again.snapshots_copied, again.snapshots_skipped),
        (0, 3),
        "{again:?}"
    );
    assert_eq!((again.blobs_copied, again.packs_written), (0, 0));
}

#[test]
fn a_second_copy_sends_only_the_new_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let repo = init(&a);
    let src = source(tmp.path(), "src", 1);
    back_up(&repo, "alice", &src, 1_000);
    init(&b);
    let first = run(&a, &b, &[]).unwrap();

    // A day later: one file changed, the rest as it was.
    fs::write(src.join("f0"), pseudo_random(40_000, 1234)).unwrap();
    back_up(&repo, "alice", &src, 90_000);
    let second = run(&a, &b, &[]).unwrap();
    assert_eq!(second.snapshots_copied, 1);
    // The changed file's chunks and the trees above it, nothing more.
    assert!(second.bytes_copied < 60_000, "{second:?} after {first:?}");
    assert!(second.blobs_skipped > 0, "{second:?}");
    assert!(second.blobs_copied * 3 < first.blobs_copied, "{second:?}");
    assert_whole(&b);
}

#[test]
fn accounts_limit_what_is_copied() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let repo = init(&a);
    let alice = back_up(&repo, "alice", &source(tmp.path(), "s1", 1), 1_000);
    back_up(&repo, "bob", &source(tmp.path(), "s2", 20), 1_000);
    let carol = back_up(&repo, "carol", &source(tmp.path(), "s3", 40), 1_000);
    init(&b);
    let summary = run(&a, &b, &["carol", "alice", "alice"]).unwrap();
    assert_eq!(summary.snapshots_copied, 2);
    let mut want = vec![alice, carol];
    want.sort();
    let mut got = ids(&b);
    got.sort();
    assert_eq!(got, want);
    assert!(tmp.path().join("b/snapshots/carol").is_dir());
    assert_whole(&b);
}

#[test]
fn repositories_that_cut_chunks_differently_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init(&a);
    Repository::init(&b, ChunkerParams::default(), None).unwrap();
    let err = run(&a, &b, &[]).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains(&a.display().to_string()), "{text}");
    assert!(text.contains(&b.display().to_string()), "{text}");
    assert!(text.contains("1KiB/4KiB/16KiB"), "{text}");
    assert!(text.contains("512KiB/1MiB/8MiB"), "{text}");
    assert!(fs::read_dir(b.join("locks")).unwrap().next().is_none());
}

#[test]
fn a_repository_is_not_copied_into_itself_under_any_name() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let repo = init(&a);
    back_up(&repo, "alice", &source(tmp.path(), "src", 1), 1_000);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    for other in [&a, &link] {
        let err = run(&a, other, &[]).unwrap_err();
        assert!(err.to_string().contains("the same repository"), "{err}");
    }
    // A copy of its files is a repository of its own (same config id).
    let clone = tmp.path().join("clone");
    let status = std::process::Command::new("cp")
        .args(["-a"])
        .arg(&a)
        .arg(&clone)
        .status()
        .unwrap();
    assert!(status.success());
    let summary = run(&a, &clone, &[]).unwrap();
    assert_eq!(
        (summary.snapshots_copied, summary.snapshots_skipped),
        (0, 1)
    );
}

#[test]
fn a_tree_the_destination_has_without_its_chunks_is_completed() {
    // What a killed backup can leave: a tree in an indexed pack while its
    // chunks never reached one. Skipping the subtree of every tree the
    // destination lists would write a snapshot with holes.
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let from = init(&a);
    let id = back_up(&from, "alice", &source(tmp.path(), "src", 1), 1_000);
    let to = init(&b);
    let (entries, _) = snapshot::list(&from, None).unwrap();
    let root = entries.iter().find(|e| e.id == id).unwrap().snapshot.tree;
    let packer = to.packer();
    packer
        .add(Kind::Tree, &from.load_blob(&root).unwrap())
        .unwrap();
    packer.flush().unwrap();
    drop(packer);

    let summary = run(&a, &b, &[]).unwrap();
    assert_eq!(summary.snapshots_copied, 1);
    assert_whole(&b);
}

#[test]
fn damage_in_the_source_costs_only_the_snapshots_that_need_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let from = init(&a);
    let good = back_up(&from, "alice", &source(tmp.path(), "s1", 1), 1_000);
    let src2 = source(tmp.path(), "s2", 1);
    fs::write(src2.join("only-here"), pseudo_random(1_000, 777)).unwrap();
    let bad = back_up(&from, "alice", &src2, 2_000);
    // Flip a byte of the blob only the second snapshot has.
    let only = crate::id::Id::hash(&pseudo_random(1_000, 777));
    let loc = from.locate(&only).unwrap();
    let pack = a
        .join("data")
        .join(&loc.pack.to_hex()[..2])
        .join(loc.pack.to_hex());
    let mut bytes = fs::read(&pack).unwrap();
    bytes[loc.blob.offset as usize + 1] ^= 0xff;
    fs::write(&pack, bytes).unwrap();
    init(&b);

    let summary = run(&a, &b, &[]).unwrap();
    assert_eq!(summary.snapshots_copied, 1);
    assert_eq!(summary.snapshots_failed.len(), 1, "{summary:?}");
    assert_eq!(summary.snapshots_failed[0].snapshot, bad.to_hex());
    assert!(
        summary.snapshots_failed[0].error.contains("damaged"),
        "{summary:?}"
    );
    assert_eq!(ids(&b), vec![good]);
    assert_whole(&b);
}

#[test]
fn chunk_sizes_are_written_as_init_takes_them() {
    assert_eq!(chunk_sizes(&ChunkerParams::default()), "512KiB/1MiB/8MiB");
    let odd = ChunkerParams {
        min_size: 1000,
        avg_size: 4096,
        max_size: 3 << 20,
    };
    assert_eq!(chunk_sizes(&odd), "1000/4KiB/3MiB");
    let parsed: Vec<u64> = chunk_sizes(&odd)
        .split('/')
        .map(|s| crate::display::parse_size(s).unwrap())
        .collect();
    assert_eq!(parsed, [1000, 4096, 3 << 20]);
}
