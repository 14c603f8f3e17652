//! `snapfs backup`: walk source paths, store new content, write a snapshot.
//!
//! Data flow: the walker (the calling thread) reads directories and files in
//! name order and cuts files into chunks; each chunk goes through a bounded
//! queue to worker threads that hash, compress and pack it; the walker keeps
//! one result slot per chunk and, at the end of each directory, collects the
//! chunk ids in order and stores the directory's tree. Memory is bounded by
//! the queue (a few chunks per worker) plus the trees on the walk's path.
//!
//! Files whose size, mtime, ctime and inode match the parent snapshot's node
//! are not read at all: their chunk list is copied from the parent.

use crossbeam_channel::{bounded, Receiver, Sender};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::HashSet;
use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::chunker::Chunker;
use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::metadata::{self, UserNames};
use crate::progress::Progress;
use crate::repository::lock::{Lock, LockKind};
use crate::repository::pack::BlobKind;
use crate::repository::{Packer, Repository};
use crate::snapshot::{self, Node, NodeKind, Snapshot, SnapshotEntry, Summary, Timestamp, Tree};

pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub account: String,
    pub hostname: String,
    /// When the snapshot is dated: (UTC time, offset of the local clock).
    pub time: Option<(Timestamp, i32)>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub tags: Vec<String>,
    pub progress: bool,
    /// How long to wait for a running prune before giving up.
    pub lock_wait: std::time::Duration,
}

pub struct BackupOutcome {
    pub id: Id,
    pub snapshot: Snapshot,
    /// One line per entry that could not be read; non-empty means partial.
    pub warnings: Vec<String>,
}

/// The walk's view of a source path: where it is and what it is called in
/// the snapshot.
struct Source {
    path: PathBuf,
    name: Vec<u8>,
}

pub fn run(repo: &Repository, opts: &BackupOptions) -> Result<BackupOutcome> {
    let started = Instant::now();
    let sources = resolve_sources(&opts.paths)?;
    // The shared lock keeps prune out until the snapshot is written. The
    // index is read again under the lock: one loaded before it may list
    // blobs that a prune deleted meanwhile, and deduplicating against those
    // would produce a snapshot with holes.
    let lock = Lock::acquire(
        repo.backend().clone(),
        LockKind::Shared,
        &format!("backup of {}", opts.account),
        opts.lock_wait,
    )?;
    repo.reload_index()?;
    let (time, utc_offset) = opts.time.unwrap_or_else(now);
    let abs_paths: Vec<Vec<u8>> = sources
        .iter()
        .map(|s| s.path.as_os_str().as_bytes().to_vec())
        .collect();
    let parent = find_parent(repo, &opts.account, &abs_paths)?;
    let parent_root = parent
        .as_ref()
        .and_then(|p| snapshot::load_tree(repo, &p.snapshot.tree).ok());

    let excludes = build_excludes(&opts.excludes)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let packer = repo.packer();
    let (jobs_tx, jobs_rx) = bounded::<ChunkJob>(workers * 2);
    let progress = Progress::new(opts.progress);

    let walked = std::thread::scope(|scope| {
        for _ in 0..workers {
            let jobs = jobs_rx.clone();
            let packer = &packer;
            scope.spawn(move || worker(jobs, packer));
        }
        drop(jobs_rx);
        let mut walker = Walker {
            repo,
            packer: &packer,
            jobs: jobs_tx,
            chunker: Chunker::new(repo.config().chunker),
            excludes,
            one_file_system: opts.one_file_system,
            snapfs_mounts: snapfs_mountpoints(),
            names: UserNames::default(),
            summary: Summary::default(),
            warnings: Vec::new(),
            progress: &progress,
        };
        let root = walker.backup_root(&sources, parent_root.as_ref());
        // Dropping the walker closes the job queue so the workers exit.
        let Walker {
            summary, warnings, ..
        } = walker;
        root.map(|root| (root, summary, warnings))
    });
    progress.finish();
    let (root, mut summary, warnings) = walked?;
    let root_meta = root_folder_meta(&sources);

    let stats = packer.flush()?;
    summary.bytes_added = stats.bytes_added;
    summary.bytes_stored = stats.bytes_stored;
    summary.errors = warnings.len() as u64;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let snapshot = Snapshot {
        time,
        utc_offset,
        hostname: opts.hostname.clone(),
        account: opts.account.clone(),
        paths: abs_paths,
        tags: opts.tags.clone(),
        tree: root,
        parent: parent.map(|p| p.id),
        summary,
        root: root_meta,
        version: snapshot::SNAPSHOT_VERSION,
    };
    if let Some(e) = lock.refresh_error() {
        return Err(Error::Locked(format!(
            "lost the repository lock while backing up: {e}"
        )));
    }
    let id = snapshot::save(repo, &snapshot)?;
    drop(lock);
    Ok(BackupOutcome {
        id,
        snapshot,
        warnings,
    })
}

