//! The host nftables ruleset: one table (`inet boxd` by default) that
//! makes boxd's egress proxy and resolver the only things a box can reach.
//!
//! For traffic arriving on a box interface (`iifname "bx*"`):
//! - spoofed source addresses (reverse-path lookup fails) and packets to
//!   link-local destinations (other than ICMPv6 neighbour discovery) are
//!   dropped before NAT;
//! - UDP and TCP to port 53 are redirected (DNAT to the interface's own
//!   address) to the resolver port, every other TCP connection to the
//!   proxy port. The proxy reads the original destination with
//!   `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` and knows the box from the
//!   local address (the host end of `bx<slot>`). `redirect`, not TPROXY:
//!   no policy routing, no `IP_TRANSPARENT` sockets, and conntrack keeps
//!   the original destination for the proxy to read.
//! - input (chain `box_input`): only redirected connections (`ct status dnat`) to the proxy
//!   and resolver ports, and ICMPv6 neighbour solicitations/adverts
//!   (hop limit 255), are accepted; everything else is dropped (other
//!   host ports, UDP incl. QUIC, ICMP, other protocols); the proxy and
//!   resolver ports are closed to every other interface but loopback;
//! - forward: everything from or to a box interface is dropped, so boxes
//!   never reach each other or anything routed.
//!
//! Owns: rendering that table from a [`RulesetConfig`] and applying it
//! with one `nft -f -` run — one kernel transaction, so installing at
//! start (`add table; delete table; table {…}`) atomically replaces a
//! table left by a crash and never leaves boxes unfiltered in between.
//! Why the `nft` binary and not a netlink library: the ruleset is fixed
//! (per-box state is in interface names and addresses, not in rules), it
//! is written once per daemon start, and the text is exactly what an
//! operator reads back with `nft list table inet boxd`, which keeps the
//! unit tests honest; `rustables` would need every expression (fib,
//! redirect, ct status) hand-built as raw netlink expressions.
//!
//! Never: touches any table but its own, flushes the whole ruleset, or
//! runs in a network namespace other than the one it is given (tests
//! always give a throwaway namespace, never the real host's).

use std::fmt::Write as _;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::addr::IFNAME_PREFIX;
use crate::error::{NetError, Result};

/// What the ruleset is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesetConfig {
    /// The nftables table (family `inet`), `boxd` by default.
    pub table: String,
    /// Host-side box interface names start with this (`bx`).
    pub iface_prefix: String,
    /// The egress proxy's TCP port on the host.
    pub proxy_port: u16,
    /// The resolver's port on the host (UDP and TCP).
    pub resolver_port: u16,
    /// The `nft` binary (looked up in `PATH` if not absolute).
    pub nft: String,
}

impl RulesetConfig {
    pub fn new(proxy_port: u16, resolver_port: u16) -> Self {
        RulesetConfig {
            table: "boxd".into(),
            iface_prefix: IFNAME_PREFIX.into(),
            proxy_port,
            resolver_port,
            nft: "nft".into(),
        }
    }
}

/// The rendered, validated ruleset.
#[derive(Debug, Clone)]
pub struct Ruleset {
    config: RulesetConfig,
}

