//! Round robin (`ip_vs_rr.c`).
//!
//! ```text
//! next = the first available server after the last pick, wrapping around the list
//! ```
//!
//! The cursor is the last pick itself, not a place in the list, and the kernel leaves it
//! there when real servers are added or edited (rr has no `add_dest` or `upd_dest`): a new
//! server, which the kernel puts at the head of its list, gets its first turn when the scan
//! next wraps. Only removing the server under the cursor moves it, to the server before it
//! (`ip_vs_rr_del_dest`), so the scan goes on with the one that followed. A new snapshot
//! keeps the cursor the same way ([`Scheduler::update`]); several removals in one snapshot
//! act as if made one after the other.

use super::{available, SchedInput, Scheduler};
use crate::service::{Dest, DestId, DestRegistry, SchedulerKind, ServiceEntry};

/// Round robin: continues after the last pick.
#[derive(Debug, Default)]
pub struct RoundRobin {
    /// Index of the last pick; `None` before the first one (the scan starts at the head).
    last: Option<usize>,
    /// Ids of the list the index refers to, to carry the cursor into a new snapshot.
    ids: Vec<DestId>,
}

impl RoundRobin {
    /// A round robin that starts at the head of the list.
    pub fn new() -> RoundRobin {
        RoundRobin::default()
    }

    /// A round robin over `dests` that starts at the head.
    pub fn for_dests(dests: &[Dest]) -> RoundRobin {
        RoundRobin {
            last: None,
            ids: dests.iter().map(|d| d.id).collect(),
        }
    }
}

impl Scheduler for RoundRobin {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        _input: &SchedInput,
    ) -> Option<usize> {
        let n = dests.len();
        let start = self.last.map_or(0, |l| l + 1);
        let pick = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| available(&dests[i], registry.get(dests[i].id)))?;
        self.last = Some(pick);
        Some(pick)
    }

    fn update(mut self: Box<Self>, service: &ServiceEntry) -> Box<dyn Scheduler> {
        if service.config.scheduler != SchedulerKind::Rr {
            return super::rebound(service);
        }
        let ids: Vec<DestId> = service.dests.iter().map(|d| d.id).collect();
        // The last pick if it stays, else the nearest server before it that stays (the
        // head if none does).
        self.last = self.last.and_then(|last| {
            self.ids
                .get(..=last)?
                .iter()
                .rev()
                .find_map(|old| ids.iter().position(|id| id == old))
        });
        self.ids = ids;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn run(s: &mut RoundRobin, d: &[Dest], reg: &DestRegistry, n: usize) -> String {
        (0..n)
            .map(|_| match s.schedule(d, reg, &any_input()) {
                Some(i) => (b'A' + i as u8) as char,
                None => '-',
            })
            .collect()
    }

    #[test]
    fn cycles_from_the_head_and_skips_unavailable() {
        // The kernel starts at the list head and continues after the last pick; weights
        // other than 0 do not matter.
        let d = dests(&[1, 0, 7, 1]);
        let reg = DestRegistry::new(4);
        let mut s = RoundRobin::new();
        assert_eq!(run(&mut s, &d, &reg, 6), "ACDACD");
        // D overloaded after its pick: from D the scan wraps to A, then skips B to C, then
        // skips D to A.
        set_overload(&reg, &d[3], true);
        assert_eq!(run(&mut s, &d, &reg, 3), "ACA");
    }

    #[test]
    fn the_cursor_survives_additions_and_moves_back_on_removal() {
        // List C B A: C B A C B, the cursor on B. -a D: list D C B A, the cursor stays on B:
        // A D C B A D (as the kernel does, tests/kernel_ipvs.rs "rr live"). -d A: list D C B,
        // the cursor stays on D: C B D C. -d C, the server under the cursor: list D B, the
        // cursor moves back to D, so B is next: B D B.
        use crate::service::SchedFlags;
        let reg = DestRegistry::new(8);
        let all = dests(&[1, 1, 1, 1]);
        let kernel = |reals: &[usize]| {
            let d: Vec<Dest> = reals.iter().rev().map(|&i| all[i].clone()).collect();
            service(SchedulerKind::Rr, SchedFlags::default(), d)
        };
        let letters = |s: &mut Box<dyn Scheduler>, svc: &ServiceEntry, n: usize| -> String {
            (0..n)
                .map(|_| {
                    let i = s.schedule(&svc.dests, &reg, &any_input()).unwrap();
                    (b'A' + svc.dests[i].id.0 as u8) as char
                })
                .collect()
        };
        let svc = kernel(&[0, 1, 2]);
        let mut s: Box<dyn Scheduler> = Box::new(RoundRobin::for_dests(&svc.dests));
        let mut got = letters(&mut s, &svc, 5);
        for (reals, n) in [(&[0, 1, 2, 3][..], 6), (&[1, 2, 3], 4), (&[1, 3], 3)] {
            let svc = kernel(reals);
            s = s.update(&svc);
            got += " ";
            got += &letters(&mut s, &svc, n);
        }
        assert_eq!(got, "CBACB ADCBAD CBDC BDB");
    }

    #[test]
    fn the_last_pick_is_tried_again_last() {
        // Only the last pick is available: the scan wraps around to it.
        let d = dests(&[1, 1, 1]);
        let reg = DestRegistry::new(4);
        let mut s = RoundRobin::new();
        assert_eq!(run(&mut s, &d, &reg, 2), "AB");
        set_overload(&reg, &d[0], true);
        set_overload(&reg, &d[2], true);
        assert_eq!(run(&mut s, &d, &reg, 2), "BB");
        set_overload(&reg, &d[1], true);
        assert_eq!(run(&mut s, &d, &reg, 1), "-");
    }
}
