//! What the repository looks like as a file system is defined here and only
//! here: plain Rust, no FUSE types, tested without a kernel. `super::fuse`
//! only translates these calls and their errors.
//!
//! ```text
//! /                     one directory per snapshot, and `latest`
//! /2025-11-24/          the snapshot's root tree
//! /2025-11-24_183000/   a later snapshot of the same day
//! /latest -> 2025-11-24_183000
//! ```
//!
//! or, with several accounts, the same one level down (`/alice/latest`);
//! `top` decides which.
//!
//! Inode numbers are allocated on first sight and never reused, so they are
//! stable for the life of the mount. The entries of a directory get a range
//! of numbers the first time one of them is needed (trees are immutable, so
//! entry `idx` is always `first + idx`); the table stores one record per
//! directory (tree id and range), not per file, and trees come from a small
//! cache. Hard links (one device and inode in the source, more than one
//! link) share the first number given to them within a snapshot.
//!
//! Nothing is read at mount time but the snapshot records (and, with
//! account folders, not even those: see `top`); trees load when a
//! directory is first looked into. The module's parts: `inodes` (the
//! numbers), `top` (the levels above the snapshots), `attrs` (what
//! `stat` and xattrs show), `files` (the read path, over a
//! [`ChunkSource`] shared by every file); this file holds the operations.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::Utc;

use crate::buffer_pool::BufferPool;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::mount::acl;
use crate::repository::Repository;
use crate::snapshot::chunk_source::{ChunkSource, ChunkSourceOptions};
use crate::snapshot::{Node, NodeKind, Timestamp, Tree};
use crate::weighted_lru::WeightedLru;
use files::{OpenFile, MAX_READ, READERS_BYTES};
use inodes::{Inode, Inodes};
use top::Snapshots;
pub use top::Top;

mod attrs;
mod files;
mod inodes;
mod top;

pub const ROOT_INO: u64 = 1;
pub const LATEST_NAME: &str = "latest";

/// The extended attribute the mount does not present, though backups keep
/// it and `restore` puts it back: the SELinux label.
///
/// Why: on an SELinux host the kernel labels a FUSE mount's files itself
/// and never asks the mount; elsewhere the label means nothing to whoever
/// browses a backup. But `ls -l` asks for it on every file, a kernel round
/// trip each, and stops asking once a file system says "not supported":
/// `ls -lR` over the mount took 2 round trips a file instead of 1.
pub const NOT_PRESENTED_XATTR: &[u8] = b"security.selinux";

/// Memory for decoded trees. Measured by estimate, not by encoded size: a
/// decoded node (struct, name, owner strings, chunk ids) takes four to five
/// times its ~100 encoded bytes. 100k entries are about 45 MiB decoded.
/// The newest tree stays even when larger, so one huge folder is not
/// decoded again per lookup; `find` and `tar` need only the folders they
/// are in, and every byte here counts against the mount's 64 MiB beside
/// the chunk cache.
const TREE_CACHE_BYTES: usize = 16 << 20;
const DECODED_NODE_BYTES: usize = 448;

#[derive(Clone, Debug)]
pub struct Options {
    /// What the root shows: one account's days, or account folders.
    pub top: Top,
    /// Name snapshot folders by their UTC date instead of the local one.
    pub utc: bool,
    /// Budget of the decompressed chunk cache, in bytes.
    pub cache_bytes: usize,
    /// List the snapshots again at most this often (on access to the root).
    pub relist_every: Duration,
    /// Background threads fetching the chunks after a sequential read; 0
    /// disables prefetching.
    pub prefetch_threads: usize,
    /// Give the chunk cache's memory back after this long without reads
    /// (`None`: keep it).
    pub release_idle_after: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            top: Top::Auto,
            utc: false,
            cache_bytes: 256 << 20,
            relist_every: Duration::from_secs(2),
            prefetch_threads: 3,
            // A server runs a mount per account, mostly idle: each would
            // otherwise hold the budget it once filled for as long as it
            // runs. The kernel's page cache keeps what was read anyway.
            release_idle_after: Some(Duration::from_secs(60)),
        }
    }
}

/// The attributes of one inode, as `stat` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    /// Permission bits (no type bits).
    pub perm: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks, from the size: `du` sums what a restore would take.
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub rdev: u64,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: NodeKind,
    pub name: Vec<u8>,
    /// The offset to pass to `readdir` to continue after this entry.
    pub next: u64,
    /// Its attributes, so `ls -l` needs no lookup per entry (READDIRPLUS).
    pub attr: Attr,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Warned {
    Object(Id),
    File(u64),
}

