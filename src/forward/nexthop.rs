//! Next hops: which MAC a rewritten frame goes to, and from which source address a tunnel
//! packet leaves.
//!
//! The tables mirror the kernel's: routes (longest prefix match) and neighbours (IP -> MAC).
//! The AF_XDP backend fills them from netlink; replay reads them from `ip route show` and
//! `ip neigh show` text, so a capture replays against the same next hops the director had.

use std::collections::HashMap;
use std::net::IpAddr;

use thiserror::Error;

use crate::service::Prefix;
use crate::stats::DropReason;
pub use crate::wire::ethernet::MacAddr;

/// One unicast route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (`default` is /0).
    pub dst: Prefix,
    /// Gateway (`via`), if not directly connected.
    pub gateway: Option<IpAddr>,
    /// Output device name (`dev`), if given.
    pub dev: Option<String>,
    /// Preferred source address (`src`).
    pub src: Option<IpAddr>,
    /// Path MTU (`mtu`), if set on the route.
    pub mtu: Option<u32>,
    /// Route metric; lower wins between equal prefixes.
    pub metric: u32,
    /// A `local` route: `dst` is one of the director's own addresses.
    pub local: bool,
}

impl MacAddr {
    /// Whether this is a group address (multicast or broadcast: the I/G bit is set).
    #[inline]
    pub fn is_group(self) -> bool {
        self.0[0] & 1 != 0
    }

    /// The address as a number, for cheap comparisons.
    #[inline]
    fn key(self) -> u64 {
        let m = self.0;
        u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
    }
}

/// Where a frame for some address goes next.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The next hop's MAC address.
    pub mac: MacAddr,
    /// The output device's own MAC address: the source of the rewritten frame.
    pub src_mac: MacAddr,
    /// Index of the output device in [`NextHops::devices`].
    pub dev: u16,
    /// Source address the kernel would pick for this destination, if known.
    pub src: Option<IpAddr>,
    /// MTU toward the destination.
    pub mtu: u32,
}

/// A route or neighbour file line that cannot be read.
#[derive(Debug, Error)]
#[error("{file}:{line}: {message}")]
pub struct NextHopParseError {
    /// File name as given.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// FxHash-style hasher for the neighbour map: a multiply per word instead of SipHash's
/// rounds, since [`NextHops::resolve`] looks a neighbour up on every packet. Its keys are
/// the kernel's neighbour entries, not chosen by whoever sends the packet being resolved.
#[derive(Copy, Clone, Debug, Default)]
struct NeighHasher(u64);

impl std::hash::Hasher for NeighHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type NeighMap = HashMap<IpAddr, MacAddr, std::hash::BuildHasherDefault<NeighHasher>>;

/// What a route resolves to apart from the neighbour of an on-link destination, worked out
/// when the tables change so the per-packet [`NextHops::resolve`] does no string compares
/// or table scans beyond the route lookup.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Derived {
    /// Index of the route's device in `devices`.
    dev: u16,
    /// The route's source address (`source_for`).
    src: Option<IpAddr>,
    /// The gateway's MAC, for a route with a gateway whose neighbour is known.
    gateway_mac: Option<MacAddr>,
    /// The route device's own MAC, if the device is one whose MAC is known.
    src_mac: Option<MacAddr>,
}

/// The routing and neighbour tables a worker resolves next hops from.
#[derive(Clone, Debug)]
pub struct NextHops {
    routes_v4: Vec<Route>,
    routes_v6: Vec<Route>,
    /// `derived_v4[i]` belongs to `routes_v4[i]`; rebuilt by every change.
    derived_v4: Vec<Derived>,
    derived_v6: Vec<Derived>,
    neigh: NeighMap,
    devices: Vec<String>,
    /// `device_macs[i]` is the own MAC of `devices[i]`, where known.
    device_macs: Vec<Option<MacAddr>>,
    /// Further unicast MACs the director takes frames for (`accept_macs`: VRRP virtual
    /// MACs and the like).
    extra_macs: Vec<MacAddr>,
    /// Every unicast MAC a frame may be addressed to, as [`MacAddr::key`]s: the devices'
    /// own and `extra_macs`. Derived.
    accepted: Vec<u64>,
    /// The director's own addresses, with their device (from `local` routes).
    locals: Vec<(IpAddr, Option<String>)>,
    /// MTU used where the route sets none.
    pub default_mtu: u32,
}

