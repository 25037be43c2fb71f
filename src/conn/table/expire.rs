//! An entry's life after its creation: packets advance its state and restart its timer,
//! expiry and `expire_now` end it, and `for_each` walks what lives.

use super::{
    deadline, input_table, is_expired, ms, ConnEntry, ConnId, ConnTable, Ctl, Direction, Meta,
    DOOMED, EXP_MASK,
};
use crate::conn::state::{next_state_secure, StateTable, TcpFlags, TcpState, TEMPLATE_RETRY_SECS};
use crate::service::DestId;
use crate::time::Instant;
use std::sync::atomic::Ordering;

impl ConnTable {
    /// Advances a connection's state with one packet and restarts its timer with the new
    /// state's timeout, moving one count between active and inactive when the state enters
    /// or leaves the active states ([`TcpState::is_active`]). `flags` is `None` for UDP. A
    /// stale `id` is ignored.
    #[inline]
    pub fn on_packet(&self, id: ConnId, dir: Direction, flags: Option<TcpFlags>, now: Instant) {
        let Some(s) = self.slots.get(id.slot as usize) else {
            return;
        };
        let now_ms = ms(now);
        loop {
            let c = Ctl(s.ctl.load(Ordering::Acquire));
            if c.gen() != id.gen || c.state() == DOOMED {
                return;
            }
            let meta = Meta(s.meta.load(Ordering::Relaxed));
            let dest = s.dest.load(Ordering::Relaxed);
            if meta.template() {
                return;
            }
            let state = if meta.is_tcp() {
                let table = match dir {
                    Direction::Reply => StateTable::Output,
                    Direction::Original => input_table(meta.method()),
                };
                let old = TcpState::from_index(c.state()).unwrap_or(TcpState::Close);
                let secure = self.defence.secure_tcp();
                next_state_secure(secure, table, old, flags.unwrap_or(TcpFlags::NONE)) as u8
            } else {
                c.state()
            };
            let n = Ctl::new(
                c.gen(),
                state,
                deadline(now_ms, self.timeout_secs(meta, state)),
            );
            if n == c {
                return;
            }
            // The generation in the word makes this fail if the slot was reused since the
            // loads above, so `meta` and `dest` belong to the entry we change.
            if s.ctl
                .compare_exchange(c.0, n.0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let was = meta.is_tcp() && TcpState::index_is_active(c.state());
                let is = meta.is_tcp() && TcpState::index_is_active(state);
                if was != is {
                    self.registry.get(DestId(dest)).shift(is);
                }
                return;
            }
        }
    }

    /// Ends a connection now, from any worker (`expire_nodest_conn` when its real server
    /// was removed): it stops matching lookups at once and its counters are given back;
    /// its owner reclaims the slot at its next [`ConnTable::expire`]. For a template, only
    /// unhashes it (it may still control connections). False if `id` was already gone.
    pub fn expire_now(&self, id: ConnId) -> bool {
        let Some(s) = self.slots.get(id.slot as usize) else {
            return false;
        };
        loop {
            let c = Ctl(s.ctl.load(Ordering::Acquire));
            if c.gen() != id.gen || c.state() == DOOMED {
                return false;
            }
            let Some((c2, raw)) = self.read(id.slot) else {
                return false;
            };
            if c2.gen() != id.gen {
                return false;
            }
            if raw.meta.template() {
                self.unlink(id.slot, &raw);
                return true;
            }
            let template = s.template.load(Ordering::Relaxed);
            let doomed = Ctl::new(c.gen(), DOOMED, c.expiry());
            if s.ctl
                .compare_exchange(c.0, doomed.0, Ordering::SeqCst, Ordering::Acquire)
                .is_ok()
            {
                let counters = self.registry.get(DestId(raw.dest));
                self.count(raw.meta, c.state(), counters, false);
                counters.update_overload();
                if let Some(t) = ConnId::unpack(template) {
                    self.slots[t.slot as usize]
                        .n_control
                        .fetch_sub(1, Ordering::SeqCst);
                }
                return true;
            }
        }
    }

