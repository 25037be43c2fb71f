//! The body of the `pipeline` fuzz target, shared with `tests/fuzz_corpus.rs`: the stateful
//! pipeline under a sequence of operations read from the input.
//!
//! Each operation is one byte followed by its arguments:
//! - `0`: a TCP or UDP segment built from five argument bytes (kind, client, port, flags,
//!   payload length), sent to one of the services, or, for NAT, as a real server's reply;
//! - `1`: raw bytes (a length byte, then that many bytes) handed over as a frame;
//! - `2`: the clock steps forward (one byte, squared, in tens of milliseconds);
//! - `3`: a configuration change (one byte picks one of [`CONFIGS`]).
//!
//! Frames go through `process_batch` in batches of up to eight, with `between_batches`
//! after each, as the AF_XDP worker drives the pipeline. Checked after every step:
//! every frame the pipeline transmits parses, and its IPv4 header and TCP/UDP checksums
//! verify (by etherparse, not by fastlb's own code); no real server's connection counter
//! has gone below zero. At the end the clock runs past every timeout: the table must be
//! empty and every counter back at zero.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use fastlb::conn::ConnTable;
use fastlb::control::Publisher;
use fastlb::datapath::pipeline::{Pipeline, PipelineSettings};
use fastlb::datapath::{Frame, PacketProcessor, Verdict, HEADROOM};
use fastlb::forward::nexthop::{MacAddr, NextHops};
use fastlb::service::config;
use fastlb::service::{ConnCount, DestRegistry};
use fastlb::stats::WorkerStats;
use fastlb::time::Instant;

const DIRECTOR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const TAILROOM: usize = 64;
const BATCH: usize = 8;
const CAPACITY: usize = 512;

/// The configurations an input switches between: the same VIP with DR, NAT and TUN
/// services, then weights, servers, schedulers and settings changed.
pub const CONFIGS: [&str; 6] = [
    BASE,
    // A server drained, one removed, persistence longer.
    "[[service]]\nprotocol = \"tcp\"\naddress = \"192.0.2.100\"\nport = 80\nscheduler = \"mh\"\nmh_table_size = 251\n\
     [[service.real]]\naddress = \"10.0.0.11\"\nmethod = \"dr\"\nweight = 0\n\
     [[service.real]]\naddress = \"10.0.0.12\"\nmethod = \"dr\"\n\
     [[service]]\nprotocol = \"tcp\"\naddress = \"192.0.2.100\"\nport = 443\nscheduler = \"rr\"\npersistence = 300\n\
     [[service.real]]\naddress = \"10.0.0.11\"\nport = 8443\nmethod = \"nat\"\n",
    // Everything removed.
    "",
    // Other schedulers, sloppy TCP and UDP.
    "[director]\nsloppy_tcp = true\nsloppy_udp = true\n\
     [[service]]\nprotocol = \"tcp\"\naddress = \"192.0.2.100\"\nport = 80\nscheduler = \"wlc\"\n\
     [[service.real]]\naddress = \"10.0.0.12\"\nmethod = \"dr\"\nweight = 3\n\
     [[service.real]]\naddress = \"10.0.0.13\"\nmethod = \"dr\"\n\
     [[service]]\nprotocol = \"udp\"\naddress = \"192.0.2.100\"\nport = 53\nscheduler = \"sh\"\n\
     [[service.real]]\naddress = \"10.0.0.11\"\nmethod = \"tun\"\n\
     [[service.real]]\naddress = \"10.0.0.12\"\nmethod = \"nat\"\n",
    // Short timeouts.
    "[timeouts]\ntcp = 5\ntcpfin = 2\nudp = 3\n\
     [[service]]\nprotocol = \"tcp\"\naddress = \"192.0.2.100\"\nport = 443\nscheduler = \"lc\"\npersistence = 10\n\
     [[service.real]]\naddress = \"10.0.0.12\"\nport = 8443\nmethod = \"nat\"\n\
     [[service.real]]\naddress = \"10.0.0.13\"\nport = 8443\nmethod = \"nat\"\n",
    // IPv6 beside IPv4.
    "[[service]]\nprotocol = \"tcp\"\naddress = \"2001:db8::100\"\nport = 80\nscheduler = \"rr\"\n\
     [[service.real]]\naddress = \"fd00::11\"\nmethod = \"dr\"\n\
     [[service.real]]\naddress = \"fd00::12\"\nport = 8080\nmethod = \"nat\"\n\
     [[service]]\nprotocol = \"udp\"\naddress = \"2001:db8::100\"\nport = 53\n\
     [[service.real]]\naddress = \"fd00::13\"\nmethod = \"tun\"\n",
];

