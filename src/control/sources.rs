//! The sources of the control loop: everything that changes the [`Director`] comes through
//! one of them, once per turn, without blocking.
//!
//! | source | what it hands the director |
//! |---|---|
//! | [`CtlServer`](super::ctl::CtlServer) | ipvsadm commands from `fastlb ctl` |
//! | [`Reload`] | the configuration file, read again on SIGHUP |
//! | [`HealthReports`] | the health monitor's transitions |
//! | [`KernelNextHops`] | the kernel's routes and neighbours every second (every turn while the director waits for a resolution), and the next hops the workers found no neighbour for |
//! | [`VrrpAddresses`] | the addresses the system holds, read again whenever the kernel announces a change: keepalived's VRRP instance is MASTER here while they include its addresses |
//!
//! A new source (connection sync, BGP) is one more implementation of [`Source`] handed to the
//! loop: it reads its own input and calls the director's methods; the director's reconcile
//! step takes it from there.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::director::{neighbour_request, real_addresses};
use super::Director;
use crate::datapath::xdp::{self, netlink};
use crate::forward::nexthop::{MacAddr, NextHops, Route};
use crate::health::Transition;
use crate::log::log;
use crate::service::config;
use crate::service::Config;
use crate::time::Instant;

/// Something that changes the director: polled once per turn of the control loop.
pub trait Source {
    /// Takes what arrived since the last turn and hands it to `director`; never blocks.
    /// Problems are logged, not returned: one source's trouble must not stop the others.
    fn poll(&mut self, now: Instant, director: &mut Director);
}

/// SIGHUP: the configuration file, read again. A bad file is refused whole and the running
/// table stays.
pub struct Reload {
    path: PathBuf,
    requested: Arc<AtomicBool>,
}

impl Reload {
    /// Reloads `path` whenever `requested` is set (by the SIGHUP handler).
    pub fn new(path: PathBuf, requested: Arc<AtomicBool>) -> Reload {
        Reload { path, requested }
    }
}

