//! A hosting account's snapshot (`snapfs run`): a root folder of the
//! account's user holding `files/` (the home), `mails/` (the maildirs) and
//! `postgresql/<db>.sql`, `mysql/<db>.sql` (one dump per database). A
//! folder is there only when the account has that kind of data.
//!
//! One source failing costs only that source: a dump whose tool fails is
//! left out (its file would look complete and be wrong), a home that cannot
//! be opened is left out, and each is recorded in the snapshot's
//! [`SourceStatus`] list with the tool's or the system's words.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::pipeline::{send_chunks, ChunkError, Entry, PendingFile};
use super::walk::{Visit, Walker};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::snapshot::{self, Node, NodeKind, SourceKind, SourceStatus, Timestamp, Tree};
use crate::source::dump::Dump;
use crate::source::fs::{self as source, Opened};

/// Mode of the folders and files a run makes up (the root, `postgresql/`,
/// a dump): the account's user alone, as for a home.
const MADE_UP_DIR_MODE: u32 = 0o700;
const DUMP_FILE_MODE: u32 = 0o600;

/// What goes into one account's snapshot.
pub struct AccountSources {
    /// The home (`[files] path`), when it exists.
    pub files: Option<PathBuf>,
    /// The maildir tree (`[mail] path`), when it exists.
    pub mail: Option<PathBuf>,
    /// The database dumps, each with its kind (`Postgresql`, `Mysql`).
    pub dumps: Vec<(SourceKind, Dump)>,
    /// Sources that failed before the backup began (a database server that
    /// could not be asked for the account's databases): recorded as given.
    pub failed: Vec<SourceStatus>,
    /// The account's user and group, who own the made-up folders and the
    /// dumps (root, 0/0, for an account without a user).
    pub owner: (u32, u32),
}

impl AccountSources {
    /// The recorded source paths: the folders read, by which the next
    /// night's backup finds this one as its parent.
    pub(super) fn paths(&self) -> Vec<Vec<u8>> {
        [&self.files, &self.mail]
            .into_iter()
            .flatten()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect()
    }
}

/// Where a file's content is in the parent snapshot, by what survives a
/// rename: (device, inode, size, mtime).
pub(super) type MovedFiles = HashMap<(u64, u64, u64, Timestamp), Vec<Id>>;

