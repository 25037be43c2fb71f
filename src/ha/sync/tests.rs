//! Master and backup end to end, in process: two directors' pipelines (the code the AF_XDP
//! workers run), the master's hook and encoder, the bytes on the wire, the backup's decoder
//! and the backup's workers installing. Only the sockets are left out.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::conn::{ConnEntry, ConnTable};
use crate::control::Publisher;
use crate::datapath::pipeline::{Pipeline, PipelineSettings};
use crate::datapath::{Frame, PacketProcessor, Verdict};
use crate::forward::nexthop::{MacAddr, NextHops};
use crate::service::{config, DestRegistry, ServiceTable, SyncSettings};
use crate::stats::WorkerStats;
use crate::time::Instant;
use crate::wire::testkit;
use crate::wire::testkit::{Spec, L4};

const CONFIG: &str = r#"
[[classifier]]
destination = "192.0.2.50/32"
mark = 7

[[service]]
protocol = "tcp"
address = "192.0.2.10"
port = 80
scheduler = "rr"
[[service.real]]
address = "10.0.0.11"
method = "dr"
[[service.real]]
address = "10.0.0.12"
method = "dr"

[[service]]
protocol = "udp"
address = "192.0.2.20"
port = 53
scheduler = "rr"
[[service.real]]
address = "10.0.0.11"
port = 5353
method = "nat"

[[service]]
protocol = "tcp"
address = "192.0.2.30"
port = 443
scheduler = "rr"
persistence = 600
[[service.real]]
address = "10.0.0.12"
method = "dr"

[[service]]
fwmark = 7
scheduler = "rr"
persistence = 300
[[service.real]]
address = "10.0.0.11"
port = 0
method = "dr"

[[service]]
protocol = "tcp"
address = "192.0.2.40"
port = 80
scheduler = "rr"
[[service.real]]
address = "10.0.0.11"
port = 8080
method = "nat"

[[service]]
protocol = "tcp"
address = "2001:db8::10"
port = 80
scheduler = "rr"
[[service.real]]
address = "2001:db8:1::11"
method = "dr"
"#;

/// One director: its table, a pipeline for worker 0, and the sync thread's ends.
struct Director {
    pipeline: Pipeline,
    conns: Arc<ConnTable>,
    registry: Arc<DestRegistry>,
    table: Arc<ServiceTable>,
    shared: Arc<SyncShared>,
    ends: SyncEnds,
    counters: counters::DaemonCounters,
}

impl Director {
    fn new(settings: SyncSettings) -> Director {
        let config = config::parse(CONFIG, Path::new("t.toml")).unwrap();
        let registry = Arc::new(DestRegistry::default());
        let publisher = Publisher::new(config, Arc::clone(&registry)).unwrap();
        let conns = Arc::new(ConnTable::with_seed(4096, 1, Arc::clone(&registry), 1));
        let routes = NextHops::parse_routes(
            "10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.1\n\
             2001:db8:1::/64 dev eth0 proto kernel metric 256 pref medium\n\
             default via 10.0.0.254 dev eth0 proto static\n",
            "t",
        )
        .unwrap();
        let neigh = vec![
            ("10.0.0.11".parse().unwrap(), MacAddr([2, 0, 0, 0, 1, 0x11])),
            ("10.0.0.12".parse().unwrap(), MacAddr([2, 0, 0, 0, 1, 0x12])),
            (
                "10.0.0.254".parse().unwrap(),
                MacAddr([2, 0, 0, 0, 1, 0xfe]),
            ),
            (
                "2001:db8:1::11".parse().unwrap(),
                MacAddr([2, 0, 0, 0, 6, 0x11]),
            ),
        ];
        let (shared, mut hooks, ends) = channels(1, &settings);
        let stats = Arc::new(WorkerStats::new(registry.capacity()));
        let pipeline = Pipeline::new(
            0,
            publisher.table(),
            Arc::clone(&conns),
            Arc::new(NextHops::with_links(
                &[("eth0".to_string(), MacAddr(testkit::DIRECTOR_MAC))],
                routes,
                neigh,
            )),
            stats,
            PipelineSettings::default(),
        )
        .with_sync(hooks.remove(0));
        Director {
            pipeline,
            table: publisher.table(),
            conns,
            registry,
            shared,
            ends,
            counters: counters::DaemonCounters::default(),
        }
    }

