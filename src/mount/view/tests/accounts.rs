//! The account level: `--per-account`, and a plain mount of a repository
//! of several accounts.

use super::*;

/// A snapshot of `account` at `secs`, sharing the fixture's trees.
fn save_as(repo: &Repository, like: &Snapshot, account: &str, secs: i64) -> Id {
    let snapshot = Snapshot {
        account: account.into(),
        time: Timestamp { secs, nanos: 0 },
        ..like.clone()
    };
    snapshot::save(repo, &snapshot).unwrap()
}

fn open_with(fx: &Fixture, top: Top) -> SnapshotFs {
    let opts = Options { top, ..options() };
    SnapshotFs::new(Repository::open(&fx.repo_path()).unwrap(), opts).unwrap()
}

/// A user of this machine other than root, if there is one.
fn some_user() -> Option<crate::host::accounts::User> {
    crate::host::accounts::lookup("nobody").ok().flatten()
}

#[test]
fn a_folder_per_account_its_users_alone() {
    let (fx, repo) = fixture();
    let (_, alice) = backup_at(&repo, &fx.src(), at(2025, 1, 3, 10, 0, 0));
    let nobody = some_user().expect("a user named nobody");
    save_as(&repo, &alice, "nobody", at(2025, 1, 4, 2, 0, 0));
    save_as(&repo, &alice, "no-such-user-here", at(2025, 1, 4, 2, 0, 0));
    let fs = open_with(&fx, Top::Accounts);
    // Nothing is read at mount time but the folder names.
    assert!(read(&fs.snapshots).slots.is_empty());
    assert_eq!(
        names(&fs, ROOT_INO),
        [".", "..", "alice", "no-such-user-here", "nobody"]
    );
    let folder = fs.lookup(ROOT_INO, b"nobody").unwrap();
    assert_eq!((folder.kind, folder.perm), (NodeKind::Dir, 0o500));
    assert_eq!((folder.uid, folder.gid), (nobody.uid, nobody.gid));
    let orphan = fs.lookup(ROOT_INO, b"no-such-user-here").unwrap();
    assert_eq!((orphan.uid, orphan.gid, orphan.perm), (0, 0, 0o500));
    assert!(!fs.is_immutable(folder.ino), "an account folder changes");

    // Inside: what `mount --account nobody` shows.
    assert_eq!(names(&fs, folder.ino), [".", "..", "latest", "2025-01-04"]);
    let latest = fs.lookup(folder.ino, b"latest").unwrap();
    assert_eq!(fs.readlink(latest.ino).unwrap(), b"2025-01-04");
    assert_eq!(read_all(&fs, "nobody/2025-01-04/big").unwrap(), fx.big);
    assert_eq!(
        names(&fs, fs.lookup_path("alice").unwrap().ino),
        [".", "..", "latest", "2025-01-02", "2025-01-03"]
    );
    let day = fs.lookup_path("nobody/2025-01-04").unwrap();
    let mut dots = Vec::new();
    fs.readdir(day.ino, 0, |e| {
        dots.push(e.ino);
        dots.len() == 2
    })
    .unwrap();
    assert_eq!(
        dots,
        [day.ino, folder.ino],
        "a day's .. is its account's folder"
    );
    let file = fs.lookup_path("nobody/2025-01-04/sub/inner").unwrap();
    assert_eq!(fs.path_of(file.ino), "/nobody/2025-01-04/sub/inner");
    assert!(matches!(
        fs.lookup(ROOT_INO, b"latest"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        fs.lookup(ROOT_INO, b"carol"),
        Err(Error::NotFound(_))
    ));
    // Only alice's and nobody's snapshots were read: no one else's.
    let accounts: HashSet<String> = read(&fs.snapshots)
        .slots
        .iter()
        .map(|s| s.snapshot.account.clone())
        .collect();
    assert_eq!(accounts, HashSet::from(["alice".into(), "nobody".into()]));
}

#[test]
fn an_account_that_appears_later_and_one_that_goes() {
    let (fx, repo) = fixture();
    let (alice_id, alice) = snapshot::list(&repo, None)
        .map(|(e, _)| (e[0].id, e[0].snapshot.clone()))
        .unwrap();
    let fs = open_with(&fx, Top::Accounts);
    assert_eq!(names(&fs, ROOT_INO), [".", "..", "alice"]);
    let alice_ino = fs.lookup(ROOT_INO, b"alice").unwrap().ino;

    // carol's first backup, while mounted.
    save_as(&repo, &alice, "carol", at(2025, 1, 5, 2, 0, 0));
    assert_eq!(names(&fs, ROOT_INO), [".", "..", "alice", "carol"]);
    assert_eq!(read_all(&fs, "carol/2025-01-05/big").unwrap(), fx.big);
    save_as(&repo, &alice, "carol", at(2025, 1, 6, 2, 0, 0));
    let carol = fs.lookup(ROOT_INO, b"carol").unwrap().ino;
    assert_eq!(
        names(&fs, carol),
        [".", "..", "latest", "2025-01-05", "2025-01-06"]
    );

    // alice's only snapshot forgotten, her folder removed: she goes, and
    // comes back with the same inode.
    let file = snapshot::account_folder("alice");
    repo.backend()
        .remove(FileType::Snapshot, &format!("{file}/{alice_id}"))
        .unwrap();
    std::fs::remove_dir(fx.repo_path().join("snapshots").join(&file)).unwrap();
    assert_eq!(names(&fs, ROOT_INO), [".", "..", "carol"]);
    save_as(&repo, &alice, "alice", at(2025, 1, 7, 2, 0, 0));
    assert_eq!(names(&fs, ROOT_INO), [".", "..", "alice", "carol"]);
    assert_eq!(fs.lookup(ROOT_INO, b"alice").unwrap().ino, alice_ino);
    assert_eq!(names(&fs, alice_ino), [".", "..", "latest", "2025-01-07"]);
}

#[test]
fn names_that_cannot_be_file_names_show_escaped() {
    let (fx, repo) = fixture();
    let (_, alice) = backup_at(&repo, &fx.src(), at(2025, 1, 3, 10, 0, 0));
    let long = "x".repeat(120);
    for account in ["..", "a/b", "", "été", long.as_str()] {
        save_as(&repo, &alice, account, at(2025, 1, 4, 2, 0, 0));
    }
    let fs = open_with(&fx, Top::Accounts);
    let mut want = vec![
        ".",
        "..",
        "%",
        "%2E.",
        "a%2Fb",
        "alice",
        "été",
        long.as_str(),
    ];
    want[2..].sort();
    assert_eq!(names(&fs, ROOT_INO), want);
    for shown in &want[2..] {
        let path = format!("{shown}/2025-01-04/big");
        if *shown != "alice" {
            assert_eq!(read_all(&fs, &path).unwrap(), fx.big, "{shown}");
        }
    }
}

#[test]
fn a_plain_mount_never_mixes_two_accounts() {
    let (fx, repo) = fixture();
    let (_, alice) = backup_at(&repo, &fx.src(), at(2025, 1, 3, 10, 0, 0));
    let fs = open_with(&fx, Top::Auto);
    // One account: its days at the top, as always.
    assert_eq!(
        names(&fs, ROOT_INO),
        [".", "..", "latest", "2025-01-02", "2025-01-03"]
    );
    let day = fs.lookup_path("2025-01-03").unwrap().ino;

    // bob's backup at the same hour: account folders from now on, and
    // nothing of one shows under the other's name.
    save_as(&repo, &alice, "bob", at(2025, 1, 3, 10, 0, 0));
    assert_eq!(names(&fs, ROOT_INO), [".", "..", "alice", "bob"]);
    assert_eq!(
        names(&fs, fs.lookup_path("bob").unwrap().ino),
        [".", "..", "latest", "2025-01-03"]
    );
    assert_eq!(
        fs.lookup_path("alice/2025-01-03").unwrap().ino,
        day,
        "same inode"
    );
    assert!(fs.lookup_path("2025-01-03").is_err());
    assert_eq!(fs.path_of(day), "/alice/2025-01-03");
}

#[test]
fn one_accounts_mount_ignores_the_others() {
    let (fx, repo) = fixture();
    let (_, alice) = backup_at(&repo, &fx.src(), at(2025, 1, 3, 10, 0, 0));
    save_as(&repo, &alice, "bob", at(2025, 1, 3, 10, 0, 0));
    let fs = open_with(&fx, Top::Account("alice".into()));
    assert_eq!(
        names(&fs, ROOT_INO),
        [".", "..", "latest", "2025-01-02", "2025-01-03"]
    );
}
