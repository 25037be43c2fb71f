//! Creating entries: allocation from the worker's free list or by eviction, publishing
//! and indexing, settling the real server's counters, and attaching to a template.

use super::{
    addr_words, deadline, evict_class, is_v4_words, method_bits, ms, ConnId, ConnTable, Ctl,
    Direction, Hit, Meta, NewConn, Raw, SyncMark, TableFull, DOOMED, EVICT_WINDOW, F_DV6, F_SIDE,
    F_V6, GEN_MASK, METHOD_SHIFT, NO_SLOT,
};
use crate::conn::state::{next_state_secure, StateTable, TcpFlags, TcpState, TEMPLATE_RETRY_SECS};
use crate::service::{ConnCount, DestId, ForwardMethod, Protocol};
use crate::time::Instant;
use std::sync::atomic::{fence, Ordering};

impl ConnTable {
    /// Creates a connection on `worker`'s slots. Its state is what the first packet's flags
    /// make of NONE (INPUT table for NAT, INPUT-ONLY for DR/TUN); it counts as active or
    /// inactive at its real server accordingly. The caller looks the flow up first: the
    /// table does not refuse a duplicate key.
    ///
    /// # Panics
    /// If `worker` is out of range.
    pub fn insert(&self, worker: usize, now: Instant, new: NewConn) -> Result<Hit, TableFull> {
        let _guard = self.enter(worker);
        let now_ms = ms(now);
        let state = match (new.protocol, new.flags) {
            (Protocol::Tcp, flags) => next_state_secure(
                self.defence.secure_tcp(),
                input_table(new.method),
                TcpState::None,
                flags.unwrap_or(TcpFlags::NONE),
            ) as u8,
            (Protocol::Udp, _) => 0,
        };
        let meta = Meta(
            u64::from(new.cport)
                | u64::from(new.vport) << 16
                | u64::from(new.dport) << 32
                | u64::from(new.protocol.number()) << 48
                | (if new.client.is_ipv6() { F_V6 } else { 0 }
                    | if new.daddr.is_ipv6() { F_DV6 } else { 0 }
                    | method_bits(new.method) << METHOD_SHIFT)
                    << 56,
        );
        let fields = Fields {
            meta,
            caddr: addr_words(new.client),
            vaddr: addr_words(new.vaddr),
            daddr: addr_words(new.daddr),
            dest: new.dest.0,
            template: new.template,
            timeout_s: 0,
            sync: SyncMark::fresh(now_ms),
        };
        let expiry = deadline(now_ms, self.timeout_secs(meta, state));
        let id = self.create(worker, now_ms, &fields, state, expiry)?;
        Ok(Hit {
            id,
            dir: Direction::Original,
            info: fields.raw().info(state),
        })
    }

    /// Allocates, fills, publishes and indexes an entry; settles counters on insert.
    pub(super) fn create(
        &self,
        worker: usize,
        now_ms: u64,
        f: &Fields,
        state: u8,
        expiry: u64,
    ) -> Result<ConnId, TableFull> {
        let w = &self.pools[worker];
        let fail = || {
            w.insert_failures.store(
                w.insert_failures.load(Ordering::Relaxed) + 1,
                Ordering::Relaxed,
            );
            Err(TableFull)
        };
        let Some(slot) = self.alloc(worker, now_ms) else {
            return fail();
        };
        // Addresses that are not all IPv4 go to a side entry.
        let side = if is_v4_words(f.caddr) && is_v4_words(f.vaddr) && is_v4_words(f.daddr) {
            None
        } else if let Some(i) = self.alloc_side(worker) {
            Some(i)
        } else {
            self.link_free(worker, slot);
            return fail();
        };
        let meta = match side {
            Some(_) => Meta(f.meta.0 | F_SIDE << 56),
            None => f.meta,
        };
        let s = &self.slots[slot as usize];
        let gen = Ctl(s.ctl.load(Ordering::Relaxed)).gen().wrapping_add(1) & GEN_MASK;
        debug_assert!(gen & 1 == 1);
        let template = f.template.filter(|t| self.attach(*t));
        // Seqlock writer: a reader that sees any field written below (the side entry's
        // included) also sees the even generation stored when the slot was freed (see
        // `read`).
        fence(Ordering::Release);
        s.meta.store(meta.0, Ordering::Relaxed);
        match side {
            Some(i) => {
                let e = &self.side[i as usize];
                let words = [f.caddr, f.vaddr, f.daddr];
                for (a, v) in e.words.iter().zip(words.iter().flatten()) {
                    a.store(*v, Ordering::Relaxed);
                }
                s.caddr.store(i, Ordering::Relaxed);
                s.vaddr.store(0, Ordering::Relaxed);
                s.daddr.store(0, Ordering::Relaxed);
            }
            None => {
                s.caddr.store(f.caddr[1] as u32, Ordering::Relaxed);
                s.vaddr.store(f.vaddr[1] as u32, Ordering::Relaxed);
                s.daddr.store(f.daddr[1] as u32, Ordering::Relaxed);
            }
        }
        s.dest.store(f.dest, Ordering::Relaxed);
        s.template
            .store(template.map_or(0, ConnId::pack), Ordering::Relaxed);
        s.timeout_s.store(f.timeout_s, Ordering::Relaxed);
        s.sync.store(f.sync.pack(), Ordering::Relaxed);
        // Count before publishing, so whoever later wins the entry's control word takes
        // back a count that is already there.
        let counters = self.registry.get(DestId(f.dest));
        self.count(f.meta, state, counters, true);
        counters.update_overload();
        let ctl = Ctl::new(gen, state, expiry);
        s.ctl.store(ctl.0, Ordering::Release);
        w.live
            .store(w.live.load(Ordering::Relaxed) + 1, Ordering::Relaxed);

        let raw = f.raw();
        let original = self.hash(&raw.original_key());
        let payload = u64::from(slot) + 1;
        let mut ok = self.index.insert(original, payload);
        if ok {
            if let Some(rk) = raw.reply_key() {
                ok = self.index.insert(self.hash(&rk), 1 << 32 | payload);
                if !ok {
                    self.index.remove(original, payload);
                }
            }
        }
        if !ok {
            // The index has no room under these keys: undo as an expiry would.
            if self.kill(slot, ctl) {
                self.settle(slot, &raw, state);
            }
            self.free_side(worker, slot);
            self.push_free(worker, slot);
            return fail();
        }
        Ok(ConnId { slot, gen })
    }

