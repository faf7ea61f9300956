//! A `boxd serve` for benchmarks (this build, a private data dir, port,
//! cgroup parent and `[network]` table), and a minimal keep-alive HTTP/1.1
//! client, so the numbers are the daemon's, not a client library's.
//! Everything the daemon made is removed on drop, also when a step panics.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_boxd-agent");
pub const BOXD: &str = env!("CARGO_BIN_EXE_boxd");

/// A `[network]` table of its own for a bench daemon (so it never meets
/// a real boxd's table, interfaces or addresses), appended to by the caller.
pub fn net_config(table: &str, prefix: &str, v4: &str, v6: &str) -> String {
    format!(
        "[network]\ntable = \"{table}\"\ninterface_prefix = \"{prefix}\"\n\
         ipv4_pool = \"{v4}\"\nipv6_pool = \"{v6}\"\n"
    )
}

pub struct BenchDaemon {
    child: Child,
    pub addr: String,
    pub key: String,
    pub dir: PathBuf,
    pub cgroup_parent: String,
    table: Option<String>,
}

impl BenchDaemon {
    /// Writes `bytes` into box `box_id` at `path` (multipart upload), then
    /// makes it executable.
    pub fn upload_executable(&self, box_id: &str, path: &str, bytes: Vec<u8>) {
        let form = reqwest::blocking::multipart::Form::new()
            .text("paths", path.to_string())
            .part(
                "files",
                reqwest::blocking::multipart::Part::bytes(bytes).file_name("f"),
            );
        let r = reqwest::blocking::Client::new()
            .post(format!("http://{}/v2/box/{box_id}/files/upload", self.addr))
            .header("X-Box-Api-Key", &self.key)
            .multipart(form)
            .send()
            .expect("upload");
        assert!(r.status().is_success(), "upload: {:?}", r.text());
        let body = format!(r#"{{"command":["chmod","755","{path}"]}}"#);
        let (s, out) = self
            .http()
            .call("POST", &format!("/v2/box/{box_id}/exec"), &body);
        assert!(s == 200 && out.contains("\"exit_code\":0"), "chmod: {out}");
    }

    /// Starts `boxd serve` named `name` with `config` (TOML) and waits
    /// until it answers. `table` is its `[network]` table, if the config
    /// names one, so drop can remove it after a kill.
    pub fn start(name: &str, config: &str, table: Option<&str>) -> BenchDaemon {
        BenchDaemon::try_start(name, config, table).expect("start boxd serve")
    }

    /// [`BenchDaemon::start`] for a bench that reports failures instead
    /// of panicking: waits at most 30 s for the daemon to answer, and
    /// whatever it made is removed when it does not.
    pub fn try_start(
        name: &str,
        config: &str,
        table: Option<&str>,
    ) -> std::io::Result<BenchDaemon> {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("boxd-bench-{name}-{pid}"));
        let cgroup_parent = format!("boxd-bench-{name}-{pid}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| std::io::Error::new(e.kind(), format!("find a free port: {e}")))?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let key = format!("bench-key-{pid}-0123456789abcdef0123456789");
        let config_path = dir.with_extension("toml");
        std::fs::write(&config_path, config).map_err(|e| {
            std::io::Error::new(e.kind(), format!("write {}: {e}", config_path.display()))
        })?;
        let child = match spawn(&dir, &addr, &cgroup_parent, &key) {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&config_path);
                return Err(e);
            }
        };
        // From here on, drop removes whatever the daemon made.
        let mut d = BenchDaemon {
            child,
            addr,
            key,
            dir,
            cgroup_parent,
            table: table.map(str::to_string),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&d.addr).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(std::io::Error::other(format!(
                    "boxd serve exited before it answered ({status})"
                )));
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::other(
                    "boxd serve did not answer within 30 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    pub fn http(&self) -> Http {
        Http::connect(&self.addr, &self.key)
    }

