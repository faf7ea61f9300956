//! Files in a box: binary-safe round trips, tar streams both ways, metadata
//! operations, and paths that try to leave the box.

mod common;
use boxd_agent::protocol::{ErrorKind, FileKind};
use common::*;

fn pseudo_random(len: usize) -> Vec<u8> {
    // xorshift: deterministic, every byte value, no compressible runs.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn a_50_mib_binary_file_round_trips() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let data = pseudo_random(50 << 20);
    b.agent()
        .write_file("/workspace/home/big.bin", &data, None)
        .await
        .unwrap();
    let back = b.agent().read_file("big.bin").await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "content differs");
    // The box sees the same bytes.
    let sum = b
        .ok("sha256sum /workspace/home/big.bin | cut -d' ' -f1")
        .await;
    let expected = {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&data)?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(sum.trim(), expected);
}

#[tokio::test]
async fn metadata_operations() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let a = b.agent();
    a.mkdir("/workspace/home/d/e/f").await.unwrap();
    a.write_file("d/e/f/x.txt", b"hello", Some(0o640))
        .await
        .unwrap();
    let st = a.stat("d/e/f/x.txt").await.unwrap();
    assert_eq!((st.kind, st.size, st.mode), (FileKind::File, 5, 0o640));
    assert_eq!(st.uid, 0);
    let names: Vec<String> = a
        .list_dir("d/e/f")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["x.txt"]);
    a.rename("d/e/f/x.txt", "d/y.txt").await.unwrap();
    assert_eq!(
        a.read_file("/workspace/home/d/y.txt").await.unwrap(),
        b"hello"
    );
    a.remove("d").await.unwrap();
    let err = a.stat("d").await.unwrap_err();
    assert_eq!(err.agent_error().unwrap().kind, ErrorKind::NotFound);
    assert!(err.to_string().contains("/workspace/home/d"), "{err}");
    // Clear errors for wrong kinds.
    a.mkdir("adir").await.unwrap();
    let err = a.read_file("adir").await.unwrap_err();
    assert_eq!(err.agent_error().unwrap().kind, ErrorKind::IsADirectory);
    // Refused while the data is still in flight: the answer is the agent's
    // reason, not a reset connection.
    for size in [1, 8 << 20] {
        let err = a
            .write_file("adir", &vec![7u8; size], None)
            .await
            .unwrap_err();
        assert_eq!(
            err.agent_error().map(|e| e.kind),
            Some(ErrorKind::IsADirectory),
            "{err}"
        );
    }
    assert!(a.remove("/").await.is_err());
    // Writes into read-only mounts fail cleanly.
    let err = a
        .write_file("/proc/sys/kernel/domainname", b"x", None)
        .await
        .unwrap_err();
    assert!(err.agent_error().is_some(), "{err}");
}

#[tokio::test]
async fn folders_travel_as_tar_both_ways() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    // Build an archive on the host side.
    let src = std::env::temp_dir().join(unique("tar-src"));
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub/deeper/b.bin"), pseudo_random(300_000)).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let mut archive = Vec::new();
    {
        let mut t = tar::Builder::new(&mut archive);
        t.follow_symlinks(false);
        t.append_dir_all(".", &src).unwrap();
        t.finish().unwrap();
    }
    b.agent()
        .tar_in("/workspace/home/up", &mut &archive[..])
        .await
        .unwrap();
    assert_eq!(b.ok("cat up/a.txt; readlink up/link").await, "alphaa.txt\n");
    assert_eq!(b.ok("wc -c < up/sub/deeper/b.bin").await.trim(), "300000");
    // And back out.
    let mut out = Vec::new();
    b.agent().tar_out("up", &mut out).await.unwrap();
    let dst = std::env::temp_dir().join(unique("tar-dst"));
    tar::Archive::new(&out[..]).unpack(&dst).unwrap();
    assert_eq!(
        std::fs::read(dst.join("sub/deeper/b.bin")).unwrap(),
        pseudo_random(300_000)
    );
    assert_eq!(
        std::fs::read_link(dst.join("link")).unwrap().to_str(),
        Some("a.txt")
    );
    // A single file comes out as one entry named after it.
    let mut one = Vec::new();
    b.agent().tar_out("up/a.txt", &mut one).await.unwrap();
    let names: Vec<String> = tar::Archive::new(&one[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["a.txt"]);
    std::fs::remove_dir_all(src).unwrap();
    std::fs::remove_dir_all(dst).unwrap();
}

#[tokio::test]
async fn a_tar_with_escaping_paths_stays_inside_the_target() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let mut archive = Vec::new();
    {
        let mut t = tar::Builder::new(&mut archive);
        let mut h = tar::Header::new_gnu();
        let data = b"escaped";
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Write a raw `..` name (the builder's path setter refuses it).
        h.as_old_mut().name[..17].copy_from_slice(b"../../../etc/evil");
        h.set_cksum();
        t.append(&h, &data[..]).unwrap();
        t.finish().unwrap();
    }
    let _ = b
        .agent()
        .tar_in("/workspace/home/t", &mut &archive[..])
        .await;
    assert_ne!(
        b.sh("test -e /etc/evil").await.status.code,
        0,
        "tar entry escaped its folder"
    );
}

