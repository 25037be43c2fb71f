//! Fragments through the whole pipeline: built by splitting a datagram as a sender's IP
//! layer does, and checked by reassembling what leaves.

use std::sync::Arc;

use super::super::tests::pipeline_of;
use super::*;
use crate::conn::ConnTable;
use crate::datapath::PacketProcessor;
use crate::wire::testkit::Spec;
use crate::wire::{ipv4, parse_frame};

const ETH: usize = 14;

/// A DR service with two real servers (rr), and a NAT one, both UDP.
const CONFIG: &str = "[director]\nconn_capacity = 1000\n\n\
    [[service]]\nprotocol = \"udp\"\naddress = \"192.0.2.100\"\nport = 53\nscheduler = \"rr\"\n\
    [[service.real]]\naddress = \"10.0.0.11\"\nport = 53\nweight = 1\nmethod = \"dr\"\n\
    [[service.real]]\naddress = \"10.0.0.12\"\nport = 53\nweight = 1\nmethod = \"dr\"\n\
    [[service]]\nprotocol = \"udp\"\naddress = \"192.0.2.101\"\nport = 53\nscheduler = \"rr\"\n\
    [[service.real]]\naddress = \"10.0.0.13\"\nport = 5353\nweight = 1\nmethod = \"nat\"\n\
    [[service]]\nprotocol = \"udp\"\naddress = \"192.0.2.102\"\nport = 53\nscheduler = \"rr\"\n\
    [[service.real]]\naddress = \"10.0.0.12\"\nport = 53\nweight = 1\nmethod = \"tun\"\n\
    [[service]]\nprotocol = \"tcp\"\naddress = \"192.0.2.101\"\nport = 80\nscheduler = \"rr\"\n\
    [[service.real]]\naddress = \"10.0.0.13\"\nport = 8080\nweight = 1\nmethod = \"nat\"\n";

fn pipeline() -> (Pipeline, Arc<ConnTable>) {
    pipeline_of(CONFIG, 1000)
}

/// A UDP datagram from `sport` to `dst`:53 with `len` payload bytes, as one frame.
fn datagram(src: &str, dst: &str, sport: u16, len: usize) -> Vec<u8> {
    let mut s = Spec::udp(src, dst, sport, 53);
    s.df = false;
    s.payload = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    s.frame()
}

