//! The top levels of the mount: which snapshots are shown, under which
//! names, and in which account's folder.
//!
//! ```text
//! --account alice          /2026-11-24/  /latest
//! --per-account            /alice/2026-11-24/  /alice/latest  /bob/…
//! plain, one account       as --account
//! plain, several accounts  as --per-account
//! ```
//!
//! Listing is lazy per account: the root of a per-account mount lists the
//! repository's account folders only (one listing, whatever the number of
//! snapshots); an account's snapshot files are listed and read when its
//! folder is first looked into, and again at most every `relist_every`
//! while it is used. A host of 1,000 accounts mounts without reading a
//! single snapshot record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use chrono::{Local, TimeZone};

use super::{lock, read, write, Inode, SnapshotFs, LATEST_NAME};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::backend;
use crate::snapshot::{self, Snapshot};

/// What the mount's root shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Top {
    /// One account's snapshots (`mount --account NAME`).
    Account(String),
    /// One folder per account (`mount --per-account`).
    Accounts,
    /// A plain mount: the snapshots while the repository holds one
    /// account's, a folder per account as soon as it holds several, so
    /// that two accounts' days are never mixed under one name.
    Auto,
}

/// A snapshot that was shown once. Slots are never removed: a name keeps
/// meaning one snapshot for the life of the mount, even after it is gone.
pub(super) struct Slot {
    pub(super) id: Id,
    pub(super) name: String,
    pub(super) snapshot: Snapshot,
    pub(super) account: u32,
    /// Its file was in no folder (layout 1) when last seen: the root's
    /// listing covers it, not its account's folder's.
    loose: bool,
    /// False once the snapshot file is gone (forgotten, pruned).
    pub(super) visible: bool,
}

/// An account, once seen. Never removed either.
pub(super) struct Account {
    /// Its name in the snapshot records.
    pub(super) account: String,
    /// Its name at the top level: the account's own, or its folder's
    /// escaped spelling when the name cannot be a file name.
    pub(super) shown: String,
    /// Its folder of snapshot files, when it has one (layout 2).
    folder: Option<String>,
    /// The user and group of that name (root when there is none).
    pub(super) owner: (u32, u32),
    /// Day names → slot; every name ever given, visible or not.
    by_name: BTreeMap<String, u32>,
    /// Its folder was in the last listing, or it has loose snapshots.
    present: bool,
    listed_at: Option<Instant>,
}

#[derive(Default)]
pub(super) struct Snapshots {
    pub(super) slots: Vec<Slot>,
    by_id: HashMap<Id, u32>,
    /// Snapshot files not shown: other accounts, or damaged (warned once).
    pub(super) skipped: HashSet<Id>,
    pub(super) accounts: Vec<Account>,
    by_account: HashMap<String, u32>,
    /// Shown names of the present accounts → account.
    by_shown: BTreeMap<String, u32>,
    /// Folders already looked at, with the account each holds (`None`: a
    /// folder whose account could not be told, tried again next listing).
    folders: HashMap<String, u32>,
    root_listed_at: Option<Instant>,
}

impl Snapshots {
    /// The newest visible snapshot of `account`.
    fn latest(&self, account: u32) -> Option<u32> {
        (0..self.slots.len() as u32)
            .filter(|&n| {
                let slot = &self.slots[n as usize];
                slot.visible && slot.account == account
            })
            .max_by_key(|&n| {
                (
                    self.slots[n as usize].snapshot.time,
                    self.slots[n as usize].id,
                )
            })
    }

    fn present_accounts(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_shown.values().copied()
    }
}

impl SnapshotFs {
    /// Whether the root lists account folders (else one account's days).
    pub(super) fn root_shows_accounts(&self) -> bool {
        match &self.opts.top {
            Top::Account(_) => false,
            Top::Accounts => true,
            Top::Auto => read(&self.snapshots).by_shown.len() > 1,
        }
    }

