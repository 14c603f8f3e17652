//! A throwaway SeaweedFS *cluster* on 127.0.0.1: one master, three volume
//! servers, a filer and an S3 gateway, six processes, each in a temp folder
//! of its own. Every object is stored twice: the master's
//! `-defaultReplication=001` asks for one more copy on another server of
//! the same rack (all three are in the default rack of the default data
//! center), and the gateway writes both copies before it answers. A
//! volume server can be killed ([`Cluster::kill_volume_server`]) and the
//! other two still hold one copy of everything, and room for new
//! volumes of two copies.
//!
//! What SeaweedFS 4.x needs, found by trying (4.48):
//! - the master's address as `IP:PORT.GRPC_PORT` for the others: with
//!   `IP:PORT` alone they dial gRPC on PORT+10000;
//! - the master first: a filer started before it waits about 7 s before
//!   trying again;
//! - `weed filer -s3` did not start its gateway here; `weed s3` beside it
//!   does, in 0.2 s;
//! - room for volumes (`-max`): a volume of the bucket's collection holds
//!   `-volumeSizeLimitMB`, the master grows six at a time, and when the
//!   two servers left have no free slot a PUT waits 30 s inside the
//!   gateway and fails with 500 ("no writable volumes").
//!
//! Everything stops with SIGKILL (on drop, or with the test process:
//! `PR_SET_PDEATHSIG`): the data is thrown away, and a volume server's
//! SIGTERM waits `-preStopSeconds` (10 s) before it exits.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use snapfs::repository::backend::{Backend, FileType, S3Backend};

use super::seaweedfs::{
    backend, free_ports, weed_binary, write_identities, ACCESS_KEY, BUCKET, SECRET_KEY,
};
use super::{unavailable, Server};

/// Volume servers started.
pub const VOLUME_SERVERS: usize = 3;

pub struct Cluster {
    /// `http://127.0.0.1:PORT`: the S3 gateway.
    pub endpoint: String,
    // Dropped in this order: the gateway first, the master last.
    s3: Server,
    filer: Server,
    volumes: Vec<Option<Server>>,
    master: Server,
    /// `http://127.0.0.1:PORT`: the master's HTTP API (its topology).
    master_url: String,
}

/// A cluster of its own for a test, stopped on drop; `None` (after a
/// message, or a panic under `SNAPFS_REQUIRE_FUSE=1`) when `weed` is
/// missing.
pub fn seaweedfs_cluster(test: &str) -> Option<Cluster> {
    match Cluster::start() {
        Ok(cluster) => Some(cluster),
        Err(why) => unavailable(test, why),
    }
}

impl Cluster {
    pub fn start() -> Result<Cluster, &'static str> {
        let weed = weed_binary()?;
        let started = Instant::now();
        // master http+grpc, 3 x volume http+grpc, filer http+grpc, s3 http+grpc.
        let ports: [u16; 12] = free_ports();
        let ip = ["-ip=127.0.0.1", "-ip.bind=127.0.0.1"];
        let master_address = format!("127.0.0.1:{}.{}", ports[0], ports[1]);
        let master_url = format!("http://127.0.0.1:{}", ports[0]);

