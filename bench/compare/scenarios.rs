//! The measured scenarios: (1) start an isolated environment and run
//! `true`, sequential and concurrent; (2) exec `true` in a running
//! environment; (3) idle density. Each interleaves boxd (scenarios 1 and 2:
//! both the library and a `boxd serve` over HTTP, the daemon living only
//! for its scenario) with its peers
//! (A B C, C A B, B C A …: every iteration in a new order, so no peer
//! always follows the same one), keeps every environment it starts in a guard,
//! and turns the samples into a [`Table`]. A peer that cannot run is a
//! "skipped: why" row, never a silent gap.

use crate::boxd::{Boxd, Boxes};
use crate::common::{
    fmt_bytes, fmt_dur, http_vs_library, median_f64, memory_ratio, settle, speed_ratio, stats,
    Stats,
};
use crate::mem;
use crate::peers::{self, IdleGuard};
use crate::report::Table;
use crate::serve::{self, Served};
pub use crate::snapshot::SnapSize;
use crate::workspace::Workspace;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// How much of everything to run.
pub struct Plan {
    pub warmup: usize,
    pub seq_runs: usize,
    pub concurrency: usize,
    pub conc_rounds: usize,
    pub exec_runs: usize,
    pub density_n: usize,
    pub density_rounds: usize,
    /// Larger densities tried (full run only) if memory and time allow.
    pub density_big: Vec<usize>,
    /// No larger density starts that would end after this: the time left
    /// after it is what scenarios 4 and 5 need.
    pub density_by: Instant,
    /// Scenario 5: the change sizes and repetitions.
    pub snap_sizes: Vec<SnapSize>,
    /// Scenario 5: boxes / containers forked from one snapshot at once.
    pub fork_n: usize,
    /// Scenario 5's own time budget (no new repetition starts after it).
    pub snap_budget: Duration,
    /// Pause between scenarios (the kernel tears namespaces down lazily).
    pub settle: Duration,
    /// No new measurement starts after this (the full run's budget).
    pub deadline: Instant,
    /// No round of scenario 5 starts that would end after this (the whole
    /// run's bound).
    pub end_by: Instant,
    /// `--only`: the peers to measure besides boxd (None: all).
    pub only: Option<Vec<String>>,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        let start = Instant::now();
        if quick {
            Plan {
                warmup: 1,
                seq_runs: 10,
                concurrency: 10,
                conc_rounds: 1,
                exec_runs: 20,
                density_n: 20,
                density_rounds: 1,
                density_big: Vec::new(),
                density_by: start,
                snap_sizes: vec![SnapSize::new(1, 1, 3), SnapSize::new(100, 10, 2)],
                fork_n: 5,
                snap_budget: Duration::from_secs(150),
                settle: Duration::from_secs(1),
                deadline: start + Duration::from_secs(150),
                end_by: start + Duration::from_secs(5 * 60),
                only: None,
            }
        } else {
            Plan {
                warmup: 3,
                seq_runs: 100,
                concurrency: 50,
                conc_rounds: 3,
                exec_runs: 200,
                density_n: 100,
                density_rounds: 3,
                density_big: vec![500, 1000],
                // Scenarios 4 and 5 took ~280 s of the 2026-11-23 run.
                density_by: start + Duration::from_secs(870 - 300),
                snap_sizes: vec![
                    SnapSize::new(1, 1, 10),
                    SnapSize::new(100, 10, 8),
                    SnapSize::new(1024, 16, 3),
                ],
                fork_n: 10,
                snap_budget: Duration::from_secs(330),
                settle: Duration::from_secs(10),
                deadline: start + Duration::from_secs(13 * 60),
                end_by: start + Duration::from_secs(870),
                only: None,
            }
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} sequential starts after {} warm-up each, {} concurrent × {} round(s), {} execs, \
             idle density N={} × {} round(s){}, snapshot / restore / fork of {} (fork of {})",
            self.seq_runs,
            self.warmup,
            self.concurrency,
            self.conc_rounds,
            self.exec_runs,
            self.density_n,
            self.density_rounds,
            if self.density_big.is_empty() {
                String::new()
            } else {
                format!(
                    " (then N={} once where memory and the time budget allow)",
                    self.density_big
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            self.snap_sizes
                .iter()
                .map(|s| format!("{} × {}", s.label(), s.reps))
                .collect::<Vec<_>>()
                .join(", "),
            self.fork_n,
        )
    }

    /// Why peer `key` is left out by `--only`, if it is (boxd never is).
    pub fn left_out(&self, key: &str) -> Option<String> {
        let only = self.only.as_ref()?;
        (key != "boxd" && !only.iter().any(|o| o == key))
            .then(|| "not selected (--only)".to_string())
    }

