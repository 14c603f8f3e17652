//! `snapfs ls`: list a directory (or a file) of a snapshot.

use chrono::{Local, TimeZone};
use serde::Serialize;

use crate::display::escape_name;
use crate::error::Result;
use crate::repository::Repository;
use crate::snapshot::{self, Node, NodeKind};

/// One listed entry, as printed by `--json`.
#[derive(Serialize)]
pub struct Listed {
    /// Path relative to the snapshot root, with non-UTF-8 bytes and control
    /// characters escaped as in human output.
    pub path: String,
    /// The raw name bytes, for names that are not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub size: u64,
    pub mtime: String,
    pub links: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// The entries at `path`: a directory's children (recursively if asked),
/// or the node itself when it is not a directory.
pub fn list(
    repo: &Repository,
    root: &snapshot::Snapshot,
    path: &[u8],
    recursive: bool,
) -> Result<Vec<(Vec<u8>, Node)>> {
    let node = snapshot::resolve(repo, &root.tree, path)?;
    let base: Vec<u8> = path.iter().copied().skip_while(|&b| b == b'/').collect();
    let mut out = Vec::new();
    match node.subtree.filter(|_| node.is_dir()) {
        Some(tree) => walk(repo, &tree, &base, recursive, &mut out)?,
        None => out.push((base, node)),
    }
    Ok(out)
}

fn walk(
    repo: &Repository,
    tree: &crate::id::Id,
    prefix: &[u8],
    recursive: bool,
    out: &mut Vec<(Vec<u8>, Node)>,
) -> Result<()> {
    let tree = snapshot::load_tree(repo, tree)?;
    for node in tree.nodes {
        let mut path = prefix.to_vec();
        if !path.is_empty() && !path.ends_with(b"/") {
            path.push(b'/');
        }
        path.extend_from_slice(&node.name);
        let sub = node.subtree.filter(|_| recursive && node.is_dir());
        out.push((path.clone(), node));
        if let Some(sub) = sub {
            walk(repo, &sub, &path, recursive, out)?;
        }
    }
    Ok(())
}

pub fn mode_string(node: &Node) -> String {
    let t = match node.kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
    };
    let m = node.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let exec = |x: u32, special: u32, set: char, unset: char| match (m & x != 0, m & special != 0) {
        (true, true) => set,
        (false, true) => unset,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        exec(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        exec(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        exec(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

pub fn mtime_string(node: &Node) -> String {
    Local
        .timestamp_opt(node.mtime.secs, node.mtime.nanos)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| node.mtime.secs.to_string())
}

pub fn to_listed(path: &[u8], node: &Node) -> Listed {
    Listed {
        path: escape_name(path),
        path_bytes: std::str::from_utf8(path).is_err().then(|| path.to_vec()),
        kind: node.kind.name(),
        mode: mode_string(node),
        uid: node.uid,
        gid: node.gid,
        user: node.user.clone(),
        group: node.group.clone(),
        size: node.size,
        mtime: Local
            .timestamp_opt(node.mtime.secs, node.mtime.nanos)
            .single()
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        links: node.links,
        link_target: (node.kind == NodeKind::Symlink).then(|| escape_name(&node.link_target)),
    }
}

pub fn long_line(path: &[u8], node: &Node) -> String {
    let owner = if node.user.is_empty() {
        node.uid.to_string()
    } else {
        node.user.clone()
    };
    let group = if node.group.is_empty() {
        node.gid.to_string()
    } else {
        node.group.clone()
    };
    let mut line = format!(
        "{} {:>3} {:<8} {:<8} {:>12} {} {}",
        mode_string(node),
        node.links,
        owner,
        group,
        node.size,
        mtime_string(node),
        escape_name(path)
    );
    if node.kind == NodeKind::Symlink {
        line.push_str(" -> ");
        line.push_str(&escape_name(&node.link_target));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_like_ls() {
        let node = Node {
            kind: NodeKind::Dir,
            mode: 0o1777,
            ..Node::default()
        };
        assert_eq!(mode_string(&node), "drwxrwxrwt");
        let node = Node {
            kind: NodeKind::File,
            mode: 0o4644,
            ..Node::default()
        };
        assert_eq!(mode_string(&node), "-rwSr--r--");
    }
}
