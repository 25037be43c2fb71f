//! Locality-based least connections (`ip_vs_lblc.c`).
//!
//! ```text
//! n = cache[daddr]
//! if n is none, gone, weight <= 0, or
//!    (n.active > n.weight and some server m has m.active * 2 < m.weight):
//!     n = cache[daddr] = wlc pick
//! cache[daddr].lastuse = now
//! ```
//!
//! `daddr` is the destination address the client used. The cache is the 1024-bucket table
//! of [`locality`](super::locality): entries idle for 24 h go at the periodic full check.
//!
//! The kernel keeps a cached server that has the OVERLOAD flag (its `-x` threshold reached):
//! `ip_vs_lblc_schedule` checks only the weight and lblc's own overload rule, so such a
//! server goes on taking its addresses' new connections; only the wlc pick for an address
//! without a usable entry skips it. fastlb does the same (checked against Linux 6.1,
//! `tests/kernel_ipvs.rs`); it is the one scheduler that may pick an OVERLOAD server.

use super::locality::{is_overloaded, position, LocalityTable};
use super::wlc::WeightedLeastConn;
use super::{SchedInput, Scheduler};
use crate::service::{Dest, DestId, DestRegistry, SchedulerKind, ServiceEntry};
use crate::time::Instant;

/// Locality-based least connections: a destination address sticks to its server until
/// that server is overloaded.
#[derive(Debug)]
pub struct LocalityLeastConn {
    table: LocalityTable<DestId>,
}

impl LocalityLeastConn {
    /// A scheduler with an empty cache.
    pub fn new() -> LocalityLeastConn {
        LocalityLeastConn {
            table: LocalityTable::new(),
        }
    }
}

impl Default for LocalityLeastConn {
    fn default() -> Self {
        LocalityLeastConn::new()
    }
}

impl Scheduler for LocalityLeastConn {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        input: &SchedInput,
    ) -> Option<usize> {
        if let Some(en) = self.table.get_mut(input.vaddr) {
            en.lastuse = input.now;
            if let Some(i) = position(dests, en.value) {
                if dests[i].server.weight > 0 && !is_overloaded(&dests[i], dests, registry) {
                    return Some(i);
                }
            }
        }
        let i = WeightedLeastConn::pick(dests, registry)?;
        let id = dests[i].id;
        match self.table.get_mut(input.vaddr) {
            // The kernel replaces the entry; only its server and lastuse matter.
            Some(en) => {
                en.value = id;
                en.lastuse = input.now;
            }
            None => self.table.insert(input.vaddr, input.now, id),
        }
        Some(i)
    }

    fn housekeeping(&mut self, now: Instant) {
        self.table.housekeeping(now);
    }

    fn update(self: Box<Self>, service: &ServiceEntry) -> Box<dyn Scheduler> {
        if service.config.scheduler == SchedulerKind::Lblc {
            self
        } else {
            super::rebound(service)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::service::SchedFlags;

    #[test]
    fn keeps_a_destination_on_its_server_until_overload() {
        let d = dests(&[1, 1]);
        let reg = DestRegistry::new(4);
        let mut s = LocalityLeastConn::new();
        let to_x = |t| input("192.0.2.1", 1, "203.0.113.9", t);
        // Empty cache, both idle: wlc gives A.
        assert_eq!(s.schedule(&d, &reg, &to_x(0)), Some(0));
        // A with 1 active (not > weight 1) stays although wlc would now pick B.
        set_conns(&reg, &d[0], 1, 0);
        assert_eq!(s.schedule(&d, &reg, &to_x(1)), Some(0));
        // Another destination goes by wlc: B.
        assert_eq!(
            s.schedule(&d, &reg, &input("192.0.2.1", 1, "203.0.113.10", 2)),
            Some(1)
        );
        // A with 2 active > 1 while B has 0 * 2 < 1: overloaded, move to B and stay there.
        set_conns(&reg, &d[0], 2, 0);
        assert_eq!(s.schedule(&d, &reg, &to_x(3)), Some(1));
        set_conns(&reg, &d[0], 0, 0);
        set_conns(&reg, &d[1], 1, 0);
        assert_eq!(s.schedule(&d, &reg, &to_x(4)), Some(1));
    }

    #[test]
    fn overloaded_but_no_lighter_server_stays() {
        // A 5 active > w1, but B has 3 active: 6 < 2 is false. No server is under half its
        // weight, so A stays.
        let d = dests(&[1, 2]);
        let reg = DestRegistry::new(4);
        let mut s = LocalityLeastConn::new();
        let to_x = |t| input("192.0.2.1", 1, "203.0.113.9", t);
        assert_eq!(s.schedule(&d, &reg, &to_x(0)), Some(0));
        set_conns(&reg, &d[0], 5, 0);
        set_conns(&reg, &d[1], 3, 0);
        assert_eq!(s.schedule(&d, &reg, &to_x(1)), Some(0));
    }

    #[test]
    fn quiescing_moves_the_destination_the_overload_flag_does_not() {
        let d = dests(&[1, 1]);
        let reg = DestRegistry::new(4);
        let mut s = LocalityLeastConn::new();
        let to_x = |t| input("192.0.2.1", 1, "203.0.113.9", t);
        assert_eq!(s.schedule(&d, &reg, &to_x(0)), Some(0));
        // OVERLOAD (the -x threshold) does not move a cached address, as in the kernel...
        set_overload(&reg, &d[0], true);
        assert_eq!(s.schedule(&d, &reg, &to_x(1)), Some(0));
        // ...but a new address skips the OVERLOAD server, and weight 0 moves a cached one.
        assert_eq!(
            s.schedule(&d, &reg, &input("192.0.2.1", 1, "203.0.113.10", 2)),
            Some(1)
        );
        set_overload(&reg, &d[0], false);
        let mut q = d.clone();
        q[0].server.weight = 0;
        assert_eq!(s.schedule(&q, &reg, &to_x(3)), Some(1));
    }

    #[test]
    fn entries_expire_after_a_day_idle_and_survive_snapshots() {
        let d = dests(&[1, 1]);
        let reg = DestRegistry::new(4);
        let svc = service(SchedulerKind::Lblc, SchedFlags::default(), d.clone());
        let mut s: Box<dyn Scheduler> = Box::new(LocalityLeastConn::new());
        s.housekeeping(Instant::ZERO);
        set_conns(&reg, &d[0], 1, 0);
        // B by wlc; then make A the wlc choice: the cache keeps B.
        assert_eq!(
            s.schedule(&d, &reg, &input("192.0.2.1", 1, "203.0.113.9", 0)),
            Some(1)
        );
        set_conns(&reg, &d[0], 0, 0);
        set_conns(&reg, &d[1], 1, 0);
        // A new snapshot (the list reversed) keeps the cache: B is now index 0.
        let mut s = s.update(&svc);
        let rev = vec![d[1].clone(), d[0].clone()];
        assert_eq!(
            s.schedule(&rev, &reg, &input("192.0.2.1", 1, "203.0.113.9", 10)),
            Some(0)
        );
        // A day of periodic checks later (the last use at 10 s), the entry is gone: wlc, A.
        let mut t = 0;
        while t < 10 + 24 * 3600 + 30 * 60 {
            t += 60;
            s.housekeeping(Instant::from_secs(t));
        }
        assert_eq!(
            s.schedule(&rev, &reg, &input("192.0.2.1", 1, "203.0.113.9", t)),
            Some(1)
        );
    }
}
