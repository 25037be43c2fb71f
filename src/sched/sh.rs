//! Source hashing (`ip_vs_sh.c`).
//!
//! ```text
//! fill: walk the list cyclically, each server taking `weight` consecutive buckets
//!       (at least one: the kernel moves on once ++count >= weight) until 256 are filled
//! key:  hash_32(sport + saddr, 8)    saddr IPv6-folded; sport = 0 unless sh-port
//! pick: bucket[key] if available, else none;
//!       with sh-fallback: bucket[(roffset + key) mod 256] for roffset = key, key + 1, ...
//!       (mod 256), the first available one
//! ```
//!
//! The fallback walk is the kernel's, offset included: it adds the offset (which already
//! starts at the key) to the key again, so it begins at bucket `2 * key mod 256`. All 256
//! buckets are still visited, so any available server is found.

use super::hash::{fold_addr, hash_32};
use super::{available, SchedInput, Scheduler};
use crate::service::{Dest, DestRegistry, SchedFlags};

/// Buckets in the table, as the kernel's `CONFIG_IP_VS_SH_TAB_BITS` default.
const TAB_BITS: u32 = 8;
const TAB_SIZE: usize = 1 << TAB_BITS;

/// Source hashing over a 256-bucket table weighted by consecutive runs.
#[derive(Debug)]
pub struct SourceHashing {
    /// Index into the list per bucket; `None` for every bucket when the list is empty.
    buckets: Box<[Option<u32>; TAB_SIZE]>,
    /// `sh-fallback`.
    fallback: bool,
    /// `sh-port`.
    port: bool,
}

impl SourceHashing {
    /// Fills the table from `dests`; `flags` gives sh-fallback and sh-port.
    pub fn new(dests: &[Dest], flags: SchedFlags) -> SourceHashing {
        let mut buckets = Box::new([None; TAB_SIZE]);
        if !dests.is_empty() {
            let (mut p, mut count) = (0usize, 0i32);
            for b in buckets.iter_mut() {
                *b = Some(p as u32);
                count += 1;
                if count >= dests[p].server.weight {
                    p = (p + 1) % dests.len();
                    count = 0;
                }
            }
        }
        SourceHashing {
            buckets,
            fallback: flags.sh_fallback,
            port: flags.sh_port,
        }
    }

    #[inline]
    fn key(&self, input: &SchedInput, offset: u32) -> usize {
        let port = if self.port {
            u32::from(input.client_port)
        } else {
            0
        };
        let h = hash_32(port.wrapping_add(fold_addr(input.client)), TAB_BITS);
        (offset.wrapping_add(h) as usize) % TAB_SIZE
    }
}

