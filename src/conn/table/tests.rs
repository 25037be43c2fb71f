use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::conn::state::TcpFlags as F;
use crate::conn::state::TcpState;
use crate::service::{DestId, ForwardMethod, Protocol};
use crate::time::Instant;

const SYN: Option<F> = Some(F::SYN);
const ACK: Option<F> = Some(F::ACK);
const SYN_ACK: Option<F> = Some(F(F::SYN.0 | F::ACK.0));
const FIN_ACK: Option<F> = Some(F(F::FIN.0 | F::ACK.0));

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn t(secs: u64) -> Instant {
    Instant::from_secs(secs)
}

fn table(cap: usize, workers: usize) -> ConnTable {
    ConnTable::with_seed(cap, workers, Arc::new(DestRegistry::new(16)), 7)
}

fn conn(method: ForwardMethod, client: &str, cport: u16, dest: u32) -> NewConn {
    NewConn {
        protocol: Protocol::Tcp,
        client: ip(client),
        cport,
        vaddr: ip("10.0.0.100"),
        vport: 80,
        daddr: ip(&format!("192.168.1.{}", dest + 1)),
        dport: 8080,
        method,
        dest: DestId(dest),
        flags: SYN,
        template: None,
    }
}

fn fwd(n: &NewConn) -> FlowKey {
    FlowKey {
        protocol: n.protocol,
        src: n.client,
        sport: n.cport,
        dst: n.vaddr,
        dport: n.vport,
    }
}

fn rev(n: &NewConn) -> FlowKey {
    FlowKey {
        protocol: n.protocol,
        src: n.daddr,
        sport: n.dport,
        dst: n.client,
        dport: n.cport,
    }
}

fn counts(tb: &ConnTable, d: u32) -> (u32, u32, u32) {
    let c = tb.registry().get(DestId(d));
    (c.active(), c.inactive(), c.persistent())
}

/// What a table allocates per entry, as `docs/performance.md` ("Memory per connection")
/// counts it: a 64-byte entry, the index (room for two keys per entry in 64-byte buckets of
/// seven cells at most half full: 4 x capacity / 7 buckets, rounded up to a whole bucket
/// and nothing more, 36.6 bytes an entry at any capacity), and a 48-byte side entry for a
/// quarter of the entries (IPv6 addresses).
#[test]
fn footprint_is_entries_plus_index() {
    assert_eq!(std::mem::size_of::<Slot>(), 64);
    assert_eq!(std::mem::align_of::<Slot>(), 64);
    assert_eq!(std::mem::size_of::<Side>(), 48);
    let pool = std::mem::size_of::<SlotPool>();
    // Powers of two and not: 1.5 Ki entries get 878 buckets (they got 1 Ki when the count
    // was rounded up to a power of two, 43 bytes of index an entry instead of 36.6).
    for cap in [1024, 1536, 1 << 16, 1_000_003] {
        let tb = table(cap, 2);
        let buckets = (cap * 4).div_ceil(7);
        assert_eq!(tb.index.buckets(), buckets, "capacity {cap}");
        assert_eq!(tb.v6_capacity(), cap.div_ceil(4));
        assert_eq!(tb.side_bytes(), cap.div_ceil(4) * 48);
        assert_eq!(
            tb.footprint(),
            cap * 64 + buckets * 64 + cap.div_ceil(4) * 48 + 2 * pool,
            "capacity {cap}"
        );
        // 64 + 36.6 = 100.6 bytes an entry (the side entries apart), within a bucket.
        let index = tb.index.bytes() as f64 / cap as f64;
        assert!((36.57..36.64).contains(&index), "capacity {cap}: {index}");
    }
    assert_eq!(table(1536, 1).index.buckets(), 878);
    // No room for IPv6 at all: nothing but the entries and the index.
    let tb = ConnTable::with_v6_capacity(1024, 0, 1, Arc::new(DestRegistry::new(2)));
    assert_eq!(tb.footprint(), 1024 * 64 + 586 * 64 + pool);
}

#[test]
fn nat_connection_is_found_from_both_sides() {
    let tb = table(64, 1);
    let n = conn(ForwardMethod::Masquerade, "1.2.3.4", 40000, 0);
    let hit = tb.insert(0, t(0), n).unwrap();
    assert_eq!(hit.info.state, TcpState::SynRecv);
    let o = tb.lookup(&fwd(&n)).unwrap();
    assert_eq!((o.id, o.dir), (hit.id, Direction::Original));
    assert_eq!(o.info.client, n.client);
    assert_eq!(o.info.daddr, n.daddr);
    assert_eq!(
        (o.info.cport, o.info.vport, o.info.dport),
        (40000, 80, 8080)
    );
    assert_eq!(o.info.method, ForwardMethod::Masquerade);
    let r = tb.lookup(&rev(&n)).unwrap();
    assert_eq!((r.id, r.dir), (hit.id, Direction::Reply));
    // Neither a different port nor UDP matches.
    let mut other = fwd(&n);
    other.sport = 40001;
    assert!(tb.lookup(&other).is_none());
    other = fwd(&n);
    other.protocol = Protocol::Udp;
    assert!(tb.lookup(&other).is_none());
    assert_eq!(tb.len(), 1);
    // SYN_RECV is active in IPVS (tcp_state_active).
    assert_eq!(counts(&tb, 0), (1, 0, 0));
}