    fn send(&mut self, now: Instant, spec: &Spec) -> (Verdict, Vec<u8>) {
        let mut f = spec.frame();
        let len = f.len();
        let v = self.pipeline.process(now, &mut Frame::new(&mut f, 0, len));
        (v, f)
    }

    fn list(&self, now: Instant) -> Vec<ConnEntry> {
        let mut v = Vec::new();
        self.conns.for_each(now, |e| v.push(*e));
        v.sort_by_key(|e| (e.template, e.client, e.cport, e.vaddr, e.vport));
        v
    }
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, syn: bool, fin: bool) -> Spec {
    let mut s = Spec::tcp(src, dst, sport, dport);
    s.l4 = L4::Tcp {
        sport,
        dport,
        syn,
        ack: !syn,
        fin,
        rst: false,
    };
    s
}

fn at(ms: u64) -> Instant {
    Instant::from_micros(1_000_000_000 + ms * 1000)
}

/// Runs the master's thread side once and returns the datagrams it would send.
fn master_sends(d: &mut Director, m: &mut master::Master, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut send = |b: &[u8]| out.push(b.to_vec());
    m.take(
        now,
        &d.conns,
        &d.table,
        &mut d.ends.outbound,
        &d.counters,
        &mut send,
    );
    m.poll(now, &d.counters, &mut send);
    out
}

/// Runs the master's thread side once and sends whatever it holds.
fn master_flushes(d: &mut Director, m: &mut master::Master, now: Instant) -> Vec<Vec<u8>> {
    let mut out = master_sends(d, m, now);
    m.flush(&d.counters, &mut |b: &[u8]| out.push(b.to_vec()));
    out
}

fn backup_takes(b: &mut Director, datagrams: &[Vec<u8>], now: Instant) {
    let backup = backup::Backup {
        syncid: 0,
        ifindex: 1,
    };
    for d in datagrams {
        let (table, conns, counters, ends) = (&b.table, &b.conns, &b.counters, &mut b.ends);
        backup.handle(d, Some(1), table, conns.timeouts(), counters, &mut |s| {
            assert!(backup::route(s, &mut ends.installs));
        });
    }
    b.pipeline.between_batches(now);
}