/// `frame` (an unfragmented IPv4 or IPv6 packet behind a 14-byte Ethernet header) split as
/// an IP layer does: fragments of at most `chunk` payload bytes (a multiple of 8), IP ID
/// `id`.
fn fragments(frame: &[u8], chunk: usize, id: u32) -> Vec<Vec<u8>> {
    let v6 = frame[ETH] >> 4 == 6;
    let hlen = if v6 {
        40
    } else {
        usize::from(frame[ETH] & 0xf) * 4
    };
    let (head, payload) = frame.split_at(ETH + hlen);
    let mut out = Vec::new();
    for (n, piece) in payload.chunks(chunk).enumerate() {
        let offset = n * chunk;
        let more = offset + piece.len() < payload.len();
        let mut f = head.to_vec();
        if v6 {
            let next = f[ETH + 6];
            f[ETH + 6] = ip_proto::IPV6_FRAGMENT;
            let plen = (8 + piece.len()) as u16;
            f[ETH + 4..ETH + 6].copy_from_slice(&plen.to_be_bytes());
            let off = offset as u16 | u16::from(more);
            f.extend_from_slice(&[next, 0]);
            f.extend_from_slice(&off.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        } else {
            let total = (hlen + piece.len()) as u16;
            f[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
            f[ETH + 4..ETH + 6].copy_from_slice(&(id as u16).to_be_bytes());
            let flags = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
            f[ETH + 6..ETH + 8].copy_from_slice(&flags.to_be_bytes());
            ipv4::Packet::new_unchecked(&mut f[ETH..]).fill_checksum();
        }
        f.extend_from_slice(piece);
        out.push(f);
    }
    out
}

/// Runs `frame` through the pipeline; the verdict and the frame as it left.
fn run(p: &mut Pipeline, now: Instant, frame: &[u8]) -> (Verdict, Vec<u8>) {
    // Headroom in front, as in UMEM (a tunnel header would go there).
    let mut buf = vec![0; 128];
    buf.extend_from_slice(frame);
    buf.resize(frame.len() + 256, 0);
    let mut f = Frame::new(&mut buf, 128, frame.len());
    let v = p.process(now, &mut f);
    (v, f.data().to_vec())
}

/// The last byte of a frame's destination MAC: which real server (0x11-0x13) it went to.
fn to(frame: &[u8]) -> u8 {
    frame[5]
}

fn ones(data: &[u8]) -> u32 {
    let mut s: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

/// Reassembles IPv4 fragments (in any order) and checks the UDP checksum of the datagram.
fn assert_reassembles_v4(frags: &[Vec<u8>]) -> Vec<u8> {
    let mut parts: Vec<(usize, &[u8])> = frags
        .iter()
        .map(|f| {
            let p = ipv4::Packet::new_checked(&f[ETH..]).unwrap();
            assert!(p.verify_checksum(), "IPv4 header checksum");
            let off = usize::from(p.frag_offset());
            (
                off,
                &f[ETH + p.header_len()..ETH + usize::from(p.total_len())],
            )
        })
        .collect();
    parts.sort_by_key(|(o, _)| *o);
    let mut udp = Vec::new();
    for (off, data) in parts {
        assert_eq!(off, udp.len(), "fragments contiguous");
        udp.extend_from_slice(data);
    }
    let first = &frags[0][ETH..];
    let mut pseudo = first[12..20].to_vec();
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&udp);
    assert_eq!(
        ones(&pseudo),
        0xffff,
        "UDP checksum of the reassembled datagram"
    );
    udp
}

const T: Instant = Instant::from_secs(100);

#[test]
fn later_fragments_follow_the_first_in_dr() {
    let (mut p, _) = pipeline();
    let a = fragments(
        &datagram("198.51.100.7", "192.0.2.100", 4000, 4000),
        1480,
        1,
    );
    let b = fragments(
        &datagram("198.51.100.7", "192.0.2.100", 4001, 4000),
        1480,
        2,
    );
    assert_eq!(a.len(), 3);
    // Interleaved: each datagram's fragments follow its own first fragment (rr: .11, .12).
    let mut went = Vec::new();
    for f in [&a[0], &b[0], &a[1], &b[1], &b[2], &a[2]] {
        let (v, out) = run(&mut p, T, f);
        assert_eq!(v, Verdict::Transmit);
        // DR changes only the MACs and the TTL (with the header checksum).
        assert_eq!(out[ETH + 20..], f[ETH + 20..]);
        assert_eq!(out[ETH + 8], 63);
        went.push(to(&out));
    }
    assert_eq!(went, [0x11, 0x12, 0x11, 0x12, 0x12, 0x11]);
    assert_eq!(p.stats.fragments.get(), 6);
    // Both datagrams complete: their entries are freed.
    assert_eq!(p.frags.live(T), 0);
}

#[test]
fn nat_rewrites_every_fragment_and_the_checksum_once() {
    let (mut p, _) = pipeline();
    let whole = datagram("198.51.100.7", "192.0.2.101", 4000, 3000);
    let frags = fragments(&whole, 1232, 9);
    let mut out = Vec::new();
    for f in &frags {
        let (v, o) = run(&mut p, T, f);
        assert_eq!(v, Verdict::Transmit);
        assert_eq!(to(&o), 0x13);
        let ip = parse_frame(&o).unwrap().ip.unwrap();
        assert_eq!(ip.dst, "10.0.0.13".parse::<IpAddr>().unwrap());
        assert_eq!(ip.ttl, 63);
        out.push(o);
    }
    let udp = assert_reassembles_v4(&out);
    // The port changed in the first fragment only; the data is untouched.
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 5353);
    assert_eq!(udp[8..], whole[ETH + 20 + 8..]);
    // The input's checksum verified too (the test builds what it checks).
    assert_reassembles_v4(&frags);
}

#[test]
fn tun_encapsulates_fragments_that_fit_and_drops_those_that_do_not() {
    let (mut p, _) = pipeline();
    // 600-byte fragments leave room for the 20-byte outer header.
    let whole = datagram("198.51.100.7", "192.0.2.102", 4000, 1500);
    for f in fragments(&whole, 600, 21) {
        let (v, out) = run(&mut p, T, &f);
        assert_eq!(v, Verdict::Transmit);
        let outer = parse_frame(&out).unwrap().ip.unwrap();
        assert_eq!(outer.protocol, ip_proto::IPIP);
        assert_eq!(outer.dst, "10.0.0.12".parse::<IpAddr>().unwrap());
        // The inner fragment carries the client's bytes (its TTL decremented).
        assert_eq!(out[ETH + 20 + 20..], f[ETH + 20..]);
    }
    // A full-size fragment has no room for the outer header and no DF: the kernel would
    // fragment the outer packet; fastlb drops it (too_big).
    let f = fragments(
        &datagram("198.51.100.7", "192.0.2.102", 4001, 4000),
        1480,
        22,
    );
    assert_eq!(run(&mut p, T, &f[0]).0, Verdict::Drop(DropReason::TooBig));
}

/// What the pipeline emits of its own (released fragments), each with its verdict.
fn emitted(p: &mut Pipeline, now: Instant) -> Vec<(Verdict, Vec<u8>)> {
    let mut out = Vec::new();
    while p.has_output() {
        let mut buf = vec![0; 2048];
        let (f, v) = p.emit(now, &mut buf).expect("has_output promised a frame");
        out.push((v, f.data().to_vec()));
    }
    out
}

#[test]
fn a_fragment_before_its_first_is_held_and_follows_it() {
    let (mut p, _) = pipeline();
    // Two datagrams, so that rr would send a lone fragment elsewhere than its first.
    let a = fragments(
        &datagram("198.51.100.7", "192.0.2.100", 4000, 4000),
        1480,
        3,
    );
    let b = fragments(
        &datagram("198.51.100.7", "192.0.2.100", 4001, 4000),
        1480,
        30,
    );
    assert_eq!(run(&mut p, T, &b[0]).0, Verdict::Transmit);
    // The last fragment first: held, nothing to send yet.
    assert_eq!(run(&mut p, T, &a[2]).0, Verdict::Held);
    assert!(!p.has_output());
    let (v, first) = run(&mut p, T, &a[0]);
    assert_eq!(v, Verdict::Transmit);
    // The first fragment released it: it goes the same way, unchanged but for DR's MACs
    // and TTL.
    let out = emitted(&mut p, T);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Verdict::Transmit);
    assert_eq!(to(&out[0].1), to(&first));
    assert_eq!(out[0].1[ETH + 20..], a[2][ETH + 20..]);
    assert_eq!(out[0].1[ETH + 8], 63);
    let (v, mid) = run(&mut p, T, &a[1]);
    assert_eq!((v, to(&mid)), (Verdict::Transmit, to(&first)));
    // The datagram's bytes all went: its entry is freed; the pool is empty.
    assert_eq!(p.frags.live(T), 1, "only b's entry is left");
    assert_eq!(p.held.in_use(), 0);
    let s = p.stats.counters();
    assert_eq!(
        (
            s.fragments,
            s.fragments_held,
            s.fragments_released,
            s.rx,
            s.tx
        ),
        (4, 1, 1, 4, 4)
    );
}

