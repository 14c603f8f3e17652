//! Restore into folders that already hold things, some of them planted by
//! a tenant: `snapfs restore` replaces what is in the way and never writes
//! through a symlink. (The racing tenant is in tests/tenant/.)

use crate::support::*;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

/// Everything about a path outside the target that restore must not change.
fn fingerprint(path: &Path) -> (Vec<u8>, u32, u32, i64, i64, usize) {
    let meta = fs::symlink_metadata(path).unwrap();
    let (content, entries) = if meta.is_dir() {
        (Vec::new(), fs::read_dir(path).unwrap().count())
    } else {
        (fs::read(path).unwrap(), 0)
    };
    let (uid, mtime, nanos) = (meta.uid(), meta.mtime(), meta.mtime_nsec());
    (content, meta.mode(), uid, mtime, nanos, entries)
}

fn restore_into(t: &TestRepo, spec: &str, target: &Path) -> std::process::Output {
    t.run(&["restore", spec, "--target", target.to_str().unwrap()])
}

#[test]
fn symlinks_where_a_folder_and_a_file_go_are_replaced_not_followed() {
    let t = TestRepo::new();
    let source = t.path("source");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("sub/secret"), b"tenant's content").unwrap();
    fs::write(source.join("file"), b"tenant's file").unwrap();
    t.backup(&source, "2026-11-24 02:00:00");

    let outside = t.path("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"root's own").unwrap();
    fs::write(outside.join("file"), b"root's file").unwrap();
    let before = [
        fingerprint(&outside),
        fingerprint(&outside.join("secret")),
        fingerprint(&outside.join("file")),
    ];
    let target = t.path("home");
    fs::create_dir(&target).unwrap();
    symlink(&outside, target.join("sub")).unwrap();
    symlink(outside.join("file"), target.join("file")).unwrap();

    let out = restore_into(&t, "latest", &target);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let after = [
        fingerprint(&outside),
        fingerprint(&outside.join("secret")),
        fingerprint(&outside.join("file")),
    ];
    assert_eq!(after, before);
    assert!(fs::symlink_metadata(target.join("sub")).unwrap().is_dir());
    assert_same_tree(&source, &target);
}

#[test]
fn a_full_folder_where_a_file_goes_fails_that_entry_only() {
    let t = TestRepo::new();
    let source = t.path("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("a"), b"a").unwrap();
    fs::write(source.join("b"), b"b").unwrap();
    t.backup(&source, "2026-11-24 02:00:00");
    let target = t.path("home");
    fs::create_dir_all(target.join("a")).unwrap();
    fs::write(target.join("a/kept"), b"tenant's").unwrap();

    let out = restore_into(&t, "latest", &target);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("1 entries FAILED"), "{stdout}");
    let named = format!("{}: a folder that is not empty", target.join("a").display());
    assert!(stderr.contains(&named), "{stderr}");
    assert_eq!(fs::read(target.join("a/kept")).unwrap(), b"tenant's");
    assert_eq!(fs::read(target.join("b")).unwrap(), b"b");
}

#[test]
fn a_target_through_a_symlink_is_refused_with_the_real_path() {
    let t = TestRepo::new();
    let source = t.path("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("f"), b"f").unwrap();
    t.backup(&source, "2026-11-24 02:00:00");
    let real = t.path("real");
    fs::create_dir(&real).unwrap();
    symlink(&real, t.path("link")).unwrap();

    let out = restore_into(&t, "latest", &t.path("link/restored"));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("snapfs: restore target"), "{stderr}");
    let link = format!("{} -> {}", t.path("link").display(), real.display());
    assert!(stderr.contains(&link), "{stderr}");
    let suggested = fs::canonicalize(&real).unwrap().join("restored");
    assert!(
        stderr.contains(&format!("the real path is {}", suggested.display())),
        "{stderr}"
    );
    assert_eq!(fs::read_dir(&real).unwrap().count(), 0);

    // The real path works.
    let out = restore_into(&t, "latest", &suggested);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(fs::read(suggested.join("f")).unwrap(), b"f");
}

#[test]
fn restoring_twice_into_one_folder_replaces_every_kind_of_entry() {
    let t = TestRepo::new();
    let source = t.path("source");
    make_rich_tree(&source);
    t.backup(&source, "2026-11-24 02:00:00");
    let target = t.path("restored");
    for _ in 0..2 {
        let out = restore_into(&t, "latest", &target);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_same_tree(&source, &target);
    }
    // Hard links stay links across the second restore.
    let (a, b) = (
        fs::metadata(target.join("dir/hard-a")).unwrap(),
        fs::metadata(target.join("dir/nested/hard-b")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
}

#[test]
fn a_file_of_repeated_zero_chunks_comes_back_sparse() {
    let t = TestRepo::new();
    let source = t.path("source");
    fs::create_dir_all(&source).unwrap();
    // 16 MiB of zeros: 1,024 chunks of 16 KiB with this repository's
    // chunk sizes, all the same id, and some data at the end.
    let file = fs::File::create(source.join("disk.img")).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"tail", 16 << 20).unwrap();
    t.backup(&source, "2026-11-24 02:00:00");

    let target = t.path("restored");
    let out = restore_into(&t, "latest", &target);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let restored = target.join("disk.img");
    assert_eq!(fs::metadata(&restored).unwrap().len(), (16 << 20) + 4);
    assert!(allocated_bytes(&restored) <= 64 * 1024);
    assert_same_tree(&source, &target);
}

#[test]
fn a_whole_snapshot_gives_the_target_the_backed_up_folders_owner_mode_and_times() {
    let t = TestRepo::new();
    let source = t.path("home");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("f"), b"x").unwrap();
    fs::set_permissions(&source, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    set_mtime(&source, 1_700_000_000, 5);
    t.backup(&source, "2026-11-24 02:00:00");
    let target = t.restore("latest");
    let (want, got) = (
        fs::metadata(&source).unwrap(),
        fs::metadata(&target).unwrap(),
    );
    assert_eq!(got.mode() & 0o7777, 0o711);
    assert_eq!((got.uid(), got.gid()), (want.uid(), want.gid()));
    assert_eq!((got.mtime(), got.mtime_nsec()), (1_700_000_000, 5));
}