#[test]
fn connections_and_templates_reach_the_backup_with_state_and_counts() {
    let mut master = Director::new(SyncSettings::default());
    let mut backup = Director::new(SyncSettings::default());
    master.shared.set_master(true);
    master.pipeline.between_batches(at(0));
    let mut m = master::Master::new(9, 1472);

    // A DR TCP connection: SYN and ACK are not enough (SYN_RECV is never sent, the 2nd
    // packet is below the threshold), the 3rd packet sends it.
    let c = "198.51.100.7";
    assert_eq!(
        master
            .send(at(1), &tcp(c, "192.0.2.10", 40_001, 80, true, false))
            .0,
        Verdict::Transmit
    );
    master.send(at(2), &tcp(c, "192.0.2.10", 40_001, 80, false, false));
    master.pipeline.between_batches(at(2));
    assert!(master_sends(&mut master, &mut m, at(3)).is_empty());
    assert_eq!(m.pending(), 0);
    master.send(at(4), &tcp(c, "192.0.2.10", 40_001, 80, false, false));
    // UDP (NAT), persistent TCP (a template with it), fwmark, IPv6: three packets each.
    for i in 0..3 {
        master.send(at(5 + i), &Spec::udp(c, "192.0.2.20", 5000, 53));
        master.send(at(5 + i), &tcp(c, "192.0.2.30", 40_002, 443, i == 0, false));
        master.send(
            at(5 + i),
            &tcp(c, "192.0.2.50", 40_003, 8080, i == 0, false),
        );
        master.send(
            at(5 + i),
            &tcp("2001:db8::7", "2001:db8::10", 40_004, 80, i == 0, false),
        );
    }
    // Taken at once, but the message is not full: it waits SEND_DELAY for more.
    assert!(master_sends(&mut master, &mut m, at(10)).is_empty());
    assert!(m.pending() > 0);
    assert!(master_sends(&mut master, &mut m, at(29)).is_empty());
    let sent = master_sends(&mut master, &mut m, at(10) + master::SEND_DELAY);
    assert_eq!(
        sent.len(),
        1,
        "one message, sent 20 ms after its first entry"
    );

    // What went out: the three TCP connections ESTABLISHED, UDP state 0, two templates
    // (one of them the fwmark service's, with its mark), flags as the kernel sets them.
    let entries: Vec<SyncConn> = Message::parse(&sent[0])
        .unwrap()
        .entries()
        .map(|r| r.unwrap().unwrap())
        .collect();
    let find = |pred: &dyn Fn(&SyncConn) -> bool| *entries.iter().find(|e| pred(e)).unwrap();
    let dr = find(&|e| e.vport == 80 && e.caddr.is_ipv4());
    assert_eq!(dr.state, 1);
    assert_eq!(dr.flags, wire::flags::DROUTE | wire::flags::NOOUTPUT);
    assert_eq!((dr.timeout, dr.fwmark), (900, 0));
    let udp = find(&|e| e.protocol == 17);
    assert_eq!(udp.flags, wire::flags::MASQ | wire::flags::INACTIVE);
    assert_eq!((udp.dport, udp.timeout, udp.state), (5353, 300, 0));
    let fw = find(&|e| e.vport == 8080);
    assert_eq!(fw.fwmark, 7);
    let fw_template = find(&|e| e.is_template() && e.protocol == 0);
    assert_eq!(fw_template.fwmark, 7);
    assert_eq!(fw_template.vaddr, IpAddr::V4(7u32.into()));
    assert_eq!(fw_template.timeout, 300);
    assert_eq!(
        fw_template.flags,
        wire::flags::TEMPLATE | wire::flags::INACTIVE | wire::flags::DROUTE | wire::flags::NOOUTPUT
    );
    let t443 = find(&|e| e.is_template() && e.vport == 443);
    assert_eq!((t443.timeout, t443.cport), (600, 0));
    assert!(find(&|e| e.caddr.is_ipv6()).daddr.is_ipv6());
    // Templates go out with every packet of their connections that is looked at (3 each),
    // connections once: 5 connections + 6 template entries.
    assert_eq!(entries.len(), 11);

    // The backup installs them: the same entries, the same counts.
    backup_takes(&mut backup, &sent, at(20));
    let (ml, bl) = (master.list(at(20)), backup.list(at(20)));
    let key = |e: &ConnEntry| {
        (
            e.protocol, e.template, e.client, e.cport, e.vaddr, e.vport, e.daddr, e.dport, e.state,
            e.method,
        )
    };
    assert_eq!(
        ml.iter().map(key).collect::<Vec<_>>(),
        bl.iter().map(key).collect::<Vec<_>>()
    );
    for (a, b) in ml.iter().zip(&bl) {
        // Each entry's timer started from the timeout sent, 20 ms later at most.
        assert!(
            b.expires_in_ms.abs_diff(a.expires_in_ms) <= 20,
            "{a:?} {b:?}"
        );
    }
    let counts = |d: &Director| {
        d.table
            .services
            .iter()
            .flat_map(|s| &s.dests)
            .map(|x| {
                let c = d.registry.get(x.id);
                (c.active(), c.inactive(), c.persistent())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&master), counts(&backup));
    let snap = backup.counters.snapshot(&backup.shared);
    assert_eq!((snap.accepted, snap.created, snap.updated), (11, 7, 4));

    // The backup takes over: the next packet of the DR connection leaves for the same real
    // server, although the backup's scheduler never saw it.
    let (v, out) = backup.send(at(30), &tcp(c, "192.0.2.10", 40_001, 80, false, false));
    assert_eq!(v, Verdict::Transmit);
    let (_, first) = master.send(at(30), &tcp(c, "192.0.2.10", 40_001, 80, false, false));
    assert_eq!(out[..6], first[..6], "same real server's MAC");
}

#[test]
fn state_changes_update_the_backup_and_its_counts() {
    let mut master = Director::new(SyncSettings::default());
    let mut backup = Director::new(SyncSettings::default());
    master.shared.set_master(true);
    master.pipeline.between_batches(at(0));
    let mut m = master::Master::new(0, 1472);
    let c = "198.51.100.9";
    for (i, syn) in [true, false, false].into_iter().enumerate() {
        master.send(at(i as u64), &tcp(c, "192.0.2.10", 40_010, 80, syn, false));
    }
    let first = master_flushes(&mut master, &mut m, at(100));
    backup_takes(&mut backup, &first, at(100));
    let dest = backup.list(at(100))[0].dest;
    let registry = Arc::clone(&backup.registry);
    let counters = registry.get(dest);
    let before = (counters.active(), counters.inactive());
    // The FIN: FIN_WAIT is sent at once, and the backup moves the connection to inactive
    // (ESTABLISHED is active whatever else the kernel counts as active).
    master.send(at(200), &tcp(c, "192.0.2.10", 40_010, 80, false, true));
    let fin = master_flushes(&mut master, &mut m, at(300));
    assert_eq!(fin.len(), 1);
    backup_takes(&mut backup, &fin, at(300));
    let e = backup.list(at(300))[0];
    assert_eq!(e.state, "FIN_WAIT");
    assert_eq!(before.0, counters.active() + 1);
    assert_eq!(before.1 + 1, counters.inactive());
    assert!(e.expires_in_ms <= 120_000);
    assert_eq!(backup.counters.snapshot(&backup.shared).updated, 1);
}

/// Packet by packet, a master sends what the kernel's rule sends, whichever path the
/// worker takes (the per-packet fast path counts a packet only while the entry's state is
/// the one last sent): a NAT real server's FIN moves the connection to FIN_WAIT between
/// two client packets, and the client's next packet sends it (the kernel's `force`); a
/// `sync_threshold` changed at run time applies to the whole count (the kernel divides
/// `in_pkts` by the new period).
#[test]
fn sends_follow_the_kernels_rule_packet_by_packet() {
    let mut master = Director::new(SyncSettings::default());
    master.shared.set_master(true);
    master.pipeline.between_batches(at(0));
    let queued = |d: &Director| d.shared.workers()[0].queued.get();
    let c = "198.51.100.11";
    let mut sent_at = Vec::new();
    for pkt in 1..=60u64 {
        if pkt == 11 {
            let (v, _) = master.send(at(pkt), &tcp("10.0.0.11", c, 8080, 40_020, false, true));
            assert_eq!(v, Verdict::Transmit, "the real server's FIN");
        }
        let before = queued(&master);
        let (v, _) = master.send(at(pkt), &tcp(c, "192.0.2.40", 40_020, 80, pkt == 1, false));
        assert_eq!(v, Verdict::Transmit);
        if queued(&master) > before {
            sent_at.push(pkt);
        }
    }
    // ESTABLISHED at the 3rd packet, FIN_WAIT at once (its state changed by a reply), then
    // FIN_WAIT again at the 53rd (3 modulo 50).
    assert_eq!(sent_at, [3, 11, 53]);

    let mut sent_at = Vec::new();
    for pkt in 1..=20u64 {
        if pkt == 11 {
            master.shared.set_rules(&SyncSettings {
                sync_threshold: [1, 4],
                ..SyncSettings::default()
            });
            master.pipeline.between_batches(at(100 + pkt));
        }
        let before = queued(&master);
        master.send(at(100 + pkt), &Spec::udp(c, "192.0.2.20", 5001, 53));
        if queued(&master) > before {
            sent_at.push(pkt);
        }
    }
    // 3 modulo 50, then 1 modulo 4 of the same count: 13 and 17.
    assert_eq!(sent_at, [3, 13, 17]);
}

#[test]
fn a_full_queue_drops_and_counts() {
    let settings = SyncSettings {
        sync_threshold: [1, 2],
        sync_qlen_max: 4,
        ..SyncSettings::default()
    };
    let mut master = Director::new(settings);
    master.shared.set_master(true);
    master.pipeline.between_batches(at(0));
    for i in 0..10 {
        master.send(
            at(1),
            &Spec::udp("198.51.100.7", "192.0.2.20", 6000 + i, 53),
        );
    }
    let w = &master.shared.workers()[0];
    assert_eq!((w.queued.get(), w.queue_full.get()), (4, 6));
}

#[test]
fn the_backup_refuses_other_groups_interfaces_and_unknown_services() {
    let mut master = Director::new(SyncSettings::default());
    let backup_dir = Director::new(SyncSettings::default());
    master.shared.set_master(true);
    master.pipeline.between_batches(at(0));
    let mut m = master::Master::new(5, 1472);
    for i in 0..3 {
        master.send(at(i), &Spec::udp("198.51.100.7", "192.0.2.20", 5000, 53));
    }
    let msgs = master_flushes(&mut master, &mut m, at(100));
    assert_eq!(msgs.len(), 1);
    let count = |syncid: u8, arrived: Option<u32>, msg: &[u8]| {
        let c = counters::DaemonCounters::default();
        let b = backup::Backup { syncid, ifindex: 3 };
        let mut n = 0;
        b.handle(
            msg,
            arrived,
            &backup_dir.table,
            backup_dir.conns.timeouts(),
            &c,
            &mut |_| n += 1,
        );
        (n, c.snapshot(&backup_dir.shared))
    };
    // syncid 0 takes every group; 5 takes 5; 6 does not.
    assert_eq!(count(0, Some(3), &msgs[0]).0, 1);
    assert_eq!(count(5, Some(3), &msgs[0]).0, 1);
    let (n, c) = count(6, Some(3), &msgs[0]);
    assert_eq!((n, c.wrong_syncid), (0, 1));
    let (n, c) = count(5, Some(4), &msgs[0]);
    assert_eq!((n, c.wrong_interface), (0, 1));
    // A connection to a service this director does not have.
    let mut other = msgs[0].clone();
    other[8 + 28..8 + 32].copy_from_slice(&[192, 0, 2, 99]);
    let (n, c) = count(0, Some(3), &other);
    assert_eq!((n, c.no_destination), (0, 1));
    // Garbage.
    let (n, c) = count(0, Some(3), &[1, 2]);
    assert_eq!((n, c.too_short), (0, 1));
}

#[test]
fn the_backup_binds_only_what_its_master_would_describe_again() {
    let d = Director::new(SyncSettings::default());
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let conn = |vaddr: &str, fwmark: u32| message::SyncConn {
        protocol: 6,
        flags: wire::flags::DROUTE | wire::flags::NOOUTPUT,
        state: 1,
        cport: 40000,
        vport: 80,
        dport: 80,
        fwmark,
        timeout: 900,
        caddr: ip("198.51.100.7"),
        vaddr: ip(vaddr),
        daddr: ip("10.0.0.11"),
    };
    let bind = |c: &message::SyncConn| {
        backup::bind(c, Version::V1, &d.table, d.conns.timeouts()).map(|s| s.dest)
    };
    // Through mark 7, to an address its classifier rule sends to mark 7: bound, and the
    // master describes it with mark 7 again.
    assert!(bind(&conn("192.0.2.50", 7)).is_some());
    // Through mark 7, to an address no rule marks: the master would describe it without a
    // mark, and nothing would find its service again.
    assert_eq!(bind(&conn("192.0.2.51", 7)), None);
    // An address service's connection binds; one that names mark 7 is found through the
    // mark-7 service, but described again (no rule marks 192.0.2.10) it would find the
    // address service: refused.
    assert!(bind(&conn("192.0.2.10", 0)).is_some());
    assert_eq!(bind(&conn("192.0.2.10", 7)), None);
    // A firewall-mark template: its mark is its virtual address.
    let template = |vaddr: &str, fwmark: u32| message::SyncConn {
        protocol: 0,
        flags: wire::flags::DROUTE | wire::flags::NOOUTPUT | wire::flags::TEMPLATE,
        state: 0,
        cport: 0,
        vport: 0,
        dport: 0,
        caddr: ip("198.51.100.0"),
        ..conn(vaddr, fwmark)
    };
    assert!(bind(&template("0.0.0.7", 7)).is_some());
    assert_eq!(bind(&template("0.0.0.85", 7)), None);
}
