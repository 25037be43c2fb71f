//! The service table snapshot workers classify packets against.
//!
//! The control thread builds a new [`ServiceTable`] for every configuration change and hands
//! it to the workers; a snapshot never changes once built. Real servers keep their
//! [`DestId`] across snapshots through [`DestIds`], so connection counters survive reloads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::{
    ClassifierRule, Config, DestId, DestOrder, DestRegistry, Protocol, RealServer, ServiceKey,
    VirtualService,
};

/// Index of a service in a [`ServiceTable`]; valid for that snapshot only.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceId(pub u32);

/// A real server as a snapshot holds it: its configuration and its counters' id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    /// Stable id of its counters in the [`DestRegistry`].
    pub id: DestId,
    /// Its configuration.
    pub server: RealServer,
    /// The kernel's `last_weight`: the weight it was added with, then its latest non-zero
    /// weight, so a server quiesced to weight 0 keeps its place in mh's table.
    pub last_weight: i32,
}

/// One service of a snapshot.
#[derive(Clone, Debug)]
pub struct ServiceEntry {
    /// The service as configured (its `reals` in list order).
    pub config: VirtualService,
    /// The real servers in list order, the order schedulers walk: that of `config.reals`
    /// with [`DestOrder::Config`], its reverse (the kernel's newest-first list) with
    /// [`DestOrder::Kernel`].
    pub dests: Vec<Dest>,
}

/// An immutable view of every configured service, built by the control thread.
#[derive(Clone, Debug, Default)]
pub struct ServiceTable {
    /// Incremented by the control thread on every rebuild.
    pub generation: u64,
    /// Services in configuration order, indexed by [`ServiceId`].
    pub services: Vec<ServiceEntry>,
    /// Classifier rules for fwmark services, first match wins.
    pub classifiers: Vec<ClassifierRule>,
    /// `[director] sloppy_tcp`: any TCP packet but a RST may open a connection.
    pub sloppy_tcp: bool,
    by_tuple: HashMap<(Protocol, IpAddr, u16), ServiceId>,
    by_mark: HashMap<(u32, bool), ServiceId>,
    vips: std::collections::HashSet<IpAddr>,
    live_dests: Vec<bool>,
}

impl ServiceTable {
    /// Builds a snapshot from `config`, assigning counter ids through `ids` and writing each
    /// real server's thresholds into `registry`.
    pub fn build(
        config: &Config,
        ids: &mut DestIds,
        registry: &DestRegistry,
        generation: u64,
    ) -> Result<ServiceTable, TooManyRealServers> {
        let mut table = ServiceTable {
            generation,
            classifiers: config.classifiers.clone(),
            sloppy_tcp: config.sloppy_tcp,
            live_dests: vec![false; ids.capacity],
            ..ServiceTable::default()
        };
        // Ids first, so that a registry too small for the configuration fails before any
        // counter is written.
        let mut assigned = Vec::with_capacity(config.services.len());
        for svc in &config.services {
            let ids: Result<Vec<_>, _> =
                svc.reals.iter().map(|r| ids.assign(&svc.key, r)).collect();
            assigned.push(ids?);
        }
        for (i, (svc, ids)) in config.services.iter().zip(assigned).enumerate() {
            let id = ServiceId(i as u32);
            match svc.key {
                ServiceKey::Tuple {
                    protocol,
                    addr,
                    port,
                } => {
                    table.by_tuple.insert((protocol, addr, port), id);
                    table.vips.insert(addr);
                }
                ServiceKey::Fwmark { mark, ipv6 } => {
                    table.by_mark.insert((mark, ipv6), id);
                }
            }
            let mut dests = Vec::with_capacity(svc.reals.len());
            for (real, (did, fresh)) in svc.reals.iter().zip(ids) {
                table.live_dests[did.0 as usize] = true;
                let counters = registry.get(did);
                counters.set_thresholds(real.upper_threshold, real.lower_threshold);
                // The kernel's `last_weight`: the weight given when the server was added,
                // then every later non-zero weight (`__ip_vs_update_dest`).
                if fresh || real.weight != 0 {
                    counters.last_weight.store(real.weight, Ordering::Relaxed);
                }
                dests.push(Dest {
                    id: did,
                    server: real.clone(),
                    last_weight: counters.last_weight.load(Ordering::Relaxed),
                });
            }
            if config.dest_order == DestOrder::Kernel {
                dests.reverse();
            }
            table.services.push(ServiceEntry {
                config: svc.clone(),
                dests,
            });
        }
        ids.retire_unused(&table.live_dests);
        Ok(table)
    }

    /// The service a new packet belongs to, looked up as `ip_vs_service_find` does: the
    /// firewall-mark service if the classifier marks the packet, then `<proto, vip, port>`,
    /// then the port-zero service `<proto, vip, 0>`.
    #[inline]
    pub fn find(&self, protocol: Protocol, dst: IpAddr, port: u16) -> Option<ServiceId> {
        if !self.by_mark.is_empty() {
            if let Some(rule) = self
                .classifiers
                .iter()
                .find(|r| r.matches(protocol, dst, port))
            {
                if let Some(id) = self.by_mark.get(&(rule.mark, dst.is_ipv6())) {
                    return Some(*id);
                }
            }
        }
        self.by_tuple
            .get(&(protocol, dst, port))
            .or_else(|| self.by_tuple.get(&(protocol, dst, 0)))
            .copied()
    }

