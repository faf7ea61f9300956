//! Built runtime images for tests: one shared image store per machine
//! (`$BOXD_TEST_IMAGES`, default `<tmp>/boxd-test-images`), filled by the
//! real `boxd image build` once — later calls reuse every cached layer in
//! a fraction of a second — and hard-link copied into each test daemon's
//! data directory, so every daemon has a store of its own (an image
//! removed by one test is not removed under another) without copying
//! hundreds of MiB.
//!
//! Builds need root, `mmdebstrap` and the Debian mirror; without them a
//! test skips loudly (and fails under `BOXD_TEST_STRICT=1`).

use super::daemon::BOXD;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the shared store lives (its data dir; the store is `images/`).
pub fn shared_dir() -> PathBuf {
    std::env::var_os("BOXD_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("boxd-test-images"))
}

/// Makes sure the shared store has `names` built; `None` (after saying
/// why) when images cannot be built here.
pub fn built(names: &[&str]) -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        super::skip("building images needs root (mmdebstrap in root mode)");
        return None;
    }
    if Command::new("mmdebstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        super::skip("building images needs mmdebstrap: apt-get install mmdebstrap");
        return None;
    }
    let dir = shared_dir();
    for name in names {
        let out = image_command(&dir)
            .args(["build", name])
            .output()
            .expect("run boxd image build");
        assert!(
            out.status.success(),
            "boxd image build {name} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(dir)
}

/// `boxd --data-dir DATA_DIR image`, for the caller's subcommand.
pub fn image_command(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BOXD);
    cmd.arg("--data-dir").arg(data_dir).arg("image");
    cmd
}

/// What `boxd image ls --json` lists for `data_dir`.
pub fn listed(data_dir: &Path) -> serde_json::Value {
    let out = image_command(data_dir)
        .args(["ls", "--json"])
        .output()
        .expect("boxd image ls");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// Hard-links the shared store's images into `data_dir/images` (not its
/// locks: each store locks for itself).
pub fn link_into(shared: &Path, data_dir: &Path) {
    let to = data_dir.join("images");
    std::fs::create_dir_all(&to).expect("create the image store");
    for sub in ["layers", "manifests", "tags", "cache"] {
        let status = Command::new("cp")
            .args(["-a", "--link"])
            .arg(shared.join("images").join(sub))
            .arg(&to)
            .status()
            .expect("run cp");
        assert!(status.success(), "cp -al {sub} failed");
    }
}

/// The image names `GET /v2/images` lists.
pub fn names(d: &super::daemon::TestDaemon) -> Vec<String> {
    let (status, v) = d.get("/v2/images");
    assert_eq!(status, 200, "{v}");
    v["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_string())
        .collect()
}

/// Fails the test if the store of `data_dir` has staging left behind.
pub fn assert_no_staging(data_dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(data_dir.join("images/tmp"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}
