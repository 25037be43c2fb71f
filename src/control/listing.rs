//! `ipvsadm -L` in all its layouts, and its JSON twin: pure functions from plain views to
//! text.
//!
//! The layouts are ipvsadm 1.31's (`print_title`, `print_service_entry`, `print_conn`,
//! `list_timeout` in `ipvsadm.c`), column for column:
//!
//! ```text
//! IP Virtual Server version 1.2.1 (size=4096)
//! Prot LocalAddress:Port Scheduler Flags
//!   -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
//! TCP  10.0.0.1:80 wlc persistent 300 mask 255.255.255.0
//!   -> 10.1.0.1:80                  Masq    1      0          0
//! ```
//!
//! Order: like ipvsadm (whose default is `--sort`), services are sorted by (fwmark, family,
//! protocol, address, port) and each service's real servers by (address, port); the same
//! order `-S` prints. With `--nosort` fastlb prints its scheduling list order: configuration
//! order, or the kernel's newest-first list with `dest_order = "kernel"` (what ipvsadm prints
//! for a kernel director). Addresses are always numeric: fastlb resolves no names, with or
//! without `-n`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

use crate::service::config::ipvsadm::{real_order, service_order, IpvsError, ListOptions};
use crate::service::{
    DestRegistry, ForwardMethod, Persistence, Protocol, SchedFlags, SchedulerKind, ServiceKey,
    ServiceTable, SocketText, TimeoutSettings,
};
use crate::stats::rate::{RateTable, Rates};
use crate::stats::{dest_totals, TrafficTotals, WorkerStats};

/// The IPVS version ipvsadm reports; fastlb speaks this version's interface.
pub const IPVS_VERSION: &str = "1.2.1";
/// The connection hash table size `-L` reports when the configuration sets no capacity (the
/// kernel's default `CONFIG_IP_VS_TAB_BITS` = 12).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Everything `-L` shows about the service table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableView {
    /// The `size=` of the banner: the connection table's capacity.
    pub size: usize,
    /// Services in configuration order.
    pub services: Vec<ServiceView>,
}

/// One virtual service as `-L` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    /// Its key.
    pub key: ServiceKey,
    /// Its scheduler.
    pub scheduler: SchedulerKind,
    /// Scheduler flags.
    pub flags: SchedFlags,
    /// Persistence, if any.
    pub persistence: Option<Persistence>,
    /// Traffic totals: the sums over its real servers.
    pub stats: TrafficTotals,
    /// Estimated rates.
    pub rates: Rates,
    /// Its real servers in list (configuration) order.
    pub reals: Vec<RealView>,
}

/// One real server as `-L` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealView {
    /// Address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
    /// Forwarding method.
    pub method: ForwardMethod,
    /// Weight.
    pub weight: i32,
    /// `-x`.
    pub upper_threshold: u32,
    /// `-y`.
    pub lower_threshold: u32,
    /// Active connections.
    pub active: u32,
    /// Inactive connections.
    pub inactive: u32,
    /// Persistence templates pointing at it.
    pub persistent: u32,
    /// OVERLOAD flag.
    pub overloaded: bool,
    /// Traffic totals.
    pub stats: TrafficTotals,
    /// Estimated rates.
    pub rates: Rates,
}

/// One entry of the connection table as `-L -c` shows it. Plain data, so the connection
/// table can produce it without knowing about listings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnView {
    /// TCP or UDP; `None` for a firewall-mark persistence template (ipvsadm prints `IP`).
    pub protocol: Option<Protocol>,
    /// The state's name as IPVS spells it: `ESTABLISHED`, `SYN_RECV`, `FIN_WAIT`, `NONE`
    /// (templates), `UDP`, ...
    pub state: &'static str,
    /// Seconds until it expires.
    pub expires_secs: u32,
    /// Client address and port.
    pub client: SocketAddr,
    /// Virtual address and port.
    pub vip: SocketAddr,
    /// Real server address and port.
    pub dest: SocketAddr,
}

