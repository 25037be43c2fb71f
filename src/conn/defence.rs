//! IPVS's defence strategies against a connection table that fills (`update_defense_level`
//! in `ip_vs_ctl.c`, Documentation/networking/ipvs-sysctl.rst), with the kernel's
//! semantics and one change of measure: the kernel compares its free memory with
//! `amemthresh`; fastlb compares the free entries of its connection table, whose size is
//! fixed (`conn_capacity`), so `amemthresh` counts entries.
//!
//! Each strategy is a setting from 0 to 3, as the kernel's sysctl:
//!
//! - 0: never on;
//! - 1: off, and switched to 2 (on) by the control thread when fewer than `amemthresh`
//!   entries are free;
//! - 2: on, and switched back to 1 (off) when at least `amemthresh` entries are free again;
//! - 3: always on.
//!
//! The control thread evaluates them once a second ([`Defence::update`], as the kernel's
//! `defense_work_handler`) and publishes the result in one word that the workers read
//! with a relaxed load ([`DefenceWord`]): no lock, no allocation per packet.
//!
//! - `drop_packet`: on, one new connection in `rate` is refused, the rate being
//!   `amemthresh / (amemthresh - free)` (every new connection when nothing is free, one in
//!   two at half the threshold); at 3, one in `am_droprate`. Counted as the drop reason
//!   `defence_drop_packet`. The kernel refuses in its protocols' `conn_schedule` (a TCP
//!   SYN, any new UDP flow), before the scheduler; fastlb at the same point.
//! - `secure_tcp`: on, new TCP state changes go through the kernel's `tcp_states_dos`
//!   table: a connection becomes ESTABLISHED only when the handshake was seen to complete
//!   (NAT: the real server's SYN-ACK, then its next ACK), so a spoofed flood's entries
//!   stay half open and are the first to go when the table evicts.
//! - `drop_entry`: on, the control thread walks a random 1/32 of the table after each
//!   evaluation (`ip_vs_random_dropentry`) and ends, as expiry would, every half-open TCP
//!   entry it finds (SYN_RECV, SYNACK) and some ESTABLISHED TCP and UDP entries: those idle
//!   for 60 s or more with 1 to 8 packets from the client, one in `n` of those with `n`
//!   packets ([`EntryDropper`], the kernel's `todrop_entry`). Templates are never dropped.
//!   The packet count is the entry's `in_pkts`, which the workers keep while `drop_entry`
//!   is not 0 (or while a sync master runs, which keeps it anyway).

use std::sync::atomic::{AtomicU32, Ordering};

use super::state::TcpState;

/// The strategies' settings, `[director]` keys named as the kernel's sysctls.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DefenceSettings {
    /// `drop_entry`, 0 to 3.
    pub drop_entry: u8,
    /// `drop_packet`, 0 to 3.
    pub drop_packet: u8,
    /// `secure_tcp`, 0 to 3.
    pub secure_tcp: u8,
    /// `amemthresh`: the strategies at 1 or 2 switch on below this many free entries.
    pub amemthresh: u32,
    /// `am_droprate`: `drop_packet` 3 refuses one new connection in this many.
    pub am_droprate: u32,
}

impl DefenceSettings {
    /// The kernel's `amemthresh` default (1024 pages, here entries).
    pub const DEFAULT_AMEMTHRESH: u32 = 1024;
    /// The kernel's `am_droprate` default.
    pub const DEFAULT_AM_DROPRATE: u32 = 10;
}

impl Default for DefenceSettings {
    fn default() -> Self {
        DefenceSettings {
            drop_entry: 0,
            drop_packet: 0,
            secure_tcp: 0,
            amemthresh: DefenceSettings::DEFAULT_AMEMTHRESH,
            am_droprate: DefenceSettings::DEFAULT_AM_DROPRATE,
        }
    }
}

/// What the workers apply until the next evaluation.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Level {
    /// Refuse one new connection in this many; 0: refuse none.
    pub drop_rate: u32,
    /// TCP state changes go through the secure_tcp tables.
    pub secure_tcp: bool,
    /// The workers count each entry's packets from the client (`drop_entry` is not 0).
    pub count_in_pkts: bool,
    /// The control thread walks part of the table now (`drop_entry` is on).
    pub drop_entry: bool,
}