    fn out_of_time(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

pub struct Cx<'a> {
    pub ws: &'a Workspace,
    pub boxd: &'a Boxd,
    pub plan: &'a Plan,
}

/// `items` in iteration `i`'s order: a shuffle seeded by `i` (the same in
/// every run). Rotating one fixed order would keep neighbours together (X
/// would follow Y in almost every iteration), and what ran just before
/// moves a start's time (the kernel finishes tearing namespaces down
/// lazily).
pub fn shuffled<T: Copy>(items: &[T], i: usize) -> Vec<T> {
    let mut v = items.to_vec();
    // splitmix64 of the iteration, then Fisher–Yates.
    let mut state = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for k in (1..v.len()).rev() {
        v.swap(k, (next() % (k as u64 + 1)) as usize);
    }
    v
}

pub fn dash() -> String {
    "—".into()
}

// ---------------------------------------------------------------------------
// Scenario 1: start + run `true`.

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Starter {
    Boxd,
    BoxdHttp,
    Runc,
    Crun,
    CrunWrapper,
    Bwrap,
    Podman,
    Floor,
}

impl Starter {
    fn name(self) -> &'static str {
        match self {
            Starter::Boxd => "boxd library",
            Starter::BoxdHttp => "boxd over HTTP (`boxd serve`)",
            Starter::Runc => "runc run",
            Starter::Crun => "crun run",
            Starter::CrunWrapper => "crun's wrapper alone",
            Starter::Bwrap => "bwrap",
            Starter::Podman => "podman run --rm --rootfs",
            Starter::Floor => "raw floor",
        }
    }

    fn what(self, hybrid: bool) -> &'static str {
        match self {
            Starter::Boxd => "create → `true` exits → destroy returns",
            Starter::BoxdHttp => "POST /v2/box → POST …/exec of `true` returns → DELETE returns",
            Starter::Runc => "`runc run` until it exits (container deleted)",
            Starter::Crun if hybrid => {
                "private mount ns without cgroup2 + `crun run` until it exits"
            }
            Starter::Crun => "`crun run` until it exits (container deleted)",
            Starter::CrunWrapper => "private mount ns without cgroup2 + exec `true`",
            Starter::Bwrap => "`bwrap … true` until it exits",
            Starter::Podman => "`podman run --rm` until it exits (container removed)",
            Starter::Floor => "clone(7 namespaces) + exec `true` + wait",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Starter::Boxd | Starter::BoxdHttp => "boxd",
            Starter::Runc => "runc",
            Starter::Crun | Starter::CrunWrapper => "crun",
            Starter::Bwrap => "bwrap",
            Starter::Podman => "podman",
            Starter::Floor => "floor",
        }
    }

    /// Why this starter cannot run here, if it cannot.
    fn unavailable(self, ws: &Workspace, plan: &Plan) -> Option<String> {
        if let Some(why) = plan.left_out(self.key()) {
            return Some(why);
        }
        let t = &ws.tools;
        match self {
            Starter::Runc => t.runc.clone().err(),
            Starter::Crun => t.crun.clone().err(),
            Starter::Bwrap => t.bwrap.clone().err(),
            Starter::Podman => t.podman.clone().err(),
            _ => None,
        }
    }

    /// What one thread needs to start this kind of environment (made
    /// before anything is timed).
    fn client(self, served: &Result<Served>) -> Result<Client> {
        Ok(match self {
            Starter::Boxd => Client::Tokio(Boxd::tokio()?),
            Starter::BoxdHttp => {
                Client::Http(served.as_ref().map_err(|e| anyhow!("{e:#}"))?.client()?)
            }
            _ => Client::None,
        })
    }

    /// One start + run; returns (the timed span, boxd's create → exit).
    fn once(self, cx: &Cx, client: &mut Client) -> Result<(Duration, Option<Duration>)> {
        let ws = cx.ws;
        Ok(match (self, client) {
            (Starter::Boxd, Client::Tokio(tokio)) => {
                let c = cx.boxd.cycle(tokio)?;
                (c.total, Some(c.to_exit))
            }
            (Starter::BoxdHttp, Client::Http(http)) => {
                let c = http.cycle()?;
                (c.total, Some(c.to_exit))
            }
            (Starter::Boxd | Starter::BoxdHttp, _) => bail!("{}: no client", self.name()),
            (Starter::Runc, _) => (peers::runc_run_true(ws)?, None),
            (Starter::Crun, _) => (peers::crun_run_true(ws)?, None),
            (Starter::CrunWrapper, _) => (peers::crun_wrapper_true()?, None),
            (Starter::Bwrap, _) => (peers::bwrap_run_true(ws)?, None),
            (Starter::Podman, _) => (peers::podman_run_true(ws)?, None),
            (Starter::Floor, _) => (peers::floor_true()?, None),
        })
    }
}

/// A thread's means of starting boxd environments: a tokio runtime for
/// the library's agent calls, a keep-alive connection to `boxd serve`.
enum Client {
    None,
    Tokio(tokio::runtime::Runtime),
    Http(serve::Client),
}

/// Samples and state of one starter across the scenario.
#[derive(Default)]
struct Track {
    samples: Vec<Duration>,
    to_exit: Vec<Duration>,
    failures: usize,
    /// Why it stopped being measured, if it did.
    dropped: Option<String>,
}

const MAX_FAILURES: usize = 3;

impl Track {
    fn record(&mut self, r: Result<(Duration, Option<Duration>)>) {
        match r {
            Ok((d, e)) => {
                self.samples.push(d);
                self.to_exit.extend(e);
            }
            Err(e) => {
                self.failures += 1;
                eprintln!("compare: a run failed: {e:#}");
                if self.failures >= MAX_FAILURES {
                    self.dropped = Some(format!("failed {MAX_FAILURES} times; last: {e:#}"));
                }
            }
        }
    }
}

