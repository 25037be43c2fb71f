//! Tests of the pipeline as a whole; each step's rewrites are tested under `forward/`.

use super::*;
use crate::conn::{FlowKey, TcpState};
use crate::control::Publisher;
use crate::service::{config, DestRegistry, Protocol};
use crate::wire::testkit::{self, Spec};
use std::path::Path;

const CONFIG: &str = "[director]\nconn_capacity = 1000\n\n[[service]]\nprotocol = \"udp\"\n\
    address = \"192.0.2.100\"\nport = 53\nscheduler = \"rr\"\n[[service.real]]\n\
    address = \"10.0.0.11\"\nport = 53\nweight = 1\nmethod = \"dr\"\n";

fn pipeline(expire_budget: usize) -> (Pipeline, Arc<ConnTable>) {
    pipeline_of(CONFIG, expire_budget)
}

pub(super) fn pipeline_of(text: &str, expire_budget: usize) -> (Pipeline, Arc<ConnTable>) {
    let config = config::parse(text, Path::new("t.toml")).unwrap();
    let registry = Arc::new(DestRegistry::default());
    let publisher = Publisher::new(config.clone(), Arc::clone(&registry)).unwrap();
    let conns = Arc::new(ConnTable::with_seed(1000, 1, Arc::clone(&registry), 7));
    let routes = NextHops::parse_routes(
        "10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.1\n\
         2001:db8:1::/64 dev eth0 proto kernel metric 256 pref medium\n",
        "t",
    )
    .unwrap();
    // 10.0.0.11-13 and 2001:db8:1::11-13 at 02:00:00:00:01:11-13.
    let neigh: Vec<_> = (11..=13u8)
        .flat_map(|n| {
            let mac = MacAddr([2, 0, 0, 0, 1, n + 6]);
            let v6 = IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(n) + 6]);
            [(IpAddr::from([10, 0, 0, n]), mac), (v6, mac)]
        })
        .collect();
    let links = [("eth0".to_string(), MacAddr(testkit::DIRECTOR_MAC))];
    let stats = Arc::new(WorkerStats::new(registry.capacity()));
    let settings = PipelineSettings {
        expire_budget,
        ..PipelineSettings::default()
    };
    let p = Pipeline::new(
        0,
        publisher.table(),
        Arc::clone(&conns),
        Arc::new(NextHops::with_links(&links, routes, neigh)),
        stats,
        settings,
    );
    (p, conns)
}

fn open_flows(p: &mut Pipeline, now: Instant, n: u16) {
    for i in 0..n {
        let mut f = Spec::udp("198.51.100.7", "192.0.2.100", 10_000 + i, 53).frame();
        let len = f.len();
        let mut frame = Frame::new(&mut f, 0, len);
        assert_eq!(p.process(now, &mut frame), Verdict::Transmit);
    }
}

const MS: u64 = 1000;

/// A TCP mh service over three DR real servers, `sloppy_tcp` as given.
fn mh_config(sloppy: bool) -> String {
    let mut t = format!(
        "[director]\nsloppy_tcp = {sloppy}\n\n[[service]]\nprotocol = \"tcp\"\n\
         address = \"192.0.2.100\"\nport = 80\nscheduler = \"mh\"\n"
    );
    for n in 11..=13 {
        t += &format!("[[service.real]]\naddress = \"10.0.0.{n}\"\nmethod = \"dr\"\n");
    }
    t
}

/// A TCP segment from client 198.51.100.`c`, port `cport`, to 192.0.2.100:80.
fn tcp_frame(c: u8, cport: u16, syn: bool, ack: bool, rst: bool) -> Vec<u8> {
    let client = format!("198.51.100.{c}");
    let mut spec = Spec::tcp(&client, "192.0.2.100", cport, 80);
    spec.l4 = crate::wire::testkit::L4::Tcp {
        sport: cport,
        dport: 80,
        syn,
        ack,
        fin: false,
        rst,
    };
    spec.frame()
}

