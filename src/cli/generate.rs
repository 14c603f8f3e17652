//! Man pages and shell completions made from the command-line definition
//! itself, so they never describe an option the binary does not have.
//!
//! The package build runs them through `examples/generate.rs`
//! (`cargo run --release --example generate -- man DIR`). Rejected: a
//! hidden `snapfs generate` command, because clap_complete completes hidden
//! commands too (every shell would offer `generate`), and `build.rs`,
//! which would have to compile `args.rs` a second time outside the crate.

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::Path;

use super::args::Cli;
use crate::error::{IoContext, Result};

/// One man page per command into the existing folder `dir`: `snapfs.1`,
/// `snapfs-backup.1`, ...; `snapfs.1` also has the exit status, files and
/// environment, which no single command's options show.
pub fn man_pages(dir: &Path) -> Result<()> {
    clap_mangen::generate_to(Cli::command(), dir).at(dir)?;
    let path = dir.join("snapfs.1");
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd);
    let mut page = Vec::new();
    man.render_title(&mut page).at(&path)?;
    man.render_name_section(&mut page).at(&path)?;
    man.render_synopsis_section(&mut page).at(&path)?;
    man.render_description_section(&mut page).at(&path)?;
    man.render_options_section(&mut page).at(&path)?;
    man.render_subcommands_section(&mut page).at(&path)?;
    page.extend_from_slice(TOP_PAGE_SECTIONS.as_bytes());
    man.render_version_section(&mut page).at(&path)?;
    std::fs::write(&path, page).at(&path)
}

/// Roff, as the README's "Exit codes" and the packaging describe them.
const TOP_PAGE_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
.B 0
Success.
.TP
.B 1
Error: the command failed (no repository, an I/O error, no such snapshot, a
source path that cannot be opened, ...).
.TP
.B 2
Usage: the command line is wrong.
.TP
.B 3
Partial: the snapshot was saved, but some entries could not be read (each
named in a warning).
.TP
.B 4
Damage: \fBcheck\fR found damage, \fBrestore\fR could not restore some
entries, \fBcopy\fR left snapshots damaged in the source behind (it
copied the others), or corrupt repository data was met.
.TP
.B 5
Locked: a conflicting lock was held longer than \fB\-\-lock\-wait\fR.
.TP
.B 6
Unavailable: the repository's S3 server did not answer or refused the
request (down, wrong credentials, no such bucket).
.SH ENVIRONMENT
.TP
.B SNAPFS_REPO
The repository, when \fB\-\-repo\fR is not given: a folder, or
s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX].
.TP
.B AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
Credentials for a repository on S3 (never on the command line).
.TP
.B AWS_DEFAULT_REGION
The S3 region (default us\-east\-1).
.TP
.B SNAPFS_S3_RETRY
How long a failing S3 request is retried (default 1m; 0: not at all).
.TP
.B SNAPFS_LOG
Log level: error, warn, info or debug.
.SH FILES
.TP
.I /etc/snapfs/snapfs.toml
The host configuration: which accounts a nightly run backs up, and where
their files, databases and mail are (\fBsnapfs\-run.timer\fR).
.TP
.I /etc/default/snapfs
\fBSNAPFS_REPO\fR for the mount, prune and per\-account backup units.
.TP
.I /var/lib/snapfs/repository
The default repository as root.
.SH "SEE ALSO"
\fBmount.snapfs\fR(8), \fI/usr/share/doc/snapfs/README.md.gz\fR,
\fI/usr/share/doc/snapfs/FORMAT.md.gz\fR
"#;

/// Completions into the existing folder `dir`: `snapfs.bash`, `_snapfs`
/// (zsh) and `snapfs.fish`.
pub fn completions(dir: &Path) -> Result<()> {
    let mut cmd = Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "snapfs", dir).at(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument of every command says what it is for:
    /// `--help` and the man pages show nothing else about it.
    #[test]
    fn every_argument_has_help_text() {
        let mut missing = Vec::new();
        let mut cmd = Cli::command();
        cmd.build();
        let mut stack = vec![(String::from("snapfs"), cmd)];
        while let Some((path, cmd)) = stack.pop() {
            if cmd.get_about().is_none() {
                missing.push(path.clone());
            }
            for arg in cmd.get_arguments() {
                // clap's own --help and --version.
                if matches!(arg.get_id().as_str(), "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                stack.push((format!("{path} {}", sub.get_name()), sub.clone()));
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn man_pages_for_every_visible_command_and_three_shells() {
        let dir = tempfile::tempdir().unwrap();
        man_pages(dir.path()).unwrap();
        let page = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(page("snapfs.1").contains("snapfs\\-backup"));
        assert!(page("snapfs.1").contains(".SH \"EXIT STATUS\""));
        assert!(page("snapfs-backup.1").contains("one\\-file\\-system"));
        assert!(page("snapfs-forget.1").contains("keep\\-monthly"));
        assert!(page("snapfs.1").contains("snapfs\\-copy"));
        assert!(page("snapfs-copy.1").contains("\\-\\-from"));

        let dir = tempfile::tempdir().unwrap();
        completions(dir.path()).unwrap();
        for file in ["snapfs.bash", "_snapfs", "snapfs.fish"] {
            let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(text.contains("lock-wait"), "{file}");
            assert!(text.contains("copy"), "{file}");
        }
    }
}