pub fn start_and_run(cx: &Cx) -> Vec<Table> {
    let ws = cx.ws;
    let plan = cx.plan;
    let mut all = vec![
        Starter::Boxd,
        Starter::BoxdHttp,
        Starter::Runc,
        Starter::Crun,
        Starter::Bwrap,
        Starter::Podman,
        Starter::Floor,
    ];
    if ws.hybrid && ws.tools.crun.is_ok() {
        all.push(Starter::CrunWrapper);
    }
    println!("scenario 1: start an isolated environment and run `true`");
    // Lives until both tables of this scenario are measured.
    let served = Served::start();
    let mut tracks: BTreeMap<Starter, Track> = BTreeMap::new();
    let mut clients: BTreeMap<Starter, Client> = BTreeMap::new();
    // Warm-up doubles as the probe: a starter that fails here is skipped.
    for &s in &all {
        let mut t = Track::default();
        if let Some(why) = s.unavailable(ws, plan) {
            t.dropped = Some(why);
        } else {
            match s.client(&served) {
                Ok(mut c) => {
                    for _ in 0..plan.warmup {
                        if let Err(e) = s.once(cx, &mut c) {
                            t.dropped = Some(format!("{e:#}"));
                            break;
                        }
                    }
                    clients.insert(s, c);
                }
                Err(e) => t.dropped = Some(format!("{e:#}")),
            }
        }
        if let Some(why) = &t.dropped {
            println!("  SKIPPING {}: {why}", s.name());
        }
        tracks.insert(s, t);
    }
    let mut stopped_early = None;
    for i in 0..plan.seq_runs {
        if plan.out_of_time() {
            stopped_early = Some(i);
            break;
        }
        for s in shuffled(&all, i) {
            let t = tracks.entry(s).or_default();
            if t.dropped.is_some() {
                continue;
            }
            match clients.get_mut(&s) {
                Some(c) => t.record(s.once(cx, c)),
                None => t.dropped = Some("no client".into()),
            }
        }
        if (i + 1) % 25 == 0 {
            println!("  {} / {} sequential rounds", i + 1, plan.seq_runs);
        }
    }
    drop(clients);
    let mut seq = Table::new(
        format!(
            "1a. Start + run `true`, sequential ({} runs each, interleaved)",
            plan.seq_runs
        ),
        &[
            "environment",
            "what is timed",
            "median",
            "p99",
            "n",
            "boxd library (full cycle) vs it",
            "boxd library (create → exit) vs it",
        ],
    );
    let st = |s: Starter| tracks.get(&s).and_then(|t| stats(&t.samples));
    let to_exit = |s: Starter| tracks.get(&s).and_then(|t| stats(&t.to_exit));
    let boxd_total = st(Starter::Boxd);
    let boxd_exit = to_exit(Starter::Boxd);
    seq.boxd_measured = boxd_total.is_some() && st(Starter::BoxdHttp).is_some();
    for &s in &all {
        let t = &tracks[&s];
        match (st(s), &t.dropped) {
            (None, why) => seq.skipped(s.name(), why.as_deref().unwrap_or("no successful run")),
            (Some(x), why) => {
                if s == Starter::Boxd || s == Starter::BoxdHttp {
                    // The library's rows are the reference; the HTTP rows
                    // say what the daemon adds to the same span.
                    let vs_library = |lib: Option<Stats>, x: Stats| {
                        if s == Starter::Boxd {
                            dash()
                        } else {
                            lib.map(|l| http_vs_library(x.median, l.median))
                                .unwrap_or_else(dash)
                        }
                    };
                    seq.row(vec![
                        s.name().into(),
                        s.what(ws.hybrid).into(),
                        fmt_dur(x.median),
                        fmt_dur(x.p99),
                        x.n.to_string(),
                        vs_library(boxd_total, x),
                        dash(),
                    ]);
                    if let Some(e) = to_exit(s) {
                        seq.row(vec![
                            s.name().into(),
                            if s == Starter::Boxd {
                                "create → `true` exits (destroy not timed, as bench/runtime.rs)"
                            } else {
                                "POST /v2/box → POST …/exec of `true` returns (DELETE not timed)"
                            }
                            .into(),
                            fmt_dur(e.median),
                            fmt_dur(e.p99),
                            e.n.to_string(),
                            dash(),
                            vs_library(boxd_exit, e),
                        ]);
                    }
                } else {
                    let ratio = |b: Option<Stats>| {
                        b.map(|b| speed_ratio(b.median, x.median))
                            .unwrap_or_else(dash)
                    };
                    seq.row(vec![
                        s.name().into(),
                        s.what(ws.hybrid).into(),
                        fmt_dur(x.median),
                        fmt_dur(x.p99),
                        x.n.to_string(),
                        ratio(boxd_total),
                        ratio(boxd_exit),
                    ]);
                }
                if let Some(why) = why {
                    seq.notes
                        .push(format!("{} stopped being measured: {why}", s.name()));
                }
            }
        }
    }
    seq.notes.push(
        "boxd over HTTP: a `boxd serve` of this build with `[network] enabled = false` (so its \
         boxes have no network, as the library's and the peers' `--network none`), driven \
         over one keep-alive HTTP/1.1 connection opened before timing; its boxes have the \
         API's default size (memory and CPU limits). Its ratio cells compare it with the \
         library's row for the same span."
            .into(),
    );
    if let (Some(c), Some(w)) = (st(Starter::Crun), st(Starter::CrunWrapper)) {
        let net = c.median.saturating_sub(w.median);
        seq.notes.push(format!(
            "crun's row includes its wrapper (a private mount namespace with the unified \
             cgroup2 mount detached, needed on this hybrid host); crun's median minus the \
             wrapper's median is {}{}.",
            fmt_dur(net),
            boxd_total
                .map(|b| format!(" ({})", speed_ratio(b.median, net)))
                .unwrap_or_default()
        ));
    }
    if let Some(i) = stopped_early {
        seq.notes.push(format!(
            "stopped after {i} rounds: the run's time budget ran out"
        ));
    }
    let conc = concurrent(cx, &all, &tracks, &served);
    // The daemon goes (boxes, data dir, cgroups) before the scenario's
    // cleanup check.
    drop(served);
    vec![seq, conc]
}

