//! What the benchmarks (`benches/pipeline.rs`, `benches/multicore.rs`) build alike: the
//! batch and buffer geometry of a worker, the real servers, routes and neighbours of the
//! director they drive, the clients and their TCP frames, and the few helpers of their
//! reports. Each benchmark includes it as `mod common;`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;

use fastlb::datapath::HEADROOM;
use fastlb::forward::nexthop::{MacAddr, NextHops};

/// Frames per batch, as the AF_XDP worker takes them.
pub const BATCH: usize = 64;
/// Room per worker buffer: headroom for tunnel headers plus a standard frame.
pub const BUF_SIZE: usize = HEADROOM + 2048;
/// Real servers per service (the schedulers' per-SYN cost grows with it).
pub const REALS: usize = 8;
/// Live connections of the large (DRAM-bound) cases.
pub const FLOWS_LARGE: usize = 1_000_000;
/// Distinct SYNs cycled through by the new-connection cases: a flow comes back only long
/// after its previous connection expired, so every SYN creates a connection.
pub const NEW_FLOWS: usize = 2_000_000;
/// Virtual time between two SYNs arriving at the director in the new-connection cases:
/// SYN_RECV lasts 60 s, so about 60 s / 120 us = 500 k connections are live in the steady
/// state (the table holds 1 M).
pub const NEW_STEP_MICROS: u64 = 120;
/// Expiry budget (slots per millisecond) of the new-connection cases on one worker: 256
/// slots per batch of 64 SYNs at [`NEW_STEP_MICROS`] each.
pub const NEW_EXPIRE_BUDGET: usize = (256 * 1000usize).div_ceil(BATCH * NEW_STEP_MICROS as usize);
/// Every clock starts here (an arbitrary, non-zero epoch).
pub const EPOCH_MICROS: u64 = 1_000_000_000;

/// The director's own Ethernet address.
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The router's: clients' frames come from it.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

/// The director's routes, as `ip route` prints them (IPv4 and IPv6).
const ROUTES: &str = "\
default via 192.0.2.254 dev eth0 proto static
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.1
10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.1
2001:db8::/64 dev eth0 proto kernel metric 256 pref medium
2001:db8:1::/64 dev eth0 proto kernel metric 256 pref medium
default via 2001:db8::fe dev eth0 metric 1024 pref medium
";

/// Real server `i` of a service (`v6`: of an IPv6 service).
pub fn real_addr(v6: bool, i: usize) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x11 + i as u16))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11 + i as u8))
    }
}

/// Real server `i`'s Ethernet address (the same for its IPv4 and IPv6 addresses).
pub fn real_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x01, 0x11 + i as u8]
}

/// The director's next hops: [`ROUTES`] on `eth0`, the router and every real server
/// resolved.
pub fn nexthops() -> NextHops {
    let routes = NextHops::parse_routes(ROUTES, "bench routes").expect("routes parse");
    let mut neigh: Vec<(IpAddr, MacAddr)> = vec![
        ("192.0.2.254".parse().unwrap(), MacAddr(ROUTER_MAC)),
        ("2001:db8::fe".parse().unwrap(), MacAddr(ROUTER_MAC)),
    ];
    for i in 0..REALS {
        neigh.push((real_addr(false, i), MacAddr(real_mac(i))));
        neigh.push((real_addr(true, i), MacAddr(real_mac(i))));
    }
    NextHops::with_links(&[("eth0".into(), MacAddr(DIRECTOR_MAC))], routes, neigh)
}

/// Client `i` of a flow set: `per_client` source ports per client address.
pub fn client(v6: bool, i: usize, per_client: usize) -> (IpAddr, u16) {
    let host = (i / per_client) as u32;
    let port = 10_000 + (i % per_client) as u16;
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::from(
            0x2001_0db8_00ff_0000_0000_0000_0000_0000u128 | u128::from(host),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(198, 18, 0, 0)) + host,
        ))
    };
    (addr, port)
}

/// A fixed pseudo-random permutation of `0..n`, so packets of many flows arrive in no
/// particular order (the table sees random accesses, as on a real link).
pub fn shuffled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

/// Which TCP segment a frame carries.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Tcp {
    Syn,
    Ack,
}

/// An Ethernet/IP/TCP frame without payload, padded to the 60-byte Ethernet minimum as a
/// NIC delivers it.
pub fn tcp_frame(
    src_mac: [u8; 6],
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    kind: Tcp,
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(src_mac, DIRECTOR_MAC);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let tcp = ip.tcp(sport, dport, 0x1000_0000, 64240);
    let tcp = match kind {
        Tcp::Syn => tcp.syn(),
        Tcp::Ack => tcp.ack(0x2000_0001),
    };
    let mut v = Vec::with_capacity(tcp.size(0).max(60));
    tcp.write(&mut v, &[]).expect("frame builds");
    v.resize(v.len().max(60), 0);
    v
}

/// The standard output of `cmd args`, trimmed (empty if it cannot run).
pub fn command_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Where a benchmark writes its results: `FASTLB_BENCH_RESULTS` if set (a binary run on
/// another machine, `tools/bench/prebuilt.sh`), else the crate's `bench-results/`.
pub fn results_dir() -> std::path::PathBuf {
    std::env::var_os("FASTLB_BENCH_RESULTS").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results"),
        std::path::PathBuf::from,
    )
}

/// `/proc/loadavg` as it reads now.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `x` rounded to `digits` decimals (for the JSON reports).
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
