//! The `drop_entry` defence's walk over the table (`ip_vs_random_dropentry`): the control
//! thread offers the connections in a stretch of slots to a chooser and ends those it
//! picks, through [`ConnTable::expire_now`], as a removed real server's connections are
//! ended: the real server's counters are given back at once, the owner reclaims the slot.

use super::{is_expired, ms, ConnId, ConnTable, DOOMED, EXP_MASK};
use crate::conn::defence::DropCandidate;
use crate::conn::state::TcpState;
use crate::time::Instant;
use std::sync::atomic::Ordering;

impl ConnTable {
    /// Offers each live connection in the `count` slots from `start` (wrapping at the end
    /// of the table) to `choose`, and ends those it picks; returns how many it ended.
    /// Templates are never offered, nor entries already being expired. Any thread may
    /// call it; an entry that changes meanwhile is judged as it was when read.
    pub fn drop_entries(
        &self,
        now: Instant,
        start: usize,
        count: usize,
        mut choose: impl FnMut(&DropCandidate) -> bool,
    ) -> usize {
        let cap = self.slots.len();
        if cap == 0 {
            return 0;
        }
        let now_ms = ms(now);
        let mut dropped = 0;
        for k in 0..count.min(cap) {
            let slot = ((start % cap + k) % cap) as u32;
            let Some((ctl, raw)) = self.read(slot) else {
                continue;
            };
            if ctl.state() == DOOMED || raw.meta.template() {
                continue;
            }
            let tcp = raw.meta.is_tcp();
            let remaining_ms = if is_expired(ctl.expiry(), now_ms) {
                0
            } else {
                ctl.expiry().wrapping_sub(now_ms) & EXP_MASK
            };
            let timeout_ms = u64::from(self.timeout_secs(raw.meta, ctl.state())) * 1000;
            let candidate = DropCandidate {
                tcp,
                state: if tcp {
                    TcpState::from_index(ctl.state()).unwrap_or(TcpState::None)
                } else {
                    TcpState::None
                },
                in_pkts: self.in_pkts(slot),
                idle_ms: timeout_ms.saturating_sub(remaining_ms),
            };
            let id = ConnId {
                slot,
                gen: ctl.gen(),
            };
            if choose(&candidate) && self.expire_now(id) {
                dropped += 1;
            }
        }
        self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use super::super::{ConnTable, Direction, NewConn, TemplateKey};
    use crate::conn::defence::{DefenceWord, EntryDropper, Level};
    use crate::conn::state::{TcpFlags, TcpState};
    use crate::service::{DestId, DestRegistry, ForwardMethod, Protocol};
    use crate::time::Instant;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn t(secs: u64) -> Instant {
        Instant::from_secs(secs)
    }

    fn table() -> ConnTable {
        ConnTable::with_seed(64, 1, Arc::new(DestRegistry::new(4)), 7)
    }

    fn new(protocol: Protocol, cport: u16, template: Option<super::ConnId>) -> NewConn {
        NewConn {
            protocol,
            client: ip("192.0.2.1"),
            cport,
            vaddr: ip("10.0.0.100"),
            vport: 80,
            daddr: ip("192.168.1.1"),
            dport: 80,
            method: ForwardMethod::DirectRouting,
            dest: DestId(1),
            flags: (protocol == Protocol::Tcp).then_some(TcpFlags::SYN),
            template,
        }
    }

    /// (active, inactive, persistent) at the one real server.
    fn counts(tb: &ConnTable) -> (u32, u32, u32) {
        let c = tb.registry().get(DestId(1));
        (c.active(), c.inactive(), c.persistent())
    }

    fn states(tb: &ConnTable) -> Vec<&'static str> {
        let mut v = Vec::new();
        tb.for_each(t(0), |e| v.push(e.state));
        v.sort_unstable();
        v
    }

