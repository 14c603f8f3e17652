//! Snapshots: the record of one backup, and the trees it points to.
//!
//! A snapshot file holds one `Snapshot` record and is named by its hash, so
//! the name is the snapshot's id and a snapshot can never change. Writing it
//! is the last step of a backup: it becomes visible only once everything it
//! references is durable.
//!
//! Snapshot files sit in a folder per account (`snapshots/alice/<id>`;
//! directly in `snapshots/` in repositories of layout 1): a backup looking
//! for its parent and a mount of one account's backups read that account's
//! files only, not the 30,000 of a server with 1,000 accounts. The folder
//! is where files are put, not what they mean: readers still check the
//! account inside.

pub mod chunk_source;
pub mod file_reader;
pub mod record;
pub mod tree;

use chrono::NaiveDate;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::backend::{self, FileType};
use crate::repository::Repository;
pub use record::{Snapshot, SourceKind, SourceStatus, Summary, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
pub use tree::{Node, NodeKind, Timestamp, Tree, Xattr};

/// A snapshot, its id and its file.
#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    pub id: Id,
    pub snapshot: Snapshot,
    /// Its name in the repository's snapshot files (`alice/<id>`, or `<id>`
    /// in layout 1): what `forget` removes.
    pub file: String,
}

impl SnapshotEntry {
    /// Whether its file is where this repository's layout puts it; one in
    /// no folder or another account's is read by more listings than it
    /// should, or missed by its own account's (`snapfs migrate` moves it).
    pub fn is_in_place(&self, repo: &Repository) -> bool {
        let folder = backend::folder_of(&self.file);
        if repo.config().snapshot_folders() {
            folder == account_folder(&self.snapshot.account)
        } else {
            folder.is_empty()
        }
    }
}

/// The folder of an account's snapshot files: the account's name, with
/// every byte but ASCII letters, digits, `_`, `-` and an inner `.` written
/// `%XX` (an empty name is `%`). Names longer than 100 bytes that way are
/// `~` and a hash instead.
pub fn account_folder(account: &str) -> String {
    let mut folder = String::with_capacity(account.len());
    for (i, b) in account.bytes().enumerate() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => folder.push(b as char),
            b'.' if i > 0 => folder.push('.'),
            _ => folder.push_str(&format!("%{b:02X}")),
        }
    }
    if folder.is_empty() {
        return "%".into();
    }
    if folder.len() > 100 {
        return format!("~{}", &Id::hash(account.as_bytes()).to_hex()[..32]);
    }
    folder
}

/// The account whose folder [`account_folder`] names `folder`, when the
/// name can be read back from it (every folder but the hashed `~` ones
/// and names this code never writes).
pub fn account_of_folder(folder: &str) -> Option<String> {
    if folder == "%" {
        return Some(String::new());
    }
    let bytes = folder.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let account = String::from_utf8(out).ok()?;
    // Only the canonical spelling: one account, one folder.
    (account_folder(&account) == folder).then_some(account)
}

/// The account folders of the repository's snapshot files (layout 2),
/// without listing what is in them.
pub fn account_folders(repo: &Repository) -> Result<Vec<String>> {
    repo.snapshot_folders()
}

/// Write a snapshot record; returns its id. Call only after the packer has
/// flushed everything the snapshot references.
pub fn save(repo: &Repository, snapshot: &Snapshot) -> Result<Id> {
    save_encoded(repo, &snapshot.account, &snapshot.encode())
}

/// Write a snapshot record's bytes as they are, in `account`'s folder;
/// returns its id. `copy` writes the very bytes it read, never a
/// re-encoding: a record written by an older snapfs would encode
/// differently today, get another id, and be copied again on every run.
pub fn save_encoded(repo: &Repository, account: &str, bytes: &[u8]) -> Result<Id> {
    let id = Id::hash(bytes);
    let file = if repo.config().snapshot_folders() {
        format!("{}/{id}", account_folder(account))
    } else {
        id.to_hex()
    };
    // Only if absent: a record is named by its hash, so one already there
    // holds these very bytes, and on object storage a create that cannot
    // replace anything is the safe kind of write.
    repo.write_snapshot_file(&file, bytes)?;
    Ok(id)
}

/// A snapshot file that could not be read: its name and why.
pub type DamagedSnapshot = (String, Error);