    /// Whether `addr` is a virtual address: the address of a service, or covered by a
    /// classifier rule. Fragments and stray ICMP errors to such an address are fastlb's to
    /// drop; to any other address they are the kernel's.
    #[inline]
    pub fn is_virtual_addr(&self, addr: IpAddr) -> bool {
        self.vips.contains(&addr) || self.classifiers.iter().any(|r| r.dst.contains(addr))
    }

    /// The service with id `id`.
    ///
    /// # Panics
    /// If `id` does not come from this snapshot.
    #[inline]
    pub fn service(&self, id: ServiceId) -> &ServiceEntry {
        &self.services[id.0 as usize]
    }

    /// The service with exactly this key.
    pub fn by_key(&self, key: &ServiceKey) -> Option<ServiceId> {
        match *key {
            ServiceKey::Tuple {
                protocol,
                addr,
                port,
            } => self.by_tuple.get(&(protocol, addr, port)).copied(),
            ServiceKey::Fwmark { mark, ipv6 } => self.by_mark.get(&(mark, ipv6)).copied(),
        }
    }

    /// Whether the real server with counters `id` is still configured in this snapshot.
    /// Packets of connections to a removed server are dropped (as IPVS with
    /// `expire_nodest_conn`).
    #[inline]
    pub fn dest_is_live(&self, id: DestId) -> bool {
        self.live_dests.get(id.0 as usize).copied().unwrap_or(false)
    }
}

/// Every real server id is in use.
#[derive(Debug, thiserror::Error)]
#[error("more than {0} real servers configured across all services")]
pub struct TooManyRealServers(pub usize);

/// Hands out stable [`DestId`]s: the same (service, address, port) keeps its id across
/// rebuilds, and an id is reused only after its server left the configuration and its
/// counters fell to zero.
#[derive(Debug)]
pub struct DestIds {
    capacity: usize,
    assigned: HashMap<(ServiceKey, IpAddr, u16), DestId>,
    retired: Vec<DestId>,
    free: Vec<DestId>,
}

impl DestIds {
    /// An allocator for a registry of `capacity` ids.
    pub fn new(capacity: usize) -> DestIds {
        DestIds {
            capacity,
            assigned: HashMap::new(),
            retired: Vec::new(),
            free: (0..capacity as u32).rev().map(DestId).collect(),
        }
    }

    /// The id of `real` in the service `key`, and whether it is new (the server was not in
    /// the previous configuration).
    fn assign(
        &mut self,
        key: &ServiceKey,
        real: &RealServer,
    ) -> Result<(DestId, bool), TooManyRealServers> {
        let k = (*key, real.addr, real.port);
        if let Some(id) = self.assigned.get(&k) {
            return Ok((*id, false));
        }
        let id = self.free.pop().ok_or(TooManyRealServers(self.capacity))?;
        self.assigned.insert(k, id);
        Ok((id, true))
    }

    fn retire_unused(&mut self, live: &[bool]) {
        let retired = &mut self.retired;
        self.assigned.retain(|_, id| {
            let keep = live[id.0 as usize];
            if !keep {
                retired.push(*id);
            }
            keep
        });
    }

