//! The per-box veth pair, for real, inside throwaway namespaces.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use boxd_net::{AddressPlan, Veths};
use common::skip_unless_capable;

#[tokio::test(flavor = "current_thread")]
async fn veth_pair_carries_v4_and_v6_and_is_removed() {
    skip_unless_capable!();
    let host = common::netns();
    let boxns = common::netns();
    let veths = Veths::new_in(AddressPlan::default(), host.as_fd()).expect("veths");

    let link = veths.create(7, boxns.as_fd()).await.expect("create veth");
    assert_eq!(link.host_ifname, "bx7");
    let a = link.addrs;
    assert_eq!(veths.host_slots().await.unwrap(), vec![7]);

    // No ruleset yet: plain connectivity both ways over both families,
    // through the box's default routes (the host end is the gateway).
    for ip in [IpAddr::V4(a.host_v4), IpAddr::V6(a.host_v6)] {
        let l = common::tcp_listener(&host, SocketAddr::new(ip, 4000));
        common::connect_from(&boxns, SocketAddr::new(ip, 4000), Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("box -> host {ip}: {e}"));
        let (_, peer) = common::accept_within(&l, Duration::from_secs(2)).expect("accepted");
        let peer = peer.as_socket().unwrap().ip();
        assert!(
            peer == IpAddr::V4(a.box_v4) || peer == IpAddr::V6(a.box_v6),
            "{peer}"
        );
    }

    // A leftover link (a crash) is replaced, not an error.
    let boxns2 = common::netns();
    veths
        .create(7, boxns2.as_fd())
        .await
        .expect("replace leftover");
    assert!(veths.remove(7).await.unwrap());
    assert!(
        !veths.remove(7).await.unwrap(),
        "second remove finds nothing"
    );
    assert!(veths.host_slots().await.unwrap().is_empty());

    // A slot outside the plan is refused before touching the kernel.
    assert!(veths.create(1 << 20, boxns.as_fd()).await.is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn box_netns_gone_takes_the_pair_with_it() {
    skip_unless_capable!();
    let host = common::netns();
    let veths = Veths::new_in(AddressPlan::default(), host.as_fd()).expect("veths");
    let boxns = common::netns();
    veths.create(3, boxns.as_fd()).await.expect("create");
    drop(boxns);
    // Namespace teardown runs in a kernel workqueue: bounded wait.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !veths.host_slots().await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "bx3 outlived its box's namespace"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!veths.remove(3).await.unwrap());
}

/// Thirty pairs in a row, each created into a fresh namespace and removed:
/// nothing is left over between rounds. (What a pair costs is measured by
/// `cargo bench --bench net`, box create with and without network; a test
/// only checks that it works.)
#[tokio::test(flavor = "current_thread")]
async fn thirty_veth_pairs_in_a_row_are_created_and_removed() {
    skip_unless_capable!();
    let host = common::netns();
    let veths = Veths::new_in(AddressPlan::default(), host.as_fd()).expect("veths");
    for i in 0..30 {
        let boxns = common::netns();
        veths.create(100 + i, boxns.as_fd()).await.expect("create");
        assert_eq!(veths.host_slots().await.unwrap(), vec![100 + i]);
        assert!(veths.remove(100 + i).await.unwrap());
    }
    assert!(veths.host_slots().await.unwrap().is_empty());
}
