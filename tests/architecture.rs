//! The crate boundaries of docs/ARCHITECTURE.md, checked: the box service
//! (`boxd-core`) depends on no HTTP, RPC or wire-format crate, so every
//! protocol is a front end over it.

use std::process::Command;

/// Crates a protocol-free core must not pull in (directly or not).
const FORBIDDEN: [&str; 9] = [
    "axum",
    "hyper",
    "http",
    "http-body",
    "tower",
    "tower-http",
    "utoipa",
    "boxd-api",
    "boxd-server",
];

#[test]
fn the_core_depends_on_no_http_or_wire_format_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "boxd-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.contains(&"boxd-core"), "{tree}");
    assert!(names.contains(&"boxd-runtime"), "{tree}");
    let found: Vec<&&str> = FORBIDDEN.iter().filter(|f| names.contains(f)).collect();
    assert!(found.is_empty(), "boxd-core depends on {found:?}:\n{tree}");
}