/// Every readable snapshot, of one account or of all, oldest first, and
/// the damaged ones separately: one garbage snapshot file must not hide
/// the others.
pub fn list(
    repo: &Repository,
    account: Option<&str>,
) -> Result<(Vec<SnapshotEntry>, Vec<DamagedSnapshot>)> {
    let names: Vec<String> = list_files(repo, account)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (name, entry) in load_many(repo, &names) {
        match entry {
            Ok(entry) if account.is_none_or(|a| entry.snapshot.account == a) => good.push(entry),
            // Another account's, from a folder shared by two names or from
            // layout 1, where every account's files are in one folder.
            Ok(_) => {}
            // Forgotten while we listed: gone, not damaged.
            Err(Error::NotFound(_)) => {}
            Err(e) => bad.push((name, e)),
        }
    }
    good.sort_by_key(|e| (e.snapshot.time, e.id));
    Ok((good, bad))
}

/// The snapshot files that may hold `account`'s snapshots (its folder, and
/// those in no folder, from layout 1), or all of them.
pub fn list_files(repo: &Repository, account: Option<&str>) -> Result<Vec<(String, u64)>> {
    let Some(account) = account else {
        return repo.snapshot_files();
    };
    let mut files = repo.snapshot_files_in("")?;
    files.extend(repo.snapshot_files_in(&account_folder(account))?);
    Ok(files)
}

/// The ids of the snapshot files that may hold `account`'s snapshots (or
/// of all), from their names alone: a record is named by its hash, so a
/// repository that has the name has the record, and nothing is read.
pub fn ids(repo: &Repository, account: Option<&str>) -> Result<Vec<Id>> {
    Ok(list_files(repo, account)?
        .iter()
        .filter_map(|(name, _)| id_of_file(name))
        .collect())
}

/// The id a snapshot file's name gives (`alice/<id>` or `<id>`), if any.
pub fn id_of_file(name: &str) -> Option<Id> {
    Id::from_hex(backend::file_of(name)).ok()
}

/// Threads reading snapshot files at most.
const LIST_THREADS: usize = 8;
/// Fewer files than this per thread are not worth a thread.
const LIST_FILES_PER_THREAD: usize = 64;

/// Load the named snapshot files, on several threads, each with its name.
///
/// Why threads: a repository shared by 1,000 accounts holds 30,000
/// snapshot files, and every `backup` lists them all to find its parent.
/// Read cold, that is disk latency, which overlaps (measured by
/// `cargo bench --bench snapshot_list`: 3.2 s on one thread, 1.2 s on 8).
///
/// A worker's panic is re-raised, never turned into a shorter list: prune
/// treats whatever no listed snapshot needs as garbage.
pub fn load_many(repo: &Repository, names: &[String]) -> Vec<(String, Result<SnapshotEntry>)> {
    let load_part = |part: &[String]| -> Vec<(String, Result<SnapshotEntry>)> {
        part.iter()
            .map(|name| (name.clone(), load_named(repo, name)))
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get() * 4)
        .min(LIST_THREADS);
    let per_thread = names.len().div_ceil(threads).max(LIST_FILES_PER_THREAD);
    if names.len() <= per_thread {
        return load_part(names);
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = names
            .chunks(per_thread)
            .map(|part| {
                let spawned = std::thread::Builder::new()
                    .name("snapshot-list".into())
                    .spawn_scoped(scope, move || load_part(part));
                (part, spawned)
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|(part, worker)| match worker {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                // No thread to be had: this one reads the part itself.
                Err(_) => load_part(part),
            })
            .collect()
    })
}

/// The record of `entry` as stored, verified against its id: what `copy`
/// writes to the other repository.
pub fn load_encoded(repo: &Repository, entry: &SnapshotEntry) -> Result<Vec<u8>> {
    repo.read_verified(FileType::Snapshot, &entry.file)
}

fn load_named(repo: &Repository, name: &str) -> Result<SnapshotEntry> {
    let id = Id::from_hex(backend::file_of(name))
        .map_err(|_| Error::corrupt(format!("snapshot {name}"), "name is not an id"))?;
    let bytes = repo.read_verified(FileType::Snapshot, name)?;
    Ok(SnapshotEntry {
        id,
        snapshot: Snapshot::decode(name, &bytes)?,
        file: name.to_string(),
    })
}

/// Every readable snapshot, of one account or of all, warning about
/// damaged ones on stderr.
pub fn list_warn(repo: &Repository, account: Option<&str>) -> Result<Vec<SnapshotEntry>> {
    let (good, bad) = list(repo, account)?;
    for (_, e) in bad {
        tracing::warn!("{e}");
    }
    Ok(good)
}

