//! Runtime images end to end: a real Debian image built by `boxd image
//! build` (the `python` one: the smallest that proves the path), boxes on
//! it running the image's tools rather than the host's, `apt-get` and
//! `pip` through boxd's egress proxy to the real registries, the operator's
//! image routes, removal refused while a box uses an image, and the
//! builder's cache and bad input.

mod common;

use common::daemon::TestDaemon;
use common::{images, skip};
use serde_json::{json, Value};
use std::net::ToSocketAddrs;
use std::process::Command;

/// A `[network]` fragment that lets boxes reach `hosts` the way the host
/// does: the host's own resolver upstream, and — where this machine's
/// network answers registry names with addresses in reserved ranges (a
/// TLS-intercepting gateway) — the operator's `allow_ranges` for exactly
/// those addresses. `None` (after saying why) when the host cannot
/// resolve them.
fn registry_network(hosts: &[&str]) -> Option<String> {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let Some(ns) = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(str::trim)
        .find(|a| a.parse::<std::net::IpAddr>().is_ok())
    else {
        skip("the host has no nameserver in /etc/resolv.conf: boxes cannot reach the registries");
        return None;
    };
    let mut ranges = Vec::new();
    for h in hosts {
        let Ok(addrs) = (*h, 443).to_socket_addrs() else {
            skip(&format!(
                "the host cannot resolve {h}: the package registries are not reachable here"
            ));
            return None;
        };
        for a in addrs {
            let len = if a.is_ipv4() { 32 } else { 128 };
            ranges.push(format!("\"{}/{len}\"", a.ip()));
        }
    }
    ranges.sort();
    ranges.dedup();
    let ns = if ns.contains(':') {
        format!("[{ns}]:53")
    } else {
        format!("{ns}:53")
    };
    Some(format!(
        "upstream_dns = [\"{ns}\"]\nallow_ranges = [{}]\n",
        ranges.join(", ")
    ))
}

fn python_daemon(network: &str) -> Option<TestDaemon> {
    TestDaemon::start_with_images(&["python"], "", network)
}

#[test]
fn a_python_box_runs_the_images_python_and_debian_not_the_hosts() {
    let Some(d) = python_daemon("") else { return };
    let id = d.create(json!({"runtime": "python"}));
    let (code, out, err) = d.sh(
        &id,
        "python3 --version; python3 -m pip --version; python3 -m venv /tmp/v && echo venv-ok; \
         cat /etc/debian_version; dpkg -s python3 | grep ^Status; git --version; \
         curl --version | head -1; gcc --version | head -1",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Python 3.13."), "{out}");
    assert!(out.contains("venv-ok"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("13.")),
        "not Debian 13: {out}"
    );
    assert!(out.contains("Status: install ok installed"), "{out}");
    assert!(out.contains("git version"), "{out}");
    assert!(out.contains("curl "), "{out}");
    assert!(out.contains("gcc"), "{out}");
    // The host's own Python is another one (3.11 on these machines): the
    // box must not be running it.
    let host = Command::new("python3").arg("--version").output();
    if let Ok(h) = host {
        let host_version = String::from_utf8_lossy(&h.stdout).trim().to_string();
        if !host_version.starts_with("Python 3.13") {
            assert!(!out.contains(&host_version), "{out}");
        }
    }
    // The box answers what was asked for, and an -alpine name maps to the
    // same Debian image while still reporting the name asked.
    assert_eq!(d.get(&format!("/v2/box/{id}")).1["runtime"], "python");
    let alpine = d.create(json!({"runtime": "python-alpine"}));
    assert_eq!(
        d.get(&format!("/v2/box/{alpine}")).1["runtime"],
        "python-alpine"
    );
    let (code, out, _) = d.sh(&alpine, "python3 --version");
    assert_eq!(code, 0);
    assert!(out.contains("Python 3.13."), "{out}");
}

#[test]
fn apt_get_and_pip_install_work_in_a_box_through_the_proxy() {
    let Some(net) = registry_network(&["deb.debian.org", "pypi.org", "files.pythonhosted.org"])
    else {
        return;
    };
    let Some(d) = python_daemon(&net) else { return };
    let id = d.create(json!({"runtime": "python"}));
    let (code, out, err) = d.sh(
        &id,
        "apt-get update -q >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }; \
         apt-get install -y -q jq >>/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }; \
         echo '{\"a\": 41}' | jq '.a + 1'",
    );
    assert_eq!(code, 0, "apt-get in the box failed:\n{out}{err}");
    assert_eq!(out.trim(), "42", "{out}");
    let (code, out, err) = d.sh(
        &id,
        "pip install -q --root-user-action=ignore six 2>&1 && python3 -c 'import six; print(six.__name__)'",
    );
    assert_eq!(code, 0, "pip in the box failed:\n{out}{err}");
    assert!(out.trim_end().ends_with("six"), "{out}");
    // It went through boxd's proxy, and the audit trail says so.
    let (_, audit) = d.get(&format!("/v2/audit?box_id={id}&limit=500"));
    let text = audit.to_string();
    assert!(text.contains("net.connect"), "{text}");
    assert!(text.contains("deb.debian.org"), "{text}");
    assert!(text.contains("pypi.org"), "{text}");
}

#[test]
fn an_image_in_use_is_not_removed_and_the_error_names_the_box() {
    let Some(d) = python_daemon("") else { return };
    assert!(images::names(&d).contains(&"python".to_string()));
    let id = d.create(json!({"runtime": "python"}));
    let (status, v) = d.delete("/v2/images/python");
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains(&id), "{v}");
    // A snapshot pins the image too.
    let (status, snap) = d.post(&format!("/v2/box/{id}/snapshots"), json!({}));
    assert_eq!(status, 200, "{snap}");
    let sid = snap["id"].as_str().expect("snapshot id").to_string();
    assert_eq!(d.delete(&format!("/v2/box/{id}")).0, 200);
    let (status, v) = d.delete("/v2/images/python");
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains(&sid), "{v}");
    assert_eq!(d.delete(&format!("/v2/box/snapshots/{sid}")).0, 200);
    let (status, v) = d.delete("/v2/images/python");
    assert_eq!(status, 200, "{v}");
    assert!(v["freed_bytes"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(!images::names(&d).contains(&"python".to_string()));
    // Asking for it now is a clear 4xx naming the command, never the host.
    let (status, v) = d.post("/v2/box", json!({"runtime": "python"}));
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("boxd image build python"),
        "{v}"
    );
    let (status, v) = d.delete("/v2/images/python");
    assert_eq!(status, 400, "{v}");
    let (status, v) = d.delete("/v2/images/host");
    assert_eq!(status, 400, "{v}");
}

