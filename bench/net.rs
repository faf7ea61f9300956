//! Egress benchmark: what boxd's network path costs a box
//! (`bench/egress.rs` measures; this prints). Run as root:
//! `cargo bench --bench net [-- --runs N] [-- --quick]`. Prints medians,
//! p99s and ratios; asserts only that each step worked. The same numbers
//! are scenario 4 of `cargo bench --bench compare`.

#[path = "shared.rs"]
mod shared;

#[path = "daemon.rs"]
mod daemon;

#[path = "egress.rs"]
mod egress;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--client") {
        return egress::client(&args[i + 1..]);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the network benchmark needs root");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let r = egress::measure(egress::Options {
        rounds: if quick { 3 } else { 5 },
        pings: 2000,
        dl_bytes: if quick { 256 << 20 } else { 1 << 30 },
        create_runs: shared::runs_arg(if quick { 20 } else { 50 }),
    });
    let o = &r.options;
    let f = shared::fmt_dur;
    let (bb, hb) = (r.latency_box.median, r.latency_host.median);
    let (cn, co) = (r.create_net.median, r.create_nonet.median);
    println!(
        "boxd network benchmark ({} rounds interleaved, upstream on loopback)",
        o.rounds
    );
    println!(
        "request latency, 64 B ping-pong on a kept-alive connection ({} round trips each side):",
        o.rounds * o.pings
    );
    println!(
        "  box → proxy → upstream  median {}  p99 {}",
        f(bb),
        f(r.latency_box.p99)
    );
    println!(
        "  host → upstream         median {}  p99 {}",
        f(hb),
        f(r.latency_host.p99)
    );
    println!(
        "  added by the proxy      median {}  ({:.2}x)",
        f(bb.saturating_sub(hb)),
        bb.as_secs_f64() / hb.as_secs_f64()
    );
    println!(
        "throughput, {} MiB download (median of {}):",
        o.dl_bytes >> 20,
        o.rounds
    );
    let (tb, th) = (r.throughput_box, r.throughput_host);
    println!("  box → proxy → upstream  {tb:.0} MiB/s");
    println!("  host → upstream         {th:.0} MiB/s");
    println!("  box / host              {:.1} %", 100.0 * tb / th);
    println!(
        "create → first exec over HTTP ({} runs each, interleaved):",
        o.create_runs
    );
    println!(
        "  with networking         median {}  p99 {}",
        f(cn),
        f(r.create_net.p99)
    );
    println!(
        "  without networking      median {}  p99 {}",
        f(co),
        f(r.create_nonet.p99)
    );
    println!(
        "  networking adds         median {}  ({:.2}x)",
        f(cn.saturating_sub(co)),
        cn.as_secs_f64() / co.as_secs_f64()
    );
}
