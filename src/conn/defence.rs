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
//! - `drop_entry`: not built (docs/decisions.md): the kernel's `ip_vs_random_dropentry`
//!   decides by each entry's incoming packet count, which fastlb's table does not keep.
//!   fastlb's own eviction already takes half-open entries before anything established.

use std::sync::atomic::{AtomicU32, Ordering};

/// The strategies' settings, `[director]` keys named as the kernel's sysctls.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DefenceSettings {
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
}

/// [`Level`] packed into one word the workers read per packet: bit 0 `secure_tcp`, the
/// rest the drop rate.
#[derive(Debug, Default)]
pub struct DefenceWord(AtomicU32);

impl DefenceWord {
    /// Publishes `level` (the control thread).
    pub fn store(&self, level: Level) {
        let rate = level.drop_rate.min(u32::MAX >> 1);
        self.0
            .store(rate << 1 | u32::from(level.secure_tcp), Ordering::Relaxed);
    }

    /// The level in force.
    #[inline]
    pub fn load(&self) -> Level {
        let w = self.0.load(Ordering::Relaxed);
        Level {
            drop_rate: w >> 1,
            secure_tcp: w & 1 == 1,
        }
    }

    /// Whether TCP state changes use the secure_tcp tables.
    #[inline]
    pub fn secure_tcp(&self) -> bool {
        self.0.load(Ordering::Relaxed) & 1 == 1
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
    drop_packet: u8,
    secure_tcp: u8,
}

impl Defence {
    /// The strategies as `settings` configure them.
    pub fn new(settings: DefenceSettings) -> Defence {
        Defence {
            settings,
            drop_packet: settings.drop_packet,
            secure_tcp: settings.secure_tcp,
        }
    }

    /// Takes new settings; a strategy whose setting changed starts again from it, as
    /// writing the kernel's sysctl does.
    pub fn configure(&mut self, settings: DefenceSettings) {
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

    /// `update_defense_level` with `free` entries free in the table: switches the modes
    /// and returns what the workers are to apply.
    pub fn update(&mut self, free: u64) -> Level {
        let thresh = u64::from(self.settings.amemthresh);
        let nomem = free < thresh;
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(drop_packet: u8, secure_tcp: u8) -> DefenceSettings {
        DefenceSettings {
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
            },
            Level {
                drop_rate: 0,
                secure_tcp: true,
            },
            Level {
                drop_rate: 1,
                secure_tcp: false,
            },
        ] {
            w.store(level);
            assert_eq!(w.load(), level);
            assert_eq!(w.secure_tcp(), level.secure_tcp);
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
}
