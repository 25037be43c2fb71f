//! Virtual services, real servers and the classifier: the configuration model.
//!
//! These are the values an operator writes (in TOML, an `ipvsadm -S` rule file or a
//! keepalived.conf) and the control thread turns into a [`ServiceTable`] snapshot for the
//! workers. Names follow LVS: a *virtual service* is what clients connect to, a *real
//! server* (a destination, `dest` in the kernel) is where the director sends them.
//!
//! **Destination order.** [`VirtualService::reals`] holds real servers in configuration
//! order: the first one written (first `-a`, first `[[service.real]]`) first; `-a` appends,
//! `-e` edits in place, `-d` removes. The list the schedulers walk (the snapshot's
//! [`Dest`]s) follows the director setting [`DestOrder`]: the same order (`config`, the
//! default), or its reverse (`kernel`), which is exactly the kernel's list, because the
//! kernel inserts each new real server at the head. Every "first in list" tie-break and
//! every bucket fill of the hashing schedulers follows that list. See `docs/decisions.md`.

#![forbid(unsafe_code)]

pub mod bgp;
pub mod config;
mod dest;
pub mod health;
pub mod pair;
mod sync;
pub mod table;

pub use dest::{count_as_worker, ConnCount, DestCounters, DestId, DestRegistry};
pub use sync::{BadSyncSetting, DaemonConfig, SyncRole, SyncSettings};
pub use table::{Dest, ServiceEntry, ServiceId, ServiceTable};

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a service. SCTP is not supported.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The protocol for an IP protocol number, if fastlb balances it.
    pub const fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// Name as `ipvsadm -L` prints it (`TCP`, `UDP`).
    pub const fn ipvsadm_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// What identifies a virtual service.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ServiceKey {
    /// `-t|-u VIP:PORT`. Port 0 means every port (allowed for persistent services only).
    Tuple {
        /// TCP or UDP.
        protocol: Protocol,
        /// The virtual IP address.
        addr: IpAddr,
        /// The virtual port, 0 for all ports.
        port: u16,
    },
    /// `-f MARK`: every packet the classifier marks with `mark`, of one address family.
    Fwmark {
        /// The firewall mark.
        mark: u32,
        /// IPv6 (`-6`) or IPv4.
        ipv6: bool,
    },
}

impl ServiceKey {
    /// Whether the service is IPv6.
    pub fn is_ipv6(&self) -> bool {
        match *self {
            ServiceKey::Tuple { addr, .. } => addr.is_ipv6(),
            ServiceKey::Fwmark { ipv6, .. } => ipv6,
        }
    }
}

impl fmt::Display for ServiceKey {
    /// `TCP  10.0.0.1:80`-style rendering as ipvsadm's `-L -n` shows it (without padding).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Tuple {
                protocol,
                addr,
                port,
            } => {
                write!(
                    f,
                    "{} {}",
                    protocol.ipvsadm_name(),
                    SocketText(*addr, *port)
                )
            }
            ServiceKey::Fwmark { mark, ipv6 } => {
                write!(f, "FWM {mark}{}", if *ipv6 { " IPv6" } else { "" })
            }
        }
    }
}

/// `ADDR:PORT`, with IPv6 addresses in brackets as ipvsadm prints them.
#[derive(Copy, Clone, Debug)]
pub struct SocketText(pub IpAddr, pub u16);

impl fmt::Display for SocketText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

/// How the director hands a packet to a real server (ipvsadm `-g`, `-m`, `-i`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMethod {
    /// `-m`, NAT: destination rewritten on the way in, source rewritten on the reply.
    #[serde(alias = "nat", alias = "masq")]
    Masquerade,
    /// `-g`, direct routing: only the destination MAC is rewritten; replies bypass the
    /// director.
    #[serde(alias = "dr", alias = "route")]
    DirectRouting,
    /// `-i`, IP-in-IP tunnel: the packet is wrapped in a new IP header to the real server;
    /// replies bypass the director.
    #[serde(alias = "tun", alias = "ipip")]
    Tunnel,
}

impl ForwardMethod {
    /// The `Forward` column of `ipvsadm -L`: `Masq`, `Route`, `Tunnel`.
    pub const fn ipvsadm_name(self) -> &'static str {
        match self {
            ForwardMethod::Masquerade => "Masq",
            ForwardMethod::DirectRouting => "Route",
            ForwardMethod::Tunnel => "Tunnel",
        }
    }

    /// The ipvsadm flag: `-m`, `-g`, `-i`.
    pub const fn ipvsadm_flag(self) -> &'static str {
        match self {
            ForwardMethod::Masquerade => "-m",
            ForwardMethod::DirectRouting => "-g",
            ForwardMethod::Tunnel => "-i",
        }
    }
}