/// One batch: `k` threads released together, each starting one
/// environment. Returns the wall time from the first thread's release to
/// the last one's end, and each environment's latency from its release.
/// Each thread makes its client (a boxd thread's tokio runtime or its own
/// connection to `boxd serve`) before the release: that is not timed.
fn batch(
    cx: &Cx,
    s: Starter,
    k: usize,
    served: &Result<Served>,
) -> Result<(Duration, Vec<Duration>)> {
    let barrier = Barrier::new(k + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..k)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let client = s.client(served);
                    barrier.wait();
                    let t = Instant::now();
                    let r = match client {
                        Err(e) => Err(e),
                        Ok(mut c) => s.once(cx, &mut c),
                    };
                    r.map(|_| (t, Instant::now()))
                })
            })
            .collect();
        barrier.wait();
        let mut lat = Vec::with_capacity(k);
        let mut span: Option<(Instant, Instant)> = None;
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok((start, end))) => {
                    lat.push(end - start);
                    let (a, b) = span.get_or_insert((start, end));
                    *a = (*a).min(start);
                    *b = (*b).max(end);
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(anyhow!("a start thread panicked"));
                }
            }
        }
        match (first_err, span) {
            (Some(e), _) => {
                Err(e.context(format!("{} of {k} concurrent starts failed", k - lat.len())))
            }
            (None, Some((a, b))) => Ok((b - a, lat)),
            (None, None) => Err(anyhow!("no concurrent start ran")),
        }
    })
}

fn concurrent(
    cx: &Cx,
    all: &[Starter],
    seq_tracks: &BTreeMap<Starter, Track>,
    served: &Result<Served>,
) -> Table {
    let plan = cx.plan;
    let k = plan.concurrency;
    // The wrapper baseline means nothing concurrently.
    let active: Vec<Starter> = all
        .iter()
        .copied()
        .filter(|s| *s != Starter::CrunWrapper)
        .collect();
    let mut walls: BTreeMap<Starter, Vec<Duration>> = BTreeMap::new();
    let mut lats: BTreeMap<Starter, Vec<Duration>> = BTreeMap::new();
    let mut dropped: BTreeMap<Starter, String> = active
        .iter()
        .filter_map(|s| seq_tracks[s].dropped.clone().map(|w| (*s, w)))
        .filter(|(s, _)| seq_tracks[s].samples.is_empty())
        .collect();
    println!(
        "scenario 1b: {k} concurrent starts × {} round(s)",
        plan.conc_rounds
    );
    settle(
        plan.settle / 2,
        "let the kernel finish tearing down namespaces",
    );
    let mut rounds_done = 0;
    for r in 0..plan.conc_rounds {
        if plan.out_of_time() {
            break;
        }
        for s in shuffled(&active, r) {
            if dropped.contains_key(&s) {
                continue;
            }
            match batch(cx, s, k, served) {
                Ok((w, l)) => {
                    walls.entry(s).or_default().push(w);
                    lats.entry(s).or_default().extend(l);
                }
                Err(e) => {
                    eprintln!("compare: {}: {e:#}", s.name());
                    dropped.insert(s, format!("{e:#}"));
                }
            }
            // Whatever a failed batch left behind goes before the next.
            for p in cx.ws.sweep() {
                eprintln!("compare: cleanup: {p}");
            }
        }
        rounds_done += 1;
    }
    let mut t = Table::new(
        format!("1b. Start + run `true`, {k} at once ({rounds_done} round(s), interleaved)"),
        &[
            "environment",
            "wall time until all are done (median of rounds)",
            "per-environment median",
            "per-environment p99",
            "boxd library vs it (wall time)",
        ],
    );
    let wall_med = |s: Starter| walls.get(&s).and_then(|w| stats(w)).map(|x| x.median);
    let boxd_wall = wall_med(Starter::Boxd);
    t.boxd_measured = boxd_wall.is_some() && wall_med(Starter::BoxdHttp).is_some();
    for &s in &active {
        match (wall_med(s), lats.get(&s).and_then(|l| stats(l))) {
            (Some(w), Some(l)) => {
                t.row(vec![
                    s.name().into(),
                    fmt_dur(w),
                    fmt_dur(l.median),
                    fmt_dur(l.p99),
                    match s {
                        Starter::Boxd => dash(),
                        Starter::BoxdHttp => boxd_wall
                            .map(|b| http_vs_library(w, b))
                            .unwrap_or_else(dash),
                        _ => boxd_wall.map(|b| speed_ratio(b, w)).unwrap_or_else(dash),
                    },
                ]);
                if let Some(why) = dropped.get(&s) {
                    t.notes
                        .push(format!("{} stopped being measured: {why}", s.name()));
                }
            }
            _ => t.skipped(
                s.name(),
                dropped.get(&s).map(String::as_str).unwrap_or("not run"),
            ),
        }
    }
    t.notes.push(format!(
        "Each round releases {k} threads at once (one environment each) per \
         environment type; a thread's latency runs from its release to its environment's \
         end, so it includes waiting for the cores; the wall time runs from the first \
         release to the last end. boxd over HTTP: each thread opens its own keep-alive \
         connection to the daemon before the release (not timed) and times POST /v2/box → \
         exec `true` → DELETE; its ratio cell compares it with the library's row."
    ));
    t
}

