//! Lookups: the seqlock read of a slot, the flow lookup in both directions, the prefetch
//! hints, and the timeout an entry's state has.

use super::{
    addr_words, is_expired, ms, ConnId, ConnTable, Ctl, Direction, FlowHash, FlowKey, Hit, Key,
    Meta, Raw, DOOMED, K_V6,
};
use crate::conn::state::TcpState;
use crate::time::Instant;
use std::sync::atomic::{fence, Ordering};

impl ConnTable {
    /// Reads slot `i` as a seqlock reader: `None` if free or rewritten meanwhile.
    #[inline]
    pub(super) fn read(&self, i: u32) -> Option<(Ctl, Raw)> {
        let s = self.slots.get(i as usize)?;
        let c1 = Ctl(s.ctl.load(Ordering::Acquire));
        if !c1.live() {
            return None;
        }
        let raw = Raw::load(s, &self.side);
        fence(Ordering::Acquire);
        let c2 = Ctl(s.ctl.load(Ordering::Relaxed));
        (c2.gen() == c1.gen()).then_some((c2, raw))
    }

    /// The connection a packet belongs to, in either direction.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Hit> {
        self.find(key).map(|(hit, _)| hit)
    }

    /// The connection a packet belongs to, unless its timer has already run out: an entry
    /// the owner's expiry sweep has not reached yet is expired here instead, so a timeout
    /// takes effect at the packet that finds it, exactly on time, whatever the sweep's pace.
    #[inline]
    pub fn lookup_live(&self, key: &FlowKey, now: Instant) -> Option<Hit> {
        let (hit, expiry) = self.find(key)?;
        if is_expired(expiry, ms(now)) {
            self.expire_now(hit.id);
            return None;
        }
        Some(hit)
    }

    /// Starts loading the index bucket `key` hashes to, for a lookup a little later (the
    /// pipeline does this for a whole batch before handling its first frame, so the
    /// batch's cache misses overlap). Returns what [`ConnTable::prefetch_entry`] needs.
    #[inline]
    pub fn prefetch_index(&self, key: &FlowKey) -> Option<FlowHash> {
        let hash = self.hash(&Self::key_of(key)?);
        self.index.prefetch(hash);
        Some(FlowHash(hash))
    }

    /// Starts loading the entries the (by now loaded) index bucket of `hash` points at.
    #[inline]
    pub fn prefetch_entry(&self, hash: FlowHash) {
        self.index.home_candidates(hash.0, |payload| {
            let slot = (payload as u32).wrapping_sub(1) as usize;
            if let Some(s) = self.slots.get(slot) {
                // One cache line: the whole entry (an IPv6 entry's addresses are in its
                // side entry, which only the entry says where to find).
                crate::conn::index::prefetch(s);
            }
        });
    }

    /// The index key of a packet's flow; `None` for mixed families (never in the table).
    #[inline]
    pub(super) fn key_of(key: &FlowKey) -> Option<Key> {
        if key.src.is_ipv6() != key.dst.is_ipv6() {
            return None;
        }
        Some(Key::new(
            key.protocol.number(),
            addr_words(key.src),
            key.sport,
            addr_words(key.dst),
            key.dport,
            if key.src.is_ipv6() { K_V6 } else { 0 },
        ))
    }

    /// The entry matching `key` and its expiry (36-bit milliseconds).
    ///
    /// Candidates are compared word by word against the key as they are read; the
    /// connection's [`ConnInfo`] is built once, for the match, outside the index probe.
    #[inline]
    pub(super) fn find(&self, key: &FlowKey) -> Option<(Hit, u64)> {
        let k = Self::key_of(key)?;
        let mut found = None;
        self.index.find(self.hash(&k), |payload| {
            let slot = (payload as u32).wrapping_sub(1);
            let reply = payload >> 32 != 0;
            match self.read(slot) {
                Some((ctl, raw)) if ctl.state() != DOOMED && raw.matches(&k, reply) => {
                    found = Some((slot, reply, ctl, raw));
                    true
                }
                _ => false,
            }
        })?;
        let (slot, reply, ctl, raw) = found?;
        let hit = Hit {
            id: ConnId {
                slot,
                gen: ctl.gen(),
            },
            dir: if reply {
                Direction::Reply
            } else {
                Direction::Original
            },
            info: raw.info(ctl.state()),
        };
        Some((hit, ctl.expiry()))
    }

    #[inline]
    pub(super) fn timeout_secs(&self, meta: Meta, state: u8) -> u32 {
        if meta.is_tcp() {
            self.timeouts
                .tcp(TcpState::from_index(state).unwrap_or(TcpState::Close))
        } else {
            self.timeouts.udp()
        }
    }
}
