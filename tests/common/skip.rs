//! The one way a test says it cannot run here: every skip in the
//! workspace's tests goes through [`skip`], which names its reason and,
//! when the suite must run everything, fails instead of reporting `ok`.
//!
//! Included by path wherever tests live (`tests/common`, the network
//! crate's tests and unit tests), so there is one definition. This module
//! never decides *whether* to skip; the caller does, and says why.
#![allow(dead_code)]

/// Whether every test must run: `BOXD_TEST_STRICT=1` (`.ci/run` sets it)
/// or `CI=true`. Then a test that cannot run here fails instead of skipping.
pub fn strict() -> bool {
    std::env::var("BOXD_TEST_STRICT").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Says `SKIPPED: <reason>` on stderr and returns, so the caller can return
/// (or leave out the part it cannot run) — or, under [`strict`], panics with
/// that reason, so the suite cannot pass without running the test.
pub fn skip(reason: &str) {
    eprintln!("SKIPPED: {reason}");
    if strict() {
        panic!(
            "SKIPPED: {reason} (BOXD_TEST_STRICT=1 or CI=true make a skipped test a failed one)"
        );
    }
}