#[test]
fn image_routes_are_the_operators_and_builds_stream_progress() {
    let Some(d) = python_daemon("") else { return };
    let store = boxd_store::Store::open(d.dir.join("boxd.db")).expect("open the store");
    let team = store.create_team("other").expect("team");
    let other = store.create_key(&team.id, "t").expect("key").1;
    for (method, path) in [
        (reqwest::Method::GET, "/v2/images"),
        (reqwest::Method::DELETE, "/v2/images/python"),
        (reqwest::Method::POST, "/v2/images/build"),
    ] {
        let r = d
            .http
            .request(method.clone(), format!("{}{path}", d.url))
            .header("X-Box-Api-Key", &other)
            .json(&json!({"runtime": "python"}))
            .send()
            .expect("send");
        assert_eq!(r.status().as_u16(), 403, "{method} {path}");
    }
    assert!(images::names(&d).contains(&"python".to_string()));
    // A build with nothing changed reuses every layer and says so.
    let r = d
        .req(reqwest::Method::POST, "/v2/images/build")
        .json(&json!({"runtime": "python"}))
        .send()
        .expect("build");
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().expect("body");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(events.iter().any(|e| e["event"] == "cached"), "{text}");
    let last = events.last().expect("events");
    assert_eq!(last["event"], "done", "{text}");
    assert_eq!(last["name"], "python");
    let (status, v) = d.post("/v2/images/build", json!({"runtime": "cobol"}));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("python"), "{v}");
    let (status, v) = d.post("/v2/images/build", json!({"runtime": "python", "fast": 1}));
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("fast"), "{v}");
}

#[test]
fn a_rebuild_with_nothing_changed_reuses_every_layer() {
    let Some(shared) = images::built(&["python"]) else {
        return;
    };
    let before = images::listed(&shared);
    let out = images::image_command(&shared)
        .args(["build", "python"])
        .output()
        .expect("boxd image build");
    assert!(out.status.success());
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains("base: debian trixie: cached"),
        "{progress}"
    );
    assert!(
        progress.contains("python: packages and top layer: cached"),
        "{progress}"
    );
    assert!(!progress.contains("mmdebstrap"), "{progress}");
    let after = images::listed(&shared);
    let digest = |v: &Value| {
        v.as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == "python"))
            .map(|i| i["digest"].clone())
    };
    assert_eq!(digest(&before), digest(&after));
    assert!(digest(&after).is_some(), "{after}");
    // Every stored layer still has its digest.
    let out = images::image_command(&shared)
        .args(["verify", "python"])
        .output()
        .expect("boxd image verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_unreachable_mirror_fails_the_build_clearly_and_lists_nothing() {
    if images::built(&[]).is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(common::unique("boxd-img-bad"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let build = |args: &[&str]| {
        images::image_command(&dir)
            .arg("build")
            .args(args)
            .output()
            .expect("boxd image build")
    };
    let mirror = format!("http://user:hunter2@127.0.0.1:{port}/debian");
    let out = build(&["python", "--mirror", &mirror]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mmdebstrap"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the mirror's password was shown: {err}"
    );
    let out = build(&["cobol"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("it builds debian, node, python"), "{err}");
    assert_eq!(
        images::listed(&dir),
        json!([]),
        "a failed build left an image listed"
    );
    images::assert_no_staging(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| *pid != me)
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains(needle))
                        .unwrap_or(false)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_killed_build_leaves_no_process_or_half_image_and_builds_again() {
    let Some(shared) = images::built(&["python"]) else {
        return;
    };
    let dir = std::env::temp_dir().join(common::unique("boxd-img-kill"));
    images::link_into(&shared, &dir);
    let before = images::listed(&dir);
    let mut build = images::image_command(&dir)
        .args(["build", "python", "--no-cache"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("boxd image build");
    // Killed while mmdebstrap writes the base (bounded wait).
    let needle = dir.to_string_lossy().into_owned();
    let mut seen = false;
    for _ in 0..1200 {
        if processes_mentioning(&needle)
            .iter()
            .any(|pid| *pid != build.id())
        {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(seen, "the build never started a step");
    std::thread::sleep(std::time::Duration::from_secs(2));
    build.kill().expect("kill the build");
    let _ = build.wait();
    let mut left = Vec::new();
    for _ in 0..100 {
        left = processes_mentioning(&needle);
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(left.is_empty(), "the killed build's steps ran on: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mounts.contains(&needle), "a mount was left: {mounts}");
    // The image built before is untouched, nothing half-built is listed.
    assert_eq!(images::listed(&dir), before);
    let again = images::image_command(&dir)
        .args(["build", "python"])
        .output()
        .expect("boxd image build");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        images::listed(&dir),
        before,
        "the re-run did not reuse the cache"
    );
    images::assert_no_staging(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}
