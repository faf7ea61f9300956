//! Scenario 4 of the comparison: a box's network. *Egress*: the same
//! client's request latency and download throughput from inside a box
//! through boxd's proxy vs from the host directly (`bench/egress.rs`).
//! *Injection*: the same HTTPS client through boxd injecting an attach
//! header vs through mitmproxy (from PyPI) injecting it with a small addon,
//! same upstream, beside the spliced and direct routes
//! (`bench/interception.rs`).
//!
//! Both run real `boxd serve` daemons of this build against loopback
//! upstreams started in this process; the clients in the boxes are this
//! binary (static), so `main` hands `--client` invocations to
//! [`client`]. A measurement that fails becomes a "skipped: why" row
//! (boxd unmeasured, so the run fails); the daemons, boxes and mitmproxy
//! are gone by then.
//!
//! Must never: judge a timing; reach anything but loopback and its own
//! daemons' boxes.

use crate::common::{fmt_dur, speed_ratio};
use crate::egress;
use crate::interception::{self, Route};
use crate::report::Table;
use crate::scenarios::dash;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The counts of a quick or a full run.
struct Counts {
    egress: egress::Options,
    injection: interception::Options,
}

fn counts(quick: bool) -> Counts {
    if quick {
        Counts {
            egress: egress::Options {
                rounds: 3,
                pings: 1000,
                dl_bytes: 128 << 20,
                create_runs: 5,
            },
            injection: interception::Options {
                rounds: 3,
                ka_n: 300,
                conn_n: 30,
                skip_mitm: None,
            },
        }
    } else {
        Counts {
            egress: egress::Options {
                rounds: 5,
                pings: 2000,
                dl_bytes: 1 << 30,
                create_runs: 30,
            },
            injection: interception::Options {
                rounds: 5,
                ka_n: 2000,
                conn_n: 200,
                skip_mitm: None,
            },
        }
    }
}

/// The scenario's counts, for the run's description.
pub fn describe(quick: bool) -> String {
    let c = counts(quick);
    format!(
        "egress {} × ({} round trips + a {} MiB download), injection {} × ({} kept-alive \
         requests + {} new connections) per route",
        c.egress.rounds,
        c.egress.pings,
        c.egress.dl_bytes >> 20,
        c.injection.rounds,
        c.injection.ka_n,
        c.injection.conn_n,
    )
}

/// Serves `--client MODE …` (a client run in a box or on the host) if
/// `args` hold one; returns whether it did.
pub fn client(args: &[String]) -> bool {
    let Some(i) = args.iter().position(|a| a == "--client") else {
        return false;
    };
    let rest = &args[i + 1..];
    match rest.first().map(String::as_str) {
        Some(m) if egress::is_client_mode(m) => egress::client(rest),
        Some(m) if interception::is_client_mode(m) => interception::client(rest),
        other => panic!("--client: unknown mode {other:?}"),
    }
    true
}

/// The panic message of a failed measurement.
fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

