//! Route and neighbour dumps, measured: fastlb's own netlink code (compiled here from
//! `src/datapath/xdp/netlink.rs`, the file the product uses) against the same dumps through
//! `netlink-sys` and `netlink-packet-route`. Run inside a namespace that holds a table of a
//! few thousand entries (`run.sh` builds one); prints one JSON object.
//!
//! Both sides return fastlb's own `RouteEntry` and `NeighEntry`, and the two results must be
//! equal, so the crate side does the same work (parse every attribute fastlb needs), no less.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// What `netlink.rs` needs of the fastlb crate.
mod service {
    use std::net::IpAddr;

    /// An address prefix.
    #[derive(Copy, Clone, Debug, PartialEq, Eq)]
    pub struct Prefix {
        pub addr: IpAddr,
        pub len: u8,
    }
}

#[allow(dead_code)]
#[path = "../../../src/datapath/xdp/netlink.rs"]
mod own;

use own::{NeighEntry, RouteEntry};
use service::Prefix;

/// Sends one dump request and hands every inner message to `f`.
fn dump(msg: RouteNetlinkMessage, mut f: impl FnMut(RouteNetlinkMessage)) {
    let mut socket = Socket::new(NETLINK_ROUTE).expect("netlink socket");
    socket.bind_auto().expect("bind");
    socket.connect(&SocketAddr::new(0, 0)).expect("connect");
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_DUMP | NLM_F_REQUEST;
    hdr.sequence_number = 1;
    let mut req = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
    req.finalize();
    let mut buf = vec![0; req.header.length as usize];
    req.serialize(&mut buf[..]);
    socket.send(&buf[..], 0).expect("send");
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0).expect("recv");
        let mut offset = 0;
        while offset < size {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[offset..size])
                .expect("a netlink message");
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return,
                NetlinkPayload::Error(e) => panic!("netlink error {e:?}"),
                NetlinkPayload::InnerMessage(m) => f(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += (len + 3) & !3;
        }
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn crate_route(m: RouteMessage) -> Option<RouteEntry> {
    let unspecified = match u8::from(m.header.address_family) as i32 {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut r = RouteEntry {
        dst: Prefix {
            addr: unspecified,
            len: m.header.destination_prefix_length,
        },
        gateway: None,
        oif: 0,
        prefsrc: None,
        table: u32::from(m.header.table),
        metric: 0,
        kind: u8::from(m.header.kind),
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => r.dst.addr = route_addr(d)?,
            RouteAttribute::Gateway(g) => r.gateway = route_addr(g),
            RouteAttribute::PrefSource(p) => r.prefsrc = route_addr(p),
            RouteAttribute::Oif(i) => r.oif = *i,
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Priority(p) => r.metric = *p,
            _ => {}
        }
    }
    Some(r)
}

fn crate_neigh(m: NeighbourMessage) -> Option<NeighEntry> {
    let mut addr = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                addr = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                addr = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                mac = l.as_slice().try_into().ok()
            }
            _ => {}
        }
    }
    Some(NeighEntry {
        addr: addr?,
        mac,
        ifindex: m.header.ifindex,
        state: u16::from(m.header.state),
    })
}

fn crate_routes() -> Vec<RouteEntry> {
    let mut out = Vec::new();
    dump(
        RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        |m| {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                out.extend(crate_route(r));
            }
        },
    );
    out
}

fn crate_neighbours() -> Vec<NeighEntry> {
    let mut out = Vec::new();
    dump(
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
        |m| {
            if let RouteNetlinkMessage::NewNeighbour(n) = m {
                out.extend(crate_neigh(n));
            }
        },
    );
    out
}

/// This thread's CPU time (user and system) in microseconds: the kernel's work building
/// the dump and the parsing, without the time other processes of a loaded machine take.
fn cpu_us() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

/// Median and minimum CPU microseconds per call over `reps` calls.
fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, f64) {
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = cpu_us();
            std::hint::black_box(f());
            cpu_us() - t
        })
        .collect();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("repetitions"))
        .unwrap_or(200);
    let own_routes = own::routes().expect("own route dump");
    let own_neigh = own::neighbours().expect("own neighbour dump");
    assert_eq!(own_routes, crate_routes(), "route dumps differ");
    assert_eq!(own_neigh, crate_neighbours(), "neighbour dumps differ");
    // Interleaved, so both sides see the same machine load.
    let mut rows = Vec::new();
    for round in 0..3 {
        let (own_r, own_r_min) = time(reps, || own::routes().unwrap());
        let (crate_r, crate_r_min) = time(reps, crate_routes);
        let (own_n, own_n_min) = time(reps, || own::neighbours().unwrap());
        let (crate_n, crate_n_min) = time(reps, crate_neighbours);
        rows.push(format!(
            "{{\"round\":{round},\"routes_cpu_us\":{{\"own_median\":{own_r:.1},\"own_min\":{own_r_min:.1},\"crate_median\":{crate_r:.1},\"crate_min\":{crate_r_min:.1}}},\"neighbours_cpu_us\":{{\"own_median\":{own_n:.1},\"own_min\":{own_n_min:.1},\"crate_median\":{crate_n:.1},\"crate_min\":{crate_n_min:.1}}}}}"
        ));
    }
    println!(
        "{{\"routes\":{},\"neighbours\":{},\"reps\":{reps},\"rounds\":[{}]}}",
        own_routes.len(),
        own_neigh.len(),
        rows.join(",")
    );
}
