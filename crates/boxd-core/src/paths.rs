//! Paths inside a box as callers give them: relative to
//! `/workspace/home` unless absolute, cleaned of `.` and `..`.
//!
//! Owns the one rule for what a valid box path is. A path that would climb
//! above the box's root, or contains a NUL byte, is refused (invalid argument)
//! naming it; never resolved against the host.

use crate::error::{CoreError, CoreResult};
use boxd_agent::DEFAULT_CWD as WORKSPACE;

/// Cleans `path` (absolute, or relative to `/workspace/home`).
pub fn box_path(path: &str) -> CoreResult<String> {
    if path.is_empty() {
        return Err(CoreError::invalid("path must not be empty"));
    }
    if path.contains('\0') {
        return Err(CoreError::invalid("path contains a NUL byte"));
    }
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{WORKSPACE}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in full.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(CoreError::invalid(format!(
                        "path {path:?} leaves the box's root folder"
                    )));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The working directory for `folder` (absent or empty: `/workspace/home`).
pub fn folder(folder: Option<&str>) -> CoreResult<String> {
    match folder {
        None | Some("") => Ok(WORKSPACE.to_string()),
        Some(f) => box_path(f),
    }
}

/// The parent folder of a cleaned path (`/` for `/`).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// `name` in the clean folder `dir`.
pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_under_the_workspace_and_cleaned() {
        assert_eq!(box_path("a.txt").unwrap(), "/workspace/home/a.txt");
        assert_eq!(
            box_path("/workspace/home/./a/../b").unwrap(),
            "/workspace/home/b"
        );
        assert_eq!(box_path("/tmp//x/").unwrap(), "/tmp/x");
        assert_eq!(box_path("../..").unwrap(), "/");
        assert_eq!(folder(None).unwrap(), "/workspace/home");
        assert_eq!(folder(Some("src/app")).unwrap(), "/workspace/home/src/app");
    }

    #[test]
    fn escaping_the_root_or_nul_is_refused() {
        assert!(box_path("/../etc").is_err());
        assert!(box_path("../../../..").is_err());
        assert!(box_path("a\0b").is_err());
        assert!(box_path("").is_err());
    }

    #[test]
    fn parent_of_paths() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
    }
}