#[test]
fn nat_handshake_moves_counts_and_expiry_gives_them_back() {
    let tb = table(64, 1);
    let n = conn(ForwardMethod::Masquerade, "1.2.3.4", 40000, 3);
    let id = tb.insert(0, t(0), n).unwrap().id;
    // SYN_RECV and ESTABLISHED are both active; FIN_WAIT is not.
    tb.on_packet(id, Direction::Reply, SYN_ACK, t(1));
    assert_eq!(counts(&tb, 3), (1, 0, 0));
    tb.on_packet(id, Direction::Original, ACK, t(1));
    assert_eq!(counts(&tb, 3), (1, 0, 0));
    assert_eq!(
        tb.lookup(&fwd(&n)).unwrap().info.state,
        TcpState::Established
    );
    // Established lasts 900 s from the last packet.
    assert_eq!(tb.expire(0, t(900), 64), 0);
    assert_eq!(tb.expire(0, t(901), 64), 1);
    assert_eq!(counts(&tb, 3), (0, 0, 0));
    assert!(tb.lookup(&fwd(&n)).is_none());
    assert!(tb.lookup(&rev(&n)).is_none());
    assert!(tb.is_empty());
}

#[test]
fn close_sequence_ends_in_time_wait_and_inactive() {
    let tb = table(64, 1);
    let n = conn(ForwardMethod::Masquerade, "1.2.3.4", 1, 0);
    let id = tb.insert(0, t(0), n).unwrap().id;
    tb.on_packet(id, Direction::Reply, SYN_ACK, t(0));
    tb.on_packet(id, Direction::Original, ACK, t(0));
    tb.on_packet(id, Direction::Original, FIN_ACK, t(10));
    assert_eq!(counts(&tb, 0), (0, 1, 0));
    assert_eq!(tb.lookup(&fwd(&n)).unwrap().info.state, TcpState::CloseWait);
    tb.on_packet(id, Direction::Reply, FIN_ACK, t(10));
    tb.on_packet(id, Direction::Original, ACK, t(10));
    assert_eq!(tb.lookup(&fwd(&n)).unwrap().info.state, TcpState::TimeWait);
    // TIME_WAIT: 120 s.
    assert_eq!(tb.expire(0, t(129), 64), 0);
    assert_eq!(tb.expire(0, t(130), 64), 1);
    assert_eq!(counts(&tb, 0), (0, 0, 0));
}

#[test]
fn rst_closes_and_close_times_out_after_ten_seconds() {
    let tb = table(64, 1);
    let n = conn(ForwardMethod::Masquerade, "1.2.3.4", 1, 0);
    let id = tb.insert(0, t(0), n).unwrap().id;
    tb.on_packet(id, Direction::Reply, SYN_ACK, t(0));
    tb.on_packet(id, Direction::Original, ACK, t(0));
    tb.on_packet(id, Direction::Reply, Some(F::RST), t(5));
    assert_eq!(counts(&tb, 0), (0, 1, 0));
    assert_eq!(tb.expire(0, t(14), 64), 0);
    assert_eq!(tb.expire(0, t(15), 64), 1);
}

#[test]
fn dr_uses_input_only_and_has_no_reply_key() {
    let tb = table(64, 1);
    let n = conn(ForwardMethod::DirectRouting, "1.2.3.4", 1, 0);
    let id = tb.insert(0, t(0), n).unwrap().id;
    assert!(tb.lookup(&rev(&n)).is_none());
    tb.on_packet(id, Direction::Original, ACK, t(0));
    assert_eq!(counts(&tb, 0), (1, 0, 0));
    tb.on_packet(id, Direction::Original, FIN_ACK, t(0));
    // INPUT-ONLY: a client FIN in ESTABLISHED is FIN_WAIT (INPUT would say CLOSE_WAIT).
    assert_eq!(tb.lookup(&fwd(&n)).unwrap().info.state, TcpState::FinWait);
    assert_eq!(counts(&tb, 0), (0, 1, 0));
}

#[test]
fn udp_is_never_active_and_follows_the_udp_timeout() {
    let tb = table(64, 1);
    let mut n = conn(ForwardMethod::Masquerade, "1.2.3.4", 53, 1);
    n.protocol = Protocol::Udp;
    n.flags = None;
    let id = tb.insert(0, t(0), n).unwrap().id;
    assert_eq!(counts(&tb, 1), (0, 1, 0));
    assert_eq!(tb.lookup(&rev(&n)).unwrap().info.state_name(), "UDP");
    tb.timeouts().set_tcp_tcpfin_udp(0, 0, 10);
    // The old 300 s timer stands until the next packet.
    assert_eq!(tb.expire(0, t(100), 64), 0);
    tb.on_packet(id, Direction::Reply, None, t(100));
    assert_eq!(counts(&tb, 1), (0, 1, 0));
    assert_eq!(tb.expire(0, t(109), 64), 0);
    assert_eq!(tb.expire(0, t(110), 64), 1);
    assert_eq!(counts(&tb, 1), (0, 0, 0));
}

