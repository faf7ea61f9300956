//! Host-local addresses: whether an address the proxy is about to connect
//! to would be delivered to the host itself (an address of any host
//! interface, either family, loopback, `0.0.0.0`/`::`, an AnyIP `local`
//! route, a broadcast or anycast address the host answers). A box must
//! never be spliced to the host's own services, whatever its policy says.
//!
//! How it stays current: the kernel is asked at connect time, for the
//! exact address, with one `RTM_GETROUTE` lookup (what `ip route get`
//! does) on a netlink socket of the proxy's network namespace: the
//! answer's route type is `local`, `broadcast` or `anycast` exactly when
//! the kernel would deliver the connection to the host. There is no list
//! of addresses to cache, so none goes stale: an address added to an
//! interface a moment ago (a new veth, DHCP renewing to a new address)
//! counts at the next connection, and routes of the `local` table that
//! are no interface's address count too. (A cached `getifaddrs` list
//! would have a staleness window and cost O(interfaces) per refresh —
//! every box's veth is an interface; an address-change subscription has
//! the window between the change and the event, and loses events when
//! its socket overflows.) The cost is one netlink round trip per upstream
//! address tried, a few microseconds.
//!
//! Fails closed: when the kernel cannot be asked, the address counts as
//! local (the caller refuses the connection) and the error is reported.
//!
//! Owns: one netlink route socket, opened lazily in the namespace of the
//! first caller's thread (the proxy's runtime threads, so a proxy serving
//! another namespace asks that namespace) and reopened after a failure.
//! Never: changes routes or addresses, or decides policy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::RouteMessageBuilder;

use crate::error::{NetError, Result};
use crate::policy::canonical_ip;

/// Asks the kernel whether addresses are the host's own.
#[derive(Debug, Default)]
pub struct HostLocal {
    conn: Mutex<Option<Conn>>,
}

#[derive(Debug)]
struct Conn {
    handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostLocal {
    pub fn new() -> Self {
        HostLocal::default()
    }

    /// True when a connection to `ip` would be delivered to this host
    /// (IPv4-mapped IPv6 is read as IPv4, as the socket would). Errors
    /// when the kernel could not be asked: callers treat that as local.
    pub async fn is_local(&self, ip: IpAddr) -> Result<bool> {
        let ip = canonical_ip(ip);
        if ip.is_loopback() || ip.is_unspecified() {
            return Ok(true);
        }
        let handle = self.handle()?;
        let msg = match ip {
            IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(a, 32)
                .build(),
            IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(a, 128)
                .build(),
        };
        let mut answers = std::pin::pin!(handle.route().get(msg).execute());
        let answer = answers.try_next().await;
        match answer {
            Ok(Some(route)) => Ok(matches!(
                route.header.kind,
                RouteType::Local | RouteType::Broadcast | RouteType::Anycast
            )),
            // No route at all: nothing local answers it either.
            Ok(None) => Ok(false),
            Err(e) => {
                let e = NetError::netlink("look up the route", ip.to_string())(e);
                if matches!(
                    e.errno(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL)
                ) {
                    // Unreachable, prohibited or blackholed: not the host.
                    return Ok(false);
                }
                // The socket may be broken: a new one next time.
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Err(e)
            }
        }
    }

    fn handle(&self) -> Result<rtnetlink::Handle> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = conn.as_ref().filter(|c| !c.task.is_finished()) {
            return Ok(c.handle.clone());
        }
        let rt = tokio::runtime::Handle::try_current().map_err(|e| NetError::Io {
            context: "host address checks need a tokio runtime".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetError::io(
            "open a netlink route socket for host address checks",
        ))?;
        let task = rt.spawn(connection);
        *conn = Some(Conn {
            handle: handle.clone(),
            task,
        });
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The addresses of this host's interfaces, as `ip -o addr` lists them.
    fn interface_addrs() -> Vec<IpAddr> {
        let out = std::process::Command::new("ip")
            .args(["-o", "addr", "show"])
            .output();
        let Ok(out) = out else { return Vec::new() };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                f.find(|w| *w == "inet" || *w == "inet6")?;
                f.next()?.split('/').next()?.parse().ok()
            })
            .collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_interface_address_is_local_and_public_ones_are_not() {
        let local = HostLocal::new();
        let addrs = interface_addrs();
        if addrs.is_empty() {
            crate::test_skip::skip("no `ip` binary to list this host's addresses");
            return;
        }
        for ip in addrs {
            assert!(local.is_local(ip).await.unwrap(), "{ip}");
            if let IpAddr::V4(v4) = ip {
                let mapped = IpAddr::V6(v4.to_ipv6_mapped());
                assert!(local.is_local(mapped).await.unwrap(), "{mapped}");
            }
        }
        for ip in ["127.0.0.7", "::1", "0.0.0.0", "::"] {
            assert!(local.is_local(ip.parse().unwrap()).await.unwrap(), "{ip}");
        }
        // Never an address of this host (whether or not it is routed).
        for ip in ["9.9.9.9", "2620:fe::fe"] {
            assert!(!local.is_local(ip.parse().unwrap()).await.unwrap(), "{ip}");
        }
    }
}
