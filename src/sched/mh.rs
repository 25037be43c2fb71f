//! Maglev hashing (`ip_vs_mh.c`), after Eisenbud et al., NSDI 2016, section 3.4.
//!
//! ```text
//! M      = table size, a prime from 251 to 65521 (default 4093)
//! per server, in list order:
//!   offset = hsiphash_k1(port + addr) mod M
//!   skip   = hsiphash_k2(port + addr) mod (M - 1) + 1
//!   turns  = ((w / gcd) >> shift), or 1 if that is 0 and w != 0
//!            gcd = gcd of the positive weights, shift = max(0, fls(max w / gcd) - bits)
//!            bits = (table index 8..16) / 2, i.e. 6 for M = 4093
//! fill:  round robin over the servers with turns >= 1, each taking `turns` slots per
//!        round: its next free slot of offset, offset + skip, offset + 2 skip, ... (mod M)
//! pick:  table[hsiphash_k1(sport + saddr) mod M]   (saddr IPv6-folded; sport only with
//!        mh-port); with mh-fallback, an unavailable pick walks on through
//!        table[hsiphash_k1(roffset + sport + saddr) mod M], roffset = key, key + 1, ...
//! ```
//!
//! The keys are the kernel's fixed ones (k1 = 2654435761 twice, k2 = 2654446892 twice), and
//! `hsiphash` is SipHash-1-3 as the kernel's 64-bit build computes it, implemented in
//! [`hash`](super::hash). Every director builds the same table from the same ordered list.
//! The kernel weighs servers by their *last* weight ([`Dest::last_weight`]: the weight a
//! server was added with, then its latest non-zero one) so that quiescing one keeps its
//! slots: its clients then fail or fall back, everyone else stays put. A server added with
//! weight 0 takes no slot.

use super::hash::{fold_addr, gcd, hsiphash_u32};
use super::{available, SchedInput, Scheduler};
use crate::service::{Dest, DestRegistry, SchedFlags, DEFAULT_MH_TABLE_SIZE};

/// The table sizes the kernel offers (`CONFIG_IP_VS_MH_TAB_INDEX` 8..=16).
pub const MH_TABLE_SIZES: [u32; 9] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];

const HASH1: (u64, u64) = (2_654_435_761, 2_654_435_761);
const HASH2: (u64, u64) = (2_654_446_892, 2_654_446_892);
/// Marks a slot no server took (only when no server has a weight).
const EMPTY: u32 = u32::MAX;

/// Maglev hashing: a consistent-hash lookup table over the source address.
#[derive(Debug)]
pub struct MaglevHashing {
    /// Index into the list per slot, or [`EMPTY`].
    lookup: Box<[u32]>,
    /// `mh-fallback`.
    fallback: bool,
    /// `mh-port`.
    port: bool,
}

impl MaglevHashing {
    /// Builds the table for `dests`, each weighted by its last weight
    /// ([`Dest::last_weight`]). A `table_size` that is not one of [`MH_TABLE_SIZES`] is
    /// replaced by the default 4093 (configuration checking rejects it before it gets here).
    pub fn new(dests: &[Dest], table_size: u32, flags: SchedFlags) -> MaglevHashing {
        let weights: Vec<u32> = dests.iter().map(|d| d.last_weight.max(0) as u32).collect();
        MaglevHashing::with_last_weights(dests, &weights, table_size, flags)
    }

    /// Builds the table weighting `dests[i]` by `last_weights[i]`, its last non-zero
    /// weight, as the kernel does.
    ///
    /// # Panics
    /// If the two slices differ in length.
    pub fn with_last_weights(
        dests: &[Dest],
        last_weights: &[u32],
        table_size: u32,
        flags: SchedFlags,
    ) -> MaglevHashing {
        assert_eq!(dests.len(), last_weights.len());
        let index = MH_TABLE_SIZES
            .iter()
            .position(|&p| p == table_size)
            .or_else(|| {
                MH_TABLE_SIZES
                    .iter()
                    .position(|&p| p == DEFAULT_MH_TABLE_SIZE)
            })
            .unwrap_or(4);
        let m = MH_TABLE_SIZES[index];
        let bits = (8 + index as u32) / 2;
        let mut lookup = vec![EMPTY; m as usize].into_boxed_slice();

        let g = last_weights.iter().fold(0, |g, &w| gcd(w, g));
        // No positive weight (g == 0): every slot stays empty, as the kernel resets its table.
        let max_weight = last_weights.iter().max().copied().unwrap_or(0);
        if let Some(max) = max_weight.checked_div(g) {
            let fls = 32 - max.leading_zeros();
            let shift = fls.saturating_sub(bits);
            // (offset-walk position, skip, turns) per server.
            let mut setup: Vec<(u32, u32, u32)> = dests
                .iter()
                .zip(last_weights)
                .map(|(d, &lw)| {
                    let v = u32::from(d.server.port).wrapping_add(fold_addr(d.server.addr));
                    let offset = hsiphash_u32(HASH1, v) % m;
                    let skip = hsiphash_u32(HASH2, v) % (m - 1) + 1;
                    let turns = match (lw / g) >> shift {
                        0 => u32::from(lw != 0),
                        t => t,
                    };
                    (offset, skip, turns)
                })
                .collect();
            let mut taken = vec![false; m as usize];
            let mut n = 0;
            'fill: loop {
                for (i, (perm, skip, turns)) in setup.iter_mut().enumerate() {
                    for _ in 0..*turns {
                        while taken[*perm as usize] {
                            *perm += *skip;
                            if *perm >= m {
                                *perm -= m;
                            }
                        }
                        taken[*perm as usize] = true;
                        lookup[*perm as usize] = i as u32;
                        n += 1;
                        if n == m {
                            break 'fill;
                        }
                    }
                }
            }
        }
        MaglevHashing {
            lookup,
            fallback: flags.mh_fallback,
            port: flags.mh_port,
        }
    }

    /// The list index each slot of the table points at, slot by slot; `None` for an empty
    /// slot (only when no server has a weight). Read-only, for tools that study the table
    /// itself (`cluster-sim` counts slots per server and slots that change).
    pub fn slots(&self) -> impl ExactSizeIterator<Item = Option<usize>> + '_ {
        self.lookup
            .iter()
            .map(|&i| (i != EMPTY).then_some(i as usize))
    }

    #[inline]
    fn key(&self, input: &SchedInput, offset: u32) -> usize {
        let port = if self.port {
            u32::from(input.client_port)
        } else {
            0
        };
        let v = offset
            .wrapping_add(port)
            .wrapping_add(fold_addr(input.client));
        (hsiphash_u32(HASH1, v) % self.lookup.len() as u32) as usize
    }
}

