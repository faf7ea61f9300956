//! `boxd-agent`: PID 1 of every box.
//!
//! Started by the box runtime as `boxd-agent --box-init` inside the box's new
//! namespaces: it finishes the isolation ([`boxd_runtime::setup`]) and then
//! serves the daemon ([`boxd_agent::run`]).
//! Never anything else: no network, no daemon state, no policy.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("--box-init") {
        eprintln!("boxd-agent is started by boxd as PID 1 of a box; it is not run by hand.");
        return ExitCode::from(2);
    }
    let (listener, config) = match boxd_runtime::setup::enter_box() {
        Ok(v) => v,
        // The error was already reported to the daemon over the control socket.
        Err(_) => return ExitCode::from(1),
    };
    match boxd_agent::run(listener, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boxd-agent: {e}");
            ExitCode::from(1)
        }
    }
}
