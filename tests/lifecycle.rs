//! Box lifecycle at the runtime level: destroy leaves nothing behind, a dead
//! agent is reported (not hung on), freeze/thaw, re-adoption by a new
//! runtime on the same data directory.

mod common;
use boxd_agent::protocol::SpawnRequest;
use boxd_agent::ClientError;
use boxd_runtime::{BoxSpec, Runtime, RuntimeConfig, RuntimeError};
use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

/// Host processes running with a box's id range (box ids start at 2^30).
fn box_processes() -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let uid: u32 = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        if uid >= boxd_runtime::idmap::FIRST_HOST_ID {
            out.push(pid);
        }
    }
    out
}

fn net_namespaces() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(link) = std::fs::read_link(e.path().join("ns/net")) {
            out.insert(link.display().to_string());
        }
    }
    out
}

/// Mounts in the host namespace under `dir` (a runtime's data dir), but
/// its storage pool: where a box's mounts would show if one leaked. (The
/// whole table changes with whatever else runs on the machine.)
fn host_mount_count(dir: &std::path::Path) -> usize {
    let dir = dir.to_string_lossy().into_owned();
    let pool = format!("{dir}/pool");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            let mountpoint = l.split(' ').nth(4).unwrap_or_default();
            mountpoint.starts_with(&dir) && mountpoint != pool
        })
        .count()
}

#[tokio::test]
async fn two_hundred_create_exec_destroy_cycles_leave_nothing_behind() {
    let Some(rt) = runtime() else { return };
    let mounts_before = host_mount_count(&rt.dir);
    let parent = rt.config().cgroup_parent.clone();
    for i in 0..200 {
        let b = rt.create(&BoxSpec::new(format!("cycle-{i}"))).unwrap();
        let c = b.exec(SpawnRequest::argv(["/bin/true"])).await.unwrap();
        assert_eq!(c.status.code, 0);
        rt.destroy(b).unwrap();
    }
    assert_eq!(
        host_mount_count(&rt.dir),
        mounts_before,
        "mounts leaked into the host namespace"
    );
    let boxes: Vec<_> = std::fs::read_dir(rt.dir.join("pool/boxes"))
        .unwrap()
        .collect();
    assert!(boxes.is_empty(), "box directories left: {}", boxes.len());
    for dir in cgroup_parent_dirs(&parent) {
        let children: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .collect();
        assert!(children.is_empty(), "cgroups left under {}", dir.display());
    }
    // Other tests may run boxes concurrently; ours are gone once their ids
    // are. Processes of this runtime's slots are the ones that must be gone.
    let ours: Vec<i32> = box_processes()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .map(|c| c.contains(&parent))
                .unwrap_or(false)
        })
        .collect();
    assert!(ours.is_empty(), "box processes left: {ours:?}");
}

#[tokio::test]
async fn destroy_removes_processes_namespaces_and_files() {
    let Some(rt) = runtime() else { return };
    let nets_before = net_namespaces();
    let b = TestBox::default(&rt);
    b.ok("sleep 1000 > /dev/null 2>&1 & echo started").await;
    let pid = b.pid();
    let net = std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .display()
        .to_string();
    assert!(
        !nets_before.contains(&net),
        "the box shares a network namespace"
    );
    let dir = rt.dir.join("pool/boxes").join(b.id());
    let cg = b.cgroup().clone();
    b.destroy();
    assert!(!dir.exists());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!net_namespaces().contains(&net), "the box's netns survived");
    for d in cg
        .v1
        .iter()
        .flat_map(|v| {
            [
                v.memory.clone(),
                v.cpu.clone(),
                v.pids.clone(),
                v.freezer.clone(),
            ]
        })
        .chain(cg.v2.clone())
    {
        assert!(!d.exists(), "cgroup {} left", d.display());
    }
}

#[tokio::test]
async fn a_box_whose_agent_died_is_reported_not_hung_on() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    assert!(b.is_alive());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..500 {
        if !b.is_alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!b.is_alive());
    let err = tokio::time::timeout(Duration::from_secs(10), b.exec(SpawnRequest::shell("true")))
        .await
        .expect("exec on a dead box hung")
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::Agent(ClientError::AgentGone)),
        "{err}"
    );
    // Even the raw client (no liveness pre-check) fails fast.
    let err = tokio::time::timeout(Duration::from_secs(10), b.agent().ping())
        .await
        .expect("ping hung")
        .unwrap_err();
    assert!(matches!(err, ClientError::AgentGone), "{err}");
}