/// One real server of a virtual service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServer {
    /// The real server's address.
    pub addr: IpAddr,
    /// Its port. Ignored (the client's destination port is kept) for DR and TUN, as IPVS.
    pub port: u16,
    /// Scheduling weight, 0..=65535. 0 quiesces: no new connections, existing ones go on.
    pub weight: i32,
    /// How packets reach it.
    pub method: ForwardMethod,
    /// `-x`: connection count at which the server is marked OVERLOAD; 0 = no limit.
    pub upper_threshold: u32,
    /// `-y`: connection count below which OVERLOAD is cleared; 0 = 3/4 of the upper one.
    pub lower_threshold: u32,
}

/// Scheduling algorithm of a virtual service (`-s`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connections.
    Lc,
    /// Weighted least connections (the IPVS default).
    Wlc,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Locality-based least connections.
    Lblc,
    /// Locality-based least connections with replication.
    Lblcr,
    /// Maglev hashing.
    Mh,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
    /// Weighted random twos choice.
    Twos,
}

impl SchedulerKind {
    /// Every scheduler, in the order ipvsadm(8) lists them.
    pub const ALL: [SchedulerKind; 14] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Lblc,
        SchedulerKind::Lblcr,
        SchedulerKind::Dh,
        SchedulerKind::Sh,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
        SchedulerKind::Fo,
        SchedulerKind::Ovf,
        SchedulerKind::Mh,
        SchedulerKind::Twos,
    ];

    /// The name ipvsadm uses (`-s wlc`).
    pub const fn name(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Wlc => "wlc",
            SchedulerKind::Sed => "sed",
            SchedulerKind::Nq => "nq",
            SchedulerKind::Dh => "dh",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Lblc => "lblc",
            SchedulerKind::Lblcr => "lblcr",
            SchedulerKind::Mh => "mh",
            SchedulerKind::Fo => "fo",
            SchedulerKind::Ovf => "ovf",
            SchedulerKind::Twos => "twos",
        }
    }
}

impl FromStr for SchedulerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown scheduler '{s}'"))
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Scheduler flags (`-b`). ipvsadm also spells them `flag-1`, `flag-2`: for sh and mh,
/// flag-1 is the fallback and flag-2 the port flag.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SchedFlags {
    /// `sh-fallback`: walk on past an unavailable server instead of failing.
    pub sh_fallback: bool,
    /// `sh-port`: hash the source port too.
    pub sh_port: bool,
    /// `mh-fallback`: walk on past an unavailable server instead of failing.
    pub mh_fallback: bool,
    /// `mh-port`: hash the source port too.
    pub mh_port: bool,
}

impl SchedFlags {
    /// The set flags by their ipvsadm names (`sh-fallback`, `sh-port`, `mh-fallback`,
    /// `mh-port`), in that order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.sh_fallback, "sh-fallback"),
            (self.sh_port, "sh-port"),
            (self.mh_fallback, "mh-fallback"),
            (self.mh_port, "mh-port"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

/// Persistence of a virtual service (`-p`, `-M`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Persistence {
    /// Template timeout in seconds (`-p`, default 300).
    pub timeout_secs: u32,
    /// Client address prefix length the template covers (`-M`; default 32 for IPv4, 128 for
    /// IPv6).
    pub netmask: u8,
}

/// One virtual service with its real servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualService {
    /// What clients address.
    pub key: ServiceKey,
    /// Scheduling algorithm (`-s`, default wlc).
    pub scheduler: SchedulerKind,
    /// Scheduler flags (`-b`).
    pub flags: SchedFlags,
    /// Maglev table size, a prime from 251 to 65521 (default 4093, as the kernel).
    pub mh_table_size: u32,
    /// Persistence, if any.
    pub persistence: Option<Persistence>,
    /// The real servers, in list order (see the module documentation).
    pub reals: Vec<RealServer>,
}

/// Default Maglev lookup table size, as the kernel's `CONFIG_IP_VS_MH_TAB_INDEX`.
pub const DEFAULT_MH_TABLE_SIZE: u32 = 4093;
/// Default persistence timeout (`-p` without a value), seconds.
pub const DEFAULT_PERSISTENCE_SECS: u32 = 300;

