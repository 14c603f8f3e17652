//! `snapfs migrate`: bring a layout-1 repository to layout 2, moving its
//! snapshot files into account folders (docs/FORMAT.md, section 13).
//!
//! The order is what makes it safe to interrupt:
//! 1. the config says layout 2 first, so that an older snapfs refuses the
//!    repository before any file has moved (it would not see the moved
//!    ones, and its prune would free their data);
//! 2. then each snapshot file not in its account's folder is renamed
//!    into it.
//!
//! snapfs reads both layouts, so a migration cut off half-way leaves a
//! repository that works, and running it again finishes the job. It holds
//! the exclusive lock: a prune listing the snapshots while one moves could
//! miss it and free its data.

use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::repository::backend;
use crate::repository::config::LAYOUT_VERSION;
use crate::repository::lock::LockKind;
use crate::repository::Repository;
use crate::snapshot;

#[derive(Debug, Default, Serialize)]
pub struct MigrateReport {
    /// The layout the repository had.
    pub layout_before: u32,
    pub layout_after: u32,
    /// Snapshot files moved into account folders.
    pub moved: u64,
    /// Snapshot files that cannot be read, left where they are (`check`
    /// names them).
    pub left_unreadable: Vec<String>,
}

pub fn run(repo: &Repository, lock_wait: Duration) -> Result<MigrateReport> {
    let _lock = repo.lock(LockKind::Exclusive, "migrate", lock_wait)?;
    let mut report = MigrateReport {
        layout_before: repo.config().layout,
        layout_after: LAYOUT_VERSION,
        ..MigrateReport::default()
    };
    if repo.config().layout < LAYOUT_VERSION {
        let mut config = repo.config().clone();
        config.layout = LAYOUT_VERSION;
        repo.write_config(&config)?;
    }
    // Every file, not only those in no folder: one in another account's
    // folder (copied there by hand) is moved too.
    let names: Vec<String> = repo
        .snapshot_files()?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for (name, entry) in snapshot::load_many(repo, &names) {
        match entry {
            Ok(entry) => {
                let folder = snapshot::account_folder(&entry.snapshot.account);
                if backend::folder_of(&name) == folder {
                    continue;
                }
                let file = backend::file_of(&name);
                match repo.move_snapshot_file(&name, &format!("{folder}/{file}")) {
                    Ok(()) => report.moved += 1,
                    // Forgotten while we read it (forget takes no lock).
                    Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!("left in place: {e}");
                report.left_unreadable.push(name);
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::backend::FileType;
    use crate::repository::lock::Lock;
    use crate::repository::tests::set_layout;
    use crate::snapshot::{Snapshot, Summary, Timestamp};

    fn snapshot(account: &str, secs: i64) -> Snapshot {
        Snapshot {
            time: Timestamp { secs, nanos: 0 },
            utc_offset: 0,
            hostname: "h".into(),
            account: account.into(),
            paths: vec![b"/home/x".to_vec()],
            tags: vec![],
            tree: crate::id::Id::default(),
            parent: None,
            summary: Summary::default(),
            root: None,
            sources: Vec::new(),
            version: crate::snapshot::SNAPSHOT_VERSION,
        }
    }

    /// An empty repository as snapfs 0.1 made it.
    fn layout_1_repository() -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        Repository::init(dir.path(), crate::chunker::tests::small_params(), None).unwrap();
        set_layout(dir.path(), 1);
        let repo = Repository::open(dir.path()).unwrap();
        (dir, repo)
    }

    #[test]
    fn moves_every_snapshot_into_its_account_folder() {
        let (dir, old) = layout_1_repository();
        let a = snapshot::save(&old, &snapshot("alice", 1)).unwrap();
        let b = snapshot::save(&old, &snapshot("bob", 2)).unwrap();
        let garbage = dir.path().join("snapshots").join("garbage");
        std::fs::write(&garbage, b"x").unwrap();
        assert!(dir.path().join("snapshots").join(a.to_hex()).is_file());

        let report = run(&old, Duration::ZERO).unwrap();
        assert_eq!((report.layout_before, report.layout_after), (1, 2));
        assert_eq!(report.moved, 2);
        assert_eq!(report.left_unreadable, ["garbage"]);
        assert!(garbage.is_file(), "left for check to name");

        let new = Repository::open(dir.path()).unwrap();
        assert!(new.config().snapshot_folders());
        let (alice, _) = snapshot::list(&new, Some("alice")).unwrap();
        assert_eq!(alice.len(), 1);
        assert_eq!(alice[0].file, format!("alice/{a}"));
        assert_eq!(snapshot::list(&new, Some("bob")).unwrap().0[0].id, b);

        // Again: nothing left to move.
        assert_eq!(run(&new, Duration::ZERO).unwrap().moved, 0);

        // A file put in the wrong folder by hand: check names it, migrate
        // moves it.
        let wrong = dir.path().join("snapshots/bob").join(a.to_hex());
        std::fs::rename(dir.path().join("snapshots/alice").join(a.to_hex()), &wrong).unwrap();
        let report = crate::check::run(&new, false).unwrap();
        assert_eq!(report.misplaced_snapshots, [format!("bob/{a}")]);
        // (These records point to no real tree: that is damage, the
        // folder is not.)
        assert!(report
            .damage
            .iter()
            .all(|d| !d.object.contains(&a.to_hex())));
        assert_eq!(run(&new, Duration::ZERO).unwrap().moved, 1);
        assert!(crate::check::run(&new, false)
            .unwrap()
            .misplaced_snapshots
            .is_empty());
    }

    #[test]
    fn an_interrupted_migration_leaves_a_working_repository() {
        let (dir, old) = layout_1_repository();
        let ids: Vec<_> = (0..4)
            .map(|n| snapshot::save(&old, &snapshot("alice", n)).unwrap())
            .collect();
        // Cut off after the config and two of the four files.
        set_layout(dir.path(), 2);
        for id in &ids[..2] {
            old.backend()
                .rename(FileType::Snapshot, &id.to_hex(), &format!("alice/{id}"))
                .unwrap();
        }
        let half = Repository::open(dir.path()).unwrap();
        let listed: Vec<_> = snapshot::list(&half, Some("alice"))
            .unwrap()
            .0
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(listed, ids, "every snapshot, once");
        assert_eq!(run(&half, Duration::ZERO).unwrap().moved, 2);
        assert!(half
            .backend()
            .list_folder(FileType::Snapshot, "")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn does_not_run_beside_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let repo =
            Repository::init(dir.path(), crate::chunker::tests::small_params(), None).unwrap();
        let _backup = Lock::acquire(
            repo.backend().clone(),
            LockKind::Shared,
            "backup",
            Duration::ZERO,
        )
        .unwrap();
        assert!(run(&repo, Duration::ZERO).is_err(), "a backup is running");
    }
}
