//! The tree logic of a backup: a walk over the source's folders, one
//! stack frame per open folder, that turns each entry into a node (reading
//! files into chunks, copying unchanged ones from the parent snapshot) and
//! each finished folder into a stored tree.

use crossbeam_channel::Sender;
use globset::GlobSet;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::account::MovedFiles;
use super::pipeline::{send_chunks, ChunkError, ChunkJob, Entry, PendingFile, ZeroChunks};
use super::Source;
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::metadata::{self, UserNames};
use crate::progress::Progress;
use crate::repository::pack::BlobKind;
use crate::repository::{Packer, Repository};
use crate::snapshot::{self, Node, NodeKind, Summary, Tree};
use crate::source::fs::{self as source, Extent, OpenError, Opened, SourceDir, SourceFile};

/// Devices of mounted snapfs file systems: a user's home holds one under
/// `admin/backup`, and backing it up would store every backup inside the
/// next. A folder is recognised by the device of its descriptor, not by its
/// path: paths are only labels here (and a bind mount of the same mount
/// elsewhere has the same device).
fn snapfs_devices() -> HashSet<u64> {
    parse_snapfs_devices(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

pub(super) fn parse_snapfs_devices(mountinfo: &str) -> HashSet<u64> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // "36 35 0:52 / /home/a/admin/backup rw,... - fuse.snapfs snapfs rw,..."
            let (left, right) = line.split_once(" - ")?;
            if right.split(' ').next()? != "fuse.snapfs" {
                return None;
            }
            let (major, minor) = left.split(' ').nth(2)?.split_once(':')?;
            Some(rustix::fs::makedev(
                major.parse().ok()?,
                minor.parse().ok()?,
            ))
        })
        .collect()
}

/// What to do with one entry of a directory.
pub(super) enum Visit {
    Done(Entry),
    Skip,
    /// A folder to walk: its descriptor, its node (subtree to be filled in)
    /// and its tree in the parent snapshot.
    Descend(SourceDir, Node, Option<Tree>),
}

/// A directory on the walk's path: its entries not yet visited, and the
/// nodes of those that were.
struct Frame {
    dir: SourceDir,
    names: std::vec::IntoIter<Vec<u8>>,
    parent: Option<Tree>,
    entries: Vec<Entry>,
    /// This folder's node in its parent's tree; `None` for the walk's top.
    node: Option<Node>,
}

pub(super) struct Walker<'a> {
    pub(super) repo: &'a Repository,
    pub(super) packer: &'a Packer<'a>,
    pub(super) jobs: Sender<ChunkJob>,
    pub(super) chunker: Chunker,
    pub(super) max_chunk: u32,
    pub(super) zero_chunks: ZeroChunks,
    pub(super) excludes: GlobSet,
    pub(super) one_file_system: bool,
    pub(super) snapfs_devices: HashSet<u64>,
    pub(super) names: UserNames,
    pub(super) summary: Summary,
    pub(super) warnings: Vec<String>,
    pub(super) progress: &'a Progress,
    /// The path of the directory being walked: for messages and excludes
    /// only, never opened.
    pub(super) label: PathBuf,
    /// The device of the source being walked (`--one-file-system`).
    pub(super) root_dev: u64,
    /// While a maildir is walked: its files in the parent snapshot by what
    /// a rename keeps (see `account`).
    pub(super) moved: Option<MovedFiles>,
    /// In a run of many accounts, the account every warning names.
    pub(super) account: Option<String>,
}

