//! The per-server rise/fall state machine, sans-IO: it is told when an attempt ended and
//! how, and says when the next attempt is due and whether the server changed state.
//!
//! A *check* is up to `1 + retries` *attempts*, `delay_before_retry` apart; it passes when
//! one attempt passes. `rise` passed checks in a row bring a down server back, `fall` failed
//! checks in a row take an up server out. Checks start `interval` apart, measured from the
//! start of a check (as keepalived does), or back to back when a check takes longer.

use std::time::Duration;

use crate::service::health::HealthConfig;
use crate::time::Instant;

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// It passed; `weight` is a script's dynamic weight (`misc_dynamic`), if it gave one.
    Pass {
        /// Weight to run the server with, from a `misc_dynamic` exit code.
        weight: Option<i32>,
    },
    /// It failed, for this reason (`connect: connection refused`).
    Fail(String),
}

/// A change the state machine reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The server came back; `weight` is its dynamic weight, if any.
    Up {
        /// Dynamic weight, if a script gave one.
        weight: Option<i32>,
    },
    /// The server went, for this reason (the last failed attempt's).
    Down(String),
    /// The server stays up with a new dynamic weight.
    Weight(i32),
}

/// Rise/fall state of one checked real server.
#[derive(Clone, Debug)]
pub struct ServerHealth {
    interval: Duration,
    retries: u32,
    delay_before_retry: Duration,
    rise: u32,
    fall: u32,
    up: bool,
    weight: Option<i32>,
    passes: u32,
    fails: u32,
    attempt: u32,
    check_started: Instant,
    next_at: Instant,
}

impl ServerHealth {
    /// A server checked as `cfg` says, starting at `start` plus `spread`: the warm-up
    /// share of this server (see [`warmup_spread`]).
    pub fn new(cfg: &HealthConfig, start: Instant, spread: Duration) -> ServerHealth {
        let first = start + spread;
        ServerHealth {
            interval: cfg.interval,
            retries: cfg.retries,
            delay_before_retry: cfg.delay_before_retry,
            rise: cfg.rise.max(1),
            fall: cfg.fall.max(1),
            up: !cfg.start_down,
            weight: None,
            passes: 0,
            fails: 0,
            attempt: 0,
            check_started: first,
            next_at: first,
        }
    }

    /// When the next attempt is due.
    pub fn due(&self) -> Instant {
        self.next_at
    }

    /// Whether the server is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The dynamic weight last given by a passing script, if any.
    pub fn weight(&self) -> Option<i32> {
        self.weight
    }

    /// Records that an attempt started at `now` (the first attempt of a check marks the
    /// check's start, from which the next check is timed).
    pub fn started(&mut self, now: Instant) {
        if self.attempt == 0 {
            self.check_started = now;
        }
    }

    /// Records how an attempt ended at `now`; returns the change it caused, if any.
    pub fn record(&mut self, now: Instant, attempt: Attempt) -> Option<Change> {
        match attempt {
            Attempt::Fail(reason) => {
                if self.attempt < self.retries {
                    self.attempt += 1;
                    self.next_at = now + self.delay_before_retry;
                    return None;
                }
                self.end_check(now);
                self.passes = 0;
                self.fails = self.fails.saturating_add(1);
                if self.up && self.fails >= self.fall {
                    self.up = false;
                    return Some(Change::Down(reason));
                }
                None
            }
            Attempt::Pass { weight } => {
                self.end_check(now);
                self.fails = 0;
                self.passes = self.passes.saturating_add(1);
                let old = self.weight;
                if weight.is_some() {
                    self.weight = weight;
                }
                if !self.up {
                    if self.passes >= self.rise {
                        self.up = true;
                        return Some(Change::Up {
                            weight: self.weight,
                        });
                    }
                    return None;
                }
                match weight {
                    Some(w) if old != Some(w) => Some(Change::Weight(w)),
                    _ => None,
                }
            }
        }
    }

    fn end_check(&mut self, now: Instant) {
        self.attempt = 0;
        let next = self.check_started + self.interval;
        self.next_at = if next > now { next } else { now };
    }
}

