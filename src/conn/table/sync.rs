//! What connection sync needs of the table: each entry's sync bookkeeping, a whole entry
//! read back by handle, and installing what a sync master sent (`ip_vs_proc_conn`).
//!
//! The decisions (when to send, what a message means) belong to `crate::ha::sync`; this
//! file only reads and writes entries, with the table's own concurrency rules.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::control::STATE_SHIFT;
use super::{addr_words, method_bits};
use super::{
    deadline, ms, ConnId, ConnTable, Ctl, Direction, Fields, FlowKey, Meta, TemplateKey, DOOMED,
    F_DV6, F_V6, METHOD_SHIFT,
};
use crate::conn::state::{TcpState, MAX_TIMEOUT_SECS};
use crate::service::{DestId, ForwardMethod, Protocol};
use crate::time::Instant;

/// An entry's sync bookkeeping, the fields the kernel keeps in `struct ip_vs_conn` for
/// `ip_vs_sync_conn_needed`: packets from the client (`in_pkts`), the state last sent
/// (`old_state`) and the sync end time with its retry count (`sync_endtime`).
///
/// `in_pkts` is also what the `drop_entry` defence judges an entry by: while no master
/// runs, the workers keep counting it when `drop_entry` is set
/// ([`ConnTable::count_in_packet`]).
///
/// It costs 8 bytes an entry, in its own word: workers update it with plain stores, and a
/// store through a stale handle (the entry expired and its slot was reused meanwhile) can
/// only disturb the new entry's sync timing, never anything the table relies on.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncMark {
    /// Packets from the client, modulo 2^24.
    pub in_pkts: u32,
    /// The state when the entry was last sent (`IP_VS_TCP_S_*`).
    pub old_state: u8,
    /// Milliseconds (modulo 2^32) at which the entry would expire when last sent, with the
    /// retry count in its two low bits, as the kernel keeps `sync_endtime` in jiffies.
    pub endtime: u32,
}

/// The word's layout: `in_pkts` in the top 24 bits, so that counting a packet is one add
/// of [`PKT_ONE`] to the word as loaded (the count wraps at 2^24 and touches nothing
/// else); `old_state` in bits 36-39, where the control word keeps the entry's state
/// ([`STATE_SHIFT`]), so that one exclusive-or of the two words tells whether the state
/// is still the one last sent; [`PLAIN`] in bit 32; `sync_endtime` in the low 32 bits.
const PKTS_SHIFT: u32 = 40;
const PKT_ONE: u64 = 1 << PKTS_SHIFT;
const OLD_STATE_SHIFT: u32 = STATE_SHIFT;
const OLD_STATE_MASK: u64 = 0xf << OLD_STATE_SHIFT;
/// Set by the full decision on an entry that is neither a template nor controlled by one
/// (which never changes while the entry lives): with its state still the one last sent
/// (or ESTABLISHED), such an entry's packet can only be due by its count
/// ([`ConnTable::sync_count`]). A new entry and an installed one start without it, so
/// their first packet takes the full decision, which sets it.
const PLAIN: u64 = 1 << 32;
const _: () = assert!(OLD_STATE_SHIFT + 4 <= PKTS_SHIFT && OLD_STATE_SHIFT >= 33);

impl SyncMark {
    /// The bookkeeping of a new entry: nothing counted, end time now (as `ip_vs_conn_new`).
    #[inline]
    pub fn fresh(now_ms: u64) -> SyncMark {
        SyncMark {
            in_pkts: 0,
            old_state: 0,
            endtime: (now_ms as u32) & !3,
        }
    }

    /// The word, without [`PLAIN`].
    #[inline]
    pub(super) fn pack(self) -> u64 {
        u64::from(self.in_pkts) << PKTS_SHIFT
            | u64::from(self.old_state & 0xf) << OLD_STATE_SHIFT
            | u64::from(self.endtime)
    }

    #[inline]
    fn unpack(w: u64) -> SyncMark {
        SyncMark {
            in_pkts: (w >> PKTS_SHIFT) as u32,
            old_state: (w >> OLD_STATE_SHIFT) as u8 & 0xf,
            endtime: w as u32,
        }
    }
}