    /// Adds or removes one count for an entry in `state`.
    #[inline]
    pub(super) fn count(&self, meta: Meta, state: u8, c: &crate::service::DestCounters, add: bool) {
        let which = if meta.template() {
            ConnCount::Persistent
        } else if meta.is_tcp() && TcpState::index_is_active(state) {
            ConnCount::Active
        } else {
            ConnCount::Inactive
        };
        if add {
            c.add(which);
        } else {
            c.remove(which);
        }
    }

    /// Takes a free slot, or evicts one.
    pub(super) fn alloc(&self, worker: usize, now_ms: u64) -> Option<u32> {
        let w = &self.pools[worker];
        let head = w.free_head.load(Ordering::Relaxed);
        if head != NO_SLOT {
            let next = self.slots[head as usize].next_free.load(Ordering::Relaxed);
            w.free_head.store(next, Ordering::Relaxed);
            return Some(head);
        }
        self.evict(worker, now_ms)
    }

    /// Gives back the slot of an entry that was live.
    pub(super) fn push_free(&self, worker: usize, slot: u32) {
        let w = &self.pools[worker];
        self.link_free(worker, slot);
        w.live
            .store(w.live.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }

    /// Puts a slot on the free list (`alloc` took it, or it was freed).
    fn link_free(&self, worker: usize, slot: u32) {
        let w = &self.pools[worker];
        self.slots[slot as usize]
            .next_free
            .store(w.free_head.load(Ordering::Relaxed), Ordering::Relaxed);
        w.free_head.store(slot, Ordering::Relaxed);
    }

    /// Takes a side entry: a freed one, else one of the worker's share never used.
    fn alloc_side(&self, worker: usize) -> Option<u32> {
        let w = &self.pools[worker];
        let head = w.side_free.load(Ordering::Relaxed);
        if head != NO_SLOT {
            let next = self.side[head as usize].words[0].load(Ordering::Relaxed);
            w.side_free.store(next as u32, Ordering::Relaxed);
            return Some(head);
        }
        let next = w.side_next.load(Ordering::Relaxed);
        if next < self.side_range(worker).1 {
            w.side_next.store(next + 1, Ordering::Relaxed);
            return Some(next);
        }
        None
    }

    /// Owner only, once the entry in `slot` is dead (its generation even): gives back its
    /// side entry, if it has one.
    pub(super) fn free_side(&self, worker: usize, slot: u32) {
        let s = &self.slots[slot as usize];
        if Meta(s.meta.load(Ordering::Relaxed)).flags() & F_SIDE == 0 {
            return;
        }
        let i = s.caddr.load(Ordering::Relaxed);
        let w = &self.pools[worker];
        // Seqlock: a reader of the dead entry that sees the link written below also sees
        // the even generation (stored before this fence), so it discards what it read.
        fence(Ordering::Release);
        self.side[i as usize].words[0].store(
            u64::from(w.side_free.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        w.side_free.store(i, Ordering::Relaxed);
    }

    /// Owner-side copy of a slot's fields (the owner is their only writer).
    pub(super) fn own_raw(&self, slot: u32) -> Raw {
        Raw::load(&self.slots[slot as usize], &self.side)
    }

    /// Owner only: turns live `expected` into free. True if this call did it.
    pub(super) fn kill(&self, slot: u32, expected: Ctl) -> bool {
        let dead = Ctl::new(expected.gen().wrapping_add(1), 0, 0);
        self.slots[slot as usize]
            .ctl
            .compare_exchange(expected.0, dead.0, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Gives back what a live entry in `state` holds: its count at the real server, its
    /// control count on a template.
    pub(super) fn settle(&self, slot: u32, raw: &Raw, state: u8) {
        let counters = self.registry.get(DestId(raw.dest));
        self.count(raw.meta, state, counters, false);
        counters.update_overload();
        if !raw.meta.template() {
            let t = self.slots[slot as usize].template.load(Ordering::Relaxed);
            if let Some(t) = ConnId::unpack(t) {
                self.slots[t.slot as usize]
                    .n_control
                    .fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Removes a slot's keys from the index.
    pub(super) fn unlink(&self, slot: u32, raw: &Raw) {
        let payload = u64::from(slot) + 1;
        self.index.remove(self.hash(&raw.original_key()), payload);
        if let Some(rk) = raw.reply_key() {
            self.index.remove(self.hash(&rk), 1 << 32 | payload);
        }
    }

    /// Owner only: ends the entry in `slot` if `ctl` is still its control word. On success
    /// the slot is out of the index with its counters settled and its side entry given
    /// back, but not on the free list.
    pub(super) fn reclaim(&self, worker: usize, slot: u32, ctl: Ctl, now_ms: u64) -> bool {
        let raw = self.own_raw(slot);
        if !self.kill(slot, ctl) {
            return false;
        }
        if ctl.state() != DOOMED {
            if raw.meta.template() && self.slots[slot as usize].n_control.load(Ordering::SeqCst) > 0
            {
                // A connection attached between our check and the kill: revive the
                // template as its timer would have been pushed back. Only the owner writes
                // a dead control word, so a plain store is enough.
                let back = Ctl::new(
                    ctl.gen(),
                    ctl.state(),
                    deadline(now_ms, TEMPLATE_RETRY_SECS),
                );
                self.slots[slot as usize]
                    .ctl
                    .store(back.0, Ordering::SeqCst);
                return false;
            }
            self.settle(slot, &raw, ctl.state());
        }
        self.unlink(slot, &raw);
        self.free_side(worker, slot);
        true
    }

    /// Looks at the eviction window from the clock hand for the entry that may best go.
    pub(super) fn evict(&self, worker: usize, now_ms: u64) -> Option<u32> {
        let (start, end) = self.range(worker);
        let len = (end - start) as usize;
        let w = &self.pools[worker];
        for _attempt in 0..2 {
            let hand = w.hand.load(Ordering::Relaxed);
            let mut best: Option<(u8, u32, Ctl)> = None;
            let mut i = hand;
            for _ in 0..EVICT_WINDOW.min(len) {
                let s = &self.slots[i as usize];
                let ctl = Ctl(s.ctl.load(Ordering::Acquire));
                if ctl.live() {
                    let meta = Meta(s.meta.load(Ordering::Relaxed));
                    let n = s.n_control.load(Ordering::Relaxed);
                    if let Some(class) = evict_class(ctl, meta, n, now_ms) {
                        if best.is_none_or(|(b, _, _)| class < b) {
                            best = Some((class, i, ctl));
                            if class == 0 {
                                break;
                            }
                        }
                    }
                }
                i = if i + 1 == end { start } else { i + 1 };
            }
            let (_, slot, ctl) = best?;
            if self.reclaim(worker, slot, ctl, now_ms) {
                w.hand.store(
                    if slot + 1 == end { start } else { slot + 1 },
                    Ordering::Relaxed,
                );
                w.evictions
                    .store(w.evictions.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                w.live
                    .store(w.live.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
                return Some(slot);
            }
        }
        None
    }

    /// Registers a connection with its template: +1 control count, then checks the template
    /// is still the one named. Pairs with the owner's kill-then-check in `reclaim`.
    pub(super) fn attach(&self, t: ConnId) -> bool {
        let Some(s) = self.slots.get(t.slot as usize) else {
            return false;
        };
        s.n_control.fetch_add(1, Ordering::SeqCst);
        let c = Ctl(s.ctl.load(Ordering::SeqCst));
        if c.gen() == t.gen && c.state() != DOOMED {
            true
        } else {
            s.n_control.fetch_sub(1, Ordering::SeqCst);
            false
        }
    }
}

/// The fields of an entry being created.
pub(super) struct Fields {
    pub(super) meta: Meta,
    pub(super) caddr: [u64; 2],
    pub(super) vaddr: [u64; 2],
    pub(super) daddr: [u64; 2],
    pub(super) dest: u32,
    pub(super) template: Option<ConnId>,
    pub(super) timeout_s: u32,
    pub(super) sync: SyncMark,
}

impl Fields {
    pub(super) fn raw(&self) -> Raw {
        Raw {
            meta: self.meta,
            caddr: self.caddr,
            vaddr: self.vaddr,
            daddr: self.daddr,
            dest: self.dest,
        }
    }
}

/// The table client-to-server packets use: INPUT when the director sees replies (NAT),
/// INPUT-ONLY otherwise (`IP_VS_CONN_F_NOOUTPUT`).
#[inline]
pub(super) fn input_table(method: ForwardMethod) -> StateTable {
    match method {
        ForwardMethod::Masquerade => StateTable::Input,
        ForwardMethod::DirectRouting | ForwardMethod::Tunnel => StateTable::InputOnly,
    }
}
