//! The files every box's root gets from boxd, whatever its image: the box
//! users (`box` and `boxuser`, one uid), their homes, `/workspace`, and the
//! resolver and hosts files that point at boxd's resolver. They are the
//! top layer of every built or imported image (the `host` image has them
//! in its base), written over what the image has, and never anything of
//! the host's.

use crate::error::{ImageError, Result};
use crate::BOX_UID;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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

/// Writes the top layer of an image whose lower layers are `lowers`
/// (top-most first, overlayfs format): boxd's files over the image's own
/// `passwd`/`group`, with each directory it creates that the image has
/// (`/`, `/etc`, `/home`) keeping the image's mode and owner (overlayfs
/// shows the top-most layer's directory attributes).
pub fn write_top_layer(root: &Path, lowers: &[PathBuf]) -> Result<()> {
    let find = |rel: &str| {
        lowers
            .iter()
            .map(|l| l.join(rel))
            .find(|p| p.symlink_metadata().is_ok())
    };
    let read = |rel: &str| {
        find(rel)
            .and_then(|p| std::fs::read_to_string(p).ok())
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
            .and_then(|p| std::fs::metadata(p).ok())
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
}