impl From<&crate::conn::ConnEntry> for ConnView {
    fn from(e: &crate::conn::ConnEntry) -> ConnView {
        ConnView {
            protocol: Protocol::from_number(e.protocol),
            state: e.state,
            expires_secs: e.expires_in_ms.div_ceil(1000) as u32,
            client: SocketAddr::new(e.client, e.cport),
            vip: SocketAddr::new(e.vaddr, e.vport),
            dest: SocketAddr::new(e.daddr, e.dport),
        }
    }
}

/// Builds the `-L` view of `table` from the shared counters, the workers' traffic counters
/// and (if the control thread keeps them) the rate estimators. `size` is the banner's table
/// size (0 means [`DEFAULT_TABLE_SIZE`]).
pub fn build_table_view(
    table: &ServiceTable,
    registry: &DestRegistry,
    workers: &[Arc<WorkerStats>],
    rates: Option<&RateTable>,
    size: usize,
) -> TableView {
    let services = table
        .services
        .iter()
        .map(|s| {
            let mut stats = TrafficTotals::default();
            let reals = s
                .dests
                .iter()
                .map(|d| {
                    let c = registry.get(d.id);
                    let t = dest_totals(workers.iter().map(|w| &**w), d.id);
                    stats += t;
                    RealView {
                        addr: d.server.addr,
                        port: d.server.port,
                        method: d.server.method,
                        weight: d.server.weight,
                        upper_threshold: d.server.upper_threshold,
                        lower_threshold: d.server.lower_threshold,
                        active: c.active(),
                        inactive: c.inactive(),
                        persistent: c.persistent(),
                        overloaded: c.is_overloaded(),
                        stats: t,
                        rates: rates.map(|r| r.dest(d.id)).unwrap_or_default(),
                    }
                })
                .collect();
            ServiceView {
                key: s.config.key,
                scheduler: s.config.scheduler,
                flags: s.config.flags,
                persistence: s.config.persistence,
                stats,
                rates: rates.map(|r| r.service(&s.config.key)).unwrap_or_default(),
                reals,
            }
        })
        .collect();
    TableView {
        size: if size == 0 { DEFAULT_TABLE_SIZE } else { size },
        services,
    }
}

/// Services and their real servers in the order `-L` prints them under `opts`.
fn ordered<'a>(
    view: &'a TableView,
    opts: &ListOptions,
) -> Vec<(&'a ServiceView, Vec<&'a RealView>)> {
    let mut services: Vec<&ServiceView> = view
        .services
        .iter()
        .filter(|s| opts.service.is_none_or(|k| k == s.key))
        .collect();
    if !opts.nosort {
        services.sort_by_key(|s| service_order(&s.key));
    }
    services
        .into_iter()
        .map(|s| {
            let mut reals: Vec<&RealView> = s.reals.iter().collect();
            if !opts.nosort {
                reals.sort_by_key(|r| real_order(r.addr, r.port));
            }
            (s, reals)
        })
        .collect()
}

