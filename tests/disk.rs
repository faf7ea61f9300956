//! Disk limits against a real `boxd serve` on its btrfs storage pool: a
//! box writing past its `disk_mib` gets "Disk quota exceeded" while its
//! neighbour and the host write on; the limit holds across a daemon restart
//! and is carried by snapshots; a volume's `size_mib` is enforced; bad
//! sizes are refused; a daemon on the `dir` driver refuses limits it could
//! not enforce instead of ignoring them.
//!
//! Every daemon (its boxes, pool and data dir) is removed on drop.

mod common;

use common::daemon::TestDaemon;
use serde_json::{json, Value};

/// Writes `mib` MiB to `path` in the box; (exit code, bytes written, stderr).
fn fill(d: &TestDaemon, id: &str, path: &str, mib: u32) -> (i64, u64, String) {
    let (code, out, err) = d.sh(
        id,
        &format!(
            "dd if=/dev/zero of={path} bs=1M count={mib} 2>&1 >/dev/null; r=$?; sync; \
             echo; wc -c < {path}; exit $r"
        ),
    );
    let written = out
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no size in {out:?} / {err:?}"));
    (code, written, format!("{out}{err}"))
}

/// A daemon whose pool enforces limits, or `None` after saying why not.
fn daemon_with_limits() -> Option<TestDaemon> {
    let d = TestDaemon::start()?;
    let id = d.create(json!({}));
    let (_, v) = d.get(&format!("/v2/box/{id}"));
    d.delete(&format!("/v2/box/{id}"));
    if v["disk_mib"].is_null() {
        // The pool fell back from btrfs to plain directories: that is a
        // skip of every disk-limit test, never a pass.
        common::skip(&format!(
            "this daemon's storage pool enforces no limits (it fell back from btrfs to plain \
             directories: is btrfs-progs installed?): {}",
            d.log()
        ));
        return None;
    }
    Some(d)
}

fn error(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}

#[test]
fn writing_past_a_box_disk_limit_fails_in_that_box_only() {
    let Some(mut d) = daemon_with_limits() else {
        return;
    };
    let small = d.create(json!({"name": "small", "disk_mib": 64}));
    let other = d.create(json!({"name": "other"}));
    let (_, v) = d.get(&format!("/v2/box/{small}"));
    assert_eq!(v["disk_mib"], 64, "{v}");
    let (_, v) = d.get(&format!("/v2/box/{other}"));
    assert_eq!(v["disk_mib"], 10 * 1024, "the small size's default: {v}");

    let (code, written, out) = fill(&d, &small, "/workspace/home/big", 100);
    assert_ne!(code, 0, "a 100 MiB write fit in a 64 MiB disk: {out}");
    assert!(out.contains("Disk quota exceeded"), "{out}");
    assert!(
        ((32 << 20)..=(64 << 20)).contains(&written),
        "wrote {written} bytes into a 64 MiB disk"
    );
    // The neighbour and the host are not affected.
    let (code, written, out) = fill(&d, &other, "/workspace/home/big", 100);
    assert_eq!(code, 0, "{out}");
    assert_eq!(written, 100 << 20);
    // The box reports what it uses (the fill synced: the pool counted it).
    let (_, v) = d.get(&format!("/v2/box/{other}"));
    let used = v["disk_used_bytes"].as_u64().unwrap_or(0);
    assert!(
        ((100 << 20)..(110 << 20)).contains(&used),
        "disk_used_bytes {used}: {v}"
    );
    let (_, v) = d.get(&format!("/v2/box/{other}/status"));
    assert!(
        v["disk_used_bytes"].as_u64().unwrap_or(0) >= 100 << 20,
        "{v}"
    );
    let host_file = d.dir.join("host-write");
    std::fs::write(&host_file, vec![0u8; 1 << 20]).expect("the host can still write");
    std::fs::remove_file(&host_file).expect("remove the host file");

    // Freeing space makes room again (the pool commits the release).
    let (code, _, err) = d.sh(&small, "rm /workspace/home/big && sync");
    assert_eq!(code, 0, "{err}");
    let (code, written, out) = fill(&d, &small, "/workspace/home/again", 16);
    assert_eq!((code, written), (0, 16 << 20), "{out}");

    // The limit is the pool's, not the daemon's memory: it holds after a
    // restart re-adopts the box.
    d.restart();
    let (code, _, out) = fill(&d, &small, "/workspace/home/big", 100);
    assert_ne!(code, 0, "the limit was lost across a restart: {out}");
    assert!(out.contains("Disk quota exceeded"), "{out}");
}

