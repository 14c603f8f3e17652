//! `snapfs forget`: remove snapshot records, by a retention policy or by
//! name. Data stays until `prune` collects it.
//!
//! The policy applies to each group of snapshots with the same account and
//! source paths on its own, so one account's many snapshots never push out
//! another's. Removing a snapshot file is atomic, and nothing else refers to
//! a snapshot, so an interrupted forget leaves a consistent repository.
//!
//! Nothing that keeps no snapshot runs: a policy that keeps nothing in some
//! group is refused before anything is removed, and so is a list of
//! snapshots that would leave the repository empty. The one way to remove
//! every snapshot of an account (one that left the platform) is to say so:
//! `--account NAME --all`.

use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::retention::{Policy, Reason};
use crate::snapshot::{self, SnapshotEntry};

pub struct ForgetOptions {
    pub account: Option<String>,
    pub what: Selection,
    pub dry_run: bool,
}

/// Which snapshots go.
pub enum Selection {
    /// Those the policy does not keep; an empty policy means the
    /// repository's configured one.
    Policy(Policy),
    /// Exactly these (ids, id prefixes, `latest` or dates, as elsewhere).
    Snapshots(Vec<String>),
    /// Every snapshot of the account (`ForgetOptions::account` is required).
    All,
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
    /// Why the policy keeps it; empty when snapshots were named and this
    /// one was not.
    pub reasons: Vec<Reason>,
}

#[derive(Serialize)]
pub struct Removed {
    pub id: String,
    pub time: String,
}

pub fn run(repo: &Repository, opts: &ForgetOptions) -> Result<Vec<Group>> {
    let account = opts.account.as_deref();
    let entries: Vec<SnapshotEntry> = snapshot::list_warn(repo, account)?
        .into_iter()
        .filter(|e| account.is_none_or(|a| e.snapshot.account == a))
        .collect();
    let decided = match &opts.what {
        Selection::Policy(policy) => by_policy(repo, policy, entries)?,
        Selection::Snapshots(selectors) => by_name(repo, selectors, account, entries)?,
        Selection::All => {
            let Some(account) = account else {
                return Err(Error::Invalid(
                    "--all removes every snapshot of one account: name it with --account".into(),
                ));
            };
            if entries.is_empty() {
                return Err(Error::NotFound(format!(
                    "no snapshots of account {account}"
                )));
            }
            all(entries)
        }
    };
    // Decided in full before the first removal: a refusal removes nothing.
    let mut out = Vec::new();
    for (entries, decisions) in decided {
        out.push(remove(repo, &entries, decisions, opts.dry_run)?);
    }
    Ok(out)
}

/// Each group's snapshots and, for each, the reasons to keep it (`None`:
/// it goes).
type Decided = Vec<(Vec<SnapshotEntry>, Vec<Option<Vec<Reason>>>)>;

fn by_policy(repo: &Repository, policy: &Policy, entries: Vec<SnapshotEntry>) -> Result<Decided> {
    let configured;
    let policy = if policy.is_empty() {
        configured = Policy::from_config(&repo.config().retention);
        &configured
    } else {
        policy
    };
    if policy.is_empty() {
        return Err(Error::Invalid(
            "no retention policy given and none configured: refusing to forget every snapshot"
                .into(),
        ));
    }
    policy.check().map_err(Error::Invalid)?;
    let mut decided = Vec::new();
    for (entries, _) in group(entries.into_iter().map(|e| (e, ())).collect()) {
        let times: Vec<_> = entries.iter().map(|e| e.snapshot.taken_at()).collect();
        let decisions: Vec<Option<Vec<Reason>>> = policy
            .apply(&times)
            .into_iter()
            .map(|reasons| (!reasons.is_empty()).then_some(reasons))
            .collect();
        // Every valid policy keeps a group's newest snapshot; this is the
        // last guard should a rule ever stop doing so.
        if decisions.iter().all(Option::is_none) {
            let s = &entries[0].snapshot;
            return Err(Error::Invalid(format!(
                "the policy would remove every snapshot of account {} ({}); refusing \
                 (to remove a departed account's backups: forget --account NAME --all)",
                s.account,
                s.paths_lossy().join(" ")
            )));
        }
        decided.push((entries, decisions));
    }
    Ok(decided)
}

fn by_name(
    repo: &Repository,
    selectors: &[String],
    account: Option<&str>,
    entries: Vec<SnapshotEntry>,
) -> Result<Decided> {
    let mut chosen = HashSet::new();
    for selector in selectors {
        chosen.insert(snapshot::select(&entries, selector, account)?.id);
    }
    // Counted among every account's snapshots, not only the selected ones.
    let everything = if account.is_some() {
        snapshot::list_warn(repo, None)?.len()
    } else {
        entries.len()
    };
    if chosen.len() >= everything {
        return Err(Error::Invalid(format!(
            "that is every snapshot in the repository ({everything}); refusing to remove them all \
             (to remove a departed account's backups: forget --account NAME --all)"
        )));
    }
    let decided = entries
        .into_iter()
        .map(|e| {
            let keep = (!chosen.contains(&e.id)).then(Vec::new);
            (e, keep)
        })
        .collect();
    Ok(group(decided))
}

/// Everything goes.
fn all(entries: Vec<SnapshotEntry>) -> Decided {
    group(entries.into_iter().map(|e| (e, None)).collect())
}

/// What a group is: an account and its source paths.
type GroupKey = (String, Vec<Vec<u8>>);

/// Group by account and source paths, keeping each group's order.
fn group<T>(items: Vec<(SnapshotEntry, T)>) -> Vec<(Vec<SnapshotEntry>, Vec<T>)> {
    let mut groups: BTreeMap<GroupKey, (Vec<SnapshotEntry>, Vec<T>)> = BTreeMap::new();
    for (entry, value) in items {
        let key = (entry.snapshot.account.clone(), entry.snapshot.paths.clone());
        let (entries, values) = groups.entry(key).or_default();
        entries.push(entry);
        values.push(value);
    }
    groups.into_values().collect()
}

fn remove(
    repo: &Repository,
    entries: &[SnapshotEntry],
    decisions: Vec<Option<Vec<Reason>>>,
    dry_run: bool,
) -> Result<Group> {
    let mut group = Group {
        account: entries[0].snapshot.account.clone(),
        paths: entries[0].snapshot.paths_lossy(),
        keep: Vec::new(),
        remove: Vec::new(),
    };
    for (entry, decision) in entries.iter().zip(decisions) {
        let id = entry.id.to_hex();
        let time = entry.snapshot.taken_at().to_rfc3339();
        match decision {
            Some(reasons) => group.keep.push(Kept { id, time, reasons }),
            None => {
                if !dry_run {
                    repo.remove_snapshot_file(&entry.file)?;
                }
                group.remove.push(Removed { id, time });
            }
        }
    }
    Ok(group)
}
