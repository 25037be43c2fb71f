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
