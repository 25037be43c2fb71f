//! Never queue (`ip_vs_nq.c`).
//!
//! ```text
//! the first available server with active == 0, if any;
//! else the least (active + 1) / weight as sed, compared as loh * dw > doh * lw;
//! ties go to the first in the list
//! ```

use super::{available, SchedInput, Scheduler};
use crate::service::{Dest, DestRegistry};

/// Never queue: an idle server if there is one, else shortest expected delay.
#[derive(Debug, Default, Clone, Copy)]
pub struct NeverQueue;

impl Scheduler for NeverQueue {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        _input: &SchedInput,
    ) -> Option<usize> {
        let mut least: Option<(usize, u64, u64)> = None;
        for (i, d) in dests.iter().enumerate() {
            let c = registry.get(d.id);
            if !available(d, c) {
                continue;
            }
            if c.active() == 0 {
                return Some(i);
            }
            let (dw, doh) = (d.server.weight as u64, u64::from(c.active()) + 1);
            if least.is_none_or(|(_, lw, loh)| loh * dw > doh * lw) {
                least = Some((i, dw, doh));
            }
        }
        least.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn an_idle_server_goes_first() {
        // A w10 with 1 active: 2/10 is the best expected delay, but C (w1) is idle.
        let d = dests(&[10, 1, 1]);
        let reg = DestRegistry::new(4);
        set_conns(&reg, &d[0], 1, 0);
        set_conns(&reg, &d[1], 3, 0);
        set_conns(&reg, &d[2], 0, 50);
        assert_eq!(NeverQueue.schedule(&d, &reg, &any_input()), Some(2));
    }

    #[test]
    fn without_idle_servers_it_is_sed() {
        // A w1 1 active: 2/1. B w4 3 active: 4/4 = 1. C w2 1 active: 2/2 = 1, ties with B.
        // A -> B (2 * 4 > 4 * 1) -> C? 4 * 2 > 2 * 4 is false: B.
        let d = dests(&[1, 4, 2]);
        let reg = DestRegistry::new(4);
        set_conns(&reg, &d[0], 1, 0);
        set_conns(&reg, &d[1], 3, 0);
        set_conns(&reg, &d[2], 1, 0);
        assert_eq!(NeverQueue.schedule(&d, &reg, &any_input()), Some(1));
    }

    #[test]
    fn an_idle_quiesced_server_is_skipped() {
        let d = dests(&[0, 1]);
        let reg = DestRegistry::new(4);
        set_conns(&reg, &d[1], 7, 0);
        assert_eq!(NeverQueue.schedule(&d, &reg, &any_input()), Some(1));
    }
}
