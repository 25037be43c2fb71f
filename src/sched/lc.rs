//! Least connections (`ip_vs_lc.c`).
//!
//! ```text
//! overhead = (active << 8) + inactive
//! pick the available server with the least overhead; ties go to the first in the list
//! ```

use super::{available, SchedInput, Scheduler};
use crate::service::{Dest, DestRegistry};

/// Least connections: minimum `(active << 8) + inactive`, weights ignored but for quiescing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastConn;

impl Scheduler for LeastConn {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        _input: &SchedInput,
    ) -> Option<usize> {
        let mut least: Option<(usize, u64)> = None;
        for (i, d) in dests.iter().enumerate() {
            let c = registry.get(d.id);
            if !available(d, c) {
                continue;
            }
            let doh = c.overhead();
            // Strictly less: the first of equals stays.
            if least.is_none_or(|(_, loh)| doh < loh) {
                least = Some((i, doh));
            }
        }
        least.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn ties_go_to_the_first() {
        let d = dests(&[1, 5, 1]);
        let reg = DestRegistry::new(4);
        assert_eq!(LeastConn.schedule(&d, &reg, &any_input()), Some(0));
        // Overheads 0x100+0, 0x100+0, 0x100+0: still the first.
        for x in &d {
            set_conns(&reg, x, 1, 0);
        }
        assert_eq!(LeastConn.schedule(&d, &reg, &any_input()), Some(0));
    }

    #[test]
    fn one_active_outweighs_255_inactive() {
        // A: 1 active = 256; B: 255 inactive = 255; C: 0 active, 256 inactive = 256.
        let d = dests(&[1, 1, 1]);
        let reg = DestRegistry::new(4);
        set_conns(&reg, &d[0], 1, 0);
        set_conns(&reg, &d[1], 0, 255);
        set_conns(&reg, &d[2], 0, 256);
        assert_eq!(LeastConn.schedule(&d, &reg, &any_input()), Some(1));
    }

    #[test]
    fn weight_does_not_matter_but_quiescing_does() {
        let d = dests(&[0, 100, 1]);
        let reg = DestRegistry::new(4);
        set_conns(&reg, &d[1], 0, 3);
        set_conns(&reg, &d[2], 0, 2);
        assert_eq!(LeastConn.schedule(&d, &reg, &any_input()), Some(2));
        set_overload(&reg, &d[2], true);
        assert_eq!(LeastConn.schedule(&d, &reg, &any_input()), Some(1));
    }
}