    /// `kill -9`s the daemon and starts it again on the same data dir;
    /// answers the time from the new start to its first `/healthz` 200
    /// (boxes are re-adopted before the API answers), or the error.
    pub fn kill9_and_restart(&mut self) -> std::io::Result<Duration> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let started = Instant::now();
        self.child = spawn(&self.dir, &self.addr, &self.cgroup_parent, &self.key)?;
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(std::io::Error::other(format!(
                    "boxd serve exited after a restart ({status})"
                )));
            }
            if let Ok(mut http) = Http::try_connect(&self.addr, &self.key) {
                if http
                    .request("GET", "/healthz", "")
                    .is_ok_and(|(s, _)| s == 200)
                {
                    return Ok(started.elapsed());
                }
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::other(
                    "boxd serve did not answer /healthz within 120 s of a restart",
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Starts `boxd serve` on `dir` (its config beside it, `<dir>.toml`).
fn spawn(
    dir: &std::path::Path,
    addr: &str,
    cgroup_parent: &str,
    key: &str,
) -> std::io::Result<Child> {
    Command::new(BOXD)
        .arg("--data-dir")
        .arg(dir)
        .args(["--agent", AGENT, "serve", "--listen", addr])
        .args(["--cgroup-parent", cgroup_parent])
        .arg("--config")
        .arg(dir.with_extension("toml"))
        .env("BOXD_API_KEY", key)
        .env("BOXD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("start {BOXD} serve: {e}")))
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        super::shared::remove_bench_state(&self.dir, &self.cgroup_parent, AGENT);
        let _ = std::fs::remove_file(self.dir.with_extension("toml"));
        if let Some(table) = &self.table {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", table])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Http {
    r: BufReader<TcpStream>,
    w: TcpStream,
    key: String,
}

impl Http {
    pub fn connect(addr: &str, key: &str) -> Http {
        Http::try_connect(addr, key).expect("connect to boxd")
    }

    /// [`Http::connect`], with failures returned.
    pub fn try_connect(addr: &str, key: &str) -> std::io::Result<Http> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Http {
            r: BufReader::new(s.try_clone()?),
            w: s,
            key: key.into(),
        })
    }

    /// Bounds every later read and write on this connection (`None`:
    /// wait as long as it takes, the default).
    pub fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.w.set_read_timeout(t)?;
        self.w.set_write_timeout(t)
    }

    /// Sends a request; returns (status, body).
    pub fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        self.request(method, path, body)
            .expect("HTTP request to boxd")
    }

    /// [`Http::call`], with failures returned. After an error the
    /// connection may be mid-response: open a new one.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: boxd\r\nx-box-api-key: {}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.key,
            body.len()
        );
        self.w.write_all(req.as_bytes())?;
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "boxd closed the connection",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("status line {line:?}")))?;
        let mut len = 0usize;
        loop {
            line.clear();
            if self.r.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "boxd closed the connection in the headers",
                ));
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v
                        .trim()
                        .parse()
                        .map_err(|_| bad(&format!("header {line:?}")))?;
                }
            }
        }
        let mut buf = vec![0u8; len];
        self.r.read_exact(&mut buf)?;
        Ok((status, String::from_utf8_lossy(&buf).into_owned()))
    }

    pub fn create(&mut self) -> String {
        let (s, body) = self.call("POST", "/v2/box", "{}");
        assert_eq!(s, 200, "create: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["id"].as_str().expect("id").to_string()
    }

    pub fn exec_true(&mut self, id: &str) {
        let (s, body) = self.call(
            "POST",
            &format!("/v2/box/{id}/exec"),
            r#"{"command":["/bin/true"]}"#,
        );
        assert!(s == 200 && body.contains("\"exit_code\":0"), "exec: {body}");
    }

    /// Creates a box, runs `true` in it and deletes it; returns the time
    /// from the create request to the exec's answer (delete not timed).
    pub fn first_exec(&mut self) -> Duration {
        let t = Instant::now();
        let id = self.create();
        self.exec_true(&id);
        let d = t.elapsed();
        self.delete(&id);
        d
    }

    pub fn delete(&mut self, id: &str) {
        let (s, body) = self.call("DELETE", &format!("/v2/box/{id}"), "");
        assert_eq!(s, 200, "delete: {body}");
    }
}
