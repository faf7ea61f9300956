//! The official Upstash Box SDKs, unmodified, against `boxd serve`: the
//! Python SDK (`upstash-box`, sync and async clients) runs `tests/sdk/flow.py`
//! and the TypeScript SDK (`@upstash/box`) runs `tests/sdk/flow.mjs`, each
//! against its own daemon on a fresh data dir and a free loopback port.
//!
//! The SDKs are installed under `target/sdk` by `.ci/install-sdks` (pinned to
//! the versions docs/UPSTASH_API.md was written from). Without root, or
//! without the SDKs, each test says `SKIPPED` and why.

mod common;

use boxd_runtime::{Runtime, RuntimeConfig};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::blocking::Client;
use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BOXD: &str = env!("CARGO_BIN_EXE_boxd");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// How long the daemon has to answer `GET /healthz` with 200.
const HEALTHZ_WAIT: Duration = Duration::from_secs(30);
/// The bound each flow script enforces on itself.
const FLOW_BOUND_SECS: u64 = 300;
/// Ours, a little longer, in case the script's own bound does not fire.
const FLOW_WAIT: Duration = Duration::from_secs(FLOW_BOUND_SECS + 60);
/// How long the daemon gets after SIGTERM before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(10);

fn sdk_dir() -> PathBuf {
    match std::env::var_os("BOXD_SDK_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(REPO).join("target/sdk"),
    }
}

/// Says why these tests cannot run here (loudly), or `None` when they can.
fn skip_reason(needs: &[&Path]) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "boxd serve needs root (boxes need user namespaces with id maps, overlayfs, \
             cgroups); run the tests as root"
                .into(),
        );
    }
    for p in needs {
        if !p.exists() {
            return Some(format!(
                "{} is missing: the SDKs are not installed; run .ci/install-sdks",
                p.display()
            ));
        }
    }
    None
}