    /// Returns retired ids whose counters have fallen to zero to the free list.
    pub fn reclaim(&mut self, registry: &DestRegistry) {
        let free = &mut self.free;
        self.retired.retain(|id| {
            let c = registry.get(*id);
            let idle = c.active() == 0 && c.inactive() == 0 && c.persistent() == 0;
            if idle {
                c.reset();
                free.push(*id);
            }
            !idle
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{
        DestOrder, ForwardMethod, SchedFlags, SchedulerKind, DEFAULT_MH_TABLE_SIZE,
    };

    fn real(a: &str, w: i32) -> RealServer {
        RealServer {
            addr: a.parse().unwrap(),
            port: 80,
            weight: w,
            method: ForwardMethod::Masquerade,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    fn svc(vip: &str, port: u16, reals: Vec<RealServer>) -> VirtualService {
        VirtualService {
            key: ServiceKey::Tuple {
                protocol: Protocol::Tcp,
                addr: vip.parse().unwrap(),
                port,
            },
            scheduler: SchedulerKind::Wlc,
            flags: SchedFlags::default(),
            mh_table_size: DEFAULT_MH_TABLE_SIZE,
            persistence: None,
            reals,
        }
    }

    #[test]
    fn ids_survive_rebuilds_and_removed_servers_are_not_live() {
        let mut ids = DestIds::new(8);
        let reg = DestRegistry::new(8);
        let mut cfg = Config::default();
        cfg.services.push(svc(
            "10.0.0.1",
            80,
            vec![real("10.1.0.1", 1), real("10.1.0.2", 1)],
        ));
        let t1 = ServiceTable::build(&cfg, &mut ids, &reg, 1).unwrap();
        cfg.services[0].reals.remove(0);
        let t2 = ServiceTable::build(&cfg, &mut ids, &reg, 2).unwrap();
        assert_eq!(t1.services[0].dests[1].id, t2.services[0].dests[0].id);
        assert!(!t2.dest_is_live(t1.services[0].dests[0].id));
        assert!(t2.dest_is_live(t2.services[0].dests[0].id));
    }

    #[test]
    fn find_prefers_exact_port_then_port_zero() {
        let mut ids = DestIds::new(8);
        let reg = DestRegistry::new(8);
        let mut cfg = Config::default();
        cfg.services.push(svc("10.0.0.1", 0, vec![]));
        cfg.services.push(svc("10.0.0.1", 443, vec![]));
        let t = ServiceTable::build(&cfg, &mut ids, &reg, 1).unwrap();
        let vip = "10.0.0.1".parse().unwrap();
        assert_eq!(t.find(Protocol::Tcp, vip, 443), Some(ServiceId(1)));
        assert_eq!(t.find(Protocol::Tcp, vip, 22), Some(ServiceId(0)));
        assert_eq!(t.find(Protocol::Udp, vip, 22), None);
    }

    #[test]
    fn kernel_order_is_the_reverse_of_configuration_order() {
        // The kernel puts each `-a` at the head: after .1, .2, .3 its list is .3 .2 .1. An
        // edit keeps the place; a removal closes the gap; a new one goes to the head.
        let mut ids = DestIds::new(8);
        let reg = DestRegistry::new(8);
        let mut cfg = Config {
            dest_order: DestOrder::Kernel,
            ..Config::default()
        };
        cfg.services.push(svc(
            "10.0.0.1",
            80,
            vec![
                real("10.1.0.1", 1),
                real("10.1.0.2", 1),
                real("10.1.0.3", 1),
            ],
        ));
        let order = |t: &ServiceTable| -> Vec<String> {
            t.services[0]
                .dests
                .iter()
                .map(|d| d.server.addr.to_string())
                .collect()
        };
        let t = ServiceTable::build(&cfg, &mut ids, &reg, 1).unwrap();
        assert_eq!(order(&t), ["10.1.0.3", "10.1.0.2", "10.1.0.1"]);
        cfg.services[0].reals[1].weight = 5;
        cfg.services[0].reals.remove(0);
        cfg.services[0].reals.push(real("10.1.0.4", 1));
        let t = ServiceTable::build(&cfg, &mut ids, &reg, 2).unwrap();
        assert_eq!(order(&t), ["10.1.0.4", "10.1.0.3", "10.1.0.2"]);
        assert_eq!(t.services[0].dests[2].server.weight, 5);
        cfg.dest_order = DestOrder::Config;
        let t = ServiceTable::build(&cfg, &mut ids, &reg, 3).unwrap();
        assert_eq!(order(&t), ["10.1.0.2", "10.1.0.3", "10.1.0.4"]);
    }

    #[test]
    fn last_weight_is_the_added_then_the_latest_non_zero_weight() {
        let mut ids = DestIds::new(8);
        let reg = DestRegistry::new(8);
        let mut cfg = Config::default();
        cfg.services.push(svc(
            "10.0.0.1",
            80,
            vec![real("10.1.0.1", 3), real("10.1.0.2", 0)],
        ));
        let last = |cfg: &Config, ids: &mut DestIds, generation| -> Vec<i32> {
            let t = ServiceTable::build(cfg, ids, &reg, generation).unwrap();
            t.services[0].dests.iter().map(|d| d.last_weight).collect()
        };
        assert_eq!(last(&cfg, &mut ids, 1), [3, 0]);
        // Quiescing keeps the last weight; a new non-zero weight replaces it.
        cfg.services[0].reals[0].weight = 0;
        cfg.services[0].reals[1].weight = 2;
        assert_eq!(last(&cfg, &mut ids, 2), [3, 2]);
        cfg.services[0].reals[0].weight = 5;
        assert_eq!(last(&cfg, &mut ids, 3), [5, 2]);
        // Removed and added again with weight 0: a new server, last weight 0.
        cfg.services[0].reals.remove(1);
        last(&cfg, &mut ids, 4);
        cfg.services[0].reals.push(real("10.1.0.2", 0));
        assert_eq!(last(&cfg, &mut ids, 5), [5, 0]);
    }

    #[test]
    fn too_many_real_servers_is_an_error() {
        let mut ids = DestIds::new(1);
        let reg = DestRegistry::new(1);
        let mut cfg = Config::default();
        cfg.services.push(svc(
            "10.0.0.1",
            80,
            vec![real("10.1.0.1", 1), real("10.1.0.2", 1)],
        ));
        assert!(ServiceTable::build(&cfg, &mut ids, &reg, 1).is_err());
    }
}
