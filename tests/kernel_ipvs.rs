//! fastlb against the real kernel: the same rules and the same SYNs through Linux IPVS (in
//! qemu, `tools/kernel-ipvs/kipvs`) and through fastlb, for every scheduler the kernel has,
//! and the real server each SYN went to compared one by one.
//!
//! **Kernel side.** Debian's 6.1 kernel with its `ip_vs` modules in a VM whose `eth0` is a tap
//! in a namespace of this test. Each case's rules are loaded with `ipvsadm -R` (later edits
//! with `ipvsadm -R` too, one line each, as `ipvsadm -a/-e/-d` would). The real servers are
//! direct-routing (`-g`) destinations on the segment with permanent neighbour entries, so the
//! kernel only rewrites the destination MAC: `tools/kernel-ipvs/probe.py` sends the SYNs one
//! at a time on the tap and records the MAC each one leaves with before it sends the next.
//! Real servers need not exist: the connections stay in SYN_RECV, as a new DR connection is
//! after its SYN, on both sides.
//!
//! **fastlb side.** The fastlb pipeline (the code `fastlb replay` and the AF_XDP workers run)
//! in this process, over the frames exactly as probe.py sent them (its capture, with its
//! timestamps), with the same rules parsed from the same text by fastlb's ipvsadm reader and
//! `dest_order = "kernel"`, and every edit applied between the same two frames through the
//! same code `fastlb ctl -R` uses. Replaying the identical capture makes the comparison exact
//! and free of timing; only the kernel side runs live.
//!
//! Every case uses its own virtual addresses and ports, so cases do not disturb each other in
//! the one VM (`FASTLB_KERNEL_CASES=TEXT` runs only the cases whose name contains TEXT). The
//! same VM then answers the known-answer vectors of the hashing schedulers
//! (`tools/kernel-ipvs/vectors.txt`, computed by an independent implementation of the
//! kernel's hashing; `tests/hash_vectors.rs` holds fastlb to them), so the three agree. `twos` is not in 6.1 (it came with 6.7): its fixture (`pcap-fixtures/sched-twos`)
//! holds hand-worked expectations instead. Needs root, qemu-system-x86_64 and python3; without
//! them it prints `SKIP: ...` and passes. Fetching the kernel (first run) needs apt.

#[path = "support/vectors.rs"]
mod vectors;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use etherparse::PacketBuilder;
use fastlb::conn::ConnTable;
use fastlb::control::Publisher;
use fastlb::datapath::pcap::{PcapReader, PcapWriter};
use fastlb::datapath::pipeline::{Pipeline, PipelineSettings};
use fastlb::datapath::{Frame, PacketProcessor, Verdict, HEADROOM};
use fastlb::forward::nexthop::{MacAddr, NextHops};
use fastlb::service::config::ipvsadm;
use fastlb::service::{ClassifierRule, Config, DestOrder, DestRegistry, Protocol};
use fastlb::stats::WorkerStats;
use fastlb::time::Instant;

/// MAC of the injecting side ("the router").
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x90, 0x01];
/// MAC of the VM's eth0.
const VM_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0x90, 0x02];

fn root_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kipvs() -> PathBuf {
    root_dir().join("tools/kernel-ipvs/kipvs")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !is_root() {
        return Some("needs root (a namespace, a tap, qemu)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun (the VM's NIC is a tap)".into());
    }
    for (prog, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("python3", "python3"),
        ("busybox", "busybox-static"),
        ("ipvsadm", "ipvsadm"),
    ] {
        if !have(prog) {
            return Some(format!("{prog} is not installed (Debian package {pkg})"));
        }
    }
    None
}

fn mac_text(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// ---- the address plan --------------------------------------------------------------------

/// Real server `i` (0 = A): 10.90.0.11.., fd90::11.., MAC 02:00:00:00:90:11...
fn real_v4(i: usize) -> String {
    format!("10.90.0.{}", 11 + i)
}
fn real_v6(i: usize) -> String {
    format!("fd90::{}", 11 + i)
}
fn real_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x90, 0x11 + i as u8]
}
const REALS: usize = 6;

/// Client `k`: 10.90.1.1.. (10.90.2.x past 250), fd90::1:1...
fn client(k: usize, v6: bool) -> IpAddr {
    if v6 {
        format!("fd90::1:{:x}", k + 1).parse().unwrap()
    } else {
        format!("10.90.{}.{}", 1 + k / 250, 1 + k % 250)
            .parse()
            .unwrap()
    }
}

