//! The IPVS schedulers, one file each, behind one trait.
//!
//! A scheduler picks the real server for a new connection (one that matched no connection
//! and no persistence template). Each worker owns its own scheduler instances, so cursor
//! state (rr, wrr) needs no lock. When a new snapshot arrives each scheduler carries over
//! what the kernel's keeps across the same change ([`Scheduler::update`]): rr its cursor,
//! wrr its current weight (updated as `ip_vs_wrr_dest_changed` does for each `-a -e -d`),
//! lblc and lblcr their tables; dh, sh and mh refill their tables, as the kernel does on
//! every change; the others hold no state. The list they walk is in the order the director
//! setting `dest_order` gives ([`crate::service::DestOrder`]).
//!
//! Every scheduler skips a server that is unavailable: weight <= 0 (quiesced) or OVERLOAD,
//! except that lblc, as the kernel's, keeps sending an address it has cached to its server
//! while that server is OVERLOAD.
//!
//! | `-s`    | file         | picks                                                        |
//! |---------|--------------|--------------------------------------------------------------|
//! | rr      | `rr.rs`      | next available after the last pick                           |
//! | wrr     | `wrr.rs`     | gcd-stepped weighted round robin                             |
//! | lc      | `lc.rs`      | min `(active << 8) + inactive`                               |
//! | wlc     | `wlc.rs`     | min overhead / weight                                        |
//! | sed     | `sed.rs`     | min (active + 1) / weight                                    |
//! | nq      | `nq.rs`      | first idle server, else sed                                  |
//! | dh      | `dh.rs`      | 256 buckets keyed by the destination address                 |
//! | sh      | `sh.rs`      | 256 weighted buckets keyed by the source address [+ port]    |
//! | lblc    | `lblc.rs`    | destination address -> server cache, wlc on a miss           |
//! | lblcr   | `lblcr.rs`   | destination address -> server set, wlc to grow it            |
//! | mh      | `mh.rs`      | Maglev table keyed by the source address [+ port]            |
//! | fo      | `fo.rs`      | highest weight                                               |
//! | ovf     | `ovf.rs`     | highest weight with active <= weight                         |
//! | twos    | `twos.rs`    | lower load of two weighted random picks                      |

#![forbid(unsafe_code)]

mod dh;
mod fo;
mod hash;
mod lblc;
mod lblcr;
mod lc;
mod locality;
mod mh;
mod nq;
mod ovf;
mod rr;
mod sed;
mod sh;
mod twos;
mod wlc;
mod wrr;

pub use dh::DestinationHashing;
pub use fo::WeightedFailover;
pub use lblc::LocalityLeastConn;
pub use lblcr::LocalityLeastConnReplicated;
pub use lc::LeastConn;
pub use mh::{MaglevHashing, MH_TABLE_SIZES};
pub use nq::NeverQueue;
pub use ovf::WeightedOverflow;
pub use rr::RoundRobin;
pub use sed::ShortestExpectedDelay;
pub use sh::SourceHashing;
pub use twos::TwoChoices;
pub use wlc::WeightedLeastConn;
pub use wrr::WeightedRoundRobin;

use std::net::IpAddr;

use crate::service::{Dest, DestCounters, DestRegistry, SchedulerKind, ServiceEntry};
use crate::time::Instant;

/// What a scheduler may look at of the packet that opens a connection.
#[derive(Copy, Clone, Debug)]
pub struct SchedInput {
    /// Client (source) address.
    pub client: IpAddr,
    /// Client (source) port.
    pub client_port: u16,
    /// Destination address the client used (the VIP).
    pub vaddr: IpAddr,
    /// Destination port the client used.
    pub vport: u16,
    /// The pipeline's clock.
    pub now: Instant,
}

/// A scheduling algorithm. `dests` is the service's list in list order; the answer is an
/// index into it.
pub trait Scheduler: Send {
    /// Picks a real server for a new connection, or `None` when no server is available.
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        input: &SchedInput,
    ) -> Option<usize>;

    /// Periodic upkeep (lblc/lblcr garbage collection). Call it between batches; it does
    /// nothing until its own interval (60 s for lblc/lblcr) has passed, so calling it often
    /// is cheap.
    fn housekeeping(&mut self, now: Instant) {
        let _ = now;
    }

    /// The scheduler to use once `service` (the same service in a new snapshot) replaces the
    /// list this one was built for. By default a fresh one bound to the service
    /// ([`rebound`]); rr, wrr, lblc and lblcr carry their state over as the kernel does
    /// when the service keeps their kind.
    fn update(self: Box<Self>, service: &ServiceEntry) -> Box<dyn Scheduler> {
        rebound(service)
    }
}

