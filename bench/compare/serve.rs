//! boxd over HTTP as the comparison bench drives it: a real `boxd serve` of
//! this build (`bench/daemon.rs`: a private data dir, port and cgroup
//! parent `boxd-bench-compare-<pid>`), with its network off so its boxes
//! match the library's and the peers' (`--network none`), driven through
//! the minimal keep-alive HTTP/1.1 client of `bench/daemon.rs`, so the
//! numbers are the daemon's, not a client library's.
//!
//! Must never: outlive the scenario that started it (dropping [`Served`]
//! kills the daemon and removes its boxes, data dir and cgroups); wait
//! without a bound (every request has a deadline).

use crate::boxd::Cycle;
use crate::daemon::{BenchDaemon, Http};
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// The daemon's configuration: no network, as the library's boxes.
const CONFIG: &str = "[network]\nenabled = false\n";
/// The longest any one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `boxd serve`; dropping it removes everything it made.
pub struct Served {
    daemon: BenchDaemon,
}

impl Served {
    pub fn start() -> Result<Served> {
        let daemon =
            BenchDaemon::try_start("compare", CONFIG, None).context("start `boxd serve`")?;
        Ok(Served { daemon })
    }

    /// A new keep-alive connection to the daemon.
    pub fn client(&self) -> Result<Client> {
        let mut c = Client {
            addr: self.daemon.addr.clone(),
            key: self.daemon.key.clone(),
            http: None,
        };
        c.conn()?;
        Ok(c)
    }
}

/// One keep-alive connection; after a failed request the next one opens
/// a fresh connection (the old one may be mid-response).
pub struct Client {
    addr: String,
    key: String,
    http: Option<Http>,
}

impl Client {
    fn conn(&mut self) -> Result<&mut Http> {
        if self.http.is_none() {
            let h = Http::try_connect(&self.addr, &self.key)
                .with_context(|| format!("connect to boxd serve at {}", self.addr))?;
            h.set_timeout(Some(REQUEST_TIMEOUT))
                .context("set a timeout on the connection")?;
            self.http = Some(h);
        }
        self.http.as_mut().context("no connection")
    }

    /// One request; fails unless boxd answers 200.
    fn call(&mut self, method: &str, path: &str, body: &str) -> Result<String> {
        let r = self.conn()?.request(method, path, body);
        let (status, out) = match r {
            Ok(r) => r,
            Err(e) => {
                self.http = None;
                return Err(e).with_context(|| format!("{method} {path}"));
            }
        };
        if status != 200 {
            bail!("{method} {path}: HTTP {status}: {}", out.trim());
        }
        Ok(out)
    }

    /// POST /v2/box with the API's defaults; returns the box's id.
    pub fn create(&mut self) -> Result<String> {
        let out = self.call("POST", "/v2/box", "{}")?;
        let v: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("POST /v2/box answered {out}"))?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("POST /v2/box answered no id: {out}"))
    }

    /// POST /v2/box/{id}/exec of `/bin/true`; fails unless it exits 0.
    pub fn exec_true(&mut self, id: &str) -> Result<()> {
        let path = format!("/v2/box/{id}/exec");
        let out = self.call("POST", &path, r#"{"command":["/bin/true"]}"#)?;
        let v: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("POST {path} answered {out}"))?;
        if v["exit_code"].as_i64() != Some(0) {
            bail!("`true` through POST {path} did not exit 0: {out}");
        }
        Ok(())
    }

    /// DELETE /v2/box/{id}.
    pub fn delete(&mut self, id: &str) -> Result<()> {
        self.call("DELETE", &format!("/v2/box/{id}"), "")
            .map(|_| ())
    }

    /// create → exec `true` → delete; the box is deleted even when the
    /// exec fails (and the daemon's drop removes it when that fails too).
    pub fn cycle(&mut self) -> Result<Cycle> {
        let t = Instant::now();
        let id = self.create()?;
        let ran = self.exec_true(&id);
        let to_exit = t.elapsed();
        let deleted = self.delete(&id);
        let total = t.elapsed();
        ran?;
        deleted?;
        Ok(Cycle { to_exit, total })
    }
}