/// ipvsadm's `print_largenum`: 9 columns, scaled to K/M/G/T past 8 digits unless `exact`.
fn largenum(out: &mut String, n: u64, exact: bool) {
    let _ = if exact {
        let len = n.to_string().len();
        write!(out, "{n:>w$}", w = if len <= 8 { 9 } else { len + 1 })
    } else if n < 100_000_000 {
        write!(out, "{n:>9}")
    } else if n < 1_000_000_000 {
        write!(out, "{:>8}K", n / 1_000)
    } else if n < 100_000_000_000 {
        write!(out, "{:>8}M", n / 1_000_000)
    } else if n < 100_000_000_000_000 {
        write!(out, "{:>8}G", n / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", n / 1_000_000_000_000)
    };
}

/// The service column: `TCP  10.0.0.1:80`, `FWM  7`, `FWM  7 IPv6`.
fn service_name(key: &ServiceKey) -> String {
    match *key {
        ServiceKey::Tuple {
            protocol,
            addr,
            port,
        } => format!("{:<4} {}", protocol.ipvsadm_name(), SocketText(addr, port)),
        ServiceKey::Fwmark { mark, ipv6 } => {
            format!("FWM  {mark}{}", if ipv6 { " IPv6" } else { "" })
        }
    }
}

/// `print_sched_flags`: the flags by name, comma-separated.
fn sched_flag_names(s: &ServiceView) -> String {
    s.flags.names().join(",")
}

/// The netmask as ipvsadm prints it: dotted for IPv4, a prefix length for IPv6; `None` for a
/// host mask, which ipvsadm leaves out.
fn mask_text(key: &ServiceKey, netmask: u8) -> Option<String> {
    if key.is_ipv6() {
        (netmask != 128).then(|| netmask.to_string())
    } else {
        (netmask != 32).then(|| {
            let m = u32::MAX.checked_shl(32 - u32::from(netmask)).unwrap_or(0);
            std::net::Ipv4Addr::from(m).to_string()
        })
    }
}

/// `-L` and its variants (`--stats`, `--rate`, `--thresholds`, `--persistent-conn`,
/// `--exact`, `--nosort`, one service with `-t/-u/-f`). Connection and timeout listings are
/// [`list_connections`] and [`list_timeouts`].
///
/// Listing one service prints no banner, as ipvsadm's `list_service`; a service that does not
/// exist is [`IpvsError::NoSuchService`].
pub fn list_services(view: &TableView, opts: &ListOptions) -> Result<String, IpvsError> {
    let services = ordered(view, opts);
    if opts.service.is_some() && services.is_empty() {
        return Err(IpvsError::NoSuchService);
    }
    let mut out = String::new();
    if opts.service.is_none() {
        let _ = writeln!(
            out,
            "IP Virtual Server version {IPVS_VERSION} (size={})",
            view.size
        );
    }
    let head = "Prot LocalAddress:Port";
    let _ = if opts.stats {
        writeln!(
            out,
            "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        )
    } else if opts.rate {
        writeln!(
            out,
            "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        )
    } else if opts.thresholds {
        writeln!(
            out,
            "{head:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        )
    } else if opts.persistent_conn {
        writeln!(
            out,
            "{head:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        )
    } else {
        writeln!(
            out,
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
        )
    };
    let x = opts.exact;
    for (s, reals) in services {
        let name = service_name(&s.key);
        if opts.stats {
            let _ = write!(out, "{name:<33}");
            let t = s.stats;
            for n in [t.conns, t.in_pkts, t.out_pkts, t.in_bytes, t.out_bytes] {
                largenum(&mut out, n, x);
            }
        } else if opts.rate {
            let _ = write!(out, "{name:<33}");
            let r = s.rates;
            for n in [r.cps, r.inpps, r.outpps, r.inbps, r.outbps] {
                largenum(&mut out, n, x);
            }
        } else {
            let _ = write!(out, "{name} {}", s.scheduler);
            let flags = sched_flag_names(s);
            if !flags.is_empty() {
                let _ = write!(out, " ({flags})");
            }
            if let Some(p) = s.persistence {
                let _ = write!(out, " persistent {}", p.timeout_secs);
                if let Some(m) = mask_text(&s.key, p.netmask) {
                    let _ = write!(out, " mask {m}");
                }
            }
        }
        out.push('\n');
        for r in reals {
            let dname = SocketText(r.addr, r.port).to_string();
            let _ = if opts.stats {
                let _ = write!(out, "  -> {dname:<28}");
                let t = r.stats;
                for n in [t.conns, t.in_pkts, t.out_pkts, t.in_bytes, t.out_bytes] {
                    largenum(&mut out, n, x);
                }
                writeln!(out)
            } else if opts.rate {
                // ipvsadm prints a real server's cps and pps unscaled, its bps scaled.
                let q = r.rates;
                let _ = write!(
                    out,
                    "  -> {dname:<28} {:>8} {:>8} {:>8}",
                    q.cps, q.inpps, q.outpps
                );
                largenum(&mut out, q.inbps, x);
                largenum(&mut out, q.outbps, x);
                writeln!(out)
            } else if opts.thresholds {
                writeln!(
                    out,
                    "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                    r.upper_threshold, r.lower_threshold, r.active, r.inactive
                )
            } else if opts.persistent_conn {
                writeln!(
                    out,
                    "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                    r.weight, r.persistent, r.active, r.inactive
                )
            } else {
                writeln!(
                    out,
                    "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                    r.method.ipvsadm_name(),
                    r.weight,
                    r.active,
                    r.inactive
                )
            };
        }
    }
    Ok(out)
}

/// `-L -c` (`--persistent-conn` adds ipvsadm's empty persistence-engine columns to the
/// header: fastlb has no persistence engines).
pub fn list_connections(conns: &[ConnView], opts: &ListOptions) -> String {
    let mut out = String::from("IPVS connection entries\n");
    let _ = if opts.persistent_conn {
        writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        )
    } else {
        writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        )
    };
    for c in conns {
        let expire = format!("{:02}:{:02}", c.expires_secs / 60, c.expires_secs % 60);
        let _ = writeln!(
            out,
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            c.protocol.map_or("IP", Protocol::ipvsadm_name),
            expire,
            c.state,
            SocketText(c.client.ip(), c.client.port()).to_string(),
            SocketText(c.vip.ip(), c.vip.port()).to_string(),
            SocketText(c.dest.ip(), c.dest.port()),
        );
    }
    out
}

/// `-L --timeout`.
pub fn list_timeouts(t: &TimeoutSettings) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcpfin, t.udp
    )
}

#[derive(Serialize)]
struct JsonTable<'a> {
    version: &'static str,
    size: usize,
    services: Vec<JsonService<'a>>,
}