#[test]
fn nat_rewrites_held_fragments_like_the_others() {
    let (mut p, _) = pipeline();
    let whole = datagram("198.51.100.7", "192.0.2.101", 4000, 3000);
    let frags = fragments(&whole, 1232, 19);
    assert_eq!(frags.len(), 3);
    let mut out = Vec::new();
    // Last, first (which releases the last), middle.
    assert_eq!(run(&mut p, T, &frags[2]).0, Verdict::Held);
    for f in [&frags[0], &frags[1]] {
        let (v, o) = run(&mut p, T, f);
        assert_eq!(v, Verdict::Transmit);
        out.push(o);
        for (v, o) in emitted(&mut p, T) {
            assert_eq!(v, Verdict::Transmit);
            out.push(o);
        }
    }
    assert_eq!(out.len(), 3);
    for o in &out {
        assert_eq!(to(o), 0x13);
        let ip = parse_frame(o).unwrap().ip.unwrap();
        assert_eq!(ip.dst, "10.0.0.13".parse::<IpAddr>().unwrap());
    }
    let udp = assert_reassembles_v4(&out);
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 5353);
    assert_eq!(udp[8..], whole[ETH + 20 + 8..]);
    assert_eq!(p.frags.live(T), 0);
}

#[test]
fn without_the_first_nothing_goes_and_the_held_expire() {
    let (mut p, conns) = pipeline();
    let f = fragments(
        &datagram("198.51.100.7", "192.0.2.100", 4000, 4000),
        1480,
        4,
    );
    for g in &f[1..] {
        assert_eq!(run(&mut p, T, g).0, Verdict::Held);
    }
    assert_eq!(conns.len(), 0);
    p.between_batches(T + hold::HOLD_TIMEOUT - Duration::from_millis(1));
    assert_eq!(p.held.in_use(), 2, "not yet");
    p.between_batches(T + hold::HOLD_TIMEOUT);
    assert_eq!(p.held.in_use(), 0);
    assert!(!p.has_output());
    let s = p.stats.counters();
    assert_eq!(
        (s.fragments, s.fragments_held, s.fragment_hold_expired),
        (0, 2, 2)
    );
    // Every received frame is accounted for once it expired.
    assert_eq!(s.dropped(DropReason::FragmentNoFirst), 2);
    assert_eq!(s.rx, s.tx + s.passed + s.drops.iter().sum::<u64>());
    // The first fragment coming now is forwarded alone.
    assert_eq!(
        run(&mut p, T + hold::HOLD_TIMEOUT, &f[0]).0,
        Verdict::Transmit
    );
    assert!(!p.has_output());
}