const BASE: &str = "[[service]]\nprotocol = \"tcp\"\naddress = \"192.0.2.100\"\nport = 80\nscheduler = \"mh\"\nmh_table_size = 251\n\
     [[service.real]]\naddress = \"10.0.0.11\"\nmethod = \"dr\"\n\
     [[service.real]]\naddress = \"10.0.0.12\"\nmethod = \"dr\"\n\
     [[service.real]]\naddress = \"10.0.0.13\"\nmethod = \"dr\"\n\
     [[service]]\nprotocol = \"tcp\"\naddress = \"192.0.2.100\"\nport = 443\nscheduler = \"rr\"\npersistence = 30\n\
     [[service.real]]\naddress = \"10.0.0.11\"\nport = 8443\nmethod = \"nat\"\n\
     [[service.real]]\naddress = \"10.0.0.12\"\nport = 8443\nmethod = \"nat\"\n\
     [[service]]\nprotocol = \"udp\"\naddress = \"192.0.2.100\"\nport = 53\nscheduler = \"wrr\"\n\
     [[service.real]]\naddress = \"10.0.0.13\"\nmethod = \"tun\"\n";

fn next_hops() -> NextHops {
    let routes = NextHops::parse_routes(
        "10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.1\n\
         default via 10.0.0.254 dev eth0\n\
         fd00::/64 dev eth0 proto kernel metric 256\n\
         default via fd00::fe dev eth0 metric 1024\n",
        "fuzz",
    )
    .expect("the fuzz routes parse");
    let neigh = [
        "10.0.0.11",
        "10.0.0.12",
        "10.0.0.13",
        "10.0.0.254",
        "fd00::11",
        "fd00::12",
        "fd00::13",
        "fd00::fe",
    ]
    .iter()
    .enumerate()
    .map(|(i, a)| {
        (
            a.parse::<IpAddr>().unwrap(),
            MacAddr([2, 0, 0, 0, 1, i as u8]),
        )
    });
    NextHops::with_links(
        &[("eth0".to_string(), MacAddr(DIRECTOR_MAC))],
        routes,
        neigh,
    )
}

/// A segment from the five argument bytes.
fn segment(a: [u8; 5]) -> Vec<u8> {
    let [kind, client, port, flags, payload] = a;
    let v6 = kind & 0x10 != 0;
    let (caddr, vip, reals): (IpAddr, IpAddr, [&str; 3]) = if v6 {
        (
            format!("2001:db8:1::{}", client % 16 + 1).parse().unwrap(),
            "2001:db8::100".parse().unwrap(),
            ["fd00::11", "fd00::12", "fd00::13"],
        )
    } else {
        (
            IpAddr::from([198, 51, 100, client % 16 + 1]),
            IpAddr::from([192, 0, 2, 100]),
            ["10.0.0.11", "10.0.0.12", "10.0.0.13"],
        )
    };
    let cport = 40_000 + u16::from(port % 32);
    // Kinds: 0 TCP to :80, 1 TCP to :443, 2 UDP to :53, 3 a NAT real server's reply.
    let (src, dst, sport, dport, udp) = match kind % 4 {
        0 => (caddr, vip, cport, 80, false),
        1 => (caddr, vip, cport, 443, false),
        2 => (caddr, vip, cport, 53, true),
        _ => {
            let rs: IpAddr = reals[usize::from(client / 16 % 3)].parse().unwrap();
            let rport = if flags & 0x80 != 0 { 8080 } else { 8443 };
            (rs, caddr, rport, cport, false)
        }
    };
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC);
    let builder = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => builder.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => builder.ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!("one family per segment"),
    };
    let body = vec![0x5a; usize::from(payload % 64)];
    let mut out = Vec::new();
    if udp {
        let b = builder.udp(sport, dport);
        b.write(&mut out, &body).unwrap();
    } else {
        let mut b = builder.tcp(sport, dport, 1000, 64_000);
        if flags & 1 != 0 {
            b = b.syn();
        }
        if flags & 2 != 0 {
            b = b.ack(1);
        }
        if flags & 4 != 0 {
            b = b.fin();
        }
        if flags & 8 != 0 {
            b = b.rst();
        }
        b.write(&mut out, &body).unwrap();
    }
    out
}