/// What deciding whether to send an entry reads of it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SyncProbe {
    /// A persistence template.
    pub template: bool,
    /// A TCP connection (templates: false).
    pub tcp: bool,
    /// Its state (`IP_VS_TCP_S_*`; 0 for UDP and templates).
    pub state: u8,
    /// Its current timeout, seconds (`cp->timeout`).
    pub timeout_s: u32,
    /// Its sync bookkeeping.
    pub mark: SyncMark,
    /// The template that controls it, if any.
    pub controller: Option<ConnId>,
}

/// An entry read back whole by its handle, as a sync message describes it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Described {
    /// IP protocol number (0 for a firewall-mark template).
    pub protocol: u8,
    /// A persistence template.
    pub template: bool,
    /// Client address (masked, for a template).
    pub client: IpAddr,
    /// Client port (0 for a template).
    pub cport: u16,
    /// Virtual address (a firewall-mark template: the mark in its first 32 bits).
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// Forwarding method.
    pub method: ForwardMethod,
    /// The real server's counters.
    pub dest: DestId,
    /// State (`IP_VS_TCP_S_*`; 0 for UDP and templates).
    pub state: u8,
    /// Current timeout, seconds.
    pub timeout_s: u32,
}

/// A connection or template to install as a sync master described it, already bound to
/// one of this director's real servers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Synced {
    /// IP protocol number (6 or 17; any for a template, 0 for a firewall-mark one).
    pub protocol: u8,
    /// A persistence template.
    pub template: bool,
    /// Client address.
    pub client: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// Forwarding method: the real server's, here (a synced connection takes its
    /// destination's, as `ip_vs_bind_dest` does).
    pub method: ForwardMethod,
    /// The real server's counters.
    pub dest: DestId,
    /// State (`IP_VS_TCP_S_*`; 0 for UDP and templates).
    pub state: u8,
    /// Timeout, seconds; the timer starts from it.
    pub timeout_s: u32,
    /// The message's `IP_VS_CONN_F_INACTIVE`.
    pub inactive: bool,
    /// What `in_pkts` starts at (the kernel sets `sync_threshold`).
    pub in_pkts: u32,
}

/// What [`ConnTable::install`] did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Installed {
    /// A new entry.
    Created,
    /// An existing entry took the state and timeout.
    Updated,
    /// An entry of the same client and service pointed elsewhere; it was ended and a new
    /// one created.
    Replaced,
    /// The message describes a connection that was already replaced (an inactive entry for
    /// another real server): nothing changed.
    Ignored,
    /// Addresses of mixed families, or a protocol the table does not hold.
    Unusable,
    /// No room.
    TableFull,
}

/// Whether an entry in `state` counts as active at its real server.
#[inline]
fn counts_active(meta: Meta, state: u8) -> bool {
    meta.is_tcp() && TcpState::from_index(state).is_some_and(TcpState::is_active)
}

impl ConnTable {
    /// The sync decision's view of entry `id`; `None` if it is gone.
    #[inline]
    pub fn sync_probe(&self, id: ConnId) -> Option<SyncProbe> {
        let s = self.slots.get(id.slot as usize)?;
        let c = Ctl(s.ctl.load(Ordering::Acquire));
        if c.gen() != id.gen || c.state() == DOOMED {
            return None;
        }
        let meta = Meta(s.meta.load(Ordering::Relaxed));
        let template = meta.template();
        let timeout_s = if template {
            s.timeout_s.load(Ordering::Relaxed)
        } else {
            self.timeout_secs(meta, c.state())
        };
        let controller = if template {
            None
        } else {
            ConnId::unpack(s.template.load(Ordering::Relaxed))
        };
        Some(SyncProbe {
            template,
            tcp: meta.is_tcp() && !template,
            state: c.state(),
            timeout_s,
            mark: SyncMark::unpack(s.sync.load(Ordering::Relaxed)),
            controller,
        })
    }