#[test]
fn a_full_hold_pool_drops_and_counts() {
    let (mut p, _) = pipeline();
    let whole = datagram("198.51.100.7", "192.0.2.100", 4000, 2000);
    for id in 0..hold::HOLD_FRAMES as u32 {
        let later = &fragments(&whole, 1480, id)[1];
        assert_eq!(run(&mut p, T, later).0, Verdict::Held);
    }
    let later = &fragments(&whole, 1480, 1000)[1];
    assert_eq!(
        run(&mut p, T, later).0,
        Verdict::Drop(DropReason::FragmentNoFirst)
    );
    assert_eq!(p.stats.fragment_hold_full.get(), 1);
    // A first fragment releases its own held fragment only, and frees a buffer.
    let first = &fragments(&whole, 1480, 5)[0];
    assert_eq!(run(&mut p, T, first).0, Verdict::Transmit);
    assert_eq!(emitted(&mut p, T).len(), 1);
    assert_eq!(run(&mut p, T, later).0, Verdict::Held);
}

#[test]
fn an_entry_expires_and_is_counted() {
    let (mut p, _) = pipeline();
    let f = fragments(
        &datagram("198.51.100.7", "192.0.2.100", 4000, 4000),
        1480,
        5,
    );
    assert_eq!(run(&mut p, T, &f[0]).0, Verdict::Transmit);
    let late = T + FRAG_TIMEOUT;
    // The entry is gone: the fragment waits for a first fragment that will not come.
    assert_eq!(run(&mut p, late, &f[1]).0, Verdict::Held);
    assert_eq!(p.stats.fragment_timeouts.get(), 1);
}

