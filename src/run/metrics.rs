//! The run's metrics for monitoring: a Prometheus text file, as
//! node_exporter's textfile collector reads it, replaced atomically after
//! each run (a collector never sees half a file).
//!
//! Per account: when it was last backed up completely (from the repository
//! when tonight's backup was not complete, so an account failing every
//! night shows its age, not "never"), tonight's errors, bytes added and
//! duration; for the run: when it ended and how many accounts failed.

use std::fmt::Write;
use std::path::Path;

use super::{RunReport, Status};
use crate::error::Result;
use crate::repository::backend::write_atomic_mode;
use crate::repository::Repository;
use crate::snapshot;

/// The collector (a user of its own) reads it; nothing in it is secret.
const METRICS_FILE_MODE: u32 = 0o644;

/// Write the metrics of `report` to `path`; `now` is the run's end (Unix
/// seconds).
pub fn write(path: &Path, repo: &Repository, report: &RunReport, now: i64) -> Result<()> {
    write_atomic_mode(
        path,
        render(repo, report, now).as_bytes(),
        METRICS_FILE_MODE,
    )
}

fn render(repo: &Repository, report: &RunReport, now: i64) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, values: &mut dyn Iterator<Item = (String, f64)>| {
        let _ = writeln!(out, "# HELP snapfs_{name} {help}");
        let _ = writeln!(out, "# TYPE snapfs_{name} gauge");
        for (labels, value) in values {
            let _ = writeln!(out, "snapfs_{name}{labels} {value}");
        }
    };
    let per_account = |f: &dyn Fn(&super::AccountReport) -> f64| {
        report
            .accounts
            .iter()
            .map(|a| (format!("{{account=\"{}\"}}", escape(&a.account)), f(a)))
            .collect::<Vec<_>>()
            .into_iter()
    };
    family(
        "account_last_success_timestamp_seconds",
        "When the account was last backed up completely (0: never).",
        &mut per_account(&|a| last_success(repo, a, now) as f64),
    );
    family(
        "account_errors",
        "Sources and entries left out of the account's last backup; 1 if it failed.",
        &mut per_account(&|a| match a.status {
            Status::Failed => 1.0,
            _ => a.warnings.len() as f64,
        }),
    );
    family(
        "account_bytes_added",
        "New bytes (uncompressed) the account's last backup added.",
        &mut per_account(&|a| a.bytes_added as f64),
    );
    family(
        "account_duration_seconds",
        "How long the account's last backup took.",
        &mut per_account(&|a| a.duration_ms as f64 / 1000.0),
    );
    family(
        "run_last_timestamp_seconds",
        "When the last snapfs run ended.",
        &mut std::iter::once((String::new(), now as f64)),
    );
    family(
        "run_accounts_failed",
        "Accounts the last run could not back up at all.",
        &mut std::iter::once((String::new(), report.count(Status::Failed) as f64)),
    );
    out
}

/// Tonight, or the newest complete snapshot of the account (0: none).
fn last_success(repo: &Repository, account: &super::AccountReport, now: i64) -> i64 {
    if account.status == Status::Ok {
        return now;
    }
    snapshot::list_warn(repo, Some(&account.account))
        .unwrap_or_default()
        .iter()
        .rev()
        .find(|e| e.snapshot.summary.errors == 0 && e.snapshot.partial_sources().next().is_none())
        .map_or(0, |e| e.snapshot.time.secs)
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