pub struct SnapshotFs {
    repo: Arc<Repository>,
    chunks: ChunkSource,
    opts: Options,
    snapshots: RwLock<Snapshots>,
    /// Held while listing: two threads never list at once.
    listing: Mutex<()>,
    /// Snapshots were read since the index was last refreshed.
    new_since_index: Mutex<bool>,
    inodes: RwLock<Inodes>,
    trees: Mutex<WeightedLru<Id, Arc<Tree>>>,
    /// Files being read, by inode number.
    readers: Mutex<WeightedLru<u64, Arc<OpenFile>>>,
    /// What was already warned about: one log line per damaged chunk or
    /// tree, or file whose chunks cannot be mapped, not one per read.
    warned: Mutex<HashSet<Warned>>,
    /// Where reads across two chunks are gathered (about half of the
    /// kernel's megabyte reads of a large file).
    span_buffers: BufferPool,
    /// Owner and times of the folders that exist only in the mount.
    owner: (u32, u32),
    mounted_at: Timestamp,
}

impl SnapshotFs {
    /// The view of `repo`. Reads the snapshot records, nothing else.
    pub fn new(repo: Repository, opts: Options) -> Result<SnapshotFs> {
        let repo = Arc::new(repo);
        let chunks = ChunkSource::new(
            repo.clone(),
            &ChunkSourceOptions {
                cache_bytes: opts.cache_bytes,
                prefetch_threads: opts.prefetch_threads,
                release_idle_after: opts.release_idle_after,
            },
        );
        let mut inodes = Inodes::default();
        inodes.push(Inode::Root);
        let now = Utc::now();
        let fs = SnapshotFs {
            repo,
            chunks,
            opts,
            snapshots: RwLock::new(Snapshots::default()),
            listing: Mutex::new(()),
            new_since_index: Mutex::new(false),
            inodes: RwLock::new(inodes),
            trees: Mutex::new(WeightedLru::new(TREE_CACHE_BYTES)),
            readers: Mutex::new(WeightedLru::new(READERS_BYTES)),
            warned: Mutex::new(HashSet::new()),
            span_buffers: BufferPool::new(4, MAX_READ),
            owner: unsafe { (libc::geteuid(), libc::getegid()) },
            mounted_at: Timestamp {
                secs: now.timestamp(),
                nanos: now.timestamp_subsec_nanos(),
            },
        };
        fs.list_at_mount()?;
        Ok(fs)
    }