#[test]
fn ipv6_connections() {
    let tb = table(64, 2);
    let n = NewConn {
        vaddr: ip("2001:db8::100"),
        daddr: ip("2001:db8:1::5"),
        ..conn(ForwardMethod::Masquerade, "2001:db8:ffff::1", 5555, 2)
    };
    let id = tb.insert(1, t(0), n).unwrap().id;
    let r = tb.lookup(&rev(&n)).unwrap();
    assert_eq!((r.id, r.info.client, r.info.vaddr), (id, n.client, n.vaddr));
    // The IPv4-mapped form of an IPv4 address is a different flow.
    let v4 = NewConn {
        client: ip("1.2.3.4"),
        vaddr: ip("10.0.0.100"),
        daddr: ip("192.168.1.1"),
        ..n
    };
    tb.insert(1, t(0), v4).unwrap();
    let mapped = FlowKey {
        src: ip("::ffff:1.2.3.4"),
        dst: ip("::ffff:10.0.0.100"),
        ..fwd(&v4)
    };
    assert!(tb.lookup(&mapped).is_none());
    assert!(tb.lookup(&fwd(&v4)).is_some());
}

/// IPv6 addresses live in side entries, a bounded number per worker: a worker whose share
/// is in use refuses a new IPv6 entry as a full table does (counted), IPv4 goes on, and the
/// side entries of expired or evicted entries are used again.
#[test]
fn ipv6_side_entries_are_bounded_and_reused() {
    let tb = ConnTable::with_v6_capacity(8, 4, 2, Arc::new(DestRegistry::new(8)));
    assert_eq!(tb.v6_capacity(), 4);
    let v6 = |i: u16| NewConn {
        vaddr: ip("2001:db8::100"),
        daddr: ip(&format!("2001:db8:1::{i}")),
        ..conn(
            ForwardMethod::Masquerade,
            &format!("2001:db8:ff::{i}"),
            i,
            1,
        )
    };
    // A NAT entry mixing families (IPv4 client, IPv6 real server) takes one too.
    let mixed = NewConn {
        daddr: ip("2001:db8:1::99"),
        ..conn(ForwardMethod::Masquerade, "1.2.3.4", 7, 2)
    };
    tb.insert(0, t(0), v6(1)).unwrap();
    tb.insert(0, t(0), mixed).unwrap();
    assert_eq!(tb.insert(0, t(0), v6(3)), Err(TableFull));
    assert_eq!(tb.stats().insert_failures, 1);
    assert_eq!(tb.len(), 2);
    // IPv4 is not affected; the other worker has its own share.
    tb.insert(0, t(0), conn(ForwardMethod::DirectRouting, "1.2.3.5", 8, 0))
        .unwrap();
    tb.insert(1, t(0), v6(4)).unwrap();
    tb.insert(1, t(0), v6(5)).unwrap();
    for i in [1, 4, 5] {
        let n = v6(i);
        let h = tb.lookup(&fwd(&n)).unwrap();
        assert_eq!(
            (h.info.client, h.info.vaddr, h.info.daddr),
            (n.client, n.vaddr, n.daddr)
        );
        let r = tb.lookup(&rev(&n)).unwrap();
        assert_eq!((r.dir, r.id), (Direction::Reply, h.id));
    }
    let m = tb.lookup(&fwd(&mixed)).unwrap();
    assert_eq!((m.info.client, m.info.daddr), (mixed.client, mixed.daddr));
    // Expired, their side entries take new addresses.
    assert_eq!(tb.expire(0, t(1000), 8), 3);
    assert_eq!(tb.expire(1, t(1000), 8), 2);
    for i in 10..12 {
        tb.insert(0, t(1000), v6(i)).unwrap();
        let n = v6(i);
        assert_eq!(tb.lookup(&fwd(&n)).unwrap().info.daddr, n.daddr);
    }
    assert!(tb.lookup(&fwd(&v6(1))).is_none());
    assert_eq!(tb.stats().insert_failures, 1);
    // Eviction gives the side entry back too: one worker, two slots, one side entry.
    let tb = ConnTable::with_v6_capacity(2, 1, 1, Arc::new(DestRegistry::new(8)));
    tb.insert(0, t(0), v6(1)).unwrap();
    tb.insert(0, t(0), conn(ForwardMethod::DirectRouting, "1.2.3.5", 8, 0))
        .unwrap();
    let h = tb.insert(0, t(0), v6(2)).unwrap();
    assert_eq!(tb.stats().evictions, 1);
    assert!(tb.lookup(&fwd(&v6(1))).is_none());
    assert_eq!(tb.lookup(&fwd(&v6(2))).unwrap().id, h.id);
    assert_eq!(tb.lookup(&fwd(&v6(2))).unwrap().info.daddr, v6(2).daddr);
}

