//! Scenario 5: snapshot / restore / fork, boxd beside `podman commit` +
//! `podman run` of the committed image.
//!
//! For each change size (files of random data written into a running
//! environment): the snapshot itself (`Runtime::snapshot` vs `podman
//! commit --pause=true`); restore → first exec of `true` beside a plain
//! start → first `true` in the same round; and a fork of K environments
//! from one snapshot started concurrently, until every one has run `true`.
//! boxd and podman alternate round by round (A B, B A, … in a new order each round).
//!
//! Owns: podman's own storage for this scenario (`<workspace>/podman-snap`,
//! the overlay driver, an image imported once from the workspace's shared
//! rootfs, since `--rootfs` containers cannot be committed), and every box,
//! snapshot, container and image a round makes.
//!
//! Must never: judge a timing (the only check is that boxd produced a
//! result, plus sanity checks that a snapshot holds the bytes written);
//! keep a round's boxes, snapshots, containers or committed images past the
//! round (guards remove them, on failure too, so disk use stays bounded);
//! run the largest size without the free space it needs (it is skipped,
//! loudly); wait without a bound (every exec and child has a deadline);
//! touch podman state outside its private directories.

use crate::boxd::{Boxd, Boxes};
use crate::common::{fmt_dur, run, run_timed, speed_ratio, stats, Io, Stats};
use crate::peers::{podman_env_args, CMD_TIMEOUT};
use crate::report::Table;
use crate::scenarios::{dash, shuffled, Cx};
use crate::workspace::{mkdir, unmount_and_remove, Workspace};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Longest a fill (writing the change) or a commit of the largest size may
/// take before it is killed.
const SLOW_TIMEOUT: Duration = Duration::from_secs(300);
/// Free space in the workspace's filesystem needed before the largest size
/// runs (a round holds the change up to five times: box/container upper,
/// snapshot/image layer, podman's blob copy while committing).
const NEED_FREE_LARGE: u64 = 8 << 30;
/// Sizes from which [`NEED_FREE_LARGE`] is checked.
const LARGE: u64 = 512 << 20;
const MAX_FAILURES: usize = 3;

/// One change size of scenario 5.
pub struct SnapSize {
    pub bytes: u64,
    /// Files the change is split into.
    pub files: u64,
    pub reps: usize,
}

impl SnapSize {
    pub fn new(mib: u64, files: u64, reps: usize) -> SnapSize {
        SnapSize {
            bytes: mib << 20,
            files,
            reps,
        }
    }

    pub fn label(&self) -> String {
        if self.bytes >= 1 << 30 {
            format!("{} GiB", self.bytes >> 30)
        } else {
            format!("{} MiB", self.bytes >> 20)
        }
    }

    /// A shell script writing the change into `dir` (random data, so no
    /// layer can be smaller than the change).
    fn fill_script(&self, dir: &str) -> String {
        let each_kib = (self.bytes >> 10) / self.files;
        format!(
            "mkdir -p {dir} && cd {dir} && for i in $(seq 1 {}); do \
             head -c {each_kib}K /dev/urandom > f$i || exit 1; done",
            self.files
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Engine {
    Boxd,
    Podman,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Boxd => "boxd",
            Engine::Podman => "podman",
        }
    }
}

/// The timings of one round.
struct Round {
    snapshot: Duration,
    /// How long boxd kept the box frozen (podman does not say).
    frozen: Option<Duration>,
    restore: Duration,
    plain: Duration,
    fork: Duration,
}

/// One operation's samples out of [`Samples`].
type Pick = fn(&Samples) -> &Vec<Duration>;

#[derive(Default)]
struct Samples {
    snapshot: Vec<Duration>,
    frozen: Vec<Duration>,
    restore: Vec<Duration>,
    plain: Vec<Duration>,
    fork: Vec<Duration>,
}

impl Samples {
    fn push(&mut self, r: Round) {
        self.snapshot.push(r.snapshot);
        self.frozen.extend(r.frozen);
        self.restore.push(r.restore);
        self.plain.push(r.plain);
        self.fork.push(r.fork);
    }
}

/// Per engine: why it is not (or no longer) measured.
#[derive(Default)]
struct State {
    failures: usize,
    dropped: Option<String>,
}

impl State {
    fn failed(&mut self, e: &anyhow::Error) {
        self.failures += 1;
        eprintln!("compare: a snapshot round failed: {e:#}");
        if self.failures >= MAX_FAILURES {
            self.dropped = Some(format!("failed {MAX_FAILURES} times; last: {e:#}"));
        }
    }
}

// ---------------------------------------------------------------------------
// boxd.

/// A round's boxes and snapshots: boxes destroyed first (they stack the
/// snapshot's layers), then the snapshots removed; on drop too.
struct BoxdRound<'a> {
    boxd: &'a Boxd,
    boxes: Boxes<'a>,
    snaps: Vec<String>,
}

