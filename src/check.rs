//! `snapfs check`: find damage and say who it hurts.
//!
//! Structure is always checked: every index file and snapshot decodes, every
//! pack that an index names exists and its header agrees with the index,
//! every tree of every snapshot decodes, and every chunk a file needs is
//! indexed in a pack that exists. `--read-data` also reads every pack and
//! verifies every blob's hash. Each problem names the damaged object and the
//! snapshots and paths that depend on it.
//!
//! Packs that no index lists and no snapshot needs are reported, not as
//! damage: an interrupted backup leaves such packs, but so does a damaged
//! index file, so check says what it sees ("not in any index"), not why.

use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::error::Result;
use crate::id::Id;
use crate::repository::backend::FileType;
use crate::repository::pack::{self, PackBlob};
use crate::repository::Repository;
use crate::snapshot::{self, NodeKind};

/// Paths listed per damaged object, at most; the count says how many more.
const MAX_PATHS: usize = 20;

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub trees: usize,
    pub packs: usize,
    pub blobs_read: u64,
    pub damage: Vec<Damage>,
    /// Packs that no index lists and no snapshot needs (an interrupted
    /// backup's, or those of a damaged index file).
    pub unreferenced_packs: Vec<String>,
    /// Snapshot files outside their account's folder (an interrupted
    /// `migrate`, a copy by hand): not damage, `migrate` moves them.
    pub misplaced_snapshots: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Damage {
    /// `pack <id>`, `data blob <id>`, `snapshot <id>`, ...
    pub object: String,
    pub problem: String,
    /// "snapshot-id:path" of everything that needs this object.
    pub affected: Vec<String>,
    pub affected_total: usize,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.damage.is_empty()
    }
}

/// Why a blob cannot be read, keyed by blob id.
type BadBlobs = HashMap<Id, (String, String)>;

pub fn run(repo: &Repository, read_data: bool) -> Result<CheckReport> {
    repo.disable_rescan();
    let mut report = CheckReport::default();
    let mut damage: Vec<Damage> = Vec::new();
    let mut record = |object: String, problem: String| {
        damage.push(Damage {
            object,
            problem,
            affected: Vec::new(),
            affected_total: 0,
        });
    };

    for p in repo.index_problems() {
        record(p.object.clone(), p.message.clone());
    }
    let (snapshots, bad_snapshots) = snapshot::list(repo, None)?;
    for (name, e) in bad_snapshots {
        record(format!("snapshot {name}"), e.reason());
    }
    report.snapshots = snapshots.len();
    report.misplaced_snapshots = snapshots
        .iter()
        .filter(|e| !e.is_in_place(repo))
        .map(|e| e.file.clone())
        .collect();

    // Packs: present, headers readable and consistent with the index.
    let files: HashSet<Id> = repo
        .list_files(FileType::Pack)?
        .into_iter()
        .filter_map(|(name, _)| Id::from_hex(&name).ok())
        .collect();
    report.packs = files.len();
    let mut bad_blobs = BadBlobs::new();
    let mut by_pack: HashMap<Id, Vec<PackBlob>> = HashMap::new();
    for loc in repo.index().iter() {
        by_pack.entry(loc.pack).or_default().push(loc.blob);
    }
    let mut unindexed: HashMap<Id, Vec<PackBlob>> = HashMap::new();
    for pack in &files {
        let header = match repo.read_pack_header(pack) {
            Ok(h) => h,
            Err(e) => {
                record(format!("pack {pack}"), e.reason());
                mark_pack_bad(&by_pack, pack, "its pack is damaged", &mut bad_blobs);
                continue;
            }
        };
        match by_pack.get(pack) {
            Some(indexed) => {
                let in_header: HashSet<_> = header.iter().collect();
                if let Some(b) = indexed.iter().find(|b| !in_header.contains(b)) {
                    record(
                        format!("pack {pack}"),
                        format!("header disagrees with the index about blob {}", b.id),
                    );
                }
            }
            None => {
                unindexed.insert(*pack, header);
            }
        }
        if read_data {
            read_pack(repo, pack, &mut report, &mut bad_blobs, &mut record);
        }
    }
    for pack in by_pack.keys().filter(|p| !files.contains(p)) {
        record(
            format!("pack {pack}"),
            "is listed in the index but missing".into(),
        );
        mark_pack_bad(&by_pack, pack, "its pack is missing", &mut bad_blobs);
    }

    // Trees: walk every snapshot, sharing the work for shared subtrees.
    let unindexed_blobs: HashSet<Id> = unindexed.values().flatten().map(|b| b.id).collect();
    let mut walker = TreeWalker {
        repo,
        bad_blobs: &bad_blobs,
        unindexed: &unindexed_blobs,
        memo: HashMap::new(),
        needed_unindexed: HashSet::new(),
    };
    let mut affected: HashMap<(String, String), Vec<String>> = HashMap::new();
    for entry in &snapshots {
        let found = walker.tree(&entry.snapshot.tree);
        for problem in found.iter() {
            affected
                .entry((problem.object.clone(), problem.problem.clone()))
                .or_default()
                .push(format!("{}:/{}", entry.id.short(), problem.path));
        }
    }
    report.trees = walker.memo.len();
    let mut pack_problems: Vec<(String, String)> = affected.keys().cloned().collect();
    pack_problems.sort();
    for key in pack_problems {
        let paths = affected.remove(&key).unwrap_or_default();
        let total = paths.len();
        damage.push(Damage {
            object: key.0,
            problem: key.1,
            affected: paths.into_iter().take(MAX_PATHS).collect(),
            affected_total: total,
        });
    }
    for (pack, blobs) in &unindexed {
        if !blobs
            .iter()
            .any(|b| walker.needed_unindexed.contains(&b.id))
        {
            report.unreferenced_packs.push(pack.to_hex());
        }
    }
    report.unreferenced_packs.sort();
    report.damage = damage;
    Ok(report)
}