    /// Expires entries of `worker` whose timer ran out, looking at up to `budget` slots from
    /// its clock hand; returns how many it freed. Call between batches. A template that
    /// still controls connections is not freed: its timer is pushed back 60 s.
    ///
    /// # Panics
    /// If `worker` is out of range.
    pub fn expire(&self, worker: usize, now: Instant, budget: usize) -> usize {
        let _guard = self.enter(worker);
        let (start, end) = self.range(worker);
        if start == end {
            return 0;
        }
        let now_ms = ms(now);
        let w = &self.pools[worker];
        let first = w.hand.load(Ordering::Relaxed);
        let step = |h: u32| if h + 1 == end { start } else { h + 1 };
        let mut freed = 0;
        let mut hand = first;
        // Connections first, then templates: when the sweep comes late, a connection whose
        // timer ran out before its template's must release the template first, as the
        // kernel's timers would have, or the template would be pushed back 60 s.
        for templates in [false, true] {
            hand = first;
            for _ in 0..budget.min((end - start) as usize) {
                let slot = hand;
                hand = step(hand);
                if self.is_template_slot(slot) == templates
                    && self.expire_slot(worker, slot, now_ms)
                {
                    self.push_free(worker, slot);
                    freed += 1;
                }
            }
        }
        w.hand.store(hand, Ordering::Relaxed);
        freed
    }

    #[inline]
    pub(super) fn is_template_slot(&self, slot: u32) -> bool {
        Meta(self.slots[slot as usize].meta.load(Ordering::Relaxed)).template()
    }

    pub(super) fn expire_slot(&self, worker: usize, slot: u32, now_ms: u64) -> bool {
        let s = &self.slots[slot as usize];
        loop {
            let c = Ctl(s.ctl.load(Ordering::Acquire));
            if !c.live() {
                return false;
            }
            if c.state() != DOOMED && !is_expired(c.expiry(), now_ms) {
                return false;
            }
            let meta = Meta(s.meta.load(Ordering::Relaxed));
            if c.state() != DOOMED && meta.template() && s.n_control.load(Ordering::SeqCst) > 0 {
                // expire_later: the kernel also makes 60 s the template's timeout from now on.
                let later = Ctl::new(c.gen(), c.state(), deadline(now_ms, TEMPLATE_RETRY_SECS));
                if s.ctl
                    .compare_exchange(c.0, later.0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    s.timeout_s.store(TEMPLATE_RETRY_SECS, Ordering::Relaxed);
                    return false;
                }
                continue;
            }
            if self.reclaim(worker, slot, c, now_ms) {
                return true;
            }
            // Lost a race with a packet (state or timer changed) or revived a template:
            // look again.
            let again = Ctl(s.ctl.load(Ordering::Acquire));
            if again.live() && again.gen() == c.gen() && again != c {
                continue;
            }
            return false;
        }
    }

    /// Calls `f` with every live entry (connections and templates), for `ipvsadm -L -c`.
    /// Not a snapshot: entries changing meanwhile may be seen before or after the change.
    pub fn for_each(&self, now: Instant, mut f: impl FnMut(&ConnEntry)) {
        let now_ms = ms(now);
        for i in 0..self.slots.len() as u32 {
            let Some((ctl, raw)) = self.read(i) else {
                continue;
            };
            if ctl.state() == DOOMED {
                continue;
            }
            let m = raw.meta;
            let state = if m.is_tcp() || m.proto() == 0 {
                TcpState::from_index(ctl.state())
                    .unwrap_or(TcpState::None)
                    .name()
            } else {
                "UDP"
            };
            let expires_in_ms = if is_expired(ctl.expiry(), now_ms) {
                0
            } else {
                ctl.expiry().wrapping_sub(now_ms) & EXP_MASK
            };
            f(&ConnEntry {
                protocol: m.proto(),
                template: m.template(),
                client: raw.client(),
                cport: m.cport(),
                vaddr: raw.vaddr(),
                vport: m.vport(),
                daddr: raw.daddr(),
                dport: m.dport(),
                method: m.method(),
                dest: DestId(raw.dest),
                state,
                expires_in_ms,
                controlled: self.slots[i as usize].n_control.load(Ordering::Relaxed),
            });
        }
    }
}
