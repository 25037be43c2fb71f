//! Round robin (`ip_vs_rr.c`).
//!
//! ```text
//! next = the first available server after the last pick, wrapping around the list
//! ```

use super::{available, SchedInput, Scheduler};
use crate::service::{Dest, DestRegistry};

/// Round robin: continues after the last pick.
#[derive(Debug, Default)]
pub struct RoundRobin {
    /// Index of the last pick; `None` before the first one (the scan starts at the head).
    last: Option<usize>,
}

impl RoundRobin {
    /// A round robin that starts at the head of the list.
    pub fn new() -> RoundRobin {
        RoundRobin::default()
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
