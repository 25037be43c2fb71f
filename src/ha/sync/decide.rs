//! When a master sends a connection: `ip_vs_sync_conn_needed`, over fastlb's entries.
//!
//! The kernel asks at every packet from the client (`ip_vs_in`), with the connection's
//! packet count, and again for the template that controls it (with the template's own
//! count, raised by one each time). With the default sysctls (`sync_threshold = 3 50`,
//! `sync_refresh_period = 0`) that means:
//!
//! - a TCP connection is sent at its 3rd packet and every 50th after (53, 103, ...) while
//!   ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT or TIME_WAIT, and at once when it enters one of
//!   those states other than ESTABLISHED; never in SYN_RECV or the other handshake states;
//! - a UDP connection at its 3rd, 53rd, ... packet;
//! - a template every time a packet of a connection it controls is looked at;
//! - with `sync_persist_mode`, connections under a template not at all (their templates
//!   still are).
//!
//! With `sync_refresh_period` the rate drops: an entry whose timer has moved by less than
//! the period (and less than half its timeout) since it was last sent is not sent again,
//! except `sync_retries` times, an eighth of the period apart. The clock is milliseconds
//! where the kernel's is jiffies; everything else is the kernel's arithmetic.

use std::num::NonZeroU32;

use crate::conn::{SyncMark, SyncProbe, TcpState};
use crate::service::SyncSettings;

/// The sync sysctls as the workers apply them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SyncRules {
    /// `sync_threshold[0]`.
    pub threshold: u32,
    /// `sync_threshold[1]` (`sync_period`).
    pub period: u32,
    /// `sync_refresh_period`, milliseconds.
    pub refresh_period_ms: u32,
    /// `sync_retries`.
    pub retries: u32,
    /// `sync_persist_mode`.
    pub persist_mode: bool,
}

impl From<&SyncSettings> for SyncRules {
    fn from(s: &SyncSettings) -> SyncRules {
        SyncRules {
            threshold: s.threshold(),
            period: s.period(),
            refresh_period_ms: s.sync_refresh_period.saturating_mul(1000),
            retries: u32::from(s.sync_retries),
            persist_mode: s.sync_persist_mode,
        }
    }
}

impl Default for SyncRules {
    fn default() -> SyncRules {
        SyncRules::from(&SyncSettings::default())
    }
}

/// The rules of the per-packet fast path ([`SyncRules::quiet`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Quiet {
    threshold: u32,
    period: NonZeroU32,
}

impl Quiet {
    /// The common case: true when a packet that brings the connection's count to `pkts`
    /// is not due by its count. The table asks only for an entry that is neither a
    /// template nor controlled by one and whose state is the one last sent or ESTABLISHED
    /// ([`crate::conn::ConnTable::sync_count`]): for such an entry [`SyncRules::needed`]
    /// forces nothing (a TCP state outside the sync states is never sent; in one of them
    /// unchanged since it was last sent, or in ESTABLISHED whatever was sent before, only
    /// the count can make it due), so where this says true it says "not sent" and changes
    /// nothing but the count (a property test checks). False sends the packet through
    /// [`SyncRules::needed`].
    #[inline(always)]
    pub fn settle(&self, pkts: u32) -> bool {
        pkts % self.period != self.threshold
    }
}

/// Bit `s` set for each TCP state in which a connection is sent.
const TCP_SYNC_STATES: u16 = 1 << TcpState::Established as u8
    | 1 << TcpState::FinWait as u8
    | 1 << TcpState::Close as u8
    | 1 << TcpState::CloseWait as u8
    | 1 << TcpState::TimeWait as u8;

/// Ten seconds, the floor of "half the timeout" (`10UL * HZ`).
const MIN_DIFF_MS: i64 = 10_000;

impl SyncRules {
    /// The fast path's rules, where there is one: with `sync_refresh_period` 0 and a
    /// `sync_period`, [`SyncRules::needed`] reduces to a state test and a packet count
    /// modulo the period for most packets ([`Quiet::settle`]).
    #[inline]
    pub fn quiet(&self) -> Option<Quiet> {
        let period = NonZeroU32::new(self.period)?;
        (self.refresh_period_ms == 0).then_some(Quiet {
            threshold: self.threshold,
            period,
        })
    }

