//! `snapfs run`: every account of the host, each into one snapshot of its
//! files, databases and mail, from the host configuration
//! ([`crate::host::config`]).
//!
//! One process backs up all accounts, `jobs` at a time: it takes the shared
//! lock and loads the repository index once, where one `snapfs backup` per
//! account would load it a thousand times. One failure never costs the
//! rest: a database whose dump fails, a home that vanished, an account
//! whose snapshot could not be written are each reported, and every other
//! source and account is backed up.

pub mod metrics;

use serde::Serialize;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backup::{self, AccountSources, BackupOptions};
use crate::error::Result;
use crate::host::config::{for_account, HostConfig};
use crate::repository::lock::{Lock, LockKind};
use crate::repository::Repository;
use crate::snapshot::{SourceKind, SourceStatus, Timestamp};
use crate::source::{databases, dump};

pub struct RunOptions {
    /// Date every snapshot of the run (tests, imports); default: each
    /// account's start.
    pub time: Option<(Timestamp, i32)>,
    /// Accounts backed up at the same time.
    pub jobs: usize,
    pub hostname: String,
    /// How long to wait for a running prune before giving up.
    pub lock_wait: Duration,
}

/// One account to back up: its name and its user's uid and gid (0, 0 for an
/// account without a user), who own what the snapshot makes up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAccount {
    pub name: String,
    pub owner: (u32, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything was backed up.
    Ok,
    /// A snapshot was saved, but some source or entry is missing from it.
    Partial,
    /// No snapshot: nothing could be backed up, or it could not be saved.
    Failed,
}

/// What one account's backup gave; one line of the run's report.
#[derive(Clone, Debug, Serialize)]
pub struct AccountReport {
    pub account: String,
    pub status: Status,
    /// The new snapshot's id.
    pub snapshot: Option<String>,
    pub files: u64,
    pub files_read: u64,
    /// Database dumps kept, and those that failed.
    pub databases: u64,
    pub databases_failed: u64,
    /// Whether the snapshot holds `mails/`.
    pub mail: bool,
    pub bytes_added: u64,
    pub bytes_stored: u64,
    pub duration_ms: u64,
    /// What was left out, one line each, naming the source.
    pub warnings: Vec<String>,
    /// Why there is no snapshot (`Failed`).
    pub error: Option<String>,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub accounts: Vec<AccountReport>,
    pub duration_ms: u64,
}

impl RunReport {
    pub fn count(&self, status: Status) -> usize {
        self.accounts.iter().filter(|a| a.status == status).count()
    }
}