/// A reader racing the owner, which ends IPv6 entries and creates others in the same slots
/// and side entries, never sees one entry's addresses under another's key.
#[test]
fn side_entries_reused_under_a_reader_are_never_read_torn() {
    let tb = Arc::new(ConnTable::with_v6_capacity(
        4,
        2,
        1,
        Arc::new(DestRegistry::new(8)),
    ));
    let n = |i: u32| NewConn {
        vaddr: ip("2001:db8::100"),
        daddr: ip(&format!("2001:db8:1::{:x}", i % 4)),
        ..conn(
            ForwardMethod::Masquerade,
            &format!("2001:db8:ff::{:x}", i % 4),
            1,
            1,
        )
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (tb, stop) = (tb.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut hits = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..4 {
                    let c = n(i);
                    for (k, want) in [(fwd(&c), c.daddr), (rev(&c), c.daddr)] {
                        if let Some(h) = tb.lookup(&k) {
                            assert_eq!((h.info.client, h.info.daddr), (c.client, want));
                            assert_eq!(h.info.vaddr, c.vaddr);
                            hits += 1;
                        }
                    }
                }
            }
            hits
        })
    };
    for round in 0..20_000u32 {
        let a = tb.insert(0, t(0), n(round)).unwrap();
        let b = tb.insert(0, t(0), n(round + 1)).unwrap();
        tb.expire_now(a.id);
        tb.expire_now(b.id);
        assert_eq!(tb.expire(0, t(0), 4), 2);
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
}

#[test]
fn expire_now_hides_at_once_and_frees_at_next_expire() {
    let tb = table(64, 1);
    let n = conn(ForwardMethod::Masquerade, "1.2.3.4", 1, 0);
    let id = tb.insert(0, t(0), n).unwrap().id;
    assert!(tb.expire_now(id));
    assert!(!tb.expire_now(id));
    assert!(tb.lookup(&fwd(&n)).is_none());
    assert_eq!(counts(&tb, 0), (0, 0, 0));
    // Packets for the retired id change nothing.
    tb.on_packet(id, Direction::Original, ACK, t(0));
    assert_eq!(counts(&tb, 0), (0, 0, 0));
    assert_eq!(tb.len(), 1);
    assert_eq!(tb.expire(0, t(0), 64), 1);
    assert!(tb.is_empty());
    // The flow can come back as a new connection.
    assert!(tb.insert(0, t(1), n).is_ok());
    assert!(tb.lookup(&fwd(&n)).is_some());
}

#[test]
fn stale_ids_do_not_touch_a_reused_slot() {
    let tb = table(1, 1);
    let a = conn(ForwardMethod::Masquerade, "1.2.3.4", 1, 0);
    let old = tb.insert(0, t(0), a).unwrap().id;
    assert_eq!(tb.expire(0, t(60), 1), 1);
    let b = conn(ForwardMethod::Masquerade, "5.6.7.8", 2, 1);
    let new = tb.insert(0, t(60), b).unwrap().id;
    assert_ne!(old, new);
    tb.on_packet(old, Direction::Original, ACK, t(61));
    assert!(!tb.expire_now(old));
    assert_eq!(tb.lookup(&fwd(&b)).unwrap().info.state, TcpState::SynRecv);
    assert_eq!(counts(&tb, 1), (1, 0, 0));
}

#[test]
fn eviction_prefers_closing_then_handshake_then_udp_never_established() {
    let tb = table(4, 1);
    let est = |c| {
        let n = conn(ForwardMethod::Masquerade, "1.1.1.1", c, 0);
        let id = tb.insert(0, t(0), n).unwrap().id;
        tb.on_packet(id, Direction::Original, ACK, t(0));
        n
    };
    let e1 = est(1);
    let mut udp = conn(ForwardMethod::Masquerade, "2.2.2.2", 2, 1);
    udp.protocol = Protocol::Udp;
    udp.flags = None;
    tb.insert(0, t(0), udp).unwrap();
    let syn = conn(ForwardMethod::Masquerade, "3.3.3.3", 3, 2);
    tb.insert(0, t(0), syn).unwrap();
    let closing = conn(ForwardMethod::Masquerade, "4.4.4.4", 4, 3);
    let id = tb.insert(0, t(0), closing).unwrap().id;
    // (A client RST in SYN_RECV is ignored by the INPUT table; established first.)
    tb.on_packet(id, Direction::Original, ACK, t(0));
    tb.on_packet(id, Direction::Original, Some(F::RST), t(0));
    assert_eq!(tb.len(), 4);

    // Full: the CLOSE entry goes first although it is last in the window.
    let n1 = conn(ForwardMethod::Masquerade, "9.9.9.9", 1, 0);
    tb.insert(0, t(1), n1).unwrap();
    assert!(tb.lookup(&fwd(&closing)).is_none());
    assert_eq!(counts(&tb, 3), (0, 0, 0));
    // Then the oldest handshake (SYN_RECV from 3.3.3.3, before the new one at the hand).
    let n2 = conn(ForwardMethod::Masquerade, "9.9.9.9", 2, 0);
    tb.insert(0, t(1), n2).unwrap();
    assert!(tb.lookup(&fwd(&syn)).is_none());
    assert!(tb.lookup(&fwd(&n1)).is_some());
    // Then the other handshake, then UDP.
    let n3 = conn(ForwardMethod::Masquerade, "9.9.9.9", 3, 0);
    tb.insert(0, t(1), n3).unwrap();
    assert!(tb.lookup(&fwd(&udp)).is_some());
    assert_eq!(tb.stats().evictions, 3);
    assert!(tb.lookup(&fwd(&e1)).is_some());

    // Make everything established: nothing can go.
    for n in [n2, n3] {
        let id = tb.lookup(&fwd(&n)).unwrap().id;
        tb.on_packet(id, Direction::Original, ACK, t(1));
    }
    let n4 = conn(ForwardMethod::Masquerade, "9.9.9.9", 4, 0);
    tb.insert(0, t(2), n4).unwrap();
    assert!(tb.lookup(&fwd(&udp)).is_none());
    let id4 = tb.lookup(&fwd(&n4)).unwrap().id;
    tb.on_packet(id4, Direction::Original, ACK, t(2));
    let n5 = conn(ForwardMethod::Masquerade, "9.9.9.9", 5, 0);
    assert_eq!(tb.insert(0, t(3), n5), Err(TableFull));
    assert_eq!(tb.stats().insert_failures, 1);
    // An expired established connection may go, though.
    assert!(tb.insert(0, t(2000), n5).is_ok());
}