impl Default for NextHops {
    fn default() -> Self {
        NextHops {
            routes_v4: Vec::new(),
            routes_v6: Vec::new(),
            derived_v4: Vec::new(),
            derived_v6: Vec::new(),
            neigh: NeighMap::default(),
            devices: Vec::new(),
            device_macs: Vec::new(),
            extra_macs: Vec::new(),
            accepted: Vec::new(),
            locals: Vec::new(),
            default_mtu: 1500,
        }
    }
}

impl NextHops {
    /// Tables from routes and neighbours.
    pub fn new(
        routes: Vec<Route>,
        neighbours: impl IntoIterator<Item = (IpAddr, MacAddr)>,
    ) -> NextHops {
        NextHops::with_devices(&[], routes, neighbours)
    }

    /// Tables like [`NextHops::new`] whose device indexes start with `devices`, in that
    /// order: the backend's interface list, so [`NextHop::dev`] is the index of the
    /// interface to send from.
    pub fn with_devices(
        devices: &[String],
        routes: Vec<Route>,
        neighbours: impl IntoIterator<Item = (IpAddr, MacAddr)>,
    ) -> NextHops {
        let mut t = NextHops {
            devices: devices.to_vec(),
            ..NextHops::default()
        };
        for r in routes {
            if r.local {
                t.locals.push((r.dst.addr, r.dev));
            } else {
                t.insert_route(r);
            }
        }
        t.neigh.extend(neighbours);
        t.derive();
        t
    }

    /// Tables like [`NextHops::with_devices`] whose devices are `links`, in that order,
    /// each with its own MAC address (what `ip link show` says, or the kernel).
    pub fn with_links(
        links: &[(String, MacAddr)],
        routes: Vec<Route>,
        neighbours: impl IntoIterator<Item = (IpAddr, MacAddr)>,
    ) -> NextHops {
        let names: Vec<String> = links.iter().map(|(n, _)| n.clone()).collect();
        let mut t = NextHops::with_devices(&names, routes, neighbours);
        t.device_macs = links.iter().map(|(_, m)| Some(*m)).collect();
        t.derive();
        t
    }

    /// Records the own MAC address of device `dev` (added to the devices if new).
    pub fn set_device_mac(&mut self, dev: &str, mac: MacAddr) {
        let i = match self.devices.iter().position(|d| d == dev) {
            Some(i) => i,
            None => {
                self.devices.push(dev.to_string());
                self.devices.len() - 1
            }
        };
        self.device_macs.resize(self.devices.len(), None);
        self.device_macs[i] = Some(mac);
        self.derive();
    }

    /// Sets the further unicast MACs the director takes frames for besides its devices'
    /// own (`accept_macs`: VRRP virtual MACs and the like).
    pub fn set_extra_macs(&mut self, macs: &[MacAddr]) {
        self.extra_macs = macs.to_vec();
        self.derive();
    }

    /// The further MACs of [`NextHops::set_extra_macs`].
    pub fn extra_macs(&self) -> &[MacAddr] {
        &self.extra_macs
    }

    /// The own MAC of device `dev` (an index into [`NextHops::devices`]), if known.
    #[inline]
    pub fn device_mac(&self, dev: u16) -> Option<MacAddr> {
        self.device_macs.get(usize::from(dev)).copied().flatten()
    }

