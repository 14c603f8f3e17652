//! Golden bytes and round-trip properties for every serialized record.
//!
//! postcard is not self-describing: a reordered field or a changed type
//! still compiles and silently changes the bytes on disk. These tests pin
//! the exact encoding of one value of each record; if one fails, the format
//! changed — bump `FORMAT_VERSION` and keep the old decoder instead of
//! editing the expected bytes.

#![cfg(test)]

use proptest::prelude::*;

use crate::chunker::ChunkerParams;
use crate::id::Id;
use crate::repository::config::{Config, Retention};
use crate::repository::index::{IndexFile, IndexPack};
use crate::repository::pack::{BlobKind, Compression, PackBlob};
use crate::snapshot::{
    Node, NodeKind, Snapshot, SourceKind, SourceStatus, Summary, Timestamp, Tree, Xattr,
    SNAPSHOT_VERSION,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn id(n: u8) -> Id {
    Id([n; 32])
}

fn sample_node() -> Node {
    Node {
        name: b"f\xff".to_vec(),
        kind: NodeKind::Symlink,
        mode: 0o4755,
        uid: 1000,
        gid: 100,
        user: "al".into(),
        group: "u".into(),
        size: 300,
        mtime: Timestamp {
            secs: 1_764_000_000,
            nanos: 5,
        },
        ctime: Timestamp { secs: -1, nanos: 0 },
        atime: Timestamp {
            secs: 0,
            nanos: 999_999_999,
        },
        inode: 7,
        device: 2049,
        links: 2,
        rdev: 0,
        link_target: b"t".to_vec(),
        xattrs: vec![Xattr {
            name: b"user.a".to_vec(),
            value: b"v".to_vec(),
        }],
        content: vec![id(1)],
        subtree: Some(id(2)),
    }
}

fn sample_snapshot() -> Snapshot {
    Snapshot {
        time: Timestamp {
            secs: 1_764_000_000,
            nanos: 1,
        },
        utc_offset: 3600,
        hostname: "h".into(),
        account: "a".into(),
        paths: vec![b"/h".to_vec()],
        tags: vec!["t".into()],
        tree: id(3),
        parent: None,
        summary: Summary {
            files: 1,
            dirs: 2,
            files_read: 3,
            files_unchanged: 4,
            bytes_read: 5,
            bytes_total: 6,
            bytes_added: 7,
            bytes_stored: 8,
            errors: 9,
            duration_ms: 10,
        },
        root: None,
        sources: Vec::new(),
        version: 1,
    }
}

/// Version 2: the v1 sample with the source folder's own metadata.
fn sample_snapshot_v2() -> Snapshot {
    Snapshot {
        root: Some(Node {
            name: Vec::new(),
            kind: NodeKind::Dir,
            mode: 0o711,
            uid: 1000,
            gid: 1000,
            user: "u".into(),
            group: "g".into(),
            ..Node::default()
        }),
        sources: vec![SourceStatus {
            kind: SourceKind::Mysql,
            name: b"db".to_vec(),
            unreadable: 2,
            failure: Some("x".into()),
        }],
        version: SNAPSHOT_VERSION,
        ..sample_snapshot()
    }
}

fn sample_blob() -> PackBlob {
    PackBlob {
        id: id(4),
        kind: BlobKind::Tree,
        compression: Compression::Zstd,
        offset: 12,
        length: 300,
        raw_length: 70000,
    }
}

#[test]
fn golden_tree() {
    let bytes = Tree {
        nodes: vec![sample_node()],
    }
    .encode();
    assert_eq!(hex(&bytes), GOLDEN_TREE);
}

#[test]
fn golden_snapshot() {
    assert_eq!(hex(&sample_snapshot().encode()), GOLDEN_SNAPSHOT);
    let v1 = Snapshot::decode("x", &sample_snapshot().encode()).unwrap();
    assert_eq!((v1.version, v1.root), (1, None));
}

#[test]
fn golden_snapshot_v2() {
    let bytes = sample_snapshot_v2().encode();
    assert_eq!(hex(&bytes), GOLDEN_SNAPSHOT_V2);
    assert_eq!(Snapshot::decode("x", &bytes).unwrap(), sample_snapshot_v2());
}

#[test]
fn golden_index() {
    let file = IndexFile {
        packs: vec![IndexPack {
            id: id(5),
            blobs: vec![sample_blob()],
        }],
    };
    assert_eq!(hex(&file.encode()), GOLDEN_INDEX);
}

#[test]
fn golden_config() {
    let config = Config {
        id: id(6),
        chunker: ChunkerParams::default(),
        pack_size: 16 << 20,
        zstd_level: 3,
        retention: Retention::thirty_days(),
        layout: 1,
    };
    assert_eq!(hex(&config.encode()), GOLDEN_CONFIG);
    // Layout 2 changes the envelope's version only.
    let v2 = Config {
        layout: 2,
        ..config
    };
    assert_eq!(
        hex(&v2.encode()),
        GOLDEN_CONFIG.replacen("01000000", "02000000", 1)
    );
}

#[test]
fn golden_lock() {
    use crate::repository::lock::{LockKind, LockRecord};
    let lock = LockRecord {
        kind: LockKind::Exclusive,
        hostname: "h".into(),
        pid: 300,
        refreshed: 1_764_000_000,
        purpose: "prune".into(),
    };
    let bytes = lock.encode();
    assert_eq!(LockRecord::decode("x", &bytes).unwrap(), lock);
    assert_eq!(hex(&bytes), GOLDEN_LOCK);
}

const GOLDEN_LOCK: &str = "534e415046534c4b01000000010168ac028084a4920d057072756e65";

const GOLDEN_TREE: &str = concat!(
    "534e41504653545201000000010266ff02ed13e8076402616c0175ac028084a4920d05010000ff93ebdc030781100200",
    "01740106757365722e610176010101010101010101010101010101010101010101010101010101010101010101010202",
    "020202020202020202020202020202020202020202020202020202020202"
);
const GOLDEN_SNAPSHOT: &str = concat!(
    "534e41504653534e010000008084a4920d01a0380168016101022f680101740303030303030303030303030303030303",
    "030303030303030303030303030303000102030405060708090a"
);
/// The v1 bytes with version 2, then `root`: Some, a node with an empty
/// name, kind Dir, mode 0o711 (c9 03), uid and gid 1000 (e8 07), "u", "g",
/// then 15 bytes of zeros and empties: size, three times, inode, device,
/// links, rdev, link target, xattrs, content, subtree.
const GOLDEN_SNAPSHOT_V2: &str = concat!(
    "534e41504653534e020000008084a4920d01a0380168016101022f680101740303030303030303030303030303030303",
    "030303030303030303030303030303000102030405060708090a",
    "010001c903e807e80701750167000000000000000000000000000000",
    // `sources`: one, kind Mysql (3), name "db", unreadable 2, failure "x".
    "0103026462020101",
    "78"
);
const GOLDEN_INDEX: &str = concat!(
    "534e41504653495801000000010505050505050505050505050505050505050505050505050505050505050505010404",
    "04040404040404040404040404040404040404040404040404040404040401010cac02f0a204"
);
const GOLDEN_CONFIG: &str = concat!(
    "534e41504653434601000000060606060606060606060606060606060606060606060606060606060606060680802080",
    "804080808004808080080601809a9e0100000000"
);

fn arb_timestamp() -> impl Strategy<Value = Timestamp> {
    (any::<i64>(), 0u32..1_000_000_000).prop_map(|(secs, nanos)| Timestamp { secs, nanos })
}

fn arb_kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        Just(NodeKind::File),
        Just(NodeKind::Dir),
        Just(NodeKind::Symlink),
        Just(NodeKind::Fifo),
        Just(NodeKind::Socket),
        Just(NodeKind::CharDevice),
        Just(NodeKind::BlockDevice),
    ]
}