/// Builds the scheduler of a service that appears in a configuration with its real servers,
/// as a kernel has it after `-A` and one `-a` per real server in configuration order (what
/// `ipvsadm -R` and keepalived do).
pub fn for_service(service: &ServiceEntry) -> Box<dyn Scheduler> {
    match service.config.scheduler {
        SchedulerKind::Wrr => Box::new(WeightedRoundRobin::for_service(service)),
        _ => rebound(service),
    }
}

/// Builds the scheduler bound afresh to a service that already has its real servers, as the
/// kernel's `init_service` when `-E` changes a service's scheduler. Only wrr tells the two
/// apart ([`WeightedRoundRobin::bound`]).
pub fn rebound(service: &ServiceEntry) -> Box<dyn Scheduler> {
    let dests = &service.dests;
    match service.config.scheduler {
        SchedulerKind::Rr => Box::new(RoundRobin::for_dests(dests)),
        SchedulerKind::Wrr => Box::new(WeightedRoundRobin::bound(dests)),
        SchedulerKind::Lc => Box::new(LeastConn),
        SchedulerKind::Wlc => Box::new(WeightedLeastConn),
        SchedulerKind::Sed => Box::new(ShortestExpectedDelay),
        SchedulerKind::Nq => Box::new(NeverQueue),
        SchedulerKind::Dh => Box::new(DestinationHashing::new(dests)),
        SchedulerKind::Sh => Box::new(SourceHashing::new(dests, service.config.flags)),
        SchedulerKind::Lblc => Box::new(LocalityLeastConn::new()),
        SchedulerKind::Lblcr => Box::new(LocalityLeastConnReplicated::new()),
        SchedulerKind::Mh => Box::new(MaglevHashing::new(
            dests,
            service.config.mh_table_size,
            service.config.flags,
        )),
        SchedulerKind::Fo => Box::new(WeightedFailover),
        SchedulerKind::Ovf => Box::new(WeightedOverflow),
        SchedulerKind::Twos => Box::new(TwoChoices::for_service(service)),
    }
}

/// Whether `dest` may take new connections: positive weight and not OVERLOAD.
#[inline]
pub fn available(dest: &Dest, counters: &DestCounters) -> bool {
    dest.server.weight > 0 && !counters.is_overloaded()
}