    /// Whether to send entry `p` now that its packet count is `pkts`, and the bookkeeping
    /// to store whether or not (`in_pkts` is `pkts`; a sent entry records its state and
    /// end time). `now_ms` is the pipeline's clock in milliseconds.
    #[inline]
    pub fn needed(&self, p: &SyncProbe, pkts: u32, now_ms: u64) -> (bool, SyncMark) {
        let mut mark = SyncMark {
            in_pkts: pkts,
            ..p.mark
        };
        let timeout_ms = u64::from(p.timeout_s) * 1000;
        let mut n = (now_ms.wrapping_add(timeout_ms) as u32) & !3;
        let force;
        if p.template {
            force = false;
        } else if self.persist_mode && p.controller.is_some() {
            return (false, mark);
        } else if p.tcp {
            if p.state >= 16 || TCP_SYNC_STATES >> p.state & 1 == 0 {
                return (false, mark);
            }
            force = p.state != p.mark.old_state;
            if force && p.state != TcpState::Established as u8 {
                return (true, set(mark, p.state, n));
            }
        } else {
            force = false;
        }
        if self.refresh_period_ms > 0 {
            let orig = p.mark.endtime;
            let diff = i64::from(n.wrapping_sub(orig) as i32);
            let min_diff = (timeout_ms as i64 / 2).max(MIN_DIFF_MS);
            if diff.abs() < i64::from(self.refresh_period_ms).min(min_diff) {
                let retries = orig & 3;
                if retries >= self.retries {
                    return (false, mark);
                }
                // time_before(now, orig - timeout + refresh / 8)
                let since = orig
                    .wrapping_sub(timeout_ms as u32)
                    .wrapping_add(self.refresh_period_ms >> 3);
                if ((now_ms as u32).wrapping_sub(since) as i32) < 0 {
                    return (false, mark);
                }
                n |= retries + 1;
            }
        }
        if self.period > 0 {
            if !p.template && pkts % self.period != self.threshold {
                return (false, mark);
            }
        } else if self.refresh_period_ms == 0 && pkts != self.threshold {
            return (false, mark);
        }
        mark = set(mark, p.state, n);
        // The kernel's compare-exchange of sync_endtime cannot fail here: one worker
        // decides for a connection at a time, so `force` only ever adds to true.
        let _ = force;
        (true, mark)
    }
}

