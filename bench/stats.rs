#![allow(dead_code)] // each benchmark uses a part of it
//! Statistics and formatting shared by every benchmark in `bench/`:
//! median and p99 of samples, durations for tables. Pure functions; no I/O.

use std::time::Duration;

/// Median and 99th percentile of a set of samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub n: usize,
    pub median: Duration,
    pub p99: Duration,
}

/// Median (upper median for an even count, as `bench/runtime.rs`) and p99
/// (nearest rank).
pub fn stats(samples: &[Duration]) -> Option<Stats> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort();
    let p99 = v[((v.len() * 99).div_ceil(100)).saturating_sub(1)];
    Some(Stats {
        n: v.len(),
        median: v[v.len() / 2],
        p99,
    })
}

/// A duration for a table: milliseconds, three significant decimals below
/// 100 ms, seconds from 10 s.
pub fn fmt_dur(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 10_000.0 {
        format!("{:.2} s", ms / 1e3)
    } else if ms >= 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.3} ms")
    }
}
