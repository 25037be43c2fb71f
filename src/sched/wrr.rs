//! Weighted round robin (`ip_vs_wrr.c`).
//!
//! ```text
//! di = gcd of the positive weights (1 if none), mw = max weight - (di - 1)
//! schedule: scan on from the last pick for an available server with weight >= cw;
//!           each time the scan wraps past the end of the list: cw -= di, and if cw <= 0: cw = mw
//! init (the scheduler bound to a service):  cl = head, cw = mw
//! every -a, -e, -d (ip_vs_wrr_dest_changed): cl = head, di and mw anew,
//!           cw = mw if cw > mw or cw == 0, else (cw / di) * di + 1 if di > 1, else unchanged
//! ```
//!
//! The kernel binds the scheduler when the service is created (`-A`, no real servers yet:
//! mw = 0, so cw = 0) and then runs `dest_changed` once per `-a`. The current weight cw is
//! therefore *carried* through the additions, not reset to the maximum: with weights 4, 3, 2
//! added in that order cw goes 0 -> 1 (A alone: di = 4, mw = 1) and stays 1, so the first
//! pass runs at cw = 1 and gives every server one turn before the passes at 4, 3, 2, 1
//! begin. On the kernel's newest-first list C B A that is C B A | A | B A | C B A | C B A;
//! on configuration order A B C it is A B C | A | A B | A B C | A B C.
//!
//! fastlb reproduces that history: a service as it appears in a configuration is built as
//! the kernel builds it from `-A` and one `-a` per real server in configuration order
//! ([`WeightedRoundRobin::for_service`]); a later snapshot that adds, edits or removes real
//! servers runs `dest_changed` once per change ([`Scheduler::update`]): removals first, then
//! additions and edits in configuration order, which is exact for one change per snapshot
//! (every `fastlb ctl -a/-e/-d`) and the kernel's order for what keepalived does on a reload.
//! A snapshot that leaves the list as it was keeps the cursor and cw, as the kernel, which
//! hears nothing of changes to other services, does. Switching a service to wrr (`-E -s wrr`)
//! binds it afresh over its current list ([`WeightedRoundRobin::bound`]): cw = mw.
//!
//! Lowering mw by `di - 1` makes the last pass run at cw = 1, so a weight below `di` is still
//! found (the kernel's fix for weights changing under a running scan).

use super::hash::gcd;
use super::{SchedInput, Scheduler};
use crate::service::{Dest, DestId, DestRegistry, RealServer, SchedulerKind, ServiceEntry};

/// Weighted round robin with the kernel's gcd stepping and update rule.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    /// Last pick; `None` is the list head (before the first server).
    cl: Option<usize>,
    /// Current weight threshold.
    cw: i32,
    /// Maximum weight, lowered by `di - 1`; 0 when no server has a positive weight.
    mw: i32,
    /// Step: gcd of the positive weights.
    di: i32,
    /// The list the state belongs to (ids and settings in list order), to tell what a new
    /// snapshot changed.
    list: Vec<(DestId, RealServer)>,
}

impl WeightedRoundRobin {
    /// The scheduler of a service created with `-A` and given its real servers by one `-a`
    /// each, in configuration order, as a kernel restored from the same rules has it.
    pub fn for_service(service: &ServiceEntry) -> WeightedRoundRobin {
        let mut s = WeightedRoundRobin::bound(&[]);
        let mut weights = Vec::with_capacity(service.dests.len());
        for real in &service.config.reals {
            weights.push(real.weight);
            s.dest_changed(&weights);
        }
        s.list = list_of(&service.dests);
        s
    }

    /// The scheduler bound afresh to a service that already has `dests` (the kernel's
    /// `init_service`): cursor at the head, cw = mw.
    pub fn bound(dests: &[Dest]) -> WeightedRoundRobin {
        let weights: Vec<i32> = dests.iter().map(|d| d.server.weight).collect();
        let (di, mw) = steps(&weights);
        WeightedRoundRobin {
            cl: None,
            cw: mw,
            mw,
            di,
            list: list_of(dests),
        }
    }

