//! The parts of the simulated cluster: flows, the router's multipath choice, and directors
//! that run fastlb's own schedulers.

use std::net::{IpAddr, Ipv4Addr};

use fastlb::sched::{self, SchedInput, Scheduler};
use fastlb::service::{
    ConnCount, Dest, DestId, DestRegistry, ForwardMethod, Protocol, RealServer, SchedFlags,
    SchedulerKind, ServiceEntry, ServiceKey, VirtualService,
};
use fastlb::time::Instant;

/// The virtual service every flow addresses.
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Its port.
pub const VPORT: u16 = 80;

/// SplitMix64 (Steele, Lea and Flood): a small, seedable generator, so that a run is
/// reproducible from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// A number in `0..n` (n > 0; the bias of the modulo is below 2^-40 for the sizes here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// The first `k` of a random permutation of `0..n`.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below((n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k.min(n));
        all
    }
}

/// An ideal random assignment of `key` to one of `n` bins (a keyed 64-bit mix, mod n): the
/// baseline that shows how much of an imbalance is the luck of the draw.
pub fn random_bin(key: u64, seed: u64, n: usize) -> usize {
    (mix64(key ^ mix64(seed)) % n as u64) as usize
}

/// SplitMix64's finaliser: a bijective mix of 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One client connection to the VIP.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Client address.
    pub client: Ipv4Addr,
    /// Client port.
    pub port: u16,
    /// The router's multipath hash of the flow: 31 bits, as `fib_multipath_hash` returns.
    pub ecmp_hash: u32,
}

impl Flow {
    /// What a director's scheduler sees of the flow's first packet.
    pub fn sched_input(&self) -> SchedInput {
        SchedInput {
            client: IpAddr::V4(self.client),
            client_port: self.port,
            vaddr: IpAddr::V4(VIP),
            vport: VPORT,
            now: Instant::ZERO,
        }
    }
}

/// `n` distinct flows from `clients` client addresses (random public-looking IPv4
/// addresses, each flow from a random one of them, with a random port 1024..65535).
///
/// The router's hash stands for the kernel's L4 multipath hash (`fib_multipath_hash_policy`
/// 1: a keyed hash of addresses, ports and protocol with a key drawn at boot): a uniform
/// 31-bit value per flow, drawn from `seed` like everything else.
pub fn flows(n: usize, clients: usize, seed: u64) -> Vec<Flow> {
    let mut rng = Rng::new(seed);
    let addrs: Vec<Ipv4Addr> = (0..clients.max(1))
        .map(|_| Ipv4Addr::from(0x0100_0000 + rng.below(0xDF00_0000) as u32))
        .collect();
    let ecmp_key = rng.next_u64();
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let client = addrs[rng.below(addrs.len() as u64) as usize];
        let port = 1024 + rng.below(65536 - 1024) as u16;
        let tuple = (u64::from(u32::from(client)) << 16) | u64::from(port);
        if !seen.insert(tuple) {
            continue;
        }
        let ecmp_hash = (mix64(tuple ^ ecmp_key) >> 33) as u32;
        out.push(Flow {
            client,
            port,
            ecmp_hash,
        });
    }
    out
}

/// How the router spreads flows over equal-cost next hops (the directors).
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Ecmp {
    /// Linux (IPv4 `fib_select_multipath`, IPv6 since "ipv6: Use hash-threshold instead of
    /// modulo-N"): next hop i owns the i-th region of the 31-bit hash space, its upper bound
    /// `DIV_ROUND_CLOSEST(w_0 + .. + w_i << 31, total) - 1` (`fib_rebalance`); a flow takes
    /// the first next hop whose bound is at least its hash (RFC 2992).
    HashThreshold,
    /// `hash mod N` (RFC 2991's modulo-N; IPv6 multipath in Linux before the change above,
    /// and many hardware routers).
    ModuloN,
}

impl Ecmp {
    /// Both, in the order results are reported.
    pub const ALL: [Ecmp; 2] = [Ecmp::HashThreshold, Ecmp::ModuloN];
}

/// A route's next hops as the router holds them: an ordered list of `n` equal-weight
/// next hops. BIRD hands the kernel its next hops sorted (weight, then gateway address,
/// `nexthop_compare_node`), so the list is in director address order and a director that
/// joins takes its address's place in it.
#[derive(Clone, Debug)]
pub struct NextHops {
    kind: Ecmp,
    /// Hash-threshold upper bounds, one per next hop (empty for modulo-N).
    bounds: Vec<u32>,
    n: usize,
}

impl NextHops {
    /// `n` next hops of weight 1 each.
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn new(kind: Ecmp, n: usize) -> NextHops {
        assert!(n > 0, "a route needs a next hop");
        let bounds = match kind {
            Ecmp::HashThreshold => (1..=n as u64)
                .map(|w| ((((w << 31) + n as u64 / 2) / n as u64) - 1) as u32)
                .collect(),
            Ecmp::ModuloN => Vec::new(),
        };
        NextHops { kind, bounds, n }
    }