impl Walker<'_> {
    /// The root tree of an account's snapshot, its root node and what each
    /// source gave. Entries in name order: `files`, `mails`, `mysql`,
    /// `postgresql`.
    pub(super) fn backup_account(
        &mut self,
        account: &str,
        sources: AccountSources,
        parent: Option<Tree>,
        time: Timestamp,
    ) -> Result<(Id, Option<Node>, Vec<SourceStatus>)> {
        let find = |kind: SourceKind| {
            parent
                .as_ref()
                .and_then(|t| t.find(kind.folder().as_bytes()))
                .cloned()
        };
        let mut entries = Vec::new();
        self.account = Some(account.to_string());
        for failed in &sources.failed {
            let mut label = PathBuf::from(failed.kind.folder());
            if !failed.name.is_empty() {
                label.push(std::ffi::OsStr::from_bytes(&failed.name));
            }
            let why = failed.failure.as_deref().unwrap_or("incomplete");
            self.warn(&label, format!("left out: {why}"));
        }
        let mut statuses = sources.failed;
        if let Some(home) = &sources.files {
            let parent_node = find(SourceKind::Files);
            let status = self.folder_as(SourceKind::Files, home, parent_node, &mut entries)?;
            statuses.push(status);
        }
        if let Some(maildir) = &sources.mail {
            // Mail servers rename a message whenever its flags change and
            // move it from new/ to cur/: found by inode, it is not read again.
            let parent_node = find(SourceKind::Mail);
            self.moved = Some(moved_files(self.repo, parent_node.as_ref()));
            let status = self.folder_as(SourceKind::Mail, maildir, parent_node, &mut entries);
            self.moved = None;
            statuses.push(status?);
        }
        let mut dumps = sources.dumps;
        dumps.sort_by(|a, b| (a.0.folder(), &a.1.file_name).cmp(&(b.0.folder(), &b.1.file_name)));
        for kind in [SourceKind::Mysql, SourceKind::Postgresql] {
            let of_kind = dumps.iter_mut().filter(|(k, _)| *k == kind).map(|(_, d)| d);
            if let Some(entry) = self.dumps_folder(kind, of_kind, sources.owner, &mut statuses)? {
                entries.push(entry);
            }
        }
        statuses.sort_by(|a, b| (a.kind as u8, &a.name).cmp(&(b.kind as u8, &b.name)));
        let root = self.made_up_folder(b"", sources.owner, time);
        Ok((self.finish_tree(entries)?, Some(root), statuses))
    }

    /// The folder at `path`, stored as `kind`'s folder of the root.
    fn folder_as(
        &mut self,
        kind: SourceKind,
        path: &Path,
        parent: Option<Node>,
        entries: &mut Vec<Entry>,
    ) -> Result<SourceStatus> {
        let mut status = SourceStatus {
            kind,
            name: path.as_os_str().as_bytes().to_vec(),
            unreadable: 0,
            failure: None,
        };
        let dir = match source::open_path(path) {
            Ok(Opened::Dir(dir)) => dir,
            Ok(_) => {
                status.failure = Some("is not a folder".into());
                self.warn(path, "is not a folder; left out");
                return Ok(status);
            }
            Err(e) => {
                status.failure = Some(e.to_string());
                self.warn(path, format!("{e}; left out"));
                return Ok(status);
            }
        };
        let warned_before = self.warnings.len();
        self.root_dev = dir.stat().st_dev;
        self.label = path.to_path_buf();
        let name = kind.folder().as_bytes();
        match self.visit_opened(path, name, Opened::Dir(dir), parent.as_ref())? {
            Visit::Done(entry) => entries.push(entry),
            Visit::Skip => {}
            Visit::Descend(dir, mut node, tree) => {
                node.subtree = Some(self.walk(dir, tree)?);
                entries.push(Entry::Done(node));
            }
        }
        status.unreadable = (self.warnings.len() - warned_before) as u64;
        Ok(status)
    }

    /// `postgresql/` or `mysql/`: each dump streamed in as one file, kept
    /// only when its tool succeeded. `None` when none was kept.
    fn dumps_folder<'d>(
        &mut self,
        kind: SourceKind,
        dumps: impl Iterator<Item = &'d mut Dump>,
        owner: (u32, u32),
        statuses: &mut Vec<SourceStatus>,
    ) -> Result<Option<Entry>> {
        let mut files = Vec::new();
        for dump in dumps {
            let label = PathBuf::from(kind.folder()).join(&dump.file_name);
            let started = super::now().0;
            let mut status = SourceStatus {
                kind,
                name: dump.database.clone().into_bytes(),
                unreadable: 0,
                failure: None,
            };
            match self.stream(dump) {
                Ok((length, chunks)) => {
                    let mut node = self.made_up_folder(dump.file_name.as_bytes(), owner, started);
                    node.kind = NodeKind::File;
                    node.mode = DUMP_FILE_MODE;
                    node.size = length;
                    node.links = 1;
                    files.push(Entry::Pending(PendingFile { node, chunks }));
                    self.summary.files += 1;
                    self.summary.files_read += 1;
                    self.summary.bytes_read += length;
                    self.summary.bytes_total += length;
                }
                Err(DumpFailed::Stopped) => {
                    return Err(Error::Invalid("backup workers stopped unexpectedly".into()))
                }
                Err(DumpFailed::Because(why)) => {
                    // `why` names the dump (see `RunningDump::finish`).
                    self.warn(&label, format!("not backed up: {why}"));
                    status.failure = Some(why);
                }
            }
            statuses.push(status);
        }
        if files.is_empty() {
            return Ok(None);
        }
        self.summary.dirs += 1;
        let mut folder = self.made_up_folder(kind.folder().as_bytes(), owner, super::now().0);
        folder.subtree = Some(self.finish_tree(files)?);
        Ok(Some(Entry::Done(folder)))
    }

    /// Run one dump, its output cut into chunks as it comes: its length
    /// and chunks, once the tool said it succeeded.
    fn stream(
        &mut self,
        dump: &mut Dump,
    ) -> std::result::Result<(u64, Vec<super::pipeline::PendingChunk>), DumpFailed> {
        let mut running = dump
            .start()
            .map_err(|e| DumpFailed::Because(format!("cannot start it: {e}")))?;
        let mut chunks = Vec::new();
        let sent = send_chunks(
            &mut self.chunker,
            &self.jobs,
            self.progress,
            &mut running,
            &mut chunks,
        );
        // Always waited for, also after a read error: no zombie, and its
        // own words are the better message. A failed dump's chunks are
        // stored but referenced by nothing; prune frees them.
        let finished = running.finish();
        match (sent, finished) {
            (Err(ChunkError::Stopped), _) => Err(DumpFailed::Stopped),
            (_, Err(why)) => Err(DumpFailed::Because(why)),
            (Err(ChunkError::Read { read, error }), Ok(())) => Err(DumpFailed::Because(format!(
                "reading its output failed after {read} bytes: {error}"
            ))),
            (Ok(length), Ok(())) => Ok((length, chunks)),
        }
    }

    /// A folder that exists only in the snapshot, of the account's user.
    fn made_up_folder(&mut self, name: &[u8], owner: (u32, u32), time: Timestamp) -> Node {
        Node {
            name: name.to_vec(),
            kind: NodeKind::Dir,
            mode: MADE_UP_DIR_MODE,
            uid: owner.0,
            gid: owner.1,
            user: self.names.user(owner.0),
            group: self.names.group(owner.1),
            mtime: time,
            ctime: time,
            atime: time,
            links: 2,
            ..Node::default()
        }
    }
}

