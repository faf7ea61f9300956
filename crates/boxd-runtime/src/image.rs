//! Images: ordered stacks of read-only layers under the data directory, and
//! the runtime names (`node`, `python`, …) that select one.
//!
//! A layer is a directory mounted (id-mapped, read-only) as an overlay lower
//! at a target path of the box: most layers target `/`; the zero-setup
//! `host` image adds the host's `/usr` as a layer targeting `/usr`. The
//! generated `/etc` of the host image is written here from scratch plus an
//! allow-list of public host files — the host's own `/etc` secrets (shadow,
//! ssh keys, machine-id, …) never reach a box.

use crate::error::{Result, RuntimeError};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

/// The default image: the host's `/usr` and a generated `/etc`.
pub const HOST_IMAGE: &str = "host";
/// Bumped whenever the generated host image changes, so it is rebuilt.
const HOST_IMAGE_VERSION: u32 = 3;

/// The non-root user of every box: `box` (home `/workspace/home`, the
/// default working directory) and `boxuser`, the user of the Upstash
/// images (home `/home/boxuser`, where their harnesses live). One uid and
/// gid for both names, so a file either writes is the other's too and both
/// homes are writable under either name; the uid's own name is `box`.
pub const BOX_UID: u32 = 1000;

/// One read-only layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Absolute path of the layer directory on the host.
    pub path: PathBuf,
    /// Where in the box it appears (`/` for a full root layer).
    pub target: String,
}

/// An image: layers, top-most first for each target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    pub version: u32,
    pub layers: Vec<Layer>,
}