#[test]
fn workers_allocate_from_their_own_ranges() {
    let tb = table(4, 2);
    for c in 0..2 {
        tb.insert(0, t(0), conn(ForwardMethod::Masquerade, "1.1.1.1", c, 0))
            .unwrap();
    }
    // Worker 0's two slots are busy with established-free handshakes: it evicts its own.
    tb.insert(0, t(0), conn(ForwardMethod::Masquerade, "1.1.1.1", 9, 0))
        .unwrap();
    assert_eq!(tb.stats().evictions, 1);
    // Worker 1 still has both of its slots free.
    for c in 10..12 {
        tb.insert(1, t(0), conn(ForwardMethod::Masquerade, "1.1.1.1", c, 0))
            .unwrap();
    }
    assert_eq!(tb.stats().evictions, 1);
    assert_eq!(tb.len(), 4);
    // Worker 1 expires only its own.
    assert_eq!(tb.expire(1, t(1000), 100), 2);
    assert_eq!(tb.len(), 2);
}

#[test]
fn listing_shows_state_and_remaining_time() {
    let tb = table(8, 1);
    let n = conn(ForwardMethod::Masquerade, "1.2.3.4", 1, 0);
    tb.insert(0, t(0), n).unwrap();
    let mut seen = Vec::new();
    tb.for_each(t(15), |e| seen.push(*e));
    assert_eq!(seen.len(), 1);
    let e = seen[0];
    assert_eq!(
        (e.protocol_name(), e.state, e.template),
        ("TCP", "SYN_RECV", false)
    );
    assert_eq!(e.expires_in_ms, 45_000);
    assert_eq!(
        (e.client, e.cport, e.daddr, e.dport),
        (n.client, 1, n.daddr, 8080)
    );
}

#[test]
fn expiry_survives_clock_wrap_of_the_36_bit_millisecond_field() {
    let tb = table(8, 1);
    let n = conn(ForwardMethod::Masquerade, "1.2.3.4", 1, 0);
    // 10 s before the 36-bit millisecond counter wraps.
    let base = (1u64 << 36) - 10_000;
    let start = Instant::from_micros(base * 1000);
    tb.insert(0, start, n).unwrap();
    assert_eq!(tb.expire(0, start + Duration::from_secs(59), 8), 0);
    assert_eq!(tb.expire(0, start + Duration::from_secs(60), 8), 1);
}

#[test]
fn behaviour_does_not_depend_on_the_seed() {
    // The same operations on tables with different seeds give the same answers, the same
    // evictions and the same listing order.
    fn run(seed: u64) -> Vec<String> {
        let tb = ConnTable::with_seed(16, 1, Arc::new(DestRegistry::new(4)), seed);
        let mut log = Vec::new();
        for i in 0..64u16 {
            let n = conn(ForwardMethod::Masquerade, "1.1.1.1", i, u32::from(i % 4));
            let r = tb.insert(0, t(u64::from(i)), n);
            if let Ok(h) = r {
                if i % 3 == 0 {
                    tb.on_packet(h.id, Direction::Original, ACK, t(u64::from(i)));
                }
            }
            log.push(format!("{i}:{:?}", r.map(|h| h.info.state)));
            log.push(format!("expired {}", tb.expire(0, t(u64::from(i)), 4)));
        }
        tb.for_each(t(64), |e| log.push(format!("{}:{}", e.cport, e.state)));
        log
    }
    assert_eq!(run(1), run(0xdead_beef));
}