/// Virtual address `n`: 10.90.100.n, fd90::100:n.
fn vip(n: usize, v6: bool) -> IpAddr {
    if v6 {
        format!("fd90::100:{n:x}").parse().unwrap()
    } else {
        format!("10.90.100.{n}").parse().unwrap()
    }
}

fn sock(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

// ---- cases -------------------------------------------------------------------------------

/// One SYN: from `client`:`cport` to `vaddr`:`vport`.
#[derive(Clone, Copy, Debug)]
struct Syn {
    client: IpAddr,
    cport: u16,
    vaddr: IpAddr,
    vport: u16,
}

enum Step {
    /// ipvsadm rule lines, loaded with `ipvsadm -R` (the first step of every case) or, later,
    /// as live edits.
    Rules(String),
    /// SYNs, in order.
    Syns(Vec<Syn>),
    /// UDP datagrams (to a `-u` service), in order.
    Datagrams(Vec<Syn>),
}

struct Case {
    name: String,
    steps: Vec<Step>,
    /// Marks packets for a firewall-mark service: nft in the kernel, a classifier rule in
    /// fastlb.
    fwmark: Option<Fwmark>,
}

/// TCP to `prefix` port `port` gets `mark`; `addrs` (inside the prefix) are the director's.
struct Fwmark {
    mark: u32,
    prefix: &'static str,
    port: u16,
    addrs: Vec<IpAddr>,
}

/// `-A` for `vaddr:vport` with `opts` (`-s wrr`, ...), then `-a` for real servers `reals` (index,
/// weight), in that order.
fn service(vaddr: IpAddr, vport: u16, opts: &str, reals: &[(usize, i32)]) -> String {
    let svc = sock(vaddr, vport);
    let mut s = format!("-A -t {svc} {opts}\n");
    for &(i, w) in reals {
        s += &add(vaddr, vport, i, w);
    }
    s
}

/// `-a` of real server `i` with weight `w`.
fn add(vaddr: IpAddr, vport: u16, i: usize, w: i32) -> String {
    let r = if vaddr.is_ipv6() {
        format!("[{}]", real_v6(i))
    } else {
        real_v4(i)
    };
    format!("-a -t {} -r {r}:{vport} -g -w {w}\n", sock(vaddr, vport))
}

/// `-e` of real server `i` to weight `w`.
fn edit(vaddr: IpAddr, vport: u16, i: usize, w: i32) -> String {
    add(vaddr, vport, i, w).replacen("-a", "-e", 1)
}

/// `-d` of real server `i`.
fn del(vaddr: IpAddr, vport: u16, i: usize) -> String {
    let r = if vaddr.is_ipv6() {
        format!("[{}]", real_v6(i))
    } else {
        real_v4(i)
    };
    format!("-d -t {} -r {r}:{vport}\n", sock(vaddr, vport))
}

/// `n` SYNs to `vaddr:vport` from clients `first..first + n`, one port each.
fn syns(vaddr: IpAddr, vport: u16, first: usize, n: usize) -> Vec<Syn> {
    (first..first + n)
        .map(|k| Syn {
            client: client(k, vaddr.is_ipv6()),
            cport: 40000 + k as u16,
            vaddr,
            vport,
        })
        .collect()
}

/// `syns` from clients `first..first + n` with source ports from `port`.
fn syns_from_port(vaddr: IpAddr, vport: u16, first: usize, n: usize, port: u16) -> Vec<Syn> {
    let mut v = syns(vaddr, vport, first, n);
    for (k, s) in v.iter_mut().enumerate() {
        s.cport = port + k as u16;
    }
    v
}

/// SYNs from `clients` clients with `ports` source ports each (for the port flags).
fn syns_ports(vaddr: IpAddr, vport: u16, clients: usize, ports: usize) -> Vec<Syn> {
    let mut v = Vec::new();
    for k in 0..clients {
        for p in 0..ports {
            v.push(Syn {
                client: client(k, vaddr.is_ipv6()),
                cport: 50000 + (p * 1013 + k) as u16,
                vaddr,
                vport,
            });
        }
    }
    v
}

/// Hands out ports and virtual addresses, so that no two cases share a service.
struct Ids {
    port: u16,
    vip: usize,
}

impl Ids {
    fn port(&mut self) -> u16 {
        self.port += 1;
        self.port
    }

    fn vip(&mut self, v6: bool) -> IpAddr {
        self.vip += 1;
        vip(self.vip, v6)
    }
}

fn case(name: impl Into<String>, steps: Vec<Step>) -> Case {
    Case {
        name: name.into(),
        steps,
        fwmark: None,
    }
}

/// Every case: weights and flags chosen so that a difference in order, counting or
/// arithmetic shows.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut ids = Ids { port: 1000, vip: 0 };

    // Counting schedulers: weights 1,2,1 (+ a quiesced server), eight SYNs.
    for s in ["rr", "lc", "wlc", "sed", "nq"] {
        let (v, p) = (ids.vip(false), ids.port());
        cases.push(case(
            format!("{s} 1,2,1,0"),
            vec![
                Step::Rules(service(
                    v,
                    p,
                    &format!("-s {s}"),
                    &[(0, 1), (1, 2), (2, 1), (3, 0)],
                )),
                Step::Syns(syns(v, p, 0, 8)),
            ],
        ));
    }
    for s in ["sed", "nq"] {
        let (v, p) = (ids.vip(false), ids.port());
        cases.push(case(
            format!("{s} 1,2,1 four SYNs"),
            vec![
                Step::Rules(service(v, p, &format!("-s {s}"), &[(0, 1), (1, 2), (2, 1)])),
                Step::Syns(syns(v, p, 0, 4)),
            ],
        ));
    }
    for (name, w) in [
        ("wrr 4,3,2", vec![(0, 4), (1, 3), (2, 2)]),
        ("wrr 4,2", vec![(0, 4), (1, 2)]),
        ("wrr 2,4,6,0", vec![(0, 2), (1, 4), (2, 6), (3, 0)]),
        ("wrr 1,1,3", vec![(0, 1), (1, 1), (2, 3)]),
    ] {
        let (v, p) = (ids.vip(false), ids.port());
        cases.push(case(
            name,
            vec![
                Step::Rules(service(v, p, "-s wrr", &w)),
                Step::Syns(syns(v, p, 0, 14)),
            ],
        ));
    }
    // Live edits: each -a/-e/-d runs the scheduler's update in the kernel.
    for s in ["wrr", "rr"] {
        let (v, p) = (ids.vip(false), ids.port());
        cases.push(case(
            format!("{s} 4,3,2 live -a -e -d -e"),
            vec![
                Step::Rules(service(v, p, &format!("-s {s}"), &[(0, 4), (1, 3), (2, 2)])),
                Step::Syns(syns(v, p, 0, 5)),
                Step::Rules(add(v, p, 3, 3)),
                Step::Syns(syns(v, p, 5, 6)),
                Step::Rules(edit(v, p, 1, 1)),
                Step::Syns(syns(v, p, 11, 5)),
                Step::Rules(del(v, p, 0)),
                Step::Syns(syns(v, p, 16, 4)),
                Step::Rules(edit(v, p, 2, 6)),
                Step::Syns(syns(v, p, 20, 5)),
            ],
        ));
    }
    let (v, p) = (ids.vip(false), ids.port());
    cases.push(case(
        "wrr 4,2 live -a 6",
        vec![
            Step::Rules(service(v, p, "-s wrr", &[(0, 4), (1, 2)])),
            Step::Syns(syns(v, p, 0, 4)),
            Step::Rules(add(v, p, 2, 6)),
            Step::Syns(syns(v, p, 4, 7)),
        ],
    ));
    for (s, name, w) in [
        ("fo", "fo 2,3,3,0", vec![(0, 2), (1, 3), (2, 3), (3, 0)]),
        ("ovf", "ovf 2,3,1", vec![(0, 2), (1, 3), (2, 1)]),
    ] {
        let (v, p) = (ids.vip(false), ids.port());
        cases.push(case(
            name,
            vec![
                Step::Rules(service(v, p, &format!("-s {s}"), &w)),
                Step::Syns(syns(v, p, 0, 7)),
            ],
        ));
    }
    // UDP connections are never active: lc and wlc see inactive counts only.
    for sch in ["lc", "wlc", "sed"] {
        let (v, p) = (ids.vip(false), ids.port());
        let rules =
            service(v, p, &format!("-s {sch}"), &[(0, 1), (1, 2), (2, 1)]).replace(" -t ", " -u ");
        cases.push(case(
            format!("{sch} 1,2,1 UDP"),
            vec![Step::Rules(rules), Step::Datagrams(syns(v, p, 0, 8))],
        ));
    }
    // Persistence: a template per client /24 (-M), its connections follow it; wlc picks for
    // each new template.
    for sch in ["wlc", "rr"] {
        let (v, p) = (ids.vip(false), ids.port());
        let list: Vec<Syn> = (0..12)
            .map(|k| Syn {
                client: client(if k % 2 == 0 { k } else { 250 + k }, false),
                cport: 47000 + k as u16,
                vaddr: v,
                vport: p,
            })
            .collect();
        cases.push(case(
            format!("{sch} 1,2,1 -p 300 -M 255.255.255.0"),
            vec![
                Step::Rules(service(
                    v,
                    p,
                    &format!("-s {sch} -p 300 -M 255.255.255.0"),
                    &[(0, 1), (1, 2), (2, 1)],
                )),
                Step::Syns(list),
            ],
        ));
    }
    // An upper threshold (-x) on B, the head of the kernel's list: OVERLOAD after two
    // connections. wlc and lblcr's set skip it; lblc keeps sending its cached address there.
    for s in ["wlc", "lblc", "lblcr"] {
        let (v, p) = (ids.vip(false), ids.port());
        let svc = sock(v, p);
        let rules = format!(
            "-A -t {svc} -s {s}\n-a -t {svc} -r {}:{p} -g -w 5\n-a -t {svc} -r {}:{p} -g -w 5 -x 2\n",
            real_v4(0),
            real_v4(1)
        );
        cases.push(case(
            format!("{s} 5,5 -x 2 on B"),
            vec![Step::Rules(rules), Step::Syns(syns(v, p, 0, 10))],
        ));
    }
    // Hashing on the client address (and port).
    for v6 in [false, true] {
        let fam = if v6 { " v6" } else { "" };
        for (sched, flags, w, clients, ports) in [
            ("sh", "", vec![(0, 2), (1, 1), (2, 1), (3, 0)], 16, 1),
            ("sh", "-b sh-port", vec![(0, 1), (1, 1), (2, 1)], 4, 4),
            ("sh", "-b sh-fallback", vec![(0, 1), (1, 0), (2, 1)], 12, 1),
            ("mh", "", vec![(0, 1), (1, 1), (2, 1)], 16, 1),
            ("mh", "", vec![(0, 3), (1, 1), (2, 2), (3, 0)], 16, 1),
            ("mh", "-b mh-port", vec![(0, 1), (1, 1), (2, 1)], 4, 4),
            ("mh", "-b mh-fallback", vec![(0, 1), (1, 0), (2, 1)], 12, 1),
        ] {
            if v6 && (flags.contains("fallback") || w.len() == 4) {
                continue;
            }
            let (v, p) = (ids.vip(v6), ids.port());
            let wtext: Vec<String> = w.iter().map(|x| x.1.to_string()).collect();
            cases.push(case(
                format!("{sched} {} {flags}{fam}", wtext.join(","))
                    .replace("  ", " ")
                    .trim()
                    .to_string(),
                vec![
                    Step::Rules(service(v, p, &format!("-s {sched} {flags}"), &w)),
                    Step::Syns(syns_ports(v, p, clients, ports)),
                ],
            ));
        }
    }
    // Quiescing a hashed server and bringing it back: sh refills its buckets from the
    // current weights, mh keeps a quiesced server's slots (its last weight).
    for (sched, flags) in [
        ("sh", ""),
        ("sh", "-b sh-fallback"),
        ("mh", ""),
        ("mh", "-b mh-fallback"),
    ] {
        let (v, p) = (ids.vip(false), ids.port());
        cases.push(case(
            format!("{sched} 1,1,1 {flags} live -e B 0, -e B 1"),
            vec![
                Step::Rules(service(
                    v,
                    p,
                    &format!("-s {sched} {flags}"),
                    &[(0, 1), (1, 1), (2, 1)],
                )),
                Step::Syns(syns_from_port(v, p, 0, 12, 42000)),
                Step::Rules(edit(v, p, 1, 0)),
                Step::Syns(syns_from_port(v, p, 0, 12, 43000)),
                Step::Rules(edit(v, p, 1, 1)),
                Step::Syns(syns_from_port(v, p, 0, 12, 44000)),
            ],
        ));
    }
    // Hashing and locality on the destination address: one service per virtual address,
    // all with the same real servers, the SYNs going round the addresses.
    for (sched, v6) in [
        ("dh", false),
        ("lblc", false),
        ("lblcr", false),
        ("dh", true),
    ] {
        let p = ids.port();
        let vips: Vec<IpAddr> = (0..5).map(|_| ids.vip(v6)).collect();
        let rules: String = vips
            .iter()
            .map(|&v| {
                service(
                    v,
                    p,
                    &format!("-s {sched}"),
                    &[(0, 1), (1, 3), (2, 1), (3, 0)],
                )
            })
            .collect();
        let list: Vec<Syn> = (0..20)
            .map(|k| Syn {
                client: client(k, v6),
                cport: 41000 + k as u16,
                vaddr: vips[k % vips.len()],
                vport: p,
            })
            .collect();
        let fam = if v6 { " v6" } else { "" };
        cases.push(case(
            format!("{sched} 1,3,1,0 x5 addresses{fam}"),
            vec![Step::Rules(rules), Step::Syns(list)],
        ));
    }
    // The destination schedulers on one firewall-mark service fed by several addresses, so
    // that one table sees them all (lblcr's sets grow once servers overload).
    for (sched, mark, prefix, net, weights) in [
        ("lblc", 7, "10.90.207.0/24", 207, [1, 10, 1, 0]),
        ("lblcr", 8, "10.90.208.0/24", 208, [1, 10, 1, 0]),
        ("dh", 9, "10.90.209.0/24", 209, [1, 3, 1, 0]),
    ] {
        let addrs: Vec<IpAddr> = (1..=4)
            .map(|h| format!("10.90.{net}.{h}").parse().unwrap())
            .collect();
        let mut rules = format!("-A -f {mark} -s {sched}\n");
        for (i, w) in weights.iter().enumerate() {
            writeln!(rules, "-a -f {mark} -r {} -g -w {w}", real_v4(i)).unwrap();
        }
        let list: Vec<Syn> = (0..24)
            .map(|k| Syn {
                client: client(100 + k, false),
                cport: 46000 + k as u16,
                vaddr: addrs[k % addrs.len()],
                vport: 80,
            })
            .collect();
        cases.push(Case {
            name: format!(
                "{sched} {} fwmark x4 addresses",
                weights.map(|w| w.to_string()).join(",")
            ),
            steps: vec![Step::Rules(rules), Step::Syns(list)],
            fwmark: Some(Fwmark {
                mark,
                prefix,
                port: 80,
                addrs,
            }),
        });
    }
    cases
}