    /// `ip_vs_wrr_dest_changed` for a list with these weights.
    fn dest_changed(&mut self, weights: &[i32]) {
        (self.di, self.mw) = steps(weights);
        self.cl = None;
        if self.cw > self.mw || self.cw == 0 {
            self.cw = self.mw;
        } else if self.di > 1 {
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }
}

/// `(di, mw)` for a list with `weights`: the gcd of the positive weights (1 if none) and the
/// maximum weight (0 if none is positive) less `di - 1`.
fn steps(weights: &[i32]) -> (i32, i32) {
    let g = weights
        .iter()
        .filter(|&&w| w > 0)
        .fold(0u32, |g, &w| gcd(w as u32, g));
    let di = if g == 0 { 1 } else { g as i32 };
    let max = weights.iter().copied().fold(0, i32::max);
    (di, max - (di - 1))
}

fn list_of(dests: &[Dest]) -> Vec<(DestId, RealServer)> {
    dests.iter().map(|d| (d.id, d.server.clone())).collect()
}

impl Scheduler for WeightedRoundRobin {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        _input: &SchedInput,
    ) -> Option<usize> {
        if self.mw == 0 {
            return None;
        }
        let last = self.cl;
        // The kernel's stop marker: once a pass with cw <= di has started after a restart,
        // reaching `last` again means every server was tried at weight >= 1.
        let mut stop = None;
        let mut last_pass = false;
        let mut restarted = false;
        let mut pos = last.map_or(0, |l| l + 1);
        loop {
            while pos < dests.len() {
                let d = &dests[pos];
                if !registry.get(d.id).is_overloaded() && d.server.weight >= self.cw {
                    self.cl = Some(pos);
                    return Some(pos);
                }
                if stop == Some(pos) {
                    self.cl = Some(pos);
                    return None;
                }
                pos += 1;
            }
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                if last_pass || last.is_none() {
                    self.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
            pos = 0;
        }
    }

    fn update(mut self: Box<Self>, service: &ServiceEntry) -> Box<dyn Scheduler> {
        if service.config.scheduler != SchedulerKind::Wrr {
            return super::rebound(service);
        }
        let new = list_of(&service.dests);
        if new == self.list {
            return self;
        }
        // Replay the changes one by one on a working copy of the old list (only the
        // weights matter to dest_changed): removals, then additions and edits in
        // configuration order.
        let mut work = std::mem::take(&mut self.list);
        let mut weights: Vec<i32>;
        let mut i = 0;
        while i < work.len() {
            if new.iter().any(|(n, _)| *n == work[i].0) {
                i += 1;
                continue;
            }
            work.remove(i);
            weights = work.iter().map(|(_, r)| r.weight).collect();
            self.dest_changed(&weights);
        }
        for real in &service.config.reals {
            let Some((id, _)) = new
                .iter()
                .find(|(_, r)| r.addr == real.addr && r.port == real.port)
            else {
                continue;
            };
            match work.iter_mut().find(|(w, _)| w == id) {
                Some((_, old)) if old == real => continue,
                Some((_, old)) => *old = real.clone(),
                None => work.push((*id, real.clone())),
            }
            weights = work.iter().map(|(_, r)| r.weight).collect();
            self.dest_changed(&weights);
        }
        self.list = new;
        self.cl = None;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::service::{DestOrder, SchedFlags};

    fn run(s: &mut dyn Scheduler, d: &[Dest], reg: &DestRegistry, n: usize) -> String {
        (0..n)
            .map(|_| match s.schedule(d, reg, &any_input()) {
                Some(i) => (b'A' + d[i].id.0 as u8) as char,
                None => '-',
            })
            .collect()
    }

    fn wrr(weights: &[i32], order: DestOrder) -> ServiceEntry {
        let mut svc = service(SchedulerKind::Wrr, SchedFlags::default(), dests(weights));
        if order == DestOrder::Kernel {
            svc.dests.reverse();
        }
        svc
    }

    #[test]
    fn weights_4_3_2_carry_cw_through_the_additions() {
        // -A: cw = 0. -a A(4): di 4, mw 1, cw = mw = 1. -a B(3): di 1, mw 4, cw 1 stays.
        // -a C(2): the same. The first pass runs at cw = 1 from the head, then 4, 3, 2, 1.
        let reg = DestRegistry::new(4);
        let svc = wrr(&[4, 3, 2], DestOrder::Kernel);
        let mut s = WeightedRoundRobin::for_service(&svc);
        // The kernel's list is C B A (letters name the servers, not places in the list).
        assert_eq!(run(&mut s, &svc.dests, &reg, 18), "CBAABACBACBAABACBA");
        let svc = wrr(&[4, 3, 2], DestOrder::Config);
        let mut s = WeightedRoundRobin::for_service(&svc);
        assert_eq!(run(&mut s, &svc.dests, &reg, 9), "ABCAABABC");
    }

    #[test]
    fn bound_afresh_it_starts_at_the_maximum() {
        // init_service over an existing list (-E -s wrr): cw = mw = 4: A | A B | A B C | ...
        let d = dests(&[4, 3, 2]);
        let reg = DestRegistry::new(4);
        let mut s = WeightedRoundRobin::bound(&d);
        assert_eq!(run(&mut s, &d, &reg, 18), "AABABCABCAABABCABC");
    }

    #[test]
    fn gcd_steps_over_empty_passes() {
        // -a A(4): di 4, mw 1, cw 1. -a B(2): di 2, mw 3; cw 1 <= 3 and di > 1:
        // cw = (1 / 2) * 2 + 1 = 1. Kernel list B A: cw 1: B A; wrap cw -1 -> 3: A;
        // wrap cw 1 (last pass): B A; ...
        let reg = DestRegistry::new(4);
        let svc = wrr(&[4, 2], DestOrder::Kernel);
        let mut s = WeightedRoundRobin::for_service(&svc);
        assert_eq!(run(&mut s, &svc.dests, &reg, 8), "BAABAABA");
    }

    #[test]
    fn each_change_runs_dest_changed_and_keeps_cw() {
        // The kernel's sequence (tests/kernel_ipvs.rs, "wrr 4,3,2 live"): C B A A B leaves
        // cw = 3 at B. -a D(3): list D C B A, cw 3 stays, cursor to the head: D B A, wrap
        // cw 2: D C B. -e B 1: cw 2 stays: D C A, wrap cw 1: D C. -d A: list D C B, mw 3,
        // cw 1: D C B, wrap cw 3: D. -e C 6: mw 6, cw 3 stays: D C, wrap cw 2: D C, cw 1: D.
        let reg = DestRegistry::new(8);
        let all = dests(&[4, 3, 2, 3]);
        let kernel = |reals: &[usize], weights: &[i32]| {
            let mut d: Vec<Dest> = reals.iter().map(|&i| all[i].clone()).collect();
            for (x, &w) in d.iter_mut().zip(weights) {
                x.server.weight = w;
            }
            let mut svc = service(SchedulerKind::Wrr, SchedFlags::default(), d);
            svc.dests.reverse();
            svc
        };
        let svc = kernel(&[0, 1, 2], &[4, 3, 2]);
        let mut s: Box<dyn Scheduler> = Box::new(WeightedRoundRobin::for_service(&svc));
        let mut got = run(s.as_mut(), &svc.dests, &reg, 5);
        for (reals, weights, n) in [
            (&[0, 1, 2, 3][..], &[4, 3, 2, 3][..], 6),
            (&[0, 1, 2, 3], &[4, 1, 2, 3], 5),
            (&[1, 2, 3], &[1, 2, 3], 4),
            (&[1, 2, 3], &[1, 6, 3], 5),
        ] {
            let svc = kernel(reals, weights);
            s = s.update(&svc);
            got += " ";
            got += &run(s.as_mut(), &svc.dests, &reg, n);
        }
        assert_eq!(got, "CBAAB DBADCB DCADC DCBD DCDCD");
    }

    #[test]
    fn several_changes_in_one_snapshot_act_one_after_another() {
        // Weights 6,4,2,3 (gcd steps matter): remove the first two, edit one, add one: as one
        // snapshot, and as removals, then the edit and the addition, one snapshot each.
        let reg = DestRegistry::new(8);
        let all = dests(&[6, 4, 2, 3, 9]);
        let svc = |reals: &[usize], weights: &[i32]| {
            let mut d: Vec<Dest> = reals.iter().map(|&i| all[i].clone()).collect();
            for (x, &w) in d.iter_mut().zip(weights) {
                x.server.weight = w;
            }
            service(SchedulerKind::Wrr, SchedFlags::default(), d)
        };
        let start = svc(&[0, 1, 2, 3], &[6, 4, 2, 3]);
        let fin = svc(&[2, 3, 4], &[2, 6, 9]);
        let mut once: Box<dyn Scheduler> = Box::new(WeightedRoundRobin::for_service(&start));
        let mut steps: Box<dyn Scheduler> = Box::new(WeightedRoundRobin::for_service(&start));
        run(once.as_mut(), &start.dests, &reg, 3);
        run(steps.as_mut(), &start.dests, &reg, 3);
        once = once.update(&fin);
        for mid in [
            svc(&[1, 2, 3], &[4, 2, 3]),
            svc(&[2, 3], &[2, 3]),
            svc(&[2, 3], &[2, 6]),
        ] {
            steps = steps.update(&mid);
        }
        steps = steps.update(&fin);
        assert_eq!(
            run(once.as_mut(), &fin.dests, &reg, 17),
            run(steps.as_mut(), &fin.dests, &reg, 17)
        );
    }

    #[test]
    fn an_unchanged_list_keeps_the_cursor() {
        let reg = DestRegistry::new(4);
        let svc = wrr(&[4, 3, 2], DestOrder::Kernel);
        let mut s: Box<dyn Scheduler> = Box::new(WeightedRoundRobin::for_service(&svc));
        let mut got = run(s.as_mut(), &svc.dests, &reg, 5);
        s = s.update(&svc);
        got += &run(s.as_mut(), &svc.dests, &reg, 4);
        assert_eq!(got, "CBAABACBA");
    }

    #[test]
    fn skips_quiesced_and_overloaded() {
        // Weights 2, 0, 1 bound afresh, A overloaded: only C (weight 1) is left. From the
        // head at cw=2: nothing; wrap cw=1 (last pass): C. Next call from C: wrap cw=0 -> 2,
        // restarted; cw=2: nothing; wrap cw=1 last pass, stop = C: C.
        let d = dests(&[2, 0, 1]);
        let reg = DestRegistry::new(4);
        set_overload(&reg, &d[0], true);
        let mut s = WeightedRoundRobin::bound(&d);
        assert_eq!(run(&mut s, &d, &reg, 4), "CCCC");
        set_overload(&reg, &d[2], true);
        assert_eq!(run(&mut s, &d, &reg, 2), "--");
        set_overload(&reg, &d[0], false);
        assert_eq!(run(&mut s, &d, &reg, 2), "AA");
    }

    #[test]
    fn no_positive_weight_schedules_nothing() {
        let reg = DestRegistry::new(4);
        let svc = wrr(&[0, 0], DestOrder::Config);
        let mut s = WeightedRoundRobin::for_service(&svc);
        assert_eq!(run(&mut s, &svc.dests, &reg, 2), "--");
    }
}
