//! `cargo bench --bench compare`: boxd beside the sandboxes a user could
//! run instead (runc, crun, bwrap, podman, nsenter, and the raw floor of
//! clone + exec), measured in one process on one machine, interleaved
//! (A B A B …), reported as medians, p99s and boxd/peer ratios. boxd is
//! measured as the library (`boxd_runtime::Runtime` in this process) and,
//! in scenarios 1 and 2, also over HTTP: a real `boxd serve` of this build
//! (`bench/daemon.rs`, network off), alive only during its scenario, its
//! rows set against the library's.
//!
//! Owns: the comparison scenarios of issue 7 (start + run `true`,
//! sequential and concurrent; exec in a running environment; idle density;
//! egress and header injection vs mitmproxy, in `network.rs`; snapshot /
//! restore / fork, in `snapshot.rs`),
//! and the section of `docs/BENCHMARKS.md` between `<!-- compare:begin -->`
//! and `<!-- compare:end -->` (rewritten by a full run, or with
//! `--write-docs`).
//!
//! Must never: assert or judge a timing (the only check is that each
//! scenario produced a boxd result); touch containers, cgroups or files it
//! did not create (every peer runs with private state roots under
//! `/tmp/boxd-compare-<pid>` and cgroup parents named `boxd-compare-<pid>`;
//! the `boxd serve` daemons' data dirs and cgroup parents are
//! `boxd-bench-<name>-<pid>`);
//! leave anything behind, even on failure (guards remove boxes, containers,
//! bundles and cgroups, and the run ends with a leftover check); wait
//! without a bound (every child has a deadline, every request to the
//! daemon a timeout); hide a peer that could not run (it is a "skipped:
//! why" row).
//!
//! Usage (as root): `cargo bench --bench compare [-- --quick]
//! [--write-docs | --no-write-docs] [--no-install]`.

mod boxd;
mod common;
#[path = "../daemon.rs"]
mod daemon;
#[path = "../egress.rs"]
mod egress;
#[path = "../interception.rs"]
mod interception;
mod mem;
mod network;
mod peers;
mod report;
mod scenarios;
mod serve;
#[path = "../shared.rs"]
mod shared;
mod snapshot;
#[path = "../../tests/common/test_ca.rs"]
mod test_ca;
mod workspace;

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const USAGE: &str = "usage (as root): cargo bench --bench compare [-- OPTIONS]
  --quick          a ~1-minute run with small counts (writes no docs unless --write-docs)
  --write-docs     rewrite the compare section of docs/BENCHMARKS.md (default for a full run)
  --no-write-docs  never touch docs/BENCHMARKS.md
  --no-install     do not run bench/compare-peers when a peer is missing
  --only P[,P…]    measure only these beside boxd (runc, crun, bwrap, podman, floor,
                   nsenter, host, mitmproxy); never writes docs";

struct Args {
    quick: bool,
    write_docs: bool,
    install: bool,
    only: Option<Vec<String>>,
}

const PEER_KEYS: [&str; 8] = [
    "runc",
    "crun",
    "bwrap",
    "podman",
    "floor",
    "nsenter",
    "host",
    "mitmproxy",
];

fn parse_args() -> Result<Option<Args>> {
    let (mut quick, mut write, mut install, mut only) = (false, None, true, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--only" => {
                let list = args.next().context("--only needs a list of peers")?;
                let keys: Vec<String> = list.split(',').map(|k| k.trim().to_string()).collect();
                if let Some(bad) = keys.iter().find(|k| !PEER_KEYS.contains(&k.as_str())) {
                    bail!(
                        "--only: unknown peer {bad} (known: {})",
                        PEER_KEYS.join(", ")
                    );
                }
                only = Some(keys);
            }
            "--quick" => quick = true,
            "--write-docs" => write = Some(true),
            "--no-write-docs" => write = Some(false),
            "--no-install" => install = false,
            // `cargo bench` passes --bench to harness-less benches.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other if other.starts_with('-') => bail!("unknown option {other}\n{USAGE}"),
            // A name filter from `cargo bench NAME`: there is one bench here.
            _ => {}
        }
    }
    if only.is_some() && write == Some(true) {
        bail!("--only measures a subset; it never writes the docs");
    }
    Ok(Some(Args {
        quick,
        write_docs: only.is_none() && write.unwrap_or(!quick),
        install,
        only,
    }))
}

