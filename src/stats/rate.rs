//! The IPVS rate estimator (`ip_vs_est.c`): connections, packets and bytes per second,
//! averaged over about eight seconds.
//!
//! Every 2 s the control thread hands each estimator the current totals. The estimator takes
//! the difference from the previous totals as the rate of the last two seconds and folds it
//! into an exponentially weighted average with weight W = 1/4:
//!
//! ```text
//! avg += (rate - avg) / 4
//! ```
//!
//! all in the kernel's fixed point: connection and packet rates are kept scaled by 2^10 (the
//! 2 s difference shifted left by 9), byte rates by 2^5 (shifted left by 4). Reading rounds
//! back: `(avg + 0x1FF) >> 10` and `(avg + 0xF) >> 5`. The same inputs give the kernel's
//! figures to the unit, which is what `ipvsadm -L --rate` shows.
//!
//! Differences from the kernel, on purpose: a counter that went backwards (after `-Z`, or a
//! service total after one of its real servers was removed, since fastlb's service totals are
//! sums over its current real servers) counts as no traffic rather than wrapping around.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{dest_totals, TrafficTotals, WorkerStats};
use crate::service::{DestId, ServiceKey, ServiceTable};
use crate::time::Instant;

/// How often the kernel's estimator runs, and how often [`RateTable::tick`] updates.
pub const ESTIMATION_INTERVAL: Duration = Duration::from_secs(2);

/// Rates as `ipvsadm --rate` shows them: per second, rounded as the kernel rounds.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Packets per second from clients.
    pub inpps: u64,
    /// Packets per second to clients.
    pub outpps: u64,
    /// Bytes per second from clients.
    pub inbps: u64,
    /// Bytes per second to clients.
    pub outbps: u64,
}

impl std::ops::AddAssign for Rates {
    fn add_assign(&mut self, o: Rates) {
        self.cps += o.cps;
        self.inpps += o.inpps;
        self.outpps += o.outpps;
        self.inbps += o.inbps;
        self.outbps += o.outbps;
    }
}

/// One estimator (`struct ip_vs_estimator`): the last totals seen and the scaled averages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateEstimator {
    last: TrafficTotals,
    cps: i64,
    inpps: i64,
    outpps: i64,
    inbps: i64,
    outbps: i64,
}

/// `avg += (rate - avg) >> 2` with the difference of two totals as `rate`, scaled by
/// `shift` (9 for counts: 2^10 over 2 s; 4 for bytes: 2^5 over 2 s).
fn fold(avg: &mut i64, now: u64, last: u64, shift: u32) {
    let delta = now.saturating_sub(last);
    // A 2 s difference beyond 2^54 packets or 2^59 bytes is not traffic; clamp rather than
    // overflow the fixed point.
    let rate = (delta.min(i64::MAX as u64 >> shift) << shift) as i64;
    // Arithmetic shift: the kernel's `>> 2` of a signed long rounds toward minus infinity.
    *avg += (rate - *avg) >> 2;
}

impl RateEstimator {
    /// An estimator whose first interval starts at `totals` (`ip_vs_start_estimator` starts
    /// from the counters as they are).
    pub fn new(totals: TrafficTotals) -> RateEstimator {
        RateEstimator {
            last: totals,
            ..RateEstimator::default()
        }
    }

    /// One estimation step: `totals` are the counters ESTIMATION_INTERVAL after the previous
    /// step.
    pub fn update(&mut self, totals: TrafficTotals) {
        let last = self.last;
        fold(&mut self.cps, totals.conns, last.conns, 9);
        fold(&mut self.inpps, totals.in_pkts, last.in_pkts, 9);
        fold(&mut self.outpps, totals.out_pkts, last.out_pkts, 9);
        fold(&mut self.inbps, totals.in_bytes, last.in_bytes, 4);
        fold(&mut self.outbps, totals.out_bytes, last.out_bytes, 4);
        self.last = totals;
    }

    /// Forgets the averages and restarts from `totals` (`ip_vs_zero_estimator`, for `-Z`).
    pub fn zero(&mut self, totals: TrafficTotals) {
        *self = RateEstimator::new(totals);
    }

    /// The rates, decoded and rounded as `ip_vs_read_estimator` does.
    pub fn rates(&self) -> Rates {
        let count = |v: i64| ((v + 0x1FF) >> 10).max(0) as u64;
        let bytes = |v: i64| ((v + 0xF) >> 5).max(0) as u64;
        Rates {
            cps: count(self.cps),
            inpps: count(self.inpps),
            outpps: count(self.outpps),
            inbps: bytes(self.inbps),
            outbps: bytes(self.outbps),
        }
    }
}

/// The estimators of every real server and service, kept by the control thread.
///
/// Services are keyed by [`ServiceKey`] (a service keeps its estimator across reloads for as
/// long as it stays configured), real servers by their stable [`DestId`].
#[derive(Debug, Default)]
pub struct RateTable {
    dests: HashMap<DestId, RateEstimator>,
    services: HashMap<ServiceKey, RateEstimator>,
    next: Option<Instant>,
}

