//! Trees: one directory's entries, stored as a blob of kind `Tree`.
//!
//! A tree is named by its hash like any blob, so a directory whose entries
//! and metadata did not change is stored once however many snapshots hold it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::encoding;

pub const TREE_MAGIC: &[u8; 8] = b"SNAPFSTR";

/// The type of a file system object. Append only: the discriminant is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeKind {
    #[default]
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl NodeKind {
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::File => "file",
            NodeKind::Dir => "dir",
            NodeKind::Symlink => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::Socket => "socket",
            NodeKind::CharDevice => "chardev",
            NodeKind::BlockDevice => "blockdev",
        }
    }

    /// The `S_IFMT` bits for this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            NodeKind::File => libc::S_IFREG,
            NodeKind::Dir => libc::S_IFDIR,
            NodeKind::Symlink => libc::S_IFLNK,
            NodeKind::Fifo => libc::S_IFIFO,
            NodeKind::Socket => libc::S_IFSOCK,
            NodeKind::CharDevice => libc::S_IFCHR,
            NodeKind::BlockDevice => libc::S_IFBLK,
        }
    }
}

/// Seconds and nanoseconds since the Unix epoch (negative for before 1970).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

/// One directory entry with everything needed to restore it and to tell
/// whether it changed since the last backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name as the file system has it: any bytes but `/` and NUL.
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits, including setuid, setgid and sticky (no type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Owner and group names at backup time ("" if unknown).
    pub user: String,
    pub group: String,
    /// Bytes of content for files, the target's length for symlinks.
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub atime: Timestamp,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    /// Device number of character and block devices.
    pub rdev: u64,
    /// Symlink target as raw bytes.
    pub link_target: Vec<u8>,
    pub xattrs: Vec<Xattr>,
    /// Files: the ids of the data chunks, in order.
    pub content: Vec<Id>,
    /// Directories: the id of the tree blob of the entries.
    pub subtree: Option<Id>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == NodeKind::Dir
    }

    pub fn is_file(&self) -> bool {
        self.kind == NodeKind::File
    }
}

/// The entries of one directory, sorted by name bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(TREE_MAGIC, self)
    }

    pub fn decode(id: &Id, bytes: &[u8]) -> Result<Tree> {
        let object = format!("tree {id}");
        let tree: Tree = encoding::decode(TREE_MAGIC, &object, bytes)?;
        // Lookups binary-search by name, and restore trusts names: refuse
        // trees that a correct writer could not have produced.
        for pair in tree.nodes.windows(2) {
            if pair[0].name >= pair[1].name {
                return Err(Error::corrupt(object, "entries are not sorted by name"));
            }
        }
        for node in &tree.nodes {
            if node.name.is_empty()
                || node.name.contains(&b'/')
                || node.name.contains(&0)
                || node.name == b"."
                || node.name == b".."
            {
                return Err(Error::corrupt(
                    object,
                    format!(
                        "invalid entry name {:?}",
                        String::from_utf8_lossy(&node.name)
                    ),
                ));
            }
        }
        Ok(tree)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample_node(name: &[u8]) -> Node {
        Node {
            name: name.to_vec(),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            user: "alice".into(),
            group: "alice".into(),
            size: 5,
            mtime: Timestamp {
                secs: 1_700_000_000,
                nanos: 123,
            },
            ctime: Timestamp {
                secs: 1_700_000_001,
                nanos: 456,
            },
            atime: Timestamp {
                secs: -5,
                nanos: 999_999_999,
            },
            inode: 42,
            device: 7,
            links: 1,
            rdev: 0,
            link_target: vec![],
            xattrs: vec![Xattr {
                name: b"user.k".to_vec(),
                value: b"v".to_vec(),
            }],
            content: vec![Id::hash(b"hello")],
            subtree: None,
        }
    }

    #[test]
    fn round_trip_and_find() {
        let tree = Tree {
            nodes: vec![
                sample_node(b"a\n"),
                sample_node(b"b\xff"),
                sample_node(&[b'c'; 255]),
            ],
        };
        let bytes = tree.encode();
        let id = Id::hash(&bytes);
        let back = Tree::decode(&id, &bytes).unwrap();
        assert_eq!(back, tree);
        assert!(back.find(b"b\xff").is_some());
        assert!(back.find(b"zz").is_none());
    }

    #[test]
    fn unsorted_or_bad_names_are_corrupt() {
        for names in [vec![&b"b"[..], b"a"], vec![b"a/b"], vec![b".."], vec![b""]] {
            let tree = Tree {
                nodes: names.iter().map(|n| sample_node(n)).collect(),
            };
            assert!(Tree::decode(&Id::default(), &tree.encode()).is_err());
        }
    }
}
