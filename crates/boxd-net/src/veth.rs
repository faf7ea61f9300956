//! One veth pair per box: the host end `bx<slot>` stays in the host
//! network namespace, the peer `eth0` lives in the box's namespace, with
//! the slot's addresses from the [`AddressPlan`] and default routes
//! (IPv4 and IPv6) via the host end.
//!
//! Owns: creating, configuring, listing and deleting `bx*` links over
//! rtnetlink (no `ip` subprocess). The peer is created directly inside the
//! box's namespace (`IFLA_NET_NS_FD` on the peer), the host end comes up in
//! the same request and the box end right after, and IPv6 addresses skip duplicate address detection
//! (`IFA_F_NODAD`) so they are usable at once. Configuring the box end
//! needs a netlink socket inside the box's namespace: it is opened on a
//! short-lived thread that joins the namespace (see [`crate::netns`]).
//!
//! Never: touches a link whose name is not `bx<slot>` in the host
//! namespace, configures anything in a box namespace but `eth0`'s
//! addresses and the two default routes, or enforces policy (the host
//! ruleset does; a box may flush its own routes and gains nothing).
//!
//! Deleting the host end deletes the pair; destroying the box's namespace
//! (its last process exits) deletes the pair too, so [`Veths::remove`] of
//! a dead box finds nothing and says so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Instant;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo};
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::task::JoinHandle;

use crate::addr::{AddressPlan, SlotAddrs, V4_PAIR_PREFIX_LEN, V6_BOX_PREFIX_LEN};
use crate::error::{NetError, Result};
use crate::netns;

/// The name of a box's end of its veth pair, inside the box.
pub const BOX_IFNAME: &str = "eth0";

const EEXIST: i32 = libc::EEXIST;
const ENODEV: i32 = libc::ENODEV;

/// A box's veth pair, as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxLink {
    /// `bx<slot>`, in the host namespace.
    pub host_ifname: String,
    /// Its interface index in the host namespace.
    pub host_ifindex: u32,
    /// The slot's addresses (host end and box end, IPv4 and IPv6).
    pub addrs: SlotAddrs,
}