/// Shared fixtures for the schedulers' tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::net::IpAddr;
    use std::sync::atomic::Ordering;

    use super::SchedInput;
    use crate::service::{
        ConnCount, Dest, DestId, DestRegistry, ForwardMethod, Protocol, RealServer, SchedFlags,
        SchedulerKind, ServiceEntry, ServiceKey, VirtualService, DEFAULT_MH_TABLE_SIZE,
    };
    use crate::time::Instant;

    /// Real servers 10.1.0.1, 10.1.0.2, ... port 80 with these weights; ids 0, 1, ...
    pub fn dests(weights: &[i32]) -> Vec<Dest> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Dest {
                id: DestId(i as u32),
                last_weight: w,
                server: RealServer {
                    addr: IpAddr::from([10, 1, (i >> 8) as u8, (i & 0xff) as u8 + 1]),
                    port: 80,
                    weight: w,
                    method: ForwardMethod::Masquerade,
                    upper_threshold: 0,
                    lower_threshold: 0,
                },
            })
            .collect()
    }

    /// A TCP service on 10.0.0.1:80 with these real servers.
    pub fn service(kind: SchedulerKind, flags: SchedFlags, dests: Vec<Dest>) -> ServiceEntry {
        ServiceEntry {
            config: VirtualService {
                key: ServiceKey::Tuple {
                    protocol: Protocol::Tcp,
                    addr: "10.0.0.1".parse().unwrap(),
                    port: 80,
                },
                scheduler: kind,
                flags,
                mh_table_size: DEFAULT_MH_TABLE_SIZE,
                persistence: None,
                reals: dests.iter().map(|d| d.server.clone()).collect(),
            },
            dests,
        }
    }

    /// A new connection from `client` to `vaddr`:80 at `secs` seconds.
    pub fn input(client: &str, client_port: u16, vaddr: &str, secs: u64) -> SchedInput {
        SchedInput {
            client: client.parse().unwrap(),
            client_port,
            vaddr: vaddr.parse().unwrap(),
            vport: 80,
            now: Instant::from_secs(secs),
        }
    }

    /// Any input: the connection-count schedulers ignore it.
    pub fn any_input() -> SchedInput {
        input("192.0.2.1", 40000, "10.0.0.1", 0)
    }

    /// Sets a real server's active and inactive connection counts.
    pub fn set_conns(reg: &DestRegistry, d: &Dest, active: u32, inactive: u32) {
        let c = reg.get(d.id);
        c.set(ConnCount::Active, active);
        c.set(ConnCount::Inactive, inactive);
    }

    /// Sets or clears OVERLOAD.
    pub fn set_overload(reg: &DestRegistry, d: &Dest, on: bool) {
        reg.get(d.id).overloaded.store(on, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::service::SchedFlags;
    use proptest::prelude::*;

    fn all_flags() -> SchedFlags {
        SchedFlags {
            sh_fallback: true,
            sh_port: true,
            mh_fallback: true,
            mh_port: true,
        }
    }

    #[test]
    fn every_scheduler_returns_none_when_all_servers_are_quiesced() {
        for kind in SchedulerKind::ALL {
            for flags in [SchedFlags::default(), all_flags()] {
                let svc = service(kind, flags, dests(&[0, 0, 0]));
                let reg = DestRegistry::new(8);
                let mut s = for_service(&svc);
                for k in 0..20u64 {
                    let inp = input(&format!("192.0.2.{k}"), 1000 + k as u16, "10.0.0.1", k);
                    assert_eq!(s.schedule(&svc.dests, &reg, &inp), None, "{kind}");
                }
            }
        }
    }

    #[test]
    fn every_scheduler_returns_none_when_all_servers_are_overloaded() {
        for kind in SchedulerKind::ALL {
            let svc = service(kind, all_flags(), dests(&[1, 2, 3]));
            let reg = DestRegistry::new(8);
            for d in &svc.dests {
                set_overload(&reg, d, true);
            }
            let mut s = for_service(&svc);
            for k in 0..20u64 {
                let inp = input(&format!("192.0.2.{k}"), 1000, "10.0.0.1", k);
                assert_eq!(s.schedule(&svc.dests, &reg, &inp), None, "{kind}");
            }
        }
    }

    #[test]
    fn every_scheduler_returns_none_for_an_empty_list() {
        for kind in SchedulerKind::ALL {
            let svc = service(kind, all_flags(), Vec::new());
            let reg = DestRegistry::new(1);
            let mut s = for_service(&svc);
            assert_eq!(s.schedule(&svc.dests, &reg, &any_input()), None, "{kind}");
        }
    }

    #[test]
    fn every_kind_has_its_own_implementation() {
        // Weights 1,3, both idle: fo and sed pick the second server where a fall-through
        // to round robin would pick the first. Each kind's own tests cover the rest.
        let svc = service(SchedulerKind::Fo, SchedFlags::default(), dests(&[1, 3]));
        let reg = DestRegistry::new(4);
        let mut fo = for_service(&svc);
        assert_eq!(fo.schedule(&svc.dests, &reg, &any_input()), Some(1));
        let svc = service(SchedulerKind::Sed, SchedFlags::default(), dests(&[1, 3]));
        let mut sed = for_service(&svc);
        assert_eq!(sed.schedule(&svc.dests, &reg, &any_input()), Some(1));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn no_scheduler_returns_an_unavailable_server(
            kind in prop::sample::select(SchedulerKind::ALL.to_vec()),
            servers in prop::collection::vec((-1i32..5, any::<bool>(), 0u32..6, 0u32..6), 0..7),
            fallback in any::<bool>(),
            port in any::<bool>(),
            steps in prop::collection::vec((0u8..8, 0u8..4, any::<u16>(), 0u64..200_000), 1..40),
        ) {
            let weights: Vec<i32> = servers.iter().map(|s| s.0).collect();
            let flags = SchedFlags { sh_fallback: fallback, sh_port: port, mh_fallback: fallback, mh_port: port };
            let svc = service(kind, flags, dests(&weights));
            let reg = DestRegistry::new(8);
            for (d, s) in svc.dests.iter().zip(&servers) {
                set_overload(&reg, d, s.1);
                set_conns(&reg, d, s.2, s.3);
            }
            let mut s = for_service(&svc);
            let mut now = 0;
            for (client, vip, cport, dt) in steps {
                now += dt;
                s.housekeeping(Instant::from_secs(now));
                let inp = input(&format!("192.0.2.{client}"), cport, &format!("10.0.0.{vip}"), now);
                if let Some(i) = s.schedule(&svc.dests, &reg, &inp) {
                    prop_assert!(i < svc.dests.len());
                    // lblc keeps a cached server whatever its OVERLOAD flag, as the kernel.
                    let d = &svc.dests[i];
                    let ok = if kind == SchedulerKind::Lblc {
                        d.server.weight > 0
                    } else {
                        available(d, reg.get(d.id))
                    };
                    prop_assert!(ok, "{} picked {}", kind, i);
                    // Load moves as connections arrive, which exercises lblc/lblcr's rules.
                    reg.get(svc.dests[i].id).add(crate::service::ConnCount::Active);
                }
            }
        }
    }
}
