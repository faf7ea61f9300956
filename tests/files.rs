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
