//! Live connection counters of real servers, shared by every worker.
//!
//! Schedulers read them, the connection table updates them on state changes (never per
//! packet), and the control thread reads them for `-L`. They outlive configuration
//! snapshots: a real server keeps its [`DestId`] and its counters across reloads for as long
//! as it stays configured, and the control thread frees the id only once no connection
//! refers to it.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

/// Index of a real server's counters in the [`DestRegistry`]. Stable across snapshots.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestId(pub u32);

/// Connection counters of one real server, as the kernel's `struct ip_vs_dest` keeps them.
///
/// Each server's counters fill a cache line of their own, so workers changing one server's
/// counts do not take the line of another's from the cores reading it.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct DestCounters {
    /// Connections counted active: TCP connections in SYN_SENT, SYN_RECV, ESTABLISHED or
    /// SYNACK (the kernel's `tcp_state_active`). As in the kernel, a new connection starts
    /// inactive and `set_tcp_state` moves it in and out of the active count as its state
    /// enters or leaves those.
    pub active_conns: AtomicU32,
    /// Every other connection (other TCP states, all UDP).
    pub inactive_conns: AtomicU32,
    /// Persistence templates that point at this server.
    pub persist_conns: AtomicU32,
    /// OVERLOAD flag, set and cleared from the thresholds (see [`DestCounters::update_overload`]).
    pub overloaded: AtomicBool,
    /// `-x` upper connection threshold, 0 = none; written by the control thread.
    pub upper_threshold: AtomicU32,
    /// `-y` lower connection threshold; written by the control thread.
    pub lower_threshold: AtomicU32,
    /// The weight the server was added with, then its latest non-zero weight (the kernel's
    /// `last_weight`); written by the control thread when it builds a snapshot.
    pub last_weight: AtomicI32,
}

impl DestCounters {
    /// Active connections.
    #[inline]
    pub fn active(&self) -> u32 {
        self.active_conns.load(Ordering::Relaxed)
    }

    /// Inactive connections.
    #[inline]
    pub fn inactive(&self) -> u32 {
        self.inactive_conns.load(Ordering::Relaxed)
    }

    /// The IPVS overhead figure used by lc/wlc: `(active << 8) + inactive`.
    #[inline]
    pub fn overhead(&self) -> u64 {
        (u64::from(self.active()) << 8) + u64::from(self.inactive())
    }

    /// Whether OVERLOAD is set.
    #[inline]
    pub fn is_overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// Re-evaluates OVERLOAD after the connection count changed, as `ip_vs_bind_dest` /
    /// `ip_vs_unbind_dest` do: set when `active + inactive >= upper`; cleared when the count
    /// falls below `lower`, or, with `lower` 0, when `count * 4 < upper * 3`. Stores the
    /// flag only when it changes: every new connection and every expiry calls this, and a
    /// store would take the line from every core reading it.
    pub fn update_overload(&self) {
        let upper = self.upper_threshold.load(Ordering::Relaxed);
        let set = if upper == 0 {
            false
        } else {
            let lower = self.lower_threshold.load(Ordering::Relaxed);
            let conns = u64::from(self.active()) + u64::from(self.inactive());
            if conns >= u64::from(upper) {
                true
            } else if (lower != 0 && conns < u64::from(lower))
                || (lower == 0 && conns * 4 < u64::from(upper) * 3)
            {
                false
            } else {
                return;
            }
        };
        if self.overloaded.load(Ordering::Relaxed) != set {
            self.overloaded.store(set, Ordering::Relaxed);
        }
    }

    /// Zeroes every counter (used when an id is handed out again).
    pub fn reset(&self) {
        self.active_conns.store(0, Ordering::Relaxed);
        self.inactive_conns.store(0, Ordering::Relaxed);
        self.persist_conns.store(0, Ordering::Relaxed);
        self.overloaded.store(false, Ordering::Relaxed);
        self.upper_threshold.store(0, Ordering::Relaxed);
        self.lower_threshold.store(0, Ordering::Relaxed);
        self.last_weight.store(0, Ordering::Relaxed);
    }

    /// Sets the thresholds (from the real server's `-x`/`-y`) and re-evaluates OVERLOAD.
    pub fn set_thresholds(&self, upper: u32, lower: u32) {
        self.upper_threshold.store(upper, Ordering::Relaxed);
        self.lower_threshold.store(lower, Ordering::Relaxed);
        self.update_overload();
    }
}

/// A fixed-capacity array of [`DestCounters`], allocated once at start.
#[derive(Debug)]
pub struct DestRegistry {
    slots: Box<[DestCounters]>,
}

impl DestRegistry {
    /// Default capacity: real servers across all services.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A registry for up to `capacity` real servers.
    pub fn new(capacity: usize) -> DestRegistry {
        DestRegistry {
            slots: (0..capacity).map(|_| DestCounters::default()).collect(),
        }
    }

    /// How many ids exist.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The counters of `id`.
    ///
    /// # Panics
    /// If `id` is outside the registry (ids come only from the control thread's allocator).
    #[inline]
    pub fn get(&self, id: DestId) -> &DestCounters {
        &self.slots[id.0 as usize]
    }
}

impl Default for DestRegistry {
    fn default() -> Self {
        DestRegistry::new(Self::DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_hysteresis_without_lower_threshold() {
        let c = DestCounters::default();
        c.active_conns.store(4, Ordering::Relaxed);
        c.set_thresholds(4, 0);
        assert!(c.is_overloaded());
        c.active_conns.store(3, Ordering::Relaxed);
        c.update_overload(); // 3*4 = 12 is not < 4*3 = 12
        assert!(c.is_overloaded());
        c.active_conns.store(2, Ordering::Relaxed);
        c.update_overload();
        assert!(!c.is_overloaded());
    }

    #[test]
    fn overload_with_lower_threshold() {
        let c = DestCounters::default();
        c.inactive_conns.store(10, Ordering::Relaxed);
        c.set_thresholds(10, 5);
        assert!(c.is_overloaded());
        c.inactive_conns.store(5, Ordering::Relaxed);
        c.update_overload();
        assert!(c.is_overloaded());
        c.inactive_conns.store(4, Ordering::Relaxed);
        c.update_overload();
        assert!(!c.is_overloaded());
    }
}
