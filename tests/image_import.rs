//! Imported images end to end: an OCI image layout made here (a real
//! shell and `cat` with their libraries, copied from the host into the
//! image's first layer; a gzipped second layer with a whiteout and an
//! opaque directory), uploaded to `POST /v2/images/import` and imported by
//! `boxd image import`, then boxes created on it that see exactly the
//! image's files; a tampered upload is refused and leaves nothing.

mod common;
#[path = "../crates/boxd-image/tests/support/layout.rs"]
mod layout;

use common::daemon::TestDaemon;
use common::{images, skip};
use layout::{oci_layout, tar_of_dir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Layer entries: regular files, symlinks and empty files standing for
/// whiteouts, in the order written.
enum Entry {
    File(String, Vec<u8>, u32),
    Link(String, String),
}

fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match e {
            Entry::File(path, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(*mode);
                b.append_data(&mut h, path, &data[..]).expect("tar");
            }
            Entry::Link(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, path, target).expect("tar");
            }
        }
    }
    b.into_inner().expect("tar")
}

/// The host files `programs` need (themselves and the libraries `ldd`
/// names), as layer entries at the host's paths, each symlink on the way
/// (`/bin` → `usr/bin` on a merged-/usr system) kept as a symlink.
fn host_programs(programs: &[&str]) -> Option<Vec<Entry>> {
    let out = Command::new("ldd").args(programs).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut paths: Vec<String> = programs.iter().map(|p| p.to_string()).collect();
    for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        // `/bin/sh:` heads a program's list; the libraries follow.
        if word.starts_with('/') && !word.ends_with(':') && !paths.iter().any(|p| p == word) {
            paths.push(word.to_string());
        }
    }
    let mut entries = Vec::new();
    let mut links = std::collections::BTreeSet::new();
    for p in paths {
        // Walk the path on the host, recording each symlink met.
        let mut cur = PathBuf::from("/");
        let mut rest: Vec<String> = p
            .split('/')
            .filter(|c| !c.is_empty())
            .map(String::from)
            .rev()
            .collect();
        for _ in 0..64 {
            let Some(part) = rest.pop() else { break };
            let next = cur.join(&part);
            match std::fs::read_link(&next) {
                Ok(target) => {
                    let rel = next.strip_prefix("/").ok()?.to_string_lossy().into_owned();
                    if links.insert(rel.clone()) {
                        entries.push(Entry::Link(rel, target.to_string_lossy().into_owned()));
                    }
                    if target.is_absolute() {
                        cur = PathBuf::from("/");
                    }
                    for c in target.to_string_lossy().split('/').rev() {
                        if !c.is_empty() {
                            rest.push(c.to_string());
                        }
                    }
                }
                Err(_) if part == ".." => {
                    cur.pop();
                }
                Err(_) => cur = next,
            }
        }
        let data = std::fs::read(&cur).ok()?;
        let rel = cur.strip_prefix("/").ok()?.to_string_lossy().into_owned();
        entries.push(Entry::File(rel, data, 0o755));
    }
    Some(entries)
}

/// The test image's layout, or `None` (after saying why) where the host's
/// programs cannot be copied into it.
fn tiny_image(dir: &Path) -> Option<()> {
    if std::env::consts::ARCH != "x86_64" {
        skip("the imported test image declares amd64; this host is not x86_64");
        return None;
    }
    let Some(mut base) = host_programs(&["/bin/sh", "/bin/cat"]) else {
        skip("ldd cannot list the libraries of /bin/sh and /bin/cat here");
        return None;
    };
    base.push(Entry::File(
        "etc/motd".into(),
        b"removed above\n".to_vec(),
        0o644,
    ));
    base.push(Entry::File(
        "opt/data/old.txt".into(),
        b"hidden\n".to_vec(),
        0o644,
    ));
    base.push(Entry::File(
        "opt/keep.txt".into(),
        b"kept\n".to_vec(),
        0o644,
    ));
    let top = vec![
        Entry::File("etc/.wh.motd".into(), Vec::new(), 0o644),
        Entry::File("opt/data/.wh..wh..opq".into(), Vec::new(), 0o644),
        Entry::File(
            "opt/data/new.txt".into(),
            b"from the top layer\n".to_vec(),
            0o644,
        ),
    ];
    oci_layout(
        dir,
        &[(layer_tar(&base), false), (layer_tar(&top), true)],
        &["PATH=/usr/bin:/bin", "IMAGE_GREETING=hello from oci"],
    );
    Some(())
}

/// Uploads `body` to the import route; the JSON lines it answers.
fn upload(d: &TestDaemon, name: &str, body: Vec<u8>) -> (u16, Vec<Value>) {
    let r = d
        .req(
            reqwest::Method::POST,
            &format!("/v2/images/import?name={name}"),
        )
        .body(body)
        .send()
        .expect("import");
    let status = r.status().as_u16();
    let text = r.text().expect("body");
    let events = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("a JSON line: {text}")))
        .collect();
    (status, events)
}