    /// The index of the next hop a flow with this 31-bit hash takes.
    #[inline]
    pub fn pick(&self, hash: u32) -> usize {
        match self.kind {
            // The kernel walks the list; the bounds rise, so the first bound >= hash is
            // where a binary search lands.
            Ecmp::HashThreshold => self.bounds.partition_point(|&b| b < hash),
            Ecmp::ModuloN => hash as usize % self.n,
        }
    }
}

/// Real server `i` of a simulated service: 10.1.0.0 + i + 1, port 80, weight 1, DR, with
/// counters id `i`.
pub fn real_server(i: usize) -> Dest {
    Dest {
        id: DestId(i as u32),
        server: RealServer {
            addr: IpAddr::V4(Ipv4Addr::from(0x0A01_0000 + i as u32 + 1)),
            port: 80,
            weight: 1,
            method: ForwardMethod::DirectRouting,
            upper_threshold: 0,
            lower_threshold: 0,
        },
        last_weight: 1,
    }
}

/// The service as every director holds it: the VIP with `dests` in this list order.
pub fn service(
    kind: SchedulerKind,
    mh_port: bool,
    table_size: u32,
    dests: Vec<Dest>,
) -> ServiceEntry {
    ServiceEntry {
        config: VirtualService {
            key: ServiceKey::Tuple {
                protocol: Protocol::Tcp,
                addr: IpAddr::V4(VIP),
                port: VPORT,
            },
            scheduler: kind,
            flags: SchedFlags {
                mh_port,
                ..SchedFlags::default()
            },
            mh_table_size: table_size,
            persistence: None,
            reals: dests.iter().map(|d| d.server.clone()).collect(),
        },
        dests,
    }
}

/// One fastlb director: its scheduler for the service, built by the same call a worker
/// makes on a new snapshot, and its own real-server counters (directors share nothing).
pub struct Director {
    scheduler: Box<dyn Scheduler>,
    registry: DestRegistry,
}

impl Director {
    /// A director that has just loaded `service`.
    pub fn new(service: &ServiceEntry, capacity: usize) -> Director {
        Director {
            scheduler: sched::for_service(service),
            registry: DestRegistry::new(capacity),
        }
    }

    /// Schedules a new connection for `flow` and counts it on the chosen server, as the
    /// connection table does; returns the server's id.
    ///
    /// # Panics
    /// If the scheduler finds no server (every simulated server is available).
    pub fn open(&mut self, service: &ServiceEntry, flow: &Flow) -> DestId {
        let i = self
            .scheduler
            .schedule(&service.dests, &self.registry, &flow.sched_input())
            .expect("every real server is available");
        let id = service.dests[i].id;
        self.registry.get(id).add(ConnCount::Active);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_are_distinct_and_reproducible() {
        let a = flows(5000, 300, 7);
        assert_eq!(a, flows(5000, 300, 7));
        assert_ne!(a, flows(5000, 300, 8));
        let distinct: std::collections::HashSet<_> = a.iter().map(|f| (f.client, f.port)).collect();
        assert_eq!(distinct.len(), 5000);
        let addrs: std::collections::HashSet<_> = a.iter().map(|f| f.client).collect();
        assert!(addrs.len() <= 300 && addrs.len() > 250, "{}", addrs.len());
        assert!(a.iter().all(|f| f.ecmp_hash < 1 << 31));
    }

    #[test]
    fn hash_threshold_bounds_follow_fib_rebalance() {
        // Three next hops of weight 1: round(2^31 / 3) - 1, round(2^32 / 3) - 1, 2^31 - 1.
        let nh = NextHops::new(Ecmp::HashThreshold, 3);
        assert_eq!(nh.bounds, [715_827_882, 1_431_655_764, 2_147_483_647]);
        assert_eq!(nh.pick(0), 0);
        assert_eq!(nh.pick(715_827_882), 0);
        assert_eq!(nh.pick(715_827_883), 1);
        assert_eq!(nh.pick((1 << 31) - 1), 2);
        let m = NextHops::new(Ecmp::ModuloN, 3);
        assert_eq!((m.pick(0), m.pick(4), m.pick(8)), (0, 1, 2));
    }

    #[test]
    fn removing_the_first_of_three_next_hops_moves_a_quarter_of_the_others() {
        // DESIGN.md measured it on this machine's kernel: 166 of 680 surviving flows moved
        // when the first of three next hops went (24 %). Regions [0, 1/3, 2/3, 1) become
        // [0, 1/2, 1): the second next hop loses [1/2, 2/3) of its [1/3, 2/3), the third
        // keeps all: 1/6 of 2/3 = 1/4.
        let before = NextHops::new(Ecmp::HashThreshold, 3);
        let after = NextHops::new(Ecmp::HashThreshold, 2);
        let (mut survivors, mut moved) = (0, 0);
        for f in flows(60_000, 60_000, 1) {
            let b = before.pick(f.ecmp_hash);
            if b == 0 {
                continue;
            }
            survivors += 1;
            moved += usize::from(after.pick(f.ecmp_hash) + 1 != b);
        }
        let share = moved as f64 / survivors as f64;
        assert!((share - 0.25).abs() < 0.01, "{share}");
    }
}