// ---------------------------------------------------------------------------
// Scenario 2: exec `true` in a running environment.

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Execer {
    Boxd,
    BoxdHttp,
    Runc,
    Podman,
    Nsenter,
    Host,
}

impl Execer {
    fn name(self) -> &'static str {
        match self {
            Execer::Boxd => "boxd agent exec",
            Execer::BoxdHttp => "boxd over HTTP: POST /v2/box/{id}/exec",
            Execer::Runc => "runc exec",
            Execer::Podman => "podman exec",
            Execer::Nsenter => "nsenter into the box's namespaces",
            Execer::Host => "host spawn of `true` (no environment)",
        }
    }
}

pub fn exec_in_running(cx: &Cx) -> Table {
    let ws = cx.ws;
    let plan = cx.plan;
    println!("scenario 2: exec `true` in a running environment");
    let mut t = Table::new(
        format!(
            "2. Exec `true` in a running environment ({} runs each, interleaved)",
            plan.exec_runs
        ),
        &["how", "median", "p99", "n", "boxd library vs it"],
    );
    // Lives until this scenario is measured; dropping it removes its box.
    let served = Served::start();
    let mut boxes = Boxes::new(cx.boxd);
    let mut idle = IdleGuard::new(ws);
    let mut why_not: BTreeMap<Execer, String> = BTreeMap::new();
    let tokio = match Boxd::tokio() {
        Ok(t) => Some(t),
        Err(e) => {
            why_not.insert(Execer::Boxd, format!("{e:#}"));
            None
        }
    };
    match cx.boxd.create() {
        Ok(b) => boxes.list.push(b),
        Err(e) => {
            why_not.insert(Execer::Boxd, format!("{e:#}"));
            why_not.insert(Execer::Nsenter, "no box to enter".into());
        }
    }
    // The daemon's box and the connection that execs in it.
    let mut http = None;
    match served
        .as_ref()
        .map_err(|e| anyhow!("{e:#}"))
        .and_then(|d| d.client())
        .and_then(|mut c| c.create().map(|id| (c, id)))
    {
        Ok(h) => http = Some(h),
        Err(e) => {
            why_not.insert(Execer::BoxdHttp, format!("{e:#}"));
        }
    }
    if let Err(e) = &ws.tools.nsenter {
        why_not.insert(Execer::Nsenter, e.clone());
    }
    for (e, key) in [
        (Execer::Runc, "runc"),
        (Execer::Podman, "podman"),
        (Execer::Nsenter, "nsenter"),
        (Execer::Host, "host"),
    ] {
        if let Some(why) = plan.left_out(key) {
            why_not.insert(e, why);
        }
    }
    match ws.tools.runc.as_ref() {
        Err(e) => {
            why_not.insert(Execer::Runc, e.clone());
        }
        Ok(_) if why_not.contains_key(&Execer::Runc) => {}
        Ok(_) => match peers::runc_start_idle(ws) {
            Ok(i) => idle.runc.push(i),
            Err(e) => {
                why_not.insert(Execer::Runc, format!("{e:#}"));
            }
        },
    }
    match ws.tools.podman.as_ref() {
        Err(e) => {
            why_not.insert(Execer::Podman, e.clone());
        }
        Ok(_) if why_not.contains_key(&Execer::Podman) => {}
        Ok(_) => match peers::podman_start_idle(ws) {
            Ok(id) => idle.podman.push(id),
            Err(e) => {
                why_not.insert(Execer::Podman, format!("{e:#}"));
            }
        },
    }
    let all = [
        Execer::Boxd,
        Execer::BoxdHttp,
        Execer::Runc,
        Execer::Podman,
        Execer::Nsenter,
        Execer::Host,
    ];
    let mut once = |e: Execer| -> Result<Duration> {
        match e {
            Execer::Boxd => {
                let (b, rt) = boxes.list.first().zip(tokio.as_ref()).context("no box")?;
                let t = Instant::now();
                cx.boxd.exec_true(rt, b)?;
                Ok(t.elapsed())
            }
            Execer::BoxdHttp => {
                let (c, id) = http.as_mut().context("no box")?;
                let t = Instant::now();
                c.exec_true(id)?;
                Ok(t.elapsed())
            }
            Execer::Runc => {
                peers::runc_exec_true(ws, &idle.runc.first().context("no container")?.id)
            }
            Execer::Podman => {
                peers::podman_exec_true(ws, idle.podman.first().context("no container")?)
            }
            Execer::Nsenter => peers::nsenter_true(ws, boxes.list.first().context("no box")?.pid()),
            Execer::Host => peers::host_true(),
        }
    };
    let mut tracks: BTreeMap<Execer, Track> = BTreeMap::new();
    for &e in &all {
        let mut tr = Track::default();
        if let Some(w) = why_not.get(&e) {
            tr.dropped = Some(w.clone());
        } else {
            for _ in 0..plan.warmup {
                if let Err(err) = once(e) {
                    tr.dropped = Some(format!("{err:#}"));
                    break;
                }
            }
        }
        if let Some(w) = &tr.dropped {
            println!("  SKIPPING {}: {w}", e.name());
        }
        tracks.insert(e, tr);
    }
    for i in 0..plan.exec_runs {
        if plan.out_of_time() {
            t.notes.push(format!(
                "stopped after {i} rounds: the run's time budget ran out"
            ));
            break;
        }
        for e in shuffled(&all, i) {
            let tr = tracks.entry(e).or_default();
            if tr.dropped.is_none() {
                tr.record(once(e).map(|d| (d, None)));
            }
        }
    }
    let boxd = stats(&tracks[&Execer::Boxd].samples);
    t.boxd_measured = boxd.is_some() && stats(&tracks[&Execer::BoxdHttp].samples).is_some();
    for &e in &all {
        let tr = &tracks[&e];
        match stats(&tr.samples) {
            None => t.skipped(
                e.name(),
                tr.dropped.as_deref().unwrap_or("no successful run"),
            ),
            Some(x) => {
                t.row(vec![
                    e.name().into(),
                    fmt_dur(x.median),
                    fmt_dur(x.p99),
                    x.n.to_string(),
                    match e {
                        Execer::Boxd => dash(),
                        Execer::BoxdHttp => boxd
                            .map(|b| http_vs_library(x.median, b.median))
                            .unwrap_or_else(dash),
                        _ => boxd
                            .map(|b| speed_ratio(b.median, x.median))
                            .unwrap_or_else(dash),
                    },
                ]);
                if let Some(w) = &tr.dropped {
                    t.notes
                        .push(format!("{} stopped being measured: {w}", e.name()));
                }
            }
        }
    }
    t.notes.push(
        "boxd: one round trip to the box's agent over its unix socket (spawn, wait, collect \
         output); boxd over HTTP: one POST /v2/box/{id}/exec of `true` over a keep-alive \
         connection to a `boxd serve` of this build (network off), in a box created through \
         it: the daemon's request handling on top of an agent round trip like the library's \
         (its cell compares it with the library's row); runc/podman: the CLI's exec of \
         `true` in a detached container whose first process is `sleep infinity`; nsenter: \
         `nsenter -t <agent pid> -U -m -p -n -u -i -C -r -w true` into the same box the \
         library execs in."
            .into(),
    );
    drop(tokio);
    if let Some((mut c, id)) = http {
        if let Err(e) = c.delete(&id) {
            eprintln!("compare: CLEANUP PROBLEM: {e:#}");
        }
    }
    // The daemon goes (and any box of its with it) before the scenario's
    // cleanup check.
    drop(served);
    if let Err(e) = boxes.clear() {
        eprintln!("compare: CLEANUP PROBLEM: {e:#}");
    }
    if let Err(e) = idle.clear() {
        eprintln!("compare: CLEANUP PROBLEM: {e:#}");
    }
    t
}

