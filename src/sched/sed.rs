//! Shortest expected delay (`ip_vs_sed.c`).
//!
//! ```text
//! expected delay = (active + 1) / weight      (inactive connections do not count)
//! pick the available server with the least expected delay, compared as
//!     loh * dw > doh * lw   (64-bit cross-multiplication)
//! starting from the first available server; ties go to the first in the list
//! ```
//!
//! The `+ 1` counts the connection being scheduled, which is what tells sed from wlc: two
//! idle servers of weights 1 and 2 tie under wlc (0/1 = 0/2) but not under sed (1/1 > 1/2).

use super::wlc::least_weighted;
use super::{SchedInput, Scheduler};
use crate::service::{Dest, DestRegistry};

/// Shortest expected delay: minimum `(active + 1) / weight`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShortestExpectedDelay;

impl Scheduler for ShortestExpectedDelay {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        _input: &SchedInput,
    ) -> Option<usize> {
        least_weighted(dests.iter().enumerate(), registry, |c| {
            u64::from(c.active()) + 1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn two_idle_servers_go_to_the_heavier() {
        // Weights 1 and 2, both idle: A = 1/1, B = 1/2; 1 * 2 > 1 * 1: B.
        let d = dests(&[1, 2]);
        let reg = DestRegistry::new(4);
        assert_eq!(
            ShortestExpectedDelay.schedule(&d, &reg, &any_input()),
            Some(1)
        );
    }

    #[test]
    fn inactive_connections_do_not_count() {
        // A w1: 0 active, 1000 inactive = 1/1. B w1: 1 active = 2/1. A.
        let d = dests(&[1, 1]);
        let reg = DestRegistry::new(4);
        set_conns(&reg, &d[0], 0, 1000);
        set_conns(&reg, &d[1], 1, 0);
        assert_eq!(
            ShortestExpectedDelay.schedule(&d, &reg, &any_input()),
            Some(0)
        );
    }

    #[test]
    fn ties_go_to_the_first() {
        // A w1 idle: 1/1. B w2 with 1 active: 2/2. Equal: A.
        let d = dests(&[1, 2]);
        let reg = DestRegistry::new(4);
        set_conns(&reg, &d[1], 1, 0);
        assert_eq!(
            ShortestExpectedDelay.schedule(&d, &reg, &any_input()),
            Some(0)
        );
    }
}
