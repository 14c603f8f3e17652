//! Inode numbers: allocated on first sight, never reused.

use std::collections::HashMap;

use crate::id::Id;

/// What an inode number stands for.
#[derive(Clone, Debug)]
pub(super) enum Inode {
    Root,
    /// The folder of account number `account` (`--per-account`, or a
    /// plain mount of a repository of several accounts).
    AccountRoot {
        account: u32,
    },
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
pub(super) struct Inodes {
    /// The last number handed out (the root is 1).
    last: u64,
    /// Root, snapshot roots and `latest` links, by number.
    pub(super) special: HashMap<u64, Inode>,
    /// Account folders, by account number.
    account_roots: HashMap<u32, u64>,
    snapshot_roots: HashMap<u32, u64>,
    latest_links: HashMap<u32, u64>,
    /// The entry ranges, in allocation order, which is `first` order.
    pub(super) ranges: Vec<EntryRange>,
    /// Directory inode → index of its entries' range.
    range_of: HashMap<u64, u32>,
    /// (snapshot slot, source device, source inode) → inode, for hard links:
    /// every link gets the number of the first one seen.
    pub(super) hard_links: HashMap<(u32, u64, u64), u64>,
}

/// The numbers of one directory's entries: `first..first + len`.
pub(super) struct EntryRange {
    first: u64,
    len: u32,
    slot: u32,
    /// The directory's own inode.
    parent: u64,
    /// The directory's tree: entry `idx` is `tree.nodes[idx]`.
    tree: Id,
}

impl Inodes {
    pub(super) fn push(&mut self, inode: Inode) -> u64 {
        self.last += 1;
        self.special.insert(self.last, inode);
        self.last
    }

    pub(super) fn get(&self, ino: u64) -> Option<Inode> {
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

    /// The number of a root, account folder, snapshot folder or `latest`
    /// link, if it was given one.
    pub(super) fn special_of(&self, inode: &Inode) -> Option<u64> {
        match inode {
            Inode::AccountRoot { account } => self.account_roots.get(account),
            Inode::SnapshotRoot { slot } => self.snapshot_roots.get(slot),
            Inode::Latest { slot } => self.latest_links.get(slot),
            Inode::Root | Inode::Entry { .. } => None,
        }
        .copied()
    }

    /// The number of one of those, given on first sight.
    pub(super) fn special(&mut self, inode: Inode) -> u64 {
        if let Some(ino) = self.special_of(&inode) {
            return ino;
        }
        let ino = self.push(inode.clone());
        let table = match inode {
            Inode::AccountRoot { account } => (&mut self.account_roots, account),
            Inode::SnapshotRoot { slot } => (&mut self.snapshot_roots, slot),
            Inode::Latest { slot } => (&mut self.latest_links, slot),
            Inode::Root | Inode::Entry { .. } => return ino,
        };
        table.0.insert(table.1, ino);
        ino
    }

    /// The first number of directory `parent`'s entries, if allocated.
    pub(super) fn range_start(&self, parent: u64) -> Option<u64> {
        self.range_of
            .get(&parent)
            .map(|&i| self.ranges[i as usize].first)
    }

    pub(super) fn allocate_range(&mut self, parent: u64, slot: u32, tree: Id, len: usize) -> u64 {
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
