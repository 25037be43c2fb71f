//! Next hops: which MAC a rewritten frame goes to, and from which source address a tunnel
//! packet leaves.
//!
//! The tables mirror the kernel's: routes (longest prefix match) and neighbours (IP -> MAC).
//! The AF_XDP backend fills them from netlink; replay reads them from `ip route show` and
//! `ip neigh show` text, so a capture replays against the same next hops the director had.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use thiserror::Error;

use crate::service::Prefix;
use crate::stats::DropReason;

/// An Ethernet address.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<MacAddr, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts
                .next()
                .ok_or_else(|| format!("bad MAC address '{s}'"))?;
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC address '{s}'"))?;
        }
        if parts.next().is_some() {
            return Err(format!("bad MAC address '{s}'"));
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

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

/// Where a frame for some address goes next.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The next hop's MAC address.
    pub mac: MacAddr,
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

/// The routing and neighbour tables a worker resolves next hops from.
#[derive(Clone, Debug)]
pub struct NextHops {
    routes_v4: Vec<Route>,
    routes_v6: Vec<Route>,
    neigh: HashMap<IpAddr, MacAddr>,
    devices: Vec<String>,
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
            neigh: HashMap::new(),
            devices: Vec::new(),
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
        let mut t = NextHops::default();
        for r in routes {
            if r.local {
                t.add_local(r.dst.addr, r.dev);
            } else {
                t.add_route(r);
            }
        }
        t.neigh.extend(neighbours);
        t
    }

    /// Empty tables whose device indexes start with `devices`, in that order: the backend's
    /// interface list, so [`NextHop::dev`] is the index of the interface to send from.
    pub fn with_devices(devices: &[String]) -> NextHops {
        NextHops {
            devices: devices.to_vec(),
            ..NextHops::default()
        }
    }

    /// Records one of the director's own addresses on `dev`: the source of last resort for
    /// packets the director originates (tunnel headers), as the kernel picks an address of
    /// the output device.
    pub fn add_local(&mut self, addr: IpAddr, dev: Option<String>) {
        self.locals.push((addr, dev));
    }

    /// Adds a route, keeping each family sorted longest prefix first, then lowest metric.
    pub fn add_route(&mut self, r: Route) {
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
    pub fn resolve(&self, dst: IpAddr) -> Result<NextHop, DropReason> {
        let route = self.route(dst).ok_or(DropReason::NoRoute)?;
        let hop = route.gateway.unwrap_or(dst);
        let mac = *self.neigh.get(&hop).ok_or(DropReason::NoNeighbour)?;
        let dev = route
            .dev
            .as_ref()
            .and_then(|d| self.devices.iter().position(|x| x == d))
            .unwrap_or(0) as u16;
        Ok(NextHop {
            mac,
            dev,
            src: self.source_for(route),
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

    fn tables() -> NextHops {
        NextHops::new(
            NextHops::parse_routes(ROUTES, "routes").unwrap(),
            NextHops::parse_neighbours(NEIGH, "neigh").unwrap(),
        )
    }

    #[test]
    fn longest_prefix_wins_and_gateways_resolve() {
        let t = tables();
        let direct = t.resolve("10.1.0.7".parse().unwrap()).unwrap();
        assert_eq!(direct.mac.to_string(), "02:00:00:00:01:07");
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
        let v6 = t.resolve("2001:db8:99::1".parse().unwrap()).unwrap();
        assert_eq!(v6.mac.0[4], 6);
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
        let t = NextHops::new(
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