// ---------------------------------------------------------------------------
// Scenario 3: idle density.

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dense {
    Boxd,
    Runc,
    Podman,
}

impl Dense {
    fn name(self) -> &'static str {
        match self {
            Dense::Boxd => "boxd (idle box: the agent)",
            Dense::Runc => "runc (detached `sleep infinity`)",
            Dense::Podman => "podman (detached `sleep infinity` + conmon)",
        }
    }
}

/// Per-environment costs of one density round, in bytes.
#[derive(Clone, Copy)]
struct DenseResult {
    start: Duration,
    total: Duration,
    pss: f64,
    supervisor: f64,
    cgroup: f64,
    avail: f64,
    /// |MemAvailable change| over 1 s before the round, per environment:
    /// how much of `avail` may be the neighbours' noise.
    noise: f64,
    /// Growth of the `mem::BREAKDOWN` fields, per environment.
    breakdown: [f64; mem::BREAKDOWN.len()],
}

fn density_once(cx: &Cx, d: Dense, n: usize) -> Result<DenseResult> {
    let ws = cx.ws;
    let a0 = mem::mem_available()?;
    std::thread::sleep(Duration::from_secs(1));
    let before = mem::mem_available()?;
    let parts0 = mem::breakdown()?;
    let noise = (a0 as f64 - before as f64).abs() / n as f64;
    let me = std::process::id() as i32;
    let self0 = mem::pss(me)?;
    let t0 = Instant::now();
    let mut boxes = Boxes::new(cx.boxd);
    let mut idle = IdleGuard::new(ws);
    // (first process, supervisor) of each environment.
    let mut procs: Vec<(i32, Option<i32>)> = Vec::with_capacity(n);
    match d {
        Dense::Boxd => {
            for _ in 0..n {
                boxes.list.push(cx.boxd.create()?);
            }
            procs.extend(boxes.list.iter().map(|b| (b.pid(), None)));
        }
        Dense::Runc => {
            for _ in 0..n {
                idle.runc.push(peers::runc_start_idle(ws)?);
            }
            procs.extend(idle.runc.iter().map(|i| (i.pid, None)));
        }
        Dense::Podman => {
            for _ in 0..n {
                idle.podman.push(peers::podman_start_idle(ws)?);
            }
            let found = peers::podman_inspect(ws, &idle.podman)?;
            procs.extend(found.iter().map(|i| (i.pid, i.supervisor)));
        }
    }
    let start = t0.elapsed();
    // Let lazily finished work (page faults of just-started processes,
    // deferred frees of the start-up) settle before reading.
    std::thread::sleep(Duration::from_secs(2));
    let after = mem::mem_available()?;
    let parts1 = mem::breakdown()?;
    let (mut pss, mut cg, mut sup) = (0u64, 0u64, 0u64);
    for &(pid, supervisor) in &procs {
        let m = mem::env_mem(pid)?;
        pss += m.pss;
        cg += m.cgroup;
        if let Some(s) = supervisor {
            sup += mem::pss(s).with_context(|| format!("PSS of supervisor {s}"))?;
        }
    }
    if d == Dense::Boxd {
        // boxd's per-box state lives in this process (the library).
        sup = mem::pss(me)?.saturating_sub(self0);
    }
    boxes.clear()?;
    idle.clear()?;
    let total = t0.elapsed();
    let nf = n as f64;
    Ok(DenseResult {
        start,
        total,
        pss: pss as f64 / nf,
        supervisor: sup as f64 / nf,
        cgroup: cg as f64 / nf,
        avail: (before as f64 - after as f64) / nf,
        noise,
        breakdown: std::array::from_fn(|i| (parts1[i] as f64 - parts0[i] as f64) / nf),
    })
}

