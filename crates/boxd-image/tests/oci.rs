//! Importing OCI layouts and `docker save` archives, from archives built
//! here by hand (the `tar` crate, sha256): layers as overlayfs lowers
//! (mounted for real when root), digests checked, nothing escaping a layer.

#[path = "support/layout.rs"]
mod layout;
#[path = "../../../tests/common/skip.rs"]
mod skip;

use boxd_image::oci::import;
use boxd_image::progress::Event;
use boxd_image::{Image, ImageError, Store};
use layout::{gzip, hex_of, oci_layout, put_blob, put_image, sha, tar_of_dir, write_index};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------
// Scaffolding.

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("boxd-oci-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Writing layers keeps owners, device whiteouts and trusted xattrs: root only.
fn need_root(test: &str) -> bool {
    if is_root() {
        true
    } else {
        skip::skip(&format!(
            "{test}: needs root (owners, whiteouts, overlay mounts)"
        ));
        false
    }
}

fn quiet() -> impl FnMut(Event) + Send {
    |_| {}
}

/// One entry of a layer tar, written with a raw header so a test can say
/// anything an attacker could (`../evil`, absolute link targets).
#[derive(Clone)]
struct E {
    name: Vec<u8>,
    kind: tar::EntryType,
    data: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    link: Vec<u8>,
    dev: (u32, u32),
    pax: Vec<(String, Vec<u8>)>,
}

impl E {
    fn base(name: &str, kind: tar::EntryType) -> E {
        E {
            name: name.as_bytes().to_vec(),
            kind,
            data: Vec::new(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            link: Vec::new(),
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
    fn file(name: &str, data: &str) -> E {
        E {
            data: data.as_bytes().to_vec(),
            ..E::base(name, tar::EntryType::Regular)
        }
    }
    fn dir(name: &str) -> E {
        E {
            mode: 0o755,
            ..E::base(name, tar::EntryType::Directory)
        }
    }
    fn symlink(name: &str, to: &str) -> E {
        E {
            link: to.as_bytes().to_vec(),
            mode: 0o777,
            ..E::base(name, tar::EntryType::Symlink)
        }
    }
    fn hardlink(name: &str, to: &str) -> E {
        E {
            link: to.as_bytes().to_vec(),
            ..E::base(name, tar::EntryType::Link)
        }
    }
    fn device(name: &str, kind: tar::EntryType, major: u32, minor: u32) -> E {
        E {
            dev: (major, minor),
            ..E::base(name, kind)
        }
    }
    fn mode(mut self, mode: u32) -> E {
        self.mode = mode;
        self
    }
    fn owner(mut self, uid: u64, gid: u64) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }
    fn xattr(mut self, name: &str, value: &[u8]) -> E {
        self.pax
            .push((format!("SCHILY.xattr.{name}"), value.to_vec()));
        self
    }
}

/// A PAX record: `<len> <key>=<value>\n`, the length counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + body.to_string().len();
    if len.to_string().len() != body.to_string().len() {
        len += 1;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    assert_eq!(out.len(), len);
    out
}

fn raw_header(name: &[u8], kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.pax.is_empty() {
            let data: Vec<u8> = e.pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            let mut h = raw_header(b"PaxHeaders/x", tar::EntryType::XHeader, data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
        let mut h = raw_header(&e.name, e.kind, e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        if !e.link.is_empty() {
            h.as_old_mut().linkname[..e.link.len()].copy_from_slice(&e.link);
        }
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        b.append(&h, &e.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// A tar of named files (an outer archive).
fn files_tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// A `docker save` archive (legacy form: `<id>/layer.tar`, `<hex>.json`).
fn docker_archive(layers: &[Vec<u8>], env: &[&str]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": env },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap();
    let config_name = format!("{}.json", hex_of(&sha(&config)));
    let mut files = vec![(config_name.clone(), config)];
    let mut paths = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = format!("{:064x}/layer.tar", i + 1);
        files.push((format!("{:064x}/VERSION", i + 1), b"1.0".to_vec()));
        files.push((p.clone(), l.clone()));
        paths.push(p);
    }
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["example/app:latest"],
        "Layers": paths,
    }]))
    .unwrap();
    files.insert(0, ("manifest.json".into(), manifest));
    files_tar(&files)
}

fn open_store(t: &TempDir) -> Store {
    Store::open(&t.path().join("store")).unwrap()
}

fn run(store: &Store, source: &Path, name: &str) -> Result<Image, ImageError> {
    let mut events = Vec::new();
    let mut record = |e: Event| events.push(e);
    let r = import(store, source, name, &mut record);
    if r.is_ok() {
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Step { step } if step.starts_with("layer 1/"))),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Bytes { bytes } if *bytes > 0)),
            "{events:?}"
        );
    }
    r
}

