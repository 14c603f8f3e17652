//! What `stat` and the xattr calls show: a node's own attributes, with
//! ACLs folded into the modes; the folders that exist only in the mount.

use super::{acl, is_presented, Attr, Inode, SnapshotFs, ROOT_INO};
use crate::error::{Error, Result};
use crate::snapshot::{Node, NodeKind, Timestamp};

impl SnapshotFs {
    pub(super) fn node_attr(&self, ino: u64, node: &Node) -> Attr {
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

    pub(super) fn synthetic_attr(
        &self,
        ino: u64,
        kind: NodeKind,
        size: u64,
        time: Timestamp,
    ) -> Attr {
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

    /// The value of extended attribute `name`, `None` if there is none.
    /// SELinux labels and POSIX ACLs are not presented (see
    /// [`NOT_PRESENTED_XATTR`](super::NOT_PRESENTED_XATTR) and [`acl`]): asking for one is `Unsupported`.
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
}