    /// Whether a frame sent to `dst` is the director's, as the kernel's `eth_type_trans`
    /// decides (anything else is `PACKET_OTHERHOST`, which IP never sees): a group address
    /// (broadcast, multicast), the own MAC of the device it came in on (`ingress`, an
    /// index into [`NextHops::devices`]; `None`: any of the devices'), or one of the
    /// extra MACs.
    #[inline]
    pub fn accepts(&self, dst: MacAddr, ingress: Option<u16>) -> bool {
        if dst.is_group() {
            return true;
        }
        if let Some(own) = ingress.and_then(|i| self.device_mac(i)) {
            if own == dst {
                return true;
            }
            let key = dst.key();
            return self.extra_macs.iter().any(|m| m.key() == key);
        }
        let key = dst.key();
        self.accepted.contains(&key)
    }

    /// Recomputes every route's [`Derived`] and the accepted MACs from the current tables.
    fn derive(&mut self) {
        self.device_macs.resize(self.devices.len(), None);
        self.accepted = self
            .device_macs
            .iter()
            .flatten()
            .chain(&self.extra_macs)
            .map(|m| m.key())
            .collect();
        let derive = |r: &Route| {
            let dev = r
                .dev
                .as_ref()
                .and_then(|d| self.devices.iter().position(|x| x == d));
            Derived {
                dev: dev.unwrap_or(0) as u16,
                src: self.source_for(r),
                gateway_mac: r.gateway.and_then(|g| self.neigh.get(&g).copied()),
                src_mac: dev.and_then(|i| self.device_macs[i]),
            }
        };
        let v4 = self.routes_v4.iter().map(derive).collect();
        let v6 = self.routes_v6.iter().map(derive).collect();
        self.derived_v4 = v4;
        self.derived_v6 = v6;
    }

    /// Records one of the director's own addresses on `dev`: the source of last resort for
    /// packets the director originates (tunnel headers), as the kernel picks an address of
    /// the output device.
    pub fn add_local(&mut self, addr: IpAddr, dev: Option<String>) {
        self.locals.push((addr, dev));
        self.derive();
    }

    /// Adds a route, keeping each family sorted longest prefix first, then lowest metric.
    pub fn add_route(&mut self, r: Route) {
        self.insert_route(r);
        self.derive();
    }

    fn insert_route(&mut self, r: Route) {
        if let Some(d) = &r.dev {
            if !self.devices.contains(d) {
                self.devices.push(d.clone());
            }
        }
        let list = if r.dst.addr.is_ipv4() {
            &mut self.routes_v4
        } else {
            &mut self.routes_v6
        };
        list.push(r);
        list.sort_by(|a, b| b.dst.len.cmp(&a.dst.len).then(a.metric.cmp(&b.metric)));
    }

    /// Records a neighbour.
    pub fn add_neighbour(&mut self, ip: IpAddr, mac: MacAddr) {
        self.neigh.insert(ip, mac);
        self.derive();
    }

