//! Weighted failover (`ip_vs_fo.c`).
//!
//! ```text
//! pick the available server with the highest weight; ties go to the first in the list
//! ```

use super::{available, SchedInput, Scheduler};
use crate::service::{Dest, DestRegistry};

/// Weighted failover: all new connections to the highest-weight available server.
#[derive(Debug, Default, Clone, Copy)]
pub struct WeightedFailover;

impl Scheduler for WeightedFailover {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        _input: &SchedInput,
    ) -> Option<usize> {
        let mut best: Option<(usize, i32)> = None;
        for (i, d) in dests.iter().enumerate() {
            if available(d, registry.get(d.id)) && best.is_none_or(|(_, hw)| d.server.weight > hw) {
                best = Some((i, d.server.weight));
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
    fn highest_weight_then_the_next_when_it_fails() {
        let d = dests(&[2, 5, 5, 3]);
        let reg = DestRegistry::new(4);
        // B and C tie at 5: the first, B, however loaded.
        set_conns(&reg, &d[1], 1000, 0);
        assert_eq!(WeightedFailover.schedule(&d, &reg, &any_input()), Some(1));
        set_overload(&reg, &d[1], true);
        assert_eq!(WeightedFailover.schedule(&d, &reg, &any_input()), Some(2));
        set_overload(&reg, &d[2], true);
        assert_eq!(WeightedFailover.schedule(&d, &reg, &any_input()), Some(3));
    }
}