/// Sends one TCP segment from client 198.51.100.`c`, port `cport`; the real server's
/// last MAC byte, or `None` when dropped for want of a connection.
fn segment(p: &mut Pipeline, c: u8, cport: u16, syn: bool, ack: bool, rst: bool) -> Option<u8> {
    let mut f = tcp_frame(c, cport, syn, ack, rst);
    let len = f.len();
    match p.process(Instant::from_secs(10), &mut Frame::new(&mut f, 0, len)) {
        Verdict::Transmit => Some(f[5]),
        Verdict::Drop(DropReason::NoConnection) => None,
        v => panic!("{v:?}"),
    }
}

#[test]
fn sloppy_tcp_continues_a_flow_another_director_opened_on_the_same_server() {
    let (mut first, _) = pipeline_of(&mh_config(false), EXPIRE_BUDGET_AUTO);
    let (mut second, conns) = pipeline_of(&mh_config(true), EXPIRE_BUDGET_AUTO);
    let (mut strict, _) = pipeline_of(&mh_config(false), EXPIRE_BUDGET_AUTO);
    let mut seen = [false; 3];
    for c in 1..=64u8 {
        let cport = 40_000 + u16::from(c);
        let server = segment(&mut first, c, cport, true, false, false).unwrap();
        seen[usize::from(server - 0x11)] = true;
        // The flow moves: its next ACK reaches a director that never saw the SYN.
        assert_eq!(segment(&mut strict, c, cport, false, true, false), None);
        assert_eq!(
            segment(&mut second, c, cport, false, true, false),
            Some(server)
        );
        let key = FlowKey {
            protocol: Protocol::Tcp,
            src: IpAddr::from([198, 51, 100, c]),
            sport: cport,
            dst: "192.0.2.100".parse().unwrap(),
            dport: 80,
        };
        let hit = conns.lookup(&key).unwrap();
        assert_eq!(hit.info.state, TcpState::Established);
        assert_eq!(
            segment(&mut second, c, cport, false, true, false),
            Some(server)
        );
    }
    assert_eq!(seen, [true; 3], "the clients spread over every server");
    // A RST never opens a connection, sloppy or not.
    assert_eq!(segment(&mut second, 200, 50_000, false, true, true), None);
    assert_eq!(segment(&mut second, 201, 50_001, true, false, true), None);
}

#[test]
fn a_standby_drops_everything_from_the_next_batch_until_it_forwards_again() {
    let (p, conns) = pipeline(EXPIRE_BUDGET_AUTO);
    let flag = Arc::new(AtomicBool::new(true));
    let mut p = p.with_standby(Arc::clone(&flag));
    let now = Instant::from_secs(1);
    let send = |p: &mut Pipeline, sport: u16| {
        let mut f = Spec::udp("198.51.100.7", "192.0.2.100", sport, 53).frame();
        let len = f.len();
        p.process(now, &mut Frame::new(&mut f, 0, len))
    };
    // A standby from its first packet: nothing is scheduled, nothing forwarded.
    assert_eq!(send(&mut p, 1000), Verdict::Drop(DropReason::Standby));
    assert_eq!(conns.len(), 0);
    // MASTER: the flag drops, the pipeline follows between batches.
    flag.store(false, Ordering::Relaxed);
    assert_eq!(send(&mut p, 1001), Verdict::Drop(DropReason::Standby));
    p.between_batches(now);
    assert_eq!(send(&mut p, 1001), Verdict::Transmit);
    // Standby again: even a packet of a known connection is dropped.
    flag.store(true, Ordering::Relaxed);
    p.between_batches(now);
    assert_eq!(send(&mut p, 1001), Verdict::Drop(DropReason::Standby));
    let mut f = Spec::udp("198.51.100.7", "192.0.2.100", 1002, 53).frame();
    let len = f.len();
    let mut frames = [Frame::new(&mut f, 0, len)];
    let mut verdicts = [Verdict::Pass];
    p.process_batch(now, &mut frames, &mut verdicts);
    assert_eq!(verdicts, [Verdict::Drop(DropReason::Standby)]);
    assert_eq!(p.stats().drops[DropReason::Standby as usize].get(), 4);
    assert_eq!(conns.len(), 1);
}

