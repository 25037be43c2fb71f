//! Internals: the entry (a slot), a consistent copy of its fields, the per-worker
//! allocation state and the eviction preference.

use super::{
    is_expired, words_addr, ConnInfo, Ctl, Key, Meta, DOOMED, F_DV6, F_SIDE, F_V6, K_TEMPLATE, K_V6,
};
use crate::conn::state::TcpState;
use crate::service::{DestId, ForwardMethod, Protocol};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// One entry: one cache line, everything a lookup reads in it. IPv4 addresses take 4 bytes
/// each; an entry with an IPv6 address (or a NAT entry mixing families) has all three
/// addresses in a [`Side`] entry instead, whose index the client word holds (meta flag
/// `F_SIDE`).
#[repr(C, align(64))]
#[derive(Default)]
pub(super) struct Slot {
    pub(super) ctl: AtomicU64,
    pub(super) meta: AtomicU64,
    /// Connections: packed [`ConnId`] of the controlling template, 0 = none.
    pub(super) template: AtomicU64,
    /// Connection-sync bookkeeping ([`SyncMark`], packed): written only while a sync
    /// master runs, read only by the sync code.
    pub(super) sync: AtomicU64,
    /// The client's IPv4 address, or (`F_SIDE`) the index of the entry's [`Side`] entry.
    pub(super) caddr: AtomicU32,
    /// The virtual IPv4 address (unused with `F_SIDE`).
    pub(super) vaddr: AtomicU32,
    /// The real server's IPv4 address (unused with `F_SIDE`).
    pub(super) daddr: AtomicU32,
    pub(super) dest: AtomicU32,
    /// Next free slot of the owner's free list while free.
    pub(super) next_free: AtomicU32,
    /// Templates: connections this template controls. Only ever changed by +1/-1 pairs, so
    /// never reset.
    pub(super) n_control: AtomicU32,
    /// Templates: the timeout a use refreshes the timer with, seconds.
    pub(super) timeout_s: AtomicU32,
}

// SAFETY: only atomic integers; all-zero is the free entry `Default` gives.
unsafe impl crate::conn::mem::Zeroable for Slot {}

/// The addresses of an entry that does not fit IPv4's 4 bytes each: client, virtual and
/// real-server address as two words each (`addr_words`). While free, word 0 links the
/// owner's free list of side entries.
#[repr(C)]
#[derive(Default)]
pub(super) struct Side {
    pub(super) words: [AtomicU64; 6],
}

// SAFETY: only atomic integers.
unsafe impl crate::conn::mem::Zeroable for Side {}

/// An IPv4 address as `addr_words` has it (IPv4-mapped IPv6).
#[inline(always)]
pub(super) fn v4_words(a: u32) -> [u64; 2] {
    [0, 0xffff_u64 << 32 | u64::from(a)]
}

/// Whether `w` is an IPv4(-mapped) address, so that its low 4 bytes say all of it.
#[inline(always)]
pub(super) fn is_v4_words(w: [u64; 2]) -> bool {
    w[0] == 0 && w[1] >> 32 == 0xffff
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
    /// The entry's immutable fields as they are in `s` now (its addresses from `side` when
    /// it keeps them there), loaded relaxed: a seqlock reader brackets this with its
    /// generation checks, the owner (their only writer) needs none. A side index that is
    /// out of range (only a torn read sees one) reads as zeros.
    #[inline(always)]
    pub(super) fn load(s: &Slot, side: &[Side]) -> Raw {
        let meta = Meta(s.meta.load(Ordering::Relaxed));
        let dest = s.dest.load(Ordering::Relaxed);
        let c = s.caddr.load(Ordering::Relaxed);
        if meta.flags() & F_SIDE == 0 {
            return Raw {
                meta,
                caddr: v4_words(c),
                vaddr: v4_words(s.vaddr.load(Ordering::Relaxed)),
                daddr: v4_words(s.daddr.load(Ordering::Relaxed)),
                dest,
            };
        }
        let mut w = [0u64; 6];
        if let Some(e) = side.get(c as usize) {
            for (v, a) in w.iter_mut().zip(&e.words) {
                *v = a.load(Ordering::Relaxed);
            }
        }
        Raw {
            meta,
            caddr: [w[0], w[1]],
            vaddr: [w[2], w[3]],
            daddr: [w[4], w[5]],
            dest,
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
    /// Head of the free list of side entries this worker freed.
    pub(super) side_free: AtomicU32,
    /// The next side entry of this worker's share never used yet (side entries are taken
    /// from the free list first, then from here, so an IPv4-only director never touches
    /// the side slab and it stays out of resident memory).
    pub(super) side_next: AtomicU32,
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