        let (mut command, dir) = weed_in(&weed, "master");
        command
            .args(ip)
            .arg(format!("-port={}", ports[0]))
            .arg(format!("-port.grpc={}", ports[1]))
            .arg(format!("-mdir={}", dir.path().display()))
            // One master: no Raft election to wait for.
            .arg("-peers=none")
            .arg("-defaultReplication=001")
            // Small volumes, so a few hundred MiB spread over many of
            // them, on every server.
            .arg("-volumeSizeLimitMB=32")
            .arg("-telemetry=false");
        let status = format!("{master_url}/cluster/status");
        let master = start(command, dir, || {
            get(&status).is_some_and(|s| s.contains(r#""IsLeader":true"#))
        });

        let mut volumes = Vec::new();
        for n in 0..VOLUME_SERVERS {
            let (http, grpc) = (ports[2 + 2 * n], ports[3 + 2 * n]);
            let (mut command, dir) = weed_in(&weed, "volume");
            command
                .args(ip)
                .arg(format!("-port={http}"))
                .arg(format!("-port.grpc={grpc}"))
                .arg(format!("-dir={}", dir.path().display()))
                .arg(format!("-master={master_address}"))
                // Slots enough for what the tests write twice over two
                // servers (a volume file grows as it fills).
                .arg("-max=64");
            volumes.push(Some(start(command, dir, || listening(http))));
        }

        let (filer_http, filer_grpc) = (ports[8], ports[9]);
        let (mut command, dir) = weed_in(&weed, "filer");
        command
            .args(ip)
            .arg(format!("-port={filer_http}"))
            .arg(format!("-port.grpc={filer_grpc}"))
            .arg(format!("-master={master_address}"))
            .arg(format!("-defaultStoreDir={}", dir.path().display()))
            .arg(format!(
                "-localSocket={}",
                dir.path().join("filer.sock").display()
            ));
        let filer = start(command, dir, || listening(filer_http));

        let (mut command, dir) = weed_in(&weed, "s3");
        let identities = dir.path().join("s3.json");
        write_identities(&identities);
        command
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-port={}", ports[10]))
            .arg(format!("-port.grpc={}", ports[11]))
            .args(["-port.iceberg=0", "-port.lance=0"])
            .arg(format!("-filer=127.0.0.1:{filer_http}.{filer_grpc}"))
            .arg(format!("-config={}", identities.display()))
            .arg(format!(
                "-localSocket={}",
                dir.path().join("s3.sock").display()
            ));
        let endpoint = format!("http://127.0.0.1:{}", ports[10]);
        let s3 = start(command, dir, || listening(ports[10]));

        let cluster = Cluster {
            endpoint,
            s3,
            filer,
            volumes,
            master,
            master_url,
        };
        cluster.make_bucket();
        cluster.wait_until_writable(started);
        Ok(cluster)
    }

    /// Create [`BUCKET`] (a `weed mini` does it with `-bucket`).
    fn make_bucket(&self) {
        let bucket = rusty_s3::Bucket::new(
            self.endpoint.parse().unwrap(),
            rusty_s3::UrlStyle::Path,
            BUCKET.to_string(),
            "us-east-1".to_string(),
        )
        .unwrap();
        let credentials = rusty_s3::Credentials::new(ACCESS_KEY, SECRET_KEY);
        use rusty_s3::S3Action;
        let url = bucket
            .create_bucket(&credentials)
            .sign(Duration::from_secs(600));
        let answer = ureq::put(url.as_str())
            .config()
            .http_status_as_error(false)
            .build()
            .send_empty()
            .expect("the gateway answers");
        assert_eq!(answer.status(), 200, "create bucket {BUCKET}");
    }

    /// Until every volume server has joined the master and a PUT of two
    /// copies goes through.
    fn wait_until_writable(&self, started: Instant) {
        let topology = format!("{}/dir/status", self.master_url);
        let probe = self.backend_at(&self.location("probe"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let servers = get(&topology).map_or(0, |t| t.matches(r#""Url":"#).count());
            if servers == VOLUME_SERVERS && probe.write(FileType::Lock, "probe", b"p").is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster is not writable after 60 s ({servers} volume servers joined)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        probe.remove(FileType::Lock, "probe").unwrap();
        eprintln!(
            "SeaweedFS cluster (master, {VOLUME_SERVERS} volume servers, filer, S3) \
             ready in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// Kill volume server `n` at once (SIGKILL), as a crash or a power cut
    /// would. Its data goes with it.
    pub fn kill_volume_server(&mut self, n: usize) {
        // Every process of the cluster stops with SIGKILL.
        drop(self.volumes[n].take().expect("running"));
    }

    /// `s3:http://127.0.0.1:PORT/snapfs-test/PREFIX`
    pub fn location(&self, prefix: &str) -> String {
        format!("s3:{}/{BUCKET}/{prefix}", self.endpoint)
    }

    /// A backend at `location`, retrying for at most a second.
    pub fn backend_at(&self, location: &str) -> S3Backend {
        backend(location, Duration::from_secs(1))
    }

    /// The environment a `snapfs` process needs for this cluster: the
    /// credentials, and snapfs's own retry budget (a minute), since what
    /// the tests show is that a night's retries ride out a lost server.
    /// No disk cache: every read must reach the cluster (and nothing goes
    /// to /var/cache).
    pub fn env(&self) -> [(&'static str, &'static str); 4] {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("SNAPFS_NO_CACHE", "1"),
        ]
    }
}

/// `weed SUBCOMMAND` run in a new temp folder that holds its data and log.
fn weed_in(weed: &Path, subcommand: &str) -> (Command, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("snapfs-seaweedfs-{subcommand}-"))
        .tempdir()
        .unwrap();
    let mut command = Command::new(weed);
    command.current_dir(dir.path()).arg(subcommand);
    (command, dir)
}

fn start(command: Command, dir: tempfile::TempDir, ready: impl Fn() -> bool) -> Server {
    let log = dir.path().join("weed.log");
    Server::start(command, libc::SIGKILL, dir, &log, Instant::now(), ready)
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A 200 answer's body.
fn get(url: &str) -> Option<String> {
    let mut answer = ureq::get(url).call().ok()?;
    answer.body_mut().read_to_string().ok()
}