/// [`Level`] packed into one word the workers read per packet: bit 0 `secure_tcp`, bit 1
/// `count_in_pkts`, bit 2 `drop_entry`, the rest the drop rate.
#[derive(Debug, Default)]
pub struct DefenceWord(AtomicU32);

impl DefenceWord {
    /// Publishes `level` (the control thread).
    pub fn store(&self, level: Level) {
        let rate = level.drop_rate.min(u32::MAX >> 3);
        self.0.store(
            rate << 3
                | u32::from(level.drop_entry) << 2
                | u32::from(level.count_in_pkts) << 1
                | u32::from(level.secure_tcp),
            Ordering::Relaxed,
        );
    }

    /// The level in force.
    #[inline]
    pub fn load(&self) -> Level {
        let w = self.0.load(Ordering::Relaxed);
        Level {
            drop_rate: w >> 3,
            secure_tcp: w & 1 == 1,
            count_in_pkts: w & 2 == 2,
            drop_entry: w & 4 == 4,
        }
    }

    /// Whether TCP state changes use the secure_tcp tables.
    #[inline]
    pub fn secure_tcp(&self) -> bool {
        self.0.load(Ordering::Relaxed) & 1 == 1
    }

    /// Whether the workers count each entry's packets from the client (for `drop_entry`).
    #[inline]
    pub fn count_in_pkts(&self) -> bool {
        self.0.load(Ordering::Relaxed) & 2 == 2
    }
}

/// One worker's `drop_packet` countdown (the kernel's `drop_counter`, per worker here).
#[derive(Copy, Clone, Debug, Default)]
pub struct DropCounter(u32);

impl DropCounter {
    /// Whether the new connection now being scheduled is refused at `rate` (0: none is):
    /// the countdown runs from `rate` to 0, and the connection that reaches 0 is refused
    /// (`ip_vs_todrop`).
    #[inline]
    pub fn refuse(&mut self, rate: u32) -> bool {
        if rate == 0 {
            return false;
        }
        // A rate lowered since the last connection takes effect at once.
        self.0 = self.0.min(rate);
        if self.0 > 1 {
            self.0 -= 1;
            return false;
        }
        self.0 = rate;
        true
    }
}

/// The control thread's side: the strategies' current modes (1 and 2 switch into each
/// other as the table fills and empties, as the kernel rewrites its sysctls).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Defence {
    settings: DefenceSettings,
    drop_entry: u8,
    drop_packet: u8,
    secure_tcp: u8,
}

impl Defence {
    /// The strategies as `settings` configure them.
    pub fn new(settings: DefenceSettings) -> Defence {
        Defence {
            settings,
            drop_entry: settings.drop_entry,
            drop_packet: settings.drop_packet,
            secure_tcp: settings.secure_tcp,
        }
    }

    /// Takes new settings; a strategy whose setting changed starts again from it, as
    /// writing the kernel's sysctl does.
    pub fn configure(&mut self, settings: DefenceSettings) {
        if settings.drop_entry != self.settings.drop_entry {
            self.drop_entry = settings.drop_entry;
        }
        if settings.drop_packet != self.settings.drop_packet {
            self.drop_packet = settings.drop_packet;
        }
        if settings.secure_tcp != self.settings.secure_tcp {
            self.secure_tcp = settings.secure_tcp;
        }
        self.settings = settings;
    }

    /// The modes now, as `sysctl net.ipv4.vs.drop_packet` and `secure_tcp` read (1 or 2
    /// for a strategy that switches itself).
    pub fn modes(&self) -> (u8, u8) {
        (self.drop_packet, self.secure_tcp)
    }

    /// The `drop_entry` mode now, as `sysctl net.ipv4.vs.drop_entry` reads (1 or 2 for a
    /// setting that switches itself).
    pub fn drop_entry_mode(&self) -> u8 {
        self.drop_entry
    }

