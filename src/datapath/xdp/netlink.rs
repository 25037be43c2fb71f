//! Routes and neighbours from the kernel over rtnetlink, as plain data.
//!
//! The control thread polls [`routes`] and [`neighbours`] (once a second is enough: a
//! missing neighbour costs the packets of that second, counted as `no_neighbour`) and
//! builds the workers' next-hop snapshot from them. [`resolve_neighbour`] asks the kernel to
//! resolve an address it has no entry for (ARP / neighbour discovery) without sending the
//! host any packet of ours: an `RTM_NEWNEIGH` with `NTF_USE`, as `ip neigh replace ADDR dev
//! IF use`.
//!
//! [`addresses`] lists the addresses every interface holds, and an [`AddressWatch`] says
//! when that list may have changed (the kernel's address notifications), so the control
//! thread sees keepalived add or remove a VRRP address within one turn of its loop.
//!
//! Parsing is separate from the socket so it is tested on hand-built messages. Multipath
//! routes (`RTA_MULTIPATH`) are not decoded: their gateway and output interface stay unset,
//! which the caller treats as unusable.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::service::Prefix;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NTF_USE: u8 = 0x01;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFADDRMSG_LEN: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// Multicast groups of address changes (`RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`).
const RTMGRP_IFADDR: u32 = 0x10 | 0x100;
const RTMSG_LEN: usize = 12;
const NDMSG_LEN: usize = 12;

/// Neighbour states (`NUD_*`).
pub mod nud {
    /// Resolution in progress.
    pub const INCOMPLETE: u16 = 0x01;
    /// Confirmed recently.
    pub const REACHABLE: u16 = 0x02;
    /// Valid but unconfirmed.
    pub const STALE: u16 = 0x04;
    /// Valid, confirmation pending.
    pub const DELAY: u16 = 0x08;
    /// Valid, being probed.
    pub const PROBE: u16 = 0x10;
    /// Resolution failed.
    pub const FAILED: u16 = 0x20;
    /// No resolution needed on this device.
    pub const NOARP: u16 = 0x40;
    /// Set by the administrator.
    pub const PERMANENT: u16 = 0x80;
}

/// Route types (`RTN_*`) callers usually care about.
pub mod rtn {
    /// A gateway or direct route.
    pub const UNICAST: u8 = 1;
    /// An address of this host.
    pub const LOCAL: u8 = 2;
    /// Discard silently.
    pub const BLACKHOLE: u8 = 6;
    /// Answer "host unreachable".
    pub const UNREACHABLE: u8 = 7;
}

/// Table ids.
pub const TABLE_MAIN: u32 = 254;
/// The local table (addresses of this host).
pub const TABLE_LOCAL: u32 = 255;

/// One route of the kernel's tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination prefix (`0.0.0.0/0` or `::/0` for a default route).
    pub dst: Prefix,
    /// Next-hop gateway; `None` for a directly connected prefix.
    pub gateway: Option<IpAddr>,
    /// Output interface index (0 if the route names none).
    pub oif: u32,
    /// Preferred source address.
    pub prefsrc: Option<IpAddr>,
    /// Routing table id ([`TABLE_MAIN`], [`TABLE_LOCAL`], ...).
    pub table: u32,
    /// Metric (priority); lower wins among equal prefixes.
    pub metric: u32,
    /// Route type ([`rtn`]).
    pub kind: u8,
}

/// One neighbour (ARP / NDP) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighEntry {
    /// The neighbour's address.
    pub addr: IpAddr,
    /// Its MAC address, once known.
    pub mac: Option<[u8; 6]>,
    /// Interface index.
    pub ifindex: u32,
    /// State bits ([`nud`]).
    pub state: u16,
}

impl NeighEntry {
    /// Whether the MAC may be used to send: resolved, even if unconfirmed.
    pub fn is_usable(&self) -> bool {
        self.mac.is_some()
            && self.state & (nud::REACHABLE | nud::STALE | nud::DELAY | nud::PROBE | nud::PERMANENT)
                != 0
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_ne_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes after a fixed header, as (type, payload); stops at the first malformed
/// one.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16_at(b, 0) as usize;
        if len < 4 || len > b.len() {
            return None;
        }
        // The top bits are NLA_F_NESTED / NLA_F_NET_BYTEORDER.
        let ty = u16_at(b, 2) & 0x3fff;
        let payload = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((ty, payload))
    })
}