/// A netlink connection whose background task is aborted on drop.
struct Conn {
    handle: rtnetlink::Handle,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens an rtnetlink connection in the calling thread's network
/// namespace; its task runs on `rt`.
fn connect_here(rt: &tokio::runtime::Handle) -> Result<Conn> {
    let _entered = rt.enter();
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(NetError::io("open a netlink route socket"))?;
    let task = rt.spawn(connection);
    Ok(Conn { handle, task })
}

fn current_runtime() -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().map_err(|e| NetError::Io {
        context: "veth management needs a tokio runtime".into(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Makes and removes the veth pairs of boxes, over one netlink
/// connection in the host namespace.
pub struct Veths {
    plan: AddressPlan,
    host: Conn,
}

impl Veths {
    /// Manages veths in the calling thread's network namespace (the host).
    /// Must be called inside a tokio runtime.
    pub fn new(plan: AddressPlan) -> Result<Self> {
        let rt = current_runtime()?;
        Ok(Veths {
            plan,
            host: connect_here(&rt)?,
        })
    }

    /// Manages veths in the network namespace `host_netns` (tests use a
    /// throwaway namespace as "the host"). Must be called inside a tokio
    /// runtime.
    pub fn new_in(plan: AddressPlan, host_netns: BorrowedFd<'_>) -> Result<Self> {
        let rt = current_runtime()?;
        let host = netns::run_in(host_netns, || connect_here(&rt))??;
        Ok(Veths { plan, host })
    }

    pub fn plan(&self) -> &AddressPlan {
        &self.plan
    }

    /// Creates the veth pair of `slot` with its peer in the network
    /// namespace of process `pid` (a box's agent).
    pub async fn create_for_pid(&self, slot: u32, pid: i32) -> Result<BoxLink> {
        let fd = netns::open_pid_netns(pid)?;
        use std::os::fd::AsFd;
        self.create(slot, fd.as_fd()).await
    }

    /// Creates the veth pair of `slot` with its peer `eth0` in `box_netns`,
    /// addresses on both ends, both up, default routes in the box. A
    /// leftover `bx<slot>` (a crash) is replaced. On failure nothing is
    /// left behind.
    pub async fn create(&self, slot: u32, box_netns: BorrowedFd<'_>) -> Result<BoxLink> {
        let started = Instant::now();
        let addrs = self.plan.slot(slot)?;
        let name = self.plan.host_ifname(slot);
        match self.add_pair(&name, box_netns).await {
            Err(e) if e.errno() == Some(EEXIST) => {
                tracing::warn!(ifname = %name, "replacing a leftover box veth");
                self.remove(slot).await?;
                self.add_pair(&name, box_netns).await?;
            }
            other => other?,
        }
        let result = self.configure(&name, &addrs, box_netns).await;
        match result {
            Ok(host_ifindex) => {
                tracing::debug!(
                    ifname = %name,
                    host_v4 = %addrs.host_v4,
                    box_v4 = %addrs.box_v4,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "box veth up"
                );
                Ok(BoxLink {
                    host_ifname: name,
                    host_ifindex,
                    addrs,
                })
            }
            Err(e) => {
                if let Err(cleanup) = self.remove(slot).await {
                    tracing::warn!(ifname = %name, error = %cleanup, "removing a half-made veth failed");
                }
                Err(e)
            }
        }
    }

    async fn add_pair(&self, name: &str, box_netns: BorrowedFd<'_>) -> Result<()> {
        // The peer cannot be brought up in this request (veth_open sees no
        // peer yet: ENOTCONN); the host end can, it is configured last.
        let peer = LinkUnspec::new_with_name(BOX_IFNAME)
            .setns_by_fd(box_netns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(name, BOX_IFNAME)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .up()
            .build();
        self.host
            .handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(NetError::netlink("create veth", name))
    }

    /// Addresses on the host end, then addresses and routes in the box.
    async fn configure(&self, name: &str, a: &SlotAddrs, box_netns: BorrowedFd<'_>) -> Result<u32> {
        let host = &self.host.handle;
        let host_index = link_index(host, name).await?;
        let (v4, v6) = futures_util::join!(
            add_addr(host, host_index, name, IpAddr::V4(a.host_v4)),
            add_addr(host, host_index, name, IpAddr::V6(a.host_v6)),
        );
        v4?;
        v6?;

        let rt = current_runtime()?;
        let inside = netns::run_in(box_netns, || connect_here(&rt))??;
        let nl = &inside.handle;
        let target = format!("{BOX_IFNAME} of {name}");
        let index = link_index(nl, BOX_IFNAME).await?;
        nl.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(NetError::netlink("set link up", &target))?;
        let (v4, v6) = futures_util::join!(
            add_addr(nl, index, &target, IpAddr::V4(a.box_v4)),
            add_addr(nl, index, &target, IpAddr::V6(a.box_v6)),
        );
        v4?;
        v6?;
        let (r4, r6) = futures_util::join!(
            default_route(nl, index, IpAddr::V4(a.host_v4), &target),
            default_route(nl, index, IpAddr::V6(a.host_v6), &target),
        );
        r4?;
        r6?;
        Ok(host_index)
    }

    /// Deletes `bx<slot>` (and so its peer). `Ok(false)` if it was not
    /// there — the box's namespace is gone, or it was never made.
    pub async fn remove(&self, slot: u32) -> Result<bool> {
        let name = self.plan.host_ifname(slot);
        let msg = LinkUnspec::new_with_name(&name).build();
        match self
            .host
            .handle
            .link()
            .del_with_message(msg)
            .execute()
            .await
        {
            Ok(()) => {
                tracing::debug!(ifname = %name, "box veth removed");
                Ok(true)
            }
            Err(e) => {
                let e = NetError::netlink("delete veth", &name)(e);
                if e.errno() == Some(ENODEV) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The slots that have a `bx<slot>` veth in the host namespace, sorted.
    /// At start after a crash, the daemon removes those of boxes it does
    /// not know.
    pub async fn host_slots(&self) -> Result<Vec<u32>> {
        let mut links = self.host.handle.link().get().execute();
        let mut slots = Vec::new();
        while let Some(msg) = links
            .try_next()
            .await
            .map_err(NetError::netlink("list links", "host"))?
        {
            // Only veths: a prefix like `eth` must never make the host's
            // `eth0` look like a box link.
            let is_veth = msg.attributes.iter().any(|a| {
                matches!(a, LinkAttribute::LinkInfo(infos)
                    if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
            });
            let slot = msg.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => self.plan.slot_of_ifname(name),
                _ => None,
            });
            if let (true, Some(slot)) = (is_veth, slot) {
                slots.push(slot);
            }
        }
        slots.sort_unstable();
        Ok(slots)
    }
}

async fn link_index(nl: &rtnetlink::Handle, name: &str) -> Result<u32> {
    let mut links = nl.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(NetError::NoSuchLink(name.to_string())),
        Err(e) => {
            let e = NetError::netlink("look up link", name)(e);
            if e.errno() == Some(ENODEV) {
                Err(NetError::NoSuchLink(name.to_string()))
            } else {
                Err(e)
            }
        }
    }
}

async fn add_addr(nl: &rtnetlink::Handle, index: u32, target: &str, addr: IpAddr) -> Result<()> {
    let prefix_len = match addr {
        IpAddr::V4(_) => V4_PAIR_PREFIX_LEN,
        IpAddr::V6(_) => V6_BOX_PREFIX_LEN,
    };
    let mut req = nl.address().add(index, addr, prefix_len);
    if addr.is_ipv6() {
        // Usable at once: no duplicate address detection on a link only
        // boxd and one box share.
        let msg = req.message_mut();
        msg.header.flags = AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute().await.map_err(NetError::netlink(
        "add address",
        format!("{addr}/{prefix_len} on {target}"),
    ))
}

/// The box's default route (IPv4 or IPv6, by `via`'s family) through
/// the host end of its veth.
async fn default_route(
    nl: &rtnetlink::Handle,
    index: u32,
    via: IpAddr,
    target: &str,
) -> Result<()> {
    let route = match via {
        IpAddr::V4(v4) => RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(index)
            .gateway(v4)
            .build(),
        IpAddr::V6(v6) => RouteMessageBuilder::<Ipv6Addr>::new()
            .output_interface(index)
            .gateway(v6)
            .build(),
    };
    nl.route()
        .add(route)
        .execute()
        .await
        .map_err(NetError::netlink(
            "add default route",
            format!("via {via} on {target}"),
        ))
}