    /// `update_defense_level` with `free` entries free in the table: switches the modes
    /// and returns what the workers are to apply.
    pub fn update(&mut self, free: u64) -> Level {
        let thresh = u64::from(self.settings.amemthresh);
        let nomem = free < thresh;
        let drop_entry = match (self.drop_entry, nomem) {
            (1 | 2, true) => {
                self.drop_entry = 2;
                true
            }
            (1 | 2, false) => {
                self.drop_entry = 1;
                false
            }
            (3, _) => true,
            _ => false,
        };
        let drop_rate = match (self.drop_packet, nomem) {
            (1 | 2, true) => {
                self.drop_packet = 2;
                // free < thresh, so the divisor is at least 1 and the rate at least 1.
                (thresh / (thresh - free)) as u32
            }
            (1 | 2, false) => {
                self.drop_packet = 1;
                0
            }
            (3, _) => self.settings.am_droprate,
            _ => 0,
        };
        let secure_tcp = match (self.secure_tcp, nomem) {
            (1 | 2, true) => {
                self.secure_tcp = 2;
                true
            }
            (1 | 2, false) => {
                self.secure_tcp = 1;
                false
            }
            (3, _) => true,
            _ => false,
        };
        Level {
            drop_rate,
            secure_tcp,
            count_in_pkts: self.settings.drop_entry != 0,
            drop_entry,
        }
    }
}

/// What the `drop_entry` walk sees of one connection (never a template: the table does
/// not offer them).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DropCandidate {
    /// A TCP connection; false for UDP.
    pub tcp: bool,
    /// Its TCP state (`TcpState::None` for UDP).
    pub state: TcpState,
    /// Packets from the client so far (`cp->in_pkts`).
    pub in_pkts: u32,
    /// Milliseconds since its timer was last restarted (by a packet or a state change).
    pub idle_ms: u64,
}

/// The `drop_entry` walk's choice and its memory between walks, on the control thread:
/// the kernel's `todrop_entry` with its `todrop_counter` array, kept per director as the
/// kernel keeps it per network namespace.
#[derive(Clone, Debug)]
pub struct EntryDropper {
    /// Countdowns for entries with 1 to 8 packets from the client (index 0 unused: an
    /// entry that has seen no packet is never dropped by its count).
    counters: [i8; 9],
    /// xorshift state for the walk's random start.
    rng: u64,
}

impl EntryDropper {
    /// Part of the table one walk looks at: 1/32, as the kernel scans 1/32 of its hash
    /// buckets each second.
    pub const SHARE: usize = 32;
    /// An established or UDP entry whose timer was restarted less than this long ago is
    /// kept ("enough time for a normal connection to get through").
    pub const MIN_IDLE_MS: u64 = 60_000;

    /// A dropper whose walks start at places drawn from `seed`.
    pub fn new(seed: u64) -> EntryDropper {
        EntryDropper {
            counters: [0; 9],
            rng: seed | 1,
        }
    }