/// Find one snapshot by id or unique id prefix, `latest`, or a local date
/// `YYYY-MM-DD` (the newest snapshot of that day), within one account if given.
pub fn select(
    entries: &[SnapshotEntry],
    selector: &str,
    account: Option<&str>,
) -> Result<SnapshotEntry> {
    let candidates: Vec<&SnapshotEntry> = entries
        .iter()
        .filter(|e| account.is_none_or(|a| e.snapshot.account == a))
        .collect();
    let scope = || {
        account
            .map(|a| format!(" of account {a}"))
            .unwrap_or_default()
    };
    if selector == "latest" {
        return candidates
            .last()
            .map(|e| (*e).clone())
            .ok_or_else(|| Error::NotFound(format!("no snapshots{}", scope())));
    }
    if let Ok(date) = NaiveDate::parse_from_str(selector, "%Y-%m-%d") {
        return candidates
            .iter()
            .rev()
            .find(|e| e.snapshot.local_date(false) == date)
            .map(|e| (*e).clone())
            .ok_or_else(|| Error::NotFound(format!("no snapshot{} on {date}", scope())));
    }
    let lower = selector.to_ascii_lowercase();
    if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Invalid(format!(
            "{selector:?} is not a snapshot id, `latest` or a date YYYY-MM-DD"
        )));
    }
    let matches: Vec<&&SnapshotEntry> = candidates
        .iter()
        .filter(|e| e.id.to_hex().starts_with(&lower))
        .collect();
    match matches.as_slice() {
        [one] => Ok((**one).clone()),
        [] => Err(Error::NotFound(format!(
            "no snapshot{} has an id starting with {selector}",
            scope()
        ))),
        many => Err(Error::Invalid(format!(
            "{selector} is ambiguous: {} snapshots start with it",
            many.len()
        ))),
    }
}

pub fn load_tree(repo: &Repository, id: &Id) -> Result<Tree> {
    let bytes = repo.load_blob(id)?;
    Tree::decode(id, &bytes)
}