/// Back up `accounts`; `done` is told of each as it finishes (progress,
/// a line per account). The report lists them in the order given.
pub fn run(
    repo: &Repository,
    config: &HostConfig,
    accounts: &[RunAccount],
    opts: &RunOptions,
    done: &(dyn Fn(&AccountReport) + Sync),
) -> Result<RunReport> {
    let started = Instant::now();
    // One shared lock and one index for the night: prune waits for the run
    // as it would for each backup; the index is read under the lock (see
    // `backup::run_sources`).
    let lock = repo.lock(
        LockKind::Shared,
        &format!("snapfs run of {} accounts", accounts.len()),
        opts.lock_wait,
    )?;
    repo.reload_index()?;
    let queue = Mutex::new(accounts.iter().enumerate().collect::<VecDeque<_>>());
    let reports = Mutex::new(vec![None; accounts.len()]);
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.clamp(1, accounts.len().max(1)) {
            scope.spawn(|| loop {
                let Some((i, account)) = lock_ignoring_poison(&queue).pop_front() else {
                    return;
                };
                let report = back_up(repo, config, account, opts, &lock);
                done(&report);
                lock_ignoring_poison(&reports)[i] = Some(report);
            });
        }
    });
    let accounts = reports
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every account was backed up by some job"))
        .collect();
    Ok(RunReport {
        accounts,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The report of an account that could not be backed up at all.
pub fn failed(account: &str, why: String) -> AccountReport {
    AccountReport {
        account: account.to_string(),
        status: Status::Failed,
        snapshot: None,
        files: 0,
        files_read: 0,
        databases: 0,
        databases_failed: 0,
        mail: false,
        bytes_added: 0,
        bytes_stored: 0,
        duration_ms: 0,
        warnings: Vec::new(),
        error: Some(why),
    }
}

/// One account, never an `Err`: what went wrong is in the report.
fn back_up(
    repo: &Repository,
    config: &HostConfig,
    account: &RunAccount,
    opts: &RunOptions,
    lock: &Lock,
) -> AccountReport {
    let started = Instant::now();
    let mut report = failed(&account.name, String::new());
    report.error = None;
    let sources = gather(config, account);
    if sources.files.is_none() && sources.mail.is_none() && sources.dumps.is_empty() {
        let why: Vec<String> = sources.failed.iter().map(describe_failure).collect();
        report.error = Some(match why.is_empty() {
            true => "nothing to back up".into(),
            false => format!("nothing to back up ({})", why.join("; ")),
        });
        report.duration_ms = started.elapsed().as_millis() as u64;
        return report;
    }
    let backup_opts = BackupOptions {
        paths: Vec::new(),
        account: account.name.clone(),
        hostname: opts.hostname.clone(),
        time: opts.time,
        excludes: config.files.exclude.clone(),
        one_file_system: false,
        tags: Vec::new(),
        progress: false,
        lock_wait: opts.lock_wait,
    };
    match backup::run_account(repo, &backup_opts, sources, lock) {
        Ok(outcome) => {
            let s = &outcome.snapshot;
            report.snapshot = Some(outcome.id.to_hex());
            report.files = s.summary.files;
            report.files_read = s.summary.files_read;
            report.bytes_added = s.summary.bytes_added;
            report.bytes_stored = s.summary.bytes_stored;
            let dumps = s.sources.iter().filter(|x| is_database(x.kind));
            report.databases = dumps.clone().filter(|x| x.failure.is_none()).count() as u64;
            report.databases_failed = dumps.filter(|x| x.failure.is_some()).count() as u64;
            report.mail = s
                .sources
                .iter()
                .any(|x| x.kind == SourceKind::Mail && x.failure.is_none());
            let partial = s.summary.errors > 0 || s.partial_sources().next().is_some();
            report.status = if partial { Status::Partial } else { Status::Ok };
            report.warnings = outcome.warnings;
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

fn is_database(kind: SourceKind) -> bool {
    matches!(kind, SourceKind::Postgresql | SourceKind::Mysql)
}

/// The sources of one account: its home and maildir where they exist, and
/// a dump of each of its databases.
fn gather(config: &HostConfig, account: &RunAccount) -> AccountSources {
    let mut sources = AccountSources {
        files: None,
        mail: None,
        dumps: Vec::new(),
        failed: Vec::new(),
        owner: account.owner,
    };
    let home = for_account(&config.files.path, &account.name);
    if is_folder(&home) {
        sources.files = Some(home);
    } else {
        sources.failed.push(SourceStatus {
            kind: SourceKind::Files,
            name: home.as_os_str().as_encoded_bytes().to_vec(),
            unreadable: 0,
            failure: Some("does not exist".into()),
        });
    }
    // No maildir: the account has no mail, which is no failure.
    if let Some(mail) = &config.mail {
        let maildir = for_account(&mail.path, &account.name);
        sources.mail = is_folder(&maildir).then_some(maildir);
    }
    if let Some(pg) = &config.postgresql {
        add_dumps(
            &mut sources,
            SourceKind::Postgresql,
            databases::postgresql_dumps(pg, &account.name),
        );
    }
    if let Some(my) = &config.mysql {
        add_dumps(
            &mut sources,
            SourceKind::Mysql,
            databases::mysql_dumps(my, &account.name),
        );
    }
    sources
}

fn add_dumps(sources: &mut AccountSources, kind: SourceKind, dumps: Result<Vec<dump::Dump>>) {
    match dumps {
        Ok(dumps) => sources.dumps.extend(dumps.into_iter().map(|d| (kind, d))),
        // The server could not even say which databases are the account's.
        Err(e) => sources.failed.push(SourceStatus {
            kind,
            name: Vec::new(),
            unreadable: 0,
            failure: Some(e.to_string()),
        }),
    }
}

/// Checked without following a link; the backup opens it safely again.
fn is_folder(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn describe_failure(status: &SourceStatus) -> String {
    let what = match status.kind {
        SourceKind::Files => "home",
        SourceKind::Mail => "mail",
        SourceKind::Postgresql => "PostgreSQL",
        SourceKind::Mysql => "MariaDB",
    };
    let name = String::from_utf8_lossy(&status.name);
    let why = status.failure.as_deref().unwrap_or("incomplete");
    match name.is_empty() {
        true => format!("{what}: {why}"),
        false => format!("{what} {name}: {why}"),
    }
}