fn addr(family: u8, b: &[u8]) -> Option<IpAddr> {
    match (family as i32, b.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        (libc::AF_INET6, 16) => {
            let a: [u8; 16] = b.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// Parses the body (after the netlink header) of an `RTM_NEWROUTE`.
pub(crate) fn parse_route(body: &[u8]) -> Option<RouteEntry> {
    if body.len() < RTMSG_LEN {
        return None;
    }
    let family = body[0];
    let dst_len = body[1];
    let unspecified = match family as i32 {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut r = RouteEntry {
        dst: Prefix {
            addr: unspecified,
            len: dst_len,
        },
        gateway: None,
        oif: 0,
        prefsrc: None,
        table: u32::from(body[4]),
        metric: 0,
        kind: body[7],
    };
    for (ty, p) in attrs(&body[RTMSG_LEN..]) {
        match ty {
            RTA_DST => r.dst.addr = addr(family, p)?,
            RTA_GATEWAY => r.gateway = addr(family, p),
            RTA_PREFSRC => r.prefsrc = addr(family, p),
            RTA_OIF if p.len() == 4 => r.oif = u32_at(p, 0),
            RTA_TABLE if p.len() == 4 => r.table = u32_at(p, 0),
            RTA_PRIORITY if p.len() == 4 => r.metric = u32_at(p, 0),
            _ => {}
        }
    }
    Some(r)
}

/// Parses the body of an `RTM_NEWNEIGH`.
pub(crate) fn parse_neigh(body: &[u8]) -> Option<NeighEntry> {
    if body.len() < NDMSG_LEN {
        return None;
    }
    let family = body[0];
    let ifindex = u32_at(body, 4);
    let state = u16_at(body, 8);
    let mut addr_v = None;
    let mut mac = None;
    for (ty, p) in attrs(&body[NDMSG_LEN..]) {
        match ty {
            NDA_DST => addr_v = addr(family, p),
            NDA_LLADDR if p.len() == 6 => mac = p.try_into().ok(),
            _ => {}
        }
    }
    Some(NeighEntry {
        addr: addr_v?,
        mac,
        ifindex,
        state,
    })
}

/// One address of an interface.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AddrEntry {
    /// The address.
    pub addr: IpAddr,
    /// The interface holding it.
    pub ifindex: u32,
}

/// Parses the body of an `RTM_NEWADDR`: the interface's own address is `IFA_LOCAL` (IPv4,
/// where `IFA_ADDRESS` is the peer of a point-to-point link) or `IFA_ADDRESS` (IPv6).
pub(crate) fn parse_addr(body: &[u8]) -> Option<AddrEntry> {
    if body.len() < IFADDRMSG_LEN {
        return None;
    }
    let family = body[0];
    let ifindex = u32_at(body, 4);
    let (mut local, mut address) = (None, None);
    for (ty, p) in attrs(&body[IFADDRMSG_LEN..]) {
        match ty {
            IFA_LOCAL => local = addr(family, p),
            IFA_ADDRESS => address = addr(family, p),
            _ => {}
        }
    }
    Some(AddrEntry {
        addr: local.or(address)?,
        ifindex,
    })
}

/// What one receive buffer of a dump held.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    More,
    Done,
}

/// Walks the netlink messages of a buffer, handing bodies of type `want` to `f`.
fn walk(buf: &[u8], want: u16, mut f: impl FnMut(&[u8])) -> io::Result<Chunk> {
    let mut b = buf;
    while b.len() >= NLMSG_HDR {
        let len = u32_at(b, 0) as usize;
        if len < NLMSG_HDR || len > b.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink message",
            ));
        }
        let ty = u16_at(b, 4);
        let body = &b[NLMSG_HDR..len];
        match ty {
            NLMSG_DONE => return Ok(Chunk::Done),
            NLMSG_ERROR => {
                let errno = if body.len() >= 4 {
                    u32_at(body, 0) as i32
                } else {
                    0
                };
                if errno == 0 {
                    return Ok(Chunk::Done);
                }
                return Err(io::Error::from_raw_os_error(-errno));
            }
            t if t == want => f(body),
            _ => {}
        }
        b = &b[align4(len).min(b.len())..];
    }
    Ok(Chunk::More)
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; owned right below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn header(len: usize, ty: u16, flags: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    m
}