    /// The account whose days the root shows, if it shows days.
    fn root_account(&self) -> Option<u32> {
        if self.root_shows_accounts() {
            return None;
        }
        read(&self.snapshots).present_accounts().next()
    }

    /// The folder a snapshot's folder sits in: the root, or its account's.
    pub(super) fn day_parent(&self, slot: u32) -> u64 {
        if !self.root_shows_accounts() {
            return super::ROOT_INO;
        }
        let account = read(&self.snapshots).slots[slot as usize].account;
        self.account_root_ino(account)
    }

    /// First listing, at mount time: the account folders only.
    pub(super) fn list_at_mount(&self) -> Result<()> {
        let mut s = write(&self.snapshots);
        if let Top::Account(name) = &self.opts.top {
            let n = self.add_account(&mut s, name, Some(snapshot::account_folder(name)));
            drop(s);
            return self.relist_account(n, true);
        }
        drop(s);
        self.relist_root(true)
    }

    /// List again what the root shows, if it is time.
    pub(super) fn maybe_relist_root(&self) {
        let _listing = lock(&self.listing);
        if !matches!(self.opts.top, Top::Account(_)) {
            let due = read(&self.snapshots)
                .root_listed_at
                .is_none_or(|t| t.elapsed() >= self.opts.relist_every);
            if due {
                if let Err(e) = self.relist_root(false) {
                    tracing::warn!("listing accounts: {e}");
                }
            }
        }
        if let Some(account) = self.root_account() {
            self.maybe_relist_account_locked(account);
        }
    }

    /// List an account's snapshots again, if it is time.
    pub(super) fn maybe_relist_account(&self, account: u32) {
        let _listing = lock(&self.listing);
        self.maybe_relist_account_locked(account);
    }

    fn maybe_relist_account_locked(&self, account: u32) {
        let due = read(&self.snapshots).accounts[account as usize]
            .listed_at
            .is_none_or(|t| t.elapsed() >= self.opts.relist_every);
        if due {
            if let Err(e) = self.relist_account(account, false) {
                let name = read(&self.snapshots).accounts[account as usize]
                    .account
                    .clone();
                tracing::warn!("listing the snapshots of account {name}: {e}");
            }
        }
    }

    /// The account folders of the repository, and the snapshot files in
    /// no folder (layout 1), which only the root listing covers.
    fn relist_root(&self, first: bool) -> Result<()> {
        let folders = snapshot::account_folders(&self.repo)?;
        let loose = self.repo.snapshot_files_in("")?;
        let mut names = Vec::new();
        for folder in &folders {
            if read(&self.snapshots).folders.contains_key(folder) {
                continue;
            }
            match snapshot::account_of_folder(folder) {
                Some(name) => names.push((name, folder.clone())),
                None => names.extend(self.account_in(folder)?.map(|n| (n, folder.clone()))),
            }
        }
        let loaded = self.load_new(loose.iter().map(|(name, _)| name.clone()))?;
        let mut s = write(&self.snapshots);
        for (name, folder) in names {
            let n = self.add_account(&mut s, &name, Some(folder.clone()));
            s.folders.insert(folder, n);
        }
        let present: HashSet<Id> = file_ids(loose.iter());
        for slot in s.slots.iter_mut().filter(|slot| slot.loose) {
            slot.visible = present.contains(&slot.id);
        }
        for (id, snapshot) in loaded {
            let n = self.add_account(&mut s, &snapshot.account.clone(), None);
            self.add_slot(&mut s, n, id, snapshot, true);
        }
        let folders: HashSet<&String> = folders.iter().collect();
        for n in 0..s.accounts.len() {
            let has_loose = s
                .slots
                .iter()
                .any(|x| x.visible && x.loose && x.account == n as u32);
            let account = &s.accounts[n];
            let present = has_loose || account.folder.as_ref().is_some_and(|f| folders.contains(f));
            self.set_present(&mut s, n as u32, present);
        }
        s.root_listed_at = Some(Instant::now());
        drop(s);
        if !first {
            self.refresh_index_if_new()?;
        }
        Ok(())
    }