/// One operation of the oracle test.
#[derive(Clone, Debug)]
enum Op {
    Insert(u8, u8, bool),
    Lookup(u8, u8),
    Remove(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..6u8, 0..6u8, any::<bool>()).prop_map(|(c, p, nat)| Op::Insert(c, p, nat)),
        (0..6u8, 0..6u8).prop_map(|(c, p)| Op::Lookup(c, p)),
        (0..6u8, 0..6u8).prop_map(|(c, p)| Op::Remove(c, p)),
    ]
}

fn small(c: u8, p: u8, nat: bool) -> NewConn {
    let method = if nat {
        ForwardMethod::Masquerade
    } else {
        ForwardMethod::Tunnel
    };
    let mut n = conn(method, &format!("10.9.0.{c}"), u16::from(p), 0);
    n.daddr = ip(&format!("192.168.0.{}", c % 2));
    n
}

proptest! {
    /// The table against a HashMap, single-threaded, with an index small enough to
    /// overflow buckets and fill probe windows: 8 buckets (the least an index has) to 13,
    /// so that probe windows wrap past the last bucket.
    #[test]
    fn index_matches_a_hashmap(ops in proptest::collection::vec(op(), 1..200), buckets in 1usize..14) {
        let tb = ConnTable::with_index(24, 6, 1, Arc::new(DestRegistry::new(2)), 3, buckets);
        let mut oracle: HashMap<(u8, u8), (ConnId, NewConn)> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(c, p, nat) => {
                    if oracle.contains_key(&(c, p)) {
                        continue;
                    }
                    // Established entries are never evicted, so the oracle stays exact.
                    let n = small(c, p, nat);
                    match tb.insert(0, t(0), n) {
                        Ok(h) => {
                            tb.on_packet(h.id, Direction::Original, ACK, t(0));
                            oracle.insert((c, p), (h.id, n));
                        }
                        Err(TableFull) => {
                            prop_assert!(tb.lookup(&fwd(&n)).is_none());
                        }
                    }
                }
                Op::Lookup(c, p) => {
                    let n = small(c, p, true);
                    let got = tb.lookup(&fwd(&n)).map(|h| h.id);
                    prop_assert_eq!(got, oracle.get(&(c, p)).map(|e| e.0));
                    if let Some((id, n)) = oracle.get(&(c, p)) {
                        let r = tb.lookup(&rev(n));
                        if n.method == ForwardMethod::Masquerade {
                            // Another NAT entry may share this reply key only if it is the
                            // same client and port, which the oracle excludes.
                            prop_assert_eq!(r.map(|h| (h.id, h.dir)), Some((*id, Direction::Reply)));
                        } else {
                            prop_assert!(r.is_none_or(|h| h.id != *id));
                        }
                    }
                }
                Op::Remove(c, p) => {
                    if let Some((id, _)) = oracle.remove(&(c, p)) {
                        prop_assert!(tb.expire_now(id));
                        prop_assert_eq!(tb.expire(0, t(0), 24), 1);
                    }
                }
            }
            prop_assert_eq!(tb.len(), oracle.len());
            let cells: usize = oracle.values().map(|(_, n)| if n.method == ForwardMethod::Masquerade { 2 } else { 1 }).sum();
            prop_assert_eq!(tb.index.occupied(), cells);
            prop_assert_eq!(counts(&tb, 0), (oracle.len() as u32, 0, 0));
        }
    }
}

