//! The files every box's root gets from boxd, whatever its image: the box
//! users (`box` and `boxuser`, one uid), their homes, `/workspace`, the
//! resolver and hosts files that point at boxd's resolver, and real
//! directories where the runtime mounts `/proc`, `/sys`, `/dev` and `/tmp`
//! (an image made `FROM scratch` has none; in the top layer they also hide
//! an image's symlink of that name). They are the
//! top layer of every built or imported image (the `host` image has them
//! in its base), written over what the image has, and never anything of
//! the host's.

use crate::error::{ImageError, Result};
use crate::BOX_UID;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub(crate) fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(ImageError::io(format!("create {}", p.display())))?;
    }
    std::fs::write(path, text).map_err(ImageError::io(format!("write {}", path.display())))
}

pub(crate) fn mkdir_mode(path: &Path, mode: u32, owner: Option<u32>) -> Result<()> {
    std::fs::create_dir_all(path).map_err(ImageError::io(format!("create {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(ImageError::io(format!("chmod {}", path.display())))?;
    if let Some(id) = owner {
        std::os::unix::fs::chown(path, Some(id), Some(id))
            .map_err(ImageError::io(format!("chown {}", path.display())))?;
    }
    Ok(())
}

/// Writes boxd's files into `root` (a new layer's root, or the host
/// image's base), given the image's own `passwd` and `group` text: the box
/// users are put right after the first line (root), so their uid's name is
/// `box`; entries of those names the image had are replaced.
pub(crate) fn write(root: &Path, passwd: &str, group: &str) -> Result<()> {
    let etc = root.join("etc");
    let users = format!(
        "box:x:{BOX_UID}:{BOX_UID}:box:/workspace/home:/bin/bash\n\
         boxuser:x:{BOX_UID}:{BOX_UID}:boxuser:/home/boxuser:/bin/bash\n"
    );
    write_file(
        &etc.join("passwd"),
        &with_entries(passwd, &["box", "boxuser"], &users),
    )?;
    let groups = format!("box:x:{BOX_UID}:boxuser\n");
    write_file(&etc.join("group"), &with_entries(group, &["box"], &groups))?;
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
    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
    ] {
        mkdir_mode(&root.join(dir), mode, None)?;
    }
    mkdir_mode(&root.join("workspace"), 0o755, None)?;
    mkdir_mode(&root.join("workspace/home"), 0o755, Some(BOX_UID))?;
    mkdir_mode(&root.join("home/boxuser"), 0o755, Some(BOX_UID))?;
    Ok(())
}

/// `text` (an `/etc/passwd`-style file) without the entries named in
/// `names`, with `entries` after its first line.
fn with_entries(text: &str, names: &[&str], entries: &str) -> String {
    let mut out = String::new();
    let mut placed = false;
    for line in text.lines() {
        let name = line.split(':').next().unwrap_or("");
        if names.contains(&name) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if !placed {
            out.push_str(entries);
            placed = true;
        }
    }
    if !placed {
        out.push_str(entries);
    }
    out
}

/// Where `rel` is in the stack `lowers` (top-most first), as overlayfs
/// would show it: the first layer that has it, unless a layer above hides
/// it (a whiteout, an opaque directory, a non-directory on the way). A
/// symlink of the image's, on the way or at `rel`, is never followed: it
/// points into the box's root, not the host's (an imported image's
/// `etc/passwd` may well be a link to the host's `/etc/shadow`), so such a
/// path counts as absent.
fn find_in_layers(lowers: &[PathBuf], rel: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    'layers: for layer in lowers {
        let mut cur = layer.clone();
        if parts.is_empty() {
            return Some(cur);
        }
        for (i, part) in parts.iter().enumerate() {
            cur.push(part);
            let md = match std::fs::symlink_metadata(&cur) {
                Ok(md) => md,
                Err(_) => {
                    // Missing here: an opaque directory above hides the rest.
                    let parent = cur.parent().map(Path::to_path_buf).unwrap_or_default();
                    if i > 0 && is_opaque(&parent) {
                        return None;
                    }
                    continue 'layers;
                }
            };
            let ft = md.file_type();
            if ft.is_char_device() && md.rdev() == 0 {
                return None;
            }
            if ft.is_symlink() {
                tracing::debug!(path = %cur.display(), "not following a symlink of the image");
                return None;
            }
            let last = i + 1 == parts.len();
            if last {
                return Some(cur);
            }
            if !ft.is_dir() {
                return None;
            }
        }
    }
    None
}

/// Whether `dir` carries overlayfs's opaque mark.
fn is_opaque(dir: &Path) -> bool {
    crate::digest::xattrs(dir)
        .map(|x| {
            x.iter()
                .any(|(n, v)| n == b"trusted.overlay.opaque" && v == b"y")
        })
        .unwrap_or(false)
}

/// Reads a text file of the image found by [`find_in_layers`] (without
/// following a symlink; at most 1 MiB).
fn read_image_file(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Writes the top layer of an image whose lower layers are `lowers`
/// (top-most first, overlayfs format): boxd's files over the image's own
/// `passwd`/`group`, with each directory it creates that the image has
/// (`/`, `/etc`, `/home`) keeping the image's mode and owner (overlayfs
/// shows the top-most layer's directory attributes). What it reads of the
/// lower layers is looked up as overlayfs would, never through a symlink
/// of the image's ([`find_in_layers`]).
pub fn write_top_layer(root: &Path, lowers: &[PathBuf]) -> Result<()> {
    let find = |rel: &str| find_in_layers(lowers, rel);
    let read = |rel: &str| {
        find(rel)
            .and_then(|p| read_image_file(&p))
            .unwrap_or_default()
    };
    let passwd = read("etc/passwd");
    let group = read("etc/group");
    let passwd = if passwd.is_empty() {
        "root:x:0:0:root:/root:/bin/sh\n".to_string()
    } else {
        passwd
    };
    write(root, &passwd, &group)?;
    for rel in ["", "etc", "home", "workspace"] {
        let Some(src) = find(rel) else { continue };
        let Ok(md) = std::fs::symlink_metadata(&src) else {
            continue;
        };
        if !md.is_dir() {
            continue;
        }
        let dst = root.join(rel);
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(ImageError::io(format!("chmod {}", dst.display())))?;
        std::os::unix::fs::lchown(&dst, Some(md.uid()), Some(md.gid()))
            .map_err(ImageError::io(format!("chown {}", dst.display())))?;
    }
    // Files keep the image's modes where it had them (`/etc/passwd` 0644).
    for rel in ["etc/passwd", "etc/group", "etc/hosts", "etc/resolv.conf"] {
        let mode = find(rel)
            .and_then(|p| std::fs::symlink_metadata(p).ok())
            .filter(|m| m.is_file())
            .map(|m| m.mode() & 0o777)
            .unwrap_or(0o644);
        let dst = root.join(rel);
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))
            .map_err(ImageError::io(format!("chmod {}", dst.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_box_users_come_right_after_root_and_replace_their_namesakes() {
        let out = with_entries(
            "root:x:0:0::/root:/bin/sh\nbox:x:5:5::/:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n",
            &["box", "boxuser"],
            "box:x:1000:1000::/workspace/home:/bin/bash\n",
        );
        assert_eq!(
            out,
            "root:x:0:0::/root:/bin/sh\nbox:x:1000:1000::/workspace/home:/bin/bash\n\
             node:x:1000:1000::/home/node:/bin/sh\n"
        );
        assert_eq!(with_entries("", &["box"], "box:x\n"), "box:x\n");
    }

    #[test]
    fn the_images_files_are_read_as_overlayfs_shows_them_never_through_a_symlink() {
        let d = std::env::temp_dir().join(format!("boxd-boxfiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let (top, mid, low) = (d.join("top"), d.join("mid"), d.join("low"));
        for l in [&top, &mid, &low] {
            std::fs::create_dir_all(l.join("etc")).unwrap();
        }
        let secret = d.join("host-shadow");
        std::fs::write(&secret, "hostsecret:x:0:0::/:/bin/sh\n").unwrap();
        std::fs::write(
            low.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nlow:x:5:5::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(low.join("etc/group"), "root:x:0:\n").unwrap();
        let lowers = vec![top.clone(), mid.clone(), low.clone()];
        assert_eq!(
            find_in_layers(&lowers, "etc/passwd"),
            Some(low.join("etc/passwd"))
        );
        // The image's own passwd is a link to a file of the host: absent,
        // and the host's file is never read.
        std::os::unix::fs::symlink(&secret, top.join("etc/passwd")).unwrap();
        assert_eq!(find_in_layers(&lowers, "etc/passwd"), None);
        let out = d.join("out");
        std::fs::create_dir(&out).unwrap();
        write_top_layer(&out, &lowers).unwrap();
        let passwd = std::fs::read_to_string(out.join("etc/passwd")).unwrap();
        assert!(!passwd.contains("hostsecret"), "{passwd}");
        assert!(
            passwd.starts_with("root:x:0:0:root:/root:/bin/sh\nbox:x:1000"),
            "{passwd}"
        );
        // So is a directory symlink on the way.
        std::fs::remove_file(top.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(&d, top.join("var")).unwrap();
        assert_eq!(find_in_layers(&lowers, "var/host-shadow"), None);
        // A non-directory above hides what is below.
        std::fs::write(mid.join("usr"), "").unwrap();
        std::fs::create_dir_all(low.join("usr/x")).unwrap();
        assert_eq!(find_in_layers(&lowers, "usr/x"), None);
        if unsafe { libc::geteuid() } == 0 {
            // A whiteout and an opaque directory hide what is below.
            let c = std::ffi::CString::new(mid.join("etc/group").as_os_str().as_encoded_bytes())
                .unwrap();
            assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) }, 0);
            assert_eq!(find_in_layers(&lowers, "etc/group"), None);
            let e = std::ffi::CString::new(mid.join("etc").as_os_str().as_encoded_bytes()).unwrap();
            let rc = unsafe {
                libc::lsetxattr(
                    e.as_ptr(),
                    c"trusted.overlay.opaque".as_ptr(),
                    b"y".as_ptr().cast(),
                    1,
                    0,
                )
            };
            assert_eq!(rc, 0);
            assert_eq!(find_in_layers(&lowers, "etc/passwd"), None);
        } else {
            crate::test_skip::skip("not root: cannot make whiteouts or trusted xattrs");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