enum DumpFailed {
    /// The tool failed, or its output could not be read: the dump is left
    /// out, the backup goes on.
    Because(String),
    /// The backup's workers are gone: nothing more can be stored.
    Stopped,
}

/// Every file of the parent's folder `node`, by (device, inode, size,
/// mtime): what a rename keeps. A tree that cannot be read only means its
/// files are read again.
fn moved_files(repo: &crate::repository::Repository, node: Option<&Node>) -> MovedFiles {
    let mut found = MovedFiles::new();
    let mut pending: Vec<Id> = node.and_then(|n| n.subtree).into_iter().collect();
    while let Some(id) = pending.pop() {
        let Ok(tree) = snapshot::load_tree(repo, &id) else {
            continue;
        };
        for node in tree.nodes {
            match node.kind {
                NodeKind::Dir => pending.extend(node.subtree),
                NodeKind::File => {
                    found.insert(
                        (node.device, node.inode, node.size, node.mtime),
                        node.content,
                    );
                }
                _ => {}
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{run_account, BackupOptions};
    use crate::chunker::tests::small_params;
    use crate::repository::lock::LockKind;
    use crate::repository::Repository;
    use std::fs;
    use std::process::Command;

    fn options() -> BackupOptions {
        BackupOptions {
            paths: vec![],
            account: "alice".into(),
            hostname: "h".into(),
            time: None,
            excludes: vec![],
            one_file_system: false,
            tags: vec![],
            progress: false,
            lock_wait: std::time::Duration::from_secs(10),
        }
    }

    /// A dump whose "tool" is a shell script.
    fn dump(database: &str, script: &str) -> (SourceKind, Dump) {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        let dump = Dump {
            database: database.into(),
            file_name: format!("{database}.sql"),
            what: format!("test database {database}"),
            command,
        };
        (SourceKind::Postgresql, dump)
    }

    fn backup(repo: &Repository, sources: AccountSources) -> crate::backup::BackupOutcome {
        let lock = repo
            .lock(LockKind::Shared, "test", std::time::Duration::ZERO)
            .unwrap();
        run_account(repo, &options(), sources, &lock).unwrap()
    }

    fn names(repo: &Repository, tree: &Id) -> Vec<String> {
        let tree = snapshot::load_tree(repo, tree).unwrap();
        tree.nodes
            .iter()
            .map(|n| String::from_utf8_lossy(&n.name).into_owned())
            .collect()
    }

    #[test]
    fn files_mail_and_dumps_each_in_their_folder_and_a_failed_dump_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        fs::create_dir_all(home.join("www")).unwrap();
        fs::write(home.join("www/index.html"), b"hi").unwrap();
        let repo = Repository::init(&tmp.path().join("repo"), small_params(), None).unwrap();
        let outcome = backup(
            &repo,
            AccountSources {
                files: Some(home.clone()),
                mail: None,
                dumps: vec![
                    dump("shop", "printf 'CREATE TABLE t();\\n'"),
                    dump(
                        "blog",
                        "echo half; echo 'FATAL: connection lost' >&2; exit 1",
                    ),
                ],
                failed: vec![],
                owner: (1234, 5678),
            },
        );
        let s = &outcome.snapshot;
        assert_eq!(names(&repo, &s.tree), ["files", "postgresql"]);
        let root = s.root.as_ref().unwrap();
        assert_eq!((root.mode, root.uid, root.gid), (0o700, 1234, 5678));
        let pg = snapshot::resolve(&repo, &s.tree, b"postgresql").unwrap();
        assert_eq!((pg.mode, pg.uid), (0o700, 1234));
        assert_eq!(names(&repo, &pg.subtree.unwrap()), ["shop.sql"]);
        let shop = snapshot::resolve(&repo, &s.tree, b"postgresql/shop.sql").unwrap();
        assert_eq!((shop.mode, shop.uid, shop.size), (0o600, 1234, 18));
        let index = snapshot::resolve(&repo, &s.tree, b"files/www/index.html").unwrap();
        assert_eq!(index.size, 2);
        // What each source gave, and the warning naming the failed one.
        let failed: Vec<_> = s.partial_sources().collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].name, b"blog");
        assert_eq!(
            failed[0].failure.as_deref(),
            Some("test database blog: exited with status 1: FATAL: connection lost")
        );
        assert_eq!(s.sources.len(), 3);
        assert!(outcome.warnings[0].contains("blog.sql: not backed up: test database blog"));
        assert_eq!(s.summary.errors, 1);
    }

    #[test]
    fn a_renamed_message_is_not_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let maildir = tmp.path().join("mail");
        for folder in ["cur", "new", "tmp"] {
            fs::create_dir_all(maildir.join(folder)).unwrap();
        }
        for n in 0..20 {
            let name = format!("17000000{n:02}.M1P2.host");
            fs::write(maildir.join("new").join(&name), format!("message {n}")).unwrap();
        }
        let repo = Repository::init(&tmp.path().join("repo"), small_params(), None).unwrap();
        let sources = || AccountSources {
            files: None,
            mail: Some(maildir.clone()),
            dumps: vec![],
            failed: vec![],
            owner: (0, 0),
        };
        let first = backup(&repo, sources());
        assert_eq!(first.snapshot.summary.files_read, 20);
        // Overnight: 5 read (new/ -> cur/, flag S), 1 flagged, 2 arrive.
        for n in 0..5 {
            let name = format!("17000000{n:02}.M1P2.host");
            fs::rename(
                maildir.join("new").join(&name),
                maildir.join("cur").join(format!("{name}:2,S")),
            )
            .unwrap();
        }
        fs::rename(
            maildir.join("new/1700000010.M1P2.host"),
            maildir.join("new/1700000010.M1P2.host:2,F"),
        )
        .unwrap();
        for n in 20..22 {
            fs::write(maildir.join(format!("new/17000000{n:02}.M1P2.host")), "new").unwrap();
        }
        let second = backup(&repo, sources());
        let summary = &second.snapshot.summary;
        assert_eq!((summary.files, summary.files_read), (22, 2), "{summary:?}");
        let moved = snapshot::resolve(
            &repo,
            &second.snapshot.tree,
            b"mails/cur/1700000003.M1P2.host:2,S",
        )
        .unwrap();
        let content = repo.load_blob(&moved.content[0]).unwrap();
        assert_eq!(content, b"message 3");
    }
}
