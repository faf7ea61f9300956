//! TLS interception benchmark: what boxd's header-injecting proxy costs an
//! HTTPS request, beside mitmproxy doing the same (`bench/interception.rs`
//! measures; this prints). Run as root:
//! `cargo bench --bench intercept [-- --quick]`. Prints medians, p99s and
//! differences; asserts only that each step worked and that the header was
//! injected on exactly the intercepted and mitmproxy requests. The same
//! numbers are scenario 4 of `cargo bench --bench compare`.

#[path = "shared.rs"]
mod shared;

#[path = "daemon.rs"]
mod daemon;

#[path = "interception.rs"]
mod interception;

#[path = "../tests/common/test_ca.rs"]
mod test_ca;

use interception::Route;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--client") {
        return interception::client(&args[i + 1..]);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the interception benchmark needs root");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let r = interception::measure(interception::Options {
        rounds: if quick { 3 } else { 5 },
        ka_n: if quick { 300 } else { 2000 },
        conn_n: if quick { 30 } else { 200 },
        skip_mitm: None,
    });
    print(&r);
    // Fails (after printing everything else) when the intercepted route
    // could not be measured, which is this bench's point; the daemon,
    // mitmproxy and the scratch files are gone by then.
    if r.unavailable.is_some() {
        std::process::exit(1);
    }
}

fn print(r: &interception::Report) {
    let f = shared::fmt_dur;
    let o = &r.options;
    println!(
        "boxd TLS interception benchmark ({} rounds interleaved, upstream on loopback, {:.0} s)",
        o.rounds,
        r.elapsed.as_secs_f64()
    );
    for (what, v, each) in [
        (
            "GET / (64 B body) on a kept-alive TLS connection",
            &r.kept_alive,
            format!("{} per round", o.ka_n),
        ),
        (
            "new connection: TCP connect + full TLS handshake + GET /",
            &r.new_conn,
            format!("{} per round", o.conn_n),
        ),
    ] {
        println!("{what} ({each}):");
        println!("| route | n | median | p99 |");
        println!("|---|---|---|---|");
        for route in Route::ALL {
            match v[route as usize] {
                Some(s) => println!(
                    "| {} | {} | {} | {} |",
                    route.label(),
                    s.n,
                    f(s.median),
                    f(s.p99)
                ),
                None if route == Route::Mitm => {
                    println!("| {} | – | skipped | skipped |", route.label())
                }
                None => println!("| {} | – | unavailable | unavailable |", route.label()),
            }
        }
        let diff = |a: Route, b: Route, label: &str| {
            if let (Some(x), Some(y)) = (v[a as usize], v[b as usize]) {
                let d = x.median.as_secs_f64() - y.median.as_secs_f64();
                println!(
                    "  {label:<40} {:+.3} ms median ({:.2}x)",
                    d * 1e3,
                    x.median.as_secs_f64() / y.median.as_secs_f64()
                );
            }
        };
        diff(
            Route::Intercepted,
            Route::Spliced,
            "interception (intercepted − spliced)",
        );
        diff(Route::Intercepted, Route::Direct, "intercepted − direct");
        diff(
            Route::Spliced,
            Route::Direct,
            "splicing proxy (spliced − direct)",
        );
        diff(Route::Mitm, Route::Direct, "mitmproxy − direct");
        diff(Route::Intercepted, Route::Mitm, "intercepted − mitmproxy");
    }
    if let (Some(i), Some(s)) = (
        r.kept_alive[Route::Intercepted as usize],
        r.kept_alive[Route::Spliced as usize],
    ) {
        let added = i.median.saturating_sub(s.median);
        println!(
            "target: interception adds ≤ 1 ms median per kept-alive request: {} ({})",
            if added <= Duration::from_millis(1) {
                "met"
            } else {
                "NOT met"
            },
            f(added)
        );
    }
    if let Some(c) = r.new_conn[Route::Intercepted as usize] {
        println!(
            "target: new intercepted connection ≤ 3 ms median: {} ({})",
            if c.median <= Duration::from_millis(3) {
                "met"
            } else {
                "NOT met"
            },
            f(c.median)
        );
    }
    if let Some(e) = &r.unavailable {
        println!("intercepted rows UNAVAILABLE (no interception in this build?): {e}");
    }
    match &r.mitm {
        Ok(v) => println!("mitmproxy: {v}"),
        Err(why) => println!("mitmproxy: SKIPPED: {why}"),
    }
}
