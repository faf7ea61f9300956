//! The suite's own rule: a test that cannot run here says why and, when
//! the suite must run everything (`BOXD_TEST_STRICT=1`, as `.ci/run` sets,
//! or `CI=true`), fails instead of reporting `ok`.

#[path = "common/skip.rs"]
mod skip;

use std::process::{Command, Output};

/// Run only by the test below, in a child process (ignored otherwise, so
/// a strict run of the whole suite does not fail on it).
#[test]
#[ignore = "run by a_skipped_test_fails_under_boxd_test_strict_or_ci"]
fn always_skips() {
    skip::skip("this test always skips");
}

/// Runs `always_skips` in a child test process with `env` set.
fn run_always_skips(env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args(["--ignored", "--exact", "always_skips", "--nocapture"])
        .env_remove("BOXD_TEST_STRICT")
        .env_remove("CI");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the test binary")
}

#[test]
fn a_skipped_test_fails_under_boxd_test_strict_or_ci() {
    let relaxed = run_always_skips(&[]);
    let said = String::from_utf8_lossy(&relaxed.stderr).into_owned();
    assert!(
        relaxed.status.success(),
        "a skip on a developer machine is ok: {said}"
    );
    assert!(said.contains("SKIPPED: this test always skips"), "{said}");
    for env in [("BOXD_TEST_STRICT", "1"), ("CI", "true")] {
        let strict = run_always_skips(&[env]);
        let said = String::from_utf8_lossy(&strict.stderr).into_owned();
        assert!(!strict.status.success(), "{env:?}: a skip passed: {said}");
        assert!(
            said.contains("SKIPPED: this test always skips"),
            "{env:?}: {said}"
        );
    }
}
