//! Locality-based least connections with replication (`ip_vs_lblcr.c`).
//!
//! ```text
//! if set[daddr] is none:
//!     n = wlc pick; set[daddr] = {n}
//! else:
//!     n = weighted least-loaded available member of set[daddr]    (overhead / weight)
//!     if |set| > 1 and now - set.lastmod > 24 h:
//!         remove the weighted most-loaded member (weight > 0); set.lastmod = now
//!     if n is none or (n.active > n.weight and some m has m.active * 2 < m.weight):
//!         n = wlc pick; add n to set; set.lastmod = now (if it was not a member)
//! set[daddr].lastuse = now
//! ```
//!
//! As in the kernel, the member picked before the shrink is used even if the shrink removed
//! it, and new members go to the front of the set (the kernel's `list_add`), which decides
//! ties. Entries idle for 24 h go at the periodic full check of
//! [`locality`](super::locality).

use super::locality::{is_overloaded, position, LocalityTable, EXPIRATION};
use super::wlc::{least_weighted, WeightedLeastConn};
use super::{SchedInput, Scheduler};
use crate::service::{Dest, DestId, DestRegistry, SchedulerKind, ServiceEntry};
use crate::time::Instant;

/// The servers a destination address is replicated on.
#[derive(Debug)]
struct DestSet {
    /// Members, newest first.
    members: Vec<DestId>,
    /// Last time a member was added or removed.
    lastmod: Instant,
}

impl DestSet {
    /// `ip_vs_dest_set_min`: the weighted least-loaded available member.
    fn min(&self, dests: &[Dest], registry: &DestRegistry) -> Option<usize> {
        let members = self
            .members
            .iter()
            .filter_map(|&id| position(dests, id).map(|i| (i, &dests[i])));
        least_weighted(members, registry, |c| c.overhead())
    }

    /// `ip_vs_dest_set_max`: the weighted most-loaded member with weight > 0 (OVERLOAD
    /// does not matter here); ties go to the earlier member. Members no longer configured
    /// are skipped (the kernel still sees their last weight).
    fn max(&self, dests: &[Dest], registry: &DestRegistry) -> Option<DestId> {
        let mut most: Option<(DestId, u64, u64)> = None;
        for &id in &self.members {
            let Some(i) = position(dests, id) else {
                continue;
            };
            let w = dests[i].server.weight;
            if w <= 0 {
                continue;
            }
            let (dw, doh) = (w as u64, registry.get(id).overhead());
            if most.is_none_or(|(_, mw, moh)| moh * dw < doh * mw) {
                most = Some((id, dw, doh));
            }
        }
        most.map(|(id, _, _)| id)
    }

    /// Adds `id` at the front unless it is a member already.
    fn insert(&mut self, id: DestId, now: Instant) {
        if !self.members.contains(&id) {
            self.members.insert(0, id);
            self.lastmod = now;
        }
    }
}

/// Locality-based least connections with replication: a destination address is served by
/// a set of servers that grows under load and shrinks after a day without change.
#[derive(Debug)]
pub struct LocalityLeastConnReplicated {
    table: LocalityTable<DestSet>,
}

impl LocalityLeastConnReplicated {
    /// A scheduler with an empty table.
    pub fn new() -> LocalityLeastConnReplicated {
        LocalityLeastConnReplicated {
            table: LocalityTable::new(),
        }
    }
}

impl Default for LocalityLeastConnReplicated {
    fn default() -> Self {
        LocalityLeastConnReplicated::new()
    }
}

impl Scheduler for LocalityLeastConnReplicated {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        input: &SchedInput,
    ) -> Option<usize> {
        let now = input.now;
        let Some(en) = self.table.get_mut(input.vaddr) else {
            let i = WeightedLeastConn::pick(dests, registry)?;
            let set = DestSet {
                members: vec![dests[i].id],
                lastmod: now,
            };
            self.table.insert(input.vaddr, now, set);
            return Some(i);
        };
        en.lastuse = now;
        let set = &mut en.value;
        let picked = set.min(dests, registry);
        if set.members.len() > 1 && now > set.lastmod + EXPIRATION {
            if let Some(m) = set.max(dests, registry) {
                set.members.retain(|&id| id != m);
                set.lastmod = now;
            }
        }
        if let Some(i) = picked {
            if !is_overloaded(&dests[i], dests, registry) {
                return Some(i);
            }
        }
        let i = WeightedLeastConn::pick(dests, registry)?;
        set.insert(dests[i].id, now);
        Some(i)
    }

    fn housekeeping(&mut self, now: Instant) {
        self.table.housekeeping(now);
    }

    fn update(self: Box<Self>, service: &ServiceEntry) -> Box<dyn Scheduler> {
        if service.config.scheduler == SchedulerKind::Lblcr {
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

    fn members(s: &mut LocalityLeastConnReplicated, vaddr: &str) -> Vec<u32> {
        let en = s.table.get_mut(vaddr.parse().unwrap()).unwrap();
        en.value.members.iter().map(|id| id.0).collect()
    }

    #[test]
    fn grows_its_set_under_load_and_shrinks_after_a_day() {
        let d = dests(&[1, 1, 1]);
        let reg = DestRegistry::new(4);
        let mut s = LocalityLeastConnReplicated::new();
        let x = "203.0.113.9";
        let to_x = |t| input("192.0.2.1", 1, x, t);
        // New entry: wlc over idle servers gives A. Set {A}.
        assert_eq!(s.schedule(&d, &reg, &to_x(0)), Some(0));
        assert_eq!(members(&mut s, x), [0]);
        // A: 2 active > w1 while B has 0 * 2 < 1: overloaded. wlc: A 512, B 0, C 256 -> B.
        set_conns(&reg, &d[0], 2, 0);
        set_conns(&reg, &d[2], 1, 0);
        assert_eq!(s.schedule(&d, &reg, &to_x(10)), Some(1));
        assert_eq!(members(&mut s, x), [1, 0]);
        // The set's least loaded is B now: B, even though C would also do.
        set_conns(&reg, &d[1], 1, 0);
        set_conns(&reg, &d[2], 0, 5);
        assert_eq!(s.schedule(&d, &reg, &to_x(20)), Some(1));
        // Day-old set (lastmod 10 s): the next schedule drops the most loaded member, A
        // (512 vs B's 256), and still answers from the set: B.
        let later = 10 + 24 * 3600 + 1;
        assert_eq!(s.schedule(&d, &reg, &to_x(later)), Some(1));
        assert_eq!(members(&mut s, x), [1]);
        // Exactly a day after that change: not yet "after", nothing dropped (size 1 anyway).
        assert_eq!(s.schedule(&d, &reg, &to_x(later + 24 * 3600)), Some(1));
    }

    #[test]
    fn set_min_skips_unavailable_members() {
        let d = dests(&[1, 1]);
        let reg = DestRegistry::new(4);
        let mut s = LocalityLeastConnReplicated::new();
        let to_x = |t| input("192.0.2.1", 1, "203.0.113.9", t);
        assert_eq!(s.schedule(&d, &reg, &to_x(0)), Some(0));
        set_overload(&reg, &d[0], true);
        // No usable member: wlc over all gives B, which joins the set.
        assert_eq!(s.schedule(&d, &reg, &to_x(1)), Some(1));
        set_overload(&reg, &d[0], false);
        set_conns(&reg, &d[1], 0, 3);
        // Set [B, A]: B 3 vs A 0: A.
        assert_eq!(s.schedule(&d, &reg, &to_x(2)), Some(0));
    }
}