impl Image {
    /// Distinct targets, `/` first, then in path order (parents before children).
    pub fn targets(&self) -> Vec<String> {
        let mut t: Vec<String> = self.layers.iter().map(|l| l.target.clone()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// Lower directories for `target`, top-most first.
    pub fn lowers(&self, target: &str) -> Vec<PathBuf> {
        self.layers
            .iter()
            .filter(|l| l.target == target)
            .map(|l| l.path.clone())
            .collect()
    }
}

/// Runtime names and the host binary that must exist for each.
const RUNTIMES: [(&str, &str); 2] = [("node", "/usr/bin/node"), ("python", "/usr/bin/python3")];

/// The runtime names a box can be created with on this host: the
/// runtimes whose binary the host has, `host`, and every built image in
/// `images_dir`, sorted.
pub fn available_runtimes(images_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = RUNTIMES
        .iter()
        .filter(|(_, bin)| Path::new(bin).exists())
        .map(|(n, _)| n.to_string())
        .collect();
    names.push(HOST_IMAGE.to_string());
    if let Ok(entries) = std::fs::read_dir(images_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().join("image.json").is_file() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

/// Maps a runtime name (`node`, `python`, or an image name) to an image.
pub fn resolve_runtime(name: &str, images_dir: &Path) -> Result<String> {
    let available = || available_runtimes(images_dir).join(", ");
    if let Some((_, bin)) = RUNTIMES.iter().find(|(n, _)| *n == name) {
        if Path::new(bin).exists() {
            return Ok(HOST_IMAGE.to_string());
        }
        return Err(RuntimeError::UnknownRuntime {
            name: format!("{name} (this host has no {bin})"),
            available: available(),
        });
    }
    if name == HOST_IMAGE || images_dir.join(name).join("image.json").is_file() {
        return Ok(name.to_string());
    }
    Err(RuntimeError::UnknownRuntime {
        name: name.to_string(),
        available: available(),
    })
}

/// Loads an image manifest.
pub fn load(images_dir: &Path, name: &str) -> Result<Image> {
    let path = images_dir.join(name).join("image.json");
    let text =
        std::fs::read_to_string(&path).map_err(|_| RuntimeError::UnknownImage(name.to_string()))?;
    serde_json::from_str(&text).map_err(|e| RuntimeError::Io {
        context: format!("parse {}", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Builds the `host` image if it is missing or outdated; returns it.
pub fn ensure_host_image(images_dir: &Path) -> Result<Image> {
    if let Ok(img) = load(images_dir, HOST_IMAGE) {
        if img.version == HOST_IMAGE_VERSION && img.layers.iter().all(|l| l.path.is_dir()) {
            return Ok(img);
        }
    }
    let dir = images_dir.join(HOST_IMAGE);
    let tmp = images_dir.join(format!(".{HOST_IMAGE}.building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let base = tmp.join("layers/base");
    let mut host_layers = Vec::new();
    build_host_base(&base, &mut host_layers)?;
    let final_base = dir.join("layers/base");
    let mut layers = vec![Layer {
        path: final_base,
        target: "/".into(),
    }];
    layers.extend(host_layers);
    let img = Image {
        name: HOST_IMAGE.into(),
        version: HOST_IMAGE_VERSION,
        layers,
    };
    let manifest = serde_json::to_vec_pretty(&img).map_err(|e| RuntimeError::Io {
        context: "serialise image manifest".into(),
        source: std::io::Error::other(e),
    })?;
    // Every box, and every box adopted after a crash, reads these layers:
    // they reach the disk before the manifest that makes the image usable,
    // and the manifest before the rename that installs it.
    crate::snapshot::sync_fs(&tmp)?;
    crate::durable::write(&tmp.join("image.json"), &manifest, 0o644)
        .map_err(RuntimeError::io("write image manifest"))?;
    // Swap the new image in. Boxes already running keep their mounts of the
    // old layer (the directory stays alive until they are gone).
    let old = images_dir.join(format!(".{HOST_IMAGE}.old-{}", std::process::id()));
    if dir.exists() {
        std::fs::rename(&dir, &old).map_err(RuntimeError::io("replace host image"))?;
    }
    std::fs::rename(&tmp, &dir).map_err(RuntimeError::io("install host image"))?;
    crate::durable::sync_dir(images_dir).map_err(RuntimeError::io("install host image"))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(img)
}

/// Public, secret-free host files copied into the generated `/etc`.
const HOST_ETC_ALLOW: &[&str] = &[
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates.conf",
    "localtime",
    "timezone",
    "bash.bashrc",
    "profile",
    "inputrc",
    "mime.types",
    "protocols",
    "services",
    "gai.conf",
    "host.conf",
    "os-release",
    "debian_version",
    "environment",
];

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(RuntimeError::io(format!("create {}", p.display())))?;
    }
    std::fs::write(path, text).map_err(RuntimeError::io(format!("write {}", path.display())))
}

fn mkdir_mode(path: &Path, mode: u32, owner: Option<u32>) -> Result<()> {
    std::fs::create_dir_all(path)
        .map_err(RuntimeError::io(format!("create {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(RuntimeError::io(format!("chmod {}", path.display())))?;
    if let Some(id) = owner {
        std::os::unix::fs::chown(path, Some(id), Some(id))
            .map_err(RuntimeError::io(format!("chown {}", path.display())))?;
    }
    Ok(())
}

/// Writes the base layer of the host image into `base`, and adds to
/// `host_layers` the host directories it needs beside `/usr`.
fn build_host_base(base: &Path, host_layers: &mut Vec<Layer>) -> Result<()> {
    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
        ("run", 0o755),
        ("root", 0o700),
        ("home", 0o755),
        ("usr", 0o755),
        ("etc", 0o755),
        ("mnt", 0o755),
        ("opt", 0o755),
        ("srv", 0o755),
        ("var", 0o755),
        ("var/tmp", 0o1777),
        ("var/log", 0o755),
        ("var/cache", 0o755),
        ("var/lib", 0o755),
        ("workspace", 0o755),
    ] {
        mkdir_mode(&base.join(dir), mode, None)?;
    }
    mkdir_mode(&base.join("workspace/home"), 0o755, Some(BOX_UID))?;
    mkdir_mode(&base.join("home/boxuser"), 0o755, Some(BOX_UID))?;
    host_layers.push(Layer {
        path: "/usr".into(),
        target: "/usr".into(),
    });
    // bin, sbin, lib*: symlinks into /usr on merged-usr hosts, else layers.
    for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() => {
                let target = std::fs::read_link(&host)
                    .map_err(RuntimeError::io(format!("readlink {}", host.display())))?;
                symlink(target, base.join(name))
                    .map_err(RuntimeError::io(format!("symlink {name}")))?;
            }
            Ok(md) if md.is_dir() => {
                mkdir_mode(&base.join(name), 0o755, None)?;
                host_layers.push(Layer {
                    path: host.clone(),
                    target: format!("/{name}"),
                });
            }
            _ => {}
        }
    }
    let etc = base.join("etc");
    write_file(
        &etc.join("passwd"),
        &format!(
            "root:x:0:0:root:/root:/bin/bash\n\
             box:x:{BOX_UID}:{BOX_UID}:box:/workspace/home:/bin/bash\n\
             boxuser:x:{BOX_UID}:{BOX_UID}:boxuser:/home/boxuser:/bin/bash\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
    )?;
    write_file(
        &etc.join("group"),
        &format!(
            "root:x:0:\ntty:x:5:\nusers:x:100:box,boxuser\nbox:x:{BOX_UID}:\nnogroup:x:65534:\n"
        ),
    )?;
    write_file(
        &etc.join("hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    write_file(
        &etc.join("resolv.conf"),
        // boxd's resolver address (boxd_net::synth::RESOLVER_V4/V6): every
        // DNS packet a box sends is redirected to boxd's resolver anyway.
        "# Written by boxd: names are resolved by boxd's resolver.\n\
         nameserver 198.18.0.53\nnameserver fd42:b0c5:ff::53\n",
    )?;
    write_file(
        &etc.join("nsswitch.conf"),
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n\
         protocols: files\nservices: files\nethers: files\nrpc: files\n",
    )?;
    for rel in HOST_ETC_ALLOW {
        let src = Path::new("/etc").join(rel);
        if std::fs::symlink_metadata(&src).is_ok() {
            copy_tree(&src, &etc.join(rel))?;
        }
    }
    Ok(())
}

/// Copies a file, symlink or folder (symlinks are copied as symlinks).
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let ctx = || format!("copy {} into the host image", src.display());
    let md = std::fs::symlink_metadata(src).map_err(RuntimeError::io(ctx()))?;
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).map_err(RuntimeError::io(ctx()))?;
    }
    if md.file_type().is_symlink() {
        let target = std::fs::read_link(src).map_err(RuntimeError::io(ctx()))?;
        symlink(target, dst).map_err(RuntimeError::io(ctx()))
    } else if md.is_dir() {
        std::fs::create_dir_all(dst).map_err(RuntimeError::io(ctx()))?;
        for entry in std::fs::read_dir(src).map_err(RuntimeError::io(ctx()))? {
            let entry = entry.map_err(RuntimeError::io(ctx()))?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(src, dst)
            .map(|_| ())
            .map_err(RuntimeError::io(ctx()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_image_has_generated_etc_and_no_host_secrets() {
        let dir = std::env::temp_dir().join(format!("boxd-image-test-{}", std::process::id()));
        let img = ensure_host_image(&dir).unwrap();
        let base = &img.layers[0].path;
        assert_eq!(img.layers[0].target, "/");
        assert!(img.layers.iter().any(|l| l.target == "/usr"));
        let passwd = std::fs::read_to_string(base.join("etc/passwd")).unwrap();
        assert!(passwd.contains("\nbox:x:1000:1000:box:/workspace/home:"));
        assert!(passwd.contains("\nboxuser:x:1000:1000:boxuser:/home/boxuser:"));
        let home = std::fs::metadata(base.join("home/boxuser")).unwrap();
        assert!(home.is_dir());
        for secret in ["shadow", "gshadow", "ssh", "machine-id", "sudoers"] {
            assert!(!base.join("etc").join(secret).exists(), "{secret} leaked");
        }
        // A second call reuses the image.
        assert_eq!(ensure_host_image(&dir).unwrap(), img);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_runtime_names_the_choices() {
        let err = resolve_runtime("cobol", Path::new("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains("cobol"));
        assert!(err.to_string().contains("host"));
        assert_eq!(
            resolve_runtime("host", Path::new("/nonexistent")).unwrap(),
            "host"
        );
    }
}
