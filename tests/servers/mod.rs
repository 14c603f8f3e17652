//! Throwaway database servers for tests: a PostgreSQL and a MariaDB from
//! the host's packages (`tests/run.sh` installs them), each in a fresh
//! temp folder, listening only on a Unix socket in that folder, never on
//! the network and never touching a system instance.
//!
//! Include it from a test binary's root:
//!
//! ```text
//! #[path = "../servers/mod.rs"]
//! mod servers;
//! ```
//!
//! then, in a test:
//!
//! ```text
//! let Some(pg) = servers::postgres("my_test") else { return };  // shared
//! pg.sql("postgres", "CREATE ROLE alice; CREATE DATABASE a OWNER alice");
//! let cfg = pg.config(DatabaseSelection::Owner);   // a PostgresqlConfig
//! let toml = pg.toml("owner");                     // a [postgresql] section
//! let Some(my) = servers::mariadb("my_test") else { return };
//! my.sql("CREATE DATABASE alice_shop");
//! ```
//!
//! `postgres()`/`mariadb()` return one server per test binary, started at
//! its first use (PostgreSQL about 1 s, MariaDB about 2 s) and stopped at
//! exit; tests share it, so each uses its own account names. A test that
//! needs a server of its own (to stop it) calls `Postgres::start()` /
//! `Mariadb::start()`, stopped and removed on drop.
//!
//! Without the packages a test skips with a message, unless
//! `SNAPFS_REQUIRE_FUSE=1` (CI), when it fails: the convention of the
//! FUSE tests. As root the servers run as the packages' system users
//! (`postgres`, `mysql`): PostgreSQL refuses to run as root. As another
//! user they run as that user.
//!
//! Object storage: `seaweedfs()` is a shared single-node SeaweedFS
//! (`weed mini`) with one bucket; `seaweedfs_cluster()` starts a cluster
//! of its own for a test (master, three volume servers, filer, S3 gateway;
//! two copies of every object), whose volume servers it can kill.
//!
//! If the test process dies without running its exit handlers (SIGKILL,
//! Ctrl-C), the servers die with it (`PR_SET_PDEATHSIG`); only their temp
//! folders are left.

// Each test binary uses a part of this.
#![allow(dead_code)]

pub mod mariadb;
pub mod postgres;
pub mod seaweedfs;
pub mod seaweedfs_cluster;

// Each test binary uses a part of these.
#[allow(unused_imports)]
pub use mariadb::{mariadb, Mariadb};
#[allow(unused_imports)]
pub use postgres::{postgres, Postgres};
#[allow(unused_imports)]
pub use seaweedfs::{seaweedfs, Seaweed};
#[allow(unused_imports)]
pub use seaweedfs_cluster::{seaweedfs_cluster, Cluster};

use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections before the test
/// fails: generous for a loaded 2-core CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The skip convention: `None` with a message, or a panic under CI.
fn unavailable<T>(test: &str, why: &str) -> Option<T> {
    if std::env::var("SNAPFS_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("{test}: {why} (SNAPFS_REQUIRE_FUSE=1)");
    }
    eprintln!("skipping {test}: {why}");
    None
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Who a server runs as: as root, the package's system user; otherwise
/// whoever runs the tests (`None`: no change).
fn service_user(name: &str) -> Result<Option<(u32, u32)>, String> {
    if !is_root() {
        return Ok(None);
    }
    let c_name = CString::new(name).unwrap();
    // SAFETY: getpwnam's result is read at once, before another call.
    let pw = unsafe { libc::getpwnam(c_name.as_ptr()) };
    if pw.is_null() {
        return Err(format!("no user {name} (its package creates it)"));
    }
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

/// A temp folder the server's user owns, for its data, socket and logs.
fn server_dir(prefix: &str, user: Option<(u32, u32)>) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    }
    dir
}

