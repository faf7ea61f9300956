//! `boxd cp`: copies files and folders between this machine and a box.
//!
//! Owns the `BOX:path` syntax, the `cp`-like destination rules (an existing
//! folder or a trailing `/` receives the source inside it), the upload of a
//! local tree (one multipart request, files opened one at a time) and the
//! unpacking of the tar archive the daemon sends for a box folder.
//!
//! It never writes outside the local destination: archive entries with
//! absolute names or `..` are refused, and `tar` refuses to write through
//! symlinks that lead out of it. It never follows symlinks inside a local
//! folder it uploads (they are skipped and reported).

use super::client::{ApiError, Client};
use super::table;
use anyhow::{anyhow, bail, Context, Result};
use boxd_api::{BoxData, FileStat, MkdirRequest, WORKSPACE};
use futures_util::Stream;
use reqwest::multipart::{Form, Part};
use reqwest::{Body, Method};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Local(PathBuf),
    Box {
        /// Box id or name.
        target: String,
        /// Absolute, normalized path in the box.
        path: String,
        /// The user wrote a trailing `/` (or nothing): "into this folder".
        dir_hint: bool,
    },
}

/// Parses `BOX:path` (box side) or anything else (local side). A local
/// path containing `:` must be written with a `/` before the colon
/// (`./a:b`) or start with `.`.
pub fn parse_endpoint(s: &str) -> Endpoint {
    if let Some((target, path)) = s.split_once(':') {
        if !target.is_empty() && !target.contains('/') && !target.starts_with('.') {
            return Endpoint::Box {
                target: target.to_string(),
                path: box_path(path),
                dir_hint: path.is_empty() || path.ends_with('/'),
            };
        }
    }
    Endpoint::Local(PathBuf::from(s))
}

/// A box path: relative to `/workspace/home` unless absolute, with `.`
/// and repeated or trailing slashes removed. `..` is kept for the server to
/// resolve inside the box's root (a path that leaves it is the server's 400,
/// never quietly turned into another path here).
pub fn box_path(p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{WORKSPACE}/{p}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The last component of a box path (`None` for `/` or a path ending in
/// `..`, which names no entry to copy into a local folder).
fn box_basename(p: &str) -> Option<&str> {
    p.rsplit('/').next().filter(|s| !s.is_empty() && *s != "..")
}

fn box_join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The relative path an archive entry names, or an error if it is absolute
/// or climbs out with `..`. `.` components are dropped; the folder itself
/// (`.`) is the empty path.
pub fn safe_entry_path(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                bail!(
                    "refused archive entry {}: it climbs out with ..",
                    p.display()
                )
            }
            Component::RootDir | Component::Prefix(_) => {
                bail!("refused archive entry {}: it is absolute", p.display())
            }
        }
    }
    Ok(out)
}

/// What a copy moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
}

/// Unpacks a tar archive under `dest` (which must exist), refusing unsafe
/// entry names. Returns how many regular files and bytes it wrote.
pub fn unpack(reader: impl Read, dest: &Path) -> Result<Copied> {
    let mut archive = tar::Archive::new(reader);
    archive.set_overwrite(true);
    let mut copied = Copied::default();
    for entry in archive.entries().context("read the archive")? {
        let mut entry = entry.context("read the archive")?;
        let raw = entry
            .path()
            .context("read an archive entry's name")?
            .into_owned();
        let rel = safe_entry_path(&raw)?;
        if let Some(link) = entry.link_name().context("read an archive entry's link")? {
            if entry.header().entry_type().is_hard_link() {
                safe_entry_path(&link)?;
            }
        }
        if rel.as_os_str().is_empty() {
            continue; // the folder itself
        }
        let is_file = entry.header().entry_type().is_file();
        let size = entry.size();
        let done = entry
            .unpack_in(dest)
            .with_context(|| format!("write {}", dest.join(&rel).display()))?;
        if !done {
            bail!("refused archive entry {}", raw.display());
        }
        if is_file {
            copied.files += 1;
            copied.bytes += size;
        }
    }
    Ok(copied)
}

