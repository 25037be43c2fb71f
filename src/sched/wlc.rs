//! Weighted least connections (`ip_vs_wlc.c`), the IPVS default.
//!
//! ```text
//! overhead = (active << 8) + inactive
//! pick the available server with the least overhead / weight, compared as
//!     loh * dw > doh * lw   (64-bit cross-multiplication, no division)
//! starting from the first available server; ties go to the first in the list
//! ```

use super::{available, SchedInput, Scheduler};
use crate::service::{Dest, DestRegistry};

/// Weighted least connections: minimum `overhead / weight`.
#[derive(Debug, Default, Clone, Copy)]
pub struct WeightedLeastConn;

impl WeightedLeastConn {
    /// The wlc pick over `dests`, shared with lblc and lblcr (the kernel repeats this loop in
    /// each of them).
    pub(super) fn pick(dests: &[Dest], registry: &DestRegistry) -> Option<usize> {
        least_weighted(dests.iter().enumerate(), registry, |c| c.overhead())
    }
}

/// The kernel's two-stage weighted minimum over `(index, dest)` pairs: the first available
/// one, then any later available one with `loh * dw > doh * lw`. `load` gives a server's
/// overhead from its counters.
#[inline]
pub(super) fn least_weighted<'a>(
    mut it: impl Iterator<Item = (usize, &'a Dest)>,
    registry: &DestRegistry,
    load: impl Fn(&crate::service::DestCounters) -> u64,
) -> Option<usize> {
    let (mut least, mut lw, mut loh) = it.find_map(|(i, d)| {
        let c = registry.get(d.id);
        available(d, c).then(|| (i, d.server.weight as u64, load(c)))
    })?;
    for (i, d) in it {
        let c = registry.get(d.id);
        if !available(d, c) {
            continue;
        }
        let (dw, doh) = (d.server.weight as u64, load(c));
        if loh * dw > doh * lw {
            (least, lw, loh) = (i, dw, doh);
        }
    }
    Some(least)
}

impl Scheduler for WeightedLeastConn {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        _input: &SchedInput,
    ) -> Option<usize> {
        Self::pick(dests, registry)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn two_idle_servers_go_to_the_first() {
        // Weights 1 and 2, both idle: 0 * 2 > 0 * 1 is false, the first stays.
        let d = dests(&[1, 2]);
        let reg = DestRegistry::new(4);
        assert_eq!(WeightedLeastConn.schedule(&d, &reg, &any_input()), Some(0));
    }

    #[test]
    fn overhead_per_weight() {
        // A w1: 1 active = 256 per weight. B w3: 2 active + 1 inactive = 513 / 3 = 171.
        // 256 * 3 = 768 > 513 * 1: B. C w2: 1 active + 100 inactive = 356 / 2 = 178;
        // 513 * 2 = 1026 > 356 * 3 = 1068? no: B stays.
        let d = dests(&[1, 3, 2]);
        let reg = DestRegistry::new(4);
        set_conns(&reg, &d[0], 1, 0);
        set_conns(&reg, &d[1], 2, 1);
        set_conns(&reg, &d[2], 1, 100);
        assert_eq!(WeightedLeastConn.schedule(&d, &reg, &any_input()), Some(1));
        // C with 1 active + 80 inactive = 336: 513 * 2 = 1026 > 336 * 3 = 1008: C.
        set_conns(&reg, &d[2], 1, 80);
        assert_eq!(WeightedLeastConn.schedule(&d, &reg, &any_input()), Some(2));
    }

    #[test]
    fn no_overflow_with_large_counts() {
        // The largest counts there can be: 2^31 - 1 (a connection table holds fewer
        // entries; the kernel's counters are `atomic_t`, as large).
        let max = i32::MAX as u32;
        let d = dests(&[65535, 65535]);
        let reg = DestRegistry::new(4);
        set_conns(&reg, &d[0], max, max);
        set_conns(&reg, &d[1], max, max - 1);
        assert_eq!(WeightedLeastConn.schedule(&d, &reg, &any_input()), Some(1));
    }
}