fn as_user(command: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

/// The first of `paths` that exists.
fn first_existing(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Run to completion, `Ok(stdout)` on exit 0, otherwise `Err` with what it
/// said.
fn output(command: &mut Command, stdin: &[u8]) -> Result<String, String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command:?}: {e}"))?;
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // A writer thread: a large script and a large answer would otherwise
    // fill both pipes and wait on each other.
    let writer = std::thread::spawn(move || input.write_all(&stdin));
    let out: Output = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = writer.join();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} ({}): {}",
            command.get_program().to_string_lossy(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A server process, its folder removed once it is gone.
struct Server {
    child: Child,
    /// The signal that stops it at once (PostgreSQL: SIGQUIT, its
    /// immediate shutdown, which also ends its backends).
    signal: i32,
    /// Removed after the server stops, unless taken out to outlive it
    /// ([`Server::kill_keeping_folder`]).
    dir: Option<tempfile::TempDir>,
}

/// Servers alive, for the exit handler: the shared ones live in statics,
/// which are never dropped.
static LIVE: Mutex<Vec<(u32, i32, PathBuf)>> = Mutex::new(Vec::new());

impl Server {
    /// Start `command` (a server in the foreground) and wait until
    /// `ready` says it accepts connections; panics with its log if it
    /// exits or takes too long.
    fn start(
        mut command: Command,
        signal: i32,
        dir: tempfile::TempDir,
        log: &Path,
        setup_started: Instant,
        ready: impl Fn() -> bool,
    ) -> Server {
        let log_file = std::fs::File::create(log).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        // SAFETY: prctl is async-signal-safe. Run after the uid change
        // (which would clear it), so the server dies with the test process
        // even when that is killed without running its exit handlers.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = spawn_from_lasting_thread(command)
            .unwrap_or_else(|e| panic!("starting a server in {}: {e}", dir.path().display()));
        register_exit_handler();
        LIVE.lock()
            .unwrap()
            .push((child.id(), signal, dir.path().to_path_buf()));
        let shown = dir.path().display().to_string();
        let mut server = Server {
            child,
            signal,
            dir: Some(dir),
        };
        let started = Instant::now();
        while !ready() {
            let log_text = || std::fs::read_to_string(log).unwrap_or_default();
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "the server exited ({status}) while starting:\n{}",
                    log_text()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "the server is not ready after {START_TIMEOUT:?}:\n{}",
                    log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Shown with --nocapture, or when a test fails: slow CI starts stand out.
        eprintln!(
            "{shown} ready in {:.2} s (setup included)",
            setup_started.elapsed().as_secs_f64()
        );
        server
    }

    /// Stop it with SIGKILL, as a crash would, and keep its folder (its
    /// data) for a restart.
    fn kill_keeping_folder(mut self) -> tempfile::TempDir {
        self.signal = libc::SIGKILL;
        self.dir.take().expect("a folder")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id();
        unsafe { libc::kill(pid as i32, self.signal) };
        let _ = self.child.wait();
        LIVE.lock().unwrap().retain(|(p, _, _)| *p != pid);
        // `self.dir` is removed next, now that nothing writes to it.
    }
}

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends,
/// and a test's thread ends with the test: a shared server must be forked
/// from a thread that lasts as long as the process.
fn spawn_from_lasting_thread(command: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, received) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut command, reply) in received {
                let _ = reply.send(command.spawn());
            }
        });
        Mutex::new(jobs)
    });
    let (reply, answer) = mpsc::channel();
    spawner.lock().unwrap().send((command, reply)).unwrap();
    answer.recv().unwrap()
}

/// Stop the servers still running when the test binary exits (the shared
/// ones) and remove their folders.
fn register_exit_handler() {
    extern "C" fn stop_all() {
        let Ok(live) = LIVE.lock() else { return };
        for (pid, signal, dir) in live.iter() {
            unsafe {
                libc::kill(*pid as i32, *signal);
                libc::waitpid(*pid as i32, std::ptr::null_mut(), 0);
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| unsafe {
        libc::atexit(stop_all);
    });
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}