    /// The account of a folder whose name does not spell it (hashed):
    /// from the first readable record in it.
    fn account_in(&self, folder: &str) -> Result<Option<String>> {
        let files = self.repo.snapshot_files_in(folder)?;
        let names: Vec<String> = files.into_iter().map(|(name, _)| name).collect();
        for (_, entry) in snapshot::load_many(&self.repo, &names) {
            if let Ok(entry) = entry {
                return Ok(Some(entry.snapshot.account));
            }
        }
        Ok(None)
    }

    /// Show an account's new snapshots and hide the ones whose file is
    /// gone. Each new file is read once, on several threads; other
    /// accounts' files (a folder shared through a hash, layout 1's common
    /// folder) are remembered by id.
    fn relist_account(&self, account: u32, first: bool) -> Result<()> {
        let (name, folder) = {
            let s = read(&self.snapshots);
            let a = &s.accounts[account as usize];
            (a.account.clone(), a.folder.clone())
        };
        let mut files = match &folder {
            Some(folder) => self.repo.snapshot_files_in(folder)?,
            None => Vec::new(),
        };
        // A mount of one account also covers files in no folder (layout 1);
        // elsewhere the root listing does.
        let with_loose = matches!(self.opts.top, Top::Account(_));
        if with_loose {
            files.extend(self.repo.snapshot_files_in("")?);
        }
        let loaded = self.load_new(files.iter().map(|(name, _)| name.clone()))?;
        let loose_ids: HashSet<Id> = file_ids(
            files
                .iter()
                .filter(|(f, _)| backend::folder_of(f).is_empty()),
        );
        let present = file_ids(files.iter());
        let mut s = write(&self.snapshots);
        for slot in s.slots.iter_mut().filter(|slot| slot.account == account) {
            if present.contains(&slot.id) {
                // Found where this listing looks: `migrate` moves files
                // from no folder into their account's.
                slot.visible = true;
                slot.loose = loose_ids.contains(&slot.id);
            } else if with_loose || !slot.loose {
                slot.visible = false;
            }
        }
        for (id, snapshot) in loaded {
            if snapshot.account == name {
                let loose = loose_ids.contains(&id);
                self.add_slot(&mut s, account, id, snapshot, loose);
            } else {
                s.skipped.insert(id);
            }
        }
        s.accounts[account as usize].listed_at = Some(Instant::now());
        drop(s);
        if !first {
            self.refresh_index_if_new()?;
        }
        Ok(())
    }

    /// The records of the files not seen before, oldest first. Damaged ones
    /// are warned about once and skipped; other accounts' come back too,
    /// for the caller to sort.
    fn load_new(&self, files: impl Iterator<Item = String>) -> Result<Vec<(Id, Snapshot)>> {
        // A name that is not an id is not a snapshot (`check` reports it).
        let new: Vec<String> = {
            let known = read(&self.snapshots);
            files
                .filter(|name| {
                    Id::from_hex(backend::file_of(name)).is_ok_and(|id| {
                        !known.by_id.contains_key(&id) && !known.skipped.contains(&id)
                    })
                })
                .collect()
        };
        let mut loaded = Vec::new();
        let mut skipped = Vec::new();
        for (name, entry) in snapshot::load_many(&self.repo, &new) {
            match entry {
                Ok(e) => loaded.push((e.id, e.snapshot)),
                // Forgotten while we listed: it will not be listed again.
                Err(Error::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!("not showing snapshot {name}: {e}");
                    skipped.extend(Id::from_hex(backend::file_of(&name)).ok());
                }
            }
        }
        write(&self.snapshots).skipped.extend(skipped);
        loaded.sort_by_key(|a| (a.1.time, a.0));
        // Their trees and chunks are in index files written since the
        // repository was opened, unless the index already knows their root
        // trees (the usual case for a first look into an account).
        if loaded.iter().any(|(_, s)| !self.repo.has_blob(&s.tree)) {
            *lock(&self.new_since_index) = true;
        }
        Ok(loaded)
    }