/// Panics unless `frame` parses and its checksums verify (a tunnel's inner packet too).
pub fn assert_valid(frame: &[u8]) {
    assert_valid_net(&SlicedPacket::from_ethernet(frame).expect("a transmitted frame parses"));
}

fn assert_valid_net(p: &SlicedPacket<'_>) {
    let is_ip = |n: etherparse::IpNumber| {
        n == etherparse::IpNumber::IPV4 || n == etherparse::IpNumber::IPV6
    };
    let (src, dst, v6) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "IPv4 header checksum"
            );
            if is_ip(ip.payload().ip_number) {
                return assert_valid_inner(ip.payload().payload);
            }
            (h.source.to_vec(), h.destination.to_vec(), false)
        }
        Some(NetSlice::Ipv6(ip)) => {
            if is_ip(ip.payload().ip_number) {
                return assert_valid_inner(ip.payload().payload);
            }
            let h = ip.header().to_header();
            (h.source.to_vec(), h.destination.to_vec(), true)
        }
        _ => return,
    };
    check_transport(p, &src, &dst, v6);
}

/// A tunnel's inner packet.
fn assert_valid_inner(packet: &[u8]) {
    assert_valid_net(&SlicedPacket::from_ip(packet).expect("an inner packet parses"));
}

fn check_transport(p: &SlicedPacket<'_>, src: &[u8], dst: &[u8], v6: bool) {
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let h = t.to_header();
            let want = if v6 {
                h.calc_checksum_ipv6_raw(
                    src.try_into().unwrap(),
                    dst.try_into().unwrap(),
                    t.payload(),
                )
            } else {
                h.calc_checksum_ipv4_raw(
                    src.try_into().unwrap(),
                    dst.try_into().unwrap(),
                    t.payload(),
                )
            };
            assert_eq!(
                h.checksum,
                want.unwrap(),
                "TCP checksum of a transmitted frame"
            );
        }
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            if h.checksum == 0 && !v6 {
                return;
            }
            let want = if v6 {
                h.calc_checksum_ipv6_raw(
                    src.try_into().unwrap(),
                    dst.try_into().unwrap(),
                    u.payload(),
                )
            } else {
                h.calc_checksum_ipv4_raw(
                    src.try_into().unwrap(),
                    dst.try_into().unwrap(),
                    u.payload(),
                )
            };
            assert_eq!(
                h.checksum,
                want.unwrap(),
                "UDP checksum of a transmitted frame"
            );
        }
        _ => {}
    }
}

fn assert_counters_sane(registry: &DestRegistry) {
    for i in 0..registry.capacity() {
        let c = registry.get(fastlb::service::DestId(i as u32));
        for which in [
            ConnCount::Active,
            ConnCount::Inactive,
            ConnCount::Persistent,
        ] {
            let v = c.net(which);
            assert!(
                v >= 0,
                "real server {i}: {which:?} connections {v}: went below zero"
            );
        }
    }
}