#[derive(Serialize)]
struct JsonService<'a> {
    protocol: &'static str,
    family: &'static str,
    address: Option<IpAddr>,
    port: Option<u16>,
    fwmark: Option<u32>,
    scheduler: &'static str,
    flags: Vec<&'static str>,
    persistence: Option<JsonPersistence>,
    stats: &'a TrafficTotals,
    rates: &'a Rates,
    reals: Vec<JsonReal<'a>>,
}

#[derive(Serialize)]
struct JsonPersistence {
    timeout: u32,
    netmask: u8,
}

#[derive(Serialize)]
struct JsonReal<'a> {
    address: IpAddr,
    port: u16,
    forward: &'static str,
    weight: i32,
    upper_threshold: u32,
    lower_threshold: u32,
    active_conns: u32,
    inactive_conns: u32,
    persistent_conns: u32,
    overloaded: bool,
    stats: &'a TrafficTotals,
    rates: &'a Rates,
}

/// `-L --json`: the table as one JSON document (schema in `docs/ctl.md`), in the order the
/// text listing uses under the same options. Output options (`--stats`, `--rate`, ...) do
/// not apply: every figure is always there.
pub fn list_services_json(view: &TableView, opts: &ListOptions) -> Result<String, IpvsError> {
    let services = ordered(view, opts);
    if opts.service.is_some() && services.is_empty() {
        return Err(IpvsError::NoSuchService);
    }
    let doc = JsonTable {
        version: IPVS_VERSION,
        size: view.size,
        services: services
            .into_iter()
            .map(|(s, reals)| {
                let (protocol, address, port, fwmark) = match s.key {
                    ServiceKey::Tuple {
                        protocol,
                        addr,
                        port,
                    } => (
                        match protocol {
                            Protocol::Tcp => "tcp",
                            Protocol::Udp => "udp",
                        },
                        Some(addr),
                        Some(port),
                        None,
                    ),
                    ServiceKey::Fwmark { mark, .. } => ("fwmark", None, None, Some(mark)),
                };
                let f = s.flags;
                JsonService {
                    protocol,
                    family: if s.key.is_ipv6() { "ipv6" } else { "ipv4" },
                    address,
                    port,
                    fwmark,
                    scheduler: s.scheduler.name(),
                    flags: [
                        (f.sh_fallback, "sh-fallback"),
                        (f.sh_port, "sh-port"),
                        (f.mh_fallback, "mh-fallback"),
                        (f.mh_port, "mh-port"),
                    ]
                    .into_iter()
                    .filter_map(|(on, n)| on.then_some(n))
                    .collect(),
                    persistence: s.persistence.map(|p| JsonPersistence {
                        timeout: p.timeout_secs,
                        netmask: p.netmask,
                    }),
                    stats: &s.stats,
                    rates: &s.rates,
                    reals: reals
                        .into_iter()
                        .map(|r| JsonReal {
                            address: r.addr,
                            port: r.port,
                            forward: match r.method {
                                ForwardMethod::Masquerade => "masq",
                                ForwardMethod::DirectRouting => "route",
                                ForwardMethod::Tunnel => "tunnel",
                            },
                            weight: r.weight,
                            upper_threshold: r.upper_threshold,
                            lower_threshold: r.lower_threshold,
                            active_conns: r.active,
                            inactive_conns: r.inactive,
                            persistent_conns: r.persistent,
                            overloaded: r.overloaded,
                            stats: &r.stats,
                            rates: &r.rates,
                        })
                        .collect(),
                }
            })
            .collect(),
    };
    let mut s = serde_json::to_string_pretty(&doc).expect("plain data serializes");
    s.push('\n');
    Ok(s)
}

