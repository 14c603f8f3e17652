//! Where warnings and debug lines go: standard error, or, once a
//! `mount --daemon` has detached from its terminal, syslog (the journal on
//! systemd hosts). A daemonized mount's standard error is /dev/null, and a
//! damaged chunk's warning must still reach the operator.

use std::ffi::CString;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

static TO_SYSLOG: AtomicBool = AtomicBool::new(false);

/// Log to standard error, filtered by `SNAPFS_LOG` (default: warnings).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SNAPFS_LOG")
        // fuser warns of requests it answers by default and of unmounts
        // already done by fusermount3: nothing a user can act on.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuser=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Logs)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .try_init();
}

/// From now on, log to syslog as `snapfs[PID]` (facility daemon).
pub fn switch_to_syslog() {
    // SAFETY: the identifier is a static C string, as openlog requires.
    unsafe { libc::openlog(c"snapfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    TO_SYSLOG.store(true, Ordering::SeqCst);
}

struct Logs;

impl<'a> MakeWriter<'a> for Logs {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine::new(libc::LOG_INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LogLine {
        LogLine::new(match *meta.level() {
            Level::ERROR => libc::LOG_ERR,
            Level::WARN => libc::LOG_WARNING,
            Level::INFO => libc::LOG_INFO,
            Level::DEBUG | Level::TRACE => libc::LOG_DEBUG,
        })
    }
}

/// One formatted event: written through to standard error, or collected
/// and sent to syslog as one message when dropped.
pub struct LogLine {
    priority: libc::c_int,
    syslog: Option<Vec<u8>>,
}

impl LogLine {
    fn new(priority: libc::c_int) -> LogLine {
        LogLine {
            priority,
            syslog: TO_SYSLOG.load(Ordering::Relaxed).then(Vec::new),
        }
    }
}

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match &mut self.syslog {
            Some(line) => {
                line.extend_from_slice(bytes);
                Ok(bytes.len())
            }
            None => std::io::stderr().write(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.syslog {
            Some(_) => Ok(()),
            None => std::io::stderr().flush(),
        }
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let Some(line) = self.syslog.take() else {
            return;
        };
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end().replace('\0', "\\0");
        if let Ok(message) = CString::new(text) {
            // SAFETY: a "%s" format with one NUL-terminated argument.
            unsafe { libc::syslog(self.priority, c"%s".as_ptr(), message.as_ptr()) };
        }
    }
}
