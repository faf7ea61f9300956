//! A real `boxd serve` for API tests: its own data dir, port and cgroup
//! parent; stopped, restarted or `kill -9`ed on demand; and on drop every
//! box it made is destroyed (through the runtime, so cleanup works even if
//! the daemon died), its cgroups removed and its data dir deleted.

use super::{remove_cgroup_parent, unique, AGENT};
use boxd_runtime::{Runtime, RuntimeConfig};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BOXD: &str = env!("CARGO_BIN_EXE_boxd");

pub struct TestDaemon {
    child: Option<Child>,
    pub url: String,
    /// The admin key of the default team.
    pub key: String,
    pub dir: PathBuf,
    pub cgroup_parent: String,
    /// This daemon's own nftables table and box interface prefix, so
    /// daemons of parallel tests never touch each other's.
    pub nft_table: String,
    pub ifname_prefix: String,
    port: u16,
    pub http: Client,
}

static NET_INDEX: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A loopback UDP port nothing listens on (queries there fail at once).
fn closed_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a free port");
    s.local_addr().expect("local addr").port()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl TestDaemon {
    /// Starts a daemon, or returns `None` after saying why (not root).
    pub fn start() -> Option<TestDaemon> {
        Self::start_with_network("")
    }

    /// Starts a daemon whose `[network]` table also holds `network_toml`
    /// (keys of `[network]`, then optionally `[network.upstreams]`).
    /// Every test daemon gets its own table, interface prefix and address
    /// pools; its upstream DNS is a closed loopback port unless the test
    /// sets `upstream_dns`, so nothing ever leaves the machine.
    pub fn start_with_network(network_toml: &str) -> Option<TestDaemon> {
        Self::start_with_config("", network_toml)
    }

    /// Like [`TestDaemon::start_with_network`], with `top_toml` (top-level
    /// keys, e.g. `idle_pause_secs = 2`) at the head of the config file.
    pub fn start_with_config(top_toml: &str, network_toml: &str) -> Option<TestDaemon> {
        Self::start_with_images(&[], top_toml, network_toml)
    }

    /// Like [`TestDaemon::start_with_config`], with the runtime images
    /// `images` built ([`super::images::built`]) and in its store; `None`
    /// (after saying why) when they cannot be built here.
    pub fn start_with_images(
        images: &[&str],
        top_toml: &str,
        network_toml: &str,
    ) -> Option<TestDaemon> {
        let shared = if images.is_empty() {
            None
        } else {
            Some(super::images::built(images)?)
        };
        if !nix::unistd::geteuid().is_root() {
            super::skip("boxd serve needs root (boxes need user namespaces, overlayfs, cgroups); run the tests as root");
            return None;
        }
        let port = free_port();
        let n = NET_INDEX.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 250;
        let pid = std::process::id() % 26;
        let letter = char::from(b'a' + pid as u8);
        let nft_table = format!("boxd_test_{letter}{n}");
        let ifname_prefix = format!("t{letter}{n}");
        let dir = std::env::temp_dir().join(unique("boxd-api-test"));
        let has_dns = network_toml.contains("upstream_dns");
        let (extra_keys, tables) = match network_toml.find("\n[") {
            Some(i) => network_toml.split_at(i),
            None => (network_toml, ""),
        };
        let config = format!(
            "{top_toml}\n[network]\ntable = \"{nft_table}\"\ninterface_prefix = \"{ifname_prefix}\"\n\
             ipv4_pool = \"10.{}.{n}.0/24\"\nipv6_pool = \"fd42:b0c7:{:x}::/48\"\n{}{extra_keys}\n{tables}\n",
            100 + pid,
            (pid << 8) | n,
            if has_dns {
                String::new()
            } else {
                format!("upstream_dns = [\"127.0.0.1:{}\"]\n", closed_port())
            },
        );
        std::fs::write(dir.with_extension("toml"), config).expect("write the daemon config");
        if let Some(shared) = &shared {
            super::images::link_into(shared, &dir);
        }
        let mut d = TestDaemon {
            nft_table,
            ifname_prefix,
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            key: format!("test-admin-{}-{:032x}", std::process::id(), rand_u128()),
            dir,
            cgroup_parent: unique("boxd-api-test"),
            port,
            http: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        };
        d.spawn();
        Some(d)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.with_extension("log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the daemon log");
        let child = Command::new(BOXD)
            .args(["--data-dir"])
            .arg(&self.dir)
            .args(["--agent", AGENT, "serve", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--cgroup-parent", &self.cgroup_parent])
            .arg("--config")
            .arg(self.dir.with_extension("toml"))
            .env("BOXD_API_KEY", &self.key)
            .env("BOXD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start boxd serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.url)).send() {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("boxd serve exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "boxd serve did not answer /healthz in 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// SIGTERM, then wait (SIGKILL after 20 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("boxd serve ignored SIGTERM for 20 s");
        }
    }

    /// `kill -9`: no chance to clean up anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn();
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("X-Box-Api-Key", &self.key)
    }

    /// Sends a request and returns the status and the JSON body (`Null`
    /// when the body is empty).
    pub fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let what = format!(
            "{method} {path} {}",
            body.as_ref().map(Value::to_string).unwrap_or_default()
        );
        let mut rb = self.req(method, path);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        json_of(rb.send().unwrap_or_else(|e| panic!("{what}: {e:?}")))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None)
    }
    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body))
    }
    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, None)
    }

    /// Creates a box and returns its id (panics with the answer otherwise).
    pub fn create(&self, body: Value) -> String {
        let (status, v) = self.post("/v2/box", body);
        assert_eq!(status, 200, "create: {v}");
        v["id"].as_str().expect("id").to_string()
    }

    /// Runs `sh -c script` in a box: (exit code, stdout, stderr).
    pub fn sh(&self, id: &str, script: &str) -> (i64, String, String) {
        let (status, v) = self.post(
            &format!("/v2/box/{id}/exec"),
            serde_json::json!({"command": ["sh", "-c", script]}),
        );
        assert_eq!(status, 200, "exec: {v}");
        (
            v["exit_code"].as_i64().expect("exit_code"),
            v["output"].as_str().unwrap_or_default().to_string(),
            v["error"].as_str().unwrap_or_default().to_string(),
        )
    }
}

/// Status and JSON body of a response; a non-JSON error body fails the test.
pub fn json_of(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().expect("body");
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"))
    };
    if status >= 400 {
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "error answers carry a message: {v}"
        );
    }
    (status, v)
}

fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    let f = std::fs::File::open("/dev/urandom").expect("urandom");
    std::io::Read::read_exact(&mut &f, &mut b).expect("random bytes");
    u128::from_le_bytes(b)
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
        // Whatever the daemon left running, the runtime tears down.
        let mut cfg = RuntimeConfig::new(&self.dir, AGENT);
        cfg.cgroup_parent = self.cgroup_parent.clone();
        if let Ok(rt) = Runtime::new(cfg) {
            for rec in rt.box_records() {
                if let Ok(h) = rt.adopt(&rec.id) {
                    let _ = rt.destroy(h);
                }
            }
        }
        boxd_runtime::storage::unmount(&self.dir);
        remove_cgroup_parent(&self.cgroup_parent);
        // A killed daemon leaves its table; box links went with the boxes.
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.nft_table])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("toml"));
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("---- last lines of the daemon's log ----");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_file(self.log_path());
    }
}
