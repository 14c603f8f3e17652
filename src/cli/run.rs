//! `snapfs run`: the host configuration in, one line per account out (or
//! JSON), a progress bar across accounts on a terminal, the metrics file,
//! and an exit code that says whether anything was left out.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use super::args::{Global, RunArgs};
use super::commands::parse_time;
use super::{exit, warn_if_exposed};
use crate::chunker::ChunkerParams;
use crate::display::human_size;
use crate::host::accounts::{self, Skip};
use crate::host::config::{HostConfig, DEFAULT_PATH};
use crate::repository::{Location, Repository};
use crate::run::{self, metrics, AccountReport, RunAccount, RunOptions, Status};

pub(super) fn run(g: &Global, args: RunArgs) -> anyhow::Result<u8> {
    let config_path = args.config.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
    let config = HostConfig::load(&config_path)?;
    let (accounts, refused) = select(&config, &args.account)?;
    let repo = open_or_create(g, &config)?;
    let opts = RunOptions {
        time: args.time.as_deref().map(parse_time).transpose()?,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        hostname: crate::metadata::hostname(),
        lock_wait: args.lock_wait,
    };
    let bar = progress_bar(accounts.len(), g.json);
    let done = |report: &AccountReport| {
        if !g.json {
            let line = describe(report);
            match &bar {
                Some(bar) => bar.suspend(|| println!("{line}")),
                None => println!("{line}"),
            }
        }
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    };
    refused.iter().for_each(&done);
    let mut report = run::run(&repo, &config, &accounts, &opts, &done)?;
    report.accounts.extend(refused);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(path) = &config.metrics_file {
        let now = chrono::Utc::now().timestamp();
        if let Err(e) = metrics::write(path, &repo, &report, now) {
            eprintln!("snapfs: warning: metrics not written: {e}");
        }
    }
    if g.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} accounts: {} ok, {} partial, {} failed, in {:.1}s",
            report.accounts.len(),
            report.count(Status::Ok),
            report.count(Status::Partial),
            report.count(Status::Failed),
            report.duration_ms as f64 / 1000.0
        );
    }
    Ok(if report.count(Status::Failed) > 0 {
        exit::ERROR
    } else if report.count(Status::Partial) > 0 {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

/// The accounts to back up ([`accounts::select`], `--account`), and the
/// reports of those that cannot even be tried.
///
/// A user of the uid range without a files folder is no hosting account:
/// skipped, with a note. A name the configuration lists is backed up
/// whatever is missing: a home that vanished is then a failure of that
/// account (its databases and mail still backed up), not a silent skip.
fn select(
    config: &HostConfig,
    only: &[String],
) -> anyhow::Result<(Vec<RunAccount>, Vec<AccountReport>)> {
    let selection = accounts::select(config)?.restrict(only)?;
    let listed = config.accounts.names.is_some();
    let owner = |user: Option<&accounts::User>| user.map_or((0, 0), |u| (u.uid, u.gid));
    let mut chosen: Vec<RunAccount> = selection
        .accounts
        .iter()
        .map(|a| RunAccount {
            name: a.name.clone(),
            owner: owner(a.user.as_ref()),
        })
        .collect();
    let mut refused = Vec::new();
    for skipped in &selection.skipped {
        match &skipped.why {
            Skip::NoFolder(_) | Skip::Unknown(_) if listed => chosen.push(RunAccount {
                name: skipped.name.clone(),
                owner: owner(accounts::lookup(&skipped.name)?.as_ref()),
            }),
            Skip::BadName => refused.push(run::failed(&skipped.name, skipped.to_string())),
            _ => eprintln!("snapfs: skipped {skipped}"),
        }
    }
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((chosen, refused))
}

fn open_or_create(g: &Global, config: &HostConfig) -> anyhow::Result<Repository> {
    // A folder or an S3 location, like --repo.
    let location =
        Location::parse_os(config.repository.as_os_str())?.with_credentials(config.s3.clone());
    let location = super::cached(g, location);
    let repo = if Repository::exists(&location)? {
        // The run reads the index under its lock.
        Repository::open_without_index(&location)?
    } else {
        eprintln!("snapfs: no repository at {location} yet; creating one");
        Repository::init(&location, ChunkerParams::default(), None)?
    };
    warn_if_exposed(&repo);
    Ok(repo)
}

fn progress_bar(accounts: usize, json: bool) -> Option<ProgressBar> {
    (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::with_draw_target(
            Some(accounts as u64),
            ProgressDrawTarget::stderr_with_hz(4),
        );
        bar.set_style(
            ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} accounts")
                .expect("static template"),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    })
}

/// One account's line: status, files, databases, mail, bytes added, time.
fn describe(r: &AccountReport) -> String {
    let status = match r.status {
        Status::Ok => "ok",
        Status::Partial => "PARTIAL",
        Status::Failed => "FAILED",
    };
    if r.status == Status::Failed {
        let why = r.error.as_deref().unwrap_or("failed");
        return format!("{:<16} {status:<8} {why}", r.account);
    }
    let mut line = format!(
        "{:<16} {status:<8} {} files ({} read), {} databases{}, {}{} added, {:.1}s",
        r.account,
        r.files,
        r.files_read,
        r.databases,
        if r.databases_failed > 0 {
            format!(" ({} failed)", r.databases_failed)
        } else {
            String::new()
        },
        if r.mail { "mail, " } else { "" },
        human_size(r.bytes_added),
        r.duration_ms as f64 / 1000.0
    );
    if r.status == Status::Partial {
        line.push_str(&format!(
            "; {} left out (see the warnings)",
            r.warnings.len()
        ));
    }
    line
}