fn arb_id() -> impl Strategy<Value = Id> {
    any::<[u8; 32]>().prop_map(Id)
}

prop_compose! {
    fn arb_node()(
        name in proptest::collection::vec(1u8..=255, 1..40),
        kind in arb_kind(),
        mode in 0u32..0o10000, uid: u32, gid: u32,
        user in ".{0,8}", group in ".{0,8}",
        size: u64, mtime in arb_timestamp(), ctime in arb_timestamp(), atime in arb_timestamp(),
        inode: u64, device: u64, links: u64, rdev: u64,
        link_target in proptest::collection::vec(any::<u8>(), 0..20),
        xattrs in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 1..10), proptest::collection::vec(any::<u8>(), 0..10)), 0..3),
        content in proptest::collection::vec(arb_id(), 0..4),
        subtree in proptest::option::of(arb_id()),
    ) -> Node {
        Node {
            name: name.into_iter().map(|b| if b == b'/' { b'_' } else { b }).collect(),
            kind, mode, uid, gid, user, group, size, mtime, ctime, atime, inode, device, links, rdev, link_target,
            xattrs: xattrs.into_iter().map(|(name, value)| Xattr { name, value }).collect(),
            content, subtree,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tree_round_trips(mut nodes in proptest::collection::vec(arb_node(), 0..8)) {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        nodes.retain(|n| n.name != b"." && n.name != b"..");
        let tree = Tree { nodes };
        let bytes = tree.encode();
        prop_assert_eq!(Tree::decode(&Id::hash(&bytes), &bytes).unwrap(), tree);
    }

    #[test]
    fn snapshot_round_trips(secs: i64, offset in -50_000i32..50_000, host in ".{0,20}", account in ".{0,20}",
                            paths in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..3),
                            tree in arb_id(), parent in proptest::option::of(arb_id()), files: u64) {
        let mut s = sample_snapshot();
        s.time.secs = secs;
        s.utc_offset = offset;
        s.hostname = host;
        s.account = account;
        s.paths = paths;
        s.tree = tree;
        s.parent = parent;
        s.summary.files = files;
        prop_assert_eq!(Snapshot::decode("x", &s.encode()).unwrap(), s);
    }

    #[test]
    fn index_round_trips(packs in proptest::collection::vec((arb_id(), proptest::collection::vec((arb_id(), any::<bool>(), any::<bool>(), any::<u32>(), any::<u32>(), any::<u32>()), 0..5)), 0..4)) {
        let file = IndexFile {
            packs: packs.into_iter().map(|(id, blobs)| IndexPack {
                id,
                blobs: blobs.into_iter().map(|(id, tree, zstd, offset, length, raw_length)| PackBlob {
                    id,
                    kind: if tree { BlobKind::Tree } else { BlobKind::Data },
                    compression: if zstd { Compression::Zstd } else { Compression::None },
                    offset, length, raw_length,
                }).collect(),
            }).collect(),
        };
        prop_assert_eq!(IndexFile::decode("x", &file.encode()).unwrap(), file);
    }

    #[test]
    fn decoders_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Tree::decode(&Id::default(), &bytes);
        let _ = Snapshot::decode("x", &bytes);
        let _ = IndexFile::decode("x", &bytes);
        let _ = Config::decode(&bytes);
        let _ = crate::repository::pack::parse_pack("x", &bytes);
    }
}

/// Inputs the fuzzers once broke a property with (fuzz/regressions/<target>/),
/// run through `decode_records`' property on every test run: whatever
/// decodes encodes back to the same bytes.
#[test]
fn fuzz_regressions_hold() {
    let folder =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/decode_records");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        inputs += 1;
        if let Ok(tree) = Tree::decode(&Id::default(), &data) {
            assert_eq!(tree.encode(), data, "{}", path.display());
        }
        if let Ok(snapshot) = Snapshot::decode("fuzz", &data) {
            assert_eq!(snapshot.encode(), data, "{}", path.display());
        }
        if let Ok(index) = IndexFile::decode("fuzz", &data) {
            assert_eq!(index.encode(), data, "{}", path.display());
        }
        if let Ok(config) = Config::decode(&data) {
            assert_eq!(config.encode(), data, "{}", path.display());
        }
    }
    assert!(inputs > 0, "no inputs in {}", folder.display());
}

#[test]
fn the_overlong_varint_snapshot_is_refused() {
    let data = include_bytes!("../../fuzz/regressions/decode_records/overlong-varint-snapshot");
    let err = Snapshot::decode("x", data).unwrap_err();
    assert!(err.to_string().contains("canonical"), "{err}");
}