impl<'a> BoxdRound<'a> {
    fn new(boxd: &'a Boxd) -> Self {
        BoxdRound {
            boxd,
            boxes: Boxes::new(boxd),
            snaps: Vec::new(),
        }
    }

    fn clear(&mut self) -> Result<()> {
        let mut first = self.boxes.clear();
        for id in self.snaps.drain(..) {
            let r = self.boxd.remove_snapshot(&id);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for BoxdRound<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.clear() {
            eprintln!("compare: CLEANUP PROBLEM: {e:#}");
        }
    }
}

static SNAP_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Create (from `layers`) → exec `true`; the box goes into `round`, even
/// when the exec fails. Returns the time until `true` has exited.
fn boxd_first_exec(
    boxd: &Boxd,
    tokio: &tokio::runtime::Runtime,
    round: &mut BoxdRound,
    layers: &[boxd_runtime::image::Layer],
) -> Result<Duration> {
    let t = Instant::now();
    let b = boxd.create_from(layers)?;
    let ran = boxd.exec_true(tokio, &b);
    let d = t.elapsed();
    round.boxes.list.push(b);
    ran.map(|()| d)
}

fn boxd_round(cx: &Cx, size: &SnapSize, k: usize, rep: usize) -> Result<Round> {
    let boxd = cx.boxd;
    let tokio = Boxd::tokio()?;
    let mut round = BoxdRound::new(boxd);
    round.boxes.list.push(boxd.create()?);
    let dir = "/workspace/home/change";
    boxd.sh(
        &tokio,
        &round.boxes.list[0],
        &size.fill_script(dir),
        SLOW_TIMEOUT,
    )
    .context("write the change")?;
    let id = format!("cmp-{}", SNAP_SEQ.fetch_add(1, Ordering::Relaxed));
    round.snaps.push(id.clone());
    let t = Instant::now();
    let cap = boxd.snapshot(&round.boxes.list[0], &id)?;
    let snapshot = t.elapsed();
    if cap.bytes < size.bytes {
        bail!(
            "snapshot {id} holds {} bytes, fewer than the {} written",
            cap.bytes,
            size.bytes
        );
    }
    // Restore and the plain start alternate which goes first.
    let (mut restore, mut plain, mut restored) = (Duration::ZERO, Duration::ZERO, None);
    for which in shuffled(&[true, false], rep) {
        if which {
            restore = boxd_first_exec(boxd, &tokio, &mut round, &cap.layers)
                .context("restore → first exec")?;
            restored = Some(round.boxes.list.len() - 1);
        } else {
            plain = boxd_first_exec(boxd, &tokio, &mut round, &[])
                .context("plain create → first exec")?;
        }
    }
    // Not timed: the restored box sees the change.
    let restored = restored
        .and_then(|i| round.boxes.list.get(i))
        .ok_or_else(|| anyhow!("no restored box"))?;
    boxd.sh(
        &tokio,
        restored,
        &format!("test -s {dir}/f{}", size.files),
        Duration::from_secs(60),
    )
    .context("the restored box lacks the change")?;
    let fork = boxd_fork(boxd, &mut round, &cap.layers, k)?;
    round.clear()?;
    Ok(Round {
        snapshot,
        frozen: Some(cap.frozen),
        restore,
        plain,
        fork,
    })
}

/// `k` threads released together, each creating a box from `layers` and
/// running `true` in it; the wall time from the release until the last
/// `true` has exited. The boxes go into `round`.
fn boxd_fork(
    boxd: &Boxd,
    round: &mut BoxdRound,
    layers: &[boxd_runtime::image::Layer],
    k: usize,
) -> Result<Duration> {
    let barrier = Barrier::new(k + 1);
    let (made, wall) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..k)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let tokio = Boxd::tokio();
                    barrier.wait();
                    let tokio = tokio?;
                    let b = boxd.create_from(layers)?;
                    let ran = boxd.exec_true(&tokio, &b);
                    Ok::<_, anyhow::Error>((b, ran, Instant::now()))
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let made: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a fork thread panicked")))
            })
            .collect();
        (made, t0)
    });
    let mut last = wall;
    let mut first_err = None;
    for m in made {
        match m {
            Ok((b, ran, end)) => {
                round.boxes.list.push(b);
                last = last.max(end);
                if let Err(e) = ran {
                    first_err.get_or_insert(e);
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e.context("fork")),
        None => Ok(last - wall),
    }
}

// ---------------------------------------------------------------------------
// podman.

/// podman with private overlay storage holding the base image (the
/// workspace's rootfs, imported once). Dropping it removes every container
/// and image in that storage, unmounts it and deletes it.
struct SnapPodman<'a> {
    ws: &'a Workspace,
    dir: PathBuf,
    dirs: [PathBuf; 3],
    base: String,
    seq: AtomicUsize,
}