/// Scenario 4's tables; `skip_mitm`: why mitmproxy is left out (`--only`).
pub fn egress_and_injection(quick: bool, skip_mitm: Option<String>) -> Vec<Table> {
    let Counts {
        egress: eo,
        mut injection,
    } = counts(quick);
    println!("scenario 4: egress through boxd's proxy vs the host; header injection vs mitmproxy");
    let mut egress_table = Table::new(
        format!(
            "4a. Egress: the same client in a box through boxd's proxy vs on the host \
             ({} rounds interleaved, upstream on loopback)",
            eo.rounds
        ),
        &[
            "route",
            "request latency median",
            "p99",
            "round trips",
            &format!("{} MiB download (median)", eo.dl_bytes >> 20),
            "box vs host (latency)",
            "box vs host (throughput)",
        ],
    );
    match catch_unwind(AssertUnwindSafe(|| egress::measure(eo))) {
        Ok(r) => {
            let n = (r.options.rounds * r.options.pings).to_string();
            egress_table.row(vec![
                "box → boxd's proxy (allowNet, spliced) → upstream".into(),
                fmt_dur(r.latency_box.median),
                fmt_dur(r.latency_box.p99),
                n.clone(),
                format!("{:.0} MiB/s", r.throughput_box),
                dash(),
                dash(),
            ]);
            let added = r.latency_box.median.saturating_sub(r.latency_host.median);
            egress_table.row(vec![
                "host → upstream directly (no sandbox)".into(),
                fmt_dur(r.latency_host.median),
                fmt_dur(r.latency_host.p99),
                n,
                format!("{:.0} MiB/s", r.throughput_host),
                format!(
                    "the proxy adds {} ({:.2}x)",
                    fmt_dur(added),
                    r.latency_box.median.as_secs_f64() / r.latency_host.median.as_secs_f64()
                ),
                format!(
                    "the box gets {:.0} % of the host's",
                    100.0 * r.throughput_box / r.throughput_host
                ),
            ]);
            egress_table.boxd_measured = true;
            egress_table.notes.push(
                "One static client (this bench binary with `--client`) runs in a box of a \
                 `boxd serve` (its `allow_net` naming the upstream) and on the host, rounds \
                 interleaved: 64-byte ping-pong on one kept-alive TCP connection (50 untimed \
                 first), then one download per round. The box reaches the upstream the only \
                 way a box can: its connection is redirected to boxd's proxy, which checks \
                 the allow-list and splices it to the upstream (`[network.upstreams]` points \
                 the name at the loopback server)."
                    .into(),
            );
            egress_table.notes.push(format!(
                "What a box's network (veth pair, addresses, nftables rules, proxy registration) \
                 adds to its start: HTTP create → first `true` median {} with networking vs {} \
                 without ({} each, interleaved, two daemons): a difference of {:+.3} ms \
                 ({:.2}x).",
                fmt_dur(r.create_net.median),
                fmt_dur(r.create_nonet.median),
                r.options.create_runs,
                (r.create_net.median.as_secs_f64() - r.create_nonet.median.as_secs_f64()) * 1e3,
                r.create_net.median.as_secs_f64() / r.create_nonet.median.as_secs_f64()
            ));
        }
        Err(e) => egress_table.skipped("boxd", &panic_text(e)),
    }

    let mut inject_table = Table::new(
        format!(
            "4b. Injecting an attach header into HTTPS: boxd vs mitmproxy, same upstream, \
             same client ({} rounds interleaved)",
            injection.rounds
        ),
        &[
            "route",
            "kept-alive GET median",
            "p99",
            "n",
            "new connection + GET median",
            "p99",
            "n",
            "boxd (intercepted) vs it: kept-alive",
            "new connection",
        ],
    );
    injection.skip_mitm = skip_mitm;
    match catch_unwind(AssertUnwindSafe(|| interception::measure(injection))) {
        Ok(r) => {
            let boxd = (
                r.kept_alive[Route::Intercepted as usize],
                r.new_conn[Route::Intercepted as usize],
            );
            for route in Route::ALL {
                let (ka, conn) = (r.kept_alive[route as usize], r.new_conn[route as usize]);
                let (Some(ka), Some(conn)) = (ka, conn) else {
                    let why = match (route, &r.mitm, &r.unavailable) {
                        (Route::Mitm, Err(why), _) => why.clone(),
                        (Route::Intercepted, _, Some(why)) => why.clone(),
                        _ => "did not run".into(),
                    };
                    inject_table.skipped(route.label(), &why);
                    continue;
                };
                let vs = |b: Option<crate::common::Stats>, p: crate::common::Stats| match b {
                    _ if route == Route::Intercepted => dash(),
                    Some(b) => speed_ratio(b.median, p.median),
                    None => "n/a".into(),
                };
                inject_table.row(vec![
                    route.label().into(),
                    fmt_dur(ka.median),
                    fmt_dur(ka.p99),
                    ka.n.to_string(),
                    fmt_dur(conn.median),
                    fmt_dur(conn.p99),
                    conn.n.to_string(),
                    vs(boxd.0, ka),
                    vs(boxd.1, conn),
                ]);
            }
            inject_table.boxd_measured = boxd.0.is_some() && boxd.1.is_some();
            inject_table.notes.push(format!(
                "An HTTPS upstream in this process (a leaf from a test CA that boxd trusts via \
                 `[tls] extra_roots`) answers `GET /` with 64 bytes and counts the requests \
                 that carried `Authorization`; every run is checked to have delivered the \
                 header on exactly the intercepted and mitmproxy requests. Intercepted: a box \
                 whose `attach_headers` name the upstream — boxd terminates its TLS with a \
                 leaf from boxd's CA, injects the header, verifies the upstream and \
                 re-encrypts. Spliced: a box without rules (the proxy only splices). \
                 mitmproxy{}: `mitmdump --mode reverse:https://…` on the host with a two-line \
                 addon setting the same header. The client (this binary) runs in the boxes \
                 and on the host; new connections are full handshakes (no resumption, as \
                 boxd's interception offers none).",
                match &r.mitm {
                    Ok(v) => format!(" ({v}, from PyPI into a venv under the target dir)"),
                    Err(_) => String::new(),
                }
            ));
            inject_table.notes.push(format!(
                "Per route and round: {} kept-alive requests ({} untimed first) and {} new \
                 connections ({} untimed first), the routes' order rotating; the measurement \
                 took {:.0} s.",
                r.options.ka_n,
                interception::KA_WARMUP,
                r.options.conn_n,
                interception::CONN_WARMUP,
                r.elapsed.as_secs_f64()
            ));
        }
        Err(e) => inject_table.skipped("boxd", &panic_text(e)),
    }
    vec![egress_table, inject_table]
}