/// A local tree to upload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (local file, absolute box path, size)
    pub files: Vec<(PathBuf, String, u64)>,
    /// Box folders that get no file but must exist.
    pub empty_dirs: Vec<String>,
    /// Local entries that are neither files nor folders (symlinks, …).
    pub skipped: Vec<PathBuf>,
}

/// Walks the local folder `src` (sorted, symlinks not followed) mapping it
/// onto the box folder `dest`.
pub fn plan_dir(src: &Path, dest: &str) -> Result<Plan> {
    let mut plan = Plan::default();
    walk(src, dest, &mut plan)?;
    Ok(plan)
}

/// Returns whether the folder holds at least one file (at any depth).
fn walk(dir: &Path, dest: &str, plan: &mut Plan) -> Result<bool> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("read folder {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("read folder {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    let mut has_file = false;
    for e in entries {
        let path = e.path();
        let ft = e
            .file_type()
            .with_context(|| format!("stat {}", path.display()))?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            bail!("{}: file names must be UTF-8 to be sent", path.display());
        };
        let target = box_join(dest, &name);
        if ft.is_file() {
            let len = e
                .metadata()
                .with_context(|| format!("stat {}", path.display()))?
                .len();
            plan.files.push((path, target, len));
            has_file = true;
        } else if ft.is_dir() {
            has_file |= walk(&path, &target, plan)?;
        } else {
            plan.skipped.push(path);
        }
    }
    if !has_file {
        // mkdir creates parents, so only the deepest empty folders need one.
        let prefix = format!("{dest}/");
        if !plan.empty_dirs.iter().any(|d| d.starts_with(&prefix)) {
            plan.empty_dirs.push(dest.to_string());
        }
    }
    Ok(has_file)
}

