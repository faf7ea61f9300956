//! The boxes the network layer serves: for each box slot, the box's id,
//! addresses, current egress policy and synthetic-name table. The proxy
//! and the resolver find the box of a packet here (by the host-side
//! address a connection arrived on, or the box-side source address of a
//! query — the ruleset drops spoofed sources).
//!
//! Owns: that map and per-box connection limits. Never: decides who a box
//! belongs to (the server registers it), or keeps a box after it is
//! removed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Semaphore;

use crate::addr::{AddressPlan, SlotAddrs};
use crate::policy::{EgressPolicy, HostName};
use crate::secrets::SecretRules;
use crate::synth::{SyntheticAddrs, SyntheticNames};

/// Concurrent proxied connections one box may hold open.
pub const MAX_CONNS_PER_BOX: usize = 512;

/// One box, as the network layer knows it.
#[derive(Debug)]
pub struct BoxNet {
    pub box_id: String,
    pub addrs: SlotAddrs,
    policy: RwLock<Arc<EgressPolicy>>,
    names: Mutex<SyntheticNames>,
    /// Permits for concurrent proxied connections.
    pub conns: Arc<Semaphore>,
    /// Attach headers and placeholder secrets, fixed for the box's life.
    pub secrets: Arc<SecretRules>,
}

impl BoxNet {
    pub fn new(box_id: impl Into<String>, addrs: SlotAddrs, policy: EgressPolicy) -> Self {
        BoxNet {
            box_id: box_id.into(),
            addrs,
            policy: RwLock::new(Arc::new(policy)),
            names: Mutex::new(SyntheticNames::default()),
            conns: Arc::new(Semaphore::new(MAX_CONNS_PER_BOX)),
            secrets: Arc::new(SecretRules::default()),
        }
    }

    /// The same box with its secret rules.
    pub fn with_secrets(mut self, secrets: Arc<SecretRules>) -> Self {
        self.secrets = secrets;
        self
    }

    /// The policy now (a new connection reads it once, at its start).
    pub fn policy(&self) -> Arc<EgressPolicy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the policy; applies to the next query and connection.
    pub fn set_policy(&self, policy: EgressPolicy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// The synthetic addresses of `name` for this box (assigned on first
    /// use); `None` when the box's table is full.
    pub fn synthetic(&self, name: &HostName) -> Option<SyntheticAddrs> {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .assign(name)
    }

    /// The name behind a synthetic address this box was given.
    pub fn name_of(&self, ip: IpAddr) -> Option<HostName> {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .name_of(ip)
            .cloned()
    }
}

/// Every box with a network, by slot.
#[derive(Debug)]
pub struct Registry {
    plan: AddressPlan,
    boxes: RwLock<HashMap<u32, Arc<BoxNet>>>,
}

impl Registry {
    pub fn new(plan: AddressPlan) -> Self {
        Registry {
            plan,
            boxes: RwLock::new(HashMap::new()),
        }
    }

    pub fn plan(&self) -> &AddressPlan {
        &self.plan
    }

    /// Registers a box (replacing whatever had its slot).
    pub fn insert(&self, net: Arc<BoxNet>) {
        self.boxes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(net.addrs.slot, net);
    }

    /// Forgets the box in `slot`.
    pub fn remove(&self, slot: u32) -> Option<Arc<BoxNet>> {
        self.boxes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&slot)
    }

    pub fn by_slot(&self, slot: u32) -> Option<Arc<BoxNet>> {
        self.boxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&slot)
            .cloned()
    }

    /// The box whose host-side address is `local` (the address a
    /// redirected connection or query arrived on).
    pub fn by_host_addr(&self, local: IpAddr) -> Option<Arc<BoxNet>> {
        self.by_slot(self.plan.slot_of_host_addr(local)?)
    }

    /// The box whose own address is `peer` (a connection's source).
    pub fn by_box_addr(&self, peer: IpAddr) -> Option<Arc<BoxNet>> {
        self.by_slot(self.plan.slot_of_box_addr(peer)?)
    }

    pub fn len(&self) -> usize {
        self.boxes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