impl Source for Reload {
    fn poll(&mut self, _now: Instant, director: &mut Director) {
        if !self.requested.swap(false, Ordering::Relaxed) {
            return;
        }
        let refused = match config::load(&self.path) {
            Ok(config) => {
                let n = config.services.len();
                match director.configure(config) {
                    Ok(()) => {
                        log(format_args!(
                            "reloaded {}: {n} service(s)",
                            self.path.display()
                        ));
                        return;
                    }
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        log(format_args!(
            "reload refused, running table unchanged: {refused}"
        ));
    }
}

/// The health monitor's transitions.
pub struct HealthReports {
    transitions: Receiver<Transition>,
    batch: Vec<Transition>,
}

impl HealthReports {
    /// Reads the transitions the monitor sends on `transitions`.
    pub fn new(transitions: Receiver<Transition>) -> HealthReports {
        HealthReports {
            transitions,
            batch: Vec::new(),
        }
    }
}

impl Source for HealthReports {
    fn poll(&mut self, _now: Instant, director: &mut Director) {
        self.batch.clear();
        self.batch.extend(self.transitions.try_iter());
        if let Err(e) = director.health_changed(&self.batch) {
            log(format_args!(
                "publishing the table failed, previous one stays: {e}"
            ));
        }
    }
}

/// How often the kernel's tables are read again.
const REFRESH: Duration = Duration::from_secs(1);
/// How often while the director waits for the kernel to resolve a next hop.
const QUICK_REFRESH: Duration = Duration::from_millis(10);
/// How long the appliance waits at start for its real servers' neighbours.
const STARTUP_RESOLVE: Duration = Duration::from_secs(1);
/// Missed neighbours handed on per turn at most (a burst of misses is one per packet).
const MISSES_PER_TURN: usize = 64;

/// The kernel's routing and neighbour tables (netlink), read every second, or every turn
/// while the director waits for the kernel to resolve a next hop
/// ([`Director::resolving`]), and the next hops the workers met without a neighbour entry.
pub struct KernelNextHops {
    ifaces: Vec<String>,
    missing: Receiver<IpAddr>,
    last_read: Instant,
}

impl KernelNextHops {
    /// Reads the tables for `ifaces` (devices numbered in that order) one [`REFRESH`] after
    /// `now`, then every [`REFRESH`]; takes the workers' misses from `missing`.
    pub fn new(ifaces: Vec<String>, missing: Receiver<IpAddr>, now: Instant) -> KernelNextHops {
        KernelNextHops {
            ifaces,
            missing,
            last_read: now,
        }
    }
}

impl Source for KernelNextHops {
    fn poll(&mut self, now: Instant, director: &mut Director) {
        for addr in self.missing.try_iter().take(MISSES_PER_TURN) {
            director.neighbour_missing(addr);
        }
        let every = if director.resolving() {
            QUICK_REFRESH
        } else {
            REFRESH
        };
        if now.saturating_since(self.last_read) < every {
            return;
        }
        self.last_read = now;
        match kernel_nexthops(&self.ifaces) {
            Ok(t) => director.nexthops_read(t),
            Err(e) => log(format_args!("reading routes and neighbours: {e}")),
        }
    }
}

/// How often the addresses are read even without a notification (a lost one costs at most
/// this long).
const ADDRESS_REFRESH: Duration = Duration::from_secs(1);

/// The addresses the system holds, for the director to follow keepalived's VRRP instance:
/// keepalived adds the instance's `virtual_ipaddress` on becoming MASTER and removes them
/// on leaving it, and the kernel announces each change (see `docs/decisions.md`, "Following
/// keepalived"). Read at once when announced, and every [`ADDRESS_REFRESH`] regardless;
/// nothing is read while the configuration follows no instance.
pub struct VrrpAddresses {
    watch: Option<netlink::AddressWatch>,
    last_read: Option<Instant>,
}

impl VrrpAddresses {
    /// Subscribes to the kernel's address notifications. Without them (the subscription
    /// failed, which is logged) the addresses are still read every [`ADDRESS_REFRESH`].
    pub fn new() -> VrrpAddresses {
        let watch = match netlink::AddressWatch::new() {
            Ok(w) => Some(w),
            Err(e) => {
                log(format_args!(
                    "address notifications unavailable ({e}): reading addresses every {} s",
                    ADDRESS_REFRESH.as_secs()
                ));
                None
            }
        };
        VrrpAddresses {
            watch,
            last_read: None,
        }
    }
}

impl Default for VrrpAddresses {
    fn default() -> Self {
        VrrpAddresses::new()
    }
}

impl Source for VrrpAddresses {
    fn poll(&mut self, now: Instant, director: &mut Director) {
        let announced = match &self.watch {
            Some(w) => w.changed().unwrap_or_else(|e| {
                log(format_args!("reading address notifications: {e}"));
                true
            }),
            None => false,
        };
        if director.config().pair.followed.is_none() {
            return;
        }
        let due = self
            .last_read
            .is_none_or(|t| now.saturating_since(t) >= ADDRESS_REFRESH);
        if !announced && !due {
            return;
        }
        self.last_read = Some(now);
        match netlink::addresses() {
            Ok(list) => director.addresses_held(list.into_iter().map(|a| a.addr).collect()),
            Err(e) => log(format_args!("reading addresses: {e}")),
        }
    }
}

/// The next hops to start with: the kernel's tables once the neighbour of every real server
/// of `config` is resolved (asked for here) or [`STARTUP_RESOLVE`] has passed, so that the
/// first packets to a real server are not dropped for want of its MAC. A real server that
/// does not answer by then is resolved later, while fastlb serves.
pub fn startup_nexthops(ifaces: &[String], config: &Config) -> std::io::Result<NextHops> {
    let start = std::time::Instant::now();
    let mut t = kernel_nexthops(ifaces)?;
    let unresolved = |t: &NextHops| -> Vec<IpAddr> {
        real_addresses(config)
            .filter(|a| t.resolve(*a).is_err())
            .collect()
    };
    let missing = unresolved(&t);
    for r in missing.iter().filter_map(|a| neighbour_request(&t, *a)) {
        if let Some(ifindex) = xdp::ifindex(&r.dev) {
            if let Err(e) = netlink::resolve_neighbour(r.hop, ifindex) {
                log(format_args!("resolving {}: {e}", r.hop));
            }
        }
    }
    if missing.is_empty() {
        return Ok(t);
    }
    while start.elapsed() < STARTUP_RESOLVE {
        std::thread::sleep(QUICK_REFRESH);
        t = kernel_nexthops(ifaces)?;
        if unresolved(&t).is_empty() {
            break;
        }
    }
    Ok(t)
}

/// The kernel's routes and neighbours as fastlb's next-hop tables, devices numbered in
/// `ifaces` order.
pub fn kernel_nexthops(ifaces: &[String]) -> std::io::Result<NextHops> {
    let name = |ifindex: u32| -> Option<String> {
        ifaces
            .iter()
            .find(|i| xdp::ifindex(i) == Some(ifindex))
            .cloned()
    };
    let mut routes = Vec::new();
    for r in netlink::routes()? {
        let dev = name(r.oif).or_else(|| (r.oif != 0).then(|| format!("if{}", r.oif)));
        let local = match (r.table, r.kind) {
            (netlink::TABLE_LOCAL, netlink::rtn::LOCAL) => true,
            (netlink::TABLE_MAIN, netlink::rtn::UNICAST) => false,
            _ => continue,
        };
        routes.push(Route {
            dst: r.dst,
            gateway: r.gateway,
            dev,
            src: r.prefsrc,
            mtu: None,
            metric: r.metric,
            local,
        });
    }
    let neighbours = netlink::neighbours()?
        .into_iter()
        .filter(|n| n.is_usable())
        .filter_map(|n| Some((n.addr, MacAddr(n.mac?))));
    let mut t = NextHops::with_devices(ifaces, routes, neighbours);
    for iface in ifaces {
        t.set_device_mac(iface, xdp::interface_mac(iface)?);
    }
    Ok(t)
}