impl DenseResult {
    /// Growth of the memory no reclaim gives back, page cache left out
    /// (the neighbours' builds move the cache by far more than N idle
    /// environments cost): anonymous pages, unreclaimable slab, kernel
    /// stacks, page tables and per-CPU data.
    fn non_cache(&self) -> f64 {
        mem::BREAKDOWN
            .iter()
            .zip(self.breakdown)
            .filter(|(name, _)| {
                matches!(
                    **name,
                    "AnonPages" | "SUnreclaim" | "KernelStack" | "PageTables" | "Percpu"
                )
            })
            .map(|(_, v)| v)
            .sum()
    }
}

fn combine(v: &[DenseResult]) -> Option<DenseResult> {
    let m = |f: fn(&DenseResult) -> f64| median_f64(&v.iter().map(f).collect::<Vec<_>>());
    let md = |f: fn(&DenseResult) -> Duration| {
        median_f64(&v.iter().map(|r| f(r).as_secs_f64()).collect::<Vec<_>>())
            .map(Duration::from_secs_f64)
    };
    Some(DenseResult {
        start: md(|r| r.start)?,
        total: md(|r| r.total)?,
        pss: m(|r| r.pss)?,
        supervisor: m(|r| r.supervisor)?,
        cgroup: m(|r| r.cgroup)?,
        avail: m(|r| r.avail)?,
        noise: v.iter().map(|r| r.noise).fold(0.0, f64::max),
        breakdown: std::array::from_fn(|i| {
            median_f64(&v.iter().map(|r| r.breakdown[i]).collect::<Vec<_>>()).unwrap_or(0.0)
        }),
    })
}

