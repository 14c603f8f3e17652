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
//! Inode numbers are allocated on first sight and never reused, so they are
//! stable for the life of the mount. The entries of a directory get a range
//! of numbers the first time one of them is needed (trees are immutable, so
//! entry `idx` is always `first + idx`); the table stores one record per
//! directory (tree id and range), not per file, and trees come from a small
//! cache. Hard links (one device and inode in the source, more than one
//! link) share the first number given to them within a snapshot.
//!
//! Nothing is read at mount time but the snapshot records: trees load when a
//! directory is first looked into.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{Local, TimeZone, Utc};
use crossbeam_channel::{Sender, TrySendError};

use crate::buffer_pool::BufferPool;
use crate::chunk_cache::ChunkCache;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::mount::acl;
use crate::repository::backend;
use crate::repository::Repository;
use crate::snapshot::file_reader::FileReader;
use crate::snapshot::{self, Node, NodeKind, Snapshot, Timestamp, Tree};
use crate::weighted_lru::WeightedLru;

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

/// How many chunks past a sequential read to fetch in the background.
const PREFETCH_AHEAD: usize = 8;
/// The largest read the kernel sends (FUSE's max_pages, 256 pages); larger
/// gathering buffers are not kept.
const MAX_READ: usize = 1 << 20;
/// Memory for decoded trees. Measured by estimate, not by encoded size: a
/// decoded node (struct, name, owner strings, chunk ids) takes four to five
/// times its ~100 encoded bytes. 100k entries are about 45 MiB decoded.
/// The newest tree stays even when larger, so one huge folder is not
/// decoded again per lookup; `find` and `tar` need only the folders they
/// are in, and every byte here counts against the mount's 64 MiB beside
/// the chunk cache.
const TREE_CACHE_BYTES: usize = 16 << 20;
const DECODED_NODE_BYTES: usize = 448;
/// Memory for the chunk tables of files being read. Files are read by inode
/// number, not by handle (see `open_file`), so tables stay until evicted,
/// not until closed. Each costs about 250 bytes of its own (the struct, two
/// allocations, the cache's entry) plus 40 per chunk: a small file's about
/// 300 bytes, a 1 GiB file's 40 KiB. Counting only the 40 bytes per chunk
/// let `tar` over 100k small files keep 25 MiB of tables (measured).
const READERS_BYTES: usize = 2 << 20;
const READER_BYTES: usize = 256;
const READER_CHUNK_BYTES: usize = std::mem::size_of::<Id>() + std::mem::size_of::<u64>();

#[derive(Clone, Debug)]
pub struct Options {
    /// Show only this account's snapshots.
    pub account: Option<String>,
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
            account: None,
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

/// What an inode number stands for.
#[derive(Clone, Debug)]
enum Inode {
    Root,
    /// `latest` while it points at the snapshot in `slot`. A new target is a
    /// new inode: the kernel caches symlink targets by inode, so this is
    /// what lets it cache `latest` at all (one READLINK per path walk
    /// through it otherwise) and still see it move.
    Latest {
        slot: u32,
    },
    /// The root folder of the snapshot in `slot`.
    SnapshotRoot {
        slot: u32,
    },
    /// Entry `idx` of `tree`, inside the snapshot in `slot`.
    Entry {
        slot: u32,
        parent: u64,
        tree: Id,
        idx: u32,
    },
}

/// Inode numbers, allocated on first sight and never reused.
///
/// The entries of a directory get a contiguous range of numbers the first
/// time one of them is needed: entry `idx` of the directory is `first +
/// idx`. So the table holds one record per directory seen, not one per
/// file: walking 30 snapshots of 100k files in 1,000 folders costs 30,000
/// records instead of 3 million (a per-file table measured 130 bytes per
/// file and dominated the mount's memory).
#[derive(Default)]
struct Inodes {
    /// The last number handed out (the root is 1).
    last: u64,
    /// Root, snapshot roots and `latest` links, by number.
    special: HashMap<u64, Inode>,
    snapshot_roots: HashMap<u32, u64>,
    latest_links: HashMap<u32, u64>,
    /// The entry ranges, in allocation order, which is `first` order.
    ranges: Vec<EntryRange>,
    /// Directory inode → index of its entries' range.
    range_of: HashMap<u64, u32>,
    /// (snapshot slot, source device, source inode) → inode, for hard links:
    /// every link gets the number of the first one seen.
    hard_links: HashMap<(u32, u64, u64), u64>,
}

/// The numbers of one directory's entries: `first..first + len`.
struct EntryRange {
    first: u64,
    len: u32,
    slot: u32,
    /// The directory's own inode.
    parent: u64,
    /// The directory's tree: entry `idx` is `tree.nodes[idx]`.
    tree: Id,
}

impl Inodes {
    fn push(&mut self, inode: Inode) -> u64 {
        self.last += 1;
        self.special.insert(self.last, inode);
        self.last
    }

    fn get(&self, ino: u64) -> Option<Inode> {
        if let Some(inode) = self.special.get(&ino) {
            return Some(inode.clone());
        }
        let i = self
            .ranges
            .partition_point(|r| r.first <= ino)
            .checked_sub(1)?;
        let r = &self.ranges[i];
        (ino < r.first + r.len as u64).then(|| Inode::Entry {
            slot: r.slot,
            parent: r.parent,
            tree: r.tree,
            idx: (ino - r.first) as u32,
        })
    }

    /// The first number of directory `parent`'s entries, if allocated.
    fn range_start(&self, parent: u64) -> Option<u64> {
        self.range_of
            .get(&parent)
            .map(|&i| self.ranges[i as usize].first)
    }