/// The source folder's own metadata, when one folder's contents are the
/// snapshot root.
fn root_folder_meta(sources: &[Source]) -> Option<Node> {
    let [only] = sources else { return None };
    let meta = fs::symlink_metadata(&only.path)
        .ok()
        .filter(|m| m.is_dir())?;
    let mut node = metadata::node_from_metadata(b"", &meta, &mut UserNames::default());
    node.xattrs = metadata::read_xattrs(&only.path).unwrap_or_default();
    Some(node)
}

fn now() -> (Timestamp, i32) {
    let local = chrono::Local::now();
    let utc = local.to_utc();
    (
        Timestamp {
            secs: utc.timestamp(),
            nanos: utc.timestamp_subsec_nanos(),
        },
        local.offset().local_minus_utc(),
    )
}

fn resolve_sources(paths: &[PathBuf]) -> Result<Vec<Source>> {
    if paths.is_empty() {
        return Err(Error::Invalid(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let mut sources = Vec::new();
    let mut names = HashSet::new();
    for path in paths {
        let abs = std::path::absolute(path).at(path)?;
        fs::symlink_metadata(&abs).at(&abs)?;
        let name = abs
            .file_name()
            .map_or(b"root".to_vec(), |n| n.as_bytes().to_vec());
        if paths.len() > 1 && !names.insert(name.clone()) {
            return Err(Error::Invalid(format!(
                "two paths are both called {} in the snapshot root; back them up separately",
                String::from_utf8_lossy(&name)
            )));
        }
        sources.push(Source { path: abs, name });
    }
    // Trees are sorted by name; so are the sources that become the root's
    // entries (and the recorded paths, so the parent is found in any order).
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(sources)
}

/// The newest snapshot of the same account and source paths.
fn find_parent(
    repo: &Repository,
    account: &str,
    paths: &[Vec<u8>],
) -> Result<Option<SnapshotEntry>> {
    let snapshots = snapshot::list_warn(repo, Some(account))?;
    Ok(snapshots
        .into_iter()
        .rev()
        .find(|e| e.snapshot.account == account && e.snapshot.paths == paths))
}

fn build_excludes(patterns: &[String]) -> Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(p)
            .map_err(|e| Error::Invalid(format!("bad --exclude pattern {p:?}: {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| Error::Invalid(format!("bad --exclude patterns: {e}")))
}

/// Mount points of snapfs file systems: a user's home holds one under
/// `admin/backup`, and backing it up would store every backup inside the next.
fn snapfs_mountpoints() -> HashSet<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return HashSet::new();
    };
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mountpoint = left.split(' ').nth(4)?;
            (fstype == "fuse.snapfs").then(|| PathBuf::from(unescape_mountinfo(mountpoint)))
        })
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One chunk on its way to a worker, and where to put its id.
struct ChunkJob {
    data: Vec<u8>,
    kind: BlobKind,
    result: Sender<Result<Id>>,
}

fn worker(jobs: Receiver<ChunkJob>, packer: &Packer) {
    for job in jobs {
        let result = packer.add(job.kind, &job.data).map(|(id, _)| id);
        // The walker may have given up on this file; nobody is listening then.
        let _ = job.result.send(result);
    }
}

/// A file whose chunks are still in the workers' hands.
struct PendingFile {
    node: Node,
    chunks: Vec<Receiver<Result<Id>>>,
}

enum Entry {
    Done(Node),
    Pending(PendingFile),
}

struct Walker<'a> {
    repo: &'a Repository,
    packer: &'a Packer<'a>,
    jobs: Sender<ChunkJob>,
    chunker: Chunker,
    excludes: GlobSet,
    one_file_system: bool,
    snapfs_mounts: HashSet<PathBuf>,
    names: UserNames,
    summary: Summary,
    warnings: Vec<String>,
    progress: &'a Progress,
}

impl Walker<'_> {
    fn warn(&mut self, path: &Path, message: impl std::fmt::Display) {
        let line = format!("{}: {message}", path.display());
        self.progress.println(&format!("warning: {line}"));
        self.warnings.push(line);
    }

    /// One source directory: its contents are the root. Anything else: each
    /// source under its base name.
    fn backup_root(&mut self, sources: &[Source], parent: Option<&Tree>) -> Result<Id> {
        if let [only] = sources {
            let meta = fs::symlink_metadata(&only.path).at(&only.path)?;
            if meta.is_dir() {
                let dev = meta.dev();
                return self.backup_dir(&only.path, parent, dev);
            }
        }
        let mut entries = Vec::new();
        for source in sources {
            let parent_node = parent.and_then(|t| t.find(&source.name));
            let meta = match fs::symlink_metadata(&source.path) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(&source.path, e);
                    continue;
                }
            };
            let dev = meta.dev();
            if let Some(entry) =
                self.backup_entry(&source.path, &source.name, &meta, parent_node, dev)?
            {
                entries.push(entry);
            }
        }
        self.finish_tree(entries)
    }

    fn backup_dir(&mut self, path: &Path, parent: Option<&Tree>, dev: u64) -> Result<Id> {
        let mut children = Vec::new();
        match fs::read_dir(path) {
            Ok(iter) => {
                for entry in iter {
                    match entry {
                        Ok(entry) => children.push(entry.file_name()),
                        Err(e) => self.warn(path, format!("cannot list directory: {e}")),
                    }
                }
            }
            Err(e) => self.warn(path, format!("cannot list directory: {e}")),
        }
        children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut entries = Vec::new();
        for name in children {
            let child = path.join(&name);
            if self.is_excluded(&child) {
                continue;
            }
            let meta = match fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(&child, format!("vanished or unreadable: {e}"));
                    continue;
                }
            };
            let parent_node = parent.and_then(|t| t.find(name.as_bytes()));
            if let Some(entry) =
                self.backup_entry(&child, name.as_bytes(), &meta, parent_node, dev)?
            {
                entries.push(entry);
            }
        }
        self.finish_tree(entries)
    }

    fn is_excluded(&self, path: &Path) -> bool {
        if self.excludes.is_empty() {
            return false;
        }
        self.excludes.is_match(path) || path.file_name().is_some_and(|n| self.excludes.is_match(n))
    }

    /// Back up one entry. `Ok(None)` means it was skipped with a warning;
    /// `Err` is fatal to the whole backup (the repository failed).
    fn backup_entry(
        &mut self,
        path: &Path,
        name: &[u8],
        meta: &Metadata,
        parent: Option<&Node>,
        root_dev: u64,
    ) -> Result<Option<Entry>> {
        let mut node = metadata::node_from_metadata(name, meta, &mut self.names);
        match metadata::read_xattrs(path) {
            Ok(x) => node.xattrs = x,
            Err(e) => self.warn(path, format!("cannot read extended attributes: {e}")),
        }
        match node.kind {
            NodeKind::Dir => {
                self.summary.dirs += 1;
                let skip_contents = (self.one_file_system && meta.dev() != root_dev)
                    || self.snapfs_mounts.contains(path)
                    || has_cachedir_tag(path);
                let subtree = if skip_contents {
                    self.finish_tree(Vec::new())?
                } else {
                    let parent_tree = parent
                        .filter(|p| p.is_dir())
                        .and_then(|p| p.subtree)
                        .and_then(|id| snapshot::load_tree(self.repo, &id).ok());
                    self.backup_dir(path, parent_tree.as_ref(), root_dev)?
                };
                node.subtree = Some(subtree);
                Ok(Some(Entry::Done(node)))
            }
            NodeKind::Symlink => match fs::read_link(path) {
                Ok(target) => {
                    node.link_target = target.as_os_str().as_bytes().to_vec();
                    Ok(Some(Entry::Done(node)))
                }
                Err(e) => {
                    self.warn(path, format!("cannot read symlink: {e}"));
                    Ok(None)
                }
            },
            NodeKind::File => self.backup_file(path, node, meta, parent),
            _ => Ok(Some(Entry::Done(node))),
        }
    }

    fn backup_file(
        &mut self,
        path: &Path,
        mut node: Node,
        meta: &Metadata,
        parent: Option<&Node>,
    ) -> Result<Option<Entry>> {
        self.summary.files += 1;
        self.progress.file(path, node.size);
        if let Some(p) = parent
            .filter(|p| unchanged(p, &node) && p.content.iter().all(|id| self.repo.has_blob(id)))
        {
            node.content = p.content.clone();
            self.summary.files_unchanged += 1;
            self.summary.bytes_total += node.size;
            return Ok(Some(Entry::Done(node)));
        }
        let file = match open_for_backup(path) {
            Ok(f) => f,
            Err(e) => {
                self.warn(path, format!("cannot open: {e}"));
                return Ok(None);
            }
        };
        let mut chunks = Vec::new();
        let mut read = 0u64;
        let mut stream = self.chunker.chunks(file);
        loop {
            let chunk = match stream.next_chunk() {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    let line = format!("{}: read failed after {read} bytes: {e}", path.display());
                    self.progress.println(&format!("warning: {line}"));
                    self.warnings.push(line);
                    return Ok(None);
                }
            };
            read += chunk.len() as u64;
            self.progress.bytes(chunk.len() as u64);
            let (tx, rx) = bounded(1);
            let job = ChunkJob {
                data: chunk.to_vec(),
                kind: BlobKind::Data,
                result: tx,
            };
            if self.jobs.send(job).is_err() {
                return Err(Error::Invalid("backup workers stopped unexpectedly".into()));
            }
            chunks.push(rx);
        }
        self.summary.files_read += 1;
        self.summary.bytes_read += read;
        self.summary.bytes_total += read;
        if let Ok(after) = fs::symlink_metadata(path) {
            if after.size() != meta.size()
                || after.mtime() != meta.mtime()
                || after.mtime_nsec() != meta.mtime_nsec()
            {
                self.warn(path, "changed while it was read; stored what was read");
            }
        }
        if read != node.size {
            node.size = read;
        }
        Ok(Some(Entry::Pending(PendingFile { node, chunks })))
    }

    /// Wait for the chunks of the directory's files, then store its tree.
    fn finish_tree(&mut self, entries: Vec<Entry>) -> Result<Id> {
        let mut nodes = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry {
                Entry::Done(node) => nodes.push(node),
                Entry::Pending(PendingFile { mut node, chunks }) => {
                    node.content.reserve(chunks.len());
                    for rx in chunks {
                        let id = rx.recv().map_err(|_| {
                            Error::Invalid("backup worker stopped unexpectedly".into())
                        })??;
                        node.content.push(id);
                    }
                    nodes.push(node);
                }
            }
        }
        let tree = Tree { nodes };
        let (id, _) = self.packer.add(BlobKind::Tree, &tree.encode())?;
        Ok(id)
    }
}