#[test]
fn a_full_table_refuses_first_fragments() {
    let (mut p, _) = pipeline();
    let whole = datagram("198.51.100.7", "192.0.2.100", 4000, 2000);
    let n = FRAG_SLOTS + 1000;
    let mut full = 0;
    for id in 0..n as u32 {
        let first = &fragments(&whole, 1480, id)[0];
        match run(&mut p, T, first).0 {
            Verdict::Transmit => {}
            Verdict::Drop(DropReason::FragmentTableFull) => full += 1,
            v => panic!("{v:?}"),
        }
    }
    assert!(full >= n - FRAG_SLOTS, "{full} refused");
    assert_eq!(p.frags.live(T), n - full);
    assert_eq!(
        p.stats.drops[DropReason::FragmentTableFull as usize].get(),
        full as u64
    );
    // Once they expire the slots serve again.
    let later = T + FRAG_TIMEOUT;
    let first = &fragments(&whole, 1480, 7)[0];
    assert_eq!(run(&mut p, later, first).0, Verdict::Transmit);
}

#[test]
fn ipv6_fragments_follow_the_first() {
    let config = "[[service]]\nprotocol = \"udp\"\naddress = \"2001:db8::100\"\nport = 53\n\
        scheduler = \"rr\"\n[[service.real]]\naddress = \"2001:db8:1::11\"\nport = 53\n\
        method = \"dr\"\n";
    let (mut p, _) = pipeline_of(config, 1000);
    let whole = datagram("2001:db8:ff::7", "2001:db8::100", 4000, 3000);
    let f = fragments(&whole, 1448, 0x1234_5678);
    assert_eq!(f.len(), 3);
    for g in &f {
        let (v, out) = run(&mut p, T, g);
        assert_eq!(v, Verdict::Transmit);
        assert_eq!(to(&out), 0x11);
        assert_eq!(out[ETH + 40..], g[ETH + 40..]);
    }
    assert_eq!(p.frags.live(T), 0);
    // Another datagram's later fragment does not match: it waits for its own first one,
    // and follows it when it comes.
    let other = fragments(&whole, 1448, 1);
    assert_eq!(run(&mut p, T, &other[2]).0, Verdict::Held);
    assert_eq!(run(&mut p, T, &other[0]).0, Verdict::Transmit);
    let out = emitted(&mut p, T);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, to(&out[0].1)), (Verdict::Transmit, 0x11));
    assert_eq!(out[0].1[ETH + 40..], other[2][ETH + 40..]);
}

#[test]
fn tcp_at_offset_8_and_tiny_first_fragments_are_refused() {
    let (mut p, _) = pipeline();
    let mut s = Spec::tcp("198.51.100.7", "192.0.2.101", 4000, 80);
    s.df = false;
    s.payload = vec![1; 100];
    let f = fragments(&s.frame(), 8, 11);
    // The first 8 bytes cannot hold the TCP header; the second sits at offset 8.
    assert_eq!(run(&mut p, T, &f[0]).0, Verdict::Drop(DropReason::Fragment));
    assert_eq!(run(&mut p, T, &f[1]).0, Verdict::Drop(DropReason::Fragment));
    // A TCP SYN in two fragments, the first holding the header, is followed.
    let f = fragments(&s.frame(), 64, 12);
    for g in &f {
        assert_eq!(run(&mut p, T, g).0, Verdict::Transmit);
    }
}

#[test]
fn fragments_to_other_addresses_are_the_kernels() {
    let (mut p, _) = pipeline();
    let f = fragments(&datagram("198.51.100.7", "192.0.2.1", 4000, 4000), 1480, 6);
    for g in &f {
        assert_eq!(run(&mut p, T, g).0, Verdict::Pass);
    }
}
