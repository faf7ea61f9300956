//! Box start on a built image vs the host image.
//!
//! Measures create → first exec of `/bin/true` for boxes on the `node`
//! image (a Debian root of three layers, built by `boxd image build node`)
//! and, interleaved in the same process, on the zero-setup `host` image
//! (the host's `/usr` over a generated base): a built image must not make
//! a box slower to start (its layers are mounted, never copied, so the
//! image's size does not matter). Also the first `node --version` in a
//! fresh box of each, for what a user feels.
//!
//! Run as root: `cargo bench --bench images` (`-- --runs N`; default 50).
//! The node image is built (or reused, cached) in `$BOXD_TEST_IMAGES`
//! (default `<tmp>/boxd-test-images`) and hard-linked into the bench's
//! data dir. Prints medians, p99s and ratios; never asserts a timing.

#[path = "shared.rs"]
mod shared;

use boxd_agent::protocol::SpawnRequest;
use boxd_runtime::{BoxSpec, Runtime, RuntimeConfig};
use std::process::Command;
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_boxd-agent");
const BOXD: &str = env!("CARGO_BIN_EXE_boxd");

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the image benchmark needs root");
        return;
    }
    let runs = shared::runs_arg(50);
    let shared_dir = std::env::var_os("BOXD_TEST_IMAGES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("boxd-test-images"));
    let t = Instant::now();
    let built = Command::new(BOXD)
        .arg("--data-dir")
        .arg(&shared_dir)
        .args(["image", "build", "node"])
        .status()
        .expect("run boxd image build node");
    assert!(built.success(), "boxd image build node failed");
    eprintln!("node image ready in {}", shared::fmt_dur(t.elapsed()));

    let dir = std::env::temp_dir().join(format!("boxd-bench-img-{}", std::process::id()));
    let parent = format!("boxd-bench-img-{}", std::process::id());
    struct Cleanup(std::path::PathBuf, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            shared::remove_bench_state(&self.0, &self.1, AGENT);
        }
    }
    let _cleanup = Cleanup(dir.clone(), parent.clone());
    std::fs::create_dir_all(dir.join("images")).expect("create the bench's image store");
    for sub in ["layers", "manifests", "tags", "cache"] {
        let ok = Command::new("cp")
            .args(["-a", "--link"])
            .arg(shared_dir.join("images").join(sub))
            .arg(dir.join("images"))
            .status()
            .expect("run cp")
            .success();
        assert!(ok, "cp -al {sub} failed");
    }
    let mut cfg = RuntimeConfig::new(&dir, AGENT);
    cfg.cgroup_parent = parent;
    let rt = Runtime::new(cfg).expect("runtime");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let mut n = 0;
    let mut spec_of = |runtime: &str| {
        n += 1;
        let mut spec = BoxSpec::new(format!("bench-{n}"));
        spec.runtime = runtime.to_string();
        spec
    };
    let node_first = |rt: &Runtime, spec: &BoxSpec| -> Duration {
        let t = Instant::now();
        let b = rt.create(spec).expect("create");
        let out = tokio
            .block_on(b.exec(SpawnRequest::argv(["node", "--version"])))
            .expect("exec");
        let d = t.elapsed();
        assert_eq!(out.status.code, 0, "node --version failed");
        rt.destroy(b).expect("destroy");
        d
    };
    for _ in 0..3 {
        shared::lib_cycle(&rt, &tokio, &spec_of("node"));
        shared::lib_cycle(&rt, &tokio, &spec_of("host"));
    }
    let (mut node, mut host) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        node.push(shared::lib_cycle(&rt, &tokio, &spec_of("node")));
        host.push(shared::lib_cycle(&rt, &tokio, &spec_of("host")));
    }
    let host_has_node = Command::new("node").arg("--version").output().is_ok();
    let (mut node_v, mut host_v) = (Vec::new(), Vec::new());
    for _ in 0..runs.min(20) {
        node_v.push(node_first(&rt, &spec_of("node")));
        if host_has_node {
            host_v.push(node_first(&rt, &spec_of("host")));
        }
    }
    let (nm, np) = shared::median_p99(node);
    let (hm, hp) = shared::median_p99(host);
    println!("runs: {runs} (interleaved)");
    println!(
        "create -> first exec of true, node image: median {} p99 {}",
        shared::fmt_dur(nm),
        shared::fmt_dur(np)
    );
    println!(
        "create -> first exec of true, host image: median {} p99 {}",
        shared::fmt_dur(hm),
        shared::fmt_dur(hp)
    );
    println!(
        "ratio node / host: {:.2}x",
        nm.as_secs_f64() / hm.as_secs_f64()
    );
    let (vm, _) = shared::median_p99(node_v);
    println!(
        "create -> `node --version` exits, node image (Node 22): median {}",
        shared::fmt_dur(vm)
    );
    if host_has_node {
        let (hv, _) = shared::median_p99(host_v);
        println!(
            "create -> `node --version` exits, host image (the host's node): median {}",
            shared::fmt_dur(hv)
        );
    }
}