/// The error of an import that must fail, as text.
fn refused(store: &Store, source: &Path, name: &str) -> String {
    match import(store, source, name, &mut quiet()) {
        Ok(img) => panic!("importing {} succeeded: {img:?}", source.display()),
        Err(ImageError::Invalid(msg)) => msg,
        Err(e) => panic!(
            "importing {} failed, but not as invalid input: {e}",
            source.display()
        ),
    }
}

/// Nothing half-imported: no tag of `name`, nothing left in the store's tmp.
fn assert_clean(store: &Store, name: &str) {
    assert!(
        store.list().unwrap().iter().all(|i| i.name != name),
        "{name} is listed"
    );
    assert!(store.tagged(name).unwrap().is_none());
    let tmp: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(tmp.is_empty(), "left in tmp: {tmp:?}");
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of its length.
    let rc = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return None;
    }
    buf.truncate(rc as usize);
    Some(buf)
}

/// An overlayfs mount of an image's layers, unmounted on drop.
struct Mounted(PathBuf);

impl Mounted {
    fn new(img: &Image, at: &Path) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let lowers: Vec<String> = img
            .lowers("/")
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let out = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={}", lowers.join(":")))
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -t overlay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let out = std::process::Command::new("umount").arg(&self.0).output();
        if !out.is_ok_and(|o| o.status.success()) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

fn layer1() -> Vec<u8> {
    layer_tar(&[
        E::dir("etc/"),
        E::file("etc/a", "a\n"),
        E::file("etc/b", "b\n"),
        E::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:7:7::/app:/bin/sh\n",
        ),
        E::dir("data/"),
        E::dir("data/x/"),
        E::file("data/x/old", "old\n"),
        E::file("data/keep", "keep\n"),
    ])
}

fn layer2() -> Vec<u8> {
    layer_tar(&[
        E::file("etc/.wh.a", ""),
        E::file("data/x/.wh..wh..opq", ""),
        E::file("data/x/new", "new\n"),
    ])
}

// ---------------------------------------------------------------------
// Tests.