#[test]
fn concurrent_workers_balance_every_counter() {
    const WORKERS: usize = 4;
    const PER: u16 = 3000;
    let reg = Arc::new(DestRegistry::new(8));
    // Small enough that eviction runs too.
    let tb = Arc::new(ConnTable::with_seed(
        WORKERS * 1024,
        WORKERS,
        reg.clone(),
        11,
    ));
    let key = |w: usize, i: u16| {
        let mut n = conn(
            if i % 3 == 0 {
                ForwardMethod::DirectRouting
            } else {
                ForwardMethod::Masquerade
            },
            &format!("10.{w}.{}.{}", i >> 8, i & 0xff),
            1000 + i,
            u32::from(i % 8),
        );
        if i % 5 == 0 {
            n.protocol = Protocol::Udp;
            n.flags = None;
        }
        n
    };
    let threads: Vec<_> = (0..WORKERS)
        .map(|w| {
            let tb = tb.clone();
            std::thread::spawn(move || {
                let mut rng = 0x2545_f491_4f6c_dd1du64 ^ w as u64;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                for i in 0..PER {
                    let now = t(u64::from(i) / 20);
                    let n = key(w, i);
                    if tb.lookup(&fwd(&n)).is_none() {
                        let _ = tb.insert(w, now, n);
                    }
                    // Packets on other workers' connections, in both directions.
                    for _ in 0..4 {
                        let ow = (next() % WORKERS as u64) as usize;
                        let oi = (next() % u64::from(i + 1)) as u16;
                        let on = key(ow, oi);
                        let flags = [SYN, SYN_ACK, ACK, FIN_ACK, Some(F::RST), ACK, ACK]
                            [(next() % 7) as usize];
                        let k = if next() % 2 == 0 { fwd(&on) } else { rev(&on) };
                        if let Some(h) = tb.lookup(&k) {
                            assert_eq!(h.info.client, on.client);
                            assert_eq!(h.info.cport, on.cport);
                            let f = if on.protocol == Protocol::Udp {
                                None
                            } else {
                                flags
                            };
                            tb.on_packet(h.id, h.dir, f, now);
                            if next() % 97 == 0 {
                                tb.expire_now(h.id);
                            }
                        }
                    }
                    if i % 16 == 0 {
                        tb.expire(w, now, 64);
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    // Every live entry is reachable under its own key exactly once, and the counters match
    // the states the table holds.
    let mut active = [0u32; 8];
    let mut inactive = [0u32; 8];
    let mut live = 0;
    tb.for_each(t(1000), |e| {
        live += 1;
        if ["ESTABLISHED", "SYN_RECV", "SYN_SENT", "SYNACK"].contains(&e.state) {
            active[e.dest.0 as usize] += 1;
        } else {
            inactive[e.dest.0 as usize] += 1;
        }
        let k = FlowKey {
            protocol: Protocol::from_number(e.protocol).unwrap(),
            src: e.client,
            sport: e.cport,
            dst: e.vaddr,
            dport: e.vport,
        };
        let h = tb.lookup(&k).expect("live entry not indexed");
        assert_eq!(h.info.daddr, e.daddr);
    });
    for d in 0..8 {
        assert_eq!(
            reg.get(DestId(d)).active(),
            active[d as usize],
            "dest {d} active"
        );
        assert_eq!(
            reg.get(DestId(d)).inactive(),
            inactive[d as usize],
            "dest {d} inactive"
        );
    }
    assert!(live > 0);
    eprintln!("stress: {live} live, {:?}", tb.stats());
    // Drain: everything expires, every counter returns to zero, every slot is free again.
    let far = t(1_000_000);
    for w in 0..WORKERS {
        tb.expire(w, far, usize::MAX);
    }
    assert_eq!(tb.len(), 0);
    assert_eq!(tb.index.occupied(), 0);
    for d in 0..8 {
        let c = reg.get(DestId(d));
        assert_eq!((c.active(), c.inactive()), (0, 0), "dest {d}");
    }
    // And the whole capacity can be filled again.
    for w in 0..WORKERS {
        for i in 0..1024u16 {
            let mut n = key(w, i);
            n.cport = 60000 - i;
            tb.insert(w, far, n).unwrap();
        }
    }
    assert_eq!(tb.len(), WORKERS * 1024);
}

/// Rough per-operation cost; `cargo test --release --lib conn::table::tests::bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_lookup_and_insert() {
    for (cap, n) in [(1usize << 14, 8_000u32), (1 << 20, 500_000)] {
        let tb = ConnTable::new(cap, 1, Arc::new(DestRegistry::new(16)));
        let mk = |i: u32| NewConn {
            client: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
            ..conn(
                ForwardMethod::Masquerade,
                "1.1.1.1",
                (i % 60000) as u16,
                i % 16,
            )
        };
        let news: Vec<NewConn> = (0..n).map(mk).collect();
        let start = std::time::Instant::now();
        for c in &news {
            tb.insert(0, t(0), *c).unwrap();
        }
        let ins = start.elapsed();
        let keys: Vec<FlowKey> = (0..n)
            .map(|i| fwd(&news[(i.wrapping_mul(2_654_435_761) % n) as usize]))
            .collect();
        let rounds = 4_000_000 / n;
        let start = std::time::Instant::now();
        let mut found = 0;
        for _ in 0..rounds {
            for k in &keys {
                found += usize::from(tb.lookup(k).is_some());
            }
        }
        let look = start.elapsed();
        assert_eq!(found, (n * rounds) as usize);
        let start = std::time::Instant::now();
        for r in 0..rounds {
            for k in &keys {
                let h = tb.lookup(k).unwrap();
                tb.on_packet(h.id, h.dir, ACK, t(u64::from(r)));
            }
        }
        let upd = start.elapsed();
        let ops = f64::from(n * rounds);
        println!(
            "capacity {cap}, {n} live: insert {:.0} ns, lookup {:.0} ns, lookup+on_packet {:.0} ns",
            ins.as_nanos() as f64 / f64::from(n),
            look.as_nanos() as f64 / ops,
            upd.as_nanos() as f64 / ops,
        );
    }
}

#[test]
fn templates_racing_attach_and_expiry_are_never_freed_under_a_connection() {
    // Worker 0 creates templates that are due at once and expires them continuously;
    // worker 1 attaches connections to them as fast as it can. A template freed while a
    // connection points at it would leave a wrapped control count on a reused slot and
    // an entry that never drains.
    let reg = Arc::new(DestRegistry::new(2));
    let tb = Arc::new(ConnTable::with_seed(512, 2, reg.clone(), 9));
    let shared = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attached = Arc::new(AtomicU64::new(0));
    let owner = {
        let (tb, shared, done, attached) =
            (tb.clone(), shared.clone(), done.clone(), attached.clone());
        std::thread::spawn(move || {
            let mut k = 0u32;
            // Until enough connections attached (bounded, should the other thread starve).
            while attached.load(Ordering::Relaxed) < 20_000 && k < 2_000_000 {
                k += 1;
                let now = Instant::from_micros(u64::from(k) * 1000);
                // Expire first, then publish a template due now: it lives until the next
                // round's expiry unless a connection attaches in between.
                tb.expire(0, now, 256);
                let key = TemplateKey {
                    protocol: 6,
                    client: IpAddr::V4(Ipv4Addr::from(k)),
                    vaddr: ip("10.0.0.100"),
                    vport: 80,
                };
                if let Ok(id) = tb.insert_template(
                    0,
                    now,
                    &key,
                    ip("192.168.1.1"),
                    80,
                    ForwardMethod::Masquerade,
                    DestId(1),
                    0,
                ) {
                    shared.store(id.pack(), Ordering::Release);
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut i = 0u32;
    while !done.load(Ordering::Acquire) {
        i += 1;
        let template = ConnId::unpack(shared.load(Ordering::Acquire));
        let mut n = conn(
            ForwardMethod::DirectRouting,
            "1.1.1.1",
            (i % 60000) as u16,
            0,
        );
        n.template = template;
        if let Ok(h) = tb.insert(1, t(0), n) {
            if tb.slots[h.id.slot as usize]
                .template
                .load(Ordering::Relaxed)
                != 0
            {
                attached.fetch_add(1, Ordering::Relaxed);
            }
        }
        if i % 8 == 0 {
            tb.expire(1, t(10_000), 256);
        }
    }
    owner.join().unwrap();
    assert!(attached.load(Ordering::Relaxed) > 0);
    // Drain: connections first, then templates (pushed back 60 s at most twice).
    for secs in [100_000, 100_100, 100_200] {
        for w in 0..2 {
            tb.expire(w, t(secs), usize::MAX);
        }
    }
    assert_eq!(tb.len(), 0);
    assert!(tb
        .slots
        .iter()
        .all(|s| s.n_control.load(Ordering::Relaxed) == 0));
    for d in 0..2 {
        let c = reg.get(DestId(d));
        assert_eq!((c.active(), c.inactive(), c.persistent()), (0, 0, 0));
    }
}

/// Each worker thread counts in its own shard of the real servers' counters; a worker that
/// moves and ends connections another created leaves its shard below zero, and the sums
/// stay exact: between the phases (threads quiet) and at the end, when every count is 0.
#[test]
fn counts_stay_exact_when_workers_end_each_others_connections() {
    const N: u32 = 4_000;
    let reg = Arc::new(DestRegistry::with_shards(4, 3));
    let tb = Arc::new(ConnTable::with_seed(4 * N as usize, 2, reg.clone(), 5));
    let totals = || {
        (0..4).fold((0, 0), |(a, i), d| {
            let c = reg.get(DestId(d));
            (a + c.active(), i + c.inactive())
        })
    };
    // Phase 1: each worker opens N connections (SYN: active) spread over 4 servers.
    let opened: Vec<Vec<ConnId>> = (0..2)
        .map(|w| {
            let tb = tb.clone();
            std::thread::spawn(move || {
                crate::service::count_as_worker(w);
                (0..N)
                    .map(|i| {
                        let client = format!("10.{w}.{}.{}", i >> 8, i & 0xff);
                        let n = conn(ForwardMethod::DirectRouting, &client, 1, i % 4);
                        tb.insert(w, t(0), n).unwrap().id
                    })
                    .collect()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(totals(), (2 * N, 0));
    // Phase 2: each worker takes the other's connections to ESTABLISHED then CLOSE
    // (active to inactive), and ends every other one at once.
    let handles: Vec<_> = (0..2)
        .map(|w| {
            let (tb, ids) = (tb.clone(), opened[1 - w].clone());
            std::thread::spawn(move || {
                crate::service::count_as_worker(w);
                for (k, id) in ids.into_iter().enumerate() {
                    tb.on_packet(id, Direction::Original, ACK, t(1));
                    tb.on_packet(id, Direction::Original, Some(F::RST), t(1));
                    if k % 2 == 0 {
                        assert!(tb.expire_now(id));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(totals(), (0, N));
    // Phase 3: the owners reclaim what is left when its timer runs out.
    let handles: Vec<_> = (0..2)
        .map(|w| {
            let tb = tb.clone();
            std::thread::spawn(move || {
                crate::service::count_as_worker(w);
                tb.expire(w, t(100_000), usize::MAX)
            })
        })
        .collect();
    let freed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(freed, 2 * N as usize);
    assert!(tb.is_empty());
    for d in 0..4 {
        let c = reg.get(DestId(d));
        assert_eq!((c.active(), c.inactive(), c.persistent()), (0, 0, 0));
    }
}
