//! A real `boxd serve` for integration tests: a private data directory
//! under /tmp, a free port on 127.0.0.1, its own cgroup parent and a random
//! admin key. Dropping it (also on panic) deletes its boxes through the API,
//! stops the daemon (SIGTERM, then SIGKILL after a bounded wait) and removes
//! the cgroup parent and the temporary directory.
//!
//! Talks HTTP with a minimal HTTP/1.0 client on a `TcpStream`, so the
//! clean-up does not depend on the CLI under test.
#![allow(dead_code)]

use crate::common::{cgroup_parent_dirs, unique};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BOXD: &str = env!("CARGO_BIN_EXE_boxd");
pub const AGENT: &str = env!("CARGO_BIN_EXE_boxd-agent");

/// How long the daemon may take to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one CLI invocation may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Daemon {
    child: Option<Child>,
    /// Everything of this daemon lives under here.
    pub root: PathBuf,
    pub data_dir: PathBuf,
    /// A scratch folder for the test's own files.
    pub work: PathBuf,
    pub addr: String,
    pub url: String,
    pub key: String,
    cgroup_parent: String,
    log: PathBuf,
}

/// 48 random hex characters.
pub fn random_key() -> String {
    let mut buf = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// One HTTP/1.0 request; returns the status and the body. `None` when the
/// daemon cannot be reached.
pub fn http(addr: &str, method: &str, path: &str, key: Option<&str>) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = key
        .map(|k| format!("X-Box-Api-Key: {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&resp[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, resp[head_end + 4..].to_vec()))
}

impl Daemon {
    /// Starts a daemon, or returns `None` (after printing `SKIPPED: why`)
    /// when this machine cannot run one.
    pub fn start() -> Option<Daemon> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "SKIPPED: boxd serve needs root (user namespaces with id maps, overlayfs, \
                 cgroups); run the tests as root"
            );
            return None;
        }
        let root = PathBuf::from("/tmp").join(unique("boxd-cli-test"));
        let data_dir = root.join("data");
        let work = root.join("work");
        std::fs::create_dir_all(&work).expect("create the test folder");
        let log = root.join("daemon.log");
        let log_file = std::fs::File::create(&log).expect("create the daemon log");
        let addr = format!("127.0.0.1:{}", free_port());
        let key = random_key();
        let cgroup_parent = unique("boxd-test");
        let child = Command::new(BOXD)
            .args([
                "serve",
                "--listen",
                &addr,
                "--cgroup-parent",
                &cgroup_parent,
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--agent")
            .arg(AGENT)
            .env("BOXD_API_KEY", &key)
            .env_remove("BOXD_URL")
            .env_remove("BOXD_CONFIG")
            .env_remove("BOXD_LISTEN")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log file"))
            .stderr(log_file)
            .spawn()
            .expect("start boxd serve");
        let mut d = Daemon {
            child: Some(child),
            root,
            data_dir,
            work,
            url: format!("http://{addr}"),
            addr,
            key,
            cgroup_parent,
            log,
        };
        d.wait_healthy();
        Some(d)
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some((200, _)) = http(&self.addr, "GET", "/healthz", None) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("boxd serve exited with {status}:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "boxd serve did not answer /healthz within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A `boxd` command line aimed at this daemon (URL, key and data dir
    /// through the environment, nothing inherited from the test's).
    pub fn cli(&self) -> Command {
        let mut c = Command::new(BOXD);
        c.env("BOXD_URL", &self.url)
            .env("BOXD_API_KEY", &self.key)
            .env("BOXD_DATA_DIR", &self.data_dir)
            .env_remove("BOXD_LOG")
            .current_dir(&self.work);
        c
    }

    /// Runs `boxd ARGS` against this daemon.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cli();
        c.args(args);
        run_bounded(c)
    }

    /// Runs `boxd ARGS`; it must exit 0. Returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "boxd {args:?} failed with {}:\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    fn delete_boxes(&self) {
        let Some((200, body)) = http(&self.addr, "GET", "/v2/box", Some(&self.key)) else {
            return;
        };
        let Ok(serde_json::Value::Array(boxes)) = serde_json::from_slice(&body) else {
            return;
        };
        for b in boxes {
            if let Some(id) = b["id"].as_str() {
                let r = http(
                    &self.addr,
                    "DELETE",
                    &format!("/v2/box/{id}"),
                    Some(&self.key),
                );
                if !matches!(r, Some((200..=299, _))) {
                    eprintln!("could not delete box {id} while cleaning up: {r:?}");
                }
            }
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("boxd serve ignored SIGTERM for {STOP_TIMEOUT:?}; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.delete_boxes();
        self.stop();
        for d in cgroup_parent_dirs(&self.cgroup_parent) {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `c` with its output captured, killing it after [`CLI_TIMEOUT`].
pub fn run_bounded(mut c: Command) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start boxd");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for boxd") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{c:?} did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// A scratch directory under /tmp (removed on drop) for tests that need
/// no daemon.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = PathBuf::from("/tmp").join(unique(tag));
        std::fs::create_dir_all(&p).expect("create a temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