/// The machine, as the report states it.
fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / (1024.0 * 1024.0))
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({cpu}), {mem_gib:.1} GiB memory, Linux {kernel}")
}

/// What the leftover check looks at: entries of every cgroup
/// hierarchy whose name mentions boxd, runc, podman or libpod; named
/// network namespaces (`ip netns`); mounts under `dirs`.
fn leftovers(dirs: &[&Path]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let interesting = |name: &str| {
        let l = name.to_ascii_lowercase();
        ["boxd", "runc", "podman", "libpod"]
            .iter()
            .any(|k| l.contains(k))
    };
    let mut roots = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    roots.extend(
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    );
    for root in roots {
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && interesting(&name) {
                out.insert(format!("cgroup {}", e.path().display()));
            }
        }
    }
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        out.insert(format!("netns {}", e.file_name().to_string_lossy()));
    }
    for dir in dirs {
        for m in workspace::mounts_under(dir) {
            out.insert(format!("mount {}", m.display()));
        }
    }
    out
}

/// Compares the leftovers now with those before the run. Returns a line
/// for the report; problems (ours left behind) are flagged loudly.
fn cleanup_check(when: &str, before: &BTreeSet<String>, allowed: &[&str]) -> (String, bool) {
    let pid = std::process::id();
    // The workspace, and the data dirs of the `boxd serve` daemons that
    // scenarios 1, 2 and 4 start (`bench/daemon.rs` names each data dir and
    // cgroup parent `boxd-bench-<name>-<pid>`); a daemon's data dir left
    // behind is a leftover itself.
    let workspace = std::path::PathBuf::from(format!("/tmp/boxd-compare-{pid}"));
    let daemons = daemon_dirs(pid);
    let mut dirs: Vec<&Path> = vec![&workspace];
    dirs.extend(daemons.iter().map(|d| d.as_path()));
    let mut now = leftovers(&dirs);
    now.extend(daemons.iter().map(|d| format!("dir {}", d.display())));
    let daemon = |e: &str| {
        e.split(['/', ' '])
            .any(|part| part.starts_with("boxd-bench-") && part.ends_with(&format!("-{pid}")))
    };
    let new: Vec<&String> = now
        .difference(before)
        .filter(|e| !allowed.iter().any(|a| e.ends_with(a)))
        .collect();
    let ours: Vec<&&String> = new
        .iter()
        .filter(|e| {
            e.contains(&format!("boxd-compare-{pid}")) || daemon(e) || e.starts_with("mount ")
        })
        .collect();
    if new.is_empty() {
        (format!("{when}: clean"), true)
    } else if ours.is_empty() {
        (
            format!(
                "{when}: nothing of this run left; appeared meanwhile (not this run's): {}",
                new.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            true,
        )
    } else {
        let list = ours
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!("compare: LEFTOVERS {when}: {list}");
        (format!("{when}: LEFT BEHIND: {list}"), false)
    }
}

/// The data dirs of this run's bench daemons that exist now.
fn daemon_dirs(pid: u32) -> Vec<std::path::PathBuf> {
    let tmp = std::env::temp_dir();
    let mut v: Vec<_> = std::fs::read_dir(&tmp)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("boxd-bench-") && name.ends_with(&format!("-{pid}"))
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn install_peers(manifest: &Path) {
    let script = manifest.join("bench/compare-peers");
    println!("some peers are missing; running {}", script.display());
    match common::run(
        Command::new("bash").arg(&script),
        common::Io::Capture,
        Duration::from_secs(15 * 60),
    ) {
        Ok(out) => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => println!("compare: WARNING: {} failed: {e:#}", script.display()),
    }
}

const METHOD: &str = "How each environment is made equivalent to a box:

- **runc / crun**: one OCI bundle per container (its `config.json` generated by the bench)
  over one shared rootfs directory: the host's `/usr` bind-mounted read-only and a small
  generated `/etc` (as boxd's `host` image), fresh `/proc`, read-only sysfs, tmpfs `/dev`,
  `/dev/shm` and `/tmp`, the OCI masked and read-only paths; user (root mapped to an
  unprivileged host range of 65536 ids, a different range per environment, as boxd does
  per box), mount, pid, net, uts, ipc and cgroup namespaces;
  the box's capability set, `no_new_privs`, a seccomp deny list of the syscalls a box
  refuses (by name; boxd also filters clone's namespace flags); a cgroup per container with
  `pids.max` 2048. State in a private `--root`. The rootfs is a plain directory, not an
  overlay: boxd pays for its copy-on-write root (two overlay mounts per box) and the peers
  here do not (and their root cannot write to it).
- **crun** on a hybrid cgroup host runs inside a private mount namespace where the unified
  cgroup2 mount is detached (crun refuses hybrid hosts); its row is timed including that
  wrapper, and the wrapper alone has its own row.
- **bwrap** runs as an unprivileged host uid of its own (so root inside maps to an
  unprivileged id, but only that one) with `--unshare-all --unshare-user --die-with-parent`
  (user, mount, pid, net, uts, ipc, cgroup), `/usr` and the generated `/etc` read-only,
  fresh `/proc`, minimal `/dev`, tmpfs `/tmp`; it has no seccomp filter, no cgroup and no
  `/sys`, so it does less than the others.
- **podman**: `podman run --rootfs` of the same rootfs with `/usr` mounted read-only,
  `--network none`, a private cgroup namespace, its own uid/gid range, runc as its OCI
  runtime, the cgroupfs manager, vfs storage in private directories, no events backend;
  podman's own default seccomp profile and capabilities.
- **podman in scenario 5** (snapshot / restore / fork): a `--rootfs` container cannot be
  committed, so the same rootfs is `podman import`ed once (untimed) into a second private
  storage root with the overlay driver (podman's default for root; vfs would copy each layer
  in full), and the containers run that image with the flags above; the snapshot is
  `podman commit --pause=true` (paused, as boxd freezes the box).
- **raw floor**: `clone` with the same seven namespaces + exec `true` + wait, nothing else
  (as `bench/runtime.rs`).
- **boxd**: the library (`boxd_runtime::Runtime`) in the bench's process, its data dir in
  the bench's temp dir: create (overlay root, namespaces, cgroups, seccomp, agent as PID 1)
  → exec `true` through the agent → destroy.
- **boxd over HTTP** (scenarios 1 and 2): a real `boxd serve` of this build, started for the
  scenario and removed after it (its own data dir, port and cgroup parent), with
  `[network] enabled = false` so its boxes have no network, as the library's boxes and the
  peers' `--network none`; its boxes have the API's default size (memory and CPU limits).
  The bench speaks HTTP/1.1 to it over keep-alive connections with a minimal client of its
  own (`bench/daemon.rs`; one per thread, opened before timing), so the numbers are the
  daemon's, not a client library's: POST /v2/box → POST /v2/box/{id}/exec of `true` →
  DELETE /v2/box/{id}. Its ratio cells say what the daemon adds to the library's time for
  the same span.";

fn main() -> ExitCode {
    // A client run of scenario 4 (this binary, in a box or on the host).
    if network::client(&std::env::args().collect::<Vec<_>>()) {
        return ExitCode::SUCCESS;
    }
    let r = real_main();
    common::stop_watchdog();
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("compare: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<bool> {
    let Some(args) = parse_args()? else {
        return Ok(true);
    };
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: the comparison benchmark needs root (boxes and peers need namespaces with id maps and cgroups)");
        return Ok(true);
    }
    let started = Instant::now();
    let absent_run_dirs = workspace::absent_run_dirs();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut tools = peers::Tools::find();
    let missing = tools.missing();
    if !missing.is_empty() {
        if args.install {
            install_peers(manifest);
            tools = peers::Tools::find();
        } else {
            println!("peers missing and --no-install given: run bench/compare-peers (as root)");
        }
        for why in tools.missing() {
            println!("PEER UNAVAILABLE: {why}");
        }
    }
    let versions = tools.versions.clone();
    let mut command = "cargo bench --bench compare".to_string();
    if args.quick || args.only.is_some() {
        command += " --";
    }
    if args.quick {
        command += " --quick";
    }
    if let Some(only) = &args.only {
        command += &format!(" --only {}", only.join(","));
    }
    let mut plan = scenarios::Plan::new(args.quick);
    plan.only = args.only.clone();
    let machine = machine();
    let date = common::utc_date();
    let describe = format!("{}, {}", plan.describe(), network::describe(args.quick));
    println!("boxd comparison benchmark: {describe}");
    println!("machine: {machine}; date: {date}");
    println!("peers: {}", versions.join("; "));
    let before = leftovers(&[]);
    let pid = std::process::id();
    let boxd_parent = format!("boxd-compare-{pid}-boxd");
    let ws = workspace::Workspace::new(tools, absent_run_dirs).context("prepare the workspace")?;
    let hybrid = ws.hybrid;
    let mut tables = Vec::new();
    let mut checks = Vec::new();
    let cgroups;
    {
        let boxd = boxd::Boxd::new(&ws.dir.join("boxd"), &ws.boxd_cg_parent)?;
        cgroups = boxd.mode();
        let cx = scenarios::Cx {
            ws: &ws,
            boxd: &boxd,
            plan: &plan,
        };
        // While boxd's runtime lives, its cgroup parent and its storage
        // pool's mount are expected.
        let allowed = [boxd_parent.as_str(), "/boxd/pool"];
        tables.extend(scenarios::start_and_run(&cx));
        for p in ws.sweep() {
            eprintln!("compare: cleanup: {p}");
        }
        checks.push(cleanup_check("after scenario 1", &before, &allowed));
        common::settle(plan.settle, "let the kernel finish tearing down namespaces");
        tables.push(scenarios::exec_in_running(&cx));
        for p in ws.sweep() {
            eprintln!("compare: cleanup: {p}");
        }
        checks.push(cleanup_check("after scenario 2", &before, &allowed));
        common::settle(plan.settle, "let the kernel finish tearing down namespaces");
        tables.extend(scenarios::idle_density(&cx));
        for p in ws.sweep() {
            eprintln!("compare: cleanup: {p}");
        }
        checks.push(cleanup_check("after scenario 3", &before, &allowed));
        common::settle(plan.settle, "let the kernel finish tearing down namespaces");
        tables.extend(network::egress_and_injection(
            args.quick,
            plan.left_out("mitmproxy"),
        ));
        checks.push(cleanup_check("after scenario 4", &before, &allowed));
        common::settle(plan.settle, "let the kernel finish tearing down namespaces");
        tables.push(snapshot::snapshot_restore_fork(&cx));
        for p in ws.sweep() {
            eprintln!("compare: cleanup: {p}");
        }
        checks.push(cleanup_check("after scenario 5", &before, &allowed));
    }
    drop(ws);
    checks.push(cleanup_check("at the end", &before, &[]));
    let elapsed = started.elapsed();

    let mut body = String::new();
    body += "## boxd beside the sandboxes a user could pick instead — `bench/compare`\n\n";
    body += &format!(
        "Command (as root): `{command}` — {}. A full run rewrites this section; \
         `-- --quick` (about a minute) prints only, unless given `--write-docs`. The peers are \
         Debian packages that `bench/compare-peers` installs (the bench runs it when one is \
         missing). Every environment type is measured in the same process, interleaved, the \
         order shuffled each round (seeded, the same in every run); ratios compare medians. No timing is asserted.\n\n",
        describe
    );
    body += &format!(
        "Machine: {machine}, {cgroups}. Date: {date}. The run took {:.0} s{}.\n\n",
        elapsed.as_secs_f64(),
        if hybrid {
            "; the host has hybrid cgroups"
        } else {
            ""
        }
    );
    body += &format!("Peers: {}.\n\n", versions.join("; "));
    body += METHOD;
    body += "\n\n";
    for t in &tables {
        body += &t.markdown();
        body.push('\n');
    }
    body +=
        "\nCleanup checks (cgroups named boxd/runc/podman/libpod, `ip netns`, mounts under the \
             bench's temp dir, before vs after):\n\n";
    for (line, _) in &checks {
        body += &format!("- {line}\n");
    }
    println!("\n{body}");

    if args.write_docs {
        let docs = manifest.join("docs/BENCHMARKS.md");
        report::rewrite_section(&docs, &body)?;
        println!("wrote the compare section of {}", docs.display());
    }
    let mut ok = true;
    for t in &tables {
        if !t.boxd_measured {
            eprintln!("compare: FAILED: no boxd result for \"{}\"", t.title);
            ok = false;
        }
    }
    if checks.iter().any(|(_, clean)| !clean) {
        eprintln!("compare: FAILED: the run left something behind (see the cleanup checks)");
        ok = false;
    }
    Ok(ok)
}
