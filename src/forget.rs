//! `snapfs forget`: apply a retention policy and remove the snapshot records
//! it does not keep. Data stays until `prune` collects it.
//!
//! The policy applies to each group of snapshots with the same account and
//! source paths on its own, so one account's many snapshots never push out
//! another's. Removing a snapshot file is atomic, and nothing else refers to
//! a snapshot, so an interrupted forget leaves a consistent repository.

use serde::Serialize;
use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::repository::backend::FileType;
use crate::repository::Repository;
use crate::retention::{Policy, Reason};
use crate::snapshot::{self, SnapshotEntry};

pub struct ForgetOptions {
    pub account: Option<String>,
    /// An empty policy means: the repository's configured policy.
    pub policy: Policy,
    pub dry_run: bool,
}

#[derive(Serialize)]
pub struct Group {
    pub account: String,
    pub paths: Vec<String>,
    pub keep: Vec<Kept>,
    pub remove: Vec<Removed>,
}

#[derive(Serialize)]
pub struct Kept {
    pub id: String,
    pub time: String,
    pub reasons: Vec<Reason>,
}

#[derive(Serialize)]
pub struct Removed {
    pub id: String,
    pub time: String,
}

pub fn run(repo: &Repository, opts: &ForgetOptions) -> Result<Vec<Group>> {
    let policy = if opts.policy.is_empty() {
        Policy::from_config(&repo.config().retention)
    } else {
        opts.policy.clone()
    };
    if policy.is_empty() {
        return Err(Error::Invalid(
            "no retention policy given and none configured: refusing to forget every snapshot"
                .into(),
        ));
    }
    let mut groups: BTreeMap<(String, Vec<Vec<u8>>), Vec<SnapshotEntry>> = BTreeMap::new();
    for entry in snapshot::list_warn(repo, opts.account.as_deref())? {
        if opts
            .account
            .as_ref()
            .is_some_and(|a| *a != entry.snapshot.account)
        {
            continue;
        }
        let key = (entry.snapshot.account.clone(), entry.snapshot.paths.clone());
        groups.entry(key).or_default().push(entry);
    }
    let mut out = Vec::new();
    for ((account, _), entries) in groups {
        let times: Vec<_> = entries.iter().map(|e| e.snapshot.taken_at()).collect();
        let decisions = policy.apply(&times);
        let mut group = Group {
            account,
            paths: entries[0].snapshot.paths_lossy(),
            keep: Vec::new(),
            remove: Vec::new(),
        };
        for (entry, reasons) in entries.iter().zip(decisions) {
            let time = entry.snapshot.taken_at().to_rfc3339();
            if reasons.is_empty() {
                if !opts.dry_run {
                    repo.backend().remove(FileType::Snapshot, &entry.file)?;
                }
                group.remove.push(Removed {
                    id: entry.id.to_hex(),
                    time,
                });
            } else {
                group.keep.push(Kept {
                    id: entry.id.to_hex(),
                    time,
                    reasons,
                });
            }
        }
        out.push(group);
    }
    Ok(out)
}