#[test]
fn a_snapshot_carries_its_disk_limit_and_a_restore_may_change_it() {
    let Some(d) = daemon_with_limits() else {
        return;
    };
    let id = d.create(json!({"disk_mib": 64}));
    let (code, _, err) = d.sh(&id, "head -c 1048576 /dev/zero > /workspace/home/seed");
    assert_eq!(code, 0, "{err}");
    let (s, snap) = d.post(&format!("/v2/box/{id}/snapshots"), json!({"name": "s"}));
    assert_eq!(s, 200, "{snap}");
    let sid = snap["id"].as_str().expect("snapshot id").to_string();

    let (s, restored) = d.post("/v2/box/from-snapshot", json!({"snapshot_id": sid}));
    assert_eq!(s, 200, "{restored}");
    assert_eq!(restored["disk_mib"], 64, "{restored}");
    let rid = restored["id"].as_str().expect("id").to_string();
    // The snapshot's files lie below the box's layer: they do not count.
    let (code, written, out) = fill(&d, &rid, "/workspace/home/big", 100);
    assert_ne!(code, 0, "{out}");
    assert!(written >= 32 << 20, "{written}");

    let (s, bigger) = d.post(
        "/v2/box/from-snapshot",
        json!({"snapshot_id": sid, "disk_mib": 256}),
    );
    assert_eq!(s, 200, "{bigger}");
    assert_eq!(bigger["disk_mib"], 256);
    let (code, written, out) = fill(
        &d,
        bigger["id"].as_str().expect("id"),
        "/workspace/home/big",
        100,
    );
    assert_eq!((code, written), (0, 100 << 20), "{out}");
}

#[test]
fn a_volume_size_is_enforced_and_bad_sizes_are_refused() {
    let Some(d) = daemon_with_limits() else {
        return;
    };
    let (s, v) = d.post("/v2/volumes", json!({"name": "small", "size_mib": 32}));
    assert_eq!(s, 200, "{v}");
    let id = d.create(json!({"volumes": [{"name": "small", "path": "/data"}]}));
    let (code, written, out) = fill(&d, &id, "/data/big", 64);
    assert_ne!(code, 0, "a 64 MiB write fit in a 32 MiB volume: {out}");
    assert!(out.contains("Disk quota exceeded"), "{out}");
    assert!(written <= 32 << 20, "{written}");
    // The box's own disk is separate from the volume's.
    let (code, written, out) = fill(&d, &id, "/workspace/home/big", 64);
    assert_eq!((code, written), (0, 64 << 20), "{out}");

    // Out of range: 400; not a count of MiB at all: 422 (as every field).
    for (bad, status) in [
        (json!(0), 400),
        (json!(10), 400),
        (json!(1u64 << 40), 400),
        (json!("big"), 422),
        (json!(-1), 422),
    ] {
        let (s, v) = d.post("/v2/box", json!({"disk_mib": bad}));
        assert_eq!(s, status, "disk_mib {bad}: {v}");
        assert!(error(&v).contains("disk_mib"), "disk_mib {bad}: {v}");
    }
    let (s, list) = d.get("/v2/box");
    assert_eq!(s, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[test]
fn the_dir_driver_refuses_limits_it_cannot_enforce() {
    let Some(d) = TestDaemon::start_with_config("[storage]\ndriver = \"dir\"\n", "") else {
        return;
    };
    let (s, v) = d.post("/v2/box", json!({"disk_mib": 128}));
    assert_eq!(s, 400, "{v}");
    assert!(
        error(&v).contains("disk_mib") && error(&v).contains("dir"),
        "{v}"
    );
    let (s, v) = d.post("/v2/volumes", json!({"name": "v", "size_mib": 32}));
    assert_eq!(s, 400, "{v}");
    assert!(error(&v).contains("size_mib"), "{v}");
    // Without a limit asked for, boxes and volumes work, and say they
    // have no limit.
    let id = d.create(json!({}));
    let (_, v) = d.get(&format!("/v2/box/{id}"));
    assert!(v["disk_mib"].is_null(), "{v}");
    let (s, v) = d.post("/v2/volumes", json!({"name": "v"}));
    assert_eq!(s, 200, "{v}");
    assert!(
        !d.dir.join("pool.img").exists(),
        "the dir driver made an image"
    );
    // Opened later without the setting (the default `auto` driver), the
    // pool stays plain directories: an image mounted over it would hide
    // the running box.
    let mut cfg = boxd_runtime::RuntimeConfig::new(&d.dir, common::AGENT);
    cfg.cgroup_parent = d.cgroup_parent.clone();
    let rt = boxd_runtime::Runtime::new(cfg).expect("open the data dir again");
    assert!(!rt.storage().enforces_limits());
    let ids: Vec<String> = rt.box_records().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![id.clone()]);
    assert!(
        !d.dir.join("pool.img").exists(),
        "an image was made over the dir pool"
    );
}