impl Scheduler for MaglevHashing {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        input: &SchedInput,
    ) -> Option<usize> {
        // Ok(index), Err(true) to walk on, Err(false) for an empty slot (empty table).
        let usable = |slot: usize| -> Result<usize, bool> {
            let i = self.lookup[slot];
            let d = dests.get(i as usize).ok_or(false)?;
            if available(d, registry.get(d.id)) {
                Ok(i as usize)
            } else {
                Err(true)
            }
        };
        let m = self.lookup.len();
        let ihash = self.key(input, 0);
        match usable(ihash) {
            Ok(i) => return Some(i),
            Err(false) => return None,
            Err(true) if !self.fallback => return None,
            Err(true) => {}
        }
        for offset in 0..m {
            let roffset = ((offset + ihash) % m) as u32;
            match usable(self.key(input, roffset)) {
                Ok(i) => return Some(i),
                Err(false) => return None,
                Err(true) => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn counts(s: &MaglevHashing, n: usize) -> Vec<usize> {
        (0..n)
            .map(|k| s.lookup.iter().filter(|&&i| i == k as u32).count())
            .collect()
    }

    fn flags(fallback: bool, port: bool) -> SchedFlags {
        SchedFlags {
            mh_fallback: fallback,
            mh_port: port,
            ..SchedFlags::default()
        }
    }

    #[test]
    fn equal_weights_differ_by_at_most_one_slot() {
        // One slot per server per round: 251 = 3 * 83 + 2, the first two get the extra.
        let d = dests(&[1, 1, 1]);
        let s = MaglevHashing::new(&d, 251, SchedFlags::default());
        assert_eq!(counts(&s, 3), [84, 84, 83]);
        let d = dests(&[5; 7]);
        let s = MaglevHashing::new(&d, 4093, SchedFlags::default());
        // 4093 = 7 * 584 + 5.
        assert_eq!(counts(&s, 7), [585, 585, 585, 585, 585, 584, 584]);
    }

    #[test]
    fn weights_scale_by_gcd_and_shift() {
        // 2:1 -> turns 2, 1: rounds of 3; 251 = 3 * 83 + 2, A takes the last 2: 168 / 83.
        let s = MaglevHashing::new(&dests(&[2, 1]), 251, SchedFlags::default());
        assert_eq!(counts(&s, 2), [168, 83]);
        // 4:2 has gcd 2: the same turns, the same table.
        let t = MaglevHashing::new(&dests(&[4, 2]), 251, SchedFlags::default());
        assert_eq!(s.lookup, t.lookup);
        // 1000:10 -> gcd 10 -> 100:1; fls(100) = 7, bits for 251 = 8 / 2 = 4, shift 3:
        // turns 100 >> 3 = 12 and 1 >> 3 = 0 -> 1. Rounds of 13: 251 = 19 * 13 + 4:
        // A 19 * 12 + 4 = 232, B 19.
        let s = MaglevHashing::new(&dests(&[1000, 10]), 251, SchedFlags::default());
        assert_eq!(counts(&s, 2), [232, 19]);
        // Same at 4093 (bits 12 / 2 = 6, shift 1): turns 50, 1; 4093 = 80 * 51 + 13:
        // A 80 * 50 + 13 = 4013, B 80.
        let s = MaglevHashing::new(&dests(&[1000, 10]), 4093, SchedFlags::default());
        assert_eq!(counts(&s, 2), [4013, 80]);
    }

    #[test]
    fn table_is_deterministic_and_full() {
        let d = dests(&[3, 1, 2, 2]);
        let a = MaglevHashing::new(&d, 4093, SchedFlags::default());
        let b = MaglevHashing::new(&d, 4093, SchedFlags::default());
        assert_eq!(a.lookup, b.lookup);
        assert!(a.lookup.iter().all(|&i| i < 4));
        // A zero-weight server takes no slot.
        let z = MaglevHashing::new(&dests(&[1, 0, 1]), 251, SchedFlags::default());
        assert_eq!(counts(&z, 3)[1], 0);
        // An unknown size falls back to 4093.
        assert_eq!(
            MaglevHashing::new(&d, 1000, SchedFlags::default())
                .lookup
                .len(),
            4093
        );
    }

    #[test]
    fn removing_one_of_ten_moves_few_keys() {
        let d = dests(&[1; 10]);
        let full = MaglevHashing::new(&d, 4093, SchedFlags::default());
        let mut less = d.clone();
        less.remove(4);
        let after = MaglevHashing::new(&less, 4093, SchedFlags::default());
        let id = |ds: &[Dest], i: u32| ds[i as usize].id;
        let (mut kept_owner, mut moved) = (0, 0);
        for (x, y) in full.lookup.iter().zip(after.lookup.iter()) {
            if id(&d, *x) == d[4].id {
                continue;
            }
            kept_owner += 1;
            if id(&d, *x) != id(&less, *y) {
                moved += 1;
            }
        }
        // The removed server's ~409 slots must move; of the other ~3684 only a few do
        // (Maglev is not perfectly minimal; this list moves 42 of 3684, about 1 %).
        assert!(
            moved * 100 < kept_owner * 2,
            "{moved} of {kept_owner} moved"
        );
    }

    #[test]
    fn lookup_by_source_and_port() {
        let d = dests(&[1; 5]);
        let reg = DestRegistry::new(8);
        let mut s = MaglevHashing::new(&d, 4093, SchedFlags::default());
        let mut p = MaglevHashing::new(&d, 4093, flags(false, true));
        let mut port_moves = 0;
        for k in 0..200u16 {
            let c = format!("198.51.100.{}", k % 250);
            let a = s.schedule(&d, &reg, &input(&c, k, "10.0.0.1", 0));
            let b = s.schedule(&d, &reg, &input(&c, k + 1, "10.0.0.1", 0));
            assert_eq!(a, b, "port ignored without mh-port");
            let x = p.schedule(&d, &reg, &input(&c, k, "10.0.0.1", 0));
            let y = p.schedule(&d, &reg, &input(&c, k + 1000, "10.0.0.1", 0));
            port_moves += usize::from(x != y);
        }
        // With mh-port a different port usually lands elsewhere (4 in 5 for 5 servers).
        assert!(port_moves > 100, "{port_moves}");
    }

    #[test]
    fn fallback_walks_past_an_unavailable_server() {
        let d = dests(&[1; 4]);
        let reg = DestRegistry::new(8);
        set_overload(&reg, &d[2], true);
        let mut plain = MaglevHashing::new(&d, 251, SchedFlags::default());
        let mut fb = MaglevHashing::new(&d, 251, flags(true, false));
        let mut lost = 0;
        for k in 0..400u32 {
            let c = std::net::IpAddr::from((0xC633_6400 + k).to_be_bytes()).to_string();
            let inp = input(&c, 1, "10.0.0.1", 0);
            let a = plain.schedule(&d, &reg, &inp);
            let b = fb.schedule(&d, &reg, &inp);
            match a {
                Some(i) => assert_eq!(b, Some(i), "the others' clients stay put"),
                None => {
                    lost += 1;
                    assert!(matches!(b, Some(i) if i != 2));
                }
            }
        }
        // About a quarter of the clients hashed to the overloaded server.
        assert!((50..150).contains(&lost), "{lost}");
    }

    #[test]
    fn last_weights_keep_a_quiesced_servers_slots() {
        // B quiesced (weight 0, last weight 1) keeps its slots: the table equals the one
        // with B at weight 1, and B's clients get no server without the fallback.
        let live = dests(&[1, 1, 1]);
        let quiesced = dests(&[1, 0, 1]);
        let reg = DestRegistry::new(8);
        let a = MaglevHashing::new(&live, 251, SchedFlags::default());
        let mut b =
            MaglevHashing::with_last_weights(&quiesced, &[1, 1, 1], 251, SchedFlags::default());
        assert_eq!(a.lookup, b.lookup);
        let slot_of_b = (0..1000u32)
            .map(|k| std::net::IpAddr::from((0x0A00_0000 + k).to_be_bytes()).to_string())
            .find(|c| {
                let inp = input(c, 1, "10.0.0.1", 0);
                a.lookup[a.key(&inp, 0)] == 1
            })
            .unwrap();
        let inp = input(&slot_of_b, 1, "10.0.0.1", 0);
        assert_eq!(b.schedule(&quiesced, &reg, &inp), None);
    }
}