#[tokio::test]
async fn symlinks_cannot_reach_the_hosts_files() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    b.ok("ln -s /etc/shadow /workspace/home/s1; ln -s ../../../../../../../../etc/shadow /workspace/home/s2; ln -s /proc/1/root/etc/shadow /workspace/home/s3").await;
    let host_shadow = std::fs::read("/etc/shadow").unwrap_or_default();
    for link in [
        "s1",
        "s2",
        "s3",
        "/proc/1/root/etc/shadow",
        "/workspace/home/../../../etc/shadow",
    ] {
        match b.agent().read_file(link).await {
            Ok(content) => assert!(
                host_shadow.is_empty() || content != host_shadow,
                "{link} read the host's /etc/shadow"
            ),
            Err(e) => assert_eq!(
                e.agent_error().map(|b| b.kind),
                Some(ErrorKind::NotFound),
                "{link}: {e}"
            ),
        }
    }
    // Writing through a symlink lands inside the box, never on the host.
    let marker = format!("/tmp/{}", unique("host-marker"));
    b.ok(&format!("ln -s {marker} /workspace/home/out")).await;
    b.agent()
        .write_file("/workspace/home/out", b"x", None)
        .await
        .unwrap();
    assert!(
        !std::path::Path::new(&marker).exists(),
        "write went to the host"
    );
}

// ---- Reads through the daemon are bounded (issue 23, item 2) ----------
//
// Each test runs a real `boxd serve` and reads through its HTTP API; the
// daemon's memory is read from /proc (VmHWM, the peak resident size, is
// reset first through `clear_refs`), and compared against the size of the
// file the box offered, never against a time.

use common::daemon::TestDaemon;
use serde_json::json;

const MIB: u64 = 1 << 20;

/// The daemon's resident size now, and its peak since the last reset, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the daemon's peak resident size to its current one.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
}

/// How much the daemon's peak resident size grew over its size before `f`.
fn peak_growth<T>(d: &TestDaemon, f: impl FnOnce() -> T) -> (T, u64) {
    reset_peak(d.pid());
    let (before, _) = memory(d.pid());
    let out = f();
    let (_, peak) = memory(d.pid());
    (out, peak.saturating_sub(before))
}

fn box_with(d: &TestDaemon, script: &str) -> String {
    let id = d.create(json!({}));
    let (code, out, err) = d.sh(&id, script);
    assert_eq!(code, 0, "setup failed: {out} {err}");
    id
}

#[test]
fn a_read_through_a_symlink_to_a_big_file_is_refused_without_buffering_it() {
    let Some(d) = TestDaemon::start() else { return };
    let size = 100 * MIB;
    let id = box_with(
        &d,
        &format!("truncate -s {size} /tmp/big && ln -s /tmp/big /workspace/home/link"),
    );
    let ((s, v), grew) = peak_growth(&d, || {
        d.get(&format!(
            "/v2/box/{id}/files/read?path=/workspace/home/link&encoding=base64"
        ))
    });
    assert_eq!(s, 413, "{}", &v.to_string()[..v.to_string().len().min(300)]);
    assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
    assert!(
        grew < size / 4,
        "the daemon's peak memory grew by {grew} bytes for a {size} byte file"
    );
    // Download streams it instead: all of it arrives, and the daemon does
    // not hold it either.
    let (n, grew) = peak_growth(&d, || {
        let r = d
            .req(
                reqwest::Method::GET,
                &format!("/v2/box/{id}/files/download?folder=/workspace/home/link"),
            )
            .send()
            .expect("download");
        assert_eq!(r.status().as_u16(), 200);
        let mut n = 0u64;
        let mut r = r;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            use std::io::Read;
            let k = r.read(&mut buf).expect("download body");
            if k == 0 {
                break n;
            }
            n += k as u64;
        }
    });
    assert_eq!(n, size);
    assert!(
        grew < size / 4,
        "a download grew the daemon's peak memory by {grew} bytes for a {size} byte file"
    );
}

#[test]
fn a_ranged_read_of_a_1_tib_sparse_file_reads_only_the_range() {
    let Some(d) = TestDaemon::start() else { return };
    let tib: u64 = 1 << 40;
    let id = box_with(
        &d,
        "truncate -s 1T /workspace/home/sparse && printf 'sixteen-bytes-ok' >> /workspace/home/sparse",
    );
    let ((s, v), grew) = peak_growth(&d, || {
        d.get(&format!(
            "/v2/box/{id}/files/read?path=sparse&offset={tib}&length=16"
        ))
    });
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["content"], "sixteen-bytes-ok");
    // A range in the middle of the hole is zeros, and only 16 of them.
    let (s, v) = d.get(&format!(
        "/v2/box/{id}/files/read?path=sparse&offset={}&length=16&encoding=base64",
        tib / 2
    ));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["content"], "AAAAAAAAAAAAAAAAAAAAAA==");
    assert!(
        grew < 64 * MIB,
        "a 16 byte read grew the daemon's peak memory by {grew} bytes"
    );
    // The whole file is refused, not read.
    let (s, v) = d.get(&format!("/v2/box/{id}/files/read?path=sparse"));
    assert_eq!(s, 413, "{v}");
}