/// The parent's node can stand in for this file without reading it.
fn unchanged(parent: &Node, now: &Node) -> bool {
    parent.kind == NodeKind::File
        && parent.size == now.size
        && parent.mtime == now.mtime
        && parent.ctime == now.ctime
        && parent.inode == now.inode
}

/// Open without updating the access time where we may (O_NOATIME is allowed
/// for the file's owner and root only).
fn open_for_backup(path: &Path) -> std::io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true).custom_flags(libc::O_NOATIME);
    match options.open(path) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        other => other,
    }
}

/// https://bford.info/cachedir/: a folder that says it holds only a cache.
fn has_cachedir_tag(dir: &Path) -> bool {
    const SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";
    let mut buf = [0u8; 43];
    File::open(dir.join("CACHEDIR.TAG"))
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok_and(|_| buf == SIGNATURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/home/a\040b/admin"), "/home/a b/admin");
        assert_eq!(unescape_mountinfo(r"/x\\"), r"/x\\");
    }

    #[test]
    fn cachedir_tag_needs_the_signature() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_cachedir_tag(dir.path()));
        fs::write(dir.path().join("CACHEDIR.TAG"), "not it").unwrap();
        assert!(!has_cachedir_tag(dir.path()));
        fs::write(
            dir.path().join("CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55\n",
        )
        .unwrap();
        assert!(has_cachedir_tag(dir.path()));
    }
}