impl<'a> SnapPodman<'a> {
    fn new(ws: &'a Workspace) -> Result<SnapPodman<'a>> {
        let dir = ws.dir.join("podman-snap");
        let pm = SnapPodman {
            ws,
            dirs: [dir.join("root"), dir.join("run"), dir.join("tmp")],
            base: format!("localhost/bc{}-base:latest", std::process::id()),
            dir,
            seq: AtomicUsize::new(0),
        };
        // From here on, Drop cleans up whatever was made.
        for d in &pm.dirs {
            mkdir(d, 0o700)?;
        }
        let tar = pm.dir.join("rootfs.tar");
        let mut c = Command::new("tar");
        c.arg("-C").arg(&ws.rootfs).arg("-cf").arg(&tar).arg(".");
        run(&mut c, Io::Capture, CMD_TIMEOUT).context("tar the shared rootfs")?;
        let mut c = pm.cmd()?;
        c.arg("import").arg(&tar).arg(&pm.base);
        let imported = run(&mut c, Io::Capture, CMD_TIMEOUT).context("podman import the rootfs");
        let _ = std::fs::remove_file(&tar);
        imported?;
        Ok(pm)
    }

    fn cmd(&self) -> Result<Command> {
        self.ws
            .podman_storage(&self.dirs, "overlay")
            .ok_or_else(|| anyhow!("podman is unavailable"))
    }

    /// `podman run` (no `--rm`: the container is removed after the timing,
    /// as boxd's boxes are destroyed after theirs) of `image` with the
    /// scenario-1 environment flags; the container's name goes into
    /// `names` before it runs. `args`: its command.
    fn run_cmd(
        &self,
        image: &str,
        names: &mut Vec<String>,
        detach: bool,
        args: &[&str],
    ) -> Result<Command> {
        let mut c = self.cmd()?;
        // The images are local; never try a registry.
        c.args(["run", "--pull", "never"]);
        if detach {
            c.arg("--detach");
        }
        names.push(podman_env_args(self.ws, &mut c));
        c.arg(image).args(args);
        Ok(c)
    }

    fn clear_all(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for args in [
            &["rm", "--all", "--force", "--time", "0"][..],
            &["rmi", "--all", "--force"][..],
        ] {
            match self.cmd() {
                Ok(mut c) => {
                    if let Err(e) = run(c.args(args), Io::Capture, CMD_TIMEOUT) {
                        problems.push(format!("podman {}: {e:#}", args.join(" ")));
                    }
                }
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        problems
    }
}

impl Drop for SnapPodman<'_> {
    fn drop(&mut self) {
        for p in self.clear_all() {
            eprintln!("compare: CLEANUP PROBLEM: {p}");
        }
        // The overlay driver keeps a private bind mount of its home.
        unmount_and_remove(&self.dir);
    }
}

/// A round's containers and committed images, removed when it goes.
struct PodmanRound<'a, 'b> {
    pm: &'b SnapPodman<'a>,
    containers: Vec<String>,
    images: Vec<String>,
}

impl PodmanRound<'_, '_> {
    fn clear(&mut self) -> Result<()> {
        let ids: Vec<String> = self.containers.drain(..).collect();
        let mut first = if ids.is_empty() {
            Ok(())
        } else {
            podman_rm_in(self.pm, &ids)
        };
        for img in self.images.drain(..) {
            let r = self.pm.cmd().and_then(|mut c| {
                c.args(["rmi", "--force", "--ignore"]).arg(&img);
                run(&mut c, Io::Capture, CMD_TIMEOUT).map(|_| ())
            });
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for PodmanRound<'_, '_> {
    fn drop(&mut self) {
        if let Err(e) = self.clear() {
            eprintln!("compare: CLEANUP PROBLEM: {e:#} (the scenario's teardown will retry)");
        }
    }
}

/// `podman rm --force --time 0 --ignore` in the scenario's storage, tried
/// up to [`RM_TRIES`] times: right after a container's `true` exits, its
/// removal can race conmon's own cleanup of it and fail with EBUSY on the
/// container's `shm` mount (a moment later nothing holds it).
fn podman_rm_in(pm: &SnapPodman, ids: &[String]) -> Result<()> {
    for chunk in ids.chunks(100) {
        let mut tries = 0;
        loop {
            let mut c = pm.cmd()?;
            c.args(["rm", "--force", "--ignore", "--time", "0"])
                .args(chunk);
            match run(&mut c, Io::Capture, CMD_TIMEOUT) {
                Ok(_) => break,
                Err(_) if tries + 1 < RM_TRIES => {
                    tries += 1;
                    RM_RETRIES.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

const RM_TRIES: usize = 5;
/// How often a `podman rm` was retried (reported under the table).
static RM_RETRIES: AtomicUsize = AtomicUsize::new(0);

fn podman_round(pm: &SnapPodman, size: &SnapSize, k: usize, rep: usize) -> Result<Round> {
    let mut round = PodmanRound {
        pm,
        containers: Vec::new(),
        images: Vec::new(),
    };
    let mut c = pm.run_cmd(
        &pm.base,
        &mut round.containers,
        true,
        &["/bin/sleep", "infinity"],
    )?;
    run(&mut c, Io::Capture, CMD_TIMEOUT).context("podman run --detach (the source)")?;
    let src = round.containers[0].clone();
    let mut c = pm.cmd()?;
    c.args(["exec", &src, "sh", "-c", &size.fill_script("/root/change")]);
    run(&mut c, Io::Capture, SLOW_TIMEOUT).context("write the change (podman exec)")?;
    let image = format!(
        "localhost/bc{}-snap-{}:latest",
        std::process::id(),
        pm.seq.fetch_add(1, Ordering::Relaxed)
    );
    round.images.push(image.clone());
    let mut c = pm.cmd()?;
    c.args(["commit", "--pause=true", &src, &image]);
    let (snapshot, _) = run_timed(&mut c, Io::Capture, SLOW_TIMEOUT).context("podman commit")?;
    let (mut restore, mut plain) = (Duration::ZERO, Duration::ZERO);
    for which in shuffled(&[true, false], rep) {
        let img = if which { &image } else { &pm.base };
        let mut c = pm.run_cmd(img, &mut round.containers, false, &["/bin/true"])?;
        let (d, _) = run_timed(&mut c, Io::Capture, CMD_TIMEOUT)
            .with_context(|| format!("podman run {img} /bin/true"))?;
        if which {
            restore = d;
        } else {
            plain = d;
        }
    }
    let fork = podman_fork(pm, &mut round, &image, k)?;
    round.clear()?;
    Ok(Round {
        snapshot,
        frozen: None,
        restore,
        plain,
        fork,
    })
}

/// `k` threads released together, each `podman run`ning `true` in a new
/// container of `image`; the wall time from the release until the last
/// has exited.
fn podman_fork(
    pm: &SnapPodman,
    round: &mut PodmanRound,
    image: &str,
    k: usize,
) -> Result<Duration> {
    let mut cmds = Vec::with_capacity(k);
    for _ in 0..k {
        cmds.push(pm.run_cmd(image, &mut round.containers, false, &["/bin/true"])?);
    }
    let barrier = Barrier::new(k + 1);
    let (results, t0) = std::thread::scope(|scope| {
        let handles: Vec<_> = cmds
            .into_iter()
            .map(|mut c| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    run(&mut c, Io::Capture, CMD_TIMEOUT).map(|_| Instant::now())
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let r: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a fork thread panicked")))
            })
            .collect();
        (r, t0)
    });
    let mut last = t0;
    for r in results {
        last = last.max(r.context("fork: podman run")?);
    }
    Ok(last - t0)
}

// ---------------------------------------------------------------------------
// The scenario.

/// Free bytes (for root) in the filesystem holding `path`.
fn free_bytes(path: &std::path::Path) -> Result<u64> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).context("a path with NUL")?;
    // SAFETY: statvfs into a zeroed struct we own.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("statvfs {}", path.display()));
        }
        st
    };
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

pub fn snapshot_restore_fork(cx: &Cx) -> Table {
    let ws = cx.ws;
    let plan = cx.plan;
    let k = plan.fork_n;
    let started = Instant::now();
    // Its own budget, but never past the whole run's bound.
    let deadline = (started + plan.snap_budget).min(plan.end_by);
    println!(
        "scenario 5: snapshot / restore / fork ({})",
        plan.snap_sizes
            .iter()
            .map(|s| format!("{} × {}", s.label(), s.reps))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut t = Table::new(
        format!("5. Snapshot / restore / fork vs `podman commit` + `podman run` (fork of {k})"),
        &[
            "change",
            "operation",
            "boxd median",
            "boxd p99",
            "podman median",
            "podman p99",
            "n (boxd / podman)",
            "boxd vs podman",
        ],
    );
    let all = [Engine::Boxd, Engine::Podman];
    let mut states: BTreeMap<Engine, State> = BTreeMap::new();
    states.insert(Engine::Boxd, State::default());
    let mut podman = State::default();
    let why_no_podman = plan
        .left_out("podman")
        .or_else(|| ws.tools.podman.clone().err());
    let pm = match why_no_podman {
        Some(why) => {
            podman.dropped = Some(why);
            None
        }
        None => match SnapPodman::new(ws) {
            Ok(pm) => Some(pm),
            Err(e) => {
                podman.dropped = Some(format!("{e:#}"));
                None
            }
        },
    };
    states.insert(Engine::Podman, podman);
    let once = |e: Engine, size: &SnapSize, rep: usize| -> Result<Round> {
        match e {
            Engine::Boxd => boxd_round(cx, size, k, rep),
            Engine::Podman => match &pm {
                Some(pm) => podman_round(pm, size, k, rep),
                None => Err(anyhow!("podman is unavailable")),
            },
        }
    };
    // Warm-up at the smallest size doubles as the probe.
    if let Some(small) = plan.snap_sizes.first() {
        for e in all {
            let st = states.entry(e).or_default();
            if st.dropped.is_some() {
                continue;
            }
            if let Err(err) = once(e, small, 0) {
                st.dropped = Some(format!("{err:#}"));
            }
        }
    }
    for (e, st) in &states {
        if let Some(why) = &st.dropped {
            println!("  SKIPPING {}: {why}", e.name());
        }
    }
    let mut results: Vec<(String, BTreeMap<Engine, Samples>)> = Vec::new();
    for size in &plan.snap_sizes {
        let label = size.label();
        if size.bytes >= LARGE {
            match free_bytes(&ws.dir) {
                Ok(free) if free >= NEED_FREE_LARGE => {}
                Ok(free) => {
                    let why = format!(
                        "{} free in {}, it needs {}",
                        gib(free),
                        ws.dir.display(),
                        gib(NEED_FREE_LARGE)
                    );
                    println!("  SKIPPING the {label} change: {why}");
                    t.notes.push(format!("{label} not measured: {why}"));
                    continue;
                }
                Err(e) => {
                    println!("  SKIPPING the {label} change: {e:#}");
                    t.notes.push(format!("{label} not measured: {e:#}"));
                    continue;
                }
            }
        }
        println!("  {label}: {} round(s) each", size.reps);
        let mut samples: BTreeMap<Engine, Samples> = BTreeMap::new();
        // The last round's duration: a round that would end past the
        // deadline is not started.
        let mut last_round = Duration::ZERO;
        for rep in 0..size.reps {
            if Instant::now() + last_round >= deadline {
                t.notes.push(format!(
                    "{label}: stopped after {rep} of {} rounds: another would end past the \
                     scenario's time budget ({:.0} s, and the whole run's bound)",
                    size.reps,
                    plan.snap_budget.as_secs_f64()
                ));
                println!("  {label}: out of time after {rep} round(s)");
                break;
            }
            let round_started = Instant::now();
            for e in shuffled(&all, rep) {
                let st = states.entry(e).or_default();
                if st.dropped.is_some() {
                    continue;
                }
                match once(e, size, rep) {
                    Ok(r) => samples.entry(e).or_default().push(r),
                    Err(err) => st.failed(&err),
                }
            }
            last_round = round_started.elapsed();
        }
        results.push((label, samples));
    }
    drop(pm);
    for (label, samples) in &results {
        let get =
            |e: Engine, f: Pick| -> Option<Stats> { samples.get(&e).and_then(|s| stats(f(s))) };
        if get(Engine::Boxd, |s| &s.snapshot).is_some() {
            t.boxd_measured = true;
        }
        let ops: [(String, Pick); 4] = [
            (
                "snapshot: `Runtime::snapshot` / `podman commit --pause=true`".into(),
                |s| &s.snapshot,
            ),
            ("restore → first `true` exited".into(), |s| &s.restore),
            (
                "plain start (no snapshot) → first `true` exited".into(),
                |s| &s.plain,
            ),
            (
                format!("fork: {k} at once from the snapshot → all ran `true`"),
                |s| &s.fork,
            ),
        ];
        for (op, f) in ops {
            let b = get(Engine::Boxd, f);
            let p = get(Engine::Podman, f);
            let cell = |x: Option<Stats>, e: Engine| -> (String, String) {
                match (x, &states[&e].dropped) {
                    (Some(x), _) => (fmt_dur(x.median), fmt_dur(x.p99)),
                    (None, Some(why)) => (format!("skipped: {why}"), String::new()),
                    (None, None) => ("no successful run".into(), String::new()),
                }
            };
            let (bm, bp) = cell(b, Engine::Boxd);
            let (pmed, pp) = cell(p, Engine::Podman);
            t.row(vec![
                label.clone(),
                op,
                bm,
                bp,
                pmed,
                pp,
                format!(
                    "{} / {}",
                    b.map(|x| x.n).unwrap_or(0),
                    p.map(|x| x.n).unwrap_or(0)
                ),
                match (b, p) {
                    (Some(b), Some(p)) => speed_ratio(b.median, p.median),
                    _ => dash(),
                },
            ]);
        }
        if let Some(fz) = get(Engine::Boxd, |s| &s.frozen) {
            t.row(vec![
                label.clone(),
                "of which the box was frozen (boxd)".into(),
                fmt_dur(fz.median),
                fmt_dur(fz.p99),
                dash(),
                dash(),
                format!("{} / 0", fz.n),
                dash(),
            ]);
        }
    }
    for (e, st) in &states {
        if let Some(why) = &st.dropped {
            if results
                .iter()
                .any(|(_, s)| s.get(e).is_some_and(|s| !s.snapshot.is_empty()))
            {
                t.notes
                    .push(format!("{} stopped being measured: {why}", e.name()));
            }
        }
    }
    t.notes.push(format!(
        "Per change size, rounds alternate boxd and podman (in a new order each round); each round \
         starts a fresh environment, writes the change as files of random data (boxd: an \
         exec in the box into `/workspace/home`; podman: `podman exec` into `/root` of a \
         `podman run --detach … sleep infinity` container), then times: the snapshot (boxd: \
         `Runtime::snapshot` — write-back of the box's dirty data, freeze, clone of the upper \
         dirs (reflinks on boxd's btrfs pool) with owners shifted, thaw, syncfs, rename; podman: `podman commit --pause=true`, which pauses the container as \
         boxd freezes the box, diffs its upper layer and stores it as a new image layer); \
         restore → first `true` (boxd: create a box stacking the snapshot's layers + exec \
         `true` through the agent; podman: `podman run` of the committed image with \
         `/bin/true`, until it exits) beside a plain start → first `true` of the base \
         image; a fork of {k} environments from the snapshot, released together, until the \
         last `true` has exited. Removal (boxes destroyed, `remove_snapshot`; `podman rm`, \
         `podman rmi`) follows each round, untimed. The restored box is checked (untimed) \
         to hold the change; boxd's snapshot must hold at least the bytes written."
    ));
    t.notes.push(
        "podman here: a private storage root with the overlay driver (podman's default for \
         root; the vfs driver of scenarios 1–2 would copy every layer in full), the image \
         `podman import`ed once, untimed, from a tar of the same rootfs as scenarios 1–3 \
         (a `--rootfs` container cannot be committed), the scenario-1 flags otherwise \
         (`/usr` read-only from the host, its own uid/gid range per container, `--network \
         none`, runc, cgroupfs)."
            .into(),
    );
    let retries = RM_RETRIES.load(Ordering::Relaxed);
    if retries > 0 {
        t.notes.push(format!(
            "`podman rm` of a round's containers failed with EBUSY on a container's `shm` \
             mount {retries} time(s) and succeeded when retried 0.5 s later (untimed): \
             right after `true` exits, the removal races conmon's own cleanup."
        ));
    }
    let took = started.elapsed();
    println!("  scenario 5 took {:.0} s", took.as_secs_f64());
    t.notes
        .push(format!("The scenario took {:.0} s.", took.as_secs_f64()));
    t
}
