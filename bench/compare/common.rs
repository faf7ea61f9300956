//! Shared pieces of the comparison bench: statistics, formatting, ratios,
//! and running a peer's command with a deadline.
//!
//! Every child process started here is registered with a watchdog that
//! kills it (through a pidfd, so never a recycled pid) once its deadline
//! passes: no wait in this bench is unbounded.

use anyhow::{bail, Context, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use crate::shared::{fmt_dur, stats, Stats};

/// Median of floating-point values (mean of the two middle ones for an
/// even count).
pub fn median_f64(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Bytes as KiB or MiB for a table.
pub fn fmt_bytes(b: f64) -> String {
    if b.abs() >= 10.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

/// "boxd is X faster/slower" from two times (lower is better).
pub fn speed_ratio(boxd: Duration, peer: Duration) -> String {
    let (b, p) = (boxd.as_secs_f64(), peer.as_secs_f64());
    if b <= 0.0 || p <= 0.0 {
        return "n/a".into();
    }
    if p >= b {
        format!("boxd is {} faster", fmt_ratio(p / b))
    } else {
        format!("boxd is {} slower", fmt_ratio(b / p))
    }
}

/// What boxd over HTTP adds to the library for the same span: "HTTP
/// adds X (Y the library's)" from two times.
pub fn http_vs_library(http: Duration, library: Duration) -> String {
    let (h, l) = (http.as_secs_f64(), library.as_secs_f64());
    if h <= 0.0 || l <= 0.0 {
        return "n/a".into();
    }
    let r = fmt_ratio(h / l);
    if http >= library {
        format!("HTTP adds {} ({r} the library's)", fmt_dur(http - library))
    } else {
        format!(
            "HTTP takes {} less ({r} the library's)",
            fmt_dur(library - http)
        )
    }
}

/// "boxd uses X less/more" from two memory amounts (lower is better).
pub fn memory_ratio(boxd: f64, peer: f64) -> String {
    if boxd <= 0.0 || peer <= 0.0 {
        return "n/a (a value is ≤ 0: noise exceeds the signal)".into();
    }
    if peer >= boxd {
        format!("boxd uses {} less", fmt_ratio(peer / boxd))
    } else {
        format!("boxd uses {} more", fmt_ratio(boxd / peer))
    }
}

/// Today's date (UTC) as YYYY-MM-DD, computed from the system clock.
pub fn utc_date() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Days since 1970-01-01 to a proleptic Gregorian date, via 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Finds an executable on `PATH` (plus the sbin directories, where Debian
/// puts runc).
pub fn which(bin: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(Into::into))
        .map(|d| d.join(bin))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The last non-empty lines of a command's stderr (or stdout), shortened,
/// for an error message or a "skipped: …" cell.
pub fn tail(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(2);
    let mut s = lines[start..].join(" / ");
    if s.chars().count() > 300 {
        s = s.chars().take(300).collect::<String>() + "…";
    }
    s
}

struct Watched {
    id: u64,
    pidfd: OwnedFd,
    deadline: Instant,
}

static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());
static NEXT_WATCH: AtomicU64 = AtomicU64::new(0);
static STOP_WATCHDOG: AtomicBool = AtomicBool::new(false);
static START_WATCHDOG: Once = Once::new();

fn watched() -> std::sync::MutexGuard<'static, Vec<Watched>> {
    WATCHED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kills registered children whose deadline has passed, every 50 ms, until
/// [`stop_watchdog`].
fn start_watchdog() {
    START_WATCHDOG.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("compare-watchdog".into())
            .spawn(|| {
                while !STOP_WATCHDOG.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    let now = Instant::now();
                    for w in watched().iter().filter(|w| w.deadline <= now) {
                        // SAFETY: pidfd_send_signal on a pidfd we own; a
                        // pidfd cannot refer to a recycled pid.
                        unsafe {
                            libc::syscall(
                                libc::SYS_pidfd_send_signal,
                                w.pidfd.as_raw_fd(),
                                libc::SIGKILL,
                                std::ptr::null::<libc::siginfo_t>(),
                                0,
                            );
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!(
                "compare: WARNING: no watchdog thread ({e}); child deadlines are not enforced"
            );
        }
    });
}

/// Ends the watchdog thread (at the end of the run).
pub fn stop_watchdog() {
    STOP_WATCHDOG.store(true, Ordering::Relaxed);
}

/// How a child's standard output and error are wired.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Both captured (the child must close them by exiting).
    Capture,
    /// stdout to /dev/null, stderr to a file: for commands that leave a
    /// detached process holding their descriptors (`runc run -d`).
    Detached,
}

/// Runs `cmd` to completion, killing it after `timeout`. Returns its
/// output and the wall time from just before the spawn to its reaping.
/// A non-zero exit is an error carrying the end of its stderr.
pub fn run_timed(cmd: &mut Command, io: Io, timeout: Duration) -> Result<(Duration, Output)> {
    start_watchdog();
    let what = format!("{:?}", cmd.get_program());
    let id = NEXT_WATCH.fetch_add(1, Ordering::Relaxed);
    cmd.stdin(Stdio::null());
    let errfile = match io {
        Io::Capture => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        }
        Io::Detached => {
            // Inside the workspace directory (see `bundle::Workspace`).
            let path = std::env::temp_dir()
                .join(format!("boxd-compare-{}/stderr-{id}", std::process::id(),));
            let f = std::fs::File::create(&path)
                .with_context(|| format!("create {}", path.display()))?;
            cmd.stdout(Stdio::null()).stderr(f);
            Some(path)
        }
    };
    let t = Instant::now();
    let child = cmd.spawn().with_context(|| format!("spawn {what}"))?;
    // SAFETY: pidfd_open on our own unreaped child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::c_int, 0) };
    let deadline = Instant::now() + timeout;
    if fd >= 0 {
        // SAFETY: a fresh descriptor only we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        watched().push(Watched {
            id,
            pidfd,
            deadline,
        });
    }
    let waited = child.wait_with_output();
    let elapsed = t.elapsed();
    watched().retain(|w| w.id != id);
    let mut out = waited.with_context(|| format!("wait for {what}"))?;
    if let Some(path) = errfile {
        out.stderr = std::fs::read(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
    }
    if !out.status.success() {
        use std::os::unix::process::ExitStatusExt;
        if out.status.signal() == Some(libc::SIGKILL) && Instant::now() >= deadline {
            bail!("{what} timed out after {timeout:?}");
        }
        let why = if out.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
            tail(&out.stderr)
        } else {
            tail(&out.stdout)
        };
        bail!("{what} failed ({}): {why}", out.status);
    }
    Ok((elapsed, out))
}

/// [`run_timed`] without the timing.
pub fn run(cmd: &mut Command, io: Io, timeout: Duration) -> Result<Output> {
    run_timed(cmd, io, timeout).map(|(_, out)| out)
}

/// Sleeps, printing why (so a pause in the output is explained).
pub fn settle(d: Duration, why: &str) {
    if d.is_zero() {
        return;
    }
    println!("  (pausing {:.0} s: {why})", d.as_secs_f64());
    std::thread::sleep(d);
}