pub fn idle_density(cx: &Cx) -> Vec<Table> {
    let ws = cx.ws;
    let plan = cx.plan;
    let n = plan.density_n;
    println!(
        "scenario 3: idle density, N={n} × {} round(s)",
        plan.density_rounds
    );
    let all = [Dense::Boxd, Dense::Runc, Dense::Podman];
    let mut why_not: BTreeMap<Dense, String> = BTreeMap::new();
    if let Err(e) = &ws.tools.runc {
        why_not.insert(Dense::Runc, e.clone());
    }
    if let Err(e) = &ws.tools.podman {
        why_not.insert(Dense::Podman, e.clone());
    }
    for (d, key) in [(Dense::Runc, "runc"), (Dense::Podman, "podman")] {
        if let Some(why) = plan.left_out(key) {
            why_not.insert(d, why);
        }
    }
    let mut results: BTreeMap<(usize, Dense), Vec<DenseResult>> = BTreeMap::new();
    for r in 0..plan.density_rounds {
        for d in shuffled(&all, r) {
            if why_not.contains_key(&d) {
                continue;
            }
            if plan.out_of_time() {
                why_not.insert(d, "the run's time budget ran out".into());
                continue;
            }
            println!("  {} × {n} (round {})", d.name(), r + 1);
            match density_once(cx, d, n) {
                Ok(x) => results.entry((n, d)).or_default().push(x),
                Err(e) => {
                    eprintln!("compare: density {}: {e:#}", d.name());
                    why_not.insert(d, format!("{e:#}"));
                }
            }
            for p in ws.sweep() {
                eprintln!("compare: cleanup: {p}");
            }
        }
    }
    let mut notes = Vec::new();
    // Larger N, once each, if the projected memory and time fit.
    for &big in &plan.density_big {
        for d in all {
            let Some(small) = results.get(&(n, d)).and_then(|v| combine(v)) else {
                continue;
            };
            let scale = big as f64 / n as f64;
            let need_time = small.total.mul_f64(scale * 1.2);
            let need_mem = small.avail.max(small.pss + small.supervisor).max(0.0) * big as f64;
            let avail = mem::mem_available().unwrap_or(0) as f64;
            let left = plan.density_by.saturating_duration_since(Instant::now());
            if need_mem > avail * 0.5 {
                notes.push(format!(
                    "N={big} not run for {}: it would need ~{} of the {} available",
                    d.name(),
                    fmt_bytes(need_mem),
                    fmt_bytes(avail)
                ));
                continue;
            }
            if need_time > left {
                notes.push(format!(
                    "N={big} not run for {}: it would take ~{:.0} s, {:.0} s of the time budget \
                     are left (the rest is scenarios 4 and 5's)",
                    d.name(),
                    need_time.as_secs_f64(),
                    left.as_secs_f64()
                ));
                continue;
            }
            settle(plan.settle / 2, "let the previous round's teardown finish");
            println!("  {} × {big}", d.name());
            match density_once(cx, d, big) {
                Ok(x) => results.entry((big, d)).or_default().push(x),
                Err(e) => notes.push(format!("N={big} failed for {}: {e:#}", d.name())),
            }
            for p in ws.sweep() {
                eprintln!("compare: cleanup: {p}");
            }
        }
    }
    let mut t = Table::new(
        format!(
            "3. Idle density: host memory per environment (N={n}, {} round(s), interleaved)",
            plan.density_rounds
        ),
        &[
            "environment",
            "N",
            "start N (one by one)",
            "its processes' PSS",
            "supervisor / manager",
            "its memory cgroup",
            "MemAvailable drop (all-inclusive)",
            "non-cache growth",
            "boxd vs it (MemAvailable drop)",
            "boxd vs it (non-cache growth)",
            "boxd vs it (PSS + supervisor)",
        ],
    );
    let mut sizes: Vec<usize> = results.keys().map(|(k, _)| *k).collect();
    sizes.dedup();
    let mut max_noise: f64 = 0.0;
    for size in sizes {
        let boxd = results.get(&(size, Dense::Boxd)).and_then(|v| combine(v));
        if size == n {
            t.boxd_measured = boxd.is_some();
        }
        for d in all {
            let Some(x) = results.get(&(size, d)).and_then(|v| combine(v)) else {
                continue;
            };
            max_noise = max_noise.max(x.noise);
            let sup = match d {
                Dense::Boxd => format!(
                    "{} (library state in this process)",
                    fmt_bytes(x.supervisor)
                ),
                Dense::Runc => "none (runc exits after the start)".into(),
                Dense::Podman => format!("{} (conmon)", fmt_bytes(x.supervisor)),
            };
            let (r1, r2, r3) = match (&boxd, d) {
                (Some(b), Dense::Runc | Dense::Podman) => (
                    memory_ratio(b.avail, x.avail),
                    memory_ratio(b.non_cache(), x.non_cache()),
                    memory_ratio(b.pss + b.supervisor, x.pss + x.supervisor),
                ),
                _ => (dash(), dash(), dash()),
            };
            t.row(vec![
                d.name().into(),
                size.to_string(),
                fmt_dur(x.start),
                fmt_bytes(x.pss),
                sup,
                fmt_bytes(x.cgroup),
                fmt_bytes(x.avail),
                fmt_bytes(x.non_cache()),
                r1,
                r2,
                r3,
            ]);
        }
    }
    for d in all {
        if let Some(w) = why_not.get(&d) {
            if results.keys().any(|(_, x)| *x == d) {
                t.notes
                    .push(format!("{} stopped being measured: {w}", d.name()));
            } else {
                t.skipped(d.name(), w);
            }
        }
    }
    t.notes.push(format!(
        "Per environment, medians over the rounds. PSS: every process in the environment's \
         memory cgroup (`smaps_rollup`). Memory cgroup: `memory.usage_in_bytes` (v1) or \
         `memory.current` (v2) of that cgroup — it overlaps PSS (anonymous pages are in both) \
         and also holds kernel memory charged to it. MemAvailable drop: `/proc/meminfo` \
         before the first start minus 2 s after the last, divided by N: everything, kernel \
         objects no cgroup is charged for (namespaces, mounts, sockets) included, but also \
         whatever the neighbours did meanwhile; MemAvailable moved by up to {} per \
         environment in the second before a round with nothing started. Non-cache growth: \
         the rise of AnonPages + SUnreclaim + KernelStack + PageTables + Percpu over the \
         same span (table 3b), divided by N: the all-inclusive cost without the page cache, \
         which a shared host's builds move by far more.",
        fmt_bytes(max_noise)
    ));
    t.notes.extend(notes);
    let mut header = vec!["environment", "N"];
    header.extend(mem::BREAKDOWN);
    let mut parts = Table::new(
        "3b. Where the MemAvailable drop went: growth of `/proc/meminfo` fields per environment",
        &header,
    );
    parts.boxd_measured = t.boxd_measured;
    for ((size, d), v) in &results {
        if let Some(x) = combine(v) {
            let mut row = vec![d.name().to_string(), size.to_string()];
            row.extend(x.breakdown.iter().map(|b| fmt_bytes(*b)));
            parts.row(row);
        }
    }
    parts.notes.push(
        "Same rounds as 3 (medians). `Cached` includes `Shmem` (tmpfs, shared memory); \
         `SUnreclaim`/`SReclaimable` are kernel slab (namespaces, mounts, inodes, dentries); \
         `Percpu` holds per-CPU allocations such as network namespace statistics."
            .into(),
    );
    vec![t, parts]
}
