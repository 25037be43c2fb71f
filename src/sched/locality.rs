//! The destination-address table lblc and lblcr share, with the kernel's garbage collection.
//!
//! ```text
//! 1024 buckets, bucket = hash_32(daddr, 10)   (daddr IPv6-folded)
//! every 60 s:
//!   every 30th run:                 drop entries idle >= 24 h            (full check)
//!   else if entries > 16 * 1024:    drop entries idle >= 6 min, bucket by bucket from the
//!                                   rover, until (entries - 16384) * 4 / 3 (at most 8192)
//!                                   are gone
//!   else:                           count the run
//! ```
//!
//! Entries hold [`DestId`]s, not list indices, so a table survives a new snapshot as the
//! kernel's survives destination changes; a server no longer in the list is treated as the
//! kernel treats one without `IP_VS_DEST_F_AVAILABLE`.

use std::net::IpAddr;
use std::time::Duration;

use super::hash::{fold_addr, hash_32};
use crate::service::{Dest, DestId, DestRegistry};
use crate::time::Instant;

const TAB_BITS: u32 = 10;
const TAB_SIZE: usize = 1 << TAB_BITS;
/// Entries above which the periodic check starts dropping entries idle for [`ENTRY_TIMEOUT`].
const MAX_SIZE: usize = TAB_SIZE * 16;
/// How often the periodic check runs (`CHECK_EXPIRE_INTERVAL`).
pub(super) const CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Idle time after which the partial check may drop an entry of an over-full table.
const ENTRY_TIMEOUT: Duration = Duration::from_secs(6 * 60);
/// Idle time after which the full check drops an entry (`lblc_expiration` default).
pub(super) const EXPIRATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Every this many periodic runs, one is a full check (`COUNT_FOR_FULL_EXPIRATION`).
const COUNT_FOR_FULL_EXPIRATION: u32 = 30;

/// One destination address and what the scheduler remembers for it.
#[derive(Debug)]
pub(super) struct Entry<V> {
    /// The destination address.
    pub addr: IpAddr,
    /// Last time a connection to `addr` was scheduled.
    pub lastuse: Instant,
    /// The server (lblc) or server set (lblcr).
    pub value: V,
}

/// The per-service table of destination addresses.
#[derive(Debug)]
pub(super) struct LocalityTable<V> {
    buckets: Vec<Vec<Entry<V>>>,
    entries: usize,
    rover: usize,
    counter: u32,
    next_check: Option<Instant>,
}

impl<V> LocalityTable<V> {
    /// An empty table.
    pub fn new() -> LocalityTable<V> {
        LocalityTable {
            buckets: (0..TAB_SIZE).map(|_| Vec::new()).collect(),
            entries: 0,
            rover: 0,
            counter: 1,
            next_check: None,
        }
    }

    #[inline]
    fn bucket(addr: IpAddr) -> usize {
        hash_32(fold_addr(addr), TAB_BITS) as usize
    }

    /// The entry for `addr`, if any.
    pub fn get_mut(&mut self, addr: IpAddr) -> Option<&mut Entry<V>> {
        self.buckets[Self::bucket(addr)]
            .iter_mut()
            .find(|e| e.addr == addr)
    }

