//! Weighted overflow (`ip_vs_ovf.c`).
//!
//! ```text
//! pick the highest-weight available server with active <= weight;
//! ties go to the first in the list
//! ```
//!
//! Only active connections count, so, as the kernel warns, this suits TCP and not UDP
//! (UDP connections are never active).

use super::{available, SchedInput, Scheduler};
use crate::service::{Dest, DestRegistry};

/// Weighted overflow: fill the highest-weight server up to `weight` active connections, then
/// overflow to the next.
#[derive(Debug, Default, Clone, Copy)]
pub struct WeightedOverflow;

impl Scheduler for WeightedOverflow {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        _input: &SchedInput,
    ) -> Option<usize> {
        let mut best: Option<(usize, i32)> = None;
        for (i, d) in dests.iter().enumerate() {
            let c = registry.get(d.id);
            let w = d.server.weight;
            // The kernel skips `activeconns > w`: a server at exactly `weight` still takes one.
            if !available(d, c) || i64::from(c.active()) > i64::from(w) {
                continue;
            }
            if best.is_none_or(|(_, hw)| w > hw) {
                best = Some((i, w));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn overflows_when_active_exceeds_weight() {
        let d = dests(&[2, 3]);
        let reg = DestRegistry::new(4);
        // B (w3) while active <= 3, including exactly 3.
        for active in 0..=3 {
            set_conns(&reg, &d[1], active, 100);
            assert_eq!(WeightedOverflow.schedule(&d, &reg, &any_input()), Some(1));
        }
        set_conns(&reg, &d[1], 4, 0);
        assert_eq!(WeightedOverflow.schedule(&d, &reg, &any_input()), Some(0));
        set_conns(&reg, &d[0], 3, 0);
        assert_eq!(WeightedOverflow.schedule(&d, &reg, &any_input()), None);
    }
}