/// The warm-up share of server `seed`: a fixed point in `[0, warmup)` derived from it, so
/// every start of the director spreads the first checks the same way.
pub fn warmup_spread(warmup: Duration, seed: u64) -> Duration {
    let micros = warmup.as_micros() as u64;
    if micros == 0 {
        return Duration::ZERO;
    }
    // splitmix64: cheap and well spread, so neighbouring addresses land far apart.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    Duration::from_micros(z % micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::health::CheckKind;
    use proptest::prelude::*;

    fn cfg(retries: u32, rise: u32, fall: u32) -> HealthConfig {
        let mut c = HealthConfig::new(CheckKind::Tcp);
        c.interval = Duration::from_secs(5);
        c.delay_before_retry = Duration::from_secs(1);
        c.retries = retries;
        c.rise = rise;
        c.fall = fall;
        c
    }

    fn s(secs: u64) -> Instant {
        Instant::from_secs(secs)
    }

    fn fail() -> Attempt {
        Attempt::Fail("connect: connection refused".into())
    }

    const PASS: Attempt = Attempt::Pass { weight: None };

    #[test]
    fn retries_happen_inside_one_check() {
        let mut h = ServerHealth::new(&cfg(2, 1, 1), s(0), Duration::ZERO);
        assert_eq!(h.due(), s(0));
        h.started(s(0));
        assert_eq!(h.record(s(1), fail()), None);
        assert_eq!(h.due(), s(2), "retry 1 s after the failure");
        h.started(s(2));
        assert_eq!(h.record(s(3), fail()), None);
        assert_eq!(h.due(), s(4));
        h.started(s(4));
        assert_eq!(
            h.record(s(5), fail()),
            Some(Change::Down("connect: connection refused".into()))
        );
        assert!(!h.is_up());
        // The next check is timed from the first attempt's start: 0 + 5.
        assert_eq!(h.due(), s(5));
    }

    #[test]
    fn a_pass_on_retry_saves_the_check() {
        let mut h = ServerHealth::new(&cfg(1, 1, 1), s(0), Duration::ZERO);
        h.started(s(0));
        assert_eq!(h.record(s(1), fail()), None);
        h.started(s(2));
        assert_eq!(h.record(s(2), PASS), None);
        assert!(h.is_up());
        assert_eq!(h.due(), s(5));
        // And the failure count starts over: the next check gets both attempts again.
        h.started(s(5));
        assert_eq!(h.record(s(5), fail()), None);
        assert!(h.is_up());
    }

    #[test]
    fn fall_failed_checks_take_it_out_and_rise_passes_bring_it_back() {
        let mut h = ServerHealth::new(&cfg(0, 2, 3), s(0), Duration::ZERO);
        for (t, expect) in [(0, None), (5, None)] {
            h.started(s(t));
            assert_eq!(h.record(s(t), fail()), expect);
        }
        // A pass in between resets the run of failures.
        h.started(s(10));
        assert_eq!(h.record(s(10), PASS), None);
        for t in [15, 20] {
            h.started(s(t));
            assert_eq!(h.record(s(t), fail()), None);
            assert!(h.is_up());
        }
        h.started(s(25));
        assert!(matches!(h.record(s(25), fail()), Some(Change::Down(_))));
        h.started(s(30));
        assert_eq!(
            h.record(s(30), PASS),
            None,
            "rise 2: one pass is not enough"
        );
        h.started(s(35));
        assert_eq!(h.record(s(35), fail()), None, "already down: no change");
        h.started(s(40));
        assert_eq!(h.record(s(40), PASS), None);
        h.started(s(45));
        assert_eq!(h.record(s(45), PASS), Some(Change::Up { weight: None }));
        assert!(h.is_up());
    }

    #[test]
    fn a_slow_check_makes_the_next_start_at_once() {
        let mut c = cfg(0, 1, 1);
        c.interval = Duration::from_secs(2);
        let mut h = ServerHealth::new(&c, s(0), Duration::ZERO);
        h.started(s(0));
        h.record(s(3), PASS);
        assert_eq!(h.due(), s(3));
    }

    #[test]
    fn start_down_needs_rise_passes() {
        let mut c = cfg(0, 2, 1);
        c.start_down = true;
        let mut h = ServerHealth::new(&c, s(10), Duration::from_secs(3));
        assert!(!h.is_up());
        assert_eq!(h.due(), s(13), "warm-up spread delays the first check");
        h.started(s(13));
        assert_eq!(h.record(s(13), PASS), None);
        h.started(s(18));
        assert_eq!(h.record(s(18), PASS), Some(Change::Up { weight: None }));
    }

    #[test]
    fn dynamic_weight_is_reported_once_per_change() {
        let mut h = ServerHealth::new(&cfg(0, 1, 1), s(0), Duration::ZERO);
        let w = |w| Attempt::Pass { weight: Some(w) };
        assert_eq!(h.record(s(0), w(3)), Some(Change::Weight(3)));
        assert_eq!(h.record(s(5), w(3)), None);
        assert_eq!(h.record(s(10), w(7)), Some(Change::Weight(7)));
        assert_eq!(h.weight(), Some(7));
        assert!(matches!(h.record(s(15), fail()), Some(Change::Down(_))));
        // Back up with a new weight: one Up carrying it.
        assert_eq!(h.record(s(20), w(1)), Some(Change::Up { weight: Some(1) }));
    }

    #[test]
    fn warmup_spread_is_fixed_and_in_range() {
        let w = Duration::from_secs(10);
        assert_eq!(warmup_spread(w, 42), warmup_spread(w, 42));
        assert_ne!(warmup_spread(w, 1), warmup_spread(w, 2));
        assert_eq!(warmup_spread(Duration::ZERO, 7), Duration::ZERO);
    }

    proptest! {
        /// Against a plain counter model: the server is down exactly when the last
        /// completed checks end in `fall` failures since it was last brought up by `rise`
        /// passes.
        #[test]
        fn matches_a_counting_model(
            rise in 1u32..4, fall in 1u32..4, retries in 0u32..3,
            outcomes in proptest::collection::vec(any::<bool>(), 0..60),
        ) {
            let mut h = ServerHealth::new(&cfg(retries, rise, fall), s(0), Duration::ZERO);
            let (mut up, mut run_pass, mut run_fail, mut attempt) = (true, 0, 0, 0);
            let mut t = 0;
            for ok in outcomes {
                t += 1;
                h.started(s(t));
                let got = h.record(s(t), if ok { PASS } else { fail() });
                let mut want = None;
                if ok {
                    attempt = 0;
                    run_fail = 0;
                    run_pass += 1;
                    if !up && run_pass >= rise {
                        up = true;
                        want = Some(Change::Up { weight: None });
                    }
                } else if attempt < retries {
                    attempt += 1;
                } else {
                    attempt = 0;
                    run_pass = 0;
                    run_fail += 1;
                    if up && run_fail >= fall {
                        up = false;
                        want = Some(fail_change());
                    }
                }
                prop_assert_eq!(got, want);
                prop_assert_eq!(h.is_up(), up);
                prop_assert!(h.due() >= s(t));
            }
        }
    }

    fn fail_change() -> Change {
        Change::Down("connect: connection refused".into())
    }
}
