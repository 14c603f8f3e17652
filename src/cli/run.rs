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
use crate::host::config::{HostConfig, DEFAULT_PATH};
use crate::repository::Repository;
use crate::run::{self, metrics, AccountReport, RunAccount, RunOptions, Status};

pub(super) fn run(g: &Global, args: RunArgs) -> anyhow::Result<u8> {
    let config_path = args.config.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
    let config = HostConfig::load(&config_path)?;
    let accounts = select(&config, &args.account)?;
    let repo = open_or_create(&config)?;
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
    let report = run::run(&repo, &config, &accounts, &opts, &done)?;
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

/// The accounts to back up: `--account`, else the configuration's `names`.
fn select(config: &HostConfig, only: &[String]) -> anyhow::Result<Vec<RunAccount>> {
    let names = if !only.is_empty() {
        only.to_vec()
    } else if let Some(names) = &config.accounts.names {
        names.clone()
    } else {
        anyhow::bail!("[accounts] names is needed until accounts are read from passwd");
    };
    Ok(names
        .into_iter()
        .map(|name| RunAccount {
            owner: crate::metadata::user_ids(&name).unwrap_or((0, 0)),
            name,
        })
        .collect())
}

fn open_or_create(config: &HostConfig) -> anyhow::Result<Repository> {
    let path = &config.repository;
    let repo = if Repository::exists(path) {
        // The run reads the index under its lock.
        Repository::open_without_index(path)?
    } else {
        eprintln!(
            "snapfs: no repository at {} yet; creating one",
            path.display()
        );
        Repository::init(path, ChunkerParams::default(), None)?
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
