//! The official Upstash Box SDKs, unmodified, against `boxd serve`: the
//! Python SDK (`upstash-box`, sync and async clients) runs `tests/sdk/flow.py`
//! and the TypeScript SDK (`@upstash/box`) runs `tests/sdk/flow.mjs`, each
//! against its own daemon on a fresh data dir and a free loopback port.
//!
//! The SDKs are installed under `target/sdk` by `.ci/install-sdks` (pinned to
//! the versions docs/UPSTASH_API.md was written from). Without root, or
//! without the SDKs, each test says `SKIPPED` and why.

mod common;

use common::daemon::TestDaemon;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The bound each flow script enforces on itself.
const FLOW_BOUND_SECS: u64 = 300;
/// Ours, a little longer, in case the script's own bound does not fire.
const FLOW_WAIT: Duration = Duration::from_secs(FLOW_BOUND_SECS + 60);

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

/// Runs one flow script against the daemon, bounded; prints its output and
/// fails the test (with the output and the daemon's log) unless it exits 0.
fn run_flow(d: &TestDaemon, what: &str, program: &Path, script: &str) {
    let out_path = d.dir.with_extension("flow.out");
    let out = File::create(&out_path).expect("create the flow output file");
    let mut child = Command::new(program)
        .arg(Path::new(REPO).join(script))
        .current_dir(REPO)
        .env("UPSTASH_BOX_BASE_URL", &d.url)
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
    let _ = std::fs::remove_file(&out_path);
    println!("---- {what} output ----\n{output}---- end of {what} output ----");
    match status {
        Some(st) if st.success() => println!("{what}: passed"),
        Some(st) => panic!(
            "{what} failed ({st}).\n---- its output ----\n{output}\n---- daemon log ----\n{}",
            d.log()
        ),
        None => panic!(
            "{what} did not finish within {FLOW_WAIT:?}; killed.\n---- its output ----\n{output}\n---- daemon log ----\n{}",
            d.log()
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
        return common::skip(&why);
    }
    let Some(d) = TestDaemon::start() else { return };
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
        return common::skip(&why);
    }
    let Some(node) = which("node") else {
        return common::skip("node is not on PATH; run .ci/install-sdks");
    };
    let Some(d) = TestDaemon::start() else { return };
    run_flow(&d, "typescript flow", &node, "tests/sdk/flow.mjs");
}
