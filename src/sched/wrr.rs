//! Weighted round robin (`ip_vs_wrr.c`).
//!
//! ```text
//! di = gcd of the positive weights (1 if none), mw = max weight - (di - 1), cw = mw
//! scan on from the last pick for an available server with weight >= cw;
//! each time the scan wraps past the end of the list: cw -= di, and if cw <= 0: cw = mw
//! ```
//!
//! With weights 4, 3, 2 (A, B, C) the passes run at cw = 4, 3, 2, 1 and give
//! A | A B | A B C | A B C, then again from cw = 4. Lowering mw by `di - 1` makes the last
//! pass run at cw = 1, so a weight below `di` is still found (the kernel's fix for weights
//! changing under a running scan). The kernel sends its cursor back to the head on any
//! destination change; here a new snapshot builds a new scheduler, which is the same reset.

use super::hash::gcd;
use super::{SchedInput, Scheduler};
use crate::service::{Dest, DestRegistry};

/// Weighted round robin with the kernel's gcd stepping.
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
}

impl WeightedRoundRobin {
    /// A scheduler for `dests`, cursor at the head.
    pub fn new(dests: &[Dest]) -> WeightedRoundRobin {
        let positive = dests.iter().map(|d| d.server.weight).filter(|&w| w > 0);
        let g = positive.clone().fold(0u32, |g, w| gcd(w as u32, g));
        let di = if g == 0 { 1 } else { g as i32 };
        let max = positive.max().unwrap_or(0);
        let mw = max - (di - 1);
        WeightedRoundRobin {
            cl: None,
            cw: mw,
            mw,
            di,
        }
    }
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
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn run(s: &mut WeightedRoundRobin, d: &[Dest], reg: &DestRegistry, n: usize) -> String {
        (0..n)
            .map(|_| match s.schedule(d, reg, &any_input()) {
                Some(i) => (b'A' + i as u8) as char,
                None => '-',
            })
            .collect()
    }

    #[test]
    fn weights_4_3_2_give_aababcabc() {
        // di = gcd(4,3,2) = 1, mw = 4. From the head: cw=4: A; wrap cw=3: A B; wrap cw=2:
        // A B C; wrap cw=1: A B C; wrap cw=0 -> mw=4: A ...
        let d = dests(&[4, 3, 2]);
        let reg = DestRegistry::new(4);
        let mut s = WeightedRoundRobin::new(&d);
        assert_eq!(run(&mut s, &d, &reg, 18), "AABABCABCAABABCABC");
    }

    #[test]
    fn gcd_steps_over_empty_passes() {
        // Weights 4, 2: di = 2, mw = 4 - 1 = 3. cw=3: A; wrap cw=1 (last pass): A B;
        // wrap cw=-1 -> 3: A ... so A gets 2 of every 3 as 4:2 asks.
        let d = dests(&[4, 2]);
        let reg = DestRegistry::new(4);
        let mut s = WeightedRoundRobin::new(&d);
        assert_eq!(run(&mut s, &d, &reg, 6), "AABAAB");
    }

    #[test]
    fn skips_quiesced_and_overloaded() {
        // Weights 2, 0, 1 with A overloaded: only C (weight 1) is left. From the head at
        // cw=2: nothing; wrap cw=1 (last pass): C. Next call from C: wrap cw=0 -> 2,
        // restarted; cw=2: nothing; wrap cw=1 last pass, stop = C: C.
        let d = dests(&[2, 0, 1]);
        let reg = DestRegistry::new(4);
        set_overload(&reg, &d[0], true);
        let mut s = WeightedRoundRobin::new(&d);
        assert_eq!(run(&mut s, &d, &reg, 4), "CCCC");
        set_overload(&reg, &d[2], true);
        assert_eq!(run(&mut s, &d, &reg, 2), "--");
        set_overload(&reg, &d[0], false);
        assert_eq!(run(&mut s, &d, &reg, 2), "AA");
    }
}