/// Sends `req` and collects every message of type `want` until the dump ends (or the
/// ACK arrives).
fn request(req: &[u8], want: u16, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    let fd = socket()?;
    // SAFETY: `req` is valid for its length; the kernel is the implicit destination of an
    // unbound netlink socket's send.
    let n = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if walk(&buf[..n as usize], want, &mut f)? == Chunk::Done {
            return Ok(());
        }
    }
}

/// Every IPv4 and IPv6 route of every table.
pub fn routes() -> io::Result<Vec<RouteEntry>> {
    let mut req = header(
        NLMSG_HDR + RTMSG_LEN,
        RTM_GETROUTE,
        NLM_F_REQUEST | NLM_F_DUMP,
    );
    req.extend_from_slice(&[0u8; RTMSG_LEN]); // family AF_UNSPEC: both
    let mut out = Vec::new();
    request(&req, RTM_NEWROUTE, |b| out.extend(parse_route(b)))?;
    Ok(out)
}

/// Every IPv4 and IPv6 neighbour entry.
pub fn neighbours() -> io::Result<Vec<NeighEntry>> {
    let mut req = header(
        NLMSG_HDR + NDMSG_LEN,
        RTM_GETNEIGH,
        NLM_F_REQUEST | NLM_F_DUMP,
    );
    req.extend_from_slice(&[0u8; NDMSG_LEN]);
    let mut out = Vec::new();
    request(&req, RTM_NEWNEIGH, |b| out.extend(parse_neigh(b)))?;
    Ok(out)
}

/// Every IPv4 and IPv6 address of every interface.
pub fn addresses() -> io::Result<Vec<AddrEntry>> {
    let mut req = header(
        NLMSG_HDR + IFADDRMSG_LEN,
        RTM_GETADDR,
        NLM_F_REQUEST | NLM_F_DUMP,
    );
    req.extend_from_slice(&[0u8; IFADDRMSG_LEN]); // family AF_UNSPEC: both
    let mut out = Vec::new();
    request(&req, RTM_NEWADDR, |b| out.extend(parse_addr(b)))?;
    Ok(out)
}

/// The kernel's notifications of added and removed addresses, read without blocking.
#[derive(Debug)]
pub struct AddressWatch {
    fd: OwnedFd,
}

impl AddressWatch {
    /// Subscribes to the IPv4 and IPv6 address notifications of this network namespace.
    pub fn new() -> io::Result<AddressWatch> {
        // SAFETY: plain socket creation; owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = RTMGRP_IFADDR;
        // SAFETY: `sa` is a valid sockaddr_nl for the length passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(AddressWatch { fd })
    }

    /// Drains the notifications that arrived since the last call: true if there was any,
    /// or if the kernel dropped some (the socket's buffer overflowed), so the caller reads
    /// the addresses again.
    pub fn changed(&self) -> io::Result<bool> {
        let mut buf = [0u8; 8192];
        let mut any = false;
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                any = true;
                continue;
            }
            if n == 0 {
                return Ok(any);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(any),
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => any = true,
                _ => return Err(e),
            }
        }
    }
}