// ---- frames ------------------------------------------------------------------------------

fn syn_frame(s: &Syn) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(ROUTER_MAC, VM_MAC);
    let seq = 1_000_000 + u32::from(s.cport);
    let b = match (s.client, s.vaddr) {
        (IpAddr::V4(c), IpAddr::V4(v)) => b.ipv4(c.octets(), v.octets(), 64),
        (IpAddr::V6(c), IpAddr::V6(v)) => b.ipv6(c.octets(), v.octets(), 64),
        _ => panic!("mixed families"),
    };
    let b = b.tcp(s.cport, s.vport, seq, 64240).syn();
    let mut out = Vec::with_capacity(b.size(0));
    b.write(&mut out, &[]).unwrap();
    out
}

/// A UDP datagram with 8 bytes of payload, for `s`'s flow.
fn udp_frame(s: &Syn) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(ROUTER_MAC, VM_MAC);
    let b = match (s.client, s.vaddr) {
        (IpAddr::V4(c), IpAddr::V4(v)) => b.ipv4(c.octets(), v.octets(), 64),
        (IpAddr::V6(c), IpAddr::V6(v)) => b.ipv6(c.octets(), v.octets(), 64),
        _ => panic!("mixed families"),
    };
    let b = b.udp(s.cport, s.vport);
    let payload = *b"kipvs-ud";
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write(i as u64, f).unwrap();
    }
    std::fs::write(path, w.finish().unwrap()).unwrap();
}