#[derive(Serialize)]
struct JsonConn {
    protocol: &'static str,
    state: &'static str,
    expires: u32,
    client: SocketAddr,
    virtual_address: SocketAddr,
    destination: SocketAddr,
}

/// `-L -c --json`: `{"connections": [...]}` (schema in `docs/ctl.md`).
pub fn list_connections_json(conns: &[ConnView]) -> String {
    let list: Vec<JsonConn> = conns
        .iter()
        .map(|c| JsonConn {
            protocol: c.protocol.map_or("IP", Protocol::ipvsadm_name),
            state: c.state,
            expires: c.expires_secs,
            client: c.client,
            virtual_address: c.vip,
            destination: c.dest,
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&serde_json::json!({ "connections": list }))
        .expect("plain data serializes");
    s.push('\n');
    s
}

/// `-L --timeout --json`: `{"tcp": 900, "tcpfin": 120, "udp": 300}`.
pub fn list_timeouts_json(t: &TimeoutSettings) -> String {
    format!(
        "{}\n",
        serde_json::json!({ "tcp": t.tcp, "tcpfin": t.tcpfin, "udp": t.udp })
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::config::ipvsadm::parse;

    fn opts(line: &str) -> ListOptions {
        match parse(&line.split_whitespace().collect::<Vec<_>>()).unwrap() {
            crate::service::config::ipvsadm::IpvsCommand::List(o) => o,
            other => panic!("{other:?}"),
        }
    }

    fn real(addr: &str, port: u16, method: ForwardMethod, weight: i32) -> RealView {
        RealView {
            addr: addr.parse().unwrap(),
            port,
            method,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
            active: 0,
            inactive: 0,
            persistent: 0,
            overloaded: false,
            stats: TrafficTotals::default(),
            rates: Rates::default(),
        }
    }

    fn tcp(addr: &str, port: u16) -> ServiceKey {
        ServiceKey::Tuple {
            protocol: Protocol::Tcp,
            addr: addr.parse().unwrap(),
            port,
        }
    }

    /// Two services written out of ipvsadm's order, real servers too.
    fn view() -> TableView {
        let mut a = real("10.1.0.2", 80, ForwardMethod::Masquerade, 3);
        a.active = 12;
        a.inactive = 40;
        a.persistent = 5;
        a.upper_threshold = 100;
        a.lower_threshold = 50;
        a.stats = TrafficTotals {
            conns: 1234,
            in_pkts: 123_456_789,
            out_pkts: 99_999_999,
            in_bytes: 98_765_432_100,
            out_bytes: 123_456_789_012_345,
        };
        a.rates = Rates {
            cps: 12,
            inpps: 345,
            outpps: 300,
            inbps: 456_789_012,
            outbps: 98_765,
        };
        let b = real("10.1.0.1", 80, ForwardMethod::DirectRouting, 0);
        let web = ServiceView {
            key: tcp("10.0.0.1", 80),
            scheduler: SchedulerKind::Wlc,
            flags: SchedFlags::default(),
            persistence: Some(Persistence {
                timeout_secs: 300,
                netmask: 24,
            }),
            stats: a.stats,
            rates: a.rates,
            reals: vec![a, b],
        };
        let dns = ServiceView {
            key: ServiceKey::Tuple {
                protocol: Protocol::Udp,
                addr: "10.0.0.1".parse().unwrap(),
                port: 53,
            },
            scheduler: SchedulerKind::Sh,
            flags: SchedFlags {
                sh_fallback: true,
                sh_port: true,
                ..SchedFlags::default()
            },
            persistence: None,
            stats: TrafficTotals::default(),
            rates: Rates::default(),
            reals: vec![real("10.2.0.1", 5353, ForwardMethod::Tunnel, 1)],
        };
        let fwm = ServiceView {
            key: ServiceKey::Fwmark {
                mark: 7,
                ipv6: true,
            },
            scheduler: SchedulerKind::Mh,
            flags: SchedFlags {
                mh_port: true,
                ..SchedFlags::default()
            },
            persistence: Some(Persistence {
                timeout_secs: 60,
                netmask: 64,
            }),
            stats: TrafficTotals::default(),
            rates: Rates::default(),
            reals: vec![real("2001:db8::10", 0, ForwardMethod::Masquerade, 1)],
        };
        TableView {
            size: 4096,
            services: vec![fwm, dns, web],
        }
    }

    // The expected texts below were produced independently with printf and the format
    // strings of ipvsadm.c (`%-33s`, `  -> %-28s %-7s %-6d %-10u %-10u`, `%8lluK`, ...),
    // trailing blanks included.

    #[test]
    fn plain_listing_is_ipvsadms() {
        let expected = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.1:80 wlc persistent 300 mask 255.255.255.0
  -> 10.1.0.1:80                  Route   0      0          0         
  -> 10.1.0.2:80                  Masq    3      12         40        
UDP  10.0.0.1:53 sh (sh-fallback,sh-port)
  -> 10.2.0.1:5353                Tunnel  1      0          0         
FWM  7 IPv6 mh (mh-port) persistent 60 mask 64
  -> [2001:db8::10]:0             Masq    1      0          0         
";
        assert_eq!(list_services(&view(), &opts("-L -n")).unwrap(), expected);
    }

    #[test]
    fn nosort_keeps_configuration_order() {
        let text = list_services(&view(), &opts("-L -n --nosort")).unwrap();
        let firsts: Vec<&str> = text
            .lines()
            .skip(3)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(firsts, ["FWM", "->", "UDP", "->", "TCP", "->", "->"]);
        assert!(text.contains("Masq    3      12         40        \n  -> 10.1.0.1:80"));
    }

    #[test]
    fn stats_scale_and_exact() {
        let text = list_services(&view(), &opts("-L -n --stats -t 10.0.0.1:80")).unwrap();
        // 123456789 >= 1e8 -> "  123456K"; 98765432100 < 1e11 -> "   98765M";
        // 123456789012345 >= 1e14 -> "     123T".
        let expected = "\
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.1:80                      1234  123456K 99999999   98765M     123T
  -> 10.1.0.1:80                         0        0        0        0        0
  -> 10.1.0.2:80                      1234  123456K 99999999   98765M     123T
";
        assert_eq!(text, expected);
        let exact = list_services(&view(), &opts("-L -n --stats --exact -t 10.0.0.1:80")).unwrap();
        assert_eq!(
            exact.lines().nth(2).unwrap(),
            "TCP  10.0.0.1:80                      1234 123456789 99999999 98765432100 123456789012345"
        );
    }

    #[test]
    fn rate_scales_only_bps_on_real_servers() {
        let text = list_services(&view(), &opts("-L -n --rate -t 10.0.0.1:80")).unwrap();
        let expected = "\
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  10.0.0.1:80                        12      345      300  456789K    98765
  -> 10.1.0.1:80                         0        0        0        0        0
  -> 10.1.0.2:80                        12      345      300  456789K    98765
";
        assert_eq!(text, expected);
    }

    #[test]
    fn thresholds_and_persistent_conn() {
        let t = list_services(&view(), &opts("-L -n --thresholds -t 10.0.0.1:80")).unwrap();
        assert_eq!(
            t,
            "\
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  10.0.0.1:80 wlc persistent 300 mask 255.255.255.0
  -> 10.1.0.1:80                  0          0          0          0         
  -> 10.1.0.2:80                  100        50         12         40        
"
        );
        let p = list_services(&view(), &opts("-L -n --persistent-conn -t 10.0.0.1:80")).unwrap();
        assert_eq!(
            p.lines().next().unwrap(),
            "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn "
        );
        assert_eq!(
            p.lines().nth(4).unwrap(),
            "  -> 10.1.0.2:80                  3         5           12         40        "
        );
    }

    #[test]
    fn missing_service_is_an_error() {
        assert_eq!(
            list_services(&view(), &opts("-L -n -t 10.9.9.9:80")),
            Err(IpvsError::NoSuchService)
        );
    }

    #[test]
    fn largenum_boundaries() {
        let f = |n, exact| {
            let mut s = String::new();
            largenum(&mut s, n, exact);
            s
        };
        assert_eq!(f(99_999_999, false), " 99999999");
        assert_eq!(f(100_000_000, false), "  100000K");
        assert_eq!(f(999_999_999, false), "  999999K");
        assert_eq!(f(1_000_000_000, false), "    1000M");
        assert_eq!(f(100_000_000_000, false), "     100G");
        assert_eq!(f(100_000_000_000_000, false), "     100T");
        assert_eq!(f(12_345_678, true), " 12345678");
        assert_eq!(f(123_456_789, true), " 123456789");
    }

    #[test]
    fn connection_listing() {
        let conns = vec![
            ConnView {
                protocol: Some(Protocol::Tcp),
                state: "ESTABLISHED",
                expires_secs: 899,
                client: "192.0.2.7:51234".parse().unwrap(),
                vip: "10.0.0.1:80".parse().unwrap(),
                dest: "10.1.0.2:80".parse().unwrap(),
            },
            ConnView {
                protocol: None,
                state: "NONE",
                expires_secs: 5,
                client: "192.0.2.0:0".parse().unwrap(),
                vip: "0.0.0.7:0".parse().unwrap(),
                dest: "10.1.0.2:0".parse().unwrap(),
            },
        ];
        let expected = "\
IPVS connection entries
pro expire state       source             virtual            destination
TCP 14:59  ESTABLISHED 192.0.2.7:51234    10.0.0.1:80        10.1.0.2:80
IP  00:05  NONE        192.0.2.0:0        0.0.0.7:0          10.1.0.2:0
";
        assert_eq!(list_connections(&conns, &opts("-L -n -c")), expected);
        let pc = list_connections(&conns, &opts("-L -n -c --persistent-conn"));
        assert_eq!(
            pc.lines().nth(1).unwrap(),
            "pro expire state       source             virtual            destination        pe name          pe_data"
        );
        let json: serde_json::Value = serde_json::from_str(&list_connections_json(&conns)).unwrap();
        assert_eq!(json["connections"][0]["state"], "ESTABLISHED");
        assert_eq!(json["connections"][0]["expires"], 899);
        assert_eq!(json["connections"][1]["protocol"], "IP");
        assert_eq!(json["connections"][0]["virtual_address"], "10.0.0.1:80");
    }

    #[test]
    fn timeouts() {
        assert_eq!(
            list_timeouts(&TimeoutSettings::default()),
            "Timeout (tcp tcpfin udp): 900 120 300\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&list_timeouts_json(&TimeoutSettings::default())).unwrap();
        assert_eq!(v["tcpfin"], 120);
    }

    #[test]
    fn json_listing_follows_the_text_order_and_schema() {
        let v: serde_json::Value =
            serde_json::from_str(&list_services_json(&view(), &opts("-L -n")).unwrap()).unwrap();
        assert_eq!(v["version"], "1.2.1");
        let s = &v["services"];
        assert_eq!(s[0]["protocol"], "tcp");
        assert_eq!(s[0]["address"], "10.0.0.1");
        assert_eq!(s[0]["persistence"]["netmask"], 24);
        assert_eq!(s[0]["reals"][0]["address"], "10.1.0.1");
        assert_eq!(s[0]["reals"][1]["forward"], "masq");
        assert_eq!(s[0]["reals"][1]["active_conns"], 12);
        assert_eq!(s[0]["reals"][1]["stats"]["in_bytes"], 98_765_432_100u64);
        assert_eq!(s[0]["reals"][1]["rates"]["inbps"], 456_789_012);
        assert_eq!(s[1]["flags"], serde_json::json!(["sh-fallback", "sh-port"]));
        assert_eq!(s[2]["protocol"], "fwmark");
        assert_eq!(s[2]["family"], "ipv6");
        assert_eq!(s[2]["fwmark"], 7);
        assert!(s[2]["address"].is_null());
    }

    #[test]
    fn view_from_a_snapshot_sums_workers() {
        use crate::service::table::DestIds;
        use crate::service::{Config, RealServer, VirtualService};
        let config = Config {
            services: vec![VirtualService {
                key: tcp("10.0.0.1", 80),
                scheduler: SchedulerKind::Rr,
                flags: SchedFlags::default(),
                mh_table_size: 4093,
                persistence: None,
                reals: vec![RealServer {
                    addr: "10.1.0.1".parse().unwrap(),
                    port: 8080,
                    weight: 2,
                    method: ForwardMethod::Masquerade,
                    upper_threshold: 0,
                    lower_threshold: 0,
                }],
            }],
            ..Config::default()
        };
        let reg = DestRegistry::new(4);
        let table = ServiceTable::build(&config, &mut DestIds::new(4), &reg, 1).unwrap();
        let id = table.services[0].dests[0].id;
        reg.get(id).set(crate::service::ConnCount::Active, 3);
        let workers = vec![Arc::new(WorkerStats::new(4)), Arc::new(WorkerStats::new(4))];
        workers[0].dest(id).in_pkts.add(5);
        workers[1].dest(id).in_pkts.add(6);
        let v = build_table_view(&table, &reg, &workers, None, 0);
        assert_eq!(v.size, 4096);
        assert_eq!(v.services[0].stats.in_pkts, 11);
        assert_eq!(v.services[0].reals[0].stats.in_pkts, 11);
        assert_eq!(v.services[0].reals[0].active, 3);
        assert_eq!(v.services[0].reals[0].port, 8080);
    }
}
