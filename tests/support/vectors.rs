//! Known-answer vectors for the kernel's hashing schedulers (`tools/kernel-ipvs/vectors.txt`,
//! format in `tools/kernel-ipvs/hashing.py`): reading, writing, and what fastlb answers.

use std::net::IpAddr;

use fastlb::sched::{self, SchedInput};
use fastlb::service::{
    Dest, DestId, DestRegistry, ForwardMethod, Protocol, RealServer, SchedFlags, SchedulerKind,
    ServiceEntry, ServiceKey, VirtualService, DEFAULT_MH_TABLE_SIZE,
};
use fastlb::time::Instant;

/// One group: a service and the new connections scheduled on it.
#[derive(Clone, Debug)]
pub struct Group {
    pub sched: SchedulerKind,
    pub flags: Vec<String>,
    /// Maglev table size; `None` is the default (the only size the kernel offers).
    pub size: Option<u32>,
    /// Real servers in list order: letter (A = .11) and weight.
    pub list: Vec<(char, i32)>,
    /// The address of real server A, when not the plan's.
    pub first: Option<IpAddr>,
    pub conns: Vec<Conn>,
}

/// One new connection and the real server it should get (`None`: none).
#[derive(Clone, Debug)]
pub struct Conn {
    pub client: IpAddr,
    pub cport: u16,
    pub vaddr: IpAddr,
    pub vport: u16,
    pub answer: Option<char>,
}

/// Real server `letter`: A = `first` (by default the address plan's 10.90.0.11 or
/// fd90::11), B the next address, ...
pub fn real_addr(letter: char, v6: bool, first: Option<IpAddr>) -> IpAddr {
    let i = u128::from(letter as u8 - b'A');
    match first.unwrap_or(if v6 {
        "fd90::11".parse().unwrap()
    } else {
        "10.90.0.11".parse().unwrap()
    }) {
        IpAddr::V4(a) => std::net::Ipv4Addr::from(u32::from(a) + i as u32).into(),
        IpAddr::V6(a) => std::net::Ipv6Addr::from(u128::from(a) + i).into(),
    }
}

/// Reads vectors; lines without `= ANSWER` get `None`.
pub fn parse(text: &str) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let mut words = head.split_whitespace();
            let sched = words.next().unwrap().parse().unwrap();
            let mut g = Group {
                sched,
                flags: Vec::new(),
                size: None,
                list: Vec::new(),
                first: None,
                conns: Vec::new(),
            };
            for w in words {
                let (k, v) = w.split_once('=').unwrap();
                match k {
                    "flags" if v != "-" => g.flags = v.split(',').map(String::from).collect(),
                    "size" if v != "-" => g.size = Some(v.parse().unwrap()),
                    "first" => g.first = Some(v.parse().unwrap()),
                    "list" => {
                        g.list = v
                            .split(',')
                            .map(|x| {
                                let (l, w) = x.split_once(':').unwrap();
                                (l.chars().next().unwrap(), w.parse().unwrap())
                            })
                            .collect()
                    }
                    _ => {}
                }
            }
            groups.push(g);
            continue;
        }
        let (left, answer) = match line.split_once('=') {
            Some((l, a)) => (l, a.trim().chars().next().filter(|&c| c != '-')),
            None => (line, None),
        };
        let w: Vec<&str> = left.split_whitespace().collect();
        groups.last_mut().unwrap().conns.push(Conn {
            client: w[0].parse().unwrap(),
            cport: w[1].parse().unwrap(),
            vaddr: w[2].parse().unwrap(),
            vport: w[3].parse().unwrap(),
            answer,
        });
    }
    groups
}

/// Writes groups without answers (for `hashing.py answer`).
#[allow(dead_code)] // Of the two test binaries that include this file, one asks the oracle.
pub fn render_questions(groups: &[Group]) -> String {
    let mut out = String::new();
    for g in groups {
        let flags = if g.flags.is_empty() {
            "-".to_string()
        } else {
            g.flags.join(",")
        };
        let size = g.size.map_or("-".to_string(), |s| s.to_string());
        let list: Vec<String> = g.list.iter().map(|(l, w)| format!("{l}:{w}")).collect();
        let first = g.first.map_or(String::new(), |a| format!(" first={a}"));
        out += &format!(
            "[{} flags={flags} size={size} list={}{first}]\n",
            g.sched,
            list.join(",")
        );
        for c in &g.conns {
            out += &format!("{} {} {} {}\n", c.client, c.cport, c.vaddr, c.vport);
        }
    }
    out
}

fn sched_flags(names: &[String]) -> SchedFlags {
    let has = |n: &str| names.iter().any(|f| f == n);
    SchedFlags {
        sh_fallback: has("sh-fallback"),
        sh_port: has("sh-port"),
        mh_fallback: has("mh-fallback"),
        mh_port: has("mh-port"),
    }
}

/// What fastlb's scheduler answers for each connection of `g`: the service with the group's
/// list in list order (as `dest_order = "kernel"` gives a kernel's list), every server
/// added with its weight, none overloaded.
pub fn fastlb_answers(g: &Group) -> Vec<Option<char>> {
    let first = &g.conns[0];
    let v6 = first.vaddr.is_ipv6();
    let dests: Vec<Dest> = g
        .list
        .iter()
        .enumerate()
        .map(|(i, &(l, w))| Dest {
            id: DestId(i as u32),
            server: RealServer {
                addr: real_addr(l, v6, g.first),
                port: first.vport,
                weight: w,
                method: ForwardMethod::DirectRouting,
                upper_threshold: 0,
                lower_threshold: 0,
            },
            last_weight: w,
        })
        .collect();
    let svc = ServiceEntry {
        config: VirtualService {
            key: ServiceKey::Tuple {
                protocol: Protocol::Tcp,
                addr: first.vaddr,
                port: first.vport,
            },
            scheduler: g.sched,
            flags: sched_flags(&g.flags),
            mh_table_size: g.size.unwrap_or(DEFAULT_MH_TABLE_SIZE),
            persistence: None,
            reals: dests.iter().map(|d| d.server.clone()).collect(),
        },
        dests,
    };
    let registry = DestRegistry::new(g.list.len().max(1));
    let mut s = sched::for_service(&svc);
    g.conns
        .iter()
        .map(|c| {
            let input = SchedInput {
                client: c.client,
                client_port: c.cport,
                vaddr: c.vaddr,
                vport: c.vport,
                now: Instant::from_secs(1),
            };
            s.schedule(&svc.dests, &registry, &input)
                .map(|i| g.list[i].0)
        })
        .collect()
}