#[inline]
fn set(mark: SyncMark, state: u8, endtime: u32) -> SyncMark {
    SyncMark {
        old_state: state,
        endtime,
        ..mark
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ConnId;

    fn tcp(state: TcpState, old: TcpState) -> SyncProbe {
        SyncProbe {
            template: false,
            tcp: true,
            state: state as u8,
            timeout_s: 900,
            mark: SyncMark {
                in_pkts: 0,
                old_state: old as u8,
                endtime: 0,
            },
            controller: None,
        }
    }

    /// Runs `packets` packets through the decision with the state each packet leaves the
    /// connection in, carrying the bookkeeping along; returns the packet numbers sent.
    fn sent(rules: &SyncRules, states: &[TcpState], tcp_conn: bool) -> Vec<u32> {
        let mut mark = SyncMark::default();
        let mut out = Vec::new();
        for (i, s) in states.iter().enumerate() {
            let probe = SyncProbe {
                template: false,
                tcp: tcp_conn,
                state: if tcp_conn { *s as u8 } else { 0 },
                timeout_s: if tcp_conn { 900 } else { 300 },
                mark,
                controller: None,
            };
            let pkts = mark.in_pkts + 1;
            let (send, m) = rules.needed(&probe, pkts, 1_000 + i as u64);
            mark = m;
            if send {
                out.push(pkts);
            }
        }
        out
    }

    #[test]
    fn defaults_send_at_the_third_packet_then_every_fiftieth() {
        use TcpState::*;
        let rules = SyncRules::default();
        assert_eq!((rules.threshold, rules.period), (3, 50));
        // SYN (SYN_RECV), ACK (ESTABLISHED), then data: sent at 3, 53, 103.
        let mut states = vec![SynRecv, Established];
        states.extend(std::iter::repeat_n(Established, 118));
        assert_eq!(sent(&rules, &states, true), [3, 53, 103]);
        // UDP the same, from the first packet.
        assert_eq!(sent(&rules, &states, false), [3, 53, 103]);
        // A SYN flood: SYN_RECV is never sent.
        assert_eq!(sent(&rules, &[SynRecv; 60], true), Vec::<u32>::new());
    }

    #[test]
    fn closing_states_are_sent_at_once() {
        use TcpState::*;
        let rules = SyncRules::default();
        // Sent at 3 (ESTABLISHED), at the FIN (FIN_WAIT, packet 10), not at the next
        // packet in FIN_WAIT, then at TIME_WAIT.
        let mut states = vec![SynRecv, Established, Established];
        states.extend([Established; 6]);
        states.extend([FinWait, FinWait, TimeWait]);
        assert_eq!(sent(&rules, &states, true), [3, 10, 12]);
        // A state changed by a reply (NAT) counts from the state last sent: a packet that
        // finds FIN_WAIT after ESTABLISHED was sent is sent.
        let (send, m) = rules.needed(&tcp(FinWait, Established), 20, 5);
        assert!(send);
        assert_eq!(m.old_state, FinWait as u8);
        // LAST_ACK is not one of the states sent.
        assert!(!rules.needed(&tcp(LastAck, Established), 3, 5).0);
    }

    #[test]
    fn templates_are_sent_whenever_asked_and_persist_mode_skips_their_connections() {
        let rules = SyncRules::default();
        let template = SyncProbe {
            template: true,
            tcp: false,
            state: 0,
            timeout_s: 360,
            mark: SyncMark::default(),
            controller: None,
        };
        for pkts in 1..10 {
            assert!(rules.needed(&template, pkts, 1).0);
        }
        let mut controlled = tcp(TcpState::Established, TcpState::SynRecv);
        controlled.controller = Some(ConnId::dummy());
        assert!(rules.needed(&controlled, 3, 1).0);
        let persist = SyncRules {
            persist_mode: true,
            ..rules
        };
        assert!(!persist.needed(&controlled, 3, 1).0);
        assert!(persist.needed(&template, 7, 1).0);
    }

    proptest::proptest! {
        /// Where the fast path counts a packet (a plain entry, its state the one last
        /// sent or ESTABLISHED, `Quiet::settle` true), the full rule says the same: not
        /// sent, only counted.
        #[test]
        fn the_fast_path_answers_as_the_full_rule(
            tcp: bool, state in 0u8..16, other_state in 0u8..16, established: bool,
            in_pkts in 0u32..200, endtime: u32,
            threshold in 0u32..5, period in 0u32..60, refresh in proptest::prop_oneof![
                proptest::strategy::Just(0u32), 1u32..100_000],
            persist_mode: bool, now_ms: u64,
        ) {
            let rules = SyncRules { threshold, period, refresh_period_ms: refresh, retries: 1, persist_mode };
            // The state the table lets through: the one last sent, or ESTABLISHED after any.
            let (state, old_state) = if established {
                (TcpState::Established as u8, other_state)
            } else {
                (state, state)
            };
            let mark = SyncMark { in_pkts, old_state, endtime };
            let pkts = in_pkts + 1;
            let probe = SyncProbe {
                template: false, tcp, state, timeout_s: 900, mark, controller: None,
            };
            if rules.quiet().is_some_and(|q| q.settle(pkts)) {
                let counted = SyncMark { in_pkts: pkts, ..mark };
                proptest::prop_assert_eq!(rules.needed(&probe, pkts, now_ms), (false, counted));
            }
        }
    }

    #[test]
    fn period_zero_sends_once_at_the_threshold() {
        let rules = SyncRules {
            threshold: 1,
            period: 0,
            ..SyncRules::default()
        };
        let states = [TcpState::Established; 10];
        assert_eq!(sent(&rules, &states, false), [1]);
    }

    #[test]
    fn refresh_period_limits_the_rate_with_retries() {
        // sync_refresh_period 100 s, period 0: sent when the timer has moved by 100 s or
        // half the timeout, whichever is less; with 2 retries, re-sent twice 12.5 s apart.
        let rules = SyncRules {
            threshold: 3,
            period: 0,
            refresh_period_ms: 100_000,
            retries: 0,
            persist_mode: false,
        };
        let mut p = tcp(TcpState::Established, TcpState::Established);
        p.timeout_s = 900;
        let t0 = 1_000_000;
        let (send, m) = rules.needed(&p, 7, t0);
        assert!(send, "the first time, the end time moved a lot");
        p.mark = m;
        assert!(!rules.needed(&p, 8, t0 + 1_000).0, "1 s later: too soon");
        assert!(
            rules.needed(&p, 9, t0 + 100_000).0,
            "100 s later: sent again"
        );
        let with_retries = SyncRules {
            retries: 2,
            ..rules
        };
        assert!(!with_retries.needed(&p, 8, t0 + 1_000).0);
        let (send, m) = with_retries.needed(&p, 8, t0 + 13_000);
        assert!(send, "an eighth of the period later: a retry");
        assert_eq!(m.endtime & 3, 1);
        p.mark = m;
        let (send, m) = with_retries.needed(&p, 9, t0 + 27_000);
        assert!(send);
        assert_eq!(m.endtime & 3, 2);
        p.mark = m;
        assert!(
            !with_retries.needed(&p, 10, t0 + 40_000).0,
            "retries used up"
        );
    }
}