/// Runs the operations `data` describes (see the module docs).
pub fn exercise(data: &[u8]) {
    let first = config::parse(BASE, Path::new("fuzz.toml")).expect("the base config parses");
    let registry = Arc::new(DestRegistry::new(64));
    let mut publisher =
        Publisher::new(first.clone(), Arc::clone(&registry)).expect("base publishes");
    let conns = Arc::new(ConnTable::with_seed(CAPACITY, 1, Arc::clone(&registry), 7));
    conns.timeouts().apply(&first.timeouts);
    let stats = Arc::new(WorkerStats::new(registry.capacity()));
    let settings = PipelineSettings {
        expire_budget: CAPACITY,
        ..PipelineSettings::default()
    };
    let updates = publisher.subscribe();
    let mut pipeline = Pipeline::new(
        0,
        publisher.table(),
        Arc::clone(&conns),
        Arc::new(next_hops()),
        stats,
        settings,
    )
    .with_updates(updates);

    let mut now = Instant::from_secs(1);
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut rest = data;
    let flush = |pipeline: &mut Pipeline, batch: &mut Vec<Vec<u8>>, now: Instant| {
        let lens: Vec<usize> = batch
            .iter()
            .map(|b| b.len() - HEADROOM - TAILROOM)
            .collect();
        let mut frames: Vec<Frame<'_>> = batch
            .iter_mut()
            .zip(&lens)
            .map(|(b, &len)| Frame::new(b, HEADROOM, len))
            .collect();
        let mut verdicts = vec![Verdict::Pass; frames.len()];
        pipeline.process_batch(now, &mut frames, &mut verdicts);
        for (f, v) in frames.iter().zip(&verdicts) {
            if *v == Verdict::Transmit {
                assert_valid(f.data());
            }
        }
        drop(frames);
        batch.clear();
        // Held fragments the batch released: checked like every frame sent.
        while pipeline.has_output() {
            let mut buf = vec![0u8; HEADROOM + 2048 + TAILROOM];
            let Some((f, v)) = pipeline.emit(now, &mut buf) else {
                break;
            };
            if v == Verdict::Transmit {
                assert_valid(f.data());
            }
        }
        pipeline.between_batches(now);
    };
    let framed = |bytes: &[u8]| {
        let mut b = vec![0u8; HEADROOM + bytes.len() + TAILROOM];
        b[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
        b
    };
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 4 {
            0 => {
                let Some((args, tail)) = rest.split_first_chunk::<5>() else {
                    break;
                };
                rest = tail;
                batch.push(framed(&segment(*args)));
            }
            1 => {
                let Some((&len, tail)) = rest.split_first() else {
                    break;
                };
                let len = usize::from(len).min(tail.len());
                batch.push(framed(&tail[..len]));
                rest = &tail[len..];
            }
            2 => {
                let Some((&step, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                flush(&mut pipeline, &mut batch, now);
                now =
                    now + std::time::Duration::from_millis(u64::from(step) * u64::from(step) * 10);
                pipeline.between_batches(now);
            }
            _ => {
                let Some((&pick, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                flush(&mut pipeline, &mut batch, now);
                let text = CONFIGS[usize::from(pick) % CONFIGS.len()];
                let next = config::parse(text, Path::new("fuzz.toml")).expect("fuzz configs parse");
                conns.timeouts().apply(&next.timeouts);
                if publisher.replace(next).is_ok() {
                    pipeline.between_batches(now);
                    publisher.reclaim();
                }
            }
        }
        if batch.len() == BATCH {
            flush(&mut pipeline, &mut batch, now);
        }
        assert_counters_sane(&registry);
    }
    flush(&mut pipeline, &mut batch, now);
    // Past every timeout (persistence, TCP's 15 minutes, sync'd timeouts up to 31 days).
    for _ in 0..3 {
        now = now + std::time::Duration::from_secs(86_400 * 32);
        pipeline.between_batches(now);
    }
    assert_eq!(
        conns.len(),
        0,
        "connections left after every timeout passed"
    );
    crate::settle::assert_counters_at_zero(&registry, "connection");
}