/// `boxd cp SRC DEST`.
pub async fn run(client: &Client, src: &str, dest: &str, json: bool) -> Result<i32> {
    let (copied, from, to) = match (parse_endpoint(src), parse_endpoint(dest)) {
        (
            Endpoint::Local(l),
            Endpoint::Box {
                target,
                path,
                dir_hint,
            },
        ) => {
            let id = resolve_box(client, &target).await?;
            let (copied, final_path) = upload(client, &id, &l, &path, dir_hint).await?;
            (
                copied,
                l.display().to_string(),
                format!("{target}:{final_path}"),
            )
        }
        (Endpoint::Box { target, path, .. }, Endpoint::Local(l)) => {
            let id = resolve_box(client, &target).await?;
            let (copied, local) = download(client, &id, &target, &path, &l).await?;
            (
                copied,
                format!("{target}:{path}"),
                local.display().to_string(),
            )
        }
        (Endpoint::Box { .. }, Endpoint::Box { .. }) => {
            bail!("both sides are in a box: copy through a local folder (boxd cp BOX:path ./tmp, then boxd cp ./tmp OTHER:path)")
        }
        (Endpoint::Local(_), Endpoint::Local(_)) => {
            bail!("one side must be in a box: write it as BOX:path (box id or name; path relative to {WORKSPACE} or absolute)")
        }
    };
    if json {
        let v = serde_json::json!({
            "from": from, "to": to, "files": copied.files, "bytes": copied.bytes,
        });
        super::out(format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        let noun = if copied.files == 1 { "file" } else { "files" };
        super::out(format!(
            "copied {} {noun} ({}) from {from} to {to}\n",
            copied.files,
            table::bytes(copied.bytes)
        ))?;
    }
    Ok(0)
}

/// The id of the box `target` (an id or a name).
async fn resolve_box(client: &Client, target: &str) -> Result<String> {
    let b: BoxData = client
        .json(client.request(Method::GET, client.url(&["v2", "box", target])))
        .await?;
    Ok(b.id)
}

/// Stats a box path (following a final symlink); `None` if it is missing.
async fn stat(client: &Client, id: &str, path: &str) -> Result<Option<FileStat>> {
    let mut url = client.url(&["v2", "box", id, "files", "stat"]);
    url.query_pairs_mut()
        .append_pair("path", path)
        .append_pair("follow", "true");
    match client.json(client.request(Method::GET, url)).await {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if e.downcast_ref::<ApiError>()
                .is_some_and(|a| a.status == 404) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Uploads the local `src` to `dest` in box `id`; returns what was copied
/// and the box path it landed at.
async fn upload(
    client: &Client,
    id: &str,
    src: &Path,
    dest: &str,
    dir_hint: bool,
) -> Result<(Copied, String)> {
    let md = std::fs::metadata(src).with_context(|| format!("{}", src.display()))?;
    let into_dir = dir_hint
        || stat(client, id, dest)
            .await?
            .is_some_and(|s| s.kind == "directory");
    let name = match src.file_name() {
        Some(n) => Some(
            n.to_str()
                .ok_or_else(|| anyhow!("{}: file names must be UTF-8", src.display()))?,
        ),
        None => None,
    };
    let final_path = match (into_dir, name) {
        (true, Some(n)) => box_join(dest, n),
        _ => dest.to_string(),
    };
    let plan = if md.is_file() {
        Plan {
            files: vec![(src.to_path_buf(), final_path.clone(), md.len())],
            ..Plan::default()
        }
    } else if md.is_dir() {
        plan_dir(src, &final_path)?
    } else {
        bail!("{} is neither a file nor a folder", src.display());
    };
    for s in &plan.skipped {
        eprintln!("boxd: skipped {} (not a file or folder)", s.display());
    }
    let mut copied = Copied::default();
    if !plan.files.is_empty() {
        let mut form = Form::new();
        for (local, remote, len) in &plan.files {
            let rel = remote
                .strip_prefix(&format!("{final_path}/"))
                .unwrap_or(remote)
                .to_string();
            form = form.text("paths", remote.clone()).part(
                "files",
                Part::stream(Body::wrap_stream(file_chunks(local.clone()))).file_name(rel),
            );
            copied.files += 1;
            copied.bytes += len;
        }
        let url = client.url(&["v2", "box", id, "files", "upload"]);
        client
            .send(client.request(Method::POST, url).multipart(form))
            .await?;
    }
    for d in &plan.empty_dirs {
        let req = MkdirRequest {
            path: d.clone(),
            parents: Some(true),
        };
        let url = client.url(&["v2", "box", id, "files", "mkdir"]);
        client
            .send(client.request(Method::POST, url).json(&req))
            .await?;
    }
    Ok((copied, final_path))
}

/// A file's bytes as a stream, opened on first poll, so a large tree keeps
/// only one file open at a time.
fn file_chunks(path: PathBuf) -> impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures_util::stream::try_unfold((path, None::<tokio::fs::File>), |(path, file)| async move {
        let with_path =
            |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let mut file = match file {
            Some(f) => f,
            None => tokio::fs::File::open(&path).await.map_err(with_path)?,
        };
        let mut buf = vec![0u8; 64 * 1024];
        let n = file.read(&mut buf).await.map_err(with_path)?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((buf, (path, Some(file)))))
    })
}

/// Downloads `path` from box `id` to the local `dest`; returns what was
/// copied and where it landed.
async fn download(
    client: &Client,
    id: &str,
    target: &str,
    path: &str,
    dest: &Path,
) -> Result<(Copied, PathBuf)> {
    let st = stat(client, id, path)
        .await?
        .ok_or_else(|| anyhow!("{target}:{path}: no such file or folder in the box"))?;
    let into_dir = dest.is_dir() || dest.as_os_str().to_string_lossy().ends_with('/');
    let local = match (into_dir, box_basename(path)) {
        (true, Some(n)) => dest.join(n),
        _ => dest.to_path_buf(),
    };
    let mut url = client.url(&["v2", "box", id, "files", "download"]);
    url.query_pairs_mut().append_pair("folder", path);
    let mut resp = client.send(client.request(Method::GET, url)).await?;
    if st.kind == "directory" {
        let ctype = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !ctype.contains("x-tar") {
            bail!("boxd sent {ctype:?} for the folder {target}:{path}, not a tar archive (application/x-tar)");
        }
        std::fs::create_dir_all(&local)
            .with_context(|| format!("create folder {}", local.display()))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(16);
        let dir = local.clone();
        let unpacker = tokio::task::spawn_blocking(move || unpack(ChannelReader::new(rx), &dir));
        loop {
            let item = match resp.chunk().await {
                Ok(Some(c)) => Ok(Vec::from(c)),
                Ok(None) => break,
                Err(e) => Err(std::io::Error::other(client.transport_error(e).to_string())),
            };
            let failed = item.is_err();
            // A send fails only when the unpacker stopped: its error says why.
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        let copied = unpacker.await.context("the unpacking task failed")??;
        Ok((copied, local))
    } else {
        let parent = match local.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = local
            .file_name()
            .ok_or_else(|| anyhow!("{}: not a file name", local.display()))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".boxd-part-{}", std::process::id()));
        let tmp = parent.join(tmp_name);
        let result = async {
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("create {}", local.display()))?;
            let mut copied = Copied { files: 1, bytes: 0 };
            while let Some(c) = resp.chunk().await.map_err(|e| client.transport_error(e))? {
                f.write_all(&c)
                    .with_context(|| format!("write {}", local.display()))?;
                copied.bytes += c.len() as u64;
            }
            f.sync_all()
                .with_context(|| format!("write {}", local.display()))?;
            std::fs::rename(&tmp, &local).with_context(|| format!("write {}", local.display()))?;
            anyhow::Ok(copied)
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok((result?, local))
    }
}