/// Asks the kernel to resolve `addr` on interface `ifindex` (ARP or neighbour
/// solicitation). Returns once the kernel accepted the request; the entry appears in
/// [`neighbours`] when the neighbour answers.
pub fn resolve_neighbour(addr: IpAddr, ifindex: u32) -> io::Result<()> {
    let (family, bytes): (u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let attr_len = 4 + bytes.len();
    let len = NLMSG_HDR + NDMSG_LEN + align4(attr_len);
    let mut req = header(
        len,
        RTM_NEWNEIGH,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    );
    req.push(family);
    req.extend_from_slice(&[0, 0, 0]);
    req.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    // State: ignored with NTF_USE (the kernel only triggers resolution), but must be set.
    req.extend_from_slice(&nud::INCOMPLETE.to_ne_bytes());
    req.push(NTF_USE);
    req.push(0);
    req.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    req.extend_from_slice(&NDA_DST.to_ne_bytes());
    req.extend_from_slice(&bytes);
    req.resize(len, 0);
    request(&req, 0, |_| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    fn msg(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut m = header(NLMSG_HDR + body.len(), ty, 0);
        m.extend_from_slice(body);
        m.resize(align4(m.len()), 0);
        m
    }

    /// `10.1.0.0/16 via 10.0.0.1 dev 3 src 10.0.0.2 metric 100` in table main.
    fn route_body() -> Vec<u8> {
        let mut b = vec![
            libc::AF_INET as u8,
            16,
            0,
            0,
            254,
            4,
            0,
            rtn::UNICAST,
            0,
            0,
            0,
            0,
        ];
        b.extend(attr(RTA_TABLE, &254u32.to_ne_bytes()));
        b.extend(attr(RTA_DST, &[10, 1, 0, 0]));
        b.extend(attr(RTA_GATEWAY, &[10, 0, 0, 1]));
        b.extend(attr(RTA_OIF, &3u32.to_ne_bytes()));
        b.extend(attr(RTA_PREFSRC, &[10, 0, 0, 2]));
        b.extend(attr(RTA_PRIORITY, &100u32.to_ne_bytes()));
        b
    }

    #[test]
    fn parses_a_gateway_route() {
        let r = parse_route(&route_body()).unwrap();
        assert_eq!(r.dst, "10.1.0.0/16".parse().unwrap());
        assert_eq!(r.gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(r.prefsrc, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(
            (r.oif, r.table, r.metric, r.kind),
            (3, 254, 100, rtn::UNICAST)
        );
    }

    #[test]
    fn default_v6_route_has_the_unspecified_prefix() {
        let mut b = vec![
            libc::AF_INET6 as u8,
            0,
            0,
            0,
            254,
            4,
            0,
            rtn::UNICAST,
            0,
            0,
            0,
            0,
        ];
        let gw: Ipv6Addr = "fe80::1".parse().unwrap();
        b.extend(attr(RTA_GATEWAY, &gw.octets()));
        let r = parse_route(&b).unwrap();
        assert_eq!(r.dst, "::/0".parse().unwrap());
        assert_eq!(r.gateway, Some(IpAddr::V6(gw)));
    }

    #[test]
    fn parses_neighbours_and_their_usability() {
        let mut b = vec![libc::AF_INET as u8, 0, 0, 0];
        b.extend_from_slice(&7i32.to_ne_bytes());
        b.extend_from_slice(&nud::STALE.to_ne_bytes());
        b.extend_from_slice(&[0, 1]);
        b.extend(attr(NDA_DST, &[192, 168, 1, 9]));
        b.extend(attr(NDA_LLADDR, &[2, 0, 0, 0, 0, 9]));
        let n = parse_neigh(&b).unwrap();
        assert_eq!(n.addr, "192.168.1.9".parse::<IpAddr>().unwrap());
        assert_eq!((n.mac, n.ifindex), (Some([2, 0, 0, 0, 0, 9]), 7));
        assert!(n.is_usable());
        let failed = NeighEntry {
            state: nud::FAILED,
            ..n.clone()
        };
        assert!(!failed.is_usable());
        let incomplete = NeighEntry {
            mac: None,
            state: nud::INCOMPLETE,
            ..n
        };
        assert!(!incomplete.is_usable());
    }

    #[test]
    fn walk_collects_until_done_and_reports_errors() {
        let mut buf = msg(RTM_NEWROUTE, &route_body());
        buf.extend(msg(RTM_NEWROUTE, &route_body()));
        let mut n = 0;
        assert_eq!(walk(&buf, RTM_NEWROUTE, |_| n += 1).unwrap(), Chunk::More);
        buf.extend(msg(NLMSG_DONE, &0u32.to_ne_bytes()));
        assert_eq!(walk(&buf, RTM_NEWROUTE, |_| n += 1).unwrap(), Chunk::Done);
        assert_eq!(n, 4);
        let err = msg(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            walk(&err, 0, |_| {}).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        let ack = msg(NLMSG_ERROR, &0i32.to_ne_bytes());
        assert_eq!(walk(&ack, 0, |_| {}).unwrap(), Chunk::Done);
    }

    #[test]
    fn truncated_input_is_refused_not_read_past() {
        let body = route_body();
        for cut in 0..body.len() {
            let _ = parse_route(&body[..cut]);
        }
        let mut m = msg(RTM_NEWROUTE, &body);
        m.truncate(m.len() - 3);
        assert!(walk(&m, RTM_NEWROUTE, |_| {}).is_err());
    }

    #[test]
    fn parses_addresses_preferring_the_local_one() {
        let mut body = vec![libc::AF_INET as u8, 24, 0, 0];
        body.extend_from_slice(&7u32.to_ne_bytes());
        body.extend(attr(IFA_ADDRESS, &[10, 0, 0, 9]));
        body.extend(attr(IFA_LOCAL, &[10, 0, 0, 1]));
        assert_eq!(
            parse_addr(&body),
            Some(AddrEntry {
                addr: "10.0.0.1".parse().unwrap(),
                ifindex: 7
            })
        );
        let mut v6 = vec![libc::AF_INET6 as u8, 64, 0, 0];
        v6.extend_from_slice(&3u32.to_ne_bytes());
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        v6.extend(attr(IFA_ADDRESS, &a.octets()));
        assert_eq!(parse_addr(&v6).unwrap().addr, IpAddr::V6(a));
        assert_eq!(parse_addr(&v6[..4]), None);
    }

    #[test]
    fn reads_this_hosts_local_table() {
        let r = routes().unwrap();
        assert!(
            r.iter().any(|r| r.table == TABLE_LOCAL
                && r.kind == rtn::LOCAL
                && r.dst == "127.0.0.1/32".parse().unwrap()),
            "no local route for 127.0.0.1 in {r:?}"
        );
        neighbours().unwrap();
    }

    /// Removes the test's namespaces however the test ends.
    struct Netns(Vec<String>);
    impl Drop for Netns {
        fn drop(&mut self) {
            for n in &self.0 {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", n])
                    .status();
            }
        }
    }

    fn ip(args: &str) {
        let ok = std::process::Command::new("ip")
            .args(args.split_whitespace())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {args}");
    }

    #[test]
    fn resolves_a_neighbour_in_a_namespace() {
        if !crate::test_support::is_root() {
            crate::test_support::skip("needs root for network namespaces");
            return;
        }
        let (a, b) = (
            format!("flbxnl{}a", std::process::id()),
            format!("flbxnl{}b", std::process::id()),
        );
        let _guard = Netns(vec![a.clone(), b.clone()]);
        ip(&format!("netns add {a}"));
        ip(&format!("netns add {b}"));
        ip(&format!(
            "link add va netns {a} type veth peer name vb netns {b}"
        ));
        ip(&format!("-n {a} addr add 10.78.0.1/24 dev va"));
        ip(&format!("-n {b} addr add 10.78.0.2/24 dev vb"));
        ip(&format!("-n {a} link set va up"));
        ip(&format!("-n {b} link set vb up"));
        let peer_mac = std::process::Command::new("ip")
            .args(["netns", "exec", &b, "cat", "/sys/class/net/vb/address"])
            .output()
            .unwrap();
        let peer_mac =
            crate::datapath::xdp::parse_mac(String::from_utf8_lossy(&peer_mac.stdout).trim())
                .unwrap();
        let ns_path = format!("/var/run/netns/{a}");
        // Network namespaces are per thread: this thread enters A, the test does not.
        let (idx, routes, neigh) = std::thread::spawn(move || {
            let f = std::fs::File::open(ns_path).unwrap();
            // SAFETY: a namespace fd we opened; affects only this thread.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let idx = crate::datapath::xdp::ifindex("va").unwrap();
            // An address added in the namespace is announced and then listed.
            let watch = AddressWatch::new().unwrap();
            assert!(!watch.changed().unwrap(), "nothing changed yet");
            let extra: IpAddr = "10.78.0.77".parse().unwrap();
            let added = std::process::Command::new("ip")
                .args(["addr", "add", "10.78.0.77/24", "dev", "va"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(added, "ip addr add in the namespace");
            let mut seen = false;
            for _ in 0..50 {
                if watch.changed().unwrap() {
                    seen = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(seen, "no notification of the new address");
            assert!(addresses().unwrap().contains(&AddrEntry {
                addr: extra,
                ifindex: idx
            }));
            let target: IpAddr = "10.78.0.2".parse().unwrap();
            resolve_neighbour(target, idx).unwrap();
            let mut found = None;
            for _ in 0..50 {
                found = neighbours()
                    .unwrap()
                    .into_iter()
                    .find(|n| n.addr == target && n.is_usable());
                if found.is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            (idx, routes().unwrap(), found)
        })
        .join()
        .unwrap();
        let n = neigh.expect("the neighbour was resolved");
        assert_eq!((n.mac, n.ifindex), (Some(peer_mac), idx));
        assert!(routes.iter().any(|r| r.table == TABLE_MAIN
            && r.dst == "10.78.0.0/24".parse().unwrap()
            && r.oif == idx
            && r.gateway.is_none()
            && r.prefsrc == Some("10.78.0.1".parse().unwrap())));
    }
}
