//! Database dumps: a dump tool's standard output, streamed into the backup
//! as one file, never through a temporary file.
//!
//! A dump is kept only if the tool succeeded: its exit status is checked,
//! and what it wrote on standard error is the message when it failed (a
//! `pg_dump` that loses its connection half-way exits non-zero after
//! writing a plausible but truncated file). [`RunningDump::finish`] is
//! that check; the backup calls it after reading the output to its end.

use std::io::{self, Read};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

/// Standard error kept for the message, at most (a failing tool may print
/// megabytes; the first lines say why).
const STDERR_KEPT: usize = 64 * 1024;

/// One database's dump, not started yet.
pub struct Dump {
    /// The database's name, as the server has it.
    pub database: String,
    /// Its name in the snapshot's folder: `<database>.sql`.
    pub file_name: String,
    /// For messages: "PostgreSQL database shop".
    pub what: String,
    pub command: Command,
}

/// A dump tool running, its output read by the backup.
pub struct RunningDump {
    /// The dump's `what`, which begins every error of [`Self::finish`].
    what: String,
    child: Child,
    stdout: ChildStdout,
    /// Reads standard error meanwhile: a tool that fills the pipe while
    /// nobody reads it would stop, and the backup with it.
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Dump {
    /// Start the tool, its standard output a pipe to read.
    pub fn start(&mut self) -> io::Result<RunningDump> {
        let mut child = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        Ok(RunningDump {
            what: self.what.clone(),
            child,
            stdout,
            stderr: Some(std::thread::spawn(move || keep_head(stderr))),
        })
    }
}

fn keep_head(mut stderr: ChildStderr) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

impl Read for RunningDump {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl RunningDump {
    /// Wait for the tool: `Ok` only when it exited 0. The error names the
    /// dump (its `what`: the tool's words rarely name the database, "ERROR:
    /// permission denied for table t") and gives the tool's own words (its
    /// standard error), or how it ended.
    pub fn finish(mut self) -> Result<(), String> {
        let what = std::mem::take(&mut self.what);
        self.wait().map_err(|why| format!("{what}: {why}"))
    }

    fn wait(mut self) -> Result<(), String> {
        // Whatever the backup did not read (it stopped on an error) must
        // not keep the tool blocked on a full pipe.
        drop(self.stdout);
        let status = self
            .child
            .wait()
            .map_err(|e| format!("waiting for it: {e}"))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&stderr);
        let said = said.trim();
        Err(match (status.code(), said.is_empty()) {
            (Some(code), true) => format!("exited with status {code}"),
            (Some(code), false) => format!("exited with status {code}: {said}"),
            (None, _) => format!("killed by a signal ({status})"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Dump {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        Dump {
            database: "db".into(),
            file_name: "db.sql".into(),
            what: "test database".into(),
            command,
        }
    }

    #[test]
    fn output_is_streamed_and_success_is_checked() {
        let mut running = shell("printf 'CREATE TABLE t;\\n'; echo noise >&2")
            .start()
            .unwrap();
        let mut out = String::new();
        running.read_to_string(&mut out).unwrap();
        assert_eq!(out, "CREATE TABLE t;\n");
        running.finish().unwrap();
    }

    #[test]
    fn a_failing_tool_says_why_in_its_own_words() {
        let mut running = shell("echo partial; echo 'connection lost' >&2; exit 1")
            .start()
            .unwrap();
        let mut out = String::new();
        running.read_to_string(&mut out).unwrap();
        let err = running.finish().unwrap_err();
        assert_eq!(err, "test database: exited with status 1: connection lost");
    }

    #[test]
    fn an_unread_output_does_not_hang_finish() {
        // 1 MiB, more than a pipe holds; nobody reads it.
        let running = shell("head -c 1048576 /dev/zero; exit 3").start().unwrap();
        let err = running.finish().unwrap_err();
        assert!(err.contains("status") || err.contains("signal"), "{err}");
    }

    #[test]
    fn a_missing_tool_is_an_error_at_start() {
        let mut dump = shell("");
        dump.command = Command::new("/nonexistent/pg_dump");
        assert!(dump.start().is_err());
    }
}