/// 48 random characters (hex of 24 bytes from the kernel).
fn random_key() -> String {
    let mut b = [0u8; 24];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// `boxd serve` on a fresh data dir; on drop (also when a test panics) its
/// boxes are deleted through the API, the daemon is stopped (SIGTERM, then
/// SIGKILL), leftovers are destroyed and the temp dir is removed.
struct Daemon {
    child: Option<Child>,
    addr: SocketAddr,
    key: String,
    dir: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    /// The unique cgroup parent we passed, if `boxd serve` has the option.
    cgroup_parent: Option<String>,
    /// For `/healthz` and the cleanup; every request bounded.
    http: Client,
}

impl Daemon {
    fn start(name: &str) -> Daemon {
        let dir = std::env::temp_dir().join(common::unique(&format!("boxd-sdk-{name}")));
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).expect("create the temp data dir");
        let log = dir.join("daemon.log");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let key = random_key();
        let cgroup_parent = serve_has_option("--cgroup-parent").then(|| common::unique("boxd-sdk"));

        let mut cmd = Command::new(BOXD);
        cmd.arg("--agent")
            .arg(common::AGENT)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(addr.to_string());
        if let Some(cg) = &cgroup_parent {
            cmd.arg("--cgroup-parent").arg(cg);
        }
        let out = File::create(&log).expect("create the daemon log");
        cmd.env("BOXD_API_KEY", &key)
            .env_remove("BOXD_DATA_DIR")
            .env_remove("BOXD_LISTEN")
            .env_remove("BOXD_CONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup the log file"))
            .stderr(out);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {BOXD} serve: {e}"));
        println!(
            "started boxd serve (pid {}) on {addr}, data dir {}, cgroup parent {:?}",
            child.id(),
            data_dir.display(),
            cgroup_parent
        );
        let mut d = Daemon {
            child: Some(child),
            addr,
            key,
            dir,
            data_dir,
            log,
            cgroup_parent,
            http: Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        };
        d.wait_healthy();
        d
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + HEALTHZ_WAIT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(st)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "boxd serve exited ({st}) before GET /healthz answered 200; its log:\n{}",
                        self.log_text()
                    );
                }
            }
            match self.http.get(format!("{}/healthz", self.base_url())).send() {
                Ok(r) if r.status() == 200 => {
                    println!("GET /healthz -> 200");
                    return;
                }
                Ok(r) => last = format!("status {}: {}", r.status(), r.text().unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "GET /healthz did not answer 200 within {HEALTHZ_WAIT:?} (last: {last}); daemon log:\n{}",
            self.log_text()
        );
    }

    /// Deletes every box the daemon lists, through the API. Returns what it did.
    fn delete_all_boxes(&self) -> Result<Vec<String>, String> {
        let base = self.base_url();
        let r = self
            .http
            .get(format!("{base}/v2/box"))
            .header("X-Box-Api-Key", &self.key)
            .send()
            .map_err(|e| format!("GET /v2/box: {e}"))?;
        let status = r.status();
        let body = r.text().map_err(|e| format!("GET /v2/box body: {e}"))?;
        if status != 200 {
            return Err(format!("GET /v2/box -> {status}: {body}"));
        }
        let list: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("GET /v2/box body: {e}: {body}"))?;
        let ids: Vec<String> = list
            .as_array()
            .ok_or_else(|| format!("GET /v2/box did not return an array: {body}"))?
            .iter()
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect();
        let mut done = Vec::new();
        for id in ids {
            let r = self
                .http
                .delete(format!("{base}/v2/box/{id}"))
                .header("X-Box-Api-Key", &self.key)
                .send();
            match r {
                Ok(r) if r.status().is_success() => done.push(id),
                Ok(r) => done.push(format!("{id} (DELETE -> {})", r.status())),
                Err(e) => done.push(format!("{id} (DELETE failed: {e})")),
            }
        }
        Ok(done)
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("boxd serve did not stop within {STOP_WAIT:?} of SIGTERM; SIGKILL");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Boxes the API did not delete (the daemon died, say): destroy them
    /// with the runtime, as the other tests' TestRuntime does.
    fn destroy_leftovers(&self) {
        let mut cfg = RuntimeConfig::new(&self.data_dir, common::AGENT);
        if let Some(cg) = &self.cgroup_parent {
            cfg.cgroup_parent = cg.clone();
        }
        let Ok(rt) = Runtime::new(cfg) else { return };
        for rec in rt.box_records() {
            eprintln!(
                "cleanup: box {} was still there after the daemon stopped; destroying it",
                rec.id
            );
            if let Ok(h) = rt.adopt(&rec.id) {
                let _ = rt.destroy(h);
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            match self.delete_all_boxes() {
                Ok(ids) if ids.is_empty() => {}
                Ok(ids) => println!("cleanup: deleted boxes {ids:?}"),
                Err(e) => eprintln!("cleanup: could not delete the boxes through the API: {e}"),
            }
        }
        self.stop();
        self.destroy_leftovers();
        if let Some(cg) = &self.cgroup_parent {
            common::remove_cgroup_parent(cg);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `boxd serve --help` lists `opt`.
fn serve_has_option(opt: &str) -> bool {
    Command::new(BOXD)
        .args(["serve", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(opt))
        .unwrap_or(false)
}

/// Runs one flow script against the daemon, bounded; prints its output and
/// fails the test (with the output and the daemon's log) unless it exits 0.
fn run_flow(d: &Daemon, what: &str, program: &Path, script: &str) {
    let out_path = d.dir.join(format!("{what}.out"));
    let out = File::create(&out_path).expect("create the flow output file");
    let mut child = Command::new(program)
        .arg(Path::new(REPO).join(script))
        .current_dir(REPO)
        .env("UPSTASH_BOX_BASE_URL", d.base_url())
        .env("UPSTASH_BOX_API_KEY", &d.key)
        .env("UPSTASH_DISABLE_TELEMETRY", "1")
        .env("FLOW_TIMEOUT_SECS", FLOW_BOUND_SECS.to_string())
        .env("BOXD_SDK_NODE_DIR", sdk_dir().join("node"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup the output file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {} {script}: {e}", program.display()));
    let status = wait_bounded(&mut child, FLOW_WAIT);
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("---- {what} output ----\n{output}---- end of {what} output ----");
    match status {
        Some(st) if st.success() => println!("{what}: passed"),
        Some(st) => panic!(
            "{what} failed ({st}).\n---- its output ----\n{output}\n---- daemon log ----\n{}",
            d.log_text()
        ),
        None => panic!(
            "{what} did not finish within {FLOW_WAIT:?}; killed.\n---- its output ----\n{output}\n---- daemon log ----\n{}",
            d.log_text()
        ),
    }
}

/// Waits for `child` at most `limit`; kills it and returns `None` past that.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

#[test]
fn python_sdk_sync_and_async_flows_pass() {
    let python = sdk_dir().join("py/bin/python");
    if let Some(why) = skip_reason(&[&python]) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let d = Daemon::start("py");
    run_flow(
        &d,
        "python flow (sync + async)",
        &python,
        "tests/sdk/flow.py",
    );
}

#[test]
fn typescript_sdk_flow_passes() {
    let pkg = sdk_dir().join("node/node_modules/@upstash/box/package.json");
    if let Some(why) = skip_reason(&[&pkg]) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let Some(node) = which("node") else {
        eprintln!("SKIPPED: node is not on PATH; run .ci/install-sdks");
        return;
    };
    let d = Daemon::start("ts");
    run_flow(&d, "typescript flow", &node, "tests/sdk/flow.mjs");
}