    fn allocate_range(&mut self, parent: u64, slot: u32, tree: Id, len: usize) -> u64 {
        if let Some(first) = self.range_start(parent) {
            return first;
        }
        let first = self.last + 1;
        self.last += len.max(1) as u64;
        self.range_of.insert(parent, self.ranges.len() as u32);
        self.ranges.push(EntryRange {
            first,
            len: len as u32,
            slot,
            parent,
            tree,
        });
        first
    }
}

/// A snapshot that was shown once. Slots are never removed: a name keeps
/// meaning one snapshot for the life of the mount, even after it is gone.
struct Slot {
    id: Id,
    name: String,
    snapshot: Snapshot,
    /// False once the snapshot file is gone (forgotten, pruned).
    visible: bool,
}

#[derive(Default)]
struct Snapshots {
    slots: Vec<Slot>,
    by_id: HashMap<Id, u32>,
    /// Every name ever given, visible or not.
    by_name: BTreeMap<String, u32>,
    /// Snapshot files not shown: other accounts, or damaged (warned once).
    skipped: HashSet<Id>,
}

impl Snapshots {
    fn latest(&self) -> Option<u32> {
        (0..self.slots.len() as u32)
            .filter(|&n| self.slots[n as usize].visible)
            .max_by_key(|&n| {
                (
                    self.slots[n as usize].snapshot.time,
                    self.slots[n as usize].id,
                )
            })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Warned {
    Object(Id),
    File(u64),
}

/// A file being read: its chunk table, computed once.
struct OpenFile {
    reader: FileReader,
    /// Where the last read ended, to recognise sequential reading.
    last_end: AtomicU64,
}

pub struct SnapshotFs {
    repo: Arc<Repository>,
    chunks: Arc<ChunkCache>,
    opts: Options,
    snapshots: RwLock<Snapshots>,
    /// When the snapshots were last listed; the lock also keeps two threads
    /// from listing at once.
    listed_at: Mutex<Option<Instant>>,
    inodes: RwLock<Inodes>,
    trees: Mutex<WeightedLru<Id, Arc<Tree>>>,
    /// Files being read, by inode number.
    readers: Mutex<WeightedLru<u64, Arc<OpenFile>>>,
    /// What was already warned about: one log line per damaged chunk or
    /// tree, or file whose chunks cannot be mapped, not one per read.
    warned: Mutex<HashSet<Warned>>,
    prefetch: Option<Sender<(Id, usize)>>,
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
        let chunks = Arc::new(ChunkCache::new(opts.cache_bytes));
        let prefetch = (opts.prefetch_threads > 0)
            .then(|| spawn_prefetchers(&repo, &chunks, opts.prefetch_threads));
        if let Some(idle) = opts.release_idle_after {
            spawn_idle_release(&chunks, idle);
        }
        let mut inodes = Inodes::default();
        inodes.push(Inode::Root);
        let now = Utc::now();
        let fs = SnapshotFs {
            repo,
            chunks,
            opts,
            snapshots: RwLock::new(Snapshots::default()),
            listed_at: Mutex::new(None),
            inodes: RwLock::new(inodes),
            trees: Mutex::new(WeightedLru::new(TREE_CACHE_BYTES)),
            readers: Mutex::new(WeightedLru::new(READERS_BYTES)),
            warned: Mutex::new(HashSet::new()),
            prefetch,
            span_buffers: BufferPool::new(4, MAX_READ),
            owner: unsafe { (libc::geteuid(), libc::getegid()) },
            mounted_at: Timestamp {
                secs: now.timestamp(),
                nanos: now.timestamp_subsec_nanos(),
            },
        };
        fs.relist(true)?;
        *lock(&fs.listed_at) = Some(Instant::now());
        Ok(fs)
    }

    pub fn chunk_cache_stats(&self) -> crate::chunk_cache::CacheStats {
        self.chunks.stats()
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// How long the kernel may cache what this inode's attributes and
    /// entries say: the root changes as snapshots come and go (and with it
    /// which inode `latest` is), a snapshot's content never does.
    pub fn ttl(&self, ino: u64) -> Duration {
        if ino == ROOT_INO {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(3600)
        }
    }

    /// Whether the kernel may keep this inode's pages and listings across
    /// opens (everything inside a snapshot is immutable).
    pub fn is_immutable(&self, ino: u64) -> bool {
        ino != ROOT_INO
    }

    // ---- snapshots at the top level ----

    fn maybe_relist(&self) {
        let mut listed_at = lock(&self.listed_at);
        if listed_at.is_some_and(|t| t.elapsed() < self.opts.relist_every) {
            return;
        }
        if let Err(e) = self.relist(false) {
            tracing::warn!("listing snapshots: {e}");
        }
        *listed_at = Some(Instant::now());
    }

    /// Show new snapshots and hide the ones whose file is gone.
    ///
    /// A mount of one account lists that account's folder (and files in
    /// no folder, from layout-1 repositories, where every account's files
    /// are together); each new file is read once, on several threads, and
    /// other accounts' are remembered by id.
    fn relist(&self, first: bool) -> Result<()> {
        // A name that is not an id is not a snapshot (`check` reports it).
        let files: Vec<(String, Id)> =
            snapshot::list_files(&self.repo, self.opts.account.as_deref())?
                .into_iter()
                .filter_map(|(name, _)| {
                    let id = Id::from_hex(backend::file_of(&name)).ok()?;
                    Some((name, id))
                })
                .collect();
        let present: HashSet<Id> = files.iter().map(|(_, id)| *id).collect();
        let new: Vec<String> = {
            let known = read(&self.snapshots);
            files
                .into_iter()
                .filter(|(_, id)| !known.by_id.contains_key(id) && !known.skipped.contains(id))
                .map(|(name, _)| name)
                .collect()
        };
        let mut loaded = Vec::new();
        let mut skipped = Vec::new();
        for (name, entry) in snapshot::load_many(&self.repo, &new) {
            match entry {
                Ok(e) if self.is_shown(&e.snapshot) => loaded.push((e.id, e.snapshot)),
                Ok(e) => skipped.push(e.id),
                // Forgotten while we listed: it will not be listed again.
                Err(Error::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!("not showing snapshot {name}: {e}");
                    skipped.extend(Id::from_hex(backend::file_of(&name)).ok());
                }
            }
        }
        loaded.sort_by_key(|a| (a.1.time, a.0));
        if !first && !loaded.is_empty() {
            // The new snapshots' trees and chunks are in index files written
            // since we opened the repository.
            self.repo.refresh_index()?;
        }
        let mut s = write(&self.snapshots);
        s.skipped.extend(skipped);
        for slot in &mut s.slots {
            slot.visible = present.contains(&slot.id);
        }
        for (id, snapshot) in loaded {
            let name = self.name_for(&s, &snapshot);
            let n = s.slots.len() as u32;
            s.by_id.insert(id, n);
            s.by_name.insert(name.clone(), n);
            s.slots.push(Slot {
                id,
                name,
                snapshot,
                visible: true,
            });
        }
        Ok(())
    }

    fn is_shown(&self, snapshot: &Snapshot) -> bool {
        self.opts
            .account
            .as_ref()
            .is_none_or(|a| &snapshot.account == a)
    }

    /// `YYYY-MM-DD`, or `YYYY-MM-DD_HHMMSS` when the day already has one:
    /// no colons, which rsync and scp would read as a host name.
    fn name_for(&self, s: &Snapshots, snapshot: &Snapshot) -> String {
        let day = snapshot
            .local_date(self.opts.utc)
            .format("%Y-%m-%d")
            .to_string();
        if !s.by_name.contains_key(&day) {
            return day;
        }
        let time = if self.opts.utc {
            snapshot.utc().time()
        } else {
            Local.from_utc_datetime(&snapshot.utc().naive_utc()).time()
        };
        let full = format!("{day}_{}", time.format("%H%M%S"));
        let mut name = full.clone();
        let mut n = 1;
        // Two snapshots in one second: _2, _3, ...
        while s.by_name.contains_key(&name) {
            n += 1;
            name = format!("{full}_{n}");
        }
        name
    }

    /// The names at the top level, sorted, and the snapshot ids they show.
    pub fn snapshot_names(&self) -> Vec<(String, Id)> {
        self.maybe_relist();
        let s = read(&self.snapshots);
        s.by_name
            .iter()
            .filter(|(_, &n)| s.slots[n as usize].visible)
            .map(|(name, &n)| (name.clone(), s.slots[n as usize].id))
            .collect()
    }

    /// The inode of `latest` as it is now.
    fn latest_ino(&self) -> Result<u64> {
        let slot = read(&self.snapshots)
            .latest()
            .ok_or_else(|| Error::NotFound("no snapshots yet".into()))?;
        if let Some(&ino) = read(&self.inodes).latest_links.get(&slot) {
            return Ok(ino);
        }
        let mut inodes = write(&self.inodes);
        if let Some(&ino) = inodes.latest_links.get(&slot) {
            return Ok(ino);
        }
        let ino = inodes.push(Inode::Latest { slot });
        inodes.latest_links.insert(slot, ino);
        Ok(ino)
    }

    fn snapshot_root_ino(&self, slot: u32) -> u64 {
        if let Some(&ino) = read(&self.inodes).snapshot_roots.get(&slot) {
            return ino;
        }
        let mut inodes = write(&self.inodes);
        if let Some(&ino) = inodes.snapshot_roots.get(&slot) {
            return ino;
        }
        let ino = inodes.push(Inode::SnapshotRoot { slot });
        inodes.snapshot_roots.insert(slot, ino);
        ino
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
            Inode::Root | Inode::Latest { .. } => {
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

    fn node_attr(&self, ino: u64, node: &Node) -> Attr {
        let size = match node.kind {
            NodeKind::File => node.size,
            NodeKind::Symlink => node.link_target.len() as u64,
            _ => 0,
        };
        let perm = match node.xattrs.iter().find(|x| x.name == acl::ACCESS_ACL_XATTR) {
            Some(x) => acl::narrowed_perm(node.mode & 0o7777, &x.value),
            None => node.mode & 0o7777,
        };
        Attr {
            ino,
            kind: node.kind,
            perm,
            nlink: node.links.max(1),
            uid: node.uid,
            gid: node.gid,
            size,
            blocks: if node.kind == NodeKind::File {
                size.div_ceil(512)
            } else {
                0
            },
            atime: node.atime,
            mtime: node.mtime,
            ctime: node.ctime,
            rdev: node.rdev,
        }
    }

    fn synthetic_attr(&self, ino: u64, kind: NodeKind, size: u64, time: Timestamp) -> Attr {
        Attr {
            ino,
            kind,
            perm: if kind == NodeKind::Symlink {
                0o777
            } else {
                0o755
            },
            nlink: if ino == ROOT_INO { 2 } else { 1 },
            uid: self.owner.0,
            gid: self.owner.1,
            size,
            blocks: 0,
            atime: time,
            mtime: time,
            ctime: time,
            rdev: 0,
        }
    }

    // ---- the operations ----

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        if parent == ROOT_INO {
            self.maybe_relist();
            if name == LATEST_NAME.as_bytes() {
                return self.getattr(self.latest_ino()?);
            }
            let slot = {
                let s = read(&self.snapshots);
                std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| s.by_name.get(n))
                    .copied()
                    .filter(|&n| s.slots[n as usize].visible)
            };
            let slot = slot.ok_or_else(|| {
                Error::NotFound(format!("no snapshot {}", String::from_utf8_lossy(name)))
            })?;
            return self.getattr(self.snapshot_root_ino(slot));
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
                self.maybe_relist();
                Ok(self.synthetic_attr(ino, NodeKind::Dir, 0, self.mounted_at))
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
        let parent = match self.inode(ino)? {
            Inode::Root | Inode::SnapshotRoot { .. } => ROOT_INO,
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
        if ino == ROOT_INO {
            let mut entries: Vec<(u64, Vec<u8>)> = Vec::new();
            let names = self.snapshot_names();
            if !names.is_empty() {
                entries.push((self.latest_ino()?, LATEST_NAME.as_bytes().to_vec()));
            }
            for (name, id) in names {
                let slot = read(&self.snapshots).by_id[&id];
                entries.push((self.snapshot_root_ino(slot), name.into_bytes()));
            }
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

    /// Check that `ino` is a file that can be read, and compute its chunk
    /// table now (kernels without zero-message opens call this per open).
    pub fn open(&self, ino: u64) -> Result<()> {
        self.open_file(ino).map(drop)
    }

    /// The chunk table of file `ino`, computed on its first read.
    ///
    /// Why by inode and not by open handle: the mount declines the kernel's
    /// OPEN requests, so the kernel stops sending OPEN and RELEASE (two of
    /// the four round trips per small file for `tar`, `cp -r`, `rsync` and
    /// `sftp get -r`), and reads carry only the inode number.
    fn open_file(&self, ino: u64) -> Result<Arc<OpenFile>> {
        if let Some(file) = lock(&self.readers).get(&ino) {
            return Ok(file);
        }
        let Inode::Entry { tree, idx, .. } = self.inode(ino)? else {
            return Err(Error::Invalid(format!("inode {ino} is not a file")));
        };
        let (t, i) = self.entry_node(&tree, idx)?;
        let node = &t.nodes[i];
        if !node.is_file() {
            return Err(Error::Invalid(format!(
                "{} is not a file",
                String::from_utf8_lossy(&node.name)
            )));
        }
        let reader = FileReader::open(&self.repo, node).inspect_err(|e| {
            self.warn_once(Warned::File(ino), || format!("{}: {e}", self.path_of(ino)))
        })?;
        let weight = READER_BYTES + reader.chunk_count() * READER_CHUNK_BYTES;
        let file = Arc::new(OpenFile {
            reader,
            last_end: AtomicU64::new(0),
        });
        lock(&self.readers).put(ino, file.clone(), weight);
        Ok(file)
    }

    /// Up to `len` bytes at `offset` of file `ino`; fewer at the end.
    /// A chunk that cannot be read fails this read only (`Error::Corrupt`
    /// for damage), logged once per chunk.
    pub fn read_at(&self, ino: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.read_at_with(ino, offset, len, |data| data.to_vec())
    }

    /// `read_at`, handing the bytes to `reply` without copying them when
    /// they lie in one chunk (most reads: the kernel asks for at most 1 MiB,
    /// chunks average 1 MiB).
    pub fn read_at_with<R>(
        &self,
        ino: u64,
        offset: u64,
        len: usize,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let file = self.open_file(ino)?;
        let fetch = |id: &Id, len: usize| {
            self.chunks
                .get(id, len, |buffer| self.repo.load_blob_into(id, buffer))
                .inspect_err(|e| {
                    self.warn_once(Warned::Object(*id), || {
                        format!("{}: chunk {id}: {e}", self.path_of(ino))
                    })
                })
        };
        let reader = &file.reader;
        let mut read_end = offset;
        let result = reader.read_at_with(offset, len, fetch, &self.span_buffers, |data| {
            read_end = offset + data.len() as u64;
            reply(data)
        })?;
        // Sequential enough: the kernel's parallel readahead requests arrive
        // slightly out of order.
        let last = file.last_end.swap(read_end, Ordering::Relaxed);
        if read_end > offset && last.abs_diff(offset) <= 4 << 20 {
            self.prefetch_after(reader, read_end);
        }
        Ok(result)
    }

    fn prefetch_after(&self, reader: &FileReader, end: u64) {
        let Some(tx) = &self.prefetch else { return };
        let Some(first) = reader.chunk_index_at(end) else {
            return;
        };
        for i in first..(first + PREFETCH_AHEAD).min(reader.chunk_count()) {
            let (id, start, end) = reader.chunk(i);
            if self.chunks.peek(&id).is_some() {
                continue;
            }
            match tx.try_send((id, (end - start) as usize)) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// The value of extended attribute `name`, `None` if there is none.
    /// SELinux labels and POSIX ACLs are not presented (see
    /// [`NOT_PRESENTED_XATTR`] and [`acl`]): asking for one is `Unsupported`.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Option<Vec<u8>>> {
        if !is_presented(name) {
            return Err(Error::Unsupported(format!(
                "the mount does not present {}",
                String::from_utf8_lossy(name)
            )));
        }
        let Inode::Entry { tree, idx, .. } = self.inode(ino)? else {
            return Ok(None);
        };
        let (t, i) = self.entry_node(&tree, idx)?;
        Ok(t.nodes[i]
            .xattrs
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.value.clone()))
    }

    /// The names of the extended attributes, each followed by a NUL, as
    /// `listxattr(2)` returns them.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let Inode::Entry { tree, idx, .. } = self.inode(ino)? else {
            return Ok(Vec::new());
        };
        let (t, i) = self.entry_node(&tree, idx)?;
        let mut out = Vec::new();
        for x in t.nodes[i].xattrs.iter() {
            if is_presented(&x.name) {
                out.extend_from_slice(&x.name);
                out.push(0);
            }
        }
        Ok(out)
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
                    break;
                }
                Ok(Inode::Latest { .. }) => {
                    parts.push(LATEST_NAME.into());
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

fn spawn_prefetchers(
    repo: &Arc<Repository>,
    chunks: &Arc<ChunkCache>,
    threads: usize,
) -> Sender<(Id, usize)> {
    // Bounded: when readers outrun the prefetchers, dropping a prefetch is
    // better than queueing work whose reader has moved on.
    let (tx, rx) = crossbeam_channel::bounded::<(Id, usize)>(16);
    for n in 0..threads {
        let (repo, chunks, rx) = (repo.clone(), chunks.clone(), rx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("prefetch-{n}"))
            .spawn(move || {
                for (id, len) in rx {
                    // Errors are the reader's to report, when it gets there.
                    let _ = chunks.get(&id, len, |buffer| repo.load_blob_into(&id, buffer));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no prefetch thread: {e}");
        }
    }
    tx
}

/// A thread that empties the chunk cache once it has been idle for `idle`,
/// checking a few times per period; it ends with the cache.
fn spawn_idle_release(chunks: &Arc<ChunkCache>, idle: Duration) {
    let chunks = Arc::downgrade(chunks);
    let spawned = std::thread::Builder::new()
        .name("idle-release".into())
        .spawn(move || loop {
            std::thread::sleep(idle / 4);
            let Some(chunks) = chunks.upgrade() else {
                return;
            };
            let freed = chunks.release_if_idle(idle);
            if freed > 0 {
                tracing::debug!("idle for {idle:?}: released {freed} bytes of cached chunks");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no idle-release thread: {e}");
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
mod tests {
    use super::*;
    use crate::backup::{self, BackupOptions};
    use crate::chunker::tests::{pseudo_random, small_params};
    use crate::repository::backend::FileType;
    use std::path::Path;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .unwrap()
            .timestamp()
    }

    fn backup_at(repo: &Repository, src: &Path, secs: i64) -> (Id, Snapshot) {
        let opts = BackupOptions {
            paths: vec![src.to_path_buf()],
            account: "alice".into(),
            hostname: "h".into(),
            time: Some((Timestamp { secs, nanos: 0 }, 0)),
            excludes: vec![],
            one_file_system: false,
            tags: vec![],
            progress: false,
            lock_wait: std::time::Duration::from_secs(10),
        };
        let outcome = backup::run(repo, &opts).unwrap();
        (outcome.id, outcome.snapshot)
    }

    fn options() -> Options {
        Options {
            utc: true,
            relist_every: Duration::ZERO,
            cache_bytes: 1 << 20,
            release_idle_after: None,
            ..Options::default()
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        big: Vec<u8>,
    }

    impl Fixture {
        fn src(&self) -> std::path::PathBuf {
            self.dir.path().join("src")
        }
        fn repo_path(&self) -> std::path::PathBuf {
            self.dir.path().join("repo")
        }
        fn open(&self) -> SnapshotFs {
            SnapshotFs::new(Repository::open(&self.repo_path()).unwrap(), options()).unwrap()
        }
    }

    /// A source tree with an empty file, a multi-chunk file, a small file,
    /// a hard link, a symlink and a subfolder, backed up once.
    fn fixture() -> (Fixture, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        let big = pseudo_random(60_000, 7);
        std::fs::write(src.join("big"), &big).unwrap();
        std::fs::write(src.join("empty"), b"").unwrap();
        std::fs::write(src.join("small.txt"), b"small").unwrap();
        std::fs::write(src.join("sub/inner"), b"inner").unwrap();
        std::fs::hard_link(src.join("small.txt"), src.join("sub/hard")).unwrap();
        std::os::unix::fs::symlink("../big", src.join("sub/link")).unwrap();
        let repo = Repository::init(&dir.path().join("repo"), small_params(), Some(8192)).unwrap();
        backup_at(&repo, &src, at(2025, 1, 2, 10, 0, 0));
        (Fixture { dir, big }, repo)
    }

    fn read_all(fs: &SnapshotFs, path: &str) -> Result<Vec<u8>> {
        let attr = fs.lookup_path(path)?;
        fs.open(attr.ino)?;
        fs.read_at(attr.ino, 0, attr.size as usize + 10)
    }

    fn names(fs: &SnapshotFs, ino: u64) -> Vec<String> {
        let mut out = Vec::new();
        fs.readdir(ino, 0, |e| {
            out.push(String::from_utf8(e.name).unwrap());
            false
        })
        .unwrap();
        out
    }

    #[test]
    fn a_day_folder_shows_the_backed_up_folders_owner_and_mode() {
        let (fx, repo) = fixture();
        let src = fx.src();
        std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .unwrap();
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root {
            std::os::unix::fs::chown(&src, Some(4242), Some(4343)).unwrap();
        }
        backup_at(&repo, &src, at(2025, 1, 3, 10, 0, 0));
        let fs = fx.open();
        let day = fs.lookup_path("2025-01-03").unwrap();
        assert_eq!((day.kind, day.perm), (NodeKind::Dir, 0o711));
        let meta = std::fs::metadata(&src).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((day.uid, day.gid), (meta.uid(), meta.gid()));
        assert_eq!(day.mtime.secs, meta.mtime());
        if as_root {
            assert_eq!((day.uid, day.gid), (4242, 4343));
        }
        // A version-1 record (no root) shows as before: 0755, the mount's
        // owner, the snapshot's time.
        let (_, mut old) = backup_at(&repo, &src, at(2025, 1, 4, 10, 0, 0));
        old.root = None;
        old.version = 1;
        old.time.secs = at(2025, 1, 5, 10, 0, 0);
        snapshot::save(&repo, &old).unwrap();
        let fs = fx.open();
        let v1 = fs.lookup_path("2025-01-05").unwrap();
        assert_eq!((v1.perm, v1.mtime), (0o755, old.time));
    }

    #[test]
    fn reads_past_the_end_of_empty_files_and_across_chunks() {
        let (fx, _repo) = fixture();
        let fs = fx.open();
        let attr = fs.lookup_path("2025-01-02/big").unwrap();
        assert_eq!(attr.size, 60_000);
        assert_eq!(attr.blocks, 60_000u64.div_ceil(512));
        let ino = attr.ino;
        let chunks = fs.open_file(ino).unwrap().reader.chunk_count();
        assert!(
            chunks >= 4,
            "small params cut 60 kB into several chunks, got {chunks}"
        );
        assert_eq!(fs.read_at(ino, 0, 100_000).unwrap(), fx.big);
        // Spans every chunk boundary in the middle of the file.
        assert_eq!(
            fs.read_at(ino, 10_000, 40_000).unwrap(),
            &fx.big[10_000..50_000]
        );
        assert_eq!(fs.read_at(ino, 59_990, 100).unwrap(), &fx.big[59_990..]);
        assert!(fs.read_at(ino, 60_000, 100).unwrap().is_empty());
        assert!(fs.read_at(ino, u64::MAX - 10, 100).unwrap().is_empty());
        let root = fs.lookup_path("2025-01-02").unwrap().ino;
        for not_a_file in [ROOT_INO, root, u64::MAX] {
            assert!(fs.read_at(not_a_file, 0, 10).is_err());
        }

        let empty = fs.lookup_path("2025-01-02/empty").unwrap();
        assert_eq!((empty.size, empty.blocks), (0, 0));
        assert!(read_all(&fs, "2025-01-02/empty").unwrap().is_empty());
        assert_eq!(read_all(&fs, "2025-01-02/sub/inner").unwrap(), b"inner");
    }

    #[test]
    fn tree_metadata_links_and_stable_inodes() {
        let (fx, _repo) = fixture();
        let fs = fx.open();
        let root = fs.lookup_path("2025-01-02").unwrap();
        assert_eq!(root.kind, NodeKind::Dir);
        assert_eq!(
            names(&fs, root.ino),
            [".", "..", "big", "empty", "small.txt", "sub"]
        );
        let sub = fs.lookup_path("2025-01-02/sub").unwrap();
        assert_eq!(names(&fs, sub.ino), [".", "..", "hard", "inner", "link"]);

        let small = fs.lookup_path("2025-01-02/small.txt").unwrap();
        let hard = fs.lookup_path("2025-01-02/sub/hard").unwrap();
        assert_eq!(small.ino, hard.ino, "hard links share an inode");
        assert_eq!(small.nlink, 2);
        let meta = std::fs::metadata(fx.src().join("small.txt")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(small.perm, meta.mode() & 0o7777);
        assert_eq!((small.uid, small.gid), (meta.uid(), meta.gid()));
        assert_eq!(
            small.mtime,
            Timestamp {
                secs: meta.mtime(),
                nanos: meta.mtime_nsec() as u32
            }
        );

        let link = fs.lookup_path("2025-01-02/sub/link").unwrap();
        assert_eq!(link.kind, NodeKind::Symlink);
        assert_eq!(fs.readlink(link.ino).unwrap(), b"../big");
        assert_eq!(link.size, 6);

        // Stable: the same inode however it is reached, and readdir agrees.
        let inner = fs.lookup_path("2025-01-02/sub/inner").unwrap();
        assert_eq!(fs.lookup(sub.ino, b"inner").unwrap().ino, inner.ino);
        let mut listed = None;
        fs.readdir(sub.ino, 0, |e| {
            if e.name == b"inner" {
                listed = Some(e.ino);
            }
            false
        })
        .unwrap();
        assert_eq!(listed, Some(inner.ino));
        assert_eq!(fs.getattr(inner.ino).unwrap(), inner);
        assert!(matches!(
            fs.lookup(sub.ino, b"nope"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            fs.lookup_path("1999-01-01"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(fs.open(sub.ino), Err(Error::Invalid(_))));

        // Resuming a listing at an offset it handed out.
        let mut first_two = Vec::new();
        fs.readdir(sub.ino, 0, |e| {
            first_two.push(e.next);
            first_two.len() == 3
        })
        .unwrap();
        let mut rest = Vec::new();
        fs.readdir(sub.ino, first_two[2], |e| {
            rest.push(String::from_utf8(e.name).unwrap());
            false
        })
        .unwrap();
        assert_eq!(rest, ["inner", "link"]);
    }

    #[test]
    fn inode_table_grows_per_directory_not_per_file() {
        let (fx, _repo) = fixture();
        let fs = fx.open();
        let root = fs.lookup_path("2025-01-02").unwrap();
        let walk = |fs: &SnapshotFs| {
            let mut inos = Vec::new();
            let mut dirs = vec![root.ino];
            while let Some(dir) = dirs.pop() {
                fs.readdir(dir, 2, |e| {
                    if e.kind == NodeKind::Dir {
                        dirs.push(e.ino);
                    }
                    inos.push(e.ino);
                    false
                })
                .unwrap();
            }
            inos.sort();
            inos
        };
        let first = walk(&fs);
        assert_eq!(walk(&fs), first, "numbers are stable");
        let mut unique = first.clone();
        unique.dedup();
        // big, empty, small.txt, sub, inner, link; `hard` is small.txt.
        assert_eq!(unique.len(), 6, "{first:?}");
        for ino in &unique {
            assert_eq!(fs.getattr(*ino).unwrap().ino, *ino);
        }
        // One record per directory listed: the snapshot root and `sub`.
        assert_eq!(read(&fs.inodes).ranges.len(), 2);
    }

    #[test]
    fn xattrs_with_probes() {
        let (fx, repo) = fixture();
        let path = fx.src().join("small.txt");
        if xattr::set(&path, "user.snapfs", b"value").is_err() {
            eprintln!("skipping: the temp folder does not support user xattrs");
            return;
        }
        // Root on a host without SELinux may store a label; kept, not shown.
        let labelled = xattr::set(&path, "security.selinux", b"user_u:object_r:x_t:s0").is_ok();
        backup_at(&repo, &fx.src(), at(2025, 1, 3, 10, 0, 0));
        let fs = fx.open();
        let attr = fs.lookup_path("2025-01-03/small.txt").unwrap();
        assert_eq!(
            fs.getxattr(attr.ino, b"user.snapfs").unwrap().as_deref(),
            Some(&b"value"[..])
        );
        assert_eq!(fs.getxattr(attr.ino, b"user.none").unwrap(), None);
        assert_eq!(fs.listxattr(attr.ino).unwrap(), b"user.snapfs\0");
        assert_eq!(fs.listxattr(ROOT_INO).unwrap(), b"");
        // ls -l stops asking for labels once told they are not supported.
        assert!(matches!(
            fs.getxattr(attr.ino, NOT_PRESENTED_XATTR),
            Err(Error::Unsupported(_))
        ));
        if labelled {
            let Ok(Inode::Entry { tree, idx, .. }) = fs.inode(attr.ino) else {
                panic!("small.txt is an entry");
            };
            let (t, i) = fs.entry_node(&tree, idx).unwrap();
            assert!(
                t.nodes[i]
                    .xattrs
                    .iter()
                    .any(|x| x.name == NOT_PRESENTED_XATTR),
                "the backup keeps the label for restore"
            );
        }
    }

    /// A file whose ACL refuses one user what its mode gives everyone:
    /// the mount narrows the mode (the kernel checks modes only) and does
    /// not present the ACL, which the backup keeps for restore.
    #[test]
    fn acls_narrow_the_modes_and_are_not_presented() {
        use crate::mount::acl::tests::acl_xattr;
        let (fx, repo) = fixture();
        let path = fx.src().join("small.txt");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        // user::rw- user:12345:--- group::r-- mask::r-- other::r--
        let refuse_one = acl_xattr(&[
            (0x01, 6, u32::MAX),
            (0x02, 0, 12345),
            (0x04, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 4, u32::MAX),
        ]);
        if let Err(e) = xattr::set(&path, "system.posix_acl_access", &refuse_one) {
            // Only a file system without ACLs excuses it (CI's ext4 has
            // them; the kernel-mount test covers ACLs there too).
            assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}");
            eprintln!("skipping: the temp folder does not take POSIX ACLs: {e}");
            return;
        }
        backup_at(&repo, &fx.src(), at(2025, 1, 3, 10, 0, 0));
        let fs = fx.open();

        let attr = fs.lookup_path("2025-01-03/small.txt").unwrap();
        assert_eq!(
            attr.perm, 0o600,
            "nobody but the owner may rely on the mode"
        );
        assert!(matches!(
            fs.getxattr(attr.ino, b"system.posix_acl_access"),
            Err(Error::Unsupported(_))
        ));
        assert!(!fs
            .listxattr(attr.ino)
            .unwrap()
            .starts_with(b"system.posix_acl"));
        let Ok(Inode::Entry { tree, idx, .. }) = fs.inode(attr.ino) else {
            panic!("small.txt is an entry");
        };
        let (t, i) = fs.entry_node(&tree, idx).unwrap();
        assert_eq!(t.nodes[i].mode & 0o7777, 0o644, "the backup keeps the mode");
        assert!(
            t.nodes[i].xattrs.iter().any(|x| x.value == refuse_one),
            "and the ACL, for restore"
        );
        // Files without an ACL show their modes as they were.
        let other = fs.lookup_path("2025-01-03/sub/inner").unwrap();
        let meta = std::fs::metadata(fx.src().join("sub/inner")).unwrap();
        assert_eq!(
            other.perm,
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777
        );
    }

    #[test]
    fn same_day_snapshots_latest_and_relisting() {
        let (fx, repo) = fixture();
        backup_at(&repo, &fx.src(), at(2025, 1, 2, 12, 30, 0));
        let fs = fx.open();
        let shown: Vec<String> = fs.snapshot_names().into_iter().map(|(n, _)| n).collect();
        assert_eq!(shown, ["2025-01-02", "2025-01-02_123000"]);
        assert!(shown.iter().all(|n| !n.contains(':')));
        assert_eq!(
            names(&fs, ROOT_INO),
            [".", "..", "latest", "2025-01-02", "2025-01-02_123000"]
        );
        let latest = fs.lookup(ROOT_INO, b"latest").unwrap();
        assert_eq!(latest.kind, NodeKind::Symlink);
        assert_eq!(fs.readlink(latest.ino).unwrap(), b"2025-01-02_123000");
        let old_ino = fs.lookup_path("2025-01-02").unwrap().ino;
        let old_latest = fs.lookup(ROOT_INO, b"latest").unwrap().ino;

        // A backup made while mounted shows up and `latest` follows; an
        // earlier snapshot of a day already shown never takes its name.
        let (new_id, _) = backup_at(&repo, &fx.src(), at(2025, 1, 2, 8, 0, 0));
        let (newest, _) = backup_at(&repo, &fx.src(), at(2025, 1, 4, 9, 0, 0));
        let shown: Vec<String> = fs.snapshot_names().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            shown,
            [
                "2025-01-02",
                "2025-01-02_080000",
                "2025-01-02_123000",
                "2025-01-04"
            ]
        );
        assert_eq!(
            fs.readlink(fs.lookup(ROOT_INO, b"latest").unwrap().ino)
                .unwrap(),
            b"2025-01-04"
        );
        assert_eq!(fs.lookup_path("2025-01-02").unwrap().ino, old_ino);
        // `latest` moved by becoming a new inode; the old one keeps its target.
        assert_ne!(fs.lookup(ROOT_INO, b"latest").unwrap().ino, old_latest);
        assert_eq!(fs.readlink(old_latest).unwrap(), b"2025-01-02_123000");
        assert_eq!(read_all(&fs, "2025-01-04/big").unwrap(), fx.big);

        // Forgotten snapshots vanish; their names are not given to others.
        for id in [new_id, newest] {
            let (entries, _) = snapshot::list(&repo, None).unwrap();
            let file = &entries.iter().find(|e| e.id == id).unwrap().file;
            std::fs::remove_file(fx.repo_path().join("snapshots").join(file)).unwrap();
        }
        let shown: Vec<String> = fs.snapshot_names().into_iter().map(|(n, _)| n).collect();
        assert_eq!(shown, ["2025-01-02", "2025-01-02_123000"]);
        assert!(matches!(
            fs.lookup_path("2025-01-04"),
            Err(Error::NotFound(_))
        ));
        assert_eq!(
            fs.readlink(fs.lookup(ROOT_INO, b"latest").unwrap().ino)
                .unwrap(),
            b"2025-01-02_123000"
        );
    }

    #[test]
    fn two_snapshots_in_one_second() {
        let (fx, repo) = fixture();
        let t = at(2025, 1, 2, 10, 0, 0);
        backup_at(&repo, &fx.src(), t);
        backup_at(&repo, &fx.src(), t);
        let fs = fx.open();
        let shown: Vec<String> = fs.snapshot_names().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            shown,
            ["2025-01-02", "2025-01-02_100000", "2025-01-02_100000_2"]
        );
        let ids: HashSet<Id> = fs.snapshot_names().into_iter().map(|(_, id)| id).collect();
        assert_eq!(ids.len(), 3, "three snapshots, three names");
    }

    #[test]
    fn account_filter_and_no_snapshots() {
        let (fx, _repo) = fixture();
        let repo = Repository::open(&fx.repo_path()).unwrap();
        let opts = Options {
            account: Some("bob".into()),
            ..options()
        };
        let fs = SnapshotFs::new(repo, opts).unwrap();
        assert!(fs.snapshot_names().is_empty());
        assert_eq!(names(&fs, ROOT_INO), [".", ".."]);
        assert!(matches!(
            fs.lookup(ROOT_INO, b"latest"),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn an_accounts_mount_among_many_accounts() {
        // Layout 2 keeps bob's files in his folder: the others' are never
        // read. Layout 1 keeps all together: each is read once.
        for (layout, skipped_first, skipped_then) in [(2, 1, 1), (1, 302, 303)] {
            let (fx, _) = fixture();
            crate::repository::tests::set_layout(&fx.repo_path(), layout);
            let repo = Repository::open(&fx.repo_path()).unwrap();
            let (_, alice) = backup_at(&repo, &fx.src(), at(2025, 1, 2, 3, 0, 0));
            let save_as = |account: &str, day: u32| {
                let snapshot = Snapshot {
                    account: account.into(),
                    time: Timestamp {
                        secs: at(2025, 1, day, 3, 0, 0),
                        nanos: 0,
                    },
                    ..alice.clone()
                };
                snapshot::save(&repo, &snapshot).unwrap()
            };
            // Enough other accounts' files to be read on several threads.
            for n in 0..300 {
                save_as(&format!("user{n}"), 3);
            }
            let garbage = Id::hash(b"garbage").to_hex();
            std::fs::write(fx.repo_path().join("snapshots").join(&garbage), b"x").unwrap();
            save_as("bob", 3);

            let opts = Options {
                account: Some("bob".into()),
                ..options()
            };
            let fs = SnapshotFs::new(Repository::open(&fx.repo_path()).unwrap(), opts).unwrap();
            let shown = |fs: &SnapshotFs| -> Vec<String> {
                fs.snapshot_names().into_iter().map(|(n, _)| n).collect()
            };
            let skipped = |fs: &SnapshotFs| read(&fs.snapshots).skipped.len();
            assert_eq!(shown(&fs), ["2025-01-03"], "layout {layout}");
            assert_eq!(skipped(&fs), skipped_first, "layout {layout}");

            // Relisting reads only what is new: bob's next backup (and in
            // layout 1 carol's).
            save_as("bob", 4);
            save_as("carol", 4);
            assert_eq!(shown(&fs), ["2025-01-03", "2025-01-04"]);
            assert_eq!(skipped(&fs), skipped_then, "layout {layout}");
            assert_eq!(read_all(&fs, "2025-01-04/big").unwrap(), fx.big);
        }
    }

    #[test]
    fn a_mount_keeps_its_folders_while_the_repository_is_migrated() {
        for account in [None, Some("alice")] {
            let (fx, _) = fixture();
            crate::repository::tests::set_layout(&fx.repo_path(), 1);
            let repo = Repository::open(&fx.repo_path()).unwrap();
            // The fixture's first snapshot was saved in layout 2: move it
            // back out of its folder, as layout 1 keeps it.
            let (entries, _) = snapshot::list(&repo, None).unwrap();
            let file = &entries[0].file;
            repo.backend()
                .rename(FileType::Snapshot, file, backend::file_of(file))
                .unwrap();
            backup_at(&repo, &fx.src(), at(2025, 1, 3, 10, 0, 0));
            let opts = Options {
                account: account.map(String::from),
                ..options()
            };
            let fs = SnapshotFs::new(Repository::open(&fx.repo_path()).unwrap(), opts).unwrap();
            let before = fs.snapshot_names();
            assert_eq!(before.len(), 2);
            let ino = fs.lookup_path("2025-01-03/big").unwrap().ino;

            let report = crate::migrate::run(&repo, Duration::ZERO).unwrap();
            assert_eq!(report.moved, 2);
            assert_eq!(fs.snapshot_names(), before, "same names, same snapshots");
            assert_eq!(fs.lookup_path("2025-01-03/big").unwrap().ino, ino);
            assert_eq!(read_all(&fs, "2025-01-03/big").unwrap(), fx.big);
        }
    }

    #[test]
    fn an_idle_mount_gives_its_chunk_cache_back() {
        let (fx, _) = fixture();
        let opts = Options {
            release_idle_after: Some(Duration::from_millis(40)),
            ..options()
        };
        let fs = SnapshotFs::new(Repository::open(&fx.repo_path()).unwrap(), opts).unwrap();
        assert_eq!(read_all(&fs, "2025-01-02/big").unwrap(), fx.big);
        assert!(fs.chunk_cache_stats().bytes > 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs.chunk_cache_stats().bytes > 0 {
            assert!(Instant::now() < deadline, "still cached after 10 s idle");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(fs.chunk_cache_stats().entries, 0);
        // And it fills again when read.
        assert_eq!(read_all(&fs, "2025-01-02/big").unwrap(), fx.big);
    }

    #[test]
    fn a_damaged_chunk_fails_its_reads_only() {
        let (fx, repo) = fixture();
        let tree = snapshot::list(&repo, None).unwrap().0[0].snapshot.tree;
        let node = snapshot::resolve(&repo, &tree, b"big").unwrap();
        let loc = repo.locate(&node.content[1]).unwrap();
        let hex = loc.pack.to_hex();
        let pack = fx.repo_path().join("data").join(&hex[..2]).join(&hex);
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes[loc.blob.offset as usize + loc.blob.length as usize / 2] ^= 0x40;
        std::fs::write(&pack, bytes).unwrap();

        let fs = fx.open();
        let attr = fs.lookup_path("2025-01-02/big").unwrap();
        let err = fs.read_at(attr.ino, 0, 60_000).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        // The chunk before the damaged one still reads; so do other files,
        // and the same read fails the same way again (errors are not cached).
        let (_, _, first_end) = fs.open_file(attr.ino).unwrap().reader.chunk(0);
        assert_eq!(
            fs.read_at(attr.ino, 0, first_end as usize).unwrap(),
            &fx.big[..first_end as usize]
        );
        assert!(matches!(
            fs.read_at(attr.ino, 0, 60_000),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(read_all(&fs, "2025-01-02/small.txt").unwrap(), b"small");
        assert_eq!(read_all(&fs, "2025-01-02/sub/inner").unwrap(), b"inner");
        assert_eq!(fs.path_of(attr.ino), "/2025-01-02/big");
    }
}