    pub fn chunk_cache_stats(&self) -> crate::chunk_cache::CacheStats {
        self.chunks.stats()
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// How long the kernel may cache what this inode's attributes and
    /// entries say: the root and account folders change as snapshots come
    /// and go (and with them which inode `latest` is), a snapshot's
    /// content never does.
    pub fn ttl(&self, ino: u64) -> Duration {
        if self.is_immutable(ino) {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs(1)
        }
    }

    /// Whether the kernel may keep this inode's pages and listings across
    /// opens (everything inside a snapshot is immutable).
    pub fn is_immutable(&self, ino: u64) -> bool {
        // Account folders are among the few inodes of `special`: no search
        // of the entry ranges on every reply.
        ino != ROOT_INO
            && !matches!(
                read(&self.inodes).special.get(&ino),
                Some(Inode::AccountRoot { .. })
            )
    }

    // ---- trees and inodes inside snapshots ----

    fn inode(&self, ino: u64) -> Result<Inode> {
        read(&self.inodes)
            .get(ino)
            .ok_or_else(|| Error::NotFound(format!("no inode {ino}")))
    }

    fn tree(&self, id: &Id) -> Result<Arc<Tree>> {
        if let Some(tree) = lock(&self.trees).get(id) {
            return Ok(tree);
        }
        let bytes = self
            .repo
            .load_blob(id)
            .inspect_err(|e| self.warn_once(Warned::Object(*id), || format!("tree {id}: {e}")))?;
        let tree = Arc::new(
            Tree::decode(id, &bytes)
                .inspect_err(|e| self.warn_once(Warned::Object(*id), || e.to_string()))?,
        );
        let size = bytes.len() + tree.nodes.len() * DECODED_NODE_BYTES;
        lock(&self.trees).put(*id, tree.clone(), size);
        Ok(tree)
    }

    fn slot_tree(&self, slot: u32) -> Id {
        read(&self.snapshots).slots[slot as usize].snapshot.tree
    }

    /// The node an entry inode stands for (in its cached tree).
    fn entry_node(&self, tree: &Id, idx: u32) -> Result<(Arc<Tree>, usize)> {
        let t = self.tree(tree)?;
        if idx as usize >= t.nodes.len() {
            return Err(Error::corrupt(
                format!("tree {tree}"),
                "shorter than when it was read",
            ));
        }
        Ok((t, idx as usize))
    }

    /// The tree listing directory `ino`, its id, and the snapshot it is in.
    fn dir_tree(&self, ino: u64) -> Result<(u32, Id, Arc<Tree>)> {
        match self.inode(ino)? {
            Inode::SnapshotRoot { slot } => {
                let id = self.slot_tree(slot);
                Ok((slot, id, self.tree(&id)?))
            }
            Inode::Entry {
                slot, tree, idx, ..
            } => {
                let (t, i) = self.entry_node(&tree, idx)?;
                let node = &t.nodes[i];
                match node.subtree.filter(|_| node.is_dir()) {
                    Some(sub) => Ok((slot, sub, self.tree(&sub)?)),
                    None => Err(not_a_dir(&node.name)),
                }
            }
            Inode::Root | Inode::AccountRoot { .. } | Inode::Latest { .. } => {
                Err(Error::Invalid(format!("inode {ino} has no tree")))
            }
        }
    }

    /// The inode of entry `idx` of directory `parent`, whose tree `tree`
    /// has `len` entries.
    fn child_ino(
        &self,
        parent: u64,
        slot: u32,
        tree: &Id,
        len: usize,
        idx: usize,
        node: &Node,
    ) -> u64 {
        let link_key =
            (!node.is_dir() && node.links > 1).then_some((slot, node.device, node.inode));
        {
            let inodes = read(&self.inodes);
            if let Some(&ino) = link_key.as_ref().and_then(|k| inodes.hard_links.get(k)) {
                return ino;
            }
            if let (Some(first), None) = (inodes.range_start(parent), &link_key) {
                return first + idx as u64;
            }
        }
        let mut inodes = write(&self.inodes);
        let ino = inodes.allocate_range(parent, slot, *tree, len) + idx as u64;
        match link_key {
            // The first link seen names them all (another thread may have
            // been first meanwhile).
            Some(k) => *inodes.hard_links.entry(k).or_insert(ino),
            None => ino,
        }
    }

    // ---- the operations ----

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        match self.inode(parent)? {
            Inode::Root => return self.getattr(self.lookup_top(name)?),
            Inode::AccountRoot { account } => {
                self.maybe_relist_account(account);
                return self.getattr(self.lookup_day(account, name)?);
            }
            _ => {}
        }
        let (slot, tree_id, tree) = self.dir_tree(parent)?;
        let idx = tree
            .nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .map_err(|_| Error::NotFound(format!("{} not found", String::from_utf8_lossy(name))))?;
        let node = &tree.nodes[idx];
        let ino = self.child_ino(parent, slot, &tree_id, tree.nodes.len(), idx, node);
        Ok(self.node_attr(ino, node))
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        match self.inode(ino)? {
            Inode::Root => {
                self.maybe_relist_root();
                Ok(self.synthetic_attr(ino, NodeKind::Dir, 0, self.mounted_at))
            }
            Inode::AccountRoot { account } => {
                // Its user's alone (and root's): the mount runs with
                // default_permissions, so the kernel lets nobody else in.
                let owner = read(&self.snapshots).accounts[account as usize].owner;
                Ok(Attr {
                    perm: 0o500,
                    nlink: 2,
                    uid: owner.0,
                    gid: owner.1,
                    ..self.synthetic_attr(ino, NodeKind::Dir, 0, self.mounted_at)
                })
            }
            Inode::Latest { slot } => {
                let s = read(&self.snapshots);
                let latest = &s.slots[slot as usize];
                Ok(self.synthetic_attr(
                    ino,
                    NodeKind::Symlink,
                    latest.name.len() as u64,
                    latest.snapshot.time,
                ))
            }
            Inode::SnapshotRoot { slot } => {
                let s = read(&self.snapshots);
                let snapshot = &s.slots[slot as usize].snapshot;
                // The backed-up folder's own owner and mode: a home that
                // was 0700 must not become listable by every tenant in
                // the mount (under allow_other, the kernel checks these).
                Ok(match &snapshot.root {
                    Some(root) => Attr {
                        kind: NodeKind::Dir,
                        ..self.node_attr(ino, root)
                    },
                    None => self.synthetic_attr(ino, NodeKind::Dir, 0, snapshot.time),
                })
            }
            Inode::Entry { tree, idx, .. } => {
                let (t, i) = self.entry_node(&tree, idx)?;
                Ok(self.node_attr(ino, &t.nodes[i]))
            }
        }
    }