/// What a box on the tiny image sees, checked.
fn check_box_on(d: &TestDaemon, runtime: &str) {
    let id = d.create(json!({"runtime": runtime}));
    let (status, v) = d.get(&format!("/v2/box/{id}"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["runtime"], runtime, "{v}");
    let (code, out, err) = d.sh(
        &id,
        "cat /opt/data/new.txt /opt/keep.txt; \
         for f in /opt/data/*; do echo \"in data: $f\"; done; \
         test -e /etc/motd && echo motd-visible; \
         test -e /usr/bin/python3 && echo host-python; \
         test -e /usr/bin/ls && echo host-ls; \
         echo \"greeting: $IMAGE_GREETING\"; \
         test -L /tmp && echo tmp-is-a-link; echo t > /tmp/t && cat /tmp/t; \
         read -r pid _ < /proc/self/stat && echo \"proc: $pid\"; \
         echo written > /workspace/x && cat /workspace/x",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("from the top layer\nkept\n"), "{out}");
    assert!(out.contains("in data: /opt/data/new.txt"), "{out}");
    assert!(
        !out.contains("old.txt"),
        "the opaque directory showed a lower file: {out}"
    );
    assert!(
        !out.contains("motd-visible"),
        "the whiteout did not hide /etc/motd: {out}"
    );
    assert!(
        !out.contains("host-"),
        "the box sees the host's files: {out}"
    );
    assert!(out.contains("greeting: hello from oci"), "{out}");
    assert!(!out.contains("tmp-is-a-link"), "{out}");
    assert!(out.contains("\nt\n") && out.contains("proc: "), "{out}");
    assert!(out.contains("written"), "{out}");
    assert_eq!(d.delete(&format!("/v2/box/{id}")).0, 200);
}

#[test]
fn an_imported_oci_image_runs_boxes_with_its_layers_whiteouts_and_env() {
    let Some(d) = TestDaemon::start() else { return };
    let layout = d.dir.with_extension("layout");
    if tiny_image(&layout).is_none() {
        return;
    }
    // Through the API: the layout's tar as the body.
    let (status, events) = upload(&d, "tiny", tar_of_dir(&layout));
    assert_eq!(status, 200, "{events:?}");
    let last = events.last().expect("events");
    assert_eq!(last["event"], "done", "{events:?}");
    assert_eq!(last["name"], "tiny", "{events:?}");
    assert!(images::names(&d).contains(&"tiny".to_string()));
    check_box_on(&d, "tiny");

    // Through the CLI: the layout directory itself.
    let out = images::image_command(&d.dir)
        .arg("import")
        .arg(&layout)
        .args(["--name", "tiny-cli"])
        .output()
        .expect("boxd image import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported tiny-cli"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    check_box_on(&d, "tiny-cli");

    for name in ["tiny", "tiny-cli"] {
        let (status, v) = d.delete(&format!("/v2/images/{name}"));
        assert_eq!(status, 200, "{v}");
    }
    let _ = std::fs::remove_dir_all(&layout);
}

#[test]
fn a_tampered_or_bad_import_is_refused_and_leaves_nothing() {
    let Some(d) = TestDaemon::start() else { return };
    let layout = d.dir.with_extension("layout");
    if tiny_image(&layout).is_none() {
        return;
    }
    // One byte of the first (uncompressed) layer changed: its blob no
    // longer has the digest the manifest names.
    let mut body = tar_of_dir(&layout);
    let at = body
        .windows(16)
        .position(|w| w == b"removed above\n\0\0")
        .expect("the layer's motd in the archive");
    body[at] = b'R';
    let (status, events) = upload(&d, "tampered", body);
    assert_eq!(status, 200, "{events:?}");
    let last = events.last().expect("events");
    assert_eq!(last["event"], "error", "{events:?}");
    let msg = last["error"].as_str().unwrap_or_default();
    assert!(msg.contains("tampered"), "{events:?}");
    // Not an image archive at all.
    let (_, events) = upload(&d, "junk", b"not a tar at all".to_vec());
    let last = events.last().expect("events");
    assert_eq!(last["event"], "error", "{events:?}");
    // A bad name is refused before anything is read.
    let (status, _) = upload(&d, "Bad%20Name", Vec::new());
    assert_eq!(status, 400);
    let names = images::names(&d);
    assert!(
        !names.iter().any(|n| n == "tampered" || n == "junk"),
        "a failed import was listed: {names:?}"
    );
    let (status, v) = d.post("/v2/box", json!({"runtime": "tampered"}));
    assert_eq!(status, 400, "{v}");
    images::assert_no_staging(&d.dir);
    let _ = std::fs::remove_dir_all(&layout);
}