    /// Adds an entry for `addr`, which must not have one.
    pub fn insert(&mut self, addr: IpAddr, now: Instant, value: V) {
        self.buckets[Self::bucket(addr)].push(Entry {
            addr,
            lastuse: now,
            value,
        });
        self.entries += 1;
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Runs the periodic check if [`CHECK_INTERVAL`] has passed since the last one. The
    /// first call only starts the clock, as the kernel arms its timer when the service is
    /// created; a late call runs one check, as a late kernel timer does.
    pub fn housekeeping(&mut self, now: Instant) {
        match self.next_check {
            None => self.next_check = Some(now + CHECK_INTERVAL),
            Some(t) if now >= t => {
                self.check_expire(now);
                self.next_check = Some(now + CHECK_INTERVAL);
            }
            Some(_) => {}
        }
    }

    fn check_expire(&mut self, now: Instant) {
        if self.counter % COUNT_FOR_FULL_EXPIRATION == 0 {
            self.sweep(now, EXPIRATION, usize::MAX);
            self.counter = 1;
            return;
        }
        if self.entries <= MAX_SIZE {
            self.counter += 1;
            return;
        }
        let goal = ((self.entries - MAX_SIZE) * 4 / 3).min(MAX_SIZE / 2);
        self.sweep(now, ENTRY_TIMEOUT, goal);
    }

    /// Drops entries idle for at least `idle`, bucket by bucket from the one after the
    /// rover, stopping after the bucket where `goal` entries have gone.
    fn sweep(&mut self, now: Instant, idle: Duration, goal: usize) {
        let mut dropped = 0;
        let mut j = self.rover;
        for _ in 0..TAB_SIZE {
            j = (j + 1) % TAB_SIZE;
            let bucket = &mut self.buckets[j];
            let before = bucket.len();
            bucket.retain(|e| now < e.lastuse + idle);
            dropped += before - bucket.len();
            if dropped >= goal {
                break;
            }
        }
        self.entries -= dropped;
        self.rover = j;
    }
}

/// Position of the server with id `id` in `dests`, if it is still configured.
#[inline]
pub(super) fn position(dests: &[Dest], id: DestId) -> Option<usize> {
    dests.iter().position(|d| d.id == id)
}

/// The kernel's `is_overloaded` for lblc/lblcr (not the OVERLOAD flag): `dest` has more
/// active connections than its weight while some server has fewer than half its weight.
pub(super) fn is_overloaded(dest: &Dest, dests: &[Dest], registry: &DestRegistry) -> bool {
    let w = |d: &Dest| i64::from(d.server.weight);
    let active = |d: &Dest| i64::from(registry.get(d.id).active());
    active(dest) > w(dest) && dests.iter().any(|d| active(d) * 2 < w(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> IpAddr {
        IpAddr::from(i.to_be_bytes())
    }

    #[test]
    fn full_check_every_thirtieth_run_drops_day_old_entries() {
        let mut t = LocalityTable::new();
        t.insert(addr(1), Instant::ZERO, ());
        t.insert(addr(2), Instant::from_secs(3600), ());
        t.housekeeping(Instant::ZERO); // arms the clock
        let day = EXPIRATION.as_secs();
        // Runs at 60 s, 120 s, ...: runs 1..=29 count, run 30 is a full check. Jump the
        // clock so that run 30 happens at exactly 24 h: addr(1) is gone, addr(2) not.
        for k in 1..30 {
            t.housekeeping(Instant::from_secs(60 * k));
        }
        assert_eq!(t.len(), 2);
        t.housekeeping(Instant::from_secs(day));
        assert_eq!(t.len(), 1);
        assert!(t.get_mut(addr(1)).is_none());
        assert!(t.get_mut(addr(2)).is_some());
    }

    #[test]
    fn housekeeping_waits_for_the_interval() {
        let mut t = LocalityTable::<()>::new();
        t.housekeeping(Instant::from_secs(10));
        t.housekeeping(Instant::from_secs(69));
        assert_eq!(t.counter, 1);
        t.housekeeping(Instant::from_secs(70));
        assert_eq!(t.counter, 2);
    }

    #[test]
    fn over_full_table_drops_idle_entries() {
        let mut t = LocalityTable::new();
        let n = MAX_SIZE as u32 + 300;
        for i in 0..n {
            t.insert(addr(i), Instant::ZERO, ());
        }
        t.insert(addr(n), Instant::from_secs(400), ());
        t.housekeeping(Instant::from_secs(400));
        t.housekeeping(Instant::from_secs(460));
        // goal = 301 * 4 / 3 = 401: at least that many idle (>= 6 min) entries are gone,
        // the fresh one stays.
        assert!(t.len() <= n as usize + 1 - 401, "{}", t.len());
        assert!(t.get_mut(addr(n)).is_some());
    }
}