impl Scheduler for SourceHashing {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        input: &SchedInput,
    ) -> Option<usize> {
        let usable = |bucket: usize| -> Result<usize, bool> {
            // Err(true): keep looking; Err(false): empty table, stop.
            let i = self.buckets[bucket].ok_or(false)? as usize;
            let d = dests.get(i).ok_or(false)?;
            if available(d, registry.get(d.id)) {
                Ok(i)
            } else {
                Err(true)
            }
        };
        let ihash = self.key(input, 0);
        match usable(ihash) {
            Ok(i) => return Some(i),
            Err(false) => return None,
            Err(true) if !self.fallback => return None,
            Err(true) => {}
        }
        for offset in 0..TAB_SIZE {
            let roffset = (offset + ihash) % TAB_SIZE;
            match usable(self.key(input, roffset as u32)) {
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

    fn flags(fallback: bool, port: bool) -> SchedFlags {
        SchedFlags {
            sh_fallback: fallback,
            sh_port: port,
            ..SchedFlags::default()
        }
    }

    #[test]
    fn weights_2_1_fill_two_thirds_and_one_third() {
        // Runs A A B repeat; 256 = 3 * 85 + 1 and bucket 255 starts a new run (A):
        // A = 85 * 2 + 1 = 171, B = 85.
        let d = dests(&[2, 1]);
        let s = SourceHashing::new(&d, SchedFlags::default());
        let first: Vec<_> = s.buckets[..6].iter().map(|b| b.unwrap()).collect();
        assert_eq!(first, [0, 0, 1, 0, 0, 1]);
        let count = |k| s.buckets.iter().filter(|b| **b == Some(k)).count();
        assert_eq!((count(0), count(1)), (171, 85));
        assert_eq!(s.buckets[255], Some(0));
    }

    #[test]
    fn a_quiesced_server_still_holds_one_bucket_per_cycle() {
        // ++count (1) >= weight (0): one bucket, then move on; same runs as weight 1.
        let a = SourceHashing::new(&dests(&[2, 0]), SchedFlags::default());
        let b = SourceHashing::new(&dests(&[2, 1]), SchedFlags::default());
        assert_eq!(a.buckets, b.buckets);
    }

    #[test]
    fn source_address_picks_the_bucket() {
        // Runs A A B: bucket k belongs to B iff k mod 3 == 2.
        // 0.0.0.1: hash_32(1) = 97, 97 mod 3 = 1: A. 0.0.0.6: hash_32(6) = 0x4A = 74,
        // 74 mod 3 = 2: B.
        let d = dests(&[2, 1]);
        let reg = DestRegistry::new(4);
        let mut s = SourceHashing::new(&d, SchedFlags::default());
        assert_eq!(
            s.schedule(&d, &reg, &input("0.0.0.1", 9, "10.0.0.1", 0)),
            Some(0)
        );
        assert_eq!(
            s.schedule(&d, &reg, &input("0.0.0.6", 9, "10.0.0.1", 0)),
            Some(1)
        );
        // The port is ignored without sh-port.
        assert_eq!(
            s.schedule(&d, &reg, &input("0.0.0.6", 5, "10.0.0.1", 0)),
            Some(1)
        );
    }

    #[test]
    fn sh_port_adds_the_source_port() {
        // 0.0.0.1 port 5: hash_32(5 + 1) = 74: B; port 1: hash_32(2) = 195, 195 mod 3 = 0: A.
        let d = dests(&[2, 1]);
        let reg = DestRegistry::new(4);
        let mut s = SourceHashing::new(&d, flags(false, true));
        assert_eq!(
            s.schedule(&d, &reg, &input("0.0.0.1", 5, "10.0.0.1", 0)),
            Some(1)
        );
        assert_eq!(
            s.schedule(&d, &reg, &input("0.0.0.1", 1, "10.0.0.1", 0)),
            Some(0)
        );
    }

    #[test]
    fn fallback_skips_a_quiesced_server_and_without_it_there_is_none() {
        // B quiesced keeps its buckets (see above). 0.0.0.6 hashes to bucket 74 (B).
        // Fallback: roffset = 74, bucket (74 + 74) mod 256 = 148, 148 mod 3 = 1: A.
        let d = dests(&[2, 0]);
        let reg = DestRegistry::new(4);
        let inp = input("0.0.0.6", 9, "10.0.0.1", 0);
        let mut plain = SourceHashing::new(&d, SchedFlags::default());
        assert_eq!(plain.schedule(&d, &reg, &inp), None);
        let mut fb = SourceHashing::new(&d, flags(true, false));
        assert_eq!(fb.schedule(&d, &reg, &inp), Some(0));
        // Clients whose bucket is A's are unaffected.
        let inp = input("0.0.0.1", 9, "10.0.0.1", 0);
        assert_eq!(plain.schedule(&d, &reg, &inp), Some(0));
    }

    #[test]
    fn fallback_skips_an_overloaded_server() {
        // Weights 1,1,1: 0.0.0.1 -> bucket 97 -> 97 mod 3 = 1: B. B overloaded:
        // bucket 194 -> 194 mod 3 = 2: C.
        let d = dests(&[1, 1, 1]);
        let reg = DestRegistry::new(4);
        set_overload(&reg, &d[1], true);
        let inp = input("0.0.0.1", 9, "10.0.0.1", 0);
        let mut fb = SourceHashing::new(&d, flags(true, false));
        assert_eq!(fb.schedule(&d, &reg, &inp), Some(2));
        set_overload(&reg, &d[2], true);
        // Next: bucket 195 -> 0: A.
        assert_eq!(fb.schedule(&d, &reg, &inp), Some(0));
    }
}