/// A blocking `Read` over chunks sent from the async side.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>) -> ChannelReader {
        ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                Some(Ok(c)) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(target: &str, path: &str, dir_hint: bool) -> Endpoint {
        Endpoint::Box {
            target: target.into(),
            path: path.into(),
            dir_hint,
        }
    }

    #[test]
    fn box_and_local_sides() {
        assert_eq!(
            parse_endpoint("b1:a.txt"),
            boxed("b1", "/workspace/home/a.txt", false)
        );
        assert_eq!(
            parse_endpoint("my-box:/etc/hosts"),
            boxed("my-box", "/etc/hosts", false)
        );
        assert_eq!(parse_endpoint("b1:"), boxed("b1", "/workspace/home", true));
        assert_eq!(
            parse_endpoint("b1:sub/"),
            boxed("b1", "/workspace/home/sub", true)
        );
        assert_eq!(parse_endpoint("b1:/"), boxed("b1", "/", true));
        assert_eq!(
            parse_endpoint("plain.txt"),
            Endpoint::Local("plain.txt".into())
        );
        assert_eq!(parse_endpoint("./a:b"), Endpoint::Local("./a:b".into()));
        assert_eq!(
            parse_endpoint("/tmp/a:b"),
            Endpoint::Local("/tmp/a:b".into())
        );
        assert_eq!(
            parse_endpoint(".hidden:x"),
            Endpoint::Local(".hidden:x".into())
        );
        assert_eq!(parse_endpoint(":x"), Endpoint::Local(":x".into()));
    }

    #[test]
    fn box_paths_are_normalized() {
        assert_eq!(box_path(""), "/workspace/home");
        assert_eq!(box_path("./a//b/../c/"), "/workspace/home/a/b/../c");
        assert_eq!(box_path("../../../.."), "/workspace/home/../../../..");
        assert_eq!(box_path("/x/./y"), "/x/y");
        assert_eq!(box_basename("/workspace/home"), Some("home"));
        assert_eq!(box_basename("/"), None);
        assert_eq!(box_basename("/workspace/home/a/.."), None);
        assert_eq!(box_join("/", "a"), "/a");
        assert_eq!(box_join("/a", "b"), "/a/b");
    }

    #[test]
    fn archive_entry_names_must_stay_inside() {
        assert_eq!(
            safe_entry_path(Path::new("./a/b")).unwrap(),
            Path::new("a/b")
        );
        assert_eq!(safe_entry_path(Path::new(".")).unwrap(), Path::new(""));
        assert!(safe_entry_path(Path::new("../x")).is_err());
        assert!(safe_entry_path(Path::new("a/../../x")).is_err());
        assert!(safe_entry_path(Path::new("/etc/passwd")).is_err());
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("boxd-cli-cp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A raw tar header + data, bypassing `tar::Builder`'s own name checks.
    fn raw_entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    #[test]
    fn unpack_writes_a_tree_and_counts_it() {
        let src = temp_dir("unpack-src");
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::write(src.join("a.txt"), b"hello").unwrap();
        std::fs::write(src.join("d/e/b.bin"), [0u8, 1, 2]).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append_dir_all(".", &src).unwrap();
        let data = b.into_inner().unwrap();
        let dst = temp_dir("unpack-dst");
        let c = unpack(&data[..], &dst).unwrap();
        assert_eq!(c, Copied { files: 2, bytes: 8 });
        assert_eq!(std::fs::read(dst.join("d/e/b.bin")).unwrap(), [0u8, 1, 2]);
        std::fs::remove_dir_all(src).unwrap();
        std::fs::remove_dir_all(dst).unwrap();
    }

    #[test]
    fn unpack_refuses_escaping_entries() {
        let dst = temp_dir("unpack-evil");
        for name in ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"] {
            let mut data = raw_entry(name, b"x");
            data.extend_from_slice(&[0u8; 1024]);
            let err = unpack(&data[..], &dst).unwrap_err().to_string();
            assert!(err.contains("refused"), "{name}: {err}");
        }
        // A hard link to a file outside is refused too.
        let mut h = tar::Header::new_gnu();
        h.set_path("innocent").unwrap();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.as_gnu_mut().unwrap().linkname[..11].copy_from_slice(b"/etc/passwd");
        h.set_cksum();
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[0u8; 1024]);
        let err = unpack(&data[..], &dst).unwrap_err().to_string();
        assert!(err.contains("refused"), "{err}");
        assert!(!dst.join("innocent").exists());
        assert!(!dst.parent().unwrap().join("evil.txt").exists());
        std::fs::remove_dir_all(dst).unwrap();
    }

    #[test]
    fn a_local_tree_maps_onto_the_box_folder() {
        let src = temp_dir("plan");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(src.join("empty/inner")).unwrap();
        std::fs::write(src.join("a.txt"), b"abc").unwrap();
        std::fs::write(src.join("sub/deeper/z"), b"").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let plan = plan_dir(&src, "/workspace/home/t").unwrap();
        let files: Vec<(&str, u64)> = plan
            .files
            .iter()
            .map(|(_, r, n)| (r.as_str(), *n))
            .collect();
        assert_eq!(
            files,
            [
                ("/workspace/home/t/a.txt", 3),
                ("/workspace/home/t/sub/deeper/z", 0)
            ]
        );
        assert_eq!(plan.empty_dirs, ["/workspace/home/t/empty/inner"]);
        assert_eq!(plan.skipped, [src.join("link")]);
        let empty = temp_dir("plan-empty");
        assert_eq!(plan_dir(&empty, "/x").unwrap().empty_dirs, ["/x"]);
        std::fs::remove_dir_all(src).unwrap();
        std::fs::remove_dir_all(empty).unwrap();
    }
}