    /// The director's own addresses (from `local` routes).
    pub fn local_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.locals.iter().map(|(a, _)| *a)
    }

    /// Output device names, indexed by [`NextHop::dev`].
    pub fn devices(&self) -> &[String] {
        &self.devices
    }

    /// The route the kernel would use for `dst`: longest prefix, then lowest metric.
    pub fn route(&self, dst: IpAddr) -> Option<&Route> {
        let list = if dst.is_ipv4() {
            &self.routes_v4
        } else {
            &self.routes_v6
        };
        list.iter().find(|r| r.dst.contains(dst))
    }

    /// Resolves the next hop for `dst`.
    #[inline]
    pub fn resolve(&self, dst: IpAddr) -> Result<NextHop, DropReason> {
        let (routes, derived) = if dst.is_ipv4() {
            (&self.routes_v4, &self.derived_v4)
        } else {
            (&self.routes_v6, &self.derived_v6)
        };
        let i = routes
            .iter()
            .position(|r| r.dst.contains(dst))
            .ok_or(DropReason::NoRoute)?;
        let (route, d) = (&routes[i], &derived[i]);
        // Out of a device whose own MAC is unknown (not one fastlb serves): no route of ours.
        let src_mac = d.src_mac.ok_or(DropReason::NoRoute)?;
        let mac = match route.gateway {
            Some(_) => d.gateway_mac,
            None => self.neigh.get(&dst).copied(),
        }
        .ok_or(DropReason::NoNeighbour)?;
        Ok(NextHop {
            mac,
            src_mac,
            dev: d.dev,
            src: d.src,
            mtu: route.mtu.unwrap_or(self.default_mtu),
        })
    }

    /// The source address for packets sent along `route`: its `src`, else the `src` of the
    /// connected route that reaches its gateway (as the kernel takes the output device's
    /// address).
    fn source_for(&self, route: &Route) -> Option<IpAddr> {
        let connected = match route.gateway {
            None => Some(route),
            Some(gw) => {
                let list = if gw.is_ipv4() {
                    &self.routes_v4
                } else {
                    &self.routes_v6
                };
                list.iter()
                    .find(|r| r.gateway.is_none() && r.dst.contains(gw))
            }
        };
        route.src.or(connected.and_then(|r| r.src)).or_else(|| {
            // No `src` (IPv6 routes never show one): an address of the output device,
            // preferring one inside the connected prefix, as source address selection does.
            let same_dev = |(a, d): &&(IpAddr, Option<String>)| {
                a.is_ipv4() == route.dst.addr.is_ipv4() && (route.dev.is_none() || *d == route.dev)
            };
            let mut candidates = self.locals.iter().filter(same_dev);
            connected
                .and_then(|c| {
                    self.locals
                        .iter()
                        .filter(same_dev)
                        .find(|(a, _)| c.dst.contains(*a))
                })
                .or_else(|| candidates.next())
                .map(|(a, _)| *a)
        })
    }

    /// Parses `ip route show` / `ip -6 route show` output (both may be mixed in one file).
    /// Route types other than unicast (`local`, `broadcast`, `multicast`, ...) are skipped;
    /// `blackhole`, `unreachable` and `prohibit` routes are kept as routes nothing resolves
    /// through.
    pub fn parse_routes(text: &str, file: &str) -> Result<Vec<Route>, NextHopParseError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let err = |message: String| NextHopParseError {
                file: file.to_string(),
                line: i + 1,
                message,
            };
            let mut words = line.split_whitespace().peekable();
            let Some(mut first) = words.next() else {
                continue;
            };
            let mut local = false;
            if first.starts_with('#') {
                continue;
            }
            match first {
                "broadcast" | "multicast" | "anycast" | "nat" | "throw" => continue,
                "local" => {
                    local = true;
                    first = words
                        .next()
                        .ok_or_else(|| err("route without destination".into()))?;
                }
                "unicast" => {
                    first = words
                        .next()
                        .ok_or_else(|| err("route without destination".into()))?
                }
                "blackhole" | "unreachable" | "prohibit" => continue,
                _ => {}
            }
            let dst = if first == "default" {
                // The family is decided by the gateway or a later address; assume IPv4
                // until an IPv6 word shows up.
                None
            } else {
                Some(
                    first
                        .parse::<Prefix>()
                        .map_err(|e| err(format!("destination: {e}")))?,
                )
            };
            let mut route = Route {
                dst: dst.unwrap_or(Prefix {
                    addr: IpAddr::from([0u8; 4]),
                    len: 0,
                }),
                gateway: None,
                dev: None,
                src: None,
                mtu: None,
                metric: 0,
                local,
            };
            while let Some(w) = words.next() {
                let mut value = |what: &str| {
                    words
                        .next()
                        .ok_or_else(|| err(format!("`{w}` without {what}")))
                };
                match w {
                    "via" => {
                        let mut v = value("an address")?;
                        if v == "inet" || v == "inet6" {
                            v = value("an address")?;
                        }
                        route.gateway =
                            Some(v.parse().map_err(|_| err(format!("bad gateway '{v}'")))?);
                    }
                    "dev" => route.dev = Some(value("a device")?.to_string()),
                    "src" => {
                        let v = value("an address")?;
                        route.src = Some(v.parse().map_err(|_| err(format!("bad source '{v}'")))?);
                    }
                    "metric" => {
                        let v = value("a number")?;
                        route.metric = v.parse().map_err(|_| err(format!("bad metric '{v}'")))?;
                    }
                    "mtu" => {
                        let mut v = value("a number")?;
                        if v == "lock" {
                            v = value("a number")?;
                        }
                        route.mtu = Some(v.parse().map_err(|_| err(format!("bad mtu '{v}'")))?);
                    }
                    "proto" | "scope" | "table" | "pref" | "expires" | "advmss" | "realm" => {
                        value("a value")?;
                    }
                    _ => {}
                }
            }
            if dst.is_none() {
                let v6 = route
                    .gateway
                    .map(|g| g.is_ipv6())
                    .or(route.src.map(|s| s.is_ipv6()))
                    .unwrap_or(false);
                if v6 {
                    route.dst = Prefix {
                        addr: IpAddr::from([0u16; 8]),
                        len: 0,
                    };
                }
            }
            out.push(route);
        }
        Ok(out)
    }

    /// Parses `ip link show` output: each Ethernet device's name and own MAC address
    /// (`link/ether`), in the order listed. Devices without an Ethernet address (loopback,
    /// tunnels) are skipped.
    pub fn parse_links(
        text: &str,
        file: &str,
    ) -> Result<Vec<(String, MacAddr)>, NextHopParseError> {
        let mut out = Vec::new();
        let mut current: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            let err = |message: String| NextHopParseError {
                file: file.to_string(),
                line: i + 1,
                message,
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(first) = words.first() else { continue };
            if first.starts_with('#') {
                continue;
            }
            if let Some(index) = first.strip_suffix(':') {
                if index.parse::<u32>().is_err() {
                    return Err(err(format!("bad interface index '{first}'")));
                }
                let name = words
                    .get(1)
                    .and_then(|w| w.strip_suffix(':'))
                    .ok_or_else(|| err("interface without a name".into()))?;
                // A veth or VLAN shows as NAME@PEER.
                let name = name.split('@').next().unwrap_or(name);
                current = Some(name.to_string());
            } else if *first == "link/ether" {
                let name = current
                    .take()
                    .ok_or_else(|| err("`link/ether` outside an interface".into()))?;
                let mac = words
                    .get(1)
                    .ok_or_else(|| err("`link/ether` without an address".into()))?
                    .parse()
                    .map_err(err)?;
                out.push((name, mac));
            }
        }
        Ok(out)
    }

    /// Parses `ip neigh show` output. Entries without `lladdr` or in state FAILED or
    /// INCOMPLETE are skipped: they resolve nothing.
    pub fn parse_neighbours(
        text: &str,
        file: &str,
    ) -> Result<Vec<(IpAddr, MacAddr)>, NextHopParseError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let err = |message: String| NextHopParseError {
                file: file.to_string(),
                line: i + 1,
                message,
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(first) = words.first() else { continue };
            if first.starts_with('#') {
                continue;
            }
            let ip: IpAddr = first
                .parse()
                .map_err(|_| err(format!("bad address '{first}'")))?;
            if words.iter().any(|w| matches!(*w, "FAILED" | "INCOMPLETE")) {
                continue;
            }
            let Some(pos) = words.iter().position(|w| *w == "lladdr") else {
                continue;
            };
            let mac = words
                .get(pos + 1)
                .ok_or_else(|| err("`lladdr` without an address".into()))?
                .parse()
                .map_err(err)?;
            out.push((ip, mac));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "\
default via 192.0.2.1 dev eth0 proto static metric 100
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.5
10.1.0.0/16 dev eth1 proto kernel scope link src 10.1.0.254
10.1.9.9 via 10.1.0.1 dev eth1 mtu lock 1400
local 192.0.2.5 dev eth0 table local proto kernel scope host src 192.0.2.5
2001:db8:1::/64 dev eth1 proto kernel metric 256 pref medium
default via 2001:db8:1::1 dev eth1 metric 1024
";
    const NEIGH: &str = "\
192.0.2.1 dev eth0 lladdr 02:00:00:00:00:01 REACHABLE
10.1.0.7 dev eth1 lladdr 02:00:00:00:01:07 STALE
10.1.0.8 dev eth1  FAILED
10.1.0.1 dev eth1 lladdr 02:00:00:00:01:01 router DELAY
2001:db8:1::1 dev eth1 lladdr 02:00:00:00:06:01 router REACHABLE
";

    const LINKS: &str = "\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: eth0@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP
    link/ether 02:00:00:00:00:05 brd ff:ff:ff:ff:ff:ff link-netnsid 0
3: eth1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP
    link/ether 02:00:00:00:01:fe brd ff:ff:ff:ff:ff:ff
";

    fn tables() -> NextHops {
        NextHops::with_links(
            &NextHops::parse_links(LINKS, "links").unwrap(),
            NextHops::parse_routes(ROUTES, "routes").unwrap(),
            NextHops::parse_neighbours(NEIGH, "neigh").unwrap(),
        )
    }

    #[test]
    fn longest_prefix_wins_and_gateways_resolve() {
        let t = tables();
        let direct = t.resolve("10.1.0.7".parse().unwrap()).unwrap();
        assert_eq!(direct.mac.to_string(), "02:00:00:00:01:07");
        // The source MAC is the output device's own, whatever the frame came in with.
        assert_eq!(direct.src_mac.to_string(), "02:00:00:00:01:fe");
        assert_eq!(direct.src, Some("10.1.0.254".parse().unwrap()));
        assert_eq!(t.devices()[direct.dev as usize], "eth1");
        let via = t.resolve("10.1.9.9".parse().unwrap()).unwrap();
        assert_eq!(
            (via.mac.to_string().as_str(), via.mtu),
            ("02:00:00:00:01:01", 1400)
        );
        assert_eq!(via.src, Some("10.1.0.254".parse().unwrap()));
        let default = t.resolve("198.51.100.1".parse().unwrap()).unwrap();
        assert_eq!(
            (default.mac.0[5], default.src),
            (1, Some("192.0.2.5".parse().unwrap()))
        );
        assert_eq!(default.src_mac.to_string(), "02:00:00:00:00:05");
        let v6 = t.resolve("2001:db8:99::1".parse().unwrap()).unwrap();
        assert_eq!(v6.mac.0[4], 6);
    }

    #[test]
    fn a_route_out_of_a_device_without_a_known_mac_is_no_route() {
        let routes = NextHops::parse_routes(ROUTES, "routes").unwrap();
        let neigh = NextHops::parse_neighbours(NEIGH, "neigh").unwrap();
        let t = NextHops::with_links(
            &[("eth1".into(), MacAddr([2, 0, 0, 0, 1, 0xfe]))],
            routes,
            neigh,
        );
        assert!(t.resolve("10.1.0.7".parse().unwrap()).is_ok());
        assert_eq!(
            t.resolve("192.0.2.1".parse().unwrap()),
            Err(DropReason::NoRoute)
        );
    }

    #[test]
    fn only_own_extra_and_group_macs_are_accepted() {
        let mut t = tables();
        let m = |s: &str| s.parse::<MacAddr>().unwrap();
        let (eth0, eth1) = (Some(0), Some(1));
        assert!(t.accepts(m("02:00:00:00:00:05"), eth0));
        assert!(t.accepts(m("02:00:00:00:00:05"), None));
        // eth1's MAC arriving on eth0 is another host's frame there, as in the kernel.
        assert!(!t.accepts(m("02:00:00:00:01:fe"), eth0));
        assert!(t.accepts(m("02:00:00:00:01:fe"), eth1));
        assert!(!t.accepts(m("02:00:00:00:00:06"), None));
        assert!(t.accepts(m("ff:ff:ff:ff:ff:ff"), eth0));
        assert!(t.accepts(m("01:00:5e:00:00:12"), eth0));
        assert!(t.accepts(m("33:33:00:00:00:01"), eth1));
        let vmac = m("00:00:5e:00:01:33");
        assert!(!t.accepts(vmac, eth0));
        t.set_extra_macs(&[vmac]);
        assert!(t.accepts(vmac, eth0) && t.accepts(vmac, eth1) && t.accepts(vmac, None));
        assert_eq!(t.device_mac(1), Some(m("02:00:00:00:01:fe")));
        assert_eq!(t.device_mac(7), None);
    }

    #[test]
    fn links_parse_names_without_peers_and_skip_non_ethernet() {
        let l = NextHops::parse_links(LINKS, "links").unwrap();
        assert_eq!(
            l,
            vec![
                ("eth0".to_string(), MacAddr([2, 0, 0, 0, 0, 5])),
                ("eth1".to_string(), MacAddr([2, 0, 0, 0, 1, 0xfe])),
            ]
        );
        let e =
            NextHops::parse_links("2: eth0: <UP>\n    link/ether 02:zz\n", "l.txt").unwrap_err();
        assert!(e.to_string().starts_with("l.txt:2: bad MAC"), "{e}");
    }

    #[test]
    fn without_src_the_source_is_a_local_address_of_the_output_device() {
        let routes = "2001:db8:1::/64 dev eth1 proto kernel metric 256\n\
                      default via 2001:db8:1::fe dev eth1\n\
                      local 2001:db8:9::1 dev eth1 table local proto kernel\n\
                      local 2001:db8:1::1 dev eth1 table local proto kernel\n\
                      local 2001:db8:1::2 dev eth0 table local proto kernel\n";
        let neigh = "2001:db8:1::5 dev eth1 lladdr 02:00:00:00:00:05 REACHABLE\n\
                     2001:db8:1::fe dev eth1 lladdr 02:00:00:00:00:fe REACHABLE\n";
        let t = NextHops::with_links(
            &[("eth1".into(), MacAddr([2, 0, 0, 0, 1, 0xfe]))],
            NextHops::parse_routes(routes, "r").unwrap(),
            NextHops::parse_neighbours(neigh, "n").unwrap(),
        );
        let src = |a: &str| {
            t.resolve(a.parse().unwrap())
                .unwrap()
                .src
                .unwrap()
                .to_string()
        };
        assert_eq!(src("2001:db8:1::5"), "2001:db8:1::1");
        assert_eq!(src("2001:db8:77::5"), "2001:db8:1::1");
    }

    #[test]
    fn unresolved_neighbours_and_missing_routes_are_reported() {
        let t = tables();
        assert_eq!(
            t.resolve("10.1.0.8".parse().unwrap()),
            Err(DropReason::NoNeighbour)
        );
        let only_v4 = NextHops::new(NextHops::parse_routes("10.0.0.0/8 dev x", "r").unwrap(), []);
        assert_eq!(
            only_v4.resolve("2001:db8::1".parse().unwrap()),
            Err(DropReason::NoRoute)
        );
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let e =
            NextHops::parse_routes("10.0.0.0/8 dev x\n10.0.0.0/99 dev y\n", "r.txt").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("r.txt", 2));
        let e = NextHops::parse_neighbours("10.0.0.1 dev x lladdr zz:00\n", "n.txt").unwrap_err();
        assert!(e.to_string().starts_with("n.txt:1: bad MAC"), "{e}");
    }
}