    /// Entries of directory `ino` from position `offset` (0 is the start;
    /// "." and ".." come first), until `add` returns true (buffer full).
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry) -> bool,
    ) -> Result<()> {
        let inode = self.inode(ino)?;
        let parent = match inode {
            Inode::Root | Inode::AccountRoot { .. } => ROOT_INO,
            Inode::SnapshotRoot { slot } => self.day_parent(slot),
            Inode::Entry { parent, .. } => parent,
            Inode::Latest { .. } => return Err(not_a_dir(LATEST_NAME.as_bytes())),
        };
        let dots = [(ino, b".".to_vec()), (parent, b"..".to_vec())];
        for (i, (dot_ino, name)) in dots.into_iter().enumerate().skip(offset as usize) {
            let attr = self.getattr(dot_ino)?;
            let next = i as u64 + 1;
            if add(DirEntry {
                ino: dot_ino,
                kind: NodeKind::Dir,
                name,
                next,
                attr,
            }) {
                return Ok(());
            }
        }
        let skip = offset.saturating_sub(2) as usize;
        let entries = match inode {
            Inode::Root => Some(self.root_entries()?),
            Inode::AccountRoot { account } => {
                self.maybe_relist_account(account);
                Some(self.day_entries(account)?)
            }
            _ => None,
        };
        if let Some(entries) = entries {
            for (i, (ino, name)) in entries.into_iter().enumerate().skip(skip) {
                let attr = self.getattr(ino)?;
                if add(DirEntry {
                    ino,
                    kind: attr.kind,
                    name,
                    next: i as u64 + 3,
                    attr,
                }) {
                    break;
                }
            }
            return Ok(());
        }
        let (slot, tree_id, tree) = self.dir_tree(ino)?;
        for (i, node) in tree.nodes.iter().enumerate().skip(skip) {
            let child = self.child_ino(ino, slot, &tree_id, tree.nodes.len(), i, node);
            let attr = self.node_attr(child, node);
            if add(DirEntry {
                ino: child,
                kind: node.kind,
                name: node.name.clone(),
                next: i as u64 + 3,
                attr,
            }) {
                break;
            }
        }
        Ok(())
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.inode(ino)? {
            Inode::Latest { slot } => Ok(read(&self.snapshots).slots[slot as usize]
                .name
                .clone()
                .into_bytes()),
            Inode::Entry { tree, idx, .. } => {
                let (t, i) = self.entry_node(&tree, idx)?;
                let node = &t.nodes[i];
                if node.kind != NodeKind::Symlink {
                    return Err(Error::Invalid(format!(
                        "{} is not a symlink",
                        String::from_utf8_lossy(&node.name)
                    )));
                }
                Ok(node.link_target.clone())
            }
            _ => Err(Error::Invalid(format!("inode {ino} is not a symlink"))),
        }
    }

    /// The attributes at a slash-separated path from the mount's root, by
    /// successive lookups (tests, messages).
    pub fn lookup_path(&self, path: &str) -> Result<Attr> {
        let mut attr = self.getattr(ROOT_INO)?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            attr = self.lookup(attr.ino, part.as_bytes())?;
        }
        Ok(attr)
    }

    /// The path of an inode from the mount's root, for messages.
    pub fn path_of(&self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        loop {
            match self.inode(cur) {
                Ok(Inode::Entry {
                    parent, tree, idx, ..
                }) => {
                    let name = self
                        .entry_node(&tree, idx)
                        .map(|(t, i)| String::from_utf8_lossy(&t.nodes[i].name).into_owned())
                        .unwrap_or_else(|_| format!("#{cur}"));
                    parts.push(name);
                    cur = parent;
                }
                Ok(Inode::SnapshotRoot { slot }) => {
                    parts.push(read(&self.snapshots).slots[slot as usize].name.clone());
                    cur = self.day_parent(slot);
                }
                Ok(Inode::Latest { slot }) => {
                    parts.push(LATEST_NAME.into());
                    cur = self.day_parent(slot);
                }
                Ok(Inode::AccountRoot { account }) => {
                    parts.push(
                        read(&self.snapshots).accounts[account as usize]
                            .shown
                            .clone(),
                    );
                    break;
                }
                Ok(Inode::Root) | Err(_) => break,
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    fn warn_once(&self, what: Warned, message: impl FnOnce() -> String) {
        if lock(&self.warned).insert(what) {
            tracing::warn!("{}", message());
        }
    }
}

/// Whether the mount shows the xattr `name` (getxattr, listxattr).
fn is_presented(name: &[u8]) -> bool {
    name != NOT_PRESENTED_XATTR && !acl::is_acl_xattr(name)
}

fn not_a_dir(name: &[u8]) -> Error {
    Error::Invalid(format!(
        "{} is not a directory",
        String::from_utf8_lossy(name)
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