    /// Where the next walk over a table of `capacity` entries starts, and how many it looks
    /// at (at least one).
    pub fn next_walk(&mut self, capacity: usize) -> (usize, usize) {
        // xorshift64: the start only needs to move around the table, not to be secret.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let start = if capacity == 0 {
            0
        } else {
            (x % capacity as u64) as usize
        };
        (start, (capacity / Self::SHARE).max(1))
    }

    /// Whether the walk ends this entry (`ip_vs_random_dropentry`): a half-open TCP entry
    /// (SYN_RECV, SYNACK) always; an ESTABLISHED TCP entry or a UDP one by its packet count
    /// ([`EntryDropper::by_count`]); any other TCP state never.
    pub fn choose(&mut self, c: &DropCandidate) -> bool {
        if !c.tcp {
            return self.by_count(c);
        }
        match c.state {
            TcpState::SynRecv | TcpState::SynAck => true,
            TcpState::Established => self.by_count(c),
            _ => false,
        }
    }

    /// `todrop_entry`: never an entry whose timer was restarted in the last 60 s, nor one
    /// with no packet or more than 8 from the client; of those with `n` packets (1 to 8),
    /// the first one met and then one in `n`, so the fewer packets, the likelier it goes.
    fn by_count(&mut self, c: &DropCandidate) -> bool {
        if c.idle_ms < Self::MIN_IDLE_MS {
            return false;
        }
        let n = match c.in_pkts {
            n @ 1..=8 => n as usize,
            _ => return false,
        };
        self.counters[n] -= 1;
        if self.counters[n] > 0 {
            return false;
        }
        self.counters[n] = n as i8;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(drop_packet: u8, secure_tcp: u8) -> DefenceSettings {
        DefenceSettings {
            drop_entry: 0,
            drop_packet,
            secure_tcp,
            amemthresh: 1000,
            am_droprate: 10,
        }
    }

    #[test]
    fn zero_is_never_on_and_three_always() {
        let mut d = Defence::new(settings(0, 0));
        for free in [0, 10, 999, 1000, 1 << 40] {
            assert_eq!(d.update(free), Level::default());
        }
        assert_eq!(d.modes(), (0, 0));
        let mut d = Defence::new(settings(3, 3));
        for free in [0, 10, 999, 1000, 1 << 40] {
            let l = d.update(free);
            assert_eq!((l.drop_rate, l.secure_tcp), (10, true), "free {free}");
        }
        assert_eq!(d.modes(), (3, 3));
    }

    #[test]
    fn one_switches_to_two_below_the_threshold_and_back() {
        let mut d = Defence::new(settings(1, 1));
        assert_eq!(d.update(1000), Level::default());
        assert_eq!(d.modes(), (1, 1));
        // One entry short of the threshold: on, refusing one new connection in
        // amemthresh / (amemthresh - free) = 1000.
        let l = d.update(999);
        assert_eq!((l.drop_rate, l.secure_tcp), (1000, true));
        assert_eq!(d.modes(), (2, 2));
        // Half the threshold free: one in two; none free: every one.
        assert_eq!(d.update(500).drop_rate, 2);
        assert_eq!(d.update(0).drop_rate, 1);
        assert_eq!(d.modes(), (2, 2));
        // Enough free again: off, and back to 1.
        assert_eq!(d.update(1000), Level::default());
        assert_eq!(d.modes(), (1, 1));
    }

    #[test]
    fn two_set_by_hand_turns_into_one_when_memory_is_plenty() {
        // As writing 2 to the sysctl: on until the next evaluation finds enough free.
        let mut d = Defence::new(settings(2, 2));
        assert_eq!(d.modes(), (2, 2));
        assert_eq!(d.update(5000), Level::default());
        assert_eq!(d.modes(), (1, 1));
    }

    #[test]
    fn configure_restarts_only_a_changed_strategy() {
        let mut d = Defence::new(settings(1, 1));
        d.update(0);
        assert_eq!(d.modes(), (2, 2));
        d.configure(DefenceSettings {
            amemthresh: 10,
            ..settings(1, 0)
        });
        assert_eq!(d.modes(), (2, 0));
        assert_eq!(d.update(20), Level::default());
        assert_eq!(d.modes(), (1, 0));
    }

    #[test]
    fn the_word_carries_the_level() {
        let w = DefenceWord::default();
        assert_eq!(w.load(), Level::default());
        for level in [
            Level {
                drop_rate: 7,
                secure_tcp: true,
                ..Level::default()
            },
            Level {
                secure_tcp: true,
                count_in_pkts: true,
                ..Level::default()
            },
            Level {
                drop_rate: 1,
                drop_entry: true,
                ..Level::default()
            },
            Level {
                drop_rate: u32::MAX >> 3,
                secure_tcp: false,
                count_in_pkts: true,
                drop_entry: true,
            },
        ] {
            w.store(level);
            assert_eq!(w.load(), level);
            assert_eq!(w.secure_tcp(), level.secure_tcp);
            assert_eq!(w.count_in_pkts(), level.count_in_pkts);
        }
    }

    #[test]
    fn the_counter_refuses_one_in_rate() {
        let mut c = DropCounter::default();
        assert!(!(0..100).any(|_| c.refuse(0)));
        let refused: Vec<bool> = (0..9).map(|_| c.refuse(3)).collect();
        // The first reaches 0 at once (the kernel's counter starts at the rate when it is
        // set; a fresh worker's starts at 0), then one in three.
        assert_eq!(
            refused,
            [true, false, false, true, false, false, true, false, false]
        );
        assert!((0..5).all(|_| c.refuse(1)));
        // A lower rate takes effect at once.
        let mut c = DropCounter::default();
        c.refuse(100);
        assert_eq!((0..4).filter(|_| c.refuse(2)).count(), 2);
    }

    #[test]
    fn drop_entry_switches_as_the_others_and_counts_while_set() {
        let mut d = Defence::new(DefenceSettings {
            drop_entry: 1,
            ..settings(0, 0)
        });
        let l = d.update(1000);
        assert_eq!((l.drop_entry, l.count_in_pkts), (false, true));
        assert_eq!(d.drop_entry_mode(), 1);
        let l = d.update(999);
        assert_eq!((l.drop_entry, l.count_in_pkts), (true, true));
        assert_eq!(d.drop_entry_mode(), 2);
        assert!(!d.update(1000).drop_entry);
        assert_eq!(d.drop_entry_mode(), 1);
        // 3: always on; 0: never, and nothing counted.
        d.configure(DefenceSettings {
            drop_entry: 3,
            ..settings(0, 0)
        });
        assert!(d.update(1 << 40).drop_entry);
        d.configure(settings(0, 0));
        assert_eq!(d.update(0), Level::default());
        assert_eq!(d.drop_entry_mode(), 0);
    }

    fn candidate(tcp: bool, state: TcpState, in_pkts: u32, idle_s: u64) -> DropCandidate {
        DropCandidate {
            tcp,
            state,
            in_pkts,
            idle_ms: idle_s * 1000,
        }
    }

    #[test]
    fn half_open_tcp_entries_always_go() {
        let mut d = EntryDropper::new(1);
        for state in [TcpState::SynRecv, TcpState::SynAck] {
            for (pkts, idle) in [(0, 0), (1, 0), (100, 0), (3, 500)] {
                assert!(d.choose(&candidate(true, state, pkts, idle)), "{state:?}");
            }
        }
    }

    #[test]
    fn other_tcp_states_never_go() {
        let mut d = EntryDropper::new(1);
        for state in [
            TcpState::None,
            TcpState::SynSent,
            TcpState::FinWait,
            TcpState::TimeWait,
            TcpState::Close,
            TcpState::CloseWait,
            TcpState::LastAck,
            TcpState::Listen,
        ] {
            for pkts in 0..10 {
                assert!(!d.choose(&candidate(true, state, pkts, 1000)), "{state:?}");
            }
        }
    }

    #[test]
    fn established_and_udp_entries_go_by_count_once_idle_a_minute() {
        for (tcp, state) in [(true, TcpState::Established), (false, TcpState::None)] {
            let mut d = EntryDropper::new(1);
            // Refreshed less than 60 s ago: kept, whatever the count.
            assert!((0..20).all(|_| !d.choose(&candidate(tcp, state, 1, 59))));
            // No packet, or more than 8: kept.
            for pkts in [0, 9, 1000] {
                assert!((0..20).all(|_| !d.choose(&candidate(tcp, state, pkts, 60))));
            }
            // n packets (1 to 8): the first met goes, then one in n.
            for n in 1..=8u32 {
                let chosen: Vec<bool> = (0..2 * n + 1)
                    .map(|_| d.choose(&candidate(tcp, state, n, 60)))
                    .collect();
                let want: Vec<bool> = (0..2 * n + 1).map(|i| i % n == 0).collect();
                assert_eq!(chosen, want, "{n} packets, tcp {tcp}");
            }
        }
    }

    #[test]
    fn each_count_keeps_its_own_countdown() {
        let mut d = EntryDropper::new(1);
        assert!(d.choose(&candidate(false, TcpState::None, 3, 60)));
        assert!(d.choose(&candidate(false, TcpState::None, 2, 60)));
        assert!(!d.choose(&candidate(false, TcpState::None, 3, 60)));
        assert!(!d.choose(&candidate(false, TcpState::None, 2, 60)));
        assert!(d.choose(&candidate(false, TcpState::None, 2, 60)));
        assert!(!d.choose(&candidate(false, TcpState::None, 3, 60)));
        assert!(d.choose(&candidate(false, TcpState::None, 3, 60)));
    }

    #[test]
    fn a_walk_covers_a_32nd_of_the_table_from_a_moving_start() {
        let mut d = EntryDropper::new(42);
        let starts: Vec<usize> = (0..50)
            .map(|_| {
                let (start, n) = d.next_walk(1 << 14);
                assert_eq!(n, 512);
                assert!(start < 1 << 14);
                start
            })
            .collect();
        let mut distinct = starts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 40, "{starts:?}");
        assert_eq!(d.next_walk(10).1, 1);
    }
}