#[test]
fn reads_of_a_symlink_to_dev_zero_are_refused() {
    let Some(d) = TestDaemon::start() else { return };
    let id = box_with(&d, "ln -s /dev/zero /workspace/home/zero");
    let (s, v) = d.get(&format!("/v2/box/{id}/files/read?path=zero"));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("character device"),
        "{v}"
    );
    let (s, v) = d.get(&format!(
        "/v2/box/{id}/files/read?path=zero&offset=0&length=16"
    ));
    assert_eq!(s, 400, "{v}");
    let r = d
        .req(
            reqwest::Method::GET,
            &format!("/v2/box/{id}/files/download?folder=/workspace/home/zero"),
        )
        .send()
        .expect("download");
    let (s, v) = common::daemon::json_of(r);
    assert_eq!(s, 400, "{v}");
    // A /proc link to an open file (here the agent's own binary, a host
    // file) is not followed.
    let (s, v) = d.get(&format!(
        "/v2/box/{id}/files/read?path=/proc/1/exe&offset=0&length=4&encoding=base64"
    ));
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("/proc link"), "{v}");
}

#[test]
fn reads_of_a_fifo_are_refused_and_leave_the_file_api_working() {
    let Some(d) = TestDaemon::start() else { return };
    let id = box_with(
        &d,
        "mkfifo /workspace/home/pipe && echo hello > /workspace/home/ok.txt && \
         ln -s /workspace/home /tmp/home-link",
    );
    for i in 0..20 {
        let (s, v) = d.get(&format!("/v2/box/{id}/files/read?path=pipe"));
        assert_eq!(s, 400, "read {i}: {v}");
        assert!(v["error"].as_str().unwrap().contains("FIFO"), "{v}");
    }
    let r = d
        .req(
            reqwest::Method::GET,
            &format!("/v2/box/{id}/files/download?folder=/workspace/home/pipe"),
        )
        .send()
        .expect("download");
    let (s, v) = common::daemon::json_of(r);
    assert_eq!(s, 400, "{v}");
    // The box's file API still answers.
    let (s, v) = d.get(&format!("/v2/box/{id}/files/read?path=ok.txt"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["content"], "hello\n");
    // A folder holding the FIFO downloads as a tar with the FIFO as an
    // entry (here through a symlink to the folder).
    let r = d
        .req(
            reqwest::Method::GET,
            &format!("/v2/box/{id}/files/download?folder=/tmp/home-link"),
        )
        .send()
        .expect("download");
    assert_eq!(r.status().as_u16(), 200);
    let tar = r.bytes().expect("tar");
    let mut a = tar::Archive::new(&tar[..]);
    let kinds: Vec<(String, tar::EntryType)> = a
        .entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.path().expect("path").display().to_string(),
                e.header().entry_type(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("pipe".to_string(), tar::EntryType::Fifo)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("ok.txt".to_string(), tar::EntryType::Regular)),
        "{kinds:?}"
    );
}

#[test]
fn a_folder_of_150k_entries_lists_whole_and_in_pages() {
    let Some(d) = TestDaemon::start() else { return };
    let n = 150_000usize;
    let id = box_with(
        &d,
        &format!(
            "mkdir /workspace/home/many && cd /workspace/home/many && seq -w 1 {n} | xargs touch"
        ),
    );
    // The SDKs' call: no limit, every entry in `files`.
    let (s, v) = d.get(&format!("/v2/box/{id}/files/list?folder=many"));
    assert_eq!(s, 200, "{}", &v.to_string()[..v.to_string().len().min(300)]);
    let files = v["files"].as_array().expect("files");
    assert_eq!(files.len(), n);
    assert_eq!(files[0]["name"], "000001");
    assert_eq!(files[0]["path"], "/workspace/home/many/000001");
    assert_eq!(files[n - 1]["name"], format!("{n}"));
    assert!(v.get("next_cursor").is_none());
    // Paged: each page at most `limit`, following `next_cursor` to the end.
    let mut names: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("/v2/box/{id}/files/list?folder=many&limit=10000");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (s, v) = d.get(&q);
        assert_eq!(s, 200, "{v}");
        let page = v["files"].as_array().expect("files");
        assert!(page.len() <= 10_000);
        names.extend(page.iter().map(|f| f["name"].as_str().unwrap().to_string()));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(names.len(), n);
    let expected: Vec<String> = (1..=n).map(|i| format!("{i:06}")).collect();
    assert_eq!(names, expected);
    let (s, v) = d.get(&format!("/v2/box/{id}/files/list?folder=many&limit=0"));
    assert_eq!(s, 400, "{v}");
}