    /// New snapshots' trees and chunks are in index files written since the
    /// repository was opened.
    fn refresh_index_if_new(&self) -> Result<()> {
        if std::mem::take(&mut *lock(&self.new_since_index)) {
            self.repo.refresh_index()?;
        }
        Ok(())
    }

    fn add_account(&self, s: &mut Snapshots, name: &str, folder: Option<String>) -> u32 {
        if let Some(&n) = s.by_account.get(name) {
            let account = &mut s.accounts[n as usize];
            if account.folder.is_none() {
                account.folder = folder;
            }
            return n;
        }
        let n = s.accounts.len() as u32;
        let owner = crate::host::accounts::lookup(name)
            .ok()
            .flatten()
            .map_or((0, 0), |user| (user.uid, user.gid));
        s.accounts.push(Account {
            account: name.to_string(),
            shown: shown_name(name),
            folder,
            owner,
            by_name: BTreeMap::new(),
            present: false,
            listed_at: None,
        });
        s.by_account.insert(name.to_string(), n);
        self.set_present(s, n, true);
        n
    }

    fn set_present(&self, s: &mut Snapshots, n: u32, present: bool) {
        let account = &mut s.accounts[n as usize];
        if present == account.present {
            return;
        }
        account.present = present;
        let shown = account.shown.clone();
        if !present {
            // Only its own entry: the name may be another account's.
            if s.by_shown.get(&shown) == Some(&n) {
                s.by_shown.remove(&shown);
            }
            return;
        }
        // Two accounts spelled alike at the top level: the first keeps the
        // name, the other is not shown (said once, as it turns present).
        match s.by_shown.entry(shown) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(n);
            }
            std::collections::btree_map::Entry::Occupied(e) => tracing::warn!(
                "account {:?} is not shown: {} is taken",
                s.accounts[n as usize].account,
                e.key()
            ),
        }
    }

    fn add_slot(&self, s: &mut Snapshots, account: u32, id: Id, snapshot: Snapshot, loose: bool) {
        if s.by_id.contains_key(&id) {
            return;
        }
        let name = self.name_for(&s.accounts[account as usize], &snapshot);
        let n = s.slots.len() as u32;
        s.by_id.insert(id, n);
        s.accounts[account as usize].by_name.insert(name.clone(), n);
        s.slots.push(Slot {
            id,
            name,
            snapshot,
            account,
            loose,
            visible: true,
        });
    }

    /// `YYYY-MM-DD`, or `YYYY-MM-DD_HHMMSS` when the day already has one:
    /// no colons, which rsync and scp would read as a host name.
    fn name_for(&self, account: &Account, snapshot: &Snapshot) -> String {
        let day = snapshot
            .local_date(self.opts.utc)
            .format("%Y-%m-%d")
            .to_string();
        if !account.by_name.contains_key(&day) {
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
        while account.by_name.contains_key(&name) {
            n += 1;
            name = format!("{full}_{n}");
        }
        name
    }

    /// The names at the top level, sorted, and the snapshot ids they show,
    /// when the root shows days (else: none).
    pub fn snapshot_names(&self) -> Vec<(String, Id)> {
        self.maybe_relist_root();
        match self.root_account() {
            Some(account) => self.day_names(account),
            None => Vec::new(),
        }
    }

    /// The visible day names of an account, sorted, with their snapshots.
    pub(super) fn day_names(&self, account: u32) -> Vec<(String, Id)> {
        let s = read(&self.snapshots);
        s.accounts[account as usize]
            .by_name
            .iter()
            .filter(|(_, &n)| s.slots[n as usize].visible)
            .map(|(name, &n)| (name.clone(), s.slots[n as usize].id))
            .collect()
    }

    /// The present accounts, by shown name.
    pub(super) fn account_names(&self) -> Vec<(String, u32)> {
        let s = read(&self.snapshots);
        s.by_shown
            .iter()
            .map(|(name, &n)| (name.clone(), n))
            .collect()
    }

    /// What `name` is at the top level: an account's folder, or (when the
    /// root shows days) a day or `latest`.
    pub(super) fn lookup_top(&self, name: &[u8]) -> Result<u64> {
        self.maybe_relist_root();
        if let Some(account) = self.root_account() {
            return self.lookup_day(account, name);
        }
        let account = std::str::from_utf8(name)
            .ok()
            .and_then(|n| read(&self.snapshots).by_shown.get(n).copied());
        match account {
            Some(account) => Ok(self.account_root_ino(account)),
            None => Err(Error::NotFound(format!(
                "no account {}",
                String::from_utf8_lossy(name)
            ))),
        }
    }

    /// `latest` or a day of `account`.
    pub(super) fn lookup_day(&self, account: u32, name: &[u8]) -> Result<u64> {
        if name == LATEST_NAME.as_bytes() {
            return self.latest_ino(account);
        }
        let slot = {
            let s = read(&self.snapshots);
            std::str::from_utf8(name)
                .ok()
                .and_then(|n| s.accounts[account as usize].by_name.get(n))
                .copied()
                .filter(|&n| s.slots[n as usize].visible)
        };
        let slot = slot.ok_or_else(|| {
            Error::NotFound(format!("no snapshot {}", String::from_utf8_lossy(name)))
        })?;
        Ok(self.snapshot_root_ino(slot))
    }

    /// The entries of a folder listing days: `latest` first, then the days.
    pub(super) fn day_entries(&self, account: u32) -> Result<Vec<(u64, Vec<u8>)>> {
        let names = self.day_names(account);
        let mut entries = Vec::with_capacity(names.len() + 1);
        if !names.is_empty() {
            entries.push((self.latest_ino(account)?, LATEST_NAME.as_bytes().to_vec()));
        }
        for (name, id) in names {
            let slot = read(&self.snapshots).by_id[&id];
            entries.push((self.snapshot_root_ino(slot), name.into_bytes()));
        }
        Ok(entries)
    }

    /// The entries of the root.
    pub(super) fn root_entries(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        self.maybe_relist_root();
        if let Some(account) = self.root_account() {
            return self.day_entries(account);
        }
        Ok(self
            .account_names()
            .into_iter()
            .map(|(name, n)| (self.account_root_ino(n), name.into_bytes()))
            .collect())
    }

    /// The inode of `account`'s `latest` as it is now.
    fn latest_ino(&self, account: u32) -> Result<u64> {
        let slot = read(&self.snapshots)
            .latest(account)
            .ok_or_else(|| Error::NotFound("no snapshots yet".into()))?;
        Ok(self.special_ino(Inode::Latest { slot }))
    }

    pub(super) fn snapshot_root_ino(&self, slot: u32) -> u64 {
        self.special_ino(Inode::SnapshotRoot { slot })
    }

    pub(super) fn account_root_ino(&self, account: u32) -> u64 {
        self.special_ino(Inode::AccountRoot { account })
    }

    fn special_ino(&self, inode: Inode) -> u64 {
        if let Some(ino) = read(&self.inodes).special_of(&inode) {
            return ino;
        }
        write(&self.inodes).special(inode)
    }
}

/// The ids of snapshot files named by a listing.
fn file_ids<'a>(files: impl Iterator<Item = &'a (String, u64)>) -> HashSet<Id> {
    files
        .filter_map(|(name, _)| Id::from_hex(backend::file_of(name)).ok())
        .collect()
}

/// An account's name at the top level: its own when it can be a file
/// name, its folder's escaped spelling otherwise (`..`, `a/b`, empty).
fn shown_name(account: &str) -> String {
    let plain =
        !account.is_empty() && account != "." && account != ".." && !account.contains(['/', '\0']);
    if plain {
        account.to_string()
    } else {
        snapshot::account_folder(account)
    }
}