/// An address prefix such as `10.0.0.0/24`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Prefix {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Prefix {
    /// Whether `a` lies inside the prefix (false across address families).
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("bad address '{a}'"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("bad prefix length '{l}'"))?,
            None => max,
        };
        Ok(Prefix { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A classifier rule: marks matching packets for fwmark services.
///
/// XDP runs before netfilter, so fastlb cannot read marks set by iptables; these rules take
/// their place. The first matching rule wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierRule {
    /// Match only this protocol (any if `None`).
    pub protocol: Option<Protocol>,
    /// Destination address prefix.
    pub dst: Prefix,
    /// Destination port range, inclusive.
    pub ports: (u16, u16),
    /// The mark given to matching packets.
    pub mark: u32,
}

impl ClassifierRule {
    /// Whether a packet to `dst:port` over `protocol` matches.
    pub fn matches(&self, protocol: Protocol, dst: IpAddr, port: u16) -> bool {
        self.protocol.is_none_or(|p| p == protocol)
            && self.dst.contains(dst)
            && (self.ports.0..=self.ports.1).contains(&port)
    }
}

/// Timeouts settable with `ipvsadm --set tcp tcpfin udp`, in seconds.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutSettings {
    /// TCP ESTABLISHED (default 900).
    pub tcp: u32,
    /// TCP FIN_WAIT (default 120).
    pub tcpfin: u32,
    /// UDP (default 300).
    pub udp: u32,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        TimeoutSettings {
            tcp: 900,
            tcpfin: 120,
            udp: 300,
        }
    }
}

/// The order of each service's real-server list, the one every "first in list" tie-break
/// and every hash-table fill follows (`[director] dest_order`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestOrder {
    /// Configuration order: the first real server written (`-a`, `[[service.real]]`) is
    /// first, later ones follow. The default.
    #[default]
    Config,
    /// The kernel's order: newest first, as `ip_vs_add_dest` puts each new real server at the
    /// head of the list. A kernel director restored from the same rules (and changed by the
    /// same `-a -e -d`) walks its list in this order.
    Kernel,
}

impl DestOrder {
    /// The setting's name in TOML (`config`, `kernel`).
    pub const fn name(self) -> &'static str {
        match self {
            DestOrder::Config => "config",
            DestOrder::Kernel => "kernel",
        }
    }
}

/// Everything a director is configured with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Virtual services, in file order.
    pub services: Vec<VirtualService>,
    /// Classifier rules for fwmark services, in match order.
    pub classifiers: Vec<ClassifierRule>,
    /// Protocol timeouts.
    pub timeouts: TimeoutSettings,
    /// Source address of tunnel (`-i`) outer headers for IPv4; the route's preferred source
    /// when unset.
    pub tunnel_source_v4: Option<std::net::Ipv4Addr>,
    /// Source address of tunnel outer headers for IPv6; the route's preferred source when
    /// unset.
    pub tunnel_source_v6: Option<std::net::Ipv6Addr>,
    /// Connection table capacity (entries); 0 means the default.
    pub conn_capacity: usize,
    /// How many of the table's entries may have IPv6 addresses (48 bytes each, kept
    /// beside the 64-byte entry); `None` means a quarter of the capacity.
    pub conn_v6_capacity: Option<usize>,
    /// Unicast MACs besides the interfaces' own that frames may be addressed to for the
    /// director to act on them (keepalived's VRRP virtual MACs with `use_vmac`); frames to
    /// any other host's MAC are left to the kernel, which drops them.
    pub accept_macs: Vec<crate::forward::nexthop::MacAddr>,
    /// Order of every service's real-server list as the schedulers see it.
    pub dest_order: DestOrder,
    /// `sloppy_tcp`: a TCP packet other than a SYN (and not a RST) of a flow with no
    /// connection is scheduled like a SYN, and its connection starts in the state the
    /// packet implies (an ACK: ESTABLISHED). For directors behind ECMP, where a flow can
    /// move to a director that never saw its SYN. Off by default, as the kernel's sysctl.
    pub sloppy_tcp: bool,
    /// `[bgp]`: announce the VIPs to a router through BIRD (none: no announcements).
    pub bgp: Option<bgp::BgpSettings>,
    /// Health checks and sorry servers, by service key (see [`health`]).
    pub health: health::HealthSettings,
    /// The director pair: the VRRP instance followed and the sync daemon (see [`pair`]).
    pub pair: pair::PairConfig,
    /// When a sync master sends connections (the `sync_*` sysctls).
    pub sync: SyncSettings,
    /// IPVS's defence strategies (`drop_packet`, `secure_tcp`, `amemthresh`,
    /// `am_droprate`; see [`crate::conn::defence`]).
    pub defence: crate::conn::defence::DefenceSettings,
    /// `[director] state_file`: where the connection table is written at exit and read
    /// back at start (`None`: the default beside the ctl socket; `--state-file` wins).
    pub state_file: Option<std::path::PathBuf>,
}