/// The node at `path` (slash-separated, relative to the snapshot root) and,
/// for the root itself, a synthetic directory node.
pub fn resolve(repo: &Repository, root: &Id, path: &[u8]) -> Result<Node> {
    let mut node = Node {
        kind: NodeKind::Dir,
        mode: 0o755,
        subtree: Some(*root),
        ..Node::default()
    };
    for part in path
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
    {
        let Some(subtree) = node.subtree.filter(|_| node.is_dir()) else {
            return Err(Error::NotFound(format!(
                "{} is not a directory",
                String::from_utf8_lossy(&node.name)
            )));
        };
        let tree = load_tree(repo, &subtree)?;
        node = tree.find(part).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "{} is not in the snapshot",
                String::from_utf8_lossy(path)
            ))
        })?;
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, secs: i64, account: &str) -> SnapshotEntry {
        let snapshot = Snapshot {
            time: Timestamp { secs, nanos: 0 },
            utc_offset: 0,
            hostname: "h".into(),
            account: account.into(),
            paths: vec![b"/home/a".to_vec()],
            tags: vec![],
            tree: Id::default(),
            parent: None,
            summary: Summary::default(),
            root: None,
            sources: Vec::new(),
            version: SNAPSHOT_VERSION,
        };
        let mut id = Id::hash(&[n]);
        id.0[0] = n; // predictable prefixes
        SnapshotEntry {
            id,
            snapshot,
            file: id.to_hex(),
        }
    }

    #[test]
    fn select_by_latest_prefix_and_account() {
        let entries = vec![
            entry(0x11, 100, "a"),
            entry(0x12, 200, "b"),
            entry(0x21, 300, "a"),
        ];
        assert_eq!(select(&entries, "latest", None).unwrap().id, entries[2].id);
        assert_eq!(
            select(&entries, "latest", Some("b")).unwrap().id,
            entries[1].id
        );
        assert_eq!(select(&entries, "21", None).unwrap().id, entries[2].id);
        assert!(matches!(
            select(&entries, "1", None),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            select(&entries, "99", None),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            select(&entries, "latest", Some("zz")),
            Err(Error::NotFound(_))
        ));
        assert!(select(&entries, "not-an-id", None).is_err());
    }

    #[test]
    fn list_reads_every_snapshot_across_threads_and_sets_damage_apart() {
        let dir = tempfile::tempdir().unwrap();
        let repo =
            Repository::init(dir.path(), crate::chunker::tests::small_params(), None).unwrap();
        // Enough files for several reader threads; saved newest first so
        // that the order comes from sorting, not from the folder.
        let count = LIST_FILES_PER_THREAD * 5 + 3;
        let mut saved: Vec<Id> = (0..count)
            .rev()
            .map(|n| save(&repo, &entry(0, 1_000 + n as i64, "a").snapshot).unwrap())
            .collect();
        saved.reverse();
        let garbage = Id::hash(b"garbage");
        repo.backend()
            .write(FileType::Snapshot, &garbage.to_hex(), b"garbage")
            .unwrap();

        let (good, bad) = list(&repo, None).unwrap();
        let listed: Vec<Id> = good.iter().map(|e| e.id).collect();
        assert_eq!(listed, saved, "every snapshot, oldest first");
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, garbage.to_hex());
    }

    #[test]
    fn folders_read_back_as_their_account() {
        for account in ["alice", "web-1_a.b", ".hidden", "..", "", "été x", "a/b"] {
            let folder = account_folder(account);
            assert_eq!(
                account_of_folder(&folder).as_deref(),
                Some(account),
                "{folder}"
            );
        }
        let long = "x".repeat(101);
        assert_eq!(account_of_folder(&account_folder(&long)), None, "hashed");
        for odd in ["%2e", "%2", "%ZZ", "%FF", "a%2Fb/c", "%61"] {
            assert_eq!(account_of_folder(odd), None, "{odd}");
        }
    }

    #[test]
    fn account_folders_are_plain_names_or_escaped() {
        assert_eq!(account_folder("alice"), "alice");
        assert_eq!(account_folder("web-1_a.b"), "web-1_a.b");
        assert_eq!(account_folder(".hidden"), "%2Ehidden");
        assert_eq!(account_folder(".."), "%2E.");
        assert_eq!(account_folder("a/b"), "a%2Fb");
        assert_eq!(account_folder("%"), "%25");
        assert_eq!(account_folder(""), "%");
        assert_eq!(account_folder("j\u{f6}rg"), "j%C3%B6rg");
        assert_eq!(account_folder("a\nb"), "a%0Ab");
        assert_eq!(account_folder(&"x".repeat(100)), "x".repeat(100));
        let long = account_folder(&"x".repeat(101));
        assert!(long.starts_with('~') && long.len() == 33, "{long}");
        assert_ne!(long, account_folder(&"x".repeat(102)));
    }

    #[test]
    fn an_accounts_snapshots_are_read_from_its_folder_alone() {
        let dir = tempfile::tempdir().unwrap();
        let repo =
            Repository::init(dir.path(), crate::chunker::tests::small_params(), None).unwrap();
        let a = save(&repo, &entry(0, 1, "alice").snapshot).unwrap();
        let b = save(&repo, &entry(0, 2, "bob").snapshot).unwrap();
        assert!(dir
            .path()
            .join("snapshots/alice")
            .join(a.to_hex())
            .is_file());
        // Garbage in bob's folder: alice's listing never opens it.
        std::fs::write(dir.path().join("snapshots/bob/garbage"), b"x").unwrap();

        let (alice, bad) = list(&repo, Some("alice")).unwrap();
        assert_eq!(alice.iter().map(|e| e.id).collect::<Vec<_>>(), [a]);
        assert_eq!(alice[0].file, format!("alice/{a}"));
        assert!(bad.is_empty(), "{bad:?}");
        let (all, bad) = list(&repo, None).unwrap();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [a, b]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, "bob/garbage");
    }

    #[test]
    fn layout_1_keeps_every_snapshot_in_one_folder() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init(dir.path(), crate::chunker::tests::small_params(), None).unwrap();
        crate::repository::tests::set_layout(dir.path(), 1);
        let repo = Repository::open(dir.path()).unwrap();
        let a = save(&repo, &entry(0, 1, "alice").snapshot).unwrap();
        save(&repo, &entry(0, 2, "bob").snapshot).unwrap();
        assert!(dir.path().join("snapshots").join(a.to_hex()).is_file());
        let (alice, _) = list(&repo, Some("alice")).unwrap();
        assert_eq!(alice.iter().map(|e| e.id).collect::<Vec<_>>(), [a]);
        assert_eq!(alice[0].file, a.to_hex());
    }

    #[test]
    fn snapshot_round_trip() {
        let e = entry(1, 1_764_000_000, "alice");
        let bytes = e.snapshot.encode();
        assert_eq!(Snapshot::decode("x", &bytes).unwrap(), e.snapshot);
        assert!(Snapshot::decode("x", &bytes[..bytes.len() - 3]).is_err());
    }
}