fn mark_pack_bad(by_pack: &HashMap<Id, Vec<PackBlob>>, pack: &Id, why: &str, bad: &mut BadBlobs) {
    for b in by_pack.get(pack).into_iter().flatten() {
        bad.insert(b.id, (format!("pack {pack}"), why.to_string()));
    }
}

/// Read a whole pack: its hash must be its name and every blob must verify.
fn read_pack(
    repo: &Repository,
    pack: &Id,
    report: &mut CheckReport,
    bad_blobs: &mut BadBlobs,
    record: &mut impl FnMut(String, String),
) {
    let name = pack.to_hex();
    let bytes = match repo.read_pack(pack) {
        Ok(b) => b,
        Err(e) => return record(format!("pack {name}"), e.reason()),
    };
    if Id::hash(&bytes) != *pack {
        record(
            format!("pack {name}"),
            "content does not match its name (hash)".into(),
        );
    }
    let Ok(blobs) = pack::parse_pack(&name, &bytes) else {
        return;
    };
    for blob in blobs {
        report.blobs_read += 1;
        let stored = &bytes[blob.offset as usize..(blob.offset + blob.length) as usize];
        if let Err(e) = pack::decode_blob(&blob, stored) {
            bad_blobs.insert(
                blob.id,
                (
                    format!("{} blob {}", pack::kind_name(blob.kind), blob.id),
                    e.reason(),
                ),
            );
        }
    }
}

/// A problem below a tree, with its path relative to that tree.
struct Found {
    object: String,
    problem: String,
    path: String,
}

struct TreeWalker<'a> {
    repo: &'a Repository,
    bad_blobs: &'a BadBlobs,
    unindexed: &'a HashSet<Id>,
    /// Problems below each tree already walked (usually none).
    memo: HashMap<Id, Rc<Vec<Found>>>,
    needed_unindexed: HashSet<Id>,
}

impl TreeWalker<'_> {
    fn blob_problem(&mut self, id: &Id, kind: &str) -> Option<(String, String)> {
        if let Some((object, why)) = self.bad_blobs.get(id) {
            return Some((object.clone(), why.clone()));
        }
        if self.repo.index().contains(id) {
            return None;
        }
        if self.unindexed.contains(id) {
            self.needed_unindexed.insert(*id);
            return Some((
                format!("{kind} blob {id}"),
                "is in a pack but missing from the index".into(),
            ));
        }
        Some((
            format!("{kind} blob {id}"),
            "is missing from the repository".into(),
        ))
    }

    fn tree(&mut self, id: &Id) -> Rc<Vec<Found>> {
        if let Some(found) = self.memo.get(id) {
            return found.clone();
        }
        let mut found = Vec::new();
        if let Some((object, problem)) = self.blob_problem(id, "tree") {
            found.push(Found {
                object,
                problem,
                path: String::new(),
            });
        }
        // Still try to read it: a tree only missing from the index is readable.
        match snapshot::load_tree(self.repo, id) {
            Ok(tree) => {
                for node in &tree.nodes {
                    let name = String::from_utf8_lossy(&node.name).into_owned();
                    match node.kind {
                        NodeKind::Dir => match node.subtree {
                            Some(sub) => {
                                for f in self.tree(&sub).iter() {
                                    found.push(Found {
                                        object: f.object.clone(),
                                        problem: f.problem.clone(),
                                        path: if f.path.is_empty() {
                                            name.clone()
                                        } else {
                                            format!("{name}/{}", f.path)
                                        },
                                    });
                                }
                            }
                            None => found.push(Found {
                                object: format!("tree {id}"),
                                problem: "a directory has no subtree".into(),
                                path: name.clone(),
                            }),
                        },
                        NodeKind::File => {
                            for chunk in &node.content {
                                if let Some((object, problem)) = self.blob_problem(chunk, "data") {
                                    found.push(Found {
                                        object,
                                        problem,
                                        path: name.clone(),
                                    });
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            Err(e) if found.is_empty() => found.push(Found {
                object: format!("tree {id}"),
                problem: e.reason(),
                path: String::new(),
            }),
            Err(_) => {}
        }
        let found = Rc::new(found);
        self.memo.insert(*id, found.clone());
        found
    }
}