impl<'a> Walker<'a> {
    pub(super) fn new(
        repo: &'a Repository,
        packer: &'a Packer<'a>,
        jobs: Sender<ChunkJob>,
        excludes: GlobSet,
        one_file_system: bool,
        progress: &'a Progress,
    ) -> Walker<'a> {
        let params = repo.config().chunker;
        Walker {
            repo,
            packer,
            jobs,
            chunker: Chunker::new(params),
            max_chunk: params.max_size,
            zero_chunks: ZeroChunks::new(params.max_size),
            excludes,
            one_file_system,
            snapfs_devices: snapfs_devices(),
            names: UserNames::default(),
            summary: Summary::default(),
            warnings: Vec::new(),
            progress,
            label: PathBuf::new(),
            root_dev: 0,
            moved: None,
            account: None,
        }
    }

    /// What the walk counted, and its warnings. Dropping the walker closes
    /// the job queue, so the workers exit.
    pub(super) fn finish(self) -> (Summary, Vec<String>) {
        (self.summary, self.warnings)
    }

    pub(super) fn warn(&mut self, path: &Path, message: impl std::fmt::Display) {
        let line = match &self.account {
            Some(account) => format!("{account}: {}: {message}", path.display()),
            None => format!("{}: {message}", path.display()),
        };
        self.progress.println(&format!("warning: {line}"));
        self.warnings.push(line);
    }

    /// One source directory: its contents are the root, and its own
    /// metadata is returned beside the root tree's id. Anything else: each
    /// source under its base name.
    pub(super) fn backup_root(
        &mut self,
        mut sources: Vec<Source>,
        parent: Option<Tree>,
    ) -> Result<(Id, Option<Node>)> {
        if let [Source {
            entry: Opened::Dir(_),
            ..
        }] = sources.as_slice()
        {
            let Some(Source {
                path,
                entry: Opened::Dir(dir),
                ..
            }) = sources.pop()
            else {
                unreachable!("matched above")
            };
            self.root_dev = dir.stat().st_dev;
            let mut root = metadata::node_from_stat(b"", dir.stat(), &mut self.names);
            root.xattrs = self.xattrs(&path, dir.xattrs());
            self.label = path;
            let tree = self.walk(dir, parent)?;
            return Ok((tree, Some(root)));
        }
        let mut entries = Vec::new();
        for source in sources {
            self.root_dev = match &source.entry {
                Opened::Dir(d) => d.stat().st_dev,
                Opened::File(f) => f.stat().st_dev,
                Opened::Symlink { stat, .. } | Opened::Special { stat, .. } => stat.st_dev,
            };
            self.label = source.path.clone();
            let parent_node = parent.as_ref().and_then(|t| t.find(&source.name));
            match self.visit_opened(&source.path, &source.name, source.entry, parent_node)? {
                Visit::Done(entry) => entries.push(entry),
                Visit::Skip => {}
                Visit::Descend(dir, mut node, tree) => {
                    node.subtree = Some(self.walk(dir, tree)?);
                    entries.push(Entry::Done(node));
                }
            }
        }
        Ok((self.finish_tree(entries)?, None))
    }

    /// Back up the folder `dir` (at `self.label`) and everything below it;
    /// returns its tree's id.
    pub(super) fn walk(&mut self, dir: SourceDir, parent: Option<Tree>) -> Result<Id> {
        let mut stack = vec![self.enter(dir, None, parent)];
        loop {
            let top = stack.last_mut().expect("the walk's top is popped last");
            if let Some(name) = top.names.next() {
                let parent_node = top.parent.as_ref().and_then(|t| t.find(&name));
                match self.visit(&top.dir, &name, parent_node)? {
                    Visit::Done(entry) => top.entries.push(entry),
                    Visit::Skip => {}
                    Visit::Descend(dir, node, tree) => {
                        self.label.push(OsStr::from_bytes(&name));
                        let frame = self.enter(dir, Some(node), tree);
                        stack.push(frame);
                    }
                }
                continue;
            }
            // Done with this folder: close it, store its tree, and give its
            // node to the folder above.
            let Frame { entries, node, .. } = stack.pop().expect("not empty");
            let id = self.finish_tree(entries)?;
            let Some(mut node) = node else {
                return Ok(id);
            };
            self.label.pop();
            node.subtree = Some(id);
            let above = stack
                .last_mut()
                .expect("a folder's parent frame is below it");
            above.entries.push(Entry::Done(node));
        }
    }

    fn enter(&mut self, dir: SourceDir, node: Option<Node>, parent: Option<Tree>) -> Frame {
        let listing = dir.entries();
        if let Some(e) = listing.error {
            let label = self.label.clone();
            self.warn(&label, format!("cannot list directory: {e}"));
        }
        Frame {
            dir,
            names: listing.names.into_iter(),
            parent,
            entries: Vec::new(),
            node,
        }
    }

    fn is_excluded(&self, path: &Path) -> bool {
        if self.excludes.is_empty() {
            return false;
        }
        self.excludes.is_match(path) || path.file_name().is_some_and(|n| self.excludes.is_match(n))
    }

    /// One entry of `dir`. `Err` is fatal to the whole backup (the
    /// repository failed); an entry that cannot be read is a warning.
    fn visit(&mut self, dir: &SourceDir, name: &[u8], parent: Option<&Node>) -> Result<Visit> {
        let label = self.label.join(OsStr::from_bytes(name));
        if self.is_excluded(&label) {
            return Ok(Visit::Skip);
        }
        if let Some(node) = self.unchanged_file(dir, name, parent, &label) {
            return Ok(Visit::Done(Entry::Done(node)));
        }
        match dir.open_entry(name) {
            Ok(opened) => self.visit_opened(&label, name, opened, parent),
            Err(OpenError::Changed) => {
                self.warn(&label, source::CHANGED);
                Ok(Visit::Skip)
            }
            Err(OpenError::Io {
                stat: Some(stat),
                error,
            }) if metadata::kind_of_mode(stat.st_mode) == NodeKind::Dir => {
                // A folder we may look at but not open (a backup run by a
                // user): keep it empty, with the metadata of its `fstatat`,
                // so that a restore recreates it.
                self.warn(&label, format!("cannot open directory: {error}"));
                self.summary.dirs += 1;
                let mut node = metadata::node_from_stat(name, &stat, &mut self.names);
                node.subtree = Some(self.finish_tree(Vec::new())?);
                Ok(Visit::Done(Entry::Done(node)))
            }
            Err(OpenError::Io {
                stat: Some(_),
                error,
            }) => {
                self.warn(&label, format!("cannot open: {error}"));
                Ok(Visit::Skip)
            }
            Err(OpenError::Io { stat: None, error }) => {
                self.warn(&label, format!("vanished or unreadable: {error}"));
                Ok(Visit::Skip)
            }
            // Only source paths are refused; entries are opened by name.
            Err(OpenError::Refused(why)) => {
                self.warn(&label, why);
                Ok(Visit::Skip)
            }
        }
    }

    pub(super) fn visit_opened(
        &mut self,
        label: &Path,
        name: &[u8],
        opened: Opened,
        parent: Option<&Node>,
    ) -> Result<Visit> {
        match opened {
            Opened::Dir(dir) => {
                self.summary.dirs += 1;
                let stat = *dir.stat();
                let mut node = metadata::node_from_stat(name, &stat, &mut self.names);
                node.xattrs = self.xattrs(label, dir.xattrs());
                let skip_contents = (self.one_file_system && stat.st_dev != self.root_dev)
                    || self.snapfs_devices.contains(&stat.st_dev)
                    || dir.has_cachedir_tag();
                if skip_contents {
                    node.subtree = Some(self.finish_tree(Vec::new())?);
                    return Ok(Visit::Done(Entry::Done(node)));
                }
                let parent_tree = parent
                    .filter(|p| p.is_dir())
                    .and_then(|p| p.subtree)
                    .and_then(|id| snapshot::load_tree(self.repo, &id).ok());
                Ok(Visit::Descend(dir, node, parent_tree))
            }
            Opened::File(file) => {
                let mut node = metadata::node_from_stat(name, file.stat(), &mut self.names);
                node.xattrs = self.xattrs(label, file.xattrs());
                Ok(match self.backup_file(label, file, node, parent)? {
                    Some(entry) => Visit::Done(entry),
                    None => Visit::Skip,
                })
            }
            Opened::Symlink {
                stat,
                target,
                xattrs,
            } => {
                let mut node = metadata::node_from_stat(name, &stat, &mut self.names);
                node.xattrs = self.xattrs(label, xattrs);
                node.link_target = target;
                Ok(Visit::Done(Entry::Done(node)))
            }
            Opened::Special { stat, xattrs } => {
                let mut node = metadata::node_from_stat(name, &stat, &mut self.names);
                node.xattrs = self.xattrs(label, xattrs);
                Ok(Visit::Done(Entry::Done(node)))
            }
        }
    }

    /// A file that did not change since the parent snapshot, taken from it
    /// without opening the file: its metadata from `fstatat` of the name in
    /// the folder's descriptor (what is at that name, no link followed),
    /// its content and xattrs from the parent's node (setting an xattr
    /// changes the ctime, which `unchanged` compares). Opening each of
    /// 100,000 unchanged files cost a quarter of an unchanged re-backup.
    /// In a maildir, a file found by inode under another name (a message
    /// whose flags changed) takes its content from there; its xattrs are
    /// read, since a rename changes the ctime anyway.
    fn unchanged_file(
        &mut self,
        dir: &SourceDir,
        name: &[u8],
        parent: Option<&Node>,
        label: &Path,
    ) -> Option<Node> {
        let parent = parent.filter(|p| p.kind == NodeKind::File);
        if parent.is_none() && self.moved.is_none() {
            return None;
        }
        let seen = dir.stat_entry(name).ok()?;
        if metadata::kind_of_mode(seen.st_mode) != NodeKind::File {
            return None;
        }
        let mut node = metadata::node_from_stat(name, &seen, &mut self.names);
        let (content, xattrs) = match parent.filter(|p| unchanged(p, &node)) {
            Some(p) => (p.content.clone(), p.xattrs.clone()),
            None => {
                let key = (node.device, node.inode, node.size, node.mtime);
                let content = self.moved.as_ref()?.get(&key)?.clone();
                (content, dir.entry_xattrs(name).ok()?)
            }
        };
        if !content.iter().all(|id| self.repo.has_blob(id)) {
            return None;
        }
        node.content = content;
        node.xattrs = xattrs;
        self.summary.files += 1;
        self.summary.files_unchanged += 1;
        self.summary.bytes_total += node.size;
        self.progress.file(label, node.size);
        Some(node)
    }

    fn xattrs(
        &mut self,
        label: &Path,
        read: io::Result<Vec<snapshot::Xattr>>,
    ) -> Vec<snapshot::Xattr> {
        read.unwrap_or_else(|e| {
            self.warn(label, format!("cannot read extended attributes: {e}"));
            Vec::new()
        })
    }

    /// `Ok(None)`: skipped with a warning.
    fn backup_file(
        &mut self,
        label: &Path,
        file: SourceFile,
        mut node: Node,
        parent: Option<&Node>,
    ) -> Result<Option<Entry>> {
        self.summary.files += 1;
        self.progress.file(label, node.size);
        if let Some(p) = parent
            .filter(|p| unchanged(p, &node) && p.content.iter().all(|id| self.repo.has_blob(id)))
        {
            node.content = p.content.clone();
            self.summary.files_unchanged += 1;
            self.summary.bytes_total += node.size;
            return Ok(Some(Entry::Done(node)));
        }
        let mut chunks = Vec::new();
        // Bytes of content in `chunks`, holes included; and bytes read.
        let mut length = 0u64;
        let mut read = 0u64;
        for extent in file.extents(node.size, u64::from(self.max_chunk)) {
            match extent {
                Extent::Hole { start, end } => {
                    self.zero_chunks
                        .push(self.packer, end - start, &mut chunks)?;
                    length = end;
                }
                Extent::Data { start, end } => {
                    let reader = file.range(start, end);
                    match send_chunks(
                        &mut self.chunker,
                        &self.jobs,
                        self.progress,
                        reader,
                        &mut chunks,
                    ) {
                        Ok(n) => {
                            read += n;
                            length = start + n;
                        }
                        Err(ChunkError::Read { read: n, error }) => {
                            let at = start + n;
                            self.warn(label, format!("read failed after {at} bytes: {error}"));
                            return Ok(None);
                        }
                        Err(ChunkError::Stopped) => {
                            return Err(Error::Invalid(
                                "backup workers stopped unexpectedly".into(),
                            ));
                        }
                    }
                    if length < end {
                        // Shorter than its fstat said: it shrank meanwhile.
                        break;
                    }
                }
            }
        }
        self.summary.files_read += 1;
        self.summary.bytes_read += read;
        self.summary.bytes_total += length;
        let before = file.stat();
        let changed = match file.restat() {
            Ok(after) => {
                after.st_size != before.st_size
                    || after.st_mtime != before.st_mtime
                    || after.st_mtime_nsec != before.st_mtime_nsec
            }
            Err(_) => false,
        };
        if changed || length != node.size {
            self.warn(label, "changed while it was read; stored what was read");
        }
        node.size = length;
        Ok(Some(Entry::Pending(PendingFile { node, chunks })))
    }

    /// Wait for the chunks of the directory's files, then store its tree.
    pub(super) fn finish_tree(&mut self, entries: Vec<Entry>) -> Result<Id> {
        let nodes = entries
            .into_iter()
            .map(Entry::wait)
            .collect::<Result<Vec<_>>>()?;
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