impl RateTable {
    /// An empty table; the first [`tick`](RateTable::tick) starts every estimator.
    pub fn new() -> RateTable {
        RateTable::default()
    }

    /// Runs one estimation step over `table` if ESTIMATION_INTERVAL has passed since the last
    /// one; call it often (every control-loop turn). Returns whether a step ran.
    ///
    /// A control thread that falls behind runs one step, not several: the rates of that step
    /// then cover more than two seconds, as the kernel's would under a late timer.
    pub fn tick(
        &mut self,
        now: Instant,
        table: &ServiceTable,
        workers: &[Arc<WorkerStats>],
    ) -> bool {
        match self.next {
            Some(next) if now < next => return false,
            Some(next) => {
                let late = now.saturating_since(next) >= ESTIMATION_INTERVAL;
                self.next = Some(if late { now } else { next } + ESTIMATION_INTERVAL);
            }
            None => self.next = Some(now + ESTIMATION_INTERVAL),
        }
        let mut live_dests = Vec::new();
        for svc in &table.services {
            let mut sum = TrafficTotals::default();
            for d in &svc.dests {
                let t = dest_totals(workers.iter().map(|w| &**w), d.id);
                sum += t;
                live_dests.push(d.id);
                match self.dests.get_mut(&d.id) {
                    Some(e) => e.update(t),
                    None => {
                        self.dests.insert(d.id, RateEstimator::new(t));
                    }
                }
            }
            match self.services.get_mut(&svc.config.key) {
                Some(e) => e.update(sum),
                None => {
                    self.services
                        .insert(svc.config.key, RateEstimator::new(sum));
                }
            }
        }
        self.dests.retain(|id, _| live_dests.contains(id));
        self.services
            .retain(|k, _| table.services.iter().any(|s| s.config.key == *k));
        true
    }

    /// Rates of real server `id` (zero until its second step).
    pub fn dest(&self, id: DestId) -> Rates {
        self.dests
            .get(&id)
            .map(RateEstimator::rates)
            .unwrap_or_default()
    }

    /// Rates of the service `key`.
    pub fn service(&self, key: &ServiceKey) -> Rates {
        self.services
            .get(key)
            .map(RateEstimator::rates)
            .unwrap_or_default()
    }