fn read_pcap(path: &Path) -> Frames {
    let data = std::fs::read(path).unwrap();
    let mut r = PcapReader::new(&data[..]).unwrap();
    let mut v = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        v.push((rec.ts_micros, rec.data));
    }
    v
}

// ---- the VM ------------------------------------------------------------------------------

/// The namespace and the VM, removed on drop whatever happens.
struct Lab {
    ns: String,
    vm: String,
    tap: String,
    dir: PathBuf,
}

impl Lab {
    fn up() -> Lab {
        let tag = std::env::var("FLBT_TAG").unwrap_or_default();
        let tagged = |s: &str| {
            if tag.is_empty() {
                s.to_string()
            } else {
                format!("{s}-{tag}")
            }
        };
        let ns = tagged("flbt-kipvs");
        let vm = tagged("flbt-kipvs");
        let mut tap = format!("kv{tag}0");
        tap.truncate(15);
        let dir = std::env::temp_dir().join(format!("{vm}.{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new(kipvs()).args(["stop", &vm]).output();
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let lab = Lab { ns, vm, tap, dir };
        run(Command::new("ip").args(["netns", "add", &lab.ns]));
        let t0 = std::time::Instant::now();
        run(Command::new(kipvs()).args([
            "boot",
            &lab.vm,
            "--netns",
            &lab.ns,
            "--nic",
            &format!("{},mac={}", lab.tap, mac_text(&VM_MAC)),
        ]));
        println!("VM up in {:.1} s", t0.elapsed().as_secs_f64());
        let mut setup = String::from(
            "ip link set eth0 up\nip addr add 10.90.0.2/16 dev eth0\n\
             ip -6 addr add fd90::2/64 dev eth0 nodad\n",
        );
        for i in 0..REALS {
            let mac = mac_text(&real_mac(i));
            writeln!(
                setup,
                "ip neigh replace {} lladdr {mac} dev eth0 nud permanent",
                real_v4(i)
            )
            .unwrap();
            writeln!(
                setup,
                "ip -6 neigh replace {} lladdr {mac} dev eth0 nud permanent",
                real_v6(i)
            )
            .unwrap();
        }
        lab.exec(&setup);
        lab
    }

    /// Runs `script` in the VM; its output. Panics if it fails.
    fn exec(&self, script: &str) -> String {
        let mut child = Command::new(kipvs())
            .args(["exec", &self.vm, "--timeout", "120"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "in the VM: {script}\nfailed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// Sends `frames` one at a time and returns, per frame, the MAC it left the kernel with
    /// (`None`: dropped), and the frames as sent (timestamped).
    fn probe(&self, name: &str, frames: &[Vec<u8>]) -> (Vec<Option<String>>, PathBuf) {
        let input = self.dir.join(format!("{name}.in.pcap"));
        let sent = self.dir.join(format!("{name}.sent.pcap"));
        let out = self.dir.join(format!("{name}.out.pcap"));
        write_pcap(&input, frames);
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3"])
            .arg(root_dir().join("tools/kernel-ipvs/probe.py"))
            .args([&self.tap, &mac_text(&VM_MAC)])
            .args([&input, &sent, &out])
            .args(["--wait", "3"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "probe.py failed ({}): {text}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        let macs = text
            .lines()
            .map(|l| {
                let m = l.split_whitespace().nth(1).unwrap();
                (m != "-").then(|| m.to_string())
            })
            .collect::<Vec<_>>();
        assert_eq!(macs.len(), frames.len(), "probe.py: {text}");
        (macs, sent)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(kipvs()).args(["stop", &self.vm]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

// ---- fastlb ------------------------------------------------------------------------------

/// The segment as fastlb's replay sees it: the route and the real servers' neighbours.
fn nexthops() -> NextHops {
    let routes = NextHops::parse_routes(
        "10.90.0.0/16 dev eth0 proto kernel scope link src 10.90.0.2\n\
         fd90::/64 dev eth0 proto kernel metric 256 pref medium\n",
        "routes",
    )
    .unwrap();
    let mut neigh = String::new();
    for i in 0..REALS {
        let mac = mac_text(&real_mac(i));
        writeln!(neigh, "{} dev eth0 lladdr {mac} PERMANENT", real_v4(i)).unwrap();
        writeln!(neigh, "{} dev eth0 lladdr {mac} PERMANENT", real_v6(i)).unwrap();
    }
    // The director's eth0 is the VM's MAC: the frames are addressed to it.
    NextHops::with_links(
        &[("eth0".into(), MacAddr(VM_MAC))],
        routes,
        NextHops::parse_neighbours(&neigh, "neigh").unwrap(),
    )
}

/// Frames with their capture timestamps (microseconds).
type Frames = Vec<(u64, Vec<u8>)>;

/// Rules applied before some frames: the first segment's rules are the whole starting
/// configuration, later ones edits of the running one (possibly none).
struct Segment {
    rules: String,
    frames: Frames,
}

/// What fastlb's pipeline does with `segments`: the MAC each frame leaves with (`None`:
/// not transmitted).
fn fastlb_run(segments: &[Segment], fwmark: Option<&Fwmark>) -> Vec<Option<String>> {
    let path = Path::new("rules");
    let mut config = Config {
        dest_order: DestOrder::Kernel,
        ..Config::default()
    };
    if let Some(f) = fwmark {
        config.classifiers.push(ClassifierRule {
            protocol: Some(Protocol::Tcp),
            dst: f.prefix.parse().unwrap(),
            ports: (f.port, f.port),
            mark: f.mark,
        });
    }
    ipvsadm::restore(&mut config, &segments[0].rules, path).expect("the case's rules");
    let registry = Arc::new(DestRegistry::default());
    let mut publisher = Publisher::new(config.clone(), Arc::clone(&registry)).unwrap();
    let updates = publisher.subscribe();
    let capacity = 1 << 16;
    let conns = Arc::new(ConnTable::new(capacity, 1, Arc::clone(&registry)));
    let stats = Arc::new(WorkerStats::new(registry.capacity()));
    let settings = PipelineSettings {
        expire_budget: capacity,
        ..PipelineSettings::default()
    };
    let mut pipeline = Pipeline::new(
        0,
        publisher.table(),
        conns,
        Arc::new(nexthops()),
        stats,
        settings,
    )
    .with_updates(updates);
    let mut picks = Vec::new();
    let mut buf = vec![0u8; HEADROOM + 2048];
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            ipvsadm::restore(&mut config, &seg.rules, path).expect("the case's edit");
            publisher.replace(config.clone()).unwrap();
        }
        for (ts, data) in &seg.frames {
            let now = Instant::from_micros(*ts);
            pipeline.between_batches(now);
            buf[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
            let mut frame = Frame::new(&mut buf, HEADROOM, data.len());
            picks.push(match pipeline.process(now, &mut frame) {
                Verdict::Transmit => Some(mac_text(&frame.data()[..6])),
                _ => None,
            });
        }
    }
    picks
}

/// A pick as a letter: A for real server 0, ...; `-` for none.
fn letters(picks: &[Option<String>]) -> String {
    let by_mac: BTreeMap<String, char> = (0..REALS)
        .map(|i| (mac_text(&real_mac(i)), (b'A' + i as u8) as char))
        .collect();
    picks
        .iter()
        .map(|p| match p {
            Some(m) => by_mac.get(m).copied().unwrap_or('?'),
            None => '-',
        })
        .collect()
}

#[test]
fn every_scheduler_picks_what_the_kernel_picks() {
    if let Some(why) = missing() {
        println!("SKIP: {why}");
        return;
    }
    let lab = Lab::up();
    let kernel = lab.exec("uname -r; cat /proc/net/ip_vs | head -1");
    println!("kernel: {}", kernel.replace('\n', "; "));
    let mut report = String::new();
    let mut failures = Vec::new();
    let have_nft = lab.exec("command -v nft || true").contains("nft");
    // FASTLB_KERNEL_CASES=TEXT runs only the cases whose name contains TEXT (while working
    // on one); the known-answer vectors then run only if TEXT is "vectors".
    let only = std::env::var("FASTLB_KERNEL_CASES").ok();
    for (n, case) in cases().iter().enumerate() {
        if only
            .as_ref()
            .is_some_and(|o| !case.name.contains(o.as_str()))
        {
            continue;
        }
        if let Some(f) = &case.fwmark {
            if !have_nft {
                writeln!(
                    report,
                    "{:<44} SKIP: no nft in the VM (nftables)",
                    case.name
                )
                .unwrap();
                continue;
            }
            let mut script = String::from(
                "nft add table ip kipvs\n\
                 nft add chain ip kipvs pre '{ type filter hook prerouting priority -150; }'\n",
            );
            writeln!(
                script,
                "nft add rule ip kipvs pre ip daddr {} tcp dport {} meta mark set {}",
                f.prefix, f.port, f.mark
            )
            .unwrap();
            for a in &f.addrs {
                writeln!(script, "ip addr replace {a}/32 dev eth0").unwrap();
            }
            lab.exec(&script);
        }
        let mut vips = Vec::new();
        let mut kernel_picks = Vec::new();
        let mut segments: Vec<Segment> = Vec::new();
        let mut pending_rules = String::new();
        for (k, step) in case.steps.iter().enumerate() {
            match step {
                Step::Rules(text) => {
                    let mut script = String::new();
                    for line in text.lines() {
                        let svc = line
                            .strip_prefix("-A -t ")
                            .or_else(|| line.strip_prefix("-A -u "));
                        if let Some(v) = svc {
                            let addr = v.rsplit_once(':').unwrap().0;
                            let addr = addr.trim_matches(['[', ']']);
                            if !vips.contains(&addr.to_string()) {
                                vips.push(addr.to_string());
                                let how = if addr.contains(':') {
                                    "/128 dev eth0 nodad"
                                } else {
                                    "/32 dev eth0"
                                };
                                writeln!(script, "ip addr replace {addr}{how}").unwrap();
                            }
                        }
                    }
                    writeln!(script, "ipvsadm -R <<'EOF'\n{}EOF", text).unwrap();
                    lab.exec(&script);
                    pending_rules += text;
                }
                Step::Syns(list) | Step::Datagrams(list) => {
                    let build = match step {
                        Step::Syns(_) => syn_frame,
                        _ => udp_frame,
                    };
                    let frames: Vec<Vec<u8>> = list.iter().map(build).collect();
                    let (picks, sent) = lab.probe(&format!("c{n}s{k}"), &frames);
                    kernel_picks.extend(picks);
                    segments.push(Segment {
                        rules: std::mem::take(&mut pending_rules),
                        frames: read_pcap(&sent),
                    });
                }
            }
        }
        let want = letters(&kernel_picks);
        let got = letters(&fastlb_run(&segments, case.fwmark.as_ref()));
        let ok = want == got;
        writeln!(
            report,
            "{:<44} kernel {want:<36} fastlb {got:<36} {}",
            case.name,
            if ok { "ok" } else { "DIFFERS" }
        )
        .unwrap();
        if !ok {
            failures.push(case.name.clone());
        }
    }
    println!("{report}");
    let vector_failures = if only.as_ref().is_none_or(|o| o == "vectors") {
        kernel_vectors(&lab)
    } else {
        Vec::new()
    };
    assert!(
        failures.is_empty() && vector_failures.is_empty(),
        "fastlb differs from the kernel in: {}; the kernel differs from the vectors in: {}",
        failures.join(", "),
        vector_failures.join(", ")
    );
}

/// Runs the known-answer vectors through the kernel: each group is a service whose list is
/// the group's (its servers added in reverse, since the kernel puts each at the head), dh's
/// one service per virtual address. Groups with a table size the kernel was not built with
/// are fastlb's only. Returns the groups whose answers differ.
fn kernel_vectors(lab: &Lab) -> Vec<String> {
    let text = std::fs::read_to_string(root_dir().join("tools/kernel-ipvs/vectors.txt")).unwrap();
    let mut failures = Vec::new();
    let mut report = String::new();
    for (n, g) in vectors::parse(&text).iter().enumerate() {
        let label = format!(
            "vectors {} {} {}",
            g.sched,
            g.flags.join(","),
            g.list
                .iter()
                .map(|(l, w)| format!("{l}:{w}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        if g.size
            .is_some_and(|s| s != fastlb::service::DEFAULT_MH_TABLE_SIZE)
        {
            writeln!(
                report,
                "{label:<44} table size {}: fastlb only",
                g.size.unwrap()
            )
            .unwrap();
            continue;
        }
        let mut script = String::new();
        let mut services: Vec<(IpAddr, u16)> = Vec::new();
        for c in &g.conns {
            if !services.contains(&(c.vaddr, c.vport)) {
                services.push((c.vaddr, c.vport));
            }
        }
        let flags = if g.flags.is_empty() {
            String::new()
        } else {
            format!(" -b {}", g.flags.join(","))
        };
        let mut rules = String::new();
        for &(v, p) in &services {
            let how = if v.is_ipv6() {
                "/128 dev eth0 nodad"
            } else {
                "/32 dev eth0"
            };
            writeln!(script, "ip addr replace {v}{how}").unwrap();
            writeln!(rules, "-A -t {} -s {}{flags}", sock(v, p), g.sched).unwrap();
            for &(letter, w) in g.list.iter().rev() {
                let r = vectors::real_addr(letter, v.is_ipv6(), g.first);
                writeln!(rules, "-a -t {} -r {} -g -w {w}", sock(v, p), sock(r, p)).unwrap();
            }
        }
        writeln!(script, "ipvsadm -R <<'EOF'\n{rules}EOF").unwrap();
        lab.exec(&script);
        let frames: Vec<Vec<u8>> = g
            .conns
            .iter()
            .map(|c| {
                syn_frame(&Syn {
                    client: c.client,
                    cport: c.cport,
                    vaddr: c.vaddr,
                    vport: c.vport,
                })
            })
            .collect();
        let (picks, _) = lab.probe(&format!("v{n}"), &frames);
        let got = letters(&picks);
        let want: String = g.conns.iter().map(|c| c.answer.unwrap_or('-')).collect();
        let fastlb: String = vectors::fastlb_answers(g)
            .iter()
            .map(|a| a.unwrap_or('-'))
            .collect();
        let ok = got == want && fastlb == want;
        writeln!(
            report,
            "{label:<44} kernel {got:<24} vectors {want:<24} fastlb {fastlb:<24} {}",
            if ok { "ok" } else { "DIFFERS" }
        )
        .unwrap();
        if !ok {
            failures.push(label);
        }
    }
    println!("{report}");
    failures
}