#[tokio::test]
async fn freeze_stops_the_box_and_thaw_resumes_it() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    b.ok("echo before > /workspace/home/state").await;
    let busy = b
        .spawn(SpawnRequest::shell("while :; do :; done"))
        .await
        .unwrap();
    b.freeze().unwrap();
    assert!(b.cgroup().is_frozen().unwrap());
    if b.cgroup().v2.is_some() {
        let before = b.cgroup().cpu_usage_usec().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            b.cgroup().cpu_usage_usec().unwrap(),
            before,
            "a frozen box used CPU"
        );
    }
    b.thaw().unwrap();
    assert!(!b.cgroup().is_frozen().unwrap());
    assert_eq!(b.ok("cat /workspace/home/state").await, "before\n");
    drop(busy);
}

#[tokio::test]
async fn a_new_runtime_re_adopts_running_boxes() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    b.ok("echo kept > /workspace/home/kept").await;
    let id = b.id().to_string();
    // A second runtime on the same data dir (as after a daemon restart).
    let mut cfg = RuntimeConfig::new(&rt.dir, AGENT);
    cfg.cgroup_parent = rt.config().cgroup_parent.clone();
    let rt2 = Runtime::new(cfg).unwrap();
    let adopted = rt2.adopt(&id).unwrap();
    assert!(adopted.is_alive());
    let out = adopted
        .exec(SpawnRequest::shell("cat /workspace/home/kept"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"kept\n");
    // The restarted runtime does not hand the adopted box's slot to a new box.
    let other = rt2.create(&BoxSpec::new(unique("other"))).unwrap();
    assert_ne!(other.host_root_id(), adopted.host_root_id());
    rt2.destroy(other).unwrap();
    drop(adopted);
}

/// Adoption after a crash or power cut reads `box.json`: it must be on disk
/// (not only in the page cache) once create returns, and written under a
/// name of its own (no fixed temporary name two writers could share).
#[tokio::test]
async fn a_box_record_is_on_disk_when_create_returns() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let dir = rt.dir.join("pool/boxes").join(b.id());
    let Some(unwritten) = unwritten_pages(&dir.join("box.json")) else {
        return skip(
            "cachestat(2) is missing (Linux 6.5+): cannot see whether box.json was synced",
        );
    };
    assert_eq!(unwritten, 0, "box.json is still only in the page cache");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("tmp") || n.starts_with(".box.json")),
        "a temporary file is left beside box.json: {names:?}"
    );
}

#[tokio::test]
async fn a_half_created_box_is_removed_when_the_runtime_starts() {
    let Some(rt) = runtime() else { return };
    let kept = TestBox::default(&rt);
    let b = rt.create(&BoxSpec::new(unique("half"))).unwrap();
    let (pid, id, cg) = (b.pid(), b.id().to_string(), b.cgroup().clone());
    // As if the daemon died between starting the box and recording it.
    std::fs::remove_file(rt.dir.join("pool/boxes").join(&id).join("box.json")).unwrap();
    std::mem::forget(b);
    let mut cfg = RuntimeConfig::new(&rt.dir, AGENT);
    cfg.cgroup_parent = rt.config().cgroup_parent.clone();
    let _rt2 = Runtime::new(cfg).unwrap();
    assert!(
        !rt.dir.join("pool/boxes").join(&id).exists(),
        "half box still on disk"
    );
    for _ in 0..500 {
        // The agent was our child: reap it so its pid disappears.
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "half box still running"
    );
    assert!(cg.v2.iter().all(|d| !d.exists()), "cgroup left");
    // Complete boxes are untouched.
    assert_eq!(kept.ok("echo kept").await, "kept\n");
}

#[tokio::test]
async fn invalid_specs_are_refused_and_leave_nothing() {
    let Some(rt) = runtime() else { return };
    for id in ["", "UPPER", "has space", "../escape", &"x".repeat(64)] {
        let err = rt.create(&BoxSpec::new(id)).err().expect("bad id accepted");
        assert!(matches!(err, RuntimeError::InvalidId(_)), "{id}: {err}");
    }
    let mut spec = BoxSpec::new(unique("rt"));
    spec.runtime = "cobol".into();
    let err = rt.create(&spec).err().unwrap();
    assert!(
        err.to_string().contains("cobol") && err.to_string().contains("host"),
        "{err}"
    );
    let b = TestBox::default(&rt);
    let err = rt.create(&BoxSpec::new(b.id())).err().unwrap();
    assert!(matches!(err, RuntimeError::Exists(_)), "{err}");
    // The existing box is untouched by the failed duplicate.
    assert_eq!(b.ok("echo fine").await, "fine\n");
    assert_eq!(rt.box_records().len(), 1);
}

#[test]
fn cgroup_mode_is_detected() {
    if !nix::unistd::geteuid().is_root() {
        return skip("detecting the cgroup mode needs root");
    }
    let mode = boxd_runtime::CgroupMode::detect().unwrap();
    eprintln!("detected: {mode}");
    let pure_v2 = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "));
    assert_eq!(matches!(mode, boxd_runtime::CgroupMode::V2 { .. }), pure_v2);
}