fn is_simple_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Ruleset {
    /// Checks the config: names are plain identifiers (they are pasted
    /// into nft text), ports are distinct and non-zero.
    pub fn new(config: RulesetConfig) -> Result<Self> {
        let bad = |m: String| Err(NetError::InvalidRuleset(m));
        if !is_simple_name(&config.table, 32) {
            return bad(format!(
                "table name {:?}: use 1-32 of a-z, 0-9, '_'",
                config.table
            ));
        }
        // Interface names are at most 15 bytes; leave room for a slot number.
        if !is_simple_name(&config.iface_prefix, 5) {
            return bad(format!(
                "interface prefix {:?}: use 1-5 of a-z, 0-9, '_'",
                config.iface_prefix
            ));
        }
        if config.proxy_port == 0 || config.resolver_port == 0 {
            return bad("proxy and resolver ports must be non-zero".into());
        }
        if config.proxy_port == config.resolver_port {
            return bad(format!(
                "proxy and resolver share port {}",
                config.proxy_port
            ));
        }
        if config.nft.is_empty() {
            return bad("empty nft binary path".into());
        }
        Ok(Ruleset { config })
    }

    pub fn config(&self) -> &RulesetConfig {
        &self.config
    }

    /// The table's body, as `nft list table` would show it (modulo
    /// formatting): chains and rules only.
    pub fn table_text(&self) -> String {
        let RulesetConfig {
            table,
            iface_prefix,
            proxy_port: proxy,
            resolver_port: dns,
            ..
        } = &self.config;
        let box_if = format!("iifname \"{iface_prefix}*\"");
        let mut t = String::new();
        let _ = writeln!(t, "table inet {table} {{");
        // Before conntrack/NAT: spoofed sources and link-local targets.
        let _ = writeln!(t, "\tchain box_guard {{");
        let _ = writeln!(
            t,
            "\t\ttype filter hook prerouting priority raw; policy accept;"
        );
        let _ = writeln!(t, "\t\t{box_if} fib saddr . iif oif missing counter drop");
        let _ = writeln!(
            t,
            "\t\t{box_if} ip6 daddr fe80::/10 meta l4proto != ipv6-icmp counter drop"
        );
        let _ = writeln!(t, "\t}}");
        // Redirects: DNS to the resolver, every other TCP to the proxy.
        let _ = writeln!(t, "\tchain box_redirect {{");
        let _ = writeln!(
            t,
            "\t\ttype nat hook prerouting priority dstnat; policy accept;"
        );
        let _ = writeln!(
            t,
            "\t\t{box_if} meta l4proto {{ tcp, udp }} th dport 53 redirect to :{dns}"
        );
        let _ = writeln!(t, "\t\t{box_if} meta l4proto tcp redirect to :{proxy}");
        let _ = writeln!(t, "\t}}");
        // What a box may reach on the host: the two redirect targets.
        let _ = writeln!(t, "\tchain box_input {{");
        let _ = writeln!(
            t,
            "\t\ttype filter hook input priority filter; policy accept;"
        );
        let _ = writeln!(t, "\t\t{box_if} jump from_box");
        // The proxy and resolver serve boxes only, never the network.
        let _ = writeln!(
            t,
            "\t\tiifname != \"lo\" meta l4proto {{ tcp, udp }} th dport {{ {proxy}, {dns} }} counter drop"
        );
        let _ = writeln!(t, "\t}}");
        let _ = writeln!(t, "\tchain from_box {{");
        let _ = writeln!(
            t,
            "\t\tmeta l4proto tcp th dport {proxy} ct status dnat accept"
        );
        let _ = writeln!(
            t,
            "\t\tmeta l4proto {{ tcp, udp }} th dport {dns} ct status dnat accept"
        );
        let _ = writeln!(
            t,
            "\t\ticmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} ip6 hoplimit 255 accept"
        );
        let _ = writeln!(t, "\t\tcounter drop");
        let _ = writeln!(t, "\t}}");
        // Nothing is ever routed from or to a box.
        let _ = writeln!(t, "\tchain box_forward {{");
        let _ = writeln!(
            t,
            "\t\ttype filter hook forward priority filter; policy accept;"
        );
        let _ = writeln!(t, "\t\t{box_if} counter drop");
        let _ = writeln!(t, "\t\toifname \"{iface_prefix}*\" counter drop");
        let _ = writeln!(t, "\t}}");
        let _ = writeln!(t, "}}");
        t
    }

    /// The install script: creates the table, or atomically replaces one
    /// left by an earlier run (`add` makes `delete` safe when absent; the
    /// whole file is one transaction).
    pub fn install_script(&self) -> String {
        let table = &self.config.table;
        format!(
            "add table inet {table}\ndelete table inet {table}\n{}",
            self.table_text()
        )
    }

    /// The table while boxd is stopped but boxes keep running: nothing
    /// from or to a box interface is accepted or routed (no redirects, as
    /// nothing listens), so a box reaches nothing until the next start
    /// installs the full table again.
    pub fn lockdown_script(&self) -> String {
        let RulesetConfig {
            table,
            iface_prefix,
            ..
        } = &self.config;
        format!(
            "add table inet {table}\ndelete table inet {table}\n\
             table inet {table} {{\n\
             \tchain box_input {{\n\t\ttype filter hook input priority filter; policy accept;\n\
             \t\tiifname \"{iface_prefix}*\" counter drop\n\t}}\n\
             \tchain box_forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tiifname \"{iface_prefix}*\" counter drop\n\
             \t\toifname \"{iface_prefix}*\" counter drop\n\t}}\n}}\n"
        )
    }

    /// Replaces the table with the lockdown table (clean shutdown while
    /// boxes keep running).
    pub async fn lock_down(&self, netns: Option<BorrowedFd<'_>>) -> Result<()> {
        self.run_nft(
            "lock down",
            &["-f", "-"],
            Some(self.lockdown_script()),
            netns,
        )
        .await?;
        tracing::info!(table = %self.config.table, "box network ruleset locked down: boxes reach nothing until boxd starts");
        Ok(())
    }

    /// The removal script; succeeds whether or not the table exists.
    pub fn remove_script(&self) -> String {
        let table = &self.config.table;
        format!("add table inet {table}\ndelete table inet {table}\n")
    }

    /// Installs (or replaces) the table in `netns`, or in the caller's
    /// network namespace if `None`.
    pub async fn install(&self, netns: Option<BorrowedFd<'_>>) -> Result<()> {
        self.run_nft("install", &["-f", "-"], Some(self.install_script()), netns)
            .await?;
        tracing::info!(
            table = %self.config.table,
            proxy_port = self.config.proxy_port,
            resolver_port = self.config.resolver_port,
            "box network ruleset installed"
        );
        Ok(())
    }

    /// Removes the table (clean shutdown). Absent is fine.
    pub async fn remove(&self, netns: Option<BorrowedFd<'_>>) -> Result<()> {
        self.run_nft("remove", &["-f", "-"], Some(self.remove_script()), netns)
            .await?;
        tracing::info!(table = %self.config.table, "box network ruleset removed");
        Ok(())
    }

    /// The table as the kernel has it (`nft list table inet <table>`), or
    /// `None` if it is not installed.
    pub async fn current(&self, netns: Option<BorrowedFd<'_>>) -> Result<Option<String>> {
        let table = &self.config.table;
        match self
            .run_nft("list", &["list", "table", "inet", table], None, netns)
            .await
        {
            Ok(text) => Ok(Some(text)),
            Err(NetError::Nft { stderr, .. }) if stderr.contains("No such file or directory") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn run_nft(
        &self,
        action: &'static str,
        args: &[&str],
        stdin: Option<String>,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<String> {
        let nft = &self.config.nft;
        let mut cmd = tokio::process::Command::new(nft);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(fd) = netns {
            let raw = fd.as_raw_fd();
            // SAFETY: only setns(2), which is async-signal-safe, runs
            // between fork and exec; `raw` stays open in the child because
            // the parent holds the fd for the duration of this call.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(NetError::io(format!(
            "run {nft} (install the nftables package)"
        )))?;
        if let Some(input) = stdin {
            if let Some(mut pipe) = child.stdin.take() {
                pipe.write_all(input.as_bytes())
                    .await
                    .map_err(NetError::io(format!("write the ruleset to {nft}")))?;
                // Dropping the pipe closes nft's stdin.
            }
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(NetError::io(format!("wait for {nft}")))?;
        if !out.status.success() {
            return Err(NetError::Nft {
                action,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Ruleset {
        Ruleset::new(RulesetConfig::new(15001, 15053)).unwrap()
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(|l| l.trim().to_string()).collect()
    }

    #[test]
    fn redirects_dns_then_tcp() {
        let l = lines(&rules().table_text());
        let dns = l
            .iter()
            .position(|r| {
                r == "iifname \"bx*\" meta l4proto { tcp, udp } th dport 53 redirect to :15053"
            })
            .expect("dns redirect");
        let tcp = l
            .iter()
            .position(|r| r == "iifname \"bx*\" meta l4proto tcp redirect to :15001")
            .expect("tcp redirect");
        // TCP 53 must hit the DNS rule before the catch-all TCP one.
        assert!(dns < tcp);
        assert!(l.contains(&"type nat hook prerouting priority dstnat; policy accept;".to_string()));
    }

    #[test]
    fn input_only_allows_redirected_proxy_and_resolver() {
        let text = rules().table_text();
        let body = &text[text.find("chain from_box {").unwrap()..];
        let body: Vec<String> = lines(&body[..body.find("\n\t}").unwrap()]);
        assert_eq!(
            body[1..],
            [
                "meta l4proto tcp th dport 15001 ct status dnat accept",
                "meta l4proto { tcp, udp } th dport 15053 ct status dnat accept",
                "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept",
                "counter drop",
            ]
        );
        assert!(lines(&text).contains(&"iifname \"bx*\" jump from_box".to_string()));
    }

    #[test]
    fn forward_drops_both_directions_and_guard_drops_spoofing() {
        let l = lines(&rules().table_text());
        assert!(l.contains(&"iifname \"bx*\" counter drop".to_string()));
        assert!(l.contains(&"oifname \"bx*\" counter drop".to_string()));
        assert!(l.contains(&"iifname \"bx*\" fib saddr . iif oif missing counter drop".to_string()));
        assert!(l.contains(&"type filter hook forward priority filter; policy accept;".to_string()));
        // Policies stay accept: the table only judges box traffic.
        assert!(l.iter().filter(|r| r.contains("policy drop")).count() == 0);
    }

    #[test]
    fn install_replaces_atomically_and_remove_is_idempotent() {
        let r = rules();
        let s = r.install_script();
        assert!(s.starts_with("add table inet boxd\ndelete table inet boxd\ntable inet boxd {\n"));
        assert_eq!(
            r.remove_script(),
            "add table inet boxd\ndelete table inet boxd\n"
        );
        let mut c = RulesetConfig::new(1, 2);
        c.table = "boxd_test".into();
        c.iface_prefix = "vb".into();
        let t = Ruleset::new(c).unwrap().table_text();
        assert!(t.starts_with("table inet boxd_test {"));
        assert!(t.contains("iifname \"vb*\" meta l4proto tcp redirect to :1"));
        assert!(!t.contains("bx"));
    }

    #[test]
    fn rejects_bad_config() {
        let ok = RulesetConfig::new(15001, 15053);
        for (f, v) in [
            ("table", "boxd; flush ruleset"),
            ("table", ""),
            ("table", "Boxd"),
            ("prefix", "bx\"*"),
            ("prefix", "toolong"),
            ("prefix", "1bx"),
        ] {
            let mut c = ok.clone();
            match f {
                "table" => c.table = v.into(),
                _ => c.iface_prefix = v.into(),
            }
            assert!(Ruleset::new(c).is_err(), "{f} {v:?}");
        }
        assert!(Ruleset::new(RulesetConfig::new(0, 53)).is_err());
        assert!(Ruleset::new(RulesetConfig::new(5353, 5353)).is_err());
    }
}
