//! The index: which pack holds each blob, and where.
//!
//! On disk the index is a set of immutable index files, each written by one
//! backup (or by prune) and named by the hash of its content. Writers never
//! modify an existing index file, so concurrent backups need no lock: each
//! adds its own files, and readers take the union.
//!
//! In memory all entries live in one sorted `Vec` of 52-byte records searched
//! by binary search: one allocation, no per-entry overhead, and loading a
//! million entries is a sort of 52 MB (well under a second on one core).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use crate::error::Result;
use crate::id::Id;
use crate::repository::encoding;
use crate::repository::pack::{BlobKind, Compression, PackBlob};

pub const INDEX_MAGIC: &[u8; 8] = b"SNAPFSIX";

/// The serialized content of one index file.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    pub id: Id,
    pub blobs: Vec<PackBlob>,
}

impl IndexFile {
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(INDEX_MAGIC, self)
    }

    pub fn decode(name: &str, bytes: &[u8]) -> Result<IndexFile> {
        encoding::decode(INDEX_MAGIC, &format!("index {name}"), bytes)
    }
}

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub blob: PackBlob,
}

/// Compact in-memory entry: 52 bytes (the id, then four u32 and two flag bytes).
#[derive(Clone, Copy)]
struct Entry {
    id: Id,
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    kind: BlobKind,
    compression: Compression,
}

#[derive(Default)]
pub struct Index {
    packs: Vec<Id>,
    pack_numbers: HashMap<Id, u32>,
    sorted: Vec<Entry>,
    /// Entries added after the last `sort` (blobs written by this process,
    /// packs found by a rescan); merged into `sorted` by `sort`.
    recent: HashMap<Id, Entry>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// An empty index with room for the entries of index files of these
    /// sizes, so that loading does not grow the table by doubling (which
    /// needs twice the final size at the peak). An encoded entry takes at
    /// least 37 bytes, so this never reserves too little.
    pub fn with_capacity_for(files: &[(String, u64)]) -> Index {
        let bytes: u64 = files.iter().map(|(_, size)| size).sum();
        Index {
            sorted: Vec::with_capacity((bytes / 37) as usize),
            ..Index::default()
        }
    }

    fn pack_number(&mut self, pack: Id) -> u32 {
        if let Some(&n) = self.pack_numbers.get(&pack) {
            return n;
        }
        let n = self.packs.len() as u32;
        self.packs.push(pack);
        self.pack_numbers.insert(pack, n);
        n
    }

    fn entry(pack: u32, b: &PackBlob) -> Entry {
        Entry {
            id: b.id,
            pack,
            offset: b.offset,
            length: b.length,
            raw_length: b.raw_length,
            kind: b.kind,
            compression: b.compression,
        }
    }

    /// Add entries in bulk; call `sort` before lookups.
    pub fn extend_unsorted(&mut self, file: IndexFile) {
        for pack in file.packs {
            let n = self.pack_number(pack.id);
            self.sorted
                .extend(pack.blobs.iter().map(|b| Self::entry(n, b)));
        }
    }

    /// Make entries added by `extend_unsorted` searchable. When a blob is in
    /// several packs (two backups stored it at the same time) one copy is
    /// kept, which one is unspecified: both are valid.
    pub fn sort(&mut self) {
        let recent = std::mem::take(&mut self.recent);
        self.sorted.extend(recent.into_values());
        self.sorted.sort_unstable_by_key(|e| e.id);
        self.sorted.dedup_by(|a, b| a.id == b.id);
        // Growing by doubling leaves up to half the capacity unused.
        self.sorted.shrink_to_fit();
    }

    /// Add the blobs of one pack, searchable at once.
    pub fn add_pack(&mut self, pack: Id, blobs: &[PackBlob]) {
        let n = self.pack_number(pack);
        for b in blobs {
            if self.lookup(&b.id).is_none() {
                self.recent.insert(b.id, Self::entry(n, b));
            }
        }
    }

    fn location(&self, e: &Entry) -> BlobLocation {
        BlobLocation {
            pack: self.packs[e.pack as usize],
            blob: PackBlob {
                id: e.id,
                kind: e.kind,
                compression: e.compression,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            },
        }
    }

    pub fn lookup(&self, id: &Id) -> Option<BlobLocation> {
        let entry = match self.sorted.binary_search_by(|e| e.id.cmp(id)) {
            Ok(i) => &self.sorted[i],
            Err(_) => self.recent.get(id)?,
        };
        Some(self.location(entry))
    }

    /// The position of `id` among the sorted entries: a dense number in
    /// `0..sorted_len()` for compact per-blob bitmaps (prune). Entries added
    /// since the last `sort` have none.
    pub fn position(&self, id: &Id) -> Option<usize> {
        self.sorted.binary_search_by(|e| e.id.cmp(id)).ok()
    }

    pub fn sorted_len(&self) -> usize {
        self.sorted.len()
    }

    /// The entry at a position returned by `position`.
    pub fn at(&self, position: usize) -> BlobLocation {
        self.location(&self.sorted[position])
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.sorted.binary_search_by(|e| e.id.cmp(id)).is_ok() || self.recent.contains_key(id)
    }

    pub fn contains_pack(&self, pack: &Id) -> bool {
        self.pack_numbers.contains_key(pack)
    }

    pub fn packs(&self) -> &[Id] {
        &self.packs
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, for check and prune.
    pub fn iter(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        self.sorted
            .iter()
            .chain(self.recent.values())
            .map(|e| self.location(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u32) -> PackBlob {
        PackBlob {
            id: Id::hash(&n.to_le_bytes()),
            kind: BlobKind::Data,
            compression: Compression::Zstd,
            offset: 12 + n,
            length: n,
            raw_length: 2 * n,
        }
    }

    #[test]
    fn entries_are_compact() {
        assert!(
            std::mem::size_of::<Entry>() <= 52,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn lookup_after_bulk_load_and_add() {
        let pack_a = Id::hash(b"a");
        let pack_b = Id::hash(b"b");
        let mut index = Index::new();
        index.extend_unsorted(IndexFile {
            packs: vec![IndexPack {
                id: pack_a,
                blobs: (0..100).map(blob).collect(),
            }],
        });
        index.sort();
        index.add_pack(pack_b, &[blob(5), blob(500)]);
        assert_eq!(index.lookup(&blob(5).id).unwrap().pack, pack_a);
        assert_eq!(index.lookup(&blob(500).id).unwrap().pack, pack_b);
        assert_eq!(index.lookup(&blob(7).id).unwrap().blob, blob(7));
        assert!(index.lookup(&Id::hash(b"none")).is_none());
        assert_eq!(index.len(), 101);
        index.sort();
        assert_eq!(index.len(), 101);
        assert_eq!(index.lookup(&blob(500).id).unwrap().pack, pack_b);
    }

    #[test]
    fn index_file_round_trip() {
        let file = IndexFile {
            packs: vec![IndexPack {
                id: Id::hash(b"p"),
                blobs: vec![blob(1), blob(2)],
            }],
        };
        assert_eq!(IndexFile::decode("x", &file.encode()).unwrap(), file);
    }
}