    /// Restarts the estimators of `key`'s service and its real servers from the current
    /// totals (`-Z` of one service), or of everything with `None`.
    pub fn zero(
        &mut self,
        key: Option<&ServiceKey>,
        table: &ServiceTable,
        workers: &[Arc<WorkerStats>],
    ) {
        for svc in &table.services {
            if key.is_some_and(|k| *k != svc.config.key) {
                continue;
            }
            let mut sum = TrafficTotals::default();
            for d in &svc.dests {
                let t = dest_totals(workers.iter().map(|w| &**w), d.id);
                sum += t;
                if let Some(e) = self.dests.get_mut(&d.id) {
                    e.zero(t);
                }
            }
            if let Some(e) = self.services.get_mut(&svc.config.key) {
                e.zero(sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(conns: u64, pkts: u64, bytes: u64) -> TrafficTotals {
        TrafficTotals {
            conns,
            in_pkts: pkts,
            out_pkts: 0,
            in_bytes: bytes,
            out_bytes: 0,
        }
    }

    #[test]
    fn first_steps_by_hand() {
        let mut e = RateEstimator::new(TrafficTotals::default());
        // 200 connections, 2000 packets, 1_000_000 bytes in 2 s: 100 cps, 1000 pps, 500000 Bps.
        e.update(totals(200, 2000, 1_000_000));
        // cps: rate = 200 << 9 = 102400; avg = 0 + (102400 - 0) >> 2 = 25600;
        // read (25600 + 511) >> 10 = 25.
        // pps: 2000 << 9 = 1024000; avg 256000; (256000 + 511) >> 10 = 250.
        // bps: 1e6 << 4 = 16e6; avg 4e6; (4e6 + 15) >> 5 = 125000.
        assert_eq!(
            e.rates(),
            Rates {
                cps: 25,
                inpps: 250,
                outpps: 0,
                inbps: 125_000,
                outbps: 0
            }
        );
        // Same traffic again: avg = 25600 + (102400 - 25600) >> 2 = 44800 -> (44800+511)>>10
        // = 44; pps 256000 + 192000 = 448000 -> 437; bps 4e6 + 3e6 = 7e6 -> 218750.
        e.update(totals(400, 4000, 2_000_000));
        let r = e.rates();
        assert_eq!((r.cps, r.inpps, r.inbps), (44, 437, 218_750));
    }

    #[test]
    fn decays_toward_zero_with_floor_rounding() {
        let mut e = RateEstimator::new(TrafficTotals::default());
        e.update(totals(2, 0, 0)); // rate 1024, avg 256 -> (256+511)>>10 = 0
        assert_eq!(e.rates().cps, 0);
        // avg 256 -> 256 + (0 - 256) >> 2 = 192 -> 144 -> 108 ...: arithmetic shift of a
        // negative difference.
        e.update(totals(2, 0, 0));
        assert_eq!(e.cps, 192);
        e.update(totals(2, 0, 0));
        assert_eq!(e.cps, 144);
        // -1 >> 2 is -1, so the average keeps falling to 0 and never below it.
        let mut x = 3i64;
        fold(&mut x, 0, 0, 9);
        assert_eq!(x, 2);
    }

    #[test]
    fn converges_to_the_steady_rate() {
        let mut e = RateEstimator::new(TrafficTotals::default());
        // The average closes a quarter of the gap each step and stops within 3 units of the
        // scaled rate (48e6 for the bytes): (3/4)^n * 48e6 < 3 needs n >= 58.
        for i in 1..=60u64 {
            e.update(totals(i * 2000, i * 20_000, i * 3_000_000));
        }
        assert_eq!(
            e.rates(),
            Rates {
                cps: 1000,
                inpps: 10_000,
                outpps: 0,
                inbps: 1_500_000,
                outbps: 0
            }
        );
    }

    #[test]
    fn counters_going_backwards_count_as_silence() {
        let mut e = RateEstimator::new(totals(1000, 1000, 1000));
        e.update(totals(0, 0, 0));
        assert_eq!(e.rates(), Rates::default());
        e.zero(totals(10, 10, 10));
        e.update(totals(12, 10, 10));
        assert_eq!(e.cps, 256);
    }

    #[test]
    fn table_ticks_every_two_seconds() {
        use crate::service::table::DestIds;
        use crate::service::{
            Config, DestRegistry, ForwardMethod, Protocol, RealServer, SchedFlags, SchedulerKind,
            VirtualService,
        };
        let key = ServiceKey::Tuple {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port: 80,
        };
        let real = |a: &str| RealServer {
            addr: a.parse().unwrap(),
            port: 80,
            weight: 1,
            method: ForwardMethod::Masquerade,
            upper_threshold: 0,
            lower_threshold: 0,
        };
        let config = Config {
            services: vec![VirtualService {
                key,
                scheduler: SchedulerKind::Rr,
                flags: SchedFlags::default(),
                mh_table_size: 4093,
                persistence: None,
                reals: vec![real("10.1.0.1"), real("10.1.0.2")],
            }],
            ..Config::default()
        };
        let reg = DestRegistry::new(4);
        let table = ServiceTable::build(&config, &mut DestIds::new(4), &reg, 1).unwrap();
        let workers = vec![Arc::new(WorkerStats::new(4)), Arc::new(WorkerStats::new(4))];
        let (a, b) = (table.services[0].dests[0].id, table.services[0].dests[1].id);
        let mut rt = RateTable::new();
        assert!(rt.tick(Instant::from_secs(10), &table, &workers));
        workers[0].dest(a).conns.add(100);
        workers[1].dest(a).conns.add(100);
        workers[1].dest(b).conns.add(200);
        assert!(!rt.tick(Instant::from_micros(11_999_999), &table, &workers));
        assert!(rt.tick(Instant::from_secs(12), &table, &workers));
        // a: 200 in 2 s -> 25 (see first_steps_by_hand); the service: 400 -> 51200 -> 50.
        assert_eq!(rt.dest(a).cps, 25);
        assert_eq!(rt.dest(b).cps, 25);
        assert_eq!(rt.service(&key).cps, 50);
        rt.zero(Some(&key), &table, &workers);
        assert_eq!(rt.service(&key), Rates::default());
        assert_eq!(rt.dest(a), Rates::default());
    }

    proptest::proptest! {
        /// Steady traffic of `d` per 2 s settles at floor(d / 2) per second: the average
        /// stops within 3 units below the scaled rate, and the read-out rounding
        /// ((avg + 511) >> 10, (avg + 15) >> 5) then floors.
        #[test]
        fn steady_traffic_settles_at_half_the_delta(d in 0u64..1_000_000_000) {
            let mut e = RateEstimator::new(TrafficTotals::default());
            for i in 1..=80u64 {
                e.update(TrafficTotals { conns: i * d, in_bytes: i * d, ..TrafficTotals::default() });
            }
            proptest::prop_assert_eq!(e.rates().cps, d / 2);
            proptest::prop_assert_eq!(e.rates().inbps, d / 2);
        }

        /// An average never exceeds the largest rate it was fed, nor goes below zero.
        #[test]
        fn rates_stay_within_the_inputs(deltas in proptest::collection::vec(0u64..10_000_000, 1..30)) {
            let mut e = RateEstimator::new(TrafficTotals::default());
            let mut total = 0;
            for d in &deltas {
                total += d;
                e.update(TrafficTotals { in_pkts: total, out_bytes: total, ..TrafficTotals::default() });
            }
            let max = deltas.iter().max().unwrap();
            proptest::prop_assert!(e.rates().inpps <= max / 2 + 1);
            proptest::prop_assert!(e.rates().outbps <= max / 2 + 1);
            proptest::prop_assert!(e.inpps >= 0 && e.outbps >= 0);
        }
    }
}
