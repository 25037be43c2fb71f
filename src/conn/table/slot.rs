//! Internals: the entry (a slot), a consistent copy of its fields, the per-worker
//! allocation state and the eviction preference.

use super::{
    is_expired, words_addr, ConnInfo, Ctl, Key, Meta, DOOMED, F_DV6, F_V6, K_TEMPLATE, K_V6,
};
use crate::conn::state::TcpState;
use crate::service::{DestId, ForwardMethod, Protocol};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// One entry. The first cache line holds what a lookup compares; the second what it copies
/// out and what only the owner and templates use.
#[repr(C, align(64))]
#[derive(Default)]
pub(super) struct Slot {
    pub(super) ctl: AtomicU64,
    pub(super) meta: AtomicU64,
    pub(super) caddr: [AtomicU64; 2],
    pub(super) vaddr: [AtomicU64; 2],
    pub(super) daddr: [AtomicU64; 2],
    pub(super) dest: AtomicU32,
    /// Next free slot of the owner's free list while free.
    pub(super) next_free: AtomicU32,
    /// Templates: connections this template controls. Only ever changed by +1/-1 pairs, so
    /// never reset.
    pub(super) n_control: AtomicU32,
    /// Templates: the timeout a use refreshes the timer with, seconds.
    pub(super) timeout_s: AtomicU32,
    /// Connections: packed [`ConnId`] of the controlling template, 0 = none.
    pub(super) template: AtomicU64,
    /// Connection-sync bookkeeping ([`SyncMark`], packed): written only while a sync
    /// master runs, read only by the sync code.
    pub(super) sync: AtomicU64,
}

/// A consistent copy of an entry's immutable fields.
#[derive(Copy, Clone)]
pub(super) struct Raw {
    pub(super) meta: Meta,
    pub(super) caddr: [u64; 2],
    pub(super) vaddr: [u64; 2],
    pub(super) daddr: [u64; 2],
    pub(super) dest: u32,
}

impl Raw {
    /// The entry's immutable fields as they are in `s` now, loaded relaxed: a seqlock reader
    /// brackets this with its generation checks, the owner (their only writer) needs none.
    #[inline(always)]
    pub(super) fn load(s: &Slot) -> Raw {
        Raw {
            meta: Meta(s.meta.load(Ordering::Relaxed)),
            caddr: [
                s.caddr[0].load(Ordering::Relaxed),
                s.caddr[1].load(Ordering::Relaxed),
            ],
            vaddr: [
                s.vaddr[0].load(Ordering::Relaxed),
                s.vaddr[1].load(Ordering::Relaxed),
            ],
            daddr: [
                s.daddr[0].load(Ordering::Relaxed),
                s.daddr[1].load(Ordering::Relaxed),
            ],
            dest: s.dest.load(Ordering::Relaxed),
        }
    }

    #[inline]
    pub(super) fn kind(&self) -> u64 {
        let mut k = 0;
        if self.meta.flags() & F_V6 != 0 {
            k |= K_V6;
        }
        if self.meta.template() {
            k |= K_TEMPLATE;
        }
        k
    }

    #[inline]
    pub(super) fn original_key(&self) -> Key {
        let m = self.meta;
        Key::new(
            m.proto(),
            self.caddr,
            m.cport(),
            self.vaddr,
            m.vport(),
            self.kind(),
        )
    }

    /// The reply key, for NAT connections whose real server has the client's family.
    #[inline]
    pub(super) fn reply_key(&self) -> Option<Key> {
        let m = self.meta;
        let same_family = (m.flags() & F_V6 != 0) == (m.flags() & F_DV6 != 0);
        (!m.template() && m.method() == ForwardMethod::Masquerade && same_family).then(|| {
            Key::new(
                m.proto(),
                self.daddr,
                m.dport(),
                self.caddr,
                m.cport(),
                self.kind(),
            )
        })
    }

    /// Whether the entry is stored under `k` in direction `reply`: the comparison
    /// `original_key() == k` / `reply_key() == Some(k)` make, without building the keys.
    #[inline]
    pub(super) fn matches(&self, k: &Key, reply: bool) -> bool {
        let m = self.meta;
        if reply {
            let same_family = (m.flags() & F_V6 != 0) == (m.flags() & F_DV6 != 0);
            !m.template()
                && m.method() == ForwardMethod::Masquerade
                && same_family
                && self.daddr == k.src
                && self.caddr == k.dst
                && Key::new(m.proto(), k.src, m.dport(), k.dst, m.cport(), self.kind()).meta
                    == k.meta
        } else {
            self.caddr == k.src
                && self.vaddr == k.dst
                && Key::new(m.proto(), k.src, m.cport(), k.dst, m.vport(), self.kind()).meta
                    == k.meta
        }
    }

    pub(super) fn client(&self) -> IpAddr {
        words_addr(self.caddr, self.meta.flags() & F_V6 != 0)
    }
    pub(super) fn vaddr(&self) -> IpAddr {
        words_addr(self.vaddr, self.meta.flags() & F_V6 != 0)
    }
    pub(super) fn daddr(&self) -> IpAddr {
        words_addr(self.daddr, self.meta.flags() & F_DV6 != 0)
    }

    #[inline]
    pub(super) fn info(&self, state: u8) -> ConnInfo {
        let m = self.meta;
        ConnInfo {
            protocol: if m.is_tcp() {
                Protocol::Tcp
            } else {
                Protocol::Udp
            },
            client: self.client(),
            cport: m.cport(),
            vaddr: self.vaddr(),
            vport: m.vport(),
            daddr: self.daddr(),
            dport: m.dport(),
            method: m.method(),
            dest: DestId(self.dest),
            state: TcpState::from_index(state).unwrap_or(TcpState::None),
        }
    }
}

/// One worker's pool of slots: its free list, eviction clock hand, live count and table
/// counters. Only the owning worker writes it; one cache line each, so workers do not share.
#[repr(C, align(64))]
#[derive(Default)]
pub(super) struct SlotPool {
    pub(super) free_head: AtomicU32,
    pub(super) hand: AtomicU32,
    pub(super) live: AtomicUsize,
    pub(super) evictions: AtomicU64,
    pub(super) insert_failures: AtomicU64,
    #[cfg(debug_assertions)]
    pub(super) busy: std::sync::atomic::AtomicBool,
}

pub(super) const NO_SLOT: u32 = u32::MAX;

/// Slots the eviction scan looks at from the clock hand.
pub const EVICT_WINDOW: usize = 64;

/// Eviction preference (lower goes first); `None` = never evicted.
pub(super) fn evict_class(ctl: Ctl, meta: Meta, n_control: u32, now_ms: u64) -> Option<u8> {
    if meta.template() {
        return (n_control == 0).then_some(if is_expired(ctl.expiry(), now_ms) {
            0
        } else {
            4
        });
    }
    if ctl.state() == DOOMED || is_expired(ctl.expiry(), now_ms) {
        return Some(0);
    }
    if !meta.is_tcp() {
        return Some(3);
    }
    match TcpState::from_index(ctl.state())? {
        TcpState::Established => None,
        TcpState::None
        | TcpState::Close
        | TcpState::TimeWait
        | TcpState::CloseWait
        | TcpState::LastAck
        | TcpState::FinWait => Some(1),
        TcpState::SynRecv | TcpState::SynSent | TcpState::SynAck | TcpState::Listen => Some(2),
    }
}