    /// The per-packet fast path of the sync decision: counts the packet (one add to the
    /// bookkeeping word as loaded) if entry `id` is plain (no template, not controlled:
    /// [`PLAIN`]), its state is still the one last sent or is ESTABLISHED, and `quiet`,
    /// shown the count with this packet, says the count makes it not due. With the
    /// kernel's rules such a packet is not sent and changes nothing else
    /// (`crate::ha::sync::decide`, `Quiet::settle`). True if settled so; false if the full
    /// decision ([`ConnTable::sync_probe`]) is to be taken. An entry being expired
    /// (`DOOMED`) is in no state that was sent, so it goes to the full decision, which
    /// skips it. Two words of the slot are read, the control word and the bookkeeping
    /// word; always inlined, as the hook that calls it per packet is
    /// (`bench-results/sync.md`).
    ///
    /// The generation is not checked again: `id` comes from the lookup of this very
    /// packet, and `on_packet` has just checked it. A slot reused in the few instructions
    /// since (its entry ended by another thread, the slot taken by a new connection)
    /// would see its count one higher: the race every store of this word through a
    /// handle has ([`SyncMark`]), made no wider.
    #[inline(always)]
    pub fn sync_count(&self, id: ConnId, quiet: impl FnOnce(u32) -> bool) -> bool {
        let Some(s) = self.slots.get(id.slot as usize) else {
            return true;
        };
        let c = Ctl(s.ctl.load(Ordering::Acquire));
        let w = s.sync.load(Ordering::Relaxed);
        if w & PLAIN == 0
            || ((w ^ c.0) & OLD_STATE_MASK != 0 && c.state() != TcpState::Established as u8)
        {
            return false;
        }
        let counted = w.wrapping_add(PKT_ONE);
        if quiet((counted >> PKTS_SHIFT) as u32) {
            s.sync.store(counted, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Counts one packet from the client of entry `id` in its `in_pkts` (ignored if `id`
    /// is gone), for `drop_entry` while no sync master counts them
    /// ([`crate::conn::defence`]). A plain load and store: a packet counted twice or not at
    /// all when two workers race on one entry only nudges a heuristic.
    #[inline]
    pub fn count_in_packet(&self, id: ConnId) {
        if let Some(s) = self.slots.get(id.slot as usize) {
            if Ctl(s.ctl.load(Ordering::Relaxed)).gen() == id.gen {
                let w = s.sync.load(Ordering::Relaxed);
                s.sync.store(w.wrapping_add(PKT_ONE), Ordering::Relaxed);
            }
        }
    }

    /// The packets from the client that slot `slot`'s entry has counted (`cp->in_pkts`,
    /// modulo 2^24): what `drop_entry` judges an entry by. The one place outside this file
    /// that reads the count.
    #[inline]
    pub(super) fn in_pkts(&self, slot: u32) -> u32 {
        SyncMark::unpack(self.slots[slot as usize].sync.load(Ordering::Relaxed)).in_pkts
    }

    /// Stores entry `id`'s sync bookkeeping (ignored if `id` is gone), as an install does:
    /// the next packet takes the full decision.
    #[inline]
    pub fn set_sync_mark(&self, id: ConnId, mark: SyncMark) {
        self.store_sync_mark(id, mark.pack());
    }

    /// Stores the bookkeeping the full decision left for entry `p` (read as `p` by
    /// [`ConnTable::sync_probe`]), marking a plain entry as such for the fast path.
    #[inline]
    pub fn set_sync_decision(&self, id: ConnId, p: &SyncProbe, mark: SyncMark) {
        let plain = !p.template && p.controller.is_none();
        self.store_sync_mark(id, mark.pack() | if plain { PLAIN } else { 0 });
    }

    #[inline]
    fn store_sync_mark(&self, id: ConnId, w: u64) {
        if let Some(s) = self.slots.get(id.slot as usize) {
            if Ctl(s.ctl.load(Ordering::Relaxed)).gen() == id.gen {
                s.sync.store(w, Ordering::Relaxed);
            }
        }
    }

    /// Entry `id` read whole, from any thread; `None` if it is gone (or being rewritten).
    pub fn describe(&self, id: ConnId) -> Option<Described> {
        let (ctl, raw) = self.read(id.slot)?;
        if ctl.gen() != id.gen || ctl.state() == DOOMED {
            return None;
        }
        let m = raw.meta;
        let timeout_s = if m.template() {
            self.slots[id.slot as usize]
                .timeout_s
                .load(Ordering::Relaxed)
        } else {
            self.timeout_secs(m, ctl.state())
        };
        Some(Described {
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
            state: ctl.state(),
            timeout_s,
        })
    }

    /// Installs what a sync master sent, on `worker`'s slots, as a kernel backup does
    /// (`ip_vs_proc_conn`):
    ///
    /// - a connection already here with the same real server takes the state (moving one
    ///   count between active and inactive if that changes) and restarts its timer with the
    ///   timeout; one with another real server is ended and replaced, unless the message
    ///   says inactive (it is then the expiry of a connection already replaced, and
    ///   ignored);
    /// - a template already here takes the timeout and restarts its timer (its real server
    ///   stays);
    /// - anything else is created with the state and timeout given, counted as active,
    ///   inactive or persistent at its real server.
    ///
    /// Either way `in_pkts` becomes `s.in_pkts` and the state the last one sent.
    pub fn install(&self, worker: usize, now: Instant, s: &Synced) -> Installed {
        let now_ms = ms(now);
        let timeout_s = s.timeout_s.min(MAX_TIMEOUT_SECS);
        if s.client.is_ipv6() != s.vaddr.is_ipv6() {
            return Installed::Unusable;
        }
        let mark = |old: Option<SyncMark>| SyncMark {
            in_pkts: s.in_pkts,
            old_state: s.state,
            endtime: old.map_or(SyncMark::fresh(now_ms).endtime, |m| m.endtime),
        };
        if s.template {
            let key = TemplateKey {
                protocol: s.protocol,
                client: s.client,
                vaddr: s.vaddr,
                vport: s.vport,
            };
            if let Some(hit) = self.lookup_template(&key) {
                let slot = &self.slots[hit.id.slot as usize];
                slot.timeout_s.store(timeout_s, Ordering::Relaxed);
                self.touch_template(hit.id, now);
                let old = SyncMark::unpack(slot.sync.load(Ordering::Relaxed));
                self.set_sync_mark(hit.id, mark(Some(old)));
                return Installed::Updated;
            }
            return match self.insert_template(
                worker, now, &key, s.daddr, s.dport, s.method, s.dest, timeout_s,
            ) {
                Ok(id) => {
                    self.set_sync_mark(id, mark(None));
                    Installed::Created
                }
                Err(_) => Installed::TableFull,
            };
        }
        let Some(protocol) = Protocol::from_number(s.protocol) else {
            return Installed::Unusable;
        };
        let key = FlowKey {
            protocol,
            src: s.client,
            sport: s.cport,
            dst: s.vaddr,
            dport: s.vport,
        };
        let mut replaced = false;
        if let Some((hit, _)) = self
            .find(&key)
            .filter(|(h, _)| h.dir == Direction::Original)
        {
            if hit.info.dport == s.dport && hit.info.daddr == s.daddr {
                if self.resync(hit.id, now_ms, s.state, timeout_s) {
                    let old = SyncMark::unpack(
                        self.slots[hit.id.slot as usize]
                            .sync
                            .load(Ordering::Relaxed),
                    );
                    self.set_sync_mark(hit.id, mark(Some(old)));
                    return Installed::Updated;
                }
                // It ended meanwhile: create it afresh below.
            } else if s.inactive {
                return Installed::Ignored;
            } else {
                self.expire_now(hit.id);
                replaced = true;
            }
        }
        let meta = Meta(
            u64::from(s.cport)
                | u64::from(s.vport) << 16
                | u64::from(s.dport) << 32
                | u64::from(s.protocol) << 48
                | (if s.client.is_ipv6() { F_V6 } else { 0 }
                    | if s.daddr.is_ipv6() { F_DV6 } else { 0 }
                    | method_bits(s.method) << METHOD_SHIFT)
                    << 56,
        );
        let fields = Fields {
            meta,
            caddr: addr_words(s.client),
            vaddr: addr_words(s.vaddr),
            daddr: addr_words(s.daddr),
            dest: s.dest.0,
            template: None,
            timeout_s: 0,
            sync: mark(None),
        };
        let state = if protocol == Protocol::Tcp {
            s.state
        } else {
            0
        };
        let _guard = self.enter(worker);
        match self.create(worker, now_ms, &fields, state, deadline(now_ms, timeout_s)) {
            Ok(_) if replaced => Installed::Replaced,
            Ok(_) => Installed::Created,
            Err(_) => Installed::TableFull,
        }
    }

    /// Sets a live connection's state and restarts its timer with `timeout_s`, moving one
    /// count between active and inactive if that changes. False if it is gone.
    fn resync(&self, id: ConnId, now_ms: u64, state: u8, timeout_s: u32) -> bool {
        let s = &self.slots[id.slot as usize];
        loop {
            let c = Ctl(s.ctl.load(Ordering::Acquire));
            if c.gen() != id.gen || c.state() == DOOMED {
                return false;
            }
            let meta = Meta(s.meta.load(Ordering::Relaxed));
            let state = if meta.is_tcp() { state } else { c.state() };
            let n = Ctl::new(c.gen(), state, deadline(now_ms, timeout_s));
            if s.ctl
                .compare_exchange(c.0, n.0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let (was, is) = (counts_active(meta, c.state()), counts_active(meta, state));
                if was != is {
                    self.registry
                        .get(DestId(s.dest.load(Ordering::Relaxed)))
                        .shift(is);
                }
                return true;
            }
        }
    }
}

impl ConnTable {
    /// Calls `f` with every live entry read whole and the milliseconds until it expires
    /// (0 when already due), for the state file a restart reads back. Not a snapshot: call
    /// it when no worker runs to have one.
    pub fn for_each_described(&self, now: Instant, mut f: impl FnMut(&Described, u64)) {
        let now_ms = ms(now);
        for slot in 0..self.slots.len() as u32 {
            let Some((ctl, _)) = self.read(slot) else {
                continue;
            };
            let id = ConnId {
                slot,
                gen: ctl.gen(),
            };
            let Some(d) = self.describe(id) else {
                continue;
            };
            let left = if super::is_expired(ctl.expiry(), now_ms) {
                0
            } else {
                ctl.expiry().wrapping_sub(now_ms) & super::EXP_MASK
            };
            f(&d, left);
        }
    }

    /// Installs an entry a previous run of this director wrote to its state file: as
    /// [`ConnTable::install`] does, but its timer ends `expires_in_ms` from `now` (rounded
    /// up to a second) instead of a whole timeout from now; a template keeps `s.timeout_s`
    /// as the timeout its next use restarts the timer with.
    pub fn restore(
        &self,
        worker: usize,
        now: Instant,
        s: &Synced,
        expires_in_ms: u64,
    ) -> Installed {
        let left_s = u32::try_from(expires_in_ms.div_ceil(1000))
            .unwrap_or(u32::MAX)
            .min(MAX_TIMEOUT_SECS);
        if !s.template {
            return self.install(
                worker,
                now,
                &Synced {
                    timeout_s: left_s,
                    ..*s
                },
            );
        }
        let done = self.install(worker, now, s);
        let key = TemplateKey {
            protocol: s.protocol,
            client: s.client,
            vaddr: s.vaddr,
            vport: s.vport,
        };
        if let Some(hit) = self.lookup_template(&key) {
            self.set_deadline(hit.id, deadline(ms(now), left_s));
        }
        done
    }

    /// Moves a live entry's timer to `expiry`.
    fn set_deadline(&self, id: ConnId, expiry: u64) {
        let s = &self.slots[id.slot as usize];
        loop {
            let c = Ctl(s.ctl.load(Ordering::Acquire));
            if c.gen() != id.gen || c.state() == DOOMED {
                return;
            }
            let n = Ctl::new(c.gen(), c.state(), expiry);
            if s.ctl
                .compare_exchange(c.0, n.0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bookkeeping_word_round_trips_and_one_add_counts_a_packet() {
        let m = SyncMark {
            in_pkts: 0x12_3456,
            old_state: 9,
            endtime: 0xdead_beef,
        };
        assert_eq!(SyncMark::unpack(m.pack()), m);
        let next = SyncMark::unpack(m.pack().wrapping_add(PKT_ONE));
        assert_eq!(
            next,
            SyncMark {
                in_pkts: m.in_pkts + 1,
                ..m
            }
        );
        // The count wraps at 2^24 and leaves the rest of the word alone.
        let full = SyncMark {
            in_pkts: (1 << 24) - 1,
            ..m
        };
        let wrapped = SyncMark::unpack(full.pack().wrapping_add(PKT_ONE));
        assert_eq!(wrapped, SyncMark { in_pkts: 0, ..m });
        assert_eq!(
            SyncMark::unpack(
                SyncMark {
                    in_pkts: 1 << 24,
                    ..m
                }
                .pack()
            )
            .in_pkts,
            0
        );
    }
}