    #[test]
    fn the_walk_never_offers_a_template_and_ends_what_it_picks_as_expiry_would() {
        let tb = table();
        let key = TemplateKey {
            protocol: 6,
            client: ip("192.0.2.1"),
            vaddr: ip("10.0.0.100"),
            vport: 80,
        };
        let tpl = tb
            .insert_template(
                0,
                t(0),
                &key,
                ip("192.168.1.1"),
                80,
                ForwardMethod::DirectRouting,
                DestId(1),
                60,
            )
            .unwrap();
        // A half-open connection, an established one, a UDP flow, all under the template.
        tb.insert(0, t(0), new(Protocol::Tcp, 1000, Some(tpl)))
            .unwrap();
        let est = tb
            .insert(0, t(0), new(Protocol::Tcp, 1001, Some(tpl)))
            .unwrap();
        tb.on_packet(est.id, Direction::Original, Some(TcpFlags::ACK), t(0));
        tb.insert(0, t(0), new(Protocol::Udp, 1002, Some(tpl)))
            .unwrap();
        assert_eq!(counts(&tb), (2, 1, 1));
        let mut offered = Vec::new();
        let dropped = tb.drop_entries(t(0), 0, 64, |c| {
            offered.push((c.tcp, c.state));
            true
        });
        offered.sort_by_key(|&(tcp, s)| (tcp, s as u8));
        assert_eq!(
            offered,
            [
                (false, TcpState::None),
                (true, TcpState::Established),
                (true, TcpState::SynRecv)
            ]
        );
        assert_eq!(dropped, 3);
        assert_eq!(tb.stats().dropped_entries, 3);
        // Gone at once, counters given back; the template stays, controlling nothing.
        assert_eq!(counts(&tb), (0, 0, 1));
        assert_eq!(states(&tb), ["NONE"]);
        assert!(tb.lookup_template(&key).is_some());
        // The owner reclaims the slots at its next sweep; the template then expires at its
        // own time.
        assert_eq!(tb.expire(0, t(1), 64), 3);
        assert_eq!(tb.len(), 1);
        assert_eq!(tb.expire(0, t(61), 64), 1);
        assert_eq!((tb.len(), counts(&tb)), (0, (0, 0, 0)));
    }

    #[test]
    fn the_walk_covers_the_slots_asked_for_wrapping_at_the_end() {
        let tb = table();
        for p in 0..64 {
            tb.insert(0, t(0), new(Protocol::Tcp, 2000 + p, None))
                .unwrap();
        }
        let mut seen = 0;
        assert_eq!(
            tb.drop_entries(t(0), 60, 8, |_| {
                seen += 1;
                false
            }),
            0
        );
        assert_eq!(seen, 8);
        assert_eq!(tb.drop_entries(t(0), 1000, 200, |_| true), 64);
        assert_eq!(counts(&tb), (0, 0, 0));
    }

    #[test]
    fn the_kernels_rules_over_a_table() {
        let tb = table();
        let mut dropper = EntryDropper::new(1);
        // Half open: SYN_RECV, and SYNACK as secure_tcp opens it.
        tb.insert(0, t(0), new(Protocol::Tcp, 1, None)).unwrap();
        let word = DefenceWord::default();
        word.store(Level {
            secure_tcp: true,
            ..Level::default()
        });
        tb.defence().store(word.load());
        tb.insert(0, t(0), new(Protocol::Tcp, 2, None)).unwrap();
        tb.defence().store(Level::default());
        // Established with n packets from the client, the last at second 0.
        let established = |cport: u16, n: u32| {
            let h = tb.insert(0, t(0), new(Protocol::Tcp, cport, None)).unwrap();
            tb.on_packet(h.id, Direction::Original, Some(TcpFlags::ACK), t(0));
            for _ in 0..n {
                tb.count_in_packet(h.id);
            }
        };
        established(10, 1);
        established(11, 9);
        established(12, 0);
        // A UDP flow with 2 packets, another with 1.
        for (cport, n) in [(20, 2), (21, 1)] {
            let h = tb.insert(0, t(0), new(Protocol::Udp, cport, None)).unwrap();
            for _ in 0..n {
                tb.count_in_packet(h.id);
            }
        }
        // Closing: never.
        let h = tb.insert(0, t(0), new(Protocol::Tcp, 30, None)).unwrap();
        tb.on_packet(h.id, Direction::Original, Some(TcpFlags::ACK), t(0));
        tb.on_packet(
            h.id,
            Direction::Original,
            Some(TcpFlags(TcpFlags::FIN.0 | TcpFlags::ACK.0)),
            t(0),
        );
        assert_eq!(tb.len(), 8);
        // 30 s on, everything was refreshed too recently but the half-open entries.
        assert_eq!(tb.drop_entries(t(30), 0, 64, |c| dropper.choose(c)), 2);
        // 61 s on: the established one with 1 packet, the UDP ones with 1 and 2 packets
        // (the first with a count is dropped); not the one with 9, nor the one with none.
        assert_eq!(tb.drop_entries(t(61), 0, 64, |c| dropper.choose(c)), 3);
        let mut left = states(&tb);
        left.dedup();
        assert_eq!(left, ["ESTABLISHED", "FIN_WAIT"]);
        assert_eq!(tb.len() - tb.expire(0, t(62), 64), 3);
    }
}