#[test]
fn a_packet_for_the_kernel_leaves_with_its_partial_checksum_finished() {
    let (mut p, _) = pipeline(EXPIRE_BUDGET_AUTO);
    // A real server's answer to a client that reached it directly (no service): the
    // kernel's IP output sends it as it is, so the checksum must be whole.
    let whole = Spec::tcp("10.0.0.11", "198.51.100.7", 80, 40000).frame();
    let parsed = wire::parse_frame(&whole).unwrap();
    let ip = parsed.ip.unwrap();
    let field = ip.l4_offset + crate::wire::tcp::CHECKSUM_OFFSET;
    let length = (parsed.l3_offset + ip.len - ip.l4_offset) as u32;
    let pseudo = crate::wire::checksum::pseudo_header(&ip.src, &ip.dst, ip.protocol, length);
    let mut f = whole.clone();
    f[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
    assert_ne!(
        f, whole,
        "the test needs a partial field that differs from the whole one"
    );
    let len = f.len();
    let verdict = p.process(Instant::from_secs(1), &mut Frame::new(&mut f, 0, len));
    assert_eq!(verdict, Verdict::Pass);
    assert_eq!(f, whole);
}

#[test]
fn a_batch_gives_what_frame_by_frame_gives() {
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for i in 0..150u16 {
        // New flows, packets of flows already seen, a service-less port, a damaged
        // IPv4 header, a non-IP frame.
        let mut f = Spec::udp("198.51.100.7", "192.0.2.100", 10_000 + i % 40, 53).frame();
        match i % 10 {
            7 => f = Spec::udp("198.51.100.7", "192.0.2.100", 1, 54).frame(),
            8 => f[14 + 10] ^= 1,
            9 => f[12] = 0x88,
            _ => {}
        }
        frames.push(f);
    }
    let (mut one, _) = pipeline(EXPIRE_BUDGET_AUTO);
    let (mut batched, _) = pipeline(EXPIRE_BUDGET_AUTO);
    // Take the prefetching path, meant for large tables, with this small one.
    batched.prefetch_min_live = 0;
    let now = Instant::from_secs(100);
    let mut by_one = frames.clone();
    let expected: Vec<Verdict> = by_one
        .iter_mut()
        .map(|f| {
            let len = f.len();
            one.process(now, &mut Frame::new(f, 0, len))
        })
        .collect();
    let mut by_batch = frames.clone();
    let mut views: Vec<Frame<'_>> = by_batch
        .iter_mut()
        .map(|f| {
            let len = f.len();
            Frame::new(f, 0, len)
        })
        .collect();
    let mut verdicts = vec![Verdict::Pass; views.len()];
    batched.process_batch(now, &mut views, &mut verdicts);
    drop(views);
    assert_eq!(verdicts, expected);
    assert_eq!(by_batch, by_one);
    assert!(expected.contains(&Verdict::Transmit) && expected.contains(&Verdict::Pass));
    assert!(expected.contains(&Verdict::Drop(DropReason::Malformed)));
    assert_eq!(batched.stats().rx.get(), one.stats().rx.get());
    assert_eq!(batched.stats().tx.get(), one.stats().tx.get());
}

#[test]
fn only_frames_for_the_director_are_balanced_and_leave_from_its_own_mac() {
    let (p, _conns) = pipeline(EXPIRE_BUDGET_AUTO);
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut p = p.with_nexthop_updates(rx);
    let now = Instant::from_secs(10);
    let send = |p: &mut Pipeline, dst: [u8; 6], ingress: Option<u16>, sport: u16| {
        let mut f = Spec::udp("198.51.100.7", "192.0.2.100", sport, 53).frame();
        f[..6].copy_from_slice(&dst);
        let len = f.len();
        let mut frame = Frame::new(&mut f, 0, len);
        if let Some(i) = ingress {
            frame.set_ingress(i);
        }
        let v = p.process(now, &mut frame);
        (v, <[u8; 6]>::try_from(&f[6..12]).unwrap())
    };
    let other = [2, 0, 0, 0, 0, 0x99];
    let vmac = [0, 0, 0x5e, 0, 1, 0x33];
    assert_eq!(
        send(&mut p, other, None, 1000).0,
        Verdict::Drop(DropReason::OtherHost)
    );
    assert_eq!(
        send(&mut p, vmac, Some(0), 1001).0,
        Verdict::Drop(DropReason::OtherHost)
    );
    assert_eq!(p.stats().drops[DropReason::OtherHost as usize].get(), 2);
    assert_eq!(
        send(&mut p, testkit::DIRECTOR_MAC, Some(0), 1002),
        (Verdict::Transmit, testkit::DIRECTOR_MAC)
    );
    // Broadcast is taken, and the frame leaves from eth0's MAC, not from ff:ff:...
    assert_eq!(
        send(&mut p, [0xff; 6], None, 1003),
        (Verdict::Transmit, testkit::DIRECTOR_MAC)
    );
    // A listed virtual MAC is taken too; the source is still the interface's own.
    let mut t = NextHops::clone(&p.nexthops);
    t.set_extra_macs(&[MacAddr(vmac)]);
    tx.send(Arc::new(t)).unwrap();
    p.between_batches(now);
    assert_eq!(
        send(&mut p, vmac, Some(0), 1004),
        (Verdict::Transmit, testkit::DIRECTOR_MAC)
    );
    assert_eq!(
        send(&mut p, other, Some(0), 1005).0,
        Verdict::Drop(DropReason::OtherHost)
    );
}

#[test]
fn next_hops_of_real_servers_follow_table_updates() {
    let (p, _conns) = pipeline(EXPIRE_BUDGET_AUTO);
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut p = p.with_nexthop_updates(rx);
    let now = Instant::from_secs(10);
    let send = |p: &mut Pipeline| {
        let mut f = Spec::udp("198.51.100.7", "192.0.2.100", 10_000, 53).frame();
        let len = f.len();
        let mut frame = Frame::new(&mut f, 0, len);
        assert_eq!(p.process(now, &mut frame), Verdict::Transmit);
        <[u8; 6]>::try_from(&f[..6]).unwrap()
    };
    assert_eq!(send(&mut p), [2, 0, 0, 0, 1, 0x11]);
    assert_eq!(send(&mut p), [2, 0, 0, 0, 1, 0x11]);
    // The real server's MAC changes: the next batch uses the new tables, not the cache.
    let routes = NextHops::parse_routes(
        "10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.1\n",
        "t",
    )
    .unwrap();
    let neigh = vec![("10.0.0.11".parse().unwrap(), MacAddr([2, 0, 0, 0, 9, 9]))];
    let links = [("eth0".to_string(), MacAddr(testkit::DIRECTOR_MAC))];
    tx.send(Arc::new(NextHops::with_links(&links, routes, neigh)))
        .unwrap();
    p.between_batches(now);
    assert_eq!(send(&mut p), [2, 0, 0, 0, 9, 9]);
}

#[test]
fn expiry_sweeps_once_per_millisecond_with_a_paced_budget() {
    // 1000 slots: the derived budget is the minimum, 64 slots per millisecond.
    let (mut p, conns) = pipeline(EXPIRE_BUDGET_AUTO);
    assert_eq!(p.expire_per_ms, MIN_EXPIRE_BUDGET);
    let t0 = 1_000_000 * MS;
    // The first sweep looks at slots 0..64 and leaves the hand at 64.
    p.between_batches(Instant::from_micros(t0));
    open_flows(&mut p, Instant::from_micros(t0), 200);
    assert_eq!(conns.len(), 200);
    // UDP lasts 300 s. A jump of more than a second is a full pass: nothing is due yet,
    // and a full pass leaves the hand where it was.
    let due = t0 + 300_000 * MS;
    p.between_batches(Instant::from_micros(due - MS));
    assert_eq!(conns.len(), 200);
    // One millisecond later: one millisecond's budget, slots 64..128.
    p.between_batches(Instant::from_micros(due));
    assert_eq!(conns.len(), 200 - 64);
    // Later batches in the same millisecond do not sweep.
    p.between_batches(Instant::from_micros(due + 999));
    assert_eq!(conns.len(), 200 - 64);
    // The next millisecond takes slots 128..192.
    p.between_batches(Instant::from_micros(due + MS));
    assert_eq!(conns.len(), 200 - 128);
    // Two seconds on, a full pass clears the rest.
    p.between_batches(Instant::from_micros(due + 2000 * MS));
    assert_eq!(conns.len(), 0);
}

#[test]
fn a_budget_of_the_whole_table_expires_everything_on_time() {
    let (mut p, conns) = pipeline(1000);
    let t0 = 5_000 * MS;
    p.between_batches(Instant::from_micros(t0));
    open_flows(&mut p, Instant::from_micros(t0), 300);
    let due = t0 + 300_000 * MS;
    p.between_batches(Instant::from_micros(due - 1));
    assert_eq!(conns.len(), 300);
    p.between_batches(Instant::from_micros(due));
    assert_eq!(conns.len(), 0);
}

/// Sends one TCP segment as [`segment`] does; the verdict.
fn segment_verdict(p: &mut Pipeline, c: u8, cport: u16, syn: bool, ack: bool) -> Verdict {
    let mut f = tcp_frame(c, cport, syn, ack, false);
    let len = f.len();
    p.process(Instant::from_secs(10), &mut Frame::new(&mut f, 0, len))
}

fn tcp_state(conns: &ConnTable, c: u8, cport: u16) -> Option<TcpState> {
    let key = FlowKey {
        protocol: Protocol::Tcp,
        src: IpAddr::from([198, 51, 100, c]),
        sport: cport,
        dst: "192.0.2.100".parse().unwrap(),
        dport: 80,
    };
    conns.lookup(&key).map(|h| h.info.state)
}

#[test]
fn drop_packet_refuses_one_new_connection_in_the_rate_and_nothing_established() {
    use crate::conn::defence::Level;
    let (mut p, conns) = pipeline_of(&mh_config(false), EXPIRE_BUDGET_AUTO);
    // An established flow, opened before the defence is on.
    assert_eq!(
        segment_verdict(&mut p, 1, 1000, true, false),
        Verdict::Transmit
    );
    conns.defence().store(Level {
        drop_rate: 3,
        ..Level::default()
    });
    let verdicts: Vec<bool> = (0..9u16)
        .map(|i| segment_verdict(&mut p, 2, 2000 + i, true, false) == Verdict::Transmit)
        .collect();
    assert_eq!(
        verdicts,
        [false, true, true, false, true, true, false, true, true],
        "one SYN in three refused"
    );
    assert_eq!(
        tcp_state(&conns, 2, 2000),
        None,
        "a refused SYN leaves no entry"
    );
    assert_eq!(
        p.stats.drops[DropReason::DefenceDropPacket as usize].get(),
        3
    );
    // Packets of existing connections are never refused.
    for _ in 0..6 {
        assert_eq!(
            segment_verdict(&mut p, 1, 1000, false, true),
            Verdict::Transmit
        );
    }
    // Off again: every new connection is scheduled.
    conns.defence().store(Level::default());
    assert!(
        (0..6u16).all(|i| segment_verdict(&mut p, 3, 3000 + i, true, false) == Verdict::Transmit)
    );
}

#[test]
fn secure_tcp_opens_direct_routing_connections_in_synack() {
    use crate::conn::defence::Level;
    let (mut p, conns) = pipeline_of(&mh_config(false), EXPIRE_BUDGET_AUTO);
    // Off: a SYN opens in SYN_RECV (INPUT-ONLY), the client's ACK establishes it.
    segment_verdict(&mut p, 1, 1000, true, false);
    assert_eq!(tcp_state(&conns, 1, 1000), Some(TcpState::SynRecv));
    segment_verdict(&mut p, 1, 1000, false, true);
    assert_eq!(tcp_state(&conns, 1, 1000), Some(TcpState::Established));
    // On: tcp_states_dos. A SYN opens in SYNACK; a repeated SYN keeps it there; the ACK
    // establishes it. A connection established before stays so.
    conns.defence().store(Level {
        secure_tcp: true,
        ..Level::default()
    });
    segment_verdict(&mut p, 2, 2000, true, false);
    assert_eq!(tcp_state(&conns, 2, 2000), Some(TcpState::SynAck));
    segment_verdict(&mut p, 2, 2000, true, false);
    assert_eq!(tcp_state(&conns, 2, 2000), Some(TcpState::SynAck));
    segment_verdict(&mut p, 2, 2000, false, true);
    assert_eq!(tcp_state(&conns, 2, 2000), Some(TcpState::Established));
    segment_verdict(&mut p, 1, 1000, false, true);
    assert_eq!(tcp_state(&conns, 1, 1000), Some(TcpState::Established));
}