#[test]
fn oci_layout_with_whiteout_and_opaque_dir_imports_as_overlay_layers() {
    if !need_root("oci_layout_with_whiteout_and_opaque_dir_imports_as_overlay_layers") {
        return;
    }
    let t = TempDir::new("whiteout");
    let store = open_store(&t);
    let layout = t.path().join("layout");
    // The upper layer gzipped, the lower plain.
    let blobs = oci_layout(
        &layout,
        &[(layer1(), false), (layer2(), true)],
        &["PATH=/usr/bin:/bin", "APP=1", "not-an-assignment"],
    );
    let img = run(&store, &layout, "whiteouts").unwrap();
    assert_eq!(img.layers.len(), 3, "boxd's files over the two layers");
    assert!(img.layers.iter().all(|l| l.target == "/"));
    assert_eq!(img.env, ["PATH=/usr/bin:/bin", "APP=1"]);
    let info = &store.list().unwrap()[0];
    assert_eq!((info.name.as_str(), info.layers), ("whiteouts", 3));
    assert_eq!(info.source, "oci layout");
    assert!(blobs.len() == 2);

    // The upper layer holds overlayfs whiteouts, not OCI ones.
    let upper = &img.layers[1].path;
    let wh = std::fs::symlink_metadata(upper.join("etc/a")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        xattr(&upper.join("data/x"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!upper.join("etc/.wh.a").exists());
    assert!(!upper.join("data/x/.wh..wh..opq").exists());

    let merged = t.path().join("merged");
    let m = Mounted::new(&img, &merged);
    assert!(!merged.join("etc/a").exists(), "etc/a is whited out");
    assert_eq!(
        std::fs::read_to_string(merged.join("etc/b")).unwrap(),
        "b\n"
    );
    assert!(!merged.join("data/x/old").exists(), "data/x is opaque");
    assert_eq!(
        std::fs::read_to_string(merged.join("data/x/new")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(merged.join("data/keep")).unwrap(),
        "keep\n"
    );
    // boxd's top layer over the image's own users.
    let passwd = std::fs::read_to_string(merged.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("app:x:7:7") && passwd.contains("box:x:1000"),
        "{passwd}"
    );
    assert!(merged.join("etc/resolv.conf").is_file());
    drop(m);
}

#[test]
fn docker_save_tarball_imports() {
    if !need_root("docker_save_tarball_imports") {
        return;
    }
    let t = TempDir::new("docker");
    let store = open_store(&t);
    let l1 = layer_tar(&[
        E::dir("bin/"),
        E::file("bin/tool", "#!/bin/sh\necho hi\n").mode(0o755),
        E::file("etc/os-release", "ID=test\n"),
    ]);
    let l2 = layer_tar(&[
        E::file("etc/.wh.os-release", ""),
        E::file("etc/new", "new\n"),
    ]);
    let archive = docker_archive(&[l1, l2], &["LANG=C.UTF-8"]);
    let plain = t.path().join("app.tar");
    std::fs::write(&plain, &archive).unwrap();
    let gz = t.path().join("app.tar.gz");
    std::fs::write(&gz, gzip(&archive)).unwrap();

    let a = run(&store, &plain, "app").unwrap();
    let b = run(&store, &gz, "app-gz").unwrap();
    assert_eq!(a.layers, b.layers, "the same layers, stored once");
    assert_eq!(a.env, ["LANG=C.UTF-8"]);
    let list = store.list().unwrap();
    let sources: Vec<&str> = list.iter().map(|i| i.source.as_str()).collect();
    assert_eq!(
        sources,
        ["docker-archive app.tar", "docker-archive app.tar.gz"]
    );
    let (upper, lower) = (&a.layers[1].path, &a.layers[2].path);
    let tool = std::fs::metadata(lower.join("bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read_to_string(lower.join("bin/tool")).unwrap(),
        "#!/bin/sh\necho hi\n"
    );
    let wh = std::fs::symlink_metadata(upper.join("etc/os-release")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_clean(&store, "never-imported");

    let merged = t.path().join("merged");
    let m = Mounted::new(&a, &merged);
    assert!(!merged.join("etc/os-release").exists());
    assert_eq!(
        std::fs::read_to_string(merged.join("etc/new")).unwrap(),
        "new\n"
    );
    drop(m);
}

#[test]
fn tampered_layer_is_refused() {
    if !need_root("tampered_layer_is_refused") {
        return;
    }
    let t = TempDir::new("tamper");
    let store = open_store(&t);
    let layout = t.path().join("layout");
    let blobs = oci_layout(&layout, &[(layer1(), false), (layer2(), false)], &[]);
    let blob = layout.join("blobs/sha256").join(hex_of(&blobs[1]));
    let mut bytes = std::fs::read(&blob).unwrap();
    // A byte of data/x/new's content: the tar still reads, the digest does not.
    let at = bytes.windows(4).position(|w| w == b"new\n").unwrap();
    bytes[at] = b'N';
    std::fs::write(&blob, &bytes).unwrap();
    let msg = refused(&store, &layout, "tampered");
    assert!(msg.contains(&blobs[1]), "{msg}");
    assert!(msg.contains("does not match its digest"), "{msg}");
    assert_clean(&store, "tampered");

    // A flipped tar header byte (the archive no longer reads) is named the same way.
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[at] = b'n';
    bytes[10] ^= 0x20;
    std::fs::write(&blob, &bytes).unwrap();
    let msg = refused(&store, &layout, "tampered");
    assert!(
        msg.contains(&blobs[1]) && msg.contains("does not match its digest"),
        "{msg}"
    );
    assert_clean(&store, "tampered");

    // A docker archive's layer is checked against the config's diff_ids.
    let l1 = layer1();
    let diff = sha(&l1);
    let mut archive = docker_archive(&[l1], &[]);
    let at = archive.windows(5).position(|w| w == b"keep\n").unwrap();
    archive[at] = b'K';
    let file = t.path().join("docker.tar");
    std::fs::write(&file, &archive).unwrap();
    let msg = refused(&store, &file, "tampered");
    assert!(
        msg.contains(&diff) && msg.contains("does not match its digest"),
        "{msg}"
    );
    assert_clean(&store, "tampered");

    // And so are manifests and configs.
    let layout2 = t.path().join("layout2");
    oci_layout(&layout2, &[(layer1(), false)], &["A=1"]);
    let mut changed = false;
    for e in std::fs::read_dir(layout2.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        if text.contains("\"A=1\"") {
            std::fs::write(&p, text.replace("A=1", "A=2")).unwrap();
            changed = true;
        }
    }
    assert!(changed);
    let msg = refused(&store, &layout2, "tampered");
    assert!(
        msg.starts_with("config sha256:") && msg.contains("does not match its digest"),
        "{msg}"
    );
    assert_clean(&store, "tampered");
}

/// Imports a one-layer layout of `entries`; returns the refusal.
fn refused_layer(t: &TempDir, store: &Store, case: &str, entries: &[E]) -> (String, String) {
    let layout = t.path().join(case);
    let blobs = oci_layout(&layout, &[(layer_tar(entries), false)], &[]);
    let msg = refused(store, &layout, "bad");
    assert!(msg.contains(&blobs[0]), "names the layer: {msg}");
    assert_clean(store, "bad");
    (msg, blobs[0].clone())
}

#[test]
fn layer_escaping_paths_are_refused() {
    if !need_root("layer_escaping_paths_are_refused") {
        return;
    }
    let t = TempDir::new("escape");
    let store = open_store(&t);
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();

    let (msg, _) = refused_layer(&t, &store, "dotdot", &[E::file("../evil", "x")]);
    assert!(
        msg.contains("../evil") && msg.contains("escapes the layer"),
        "{msg}"
    );
    let (msg, _) = refused_layer(
        &t,
        &store,
        "dotdot2",
        &[E::dir("a/"), E::file("a/../../../evil", "x")],
    );
    assert!(msg.contains("escapes the layer"), "{msg}");
    for p in [
        store.root().join("evil"),
        store.root().join("tmp/evil"),
        t.path().join("evil"),
    ] {
        assert!(!p.exists(), "{} was written", p.display());
    }

    // `link -> /`, then a file under it. The file is named so that, were
    // the link followed, it would land in `outside` (not in the host's
    // /etc: a broken importer must not break the machine testing it).
    let sentinel = outside.join("pwned");
    let via_root = format!("link{}", sentinel.display());
    let (msg, _) = refused_layer(
        &t,
        &store,
        "through-root",
        &[
            E::symlink("link", "/"),
            E::file(&via_root, "pwned::0:0::/:/bin/sh\n"),
        ],
    );
    assert!(
        msg.contains(&via_root) && msg.contains("symlink link"),
        "{msg}"
    );
    assert!(!sentinel.exists(), "written through link -> /");
    let (msg, _) = refused_layer(
        &t,
        &store,
        "through-link",
        &[
            E::symlink("d", outside.to_str().unwrap()),
            E::file("d/pwned", "x"),
        ],
    );
    assert!(
        msg.contains("d/pwned") && msg.contains("symlink d"),
        "{msg}"
    );
    // A symlink to a relative place outside, then a file under it.
    let (msg, _) = refused_layer(
        &t,
        &store,
        "through-relative",
        &[E::symlink("up", "../../../../.."), E::dir("up/x/")],
    );
    assert!(msg.contains("symlink up"), "{msg}");
    assert!(!sentinel.exists(), "written through a symlink");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    let (msg, _) = refused_layer(
        &t,
        &store,
        "hardlink",
        &[E::hardlink("shadow", "/etc/shadow")],
    );
    assert!(
        msg.contains("shadow") && msg.contains("not an earlier file of this layer"),
        "{msg}"
    );
    let (msg, _) = refused_layer(
        &t,
        &store,
        "hardlink-up",
        &[E::hardlink("shadow", "../../../../../../etc/shadow")],
    );
    assert!(msg.contains("outside the layer"), "{msg}");
    // A hard link to a file reached through a symlink of the layer.
    let (msg, _) = refused_layer(
        &t,
        &store,
        "hardlink-via-link",
        &[
            E::dir("a/"),
            E::file("a/f", "x"),
            E::symlink("a", "/etc"),
            E::hardlink("x", "a/f"),
        ],
    );
    assert!(msg.contains("symlink a"), "{msg}");

    // Absolute symlink targets themselves are the image's business: kept,
    // never followed.
    let layout = t.path().join("abs-link");
    oci_layout(
        &layout,
        &[(
            layer_tar(&[E::symlink("etc-link", "/etc"), E::file("etc/x", "x")]),
            false,
        )],
        &[],
    );
    let img = run(&store, &layout, "abs-link").unwrap();
    let link = img.layers[1].path.join("etc-link");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/etc"));
}

#[test]
fn device_nodes_are_refused() {
    if !need_root("device_nodes_are_refused") {
        return;
    }
    let t = TempDir::new("devices");
    let store = open_store(&t);
    let (msg, digest) = refused_layer(
        &t,
        &store,
        "char",
        &[
            E::dir("dev/"),
            E::device("dev/mem", tar::EntryType::Char, 1, 1),
        ],
    );
    assert_eq!(
        msg,
        format!("layer {digest} of char: device node dev/mem is not allowed in an imported image")
    );
    let (msg, _) = refused_layer(
        &t,
        &store,
        "block",
        &[E::device("dev/sda", tar::EntryType::Block, 8, 0)],
    );
    assert!(msg.contains("device node dev/sda is not allowed"), "{msg}");
}

#[test]
fn setuid_is_kept_as_the_images_own() {
    if !need_root("setuid_is_kept_as_the_images_own") {
        return;
    }
    let t = TempDir::new("setuid");
    let store = open_store(&t);
    let layout = t.path().join("layout");
    let layer = layer_tar(&[
        E::dir("usr/bin/"),
        E::file("usr/bin/su", "su").mode(0o4755),
        E::file("usr/bin/wall", "wall").mode(0o2755).owner(0, 5),
        E::file("usr/bin/ping", "ping").mode(0o755).xattr(
            "security.capability",
            b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        ),
        E::dir("home/app/").mode(0o700).owner(1000, 1000),
        E::file("home/app/notes", "n")
            .owner(1000, 1000)
            .xattr("user.note", b"kept"),
        E::file("forged", "f")
            .xattr("trusted.overlay.opaque", b"y")
            .xattr("trusted.x", b"1"),
        E::hardlink("usr/bin/su-again", "usr/bin/su"),
        E::base("run/pipe", tar::EntryType::Fifo).mode(0o620),
        E::dir("tmp/").mode(0o1777),
    ]);
    oci_layout(&layout, &[(layer, true)], &[]);
    let img = run(&store, &layout, "modes").unwrap();
    let l = &img.layers[1].path;
    let md = |p: &str| std::fs::symlink_metadata(l.join(p)).unwrap();
    assert_eq!(md("usr/bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(md("usr/bin/wall").mode() & 0o7777, 0o2755);
    assert_eq!((md("usr/bin/wall").uid(), md("usr/bin/wall").gid()), (0, 5));
    assert_eq!(md("usr/bin/su-again").ino(), md("usr/bin/su").ino());
    assert_eq!(md("home/app").mode() & 0o7777, 0o700);
    assert_eq!(
        (md("home/app/notes").uid(), md("home/app/notes").gid()),
        (1000, 1000)
    );
    assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
    assert!(md("run/pipe").file_type().is_fifo());
    assert_eq!(md("run/pipe").mode() & 0o7777, 0o620);
    assert_eq!(md("usr/bin/su").mtime(), 1_700_000_000);
    assert_eq!(
        xattr(&l.join("home/app/notes"), "user.note").as_deref(),
        Some(&b"kept"[..])
    );
    assert!(xattr(&l.join("usr/bin/ping"), "security.capability").is_some());
    assert_eq!(xattr(&l.join("forged"), "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&l.join("forged"), "trusted.x"), None);
    // The store itself is root's alone, so the set-id files are the box's.
    let root_mode = std::fs::metadata(store.root()).unwrap().mode();
    assert_eq!(root_mode & 0o077, 0);
}

#[test]
fn truncated_or_corrupt_archives_are_refused_clearly() {
    let t = TempDir::new("truncated");
    let store = open_store(&t);
    let archive = docker_archive(&[layer1(), layer2()], &[]);
    // Cut inside the last layer's data.
    let at = archive.windows(4).position(|w| w == b"new\n").unwrap() + 2;
    let cut = t.path().join("cut.tar");
    std::fs::write(&cut, &archive[..at]).unwrap();
    let msg = refused(&store, &cut, "cut");
    assert!(
        msg.contains("cut.tar") && msg.contains("cut short"),
        "{msg}"
    );
    assert_clean(&store, "cut");
    // Cut inside the second entry's header.
    let second = {
        let mut ar = tar::Archive::new(&archive[..]);
        let mut entries = ar.entries().unwrap();
        entries.next().unwrap().unwrap();
        entries.next().unwrap().unwrap().raw_header_position()
    };
    std::fs::write(&cut, &archive[..second as usize + 100]).unwrap();
    let msg = refused(&store, &cut, "cut");
    assert!(
        msg.contains("cut.tar") && msg.contains("cut short"),
        "{msg}"
    );
    // A gzip stream cut short.
    let gz = gzip(&archive);
    let cutgz = t.path().join("cut.tar.gz");
    std::fs::write(&cutgz, &gz[..gz.len() / 2]).unwrap();
    let msg = refused(&store, &cutgz, "cut");
    assert!(
        msg.contains("cut.tar.gz: the gzip stream is cut short or corrupt"),
        "{msg}"
    );
    assert_clean(&store, "cut");
    // Not an archive at all.
    let junk = t.path().join("junk.bin");
    std::fs::write(&junk, vec![0x5au8; 3000]).unwrap();
    let msg = refused(&store, &junk, "cut");
    assert!(
        msg.contains("junk.bin is not a readable tar archive"),
        "{msg}"
    );
    // A tar without a layout.
    let other = t.path().join("other.tar");
    std::fs::write(&other, files_tar(&[("hello.txt".into(), b"hi".to_vec())])).unwrap();
    let msg = refused(&store, &other, "cut");
    assert!(msg.contains("neither an OCI image layout"), "{msg}");
    // A layer blob of a layout cut short.
    let layout = t.path().join("layout");
    let blobs = oci_layout(&layout, &[(layer1(), true)], &[]);
    let blob = layout.join("blobs/sha256").join(hex_of(&blobs[0]));
    let bytes = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, &bytes[..bytes.len() - 9]).unwrap();
    let msg = refused(&store, &layout, "cut");
    assert!(
        msg.contains(&blobs[0]) && msg.contains("tampered or corrupt"),
        "{msg}"
    );
    assert_clean(&store, "cut");
}

#[test]
fn zstd_layers_and_bounds_are_refused() {
    let t = TempDir::new("bounds");
    let store = open_store(&t);
    // A zstd layer, by its media type and by its magic bytes.
    for (case, media) in [
        ("zstd-type", "application/vnd.oci.image.layer.v1.tar+zstd"),
        ("zstd-magic", "application/vnd.oci.image.layer.v1.tar"),
    ] {
        let layout = t.path().join(case);
        std::fs::create_dir_all(&layout).unwrap();
        let blob = [&[0x28u8, 0xb5, 0x2f, 0xfd][..], b"not really zstd"].concat();
        let d = put_blob(&layout, &blob);
        let config = br#"{"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cd = put_blob(&layout, config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [{"mediaType": media, "digest": d, "size": blob.len()}],
        }))
        .unwrap();
        let md = put_blob(&layout, &manifest);
        write_index(
            &layout,
            serde_json::json!([{"digest": md, "size": manifest.len()}]),
        );
        let msg = refused(&store, &layout, "zstd");
        assert!(
            msg.contains("zstd layers are not supported") && msg.contains(&d),
            "{msg}"
        );
        assert_clean(&store, "zstd");
    }
    // More layers than allowed: refused before any is read.
    let layout = t.path().join("many");
    std::fs::create_dir_all(&layout).unwrap();
    let config = br#"{"os":"linux"}"#;
    let cd = put_blob(&layout, config);
    let layers: Vec<_> = (0..129)
        .map(|i| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{i:064x}"), "size": 1}))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "config": {"digest": cd, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let md = put_blob(&layout, &manifest);
    write_index(
        &layout,
        serde_json::json!([{"digest": md, "size": manifest.len()}]),
    );
    let msg = refused(&store, &layout, "many");
    assert!(
        msg.contains("129 layers, more than the 128 allowed"),
        "{msg}"
    );
    // An index too big to be one.
    let big = t.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    let mut index = b"{\"manifests\":[]".to_vec();
    index.resize(5 << 20, b' ');
    index.push(b'}');
    std::fs::write(big.join("index.json"), index).unwrap();
    let msg = refused(&store, &big, "big");
    assert!(msg.contains("more than the 4 MiB allowed"), "{msg}");
    // A path longer than any file system takes.
    let long = "d/".repeat(2100) + "f";
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, &b"x"[..]).unwrap();
    let layout = t.path().join("long");
    oci_layout(&layout, &[(b.into_inner().unwrap(), false)], &[]);
    let msg = refused(&store, &layout, "long");
    assert!(
        msg.contains("4201 bytes long, more than the 4096 allowed"),
        "{msg}"
    );
    assert_clean(&store, "long");
}

#[test]
fn a_multi_platform_index_takes_the_host_architecture() {
    if !need_root("a_multi_platform_index_takes_the_host_architecture") {
        return;
    }
    let t = TempDir::new("platforms");
    let store = open_store(&t);
    let layout = t.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let (other, other_size, _) = put_image(
        &layout,
        &[(layer_tar(&[E::file("arch", "s390x")]), true)],
        &[],
    );
    let (host, host_size, _) = put_image(
        &layout,
        &[(layer_tar(&[E::file("arch", "host")]), true)],
        &[],
    );
    // A nested index (as `docker save` writes), one level down.
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other, "size": other_size,
             "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": host, "size": host_size,
             "platform": {"os": "linux", "architecture": arch}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other, "size": other_size,
             "platform": {"os": "unknown", "architecture": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
        ],
    }))
    .unwrap();
    let nd = put_blob(&layout, &nested);
    write_index(
        &layout,
        serde_json::json!([{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": nd, "size": nested.len()}]),
    );
    let img = run(&store, &layout, "multi").unwrap();
    assert_eq!(
        std::fs::read_to_string(img.layers[1].path.join("arch")).unwrap(),
        "host"
    );
    // And from the layout tarred.
    let tarred = t.path().join("multi.tar");
    std::fs::write(&tarred, tar_of_dir(&layout)).unwrap();
    let again = run(&store, &tarred, "multi-tar").unwrap();
    assert_eq!(again.layers, img.layers);
}

#[test]
fn importing_the_same_layout_twice_reuses_layers() {
    if !need_root("importing_the_same_layout_twice_reuses_layers") {
        return;
    }
    let t = TempDir::new("twice");
    let store = open_store(&t);
    let layout = t.path().join("layout");
    oci_layout(&layout, &[(layer1(), true), (layer2(), false)], &["A=1"]);
    let a = run(&store, &layout, "first").unwrap();
    let count = |s: &Store| std::fs::read_dir(s.root().join("layers")).unwrap().count();
    let stored = count(&store);
    let b = run(&store, &layout, "second").unwrap();
    assert_eq!(a.layers, b.layers, "the same stored layers");
    assert_eq!(count(&store), stored, "nothing stored twice");
    // The layout as a (gzipped) tarball is the same image too.
    let tgz = t.path().join("layout.tar.gz");
    std::fs::write(&tgz, gzip(&tar_of_dir(&layout))).unwrap();
    let c = run(&store, &tgz, "third").unwrap();
    assert_eq!(c.layers, a.layers);
    assert_eq!(count(&store), stored);
    let names: Vec<String> = store.list().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["first", "second", "third"]);
    // A layer two images share is listed under each.
    assert!(store.list().unwrap().iter().all(|i| i.layers == 3));
    assert_clean(&store, "fourth");
}

#[test]
fn a_layer_listed_twice_counts_at_its_top_most_place() {
    if !need_root("a_layer_listed_twice_counts_at_its_top_most_place") {
        return;
    }
    let t = TempDir::new("dup");
    let store = open_store(&t);
    let layout = t.path().join("layout");
    // layer1, layer2 (hiding etc/a and data/x/old), layer1 again on top.
    oci_layout(
        &layout,
        &[(layer1(), false), (layer2(), false), (layer1(), true)],
        &[],
    );
    let img = run(&store, &layout, "dup").unwrap();
    assert_eq!(img.layers.len(), 3, "boxd's files, layer1, layer2: {img:?}");
    let merged = t.path().join("merged");
    let m = Mounted::new(&img, &merged);
    // The top-most layer1 shows all it has again.
    assert_eq!(
        std::fs::read_to_string(merged.join("etc/a")).unwrap(),
        "a\n"
    );
    assert_eq!(
        std::fs::read_to_string(merged.join("data/x/old")).unwrap(),
        "old\n"
    );
    assert_eq!(
        std::fs::read_to_string(merged.join("data/x/new")).unwrap(),
        "new\n"
    );
    drop(m);
}
