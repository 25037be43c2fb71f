//! Weighted random twos choice (`ip_vs_twos.c`), after Mitzenmacher's power of two choices.
//!
//! ```text
//! total = sum of the available servers' weights + 1
//! r1, r2 = random mod total                  (so each lies in 0..=sum)
//! walking the available servers: r -= weight; the first server where r <= 0 is the pick
//! answer pick2 if weight2 * overhead1 > weight1 * overhead2 (it is less loaded per weight),
//! else pick1;   overhead = (active << 8) + inactive
//! ```
//!
//! Because `r` may be 0 the first server is picked for `r` in `0..=w1`, one value more than
//! its weight, as in the kernel. The kernel draws from `prandom_u32`; fastlb draws from a
//! xorshift64* generator seeded per scheduler instance (from the service's key in
//! [`TwoChoices::for_service`]), so a replay of the same capture makes the same choices.

use super::hash::{fold_addr, hsiphash_u32};
use super::{available, SchedInput, Scheduler};
use crate::service::{Dest, DestRegistry, ServiceEntry, ServiceKey};

/// Weighted random twos choice with a deterministic generator.
#[derive(Debug, Clone)]
pub struct TwoChoices {
    /// xorshift64* state, never 0.
    state: u64,
}

impl TwoChoices {
    /// A scheduler whose generator starts from `seed` (0 is replaced by a fixed constant,
    /// since xorshift never leaves 0).
    pub fn with_seed(seed: u64) -> TwoChoices {
        TwoChoices {
            state: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
        }
    }

    /// A scheduler seeded from the service's key, so each service draws its own sequence and
    /// the same configuration always draws the same one.
    pub fn for_service(service: &ServiceEntry) -> TwoChoices {
        let (a, b) = match service.config.key {
            ServiceKey::Tuple {
                protocol,
                addr,
                port,
            } => (
                fold_addr(addr),
                u32::from(port) << 8 | u32::from(protocol.number()),
            ),
            ServiceKey::Fwmark { mark, ipv6 } => (mark, u32::from(ipv6)),
        };
        let key = (0x7477_6f73, 0x6661_7374_6c62);
        let seed = u64::from(hsiphash_u32(key, a)) << 32 | u64::from(hsiphash_u32(key, b));
        TwoChoices::with_seed(seed)
    }

    /// Next 32 random bits: the high half of a xorshift64* output.
    #[inline]
    fn next_u32(&mut self) -> u32 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

impl Scheduler for TwoChoices {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        _input: &SchedInput,
    ) -> Option<usize> {
        let live = || {
            dests
                .iter()
                .enumerate()
                .filter(|(_, d)| available(d, registry.get(d.id)))
        };
        let total: u64 = live().map(|(_, d)| d.server.weight as u64).sum();
        if total == 0 {
            return None;
        }
        let total = total + 1;
        let mut r1 = (u64::from(self.next_u32()) % total) as i64;
        let mut r2 = (u64::from(self.next_u32()) % total) as i64;
        // (index, weight, overhead) of each pick.
        let mut c1: Option<(usize, u64, u64)> = None;
        let mut c2: Option<(usize, u64, u64)> = None;
        for (i, d) in live() {
            let w = d.server.weight;
            r1 -= i64::from(w);
            r2 -= i64::from(w);
            let pick = || (i, w as u64, registry.get(d.id).overhead());
            if r1 <= 0 && c1.is_none() {
                c1 = Some(pick());
            }
            if r2 <= 0 && c2.is_none() {
                c2 = Some(pick());
            }
            if c1.is_some() && c2.is_some() {
                break;
            }
        }
        let (i1, w1, oh1) = c1?;
        match c2 {
            Some((i2, w2, oh2)) if w2 * oh1 > w1 * oh2 => Some(i2),
            _ => Some(i1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn picks(s: &mut TwoChoices, d: &[Dest], reg: &DestRegistry, n: usize) -> Vec<Option<usize>> {
        (0..n).map(|_| s.schedule(d, reg, &any_input())).collect()
    }

    #[test]
    fn deterministic_for_a_seed() {
        let d = dests(&[1, 2, 3, 4]);
        let reg = DestRegistry::new(8);
        set_conns(&reg, &d[1], 3, 0);
        set_conns(&reg, &d[3], 9, 2);
        let a = picks(&mut TwoChoices::with_seed(42), &d, &reg, 100);
        let b = picks(&mut TwoChoices::with_seed(42), &d, &reg, 100);
        let c = picks(&mut TwoChoices::with_seed(43), &d, &reg, 100);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let svc = service(
            crate::service::SchedulerKind::Twos,
            Default::default(),
            d.clone(),
        );
        let x = picks(&mut TwoChoices::for_service(&svc), &d, &reg, 100);
        let y = picks(&mut TwoChoices::for_service(&svc), &d, &reg, 100);
        assert_eq!(x, y);
    }

    #[test]
    fn idle_servers_follow_the_first_draw() {
        // Weights 1, 3, all idle: pick 2 never wins (0 > 0 is false), so the answer is
        // pick 1: r in 0..=4, A for r = 0, 1 (r - 1 <= 0), B for r = 2, 3, 4: A 2/5.
        let d = dests(&[1, 3]);
        let reg = DestRegistry::new(4);
        let mut s = TwoChoices::with_seed(7);
        let n = 20_000;
        let a = picks(&mut s, &d, &reg, n)
            .iter()
            .filter(|p| **p == Some(0))
            .count();
        assert!((a as f64 / n as f64 - 0.4).abs() < 0.02, "{a}");
    }

    #[test]
    fn the_less_loaded_of_two_wins() {
        // Equal weights, A loaded: A is answered only when both draws are A (r1, r2 in
        // 0..=1 of 0..=2: 4/9 of the time), never when either draw is B.
        let d = dests(&[1, 1]);
        let reg = DestRegistry::new(4);
        set_conns(&reg, &d[0], 5, 0);
        let mut s = TwoChoices::with_seed(11);
        let n = 20_000;
        let a = picks(&mut s, &d, &reg, n)
            .iter()
            .filter(|p| **p == Some(0))
            .count();
        assert!((a as f64 / n as f64 - 4.0 / 9.0).abs() < 0.02, "{a}");
    }

    #[test]
    fn never_picks_an_unavailable_server() {
        let d = dests(&[3, 0, 2, 5]);
        let reg = DestRegistry::new(8);
        set_overload(&reg, &d[3], true);
        let mut s = TwoChoices::with_seed(1);
        for p in picks(&mut s, &d, &reg, 1000) {
            assert!(matches!(p, Some(0) | Some(2)), "{p:?}");
        }
    }
}
