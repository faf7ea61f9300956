//! The zero-setup `host` image: the host's `/usr` (and `/bin`, `/lib*`
//! where they are not symlinks into it) read-only, over a generated base
//! layer with a fresh `/etc`. The base is written here from scratch plus an
//! allow-list of public host files — the host's own `/etc` secrets
//! (shadow, ssh keys, machine-id, …) never reach a box.

use crate::boxfiles::{mkdir_mode, write_file};
use crate::error::{ImageError, Result};
use crate::store::{LayerRef, Manifest, Store};
use crate::Image;
use std::os::unix::fs::symlink;
use std::path::Path;

/// The default image's name.
pub const HOST_IMAGE: &str = "host";
/// Bumped whenever the generated base layer changes, so it is rebuilt.
const HOST_IMAGE_VERSION: u32 = 4;

/// The `host` image, built (into `store`) on first use or when this
/// version generates a different one.
pub fn ensure_host_image(store: &Store) -> Result<Image> {
    let key = format!("host-v{HOST_IMAGE_VERSION}");
    if let Some(digest) = store.cached(&key)? {
        if store.tagged(HOST_IMAGE)?.as_deref() == Some(digest.as_str()) {
            return store.image(&digest);
        }
    }
    let staging = store.stage("host")?;
    let mut host_layers = Vec::new();
    build_host_base(staging.path(), &mut host_layers)?;
    let base = store.commit_layer(staging, "host: generated base")?;
    let mut layers = vec![LayerRef::Stored {
        digest: base.digest,
        target: "/".into(),
    }];
    layers.extend(host_layers);
    let m = Manifest::new(HOST_IMAGE, layers, Vec::new(), "host");
    let digest = store.put_manifest(&m)?;
    store.tag(HOST_IMAGE, &digest)?;
    store.cache(&key, &digest)?;
    store.image(&digest)
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

/// Writes the base layer of the host image into `base`, and adds to
/// `host_layers` the host directories it needs beside `/usr`.
fn build_host_base(base: &Path, host_layers: &mut Vec<LayerRef>) -> Result<()> {
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
    host_layers.push(LayerRef::Host {
        path: "/usr".into(),
        target: "/usr".into(),
    });
    // bin, sbin, lib*: symlinks into /usr on merged-usr hosts, else layers.
    for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() => {
                let target = std::fs::read_link(&host)
                    .map_err(ImageError::io(format!("readlink {}", host.display())))?;
                symlink(target, base.join(name))
                    .map_err(ImageError::io(format!("symlink {name}")))?;
            }
            Ok(md) if md.is_dir() => {
                mkdir_mode(&base.join(name), 0o755, None)?;
                host_layers.push(LayerRef::Host {
                    path: host.clone(),
                    target: format!("/{name}"),
                });
            }
            _ => {}
        }
    }
    let etc = base.join("etc");
    crate::boxfiles::write(
        base,
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "root:x:0:\ntty:x:5:\nusers:x:100:\nnogroup:x:65534:\n",
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
    let md = std::fs::symlink_metadata(src).map_err(ImageError::io(ctx()))?;
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).map_err(ImageError::io(ctx()))?;
    }
    if md.file_type().is_symlink() {
        let target = std::fs::read_link(src).map_err(ImageError::io(ctx()))?;
        symlink(target, dst).map_err(ImageError::io(ctx()))
    } else if md.is_dir() {
        std::fs::create_dir_all(dst).map_err(ImageError::io(ctx()))?;
        for entry in std::fs::read_dir(src).map_err(ImageError::io(ctx()))? {
            let entry = entry.map_err(ImageError::io(ctx()))?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(src, dst)
            .map(|_| ())
            .map_err(ImageError::io(ctx()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_image_has_generated_etc_and_no_host_secrets() {
        let dir = std::env::temp_dir().join(format!("boxd-image-test-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        let img = ensure_host_image(&store).unwrap();
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
        assert_eq!(ensure_host_image(&store).unwrap(), img);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
