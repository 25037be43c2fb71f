//! fastlb's TOML configuration (schema and example in `docs/config.md`).
//!
//! The text is read with `toml` + serde into private raw structs that refuse unknown fields,
//! then converted to the [`Config`] model and validated. Each table keeps its byte span so
//! every error, from serde, from conversion or from validation, names a line: the line of
//! the offending key when it is written, else the table's header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::{validate, ConfigError, Fault};
use crate::forward::nexthop::MacAddr;
use crate::service::bgp::BgpSettings;
use crate::service::health::{
    parse_hex, CheckKind, DnsCheck, HealthConfig, HttpCheck, ScriptCheck, ServiceHealth,
    SorryServer, StatusRange, TlsCheck, UdpCheck, DNS_TYPES,
};
use crate::service::pair::{PairConfig, SyncDaemonSettings, VrrpInstance};
use crate::service::{
    ClassifierRule, Config, DestOrder, ForwardMethod, Persistence, Prefix, Protocol, RealServer,
    SchedFlags, SchedulerKind, ServiceKey, TimeoutSettings, VirtualService, DEFAULT_MH_TABLE_SIZE,
    DEFAULT_PERSISTENCE_SECS,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    director: Option<Spanned<RawDirector>>,
    bgp: Option<Spanned<RawBgp>>,
    timeouts: Option<Spanned<RawTimeouts>>,
    pair: Option<Spanned<RawPair>>,
    #[serde(default)]
    classifier: Vec<Spanned<RawClassifier>>,
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirector {
    conn_capacity: Option<usize>,
    tunnel_source_v4: Option<Ipv4Addr>,
    tunnel_source_v6: Option<Ipv6Addr>,
    sync_threshold: Option<[u32; 2]>,
    sync_refresh_period: Option<u32>,
    sync_retries: Option<u8>,
    sync_persist_mode: Option<::toml::Value>,
    sync_qlen_max: Option<u32>,
    sync_sock_size: Option<u32>,
    dest_order: Option<DestOrder>,
    accept_macs: Option<Vec<String>>,
    sloppy_tcp: Option<bool>,
    sloppy_udp: Option<bool>,
    state_file: Option<PathBuf>,
    drop_packet: Option<u8>,
    secure_tcp: Option<u8>,
    amemthresh: Option<u32>,
    am_droprate: Option<u32>,
    drop_entry: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBgp {
    local_as: u32,
    neighbor: IpAddr,
    neighbor_as: u32,
    source: Option<IpAddr>,
    router_id: Option<Ipv4Addr>,
    next_hop: Option<IpAddr>,
    hold_time: Option<u16>,
    bfd: Option<bool>,
    bfd_interval_ms: Option<u32>,
    bfd_multiplier: Option<u8>,
    vips: Option<Vec<IpAddr>>,
    shutdown_grace_ms: Option<u32>,
    bird: Option<PathBuf>,
    birdc: Option<PathBuf>,
    state_dir: Option<PathBuf>,
}

/// `[pair]`: the VRRP instance to follow, as keepalived.conf's `vrrp_instance` says it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPair {
    instance: Option<String>,
    interface: Option<String>,
    addresses: Vec<IpAddr>,
    sync_interface: Option<String>,
    syncid: Option<u8>,
    sync_maxlen: Option<u16>,
    mcast_group: Option<IpAddr>,
    mcast_port: Option<u16>,
    mcast_ttl: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    tcp: Option<u32>,
    tcpfin: Option<u32>,
    udp: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClassifier {
    protocol: Option<Protocol>,
    destination: String,
    ports: Option<::toml::Value>,
    mark: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    protocol: Option<Protocol>,
    address: Option<IpAddr>,
    port: Option<u16>,
    fwmark: Option<u32>,
    ipv6: Option<bool>,
    scheduler: Option<String>,
    flags: Option<Vec<String>>,
    persistence: Option<::toml::Value>,
    persistence_netmask: Option<u8>,
    mh_table_size: Option<u32>,
    health: Option<Spanned<RawHealth>>,
    sorry_server: Option<String>,
    sorry_server_method: Option<String>,
    #[serde(default)]
    real: Vec<Spanned<RawReal>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReal {
    address: IpAddr,
    port: Option<u16>,
    weight: Option<i64>,
    method: Option<String>,
    upper_threshold: Option<u32>,
    lower_threshold: Option<u32>,
    health: Option<Spanned<RawHealth>>,
}

/// `[service.health]` and `[service.real.health]`: every key optional, a real server's
/// keys overriding its service's one by one.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    check: Option<String>,
    port: Option<u16>,
    path: Option<String>,
    status: Option<Vec<::toml::Value>>,
    host: Option<String>,
    command: Option<String>,
    dynamic: Option<bool>,
    interval: Option<f64>,
    timeout: Option<f64>,
    retries: Option<u32>,
    delay_before_retry: Option<f64>,
    rise: Option<u32>,
    fall: Option<u32>,
    warmup: Option<f64>,
    inhibit_on_failure: Option<bool>,
    start_down: Option<bool>,
    notify: Option<String>,
    notify_up: Option<String>,
    notify_down: Option<String>,
    digest: Option<String>,
    sni: Option<String>,
    payload: Option<String>,
    require_reply: Option<bool>,
    reply: Option<String>,
    min_reply_length: Option<u16>,
    max_reply_length: Option<u16>,
    dns_type: Option<String>,
    dns_name: Option<String>,
    also: Option<Vec<RawHealth>>,
}

impl RawHealth {
    fn overlay(&self, over: &RawHealth) -> RawHealth {
        // A real server that switches to another kind of check inherits the timing and
        // notify keys, not the other kind's own keys.
        if over.check.is_some() && over.check != self.check {
            let base = RawHealth {
                check: None,
                port: None,
                path: None,
                status: None,
                host: None,
                command: None,
                dynamic: None,
                digest: None,
                sni: None,
                payload: None,
                require_reply: None,
                reply: None,
                min_reply_length: None,
                max_reply_length: None,
                dns_type: None,
                dns_name: None,
                ..self.clone()
            };
            return base.overlay_keys(over);
        }
        self.overlay_keys(over)
    }

    fn overlay_keys(&self, over: &RawHealth) -> RawHealth {
        macro_rules! pick {
            ($($f:ident),*) => { RawHealth { $($f: over.$f.clone().or_else(|| self.$f.clone())),* } };
        }
        pick!(
            check,
            port,
            path,
            status,
            host,
            command,
            dynamic,
            interval,
            timeout,
            retries,
            delay_before_retry,
            rise,
            fall,
            warmup,
            inhibit_on_failure,
            start_down,
            notify,
            notify_up,
            notify_down,
            digest,
            sni,
            payload,
            require_reply,
            reply,
            min_reply_length,
            max_reply_length,
            dns_type,
            dns_name,
            also
        )
    }

    /// The checker these keys describe; errors name the key at fault.
    fn resolve(&self) -> Result<HealthConfig, (&'static str, String)> {
        let kind = match self.check.as_deref() {
            Some("tcp") => CheckKind::Tcp,
            Some(web @ ("http" | "https")) => {
                let mut status = Vec::new();
                for v in self.status.iter().flatten() {
                    let text = match v {
                        ::toml::Value::Integer(n) => n.to_string(),
                        ::toml::Value::String(s) => s.clone(),
                        _ => String::new(),
                    };
                    status.push(StatusRange::parse(&text).ok_or((
                        "status",
                        "each entry a status code or a range such as \"200-299\"".to_string(),
                    ))?);
                }
                let digest = match &self.digest {
                    None => None,
                    Some(d) => Some(
                        parse_hex(d, false)
                            .filter(|(b, _)| b.len() == 16 && d.len() == 32)
                            .and_then(|(b, _)| b.try_into().ok())
                            .ok_or(("digest", "an MD5 sum, 32 hex digits".to_string()))?,
                    ),
                };
                CheckKind::Http(HttpCheck {
                    path: self.path.clone().unwrap_or_else(|| "/".into()),
                    status,
                    host: self.host.clone(),
                    digest,
                    tls: (web == "https").then(|| TlsCheck {
                        sni: self.sni.clone(),
                    }),
                })
            }
            Some("script") => CheckKind::Script(ScriptCheck {
                command: self
                    .command
                    .clone()
                    .ok_or(("command", "missing for a script check".to_string()))?,
                dynamic: self.dynamic.unwrap_or(false),
            }),
            Some("udp") => {
                let hex = |field: &'static str, v: &Option<String>, wild: bool| match v {
                    None => Ok(None),
                    Some(t) => parse_hex(t, wild)
                        .map(Some)
                        .ok_or((field, "hex digits".to_string())),
                };
                let (reply, reply_mask) = hex("reply", &self.reply, true)?.unwrap_or_default();
                let u = UdpCheck {
                    payload: hex("payload", &self.payload, false)?.map(|(p, _)| p),
                    require_reply: self.require_reply.unwrap_or(false) || !reply.is_empty(),
                    reply,
                    reply_mask,
                    min_reply_len: self.min_reply_length.unwrap_or(0),
                    max_reply_len: self.max_reply_length.unwrap_or(255),
                };
                if u.min_reply_len > u.max_reply_len {
                    return Err((
                        "min_reply_length",
                        "above max_reply_length: the check could never pass".into(),
                    ));
                }
                CheckKind::Udp(u)
            }
            Some("ping") => CheckKind::Ping,
            Some("dns") => {
                let qtype = match &self.dns_type {
                    None => 6,
                    Some(t) => DNS_TYPES
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(t))
                        .map(|(_, v)| *v)
                        .ok_or((
                            "dns_type",
                            "A, NS, CNAME, SOA, MX, TXT, AAAA, RRSIG or DNSKEY".to_string(),
                        ))?,
                };
                CheckKind::Dns(DnsCheck {
                    qtype,
                    name: self.dns_name.clone().unwrap_or_default(),
                })
            }
            Some(other) => {
                return Err((
                    "check",
                    format!("unknown check `{other}` (tcp, http, https, script, udp, ping, dns)"),
                ))
            }
            None => {
                return Err((
                    "check",
                    "missing (tcp, http, https, script, udp, ping or dns)".into(),
                ))
            }
        };
        let only = |field: &'static str, set: bool, for_kind: &str| {
            if set {
                Err((field, format!("only for {for_kind} checks")))
            } else {
                Ok(())
            }
        };
        let http = matches!(kind, CheckKind::Http(_));
        let https = matches!(&kind, CheckKind::Http(h) if h.tls.is_some());
        let script = matches!(kind, CheckKind::Script(_));
        let udp = matches!(kind, CheckKind::Udp(_));
        let dns = matches!(kind, CheckKind::Dns(_));
        only("path", !http && self.path.is_some(), "http")?;
        only("status", !http && self.status.is_some(), "http")?;
        only("host", !http && self.host.is_some(), "http")?;
        only("digest", !http && self.digest.is_some(), "http")?;
        only("sni", !https && self.sni.is_some(), "https")?;
        only("command", !script && self.command.is_some(), "script")?;
        only("dynamic", !script && self.dynamic.is_some(), "script")?;
        for (field, set) in [
            ("payload", self.payload.is_some()),
            ("reply", self.reply.is_some()),
            ("require_reply", self.require_reply.is_some()),
            ("min_reply_length", self.min_reply_length.is_some()),
            ("max_reply_length", self.max_reply_length.is_some()),
        ] {
            only(field, !udp && set, "udp")?;
        }
        only("dns_type", !dns && self.dns_type.is_some(), "dns")?;
        only("dns_name", !dns && self.dns_name.is_some(), "dns")?;
        let no_port = matches!(kind, CheckKind::Script(_) | CheckKind::Ping);
        only(
            "port",
            no_port && self.port.is_some(),
            "tcp, http, https, udp and dns",
        )?;
        let mut c = HealthConfig::new(kind);
        c.port = self.port;
        let secs = |field: &'static str, v: Option<f64>, d: Duration, min: f64| match v {
            None => Ok(d),
            Some(x) if x.is_finite() && x >= min && x <= 86_400.0 => Ok(Duration::from_secs_f64(x)),
            Some(_) => Err((field, format!("seconds, from {min} to 86400"))),
        };
        c.interval = secs("interval", self.interval, c.interval, 0.01)?;
        c.timeout = secs("timeout", self.timeout, c.timeout, 0.01)?;
        c.delay_before_retry = secs(
            "delay_before_retry",
            self.delay_before_retry,
            c.delay_before_retry,
            0.0,
        )?;
        c.warmup = secs("warmup", self.warmup, c.warmup, 0.0)?;
        c.retries = self.retries.unwrap_or(c.retries);
        c.rise = self.rise.unwrap_or(c.rise);
        c.fall = self.fall.unwrap_or(c.fall);
        if c.rise == 0 {
            return Err(("rise", "at least 1".into()));
        }
        if c.fall == 0 {
            return Err(("fall", "at least 1".into()));
        }
        c.inhibit_on_failure = self.inhibit_on_failure.unwrap_or(false);
        c.start_down = self.start_down.unwrap_or(false);
        c.notify = self.notify.clone();
        c.notify_up = self.notify_up.clone();
        c.notify_down = self.notify_down.clone();
        for (i, more) in self.also.iter().flatten().enumerate() {
            if more.also.is_some() {
                return Err(("also", "an `also` check has no `also` of its own".into()));
            }
            let m = more.resolve().map_err(|(field, why)| {
                let _ = i;
                (field, format!("in `also`: {why}"))
            })?;
            c.also.push(m);
        }
        Ok(c)
    }
}

/// Byte ranges of each table, kept to turn model positions back into lines.
#[derive(Default)]
struct Spans {
    timeouts: Option<Range<usize>>,
    classifiers: Vec<Range<usize>>,
    /// Each service's own keys: from its header to its first `[[service.real]]`.
    services: Vec<Range<usize>>,
    reals: Vec<Vec<Range<usize>>>,
}

/// The TOML reader's refusal as a [`ConfigError`] on its line. The reader's message spans
/// several lines for some faults and is empty for others (a key with no value at the end
/// of the text): the first are joined, the second say where the syntax breaks.
fn syntax_error(text: &str, path: &Path, e: &::toml::de::Error) -> ConfigError {
    let line = e.span().map_or(0, |s| line_of(text, s.start));
    let message = e.message().trim().replace('\n', "; ");
    let message = if message.is_empty() {
        let at = e.span().map_or(text.len(), |s| s.start.min(text.len()));
        let column = text
            .get(..at)
            .unwrap_or(text)
            .chars()
            .rev()
            .take_while(|&c| c != '\n')
            .count()
            + 1;
        format!("TOML syntax error at column {column}: a value or a closing bracket is missing")
    } else {
        message
    };
    ConfigError::at_line(path, line, message)
}

/// Reads fastlb's TOML. `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawFile = ::toml::from_str(text).map_err(|e| syntax_error(text, path, &e))?;
    let lines = Lines { text, path };
    let mut spans = Spans::default();
    let mut config = Config::default();

    if let Some(d) = raw.director {
        let span = d.span();
        let d = d.into_inner();
        config.conn_capacity = d.conn_capacity.unwrap_or(0);
        config.tunnel_source_v4 = d.tunnel_source_v4;
        config.tunnel_source_v6 = d.tunnel_source_v6;
        config.dest_order = d.dest_order.unwrap_or_default();
        config.sloppy_tcp = d.sloppy_tcp.unwrap_or(false);
        config.state_file = d.state_file;
        if d.sloppy_udp == Some(false) {
            // The kernel has no sloppy_udp sysctl: udp_conn_schedule schedules every UDP
            // packet that finds no connection, and so does fastlb (docs/decisions.md).
            return Err(lines
                .field(
                    &span,
                    "sloppy_udp",
                    "cannot be false: every UDP packet without a connection is scheduled \
                     (as the kernel, which has no such switch); write true or leave it out",
                )
                .with_context("director"));
        }
        if config.tunnel_source_v4.is_some_and(|a| a.is_unspecified()) {
            return Err(lines
                .field(&span, "tunnel_source_v4", "must be a unicast address")
                .with_context("director"));
        }
        let k = config.sync;
        let persist_mode = match d.sync_persist_mode {
            None => k.sync_persist_mode,
            // The sysctl takes 0 or 1; a TOML boolean reads better.
            Some(::toml::Value::Boolean(b)) => b,
            Some(::toml::Value::Integer(n @ (0 | 1))) => n == 1,
            Some(_) => {
                return Err(lines
                    .field(&span, "sync_persist_mode", "must be true, false, 0 or 1")
                    .with_context("director"))
            }
        };
        config.sync = crate::service::SyncSettings {
            sync_threshold: d.sync_threshold.unwrap_or(k.sync_threshold),
            sync_refresh_period: d.sync_refresh_period.unwrap_or(k.sync_refresh_period),
            sync_retries: d.sync_retries.unwrap_or(k.sync_retries),
            sync_persist_mode: persist_mode,
            sync_qlen_max: d.sync_qlen_max.unwrap_or(k.sync_qlen_max),
            sync_sock_size: d.sync_sock_size.unwrap_or(k.sync_sock_size),
        };
        if let Err(e) = config.sync.validate() {
            return Err(lines
                .field(&span, e.field, e.message)
                .with_context("director"));
        }
        let k = crate::conn::defence::DefenceSettings::default();
        config.defence = crate::conn::defence::DefenceSettings {
            drop_entry: d.drop_entry.unwrap_or(k.drop_entry),
            drop_packet: d.drop_packet.unwrap_or(k.drop_packet),
            secure_tcp: d.secure_tcp.unwrap_or(k.secure_tcp),
            amemthresh: d.amemthresh.unwrap_or(k.amemthresh),
            am_droprate: d.am_droprate.unwrap_or(k.am_droprate),
        };
        for (field, v) in [
            ("drop_entry", config.defence.drop_entry),
            ("drop_packet", config.defence.drop_packet),
            ("secure_tcp", config.defence.secure_tcp),
        ] {
            if v > 3 {
                return Err(lines
                    .field(&span, field, "must be 0 (off), 1 (on when the table is nearly full), 2 (on now, off when it is not) or 3 (always on)")
                    .with_context("director"));
            }
        }
        for m in d.accept_macs.iter().flatten() {
            let bad = |why: String| {
                lines
                    .field(&span, "accept_macs", why)
                    .with_context("director")
            };
            let mac: MacAddr = m.parse().map_err(bad)?;
            if mac.is_group() {
                return Err(bad(format!(
                    "'{m}' is a group address (broadcast and multicast frames are always taken)"
                )));
            }
            if !config.accept_macs.contains(&mac) {
                config.accept_macs.push(mac);
            }
        }
    }
    if let Some(p) = raw.pair {
        let span = p.span();
        config.pair = convert_pair(p.into_inner())
            .map_err(|(field, m)| lines.field(&span, field, m).with_context("pair"))?;
    }
    if let Some(t) = raw.timeouts {
        spans.timeouts = Some(t.span());
        let t = t.into_inner();
        let d = TimeoutSettings::default();
        config.timeouts = TimeoutSettings {
            tcp: t.tcp.unwrap_or(d.tcp),
            tcpfin: t.tcpfin.unwrap_or(d.tcpfin),
            udp: t.udp.unwrap_or(d.udp),
        };
    }
    for (i, c) in raw.classifier.into_iter().enumerate() {
        let span = c.span();
        let ctx = format!("classifier {}", i + 1);
        let c = c.into_inner();
        let dst: Prefix = c
            .destination
            .parse()
            .map_err(|m: String| lines.field(&span, "destination", m).with_context(&ctx))?;
        let ports = match &c.ports {
            None => (0, u16::MAX),
            Some(v) => {
                parse_ports(v).map_err(|m| lines.field(&span, "ports", m).with_context(&ctx))?
            }
        };
        config.classifiers.push(ClassifierRule {
            protocol: c.protocol,
            dst,
            ports,
            mark: c.mark,
        });
        spans.classifiers.push(span);
    }
    for (i, s) in raw.service.into_iter().enumerate() {
        let span = s.span();
        let s = s.into_inner();
        let own = span.start..s.real.first().map_or(span.end, |r| r.span().start);
        let (svc, real_spans, health) = convert_service(s, &lines, &own, i)?;
        if health != ServiceHealth::default() {
            config.health.services.insert(svc.key, health);
        }
        config.services.push(svc);
        spans.services.push(own);
        spans.reals.push(real_spans);
    }

    if let Some(b) = raw.bgp {
        let span = b.span();
        config.bgp = Some(
            convert_bgp(b.into_inner(), &config)
                .map_err(|(field, m)| lines.field(&span, field, m).with_context("bgp"))?,
        );
    }

    validate(&config).map_err(|inv| {
        let span = match inv.at {
            Fault::Service(i) => spans.services.get(i),
            Fault::Real(i, j) => spans.reals.get(i).and_then(|r| r.get(j)),
            Fault::Classifier(i) => spans.classifiers.get(i),
            Fault::Timeouts => spans.timeouts.as_ref(),
        };
        let line = span.map_or(0, |s| lines.field_line(s, inv.field));
        inv.into_config_error(&config, path, line)
    })?;
    Ok(config)
}

/// `[pair]` as the director pair keepalived.conf's one `vrrp_instance` would give: followed,
/// and with `sync_interface` the sync daemon `lvs_sync_daemon IF INSTANCE` would give (its
/// role follows the instance's state).
fn convert_pair(p: RawPair) -> Result<PairConfig, (&'static str, String)> {
    let Some(first) = p.addresses.first() else {
        return Err(("addresses", "must name at least one address".into()));
    };
    if let Some(mixed) = p.addresses.iter().find(|a| a.is_ipv6() != first.is_ipv6()) {
        return Err((
            "addresses",
            format!("{mixed}: IPv4 and IPv6 addresses in one instance"),
        ));
    }
    let name = p.instance.unwrap_or_else(|| DEFAULT_PAIR_INSTANCE.into());
    if name.is_empty() {
        return Err(("instance", "must not be empty".into()));
    }
    if let Some(fault) = p.interface.as_deref().and_then(super::interface_name_fault) {
        return Err(("interface", fault));
    }
    let sync_daemon = match p.sync_interface {
        Some(interface) => {
            if let Some(fault) = super::interface_name_fault(&interface) {
                return Err(("sync_interface", fault));
            }
            if let Some(g) = p.mcast_group.filter(|g| !g.is_multicast()) {
                return Err(("mcast_group", format!("{g} is not a multicast group")));
            }
            if p.mcast_port == Some(0) {
                return Err(("mcast_port", "must be 1 to 65535".into()));
            }
            if p.mcast_ttl == Some(0) {
                return Err(("mcast_ttl", "must be 1 to 255".into()));
            }
            Some(SyncDaemonSettings {
                interface,
                syncid: p.syncid.unwrap_or(0),
                maxlen: p.sync_maxlen,
                port: p.mcast_port,
                ttl: p.mcast_ttl,
                group: p.mcast_group,
                instance: Some(name.clone()),
            })
        }
        None => {
            let given = [
                ("syncid", p.syncid.is_some()),
                ("sync_maxlen", p.sync_maxlen.is_some()),
                ("mcast_group", p.mcast_group.is_some()),
                ("mcast_port", p.mcast_port.is_some()),
                ("mcast_ttl", p.mcast_ttl.is_some()),
            ];
            if let Some((field, _)) = given.into_iter().find(|(_, g)| *g) {
                return Err((
                    field,
                    "is a sync daemon setting: give sync_interface too".into(),
                ));
            }
            None
        }
    };
    Ok(PairConfig {
        instances: vec![VrrpInstance {
            name: name.clone(),
            interface: p.interface.unwrap_or_default(),
            vrid: 0,
            addresses: p.addresses,
            use_vmac: false,
        }],
        followed: Some(name),
        sync_daemon,
    })
}

/// The instance's name in logs when `[pair]` gives none.
const DEFAULT_PAIR_INSTANCE: &str = "pair";

/// `[bgp]`, checked against the services; errors name the key at fault.
fn convert_bgp(b: RawBgp, config: &Config) -> Result<BgpSettings, (&'static str, String)> {
    let mut s = BgpSettings::new(b.local_as, b.neighbor, b.neighbor_as);
    let asn = |field, n: u32| {
        if n == 0 || n == u32::MAX {
            Err((field, "an AS number from 1 to 4294967294".to_string()))
        } else {
            Ok(())
        }
    };
    asn("local_as", b.local_as)?;
    asn("neighbor_as", b.neighbor_as)?;
    let unicast = |field, a: IpAddr| {
        if a.is_unspecified() || a.is_multicast() {
            Err((field, "must be a unicast address".to_string()))
        } else {
            Ok(())
        }
    };
    unicast("neighbor", b.neighbor)?;
    let family = |field, a: IpAddr| {
        if a.is_ipv4() == b.neighbor.is_ipv4() {
            Ok(())
        } else {
            Err((
                field,
                "must be of the neighbor's address family".to_string(),
            ))
        }
    };
    for (field, a) in [("source", b.source), ("next_hop", b.next_hop)] {
        if let Some(a) = a {
            unicast(field, a)?;
            family(field, a)?;
        }
    }
    s.source = b.source;
    s.router_id = b.router_id;
    s.next_hop = b.next_hop;
    if let Some(h) = b.hold_time {
        if h == 1 || h == 2 {
            return Err((
                "hold_time",
                "0 (no keepalives) or 3 seconds and more".into(),
            ));
        }
        s.hold_time = h;
    }
    s.bfd = b.bfd.unwrap_or(s.bfd);
    if let Some(ms) = b.bfd_interval_ms {
        if !(10..=60_000).contains(&ms) {
            return Err(("bfd_interval_ms", "milliseconds, from 10 to 60000".into()));
        }
        s.bfd_interval_ms = ms;
    }
    if let Some(m) = b.bfd_multiplier {
        if m == 0 {
            return Err(("bfd_multiplier", "at least 1".into()));
        }
        s.bfd_multiplier = m;
    }
    let service_vips: Vec<IpAddr> = config
        .services
        .iter()
        .filter_map(|svc| match svc.key {
            ServiceKey::Tuple { addr, .. } => Some(addr),
            ServiceKey::Fwmark { .. } => None,
        })
        .collect();
    for &v in b.vips.iter().flatten() {
        if !service_vips.contains(&v) {
            return Err((
                "vips",
                format!("{v} is not the address of any protocol/address/port service"),
            ));
        }
    }
    s.vips = b.vips.unwrap_or_default();
    let announced = if s.vips.is_empty() {
        &service_vips
    } else {
        &s.vips
    };
    if let Some(v) = announced
        .iter()
        .find(|v| v.is_ipv4() != b.neighbor.is_ipv4())
    {
        return Err((
            if s.vips.is_empty() {
                "neighbor"
            } else {
                "vips"
            },
            format!("{v} cannot be announced to a neighbor of the other address family"),
        ));
    }
    s.shutdown_grace_ms = b.shutdown_grace_ms.unwrap_or(s.shutdown_grace_ms);
    if s.shutdown_grace_ms > 600_000 {
        return Err(("shutdown_grace_ms", "milliseconds, at most 600000".into()));
    }
    s.bird = b.bird.unwrap_or(s.bird);
    s.birdc = b.birdc.unwrap_or(s.birdc);
    s.state_dir = b.state_dir.unwrap_or(s.state_dir);
    Ok(s)
}

fn convert_service(
    s: RawService,
    lines: &Lines<'_>,
    own: &Range<usize>,
    index: usize,
) -> Result<(VirtualService, Vec<Range<usize>>, ServiceHealth), ConfigError> {
    let ctx = format!("service {}", index + 1);
    let err = |field: &str, m: String| lines.field(own, field, m).with_context(&ctx);
    let key = match (s.fwmark, s.address) {
        (Some(_), Some(_)) => {
            return Err(err(
                "fwmark",
                "give either fwmark or protocol/address/port, not both".into(),
            ))
        }
        (Some(mark), None) => {
            if s.protocol.is_some() || s.port.is_some() {
                return Err(err(
                    "fwmark",
                    "a fwmark service has no protocol or port".into(),
                ));
            }
            ServiceKey::Fwmark {
                mark,
                ipv6: s.ipv6.unwrap_or(false),
            }
        }
        (None, Some(addr)) => {
            if s.ipv6.is_some() {
                return Err(err(
                    "ipv6",
                    "only for fwmark services (the address gives the family)".into(),
                ));
            }
            ServiceKey::Tuple {
                protocol: s
                    .protocol
                    .ok_or_else(|| err("protocol", "missing (tcp or udp)".into()))?,
                addr,
                port: s
                    .port
                    .ok_or_else(|| err("port", "missing (0 = all ports)".into()))?,
            }
        }
        (None, None) => {
            return Err(err(
                "address",
                "missing: give protocol/address/port or fwmark".into(),
            ))
        }
    };
    // Context from here on names the service by its key, as validation errors do.
    let ctx = format!("service \"{key}\"");
    let err = |field: &str, m: String| lines.field(own, field, m).with_context(&ctx);
    let scheduler = match &s.scheduler {
        None => SchedulerKind::Wlc,
        Some(name) => name.parse().map_err(|m| err("scheduler", m))?,
    };
    let mut flags = SchedFlags::default();
    for f in s.flags.iter().flatten() {
        match f.as_str() {
            "sh-fallback" => flags.sh_fallback = true,
            "sh-port" => flags.sh_port = true,
            "mh-fallback" => flags.mh_fallback = true,
            "mh-port" => flags.mh_port = true,
            "flag-1" | "flag-2" => {
                let fallback = f == "flag-1";
                match scheduler {
                    SchedulerKind::Sh if fallback => flags.sh_fallback = true,
                    SchedulerKind::Sh => flags.sh_port = true,
                    SchedulerKind::Mh if fallback => flags.mh_fallback = true,
                    SchedulerKind::Mh => flags.mh_port = true,
                    _ => return Err(err("flags", format!("`{f}` means nothing to {scheduler}"))),
                }
            }
            _ => {
                return Err(err(
                    "flags",
                    format!("unknown flag `{f}` (sh-fallback, sh-port, mh-fallback, mh-port)"),
                ))
            }
        }
    }
    let ipv6 = key.is_ipv6();
    let timeout_secs = match &s.persistence {
        None => None,
        Some(::toml::Value::Boolean(false)) => None,
        Some(::toml::Value::Boolean(true)) => Some(DEFAULT_PERSISTENCE_SECS),
        Some(::toml::Value::Integer(n)) => Some(
            u32::try_from(*n)
                .map_err(|_| err("persistence", "must be a timeout in seconds or true".into()))?,
        ),
        Some(_) => {
            return Err(err(
                "persistence",
                "must be a timeout in seconds or true".into(),
            ))
        }
    };
    let persistence = match (timeout_secs, s.persistence_netmask) {
        (None, Some(_)) => return Err(err("persistence_netmask", "needs persistence".into())),
        (None, None) => None,
        (Some(timeout_secs), mask) => Some(Persistence {
            timeout_secs,
            netmask: mask.unwrap_or(if ipv6 { 128 } else { 32 }),
        }),
    };
    let service_port = match key {
        ServiceKey::Tuple { port, .. } => port,
        ServiceKey::Fwmark { .. } => 0,
    };
    let mut health = ServiceHealth::default();
    let (service_health, health_span) = match s.health {
        Some(h) => {
            let span = h.span();
            (Some(h.into_inner()), span)
        }
        None => (None, own.clone()),
    };
    if let Some(h) = &service_health {
        health.check = Some(
            h.resolve()
                .map_err(|(f, m)| lines.field(&health_span, f, m).with_context(&ctx))?,
        );
    }
    let mut reals = Vec::with_capacity(s.real.len());
    let mut real_spans = Vec::with_capacity(s.real.len());
    for (j, r) in s.real.into_iter().enumerate() {
        let span = r.span();
        let mut r = r.into_inner();
        let real_health = r.health.take();
        let rctx = format!("{ctx} real {}", j + 1);
        let rerr = |field: &str, m: String| lines.field(&span, field, m).with_context(&rctx);
        let weight = r.weight.unwrap_or(1);
        let weight = i32::try_from(weight)
            .ok()
            .filter(|w| (0..=super::error::MAX_WEIGHT).contains(w))
            .ok_or_else(|| rerr("weight", "must be 0..=65535".into()))?;
        let method = match r.method.as_deref() {
            None => ForwardMethod::DirectRouting,
            Some(m) => parse_method(m).ok_or_else(|| {
                rerr(
                    "method",
                    format!("unknown method `{m}` (nat, dr, tun; masq, route, ipip)"),
                )
            })?,
        };
        let real = RealServer {
            addr: r.address,
            port: r.port.unwrap_or(service_port),
            weight,
            method,
            upper_threshold: r.upper_threshold.unwrap_or(0),
            lower_threshold: r.lower_threshold.unwrap_or(0),
        };
        if let Some(h) = real_health {
            let hspan = h.span();
            let merged = service_health
                .clone()
                .unwrap_or_default()
                .overlay(h.get_ref());
            let check = merged
                .resolve()
                .map_err(|(f, m)| lines.field(&hspan, f, m).with_context(&rctx))?;
            health.reals.insert((real.addr, real.port), check);
        }
        if let Some(check) = health
            .reals
            .get(&(real.addr, real.port))
            .or(health.check.as_ref())
        {
            if check.uses_network() && check.port.unwrap_or(real.port) == 0 {
                return Err(rerr(
                    "port",
                    "a tcp or http check needs a port: give the health `port`".into(),
                ));
            }
        }
        reals.push(real);
        real_spans.push(span);
    }
    if let Some(text) = &s.sorry_server {
        let addr: std::net::SocketAddr = text.parse().map_err(|_| {
            err(
                "sorry_server",
                format!("`{text}`: an address and port such as \"127.0.0.1:80\""),
            )
        })?;
        let method = match s.sorry_server_method.as_deref() {
            None => reals
                .first()
                .map_or(ForwardMethod::DirectRouting, |r| r.method),
            Some(m) => parse_method(m).ok_or_else(|| {
                err(
                    "sorry_server_method",
                    format!("unknown method `{m}` (nat, dr, tun)"),
                )
            })?,
        };
        if method != ForwardMethod::Tunnel && addr.is_ipv6() != ipv6 {
            return Err(err(
                "sorry_server",
                "address family differs from the service's (allowed only with tun)".into(),
            ));
        }
        health.sorry_server = Some(SorryServer {
            addr: addr.ip(),
            port: addr.port(),
            method,
        });
    } else if s.sorry_server_method.is_some() {
        return Err(err("sorry_server_method", "needs sorry_server".into()));
    }
    Ok((
        VirtualService {
            key,
            scheduler,
            flags,
            mh_table_size: s.mh_table_size.unwrap_or(DEFAULT_MH_TABLE_SIZE),
            persistence,
            reals,
        },
        real_spans,
        health,
    ))
}

/// Forwarding method names: fastlb's own, ipvsadm's `-L` column names and keepalived's.
pub(crate) fn parse_method(m: &str) -> Option<ForwardMethod> {
    match m.to_ascii_lowercase().as_str() {
        "nat" | "masq" | "masquerade" | "masquerading" => Some(ForwardMethod::Masquerade),
        "dr" | "route" | "direct" | "gatewaying" => Some(ForwardMethod::DirectRouting),
        "tun" | "tunnel" | "ipip" => Some(ForwardMethod::Tunnel),
        _ => None,
    }
}

fn parse_ports(v: &::toml::Value) -> Result<(u16, u16), String> {
    let bad = || "must be a port number or a range such as \"80-443\"".to_string();
    match v {
        ::toml::Value::Integer(n) => {
            let p = u16::try_from(*n).map_err(|_| bad())?;
            Ok((p, p))
        }
        ::toml::Value::String(s) => {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let a: u16 = a.trim().parse().map_err(|_| bad())?;
            let b: u16 = b.trim().parse().map_err(|_| bad())?;
            Ok((a, b))
        }
        _ => Err(bad()),
    }
}

/// The text being read, to turn byte offsets into lines.
struct Lines<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Lines<'_> {
    /// The line of key `field` inside `span`, else the span's first line.
    fn field_line(&self, span: &Range<usize>, field: &str) -> usize {
        let end = span.end.min(self.text.len());
        let start = span.start.min(end);
        let mut offset = start;
        for l in self.text[start..end].split_inclusive('\n') {
            let t = l.trim_start().trim_start_matches('{').trim_start();
            if let Some(rest) = t.strip_prefix(field) {
                if rest.trim_start().starts_with('=') {
                    return line_of(self.text, offset);
                }
            }
            // Inline tables put several keys on one line.
            if l.contains(&format!(", {field} =")) || l.contains(&format!("{{ {field} =")) {
                return line_of(self.text, offset);
            }
            offset += l.len();
        }
        line_of(self.text, start)
    }

    fn field(&self, span: &Range<usize>, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at_line(self.path, self.field_line(span, field), message).with_field(field)
    }
}

/// 1-based line of byte `offset`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[director]
conn_capacity = 1048576
tunnel_source_v4 = "192.0.2.1"
dest_order = "kernel"

[timeouts]
tcp = 900
tcpfin = 120
udp = 300

[[classifier]]
protocol = "tcp"
destination = "10.0.0.0/24"
ports = "80-443"
mark = 1

[[service]]
protocol = "tcp"
address = "192.0.2.10"
port = 80
scheduler = "wrr"

[[service.real]]
address = "10.0.1.1"
port = 8080
weight = 3
method = "nat"

[[service.real]]
address = "10.0.1.2"
weight = 2
method = "masq"
upper_threshold = 100
lower_threshold = 50

[[service]]
fwmark = 1
scheduler = "sh"
flags = ["sh-port", "sh-fallback"]
persistence = true
persistence_netmask = 24

[[service.real]]
address = "10.0.2.1"
"#;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("fastlb.toml"))
    }

    #[test]
    fn reads_the_example() {
        let c = p(EXAMPLE).unwrap();
        assert_eq!(c.conn_capacity, 1_048_576);
        assert_eq!(c.tunnel_source_v4, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(c.dest_order, DestOrder::Kernel);
        assert_eq!(p("").unwrap().dest_order, DestOrder::Config);
        assert_eq!(c.timeouts, TimeoutSettings::default());
        assert_eq!(c.classifiers.len(), 1);
        assert_eq!(c.classifiers[0].ports, (80, 443));
        assert_eq!(c.classifiers[0].dst.len, 24);
        assert_eq!(c.services.len(), 2);
        let web = &c.services[0];
        assert_eq!(web.scheduler, SchedulerKind::Wrr);
        assert_eq!(web.persistence, None);
        assert_eq!(web.reals[0].port, 8080);
        // Real port defaults to the service's.
        assert_eq!(web.reals[1].port, 80);
        assert_eq!(web.reals[1].method, ForwardMethod::Masquerade);
        assert_eq!(web.reals[1].upper_threshold, 100);
        let fw = &c.services[1];
        assert_eq!(
            fw.key,
            ServiceKey::Fwmark {
                mark: 1,
                ipv6: false
            }
        );
        assert!(fw.flags.sh_port && fw.flags.sh_fallback);
        assert_eq!(
            fw.persistence,
            Some(Persistence {
                timeout_secs: 300,
                netmask: 24
            })
        );
        assert_eq!(fw.reals[0].port, 0);
        assert_eq!(fw.reals[0].method, ForwardMethod::DirectRouting);
        assert_eq!(fw.reals[0].weight, 1);
    }

    #[test]
    fn sync_settings_are_named_after_the_sysctls() {
        let c = p(
            "[director]\nsync_threshold = [1, 10]\nsync_refresh_period = 30\n\
            sync_retries = 2\nsync_persist_mode = 1\nsync_qlen_max = 128\n",
        )
        .unwrap();
        assert_eq!(c.sync.sync_threshold, [1, 10]);
        assert_eq!(
            (
                c.sync.sync_refresh_period,
                c.sync.sync_retries,
                c.sync.sync_qlen_max
            ),
            (30, 2, 128)
        );
        assert!(c.sync.sync_persist_mode);
        assert_eq!(p("").unwrap().sync, crate::service::SyncSettings::default());
        let e = p("[director]\nconn_capacity = 10\nsync_threshold = [50, 50]\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().contains("sync_threshold"), "{e}");
        let e = p("[director]\nsync_retries = 7\n").unwrap_err();
        assert!(e.to_string().contains("sync_retries"), "{e}");
        let e = p("[director]\nsync_persist_mode = 2\n").unwrap_err();
        assert!(e.to_string().contains("sync_persist_mode"), "{e}");
    }

    fn line_of_text(text: &str, needle: &str) -> usize {
        line_of(text, text.find(needle).unwrap())
    }

    #[test]
    fn syntax_errors_always_say_something() {
        // The TOML reader itself has no message for a key without a value at the end.
        let e = p("[[service]]\nprotocol =").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("column 11"), "{e}");
        let e = p("[x").unwrap_err();
        assert_eq!((e.line, e.message.contains('\n')), (1, false), "{e}");
        assert!(e.message.contains("invalid table header"), "{e}");
    }

    #[test]
    fn validation_errors_name_the_line_of_the_field() {
        let text = EXAMPLE.replace("weight = 2", "weight = 2\nlower_threshold_x = 1");
        let e = p(&text).unwrap_err();
        assert!(
            e.message.contains("unknown field `lower_threshold_x`"),
            "{e}"
        );
        assert!(e.line > 0);

        let text = EXAMPLE.replace("lower_threshold = 50", "lower_threshold = 500");
        let e = p(&text).unwrap_err();
        assert_eq!(e.line, line_of_text(&text, "lower_threshold = 500"));
        assert_eq!(e.field.as_deref(), Some("lower_threshold"));
        assert_eq!(e.context, "service \"TCP 192.0.2.10:80\" real 2");
    }

    #[test]
    fn conversion_errors_name_the_line() {
        let text = EXAMPLE.replace("weight = 3", "weight = 70000");
        let e = p(&text).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "fastlb.toml:{}: service \"TCP 192.0.2.10:80\" real 1: field `weight`: must be 0..=65535",
                line_of_text(&text, "weight = 70000")
            )
        );
        let text = EXAMPLE.replace("scheduler = \"wrr\"", "scheduler = \"wrrr\"");
        let e = p(&text).unwrap_err();
        assert_eq!(e.line, line_of_text(&text, "scheduler = \"wrrr\""));
        assert_eq!(e.field.as_deref(), Some("scheduler"));
    }

    const BGP: &str = "[bgp]\nlocal_as = 65001\nneighbor = \"10.1.0.1\"\nneighbor_as = 65000\n\
        bfd_interval_ms = 50\nvips = [\"192.0.2.10\"]\n\n[[service]]\nprotocol = \"tcp\"\n\
        address = \"192.0.2.10\"\nport = 80\n[[service.real]]\naddress = \"10.0.1.1\"\n";

    #[test]
    fn bgp_settings_and_defaults() {
        let c = p(BGP).unwrap();
        let b = c.bgp.as_ref().unwrap();
        assert_eq!((b.local_as, b.neighbor_as), (65001, 65000));
        assert_eq!(b.bfd_interval_ms, 50);
        assert!(b.bfd);
        assert_eq!((b.hold_time, b.bfd_multiplier), (9, 3));
        assert_eq!(b.vips, ["192.0.2.10".parse::<IpAddr>().unwrap()]);
        // What `fastlb import` writes reads back the same.
        let again = p(&crate::service::config::render::to_toml(&c)).unwrap();
        assert_eq!(again, c);
        assert_eq!(p("").unwrap().bgp, None);
    }

    #[test]
    fn bad_bgp_settings_are_refused_with_their_line() {
        for (from, to, line, what) in [
            ("local_as = 65001", "local_as = 0", 2, "local_as"),
            (
                "vips = [\"192.0.2.10\"]",
                "vips = [\"192.0.2.11\"]",
                6,
                "not the address",
            ),
            (
                "bfd_interval_ms = 50",
                "bfd_interval_ms = 5",
                5,
                "bfd_interval_ms",
            ),
            ("bfd_interval_ms = 50", "hold_time = 2", 5, "hold_time"),
            (
                "bfd_interval_ms = 50",
                "next_hop = \"2001:db8::1\"",
                5,
                "family",
            ),
            (
                "neighbor = \"10.1.0.1\"",
                "neighbor = \"2001:db8::1\"",
                6,
                "other address family",
            ),
            (
                "bfd_interval_ms = 50",
                "bfd_interval = 50",
                5,
                "unknown field",
            ),
        ] {
            let text = BGP.replace(from, to);
            let e = p(&text).unwrap_err();
            assert_eq!(e.line, line, "{to}: {e}");
            assert!(e.to_string().contains(what), "{to}: {e}");
        }
        // A missing required key.
        let e = p(&BGP.replace("neighbor_as = 65000\n", "")).unwrap_err();
        assert!(e.to_string().contains("neighbor_as"), "{e}");
    }

    #[test]
    fn sloppy_settings() {
        assert!(!p("").unwrap().sloppy_tcp);
        let c = p("[director]\nsloppy_tcp = true\nsloppy_udp = true\n").unwrap();
        assert!(c.sloppy_tcp);
        assert!(crate::service::config::render::to_toml(&c).contains("sloppy_tcp = true"));
        // UDP is always sloppy, as in the kernel: false cannot be honoured.
        let e = p("[director]\nsloppy_tcp = true\nsloppy_udp = false\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().contains("sloppy_udp"), "{e}");
        let e = p("[director]\nsloppy_tcp = 1\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn defence_settings() {
        use crate::conn::defence::DefenceSettings;
        assert_eq!(p("").unwrap().defence, DefenceSettings::default());
        let c =
            p("[director]\ndrop_entry = 2\ndrop_packet = 1\nsecure_tcp = 3\namemthresh = 5000\nam_droprate = 4\n")
                .unwrap();
        assert_eq!(
            c.defence,
            DefenceSettings {
                drop_entry: 2,
                drop_packet: 1,
                secure_tcp: 3,
                amemthresh: 5000,
                am_droprate: 4,
            }
        );
        let text = crate::service::config::render::to_toml(&c);
        assert_eq!(p(&text).unwrap().defence, c.defence, "{text}");
        let e = p("[director]\nsloppy_tcp = true\nsecure_tcp = 4\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().contains("secure_tcp"), "{e}");
        let e = p("[director]\n\ndrop_entry = 7\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().contains("drop_entry"), "{e}");
    }

    #[test]
    fn state_file_setting() {
        assert_eq!(p("").unwrap().state_file, None);
        let c = p("[director]\nstate_file = \"/var/lib/fastlb/conns.state\"\n").unwrap();
        assert_eq!(
            c.state_file.as_deref(),
            Some(Path::new("/var/lib/fastlb/conns.state"))
        );
        let text = crate::service::config::render::to_toml(&c);
        assert!(
            text.contains("state_file = \"/var/lib/fastlb/conns.state\""),
            "{text}"
        );
        let e = p("[director]\nstate_file = 3\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn serde_errors_carry_a_line() {
        let text = EXAMPLE.replace("port = 8080", "port = \"eighty\"");
        let e = p(&text).unwrap_err();
        assert_eq!(e.line, line_of_text(&text, "port = \"eighty\""));
        let e = p("[[service]]\nprotocol = \"sctp\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let c = p("[director]\naccept_macs = [\"00:00:5e:00:01:33\", \"00:00:5E:00:02:33\"]\n")
            .unwrap();
        assert_eq!(c.accept_macs.len(), 2);
        assert_eq!(c.accept_macs[1].to_string(), "00:00:5e:00:02:33");
        let e =
            p("[director]\nconn_capacity = 3\naccept_macs = [\"00:00:5e:00:01\"]\n").unwrap_err();
        assert!(
            e.to_string().contains(":3:") && e.to_string().contains("bad MAC"),
            "{e}"
        );
        let e = p("[director]\naccept_macs = [\"01:00:5e:00:00:01\"]\n").unwrap_err();
        assert!(e.to_string().contains("group address"), "{e}");
        let e = p("[director]\nconn_capacity = = 3\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = p("[director]\nconn_capacity = 3\ndest_order = \"newest\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().contains("`config` or `kernel`"), "{e}");
    }

    #[test]
    fn port_zero_needs_persistence_and_points_at_port() {
        let text = "[[service]]\nprotocol = \"udp\"\naddress = \"10.0.0.1\"\nport = 0\n\n[[service.real]]\naddress = \"10.0.1.1\"\nport = 0\n";
        let e = p(text).unwrap_err();
        // The service's own `port`, not the real server's.
        assert_eq!(e.line, 4, "{e}");
        let ok = text.replace("port = 0\n\n", "port = 0\npersistence = 600\n\n");
        let c = p(&ok).unwrap();
        assert_eq!(c.services[0].persistence.unwrap().timeout_secs, 600);
    }

    #[test]
    fn classifier_for_unknown_mark_is_refused() {
        let text = EXAMPLE.replace("\"80-443\"\nmark = 1", "\"80-443\"\nmark = 2");
        let e = p(&text).unwrap_err();
        assert_eq!(e.context, "classifier 1");
        assert_eq!(e.line, line_of_text(&text, "mark = 2"));
    }

    #[test]
    fn ports_forms() {
        assert_eq!(parse_ports(&::toml::Value::Integer(53)), Ok((53, 53)));
        assert_eq!(
            parse_ports(&::toml::Value::String("1000-2000".into())),
            Ok((1000, 2000))
        );
        assert!(parse_ports(&::toml::Value::Integer(70_000)).is_err());
        assert!(parse_ports(&::toml::Value::String("x".into())).is_err());
    }

    #[test]
    fn fwmark_and_address_are_exclusive() {
        let e = p("[[service]]\nfwmark = 3\naddress = \"10.0.0.1\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("fwmark"));
        assert_eq!(e.line, 2);
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../../docs/config.md");
        let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
        let end = start + doc[start..].find("```").unwrap();
        let c = p(&doc[start..end]).unwrap();
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services[0].reals.len(), 2);
        assert_eq!(c.services[0].reals[1].port, 80);
        assert_eq!(c.classifiers[0].mark, 1);
    }

    const HEALTH: &str = r#"
[[service]]
protocol = "tcp"
address = "192.0.2.10"
port = 80
sorry_server = "127.0.0.1:8080"
sorry_server_method = "nat"

[service.health]
check = "http"
path = "/health"
status = [200, "301-302"]
interval = 2.5
timeout = 1
fall = 3
inhibit_on_failure = true
notify = "/usr/local/bin/lb-notify"

[[service.real]]
address = "10.0.1.1"

[[service.real]]
address = "10.0.1.2"
port = 8080

[service.real.health]
fall = 1
port = 9000

[[service.real]]
address = "10.0.1.3"

[service.real.health]
check = "script"
command = "exit 5"
path = "/x"
"#;

    #[test]
    fn health_keys_map_onto_the_model() {
        let text = HEALTH.replace("path = \"/x\"", "dynamic = true");
        let c = p(&text).unwrap();
        let key = c.services[0].key;
        let a: IpAddr = "10.0.1.1".parse().unwrap();
        let b: IpAddr = "10.0.1.2".parse().unwrap();
        let d: IpAddr = "10.0.1.3".parse().unwrap();
        let ca = c.health.check_for(&key, a, 80).unwrap();
        let CheckKind::Http(h) = &ca.kind else {
            panic!("{ca:?}")
        };
        assert_eq!(h.path, "/health");
        assert_eq!(
            h.status,
            vec![
                StatusRange { lo: 200, hi: 200 },
                StatusRange { lo: 301, hi: 302 }
            ]
        );
        assert_eq!(ca.interval, Duration::from_millis(2500));
        assert_eq!((ca.fall, ca.rise, ca.retries), (3, 1, 2));
        assert!(ca.inhibit_on_failure);
        assert_eq!(ca.port, None);
        // The override changes only the keys it gives.
        let cb = c.health.check_for(&key, b, 8080).unwrap();
        assert_eq!((cb.fall, cb.port), (1, Some(9000)));
        assert_eq!(cb.kind, ca.kind);
        assert_eq!(cb.notify.as_deref(), Some("/usr/local/bin/lb-notify"));
        let cd = c.health.check_for(&key, d, 80).unwrap();
        assert_eq!(
            cd.kind,
            CheckKind::Script(ScriptCheck {
                command: "exit 5".into(),
                dynamic: true
            })
        );
        let sorry = c.health.sorry_server(&key).unwrap();
        assert_eq!(
            (sorry.addr, sorry.port, sorry.method),
            (
                "127.0.0.1".parse().unwrap(),
                8080,
                ForwardMethod::Masquerade
            )
        );
        // No health keys at all: no entry.
        assert!(p(EXAMPLE).unwrap().health.is_empty());
    }

    #[test]
    fn health_errors_name_their_line() {
        // An http key on a script check.
        let e = p(HEALTH).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("path"));
        assert_eq!(e.line, line_of_text(HEALTH, "path = \"/x\""));
        assert_eq!(e.context, "service \"TCP 192.0.2.10:80\" real 3");
        let good = HEALTH.replace("path = \"/x\"", "dynamic = true");
        let text = good.replace("status = [200, \"301-302\"]", "status = [\"2xx\"]");
        let e = p(&text).unwrap_err();
        assert_eq!(
            (e.field.as_deref(), e.line),
            (Some("status"), line_of_text(&text, "status = ["))
        );
        let text = good.replace("check = \"http\"", "check = \"smtp\"");
        assert_eq!(p(&text).unwrap_err().field.as_deref(), Some("check"));
        // An http key on a ping check.
        let text = good.replace("check = \"http\"", "check = \"ping\"");
        assert_eq!(p(&text).unwrap_err().field.as_deref(), Some("path"));
        let text = good.replace("\"127.0.0.1:8080\"", "\"[::1]:80\"");
        assert_eq!(p(&text).unwrap_err().field.as_deref(), Some("sorry_server"));
        let text = good.replace("fall = 3", "fal = 3");
        assert!(p(&text)
            .unwrap_err()
            .message
            .contains("unknown field `fal`"));
        // A port-0 service with a tcp check and no health port.
        let text = "[[service]]\nfwmark = 1\n[service.health]\ncheck = \"tcp\"\n[[service.real]]\naddress = \"10.0.2.1\"\n";
        let e = p(text).unwrap_err();
        assert!(e.message.contains("needs a port"), "{e}");
        assert!(p(&text.replace("\"tcp\"", "\"tcp\"\nport = 80")).is_ok());
    }

    #[test]
    fn the_documented_https_udp_ping_dns_example_parses() {
        let doc = include_str!("../../../docs/config.md");
        let from = doc.find("The other kinds, keepalived's").unwrap();
        let start = from + doc[from..].find("```toml\n").unwrap() + "```toml\n".len();
        let end = start + doc[start..].find("```").unwrap();
        let c = p(&doc[start..end]).unwrap_or_else(|e| panic!("{e}"));
        let key = c.services[0].key;
        let h = c
            .health
            .check_for(&key, "10.0.4.1".parse().unwrap(), 53)
            .unwrap();
        let CheckKind::Http(web) = &h.kind else {
            panic!("{h:?}")
        };
        assert_eq!(
            web.tls.as_ref().unwrap().sni.as_deref(),
            Some("www.example.com")
        );
        assert_eq!(web.digest.unwrap()[0], 0x9e);
        assert_eq!(h.port, Some(443));
        let kinds: Vec<&CheckKind> = h.also.iter().map(|c| &c.kind).collect();
        let CheckKind::Udp(u) = kinds[0] else {
            panic!("{kinds:?}")
        };
        assert_eq!(
            (
                u.payload.as_deref(),
                u.reply.as_slice(),
                u.reply_mask.as_slice()
            ),
            (Some(&[1u8, 2][..]), &[1u8, 0][..], &[0u8, 0xff][..])
        );
        assert_eq!(*kinds[1], CheckKind::Ping);
        assert_eq!(
            *kinds[2],
            CheckKind::Dns(DnsCheck {
                qtype: 1,
                name: "www.example.com".into()
            })
        );
    }

    #[test]
    fn the_documented_health_example_parses() {
        let doc = include_str!("../../../docs/config.md");
        let from = doc.find("### Health checks and sorry servers").unwrap();
        let start = from + doc[from..].find("```toml\n").unwrap() + "```toml\n".len();
        let end = start + doc[start..].find("```").unwrap();
        let c = p(&doc[start..end]).unwrap();
        let key = c.services[0].key;
        let b: IpAddr = "10.0.1.2".parse().unwrap();
        assert!(matches!(
            c.health.check_for(&key, b, 80).unwrap().kind,
            CheckKind::Script(ScriptCheck { dynamic: true, .. })
        ));
        assert_eq!(c.health.sorry_server(&key).unwrap().port, 80);
    }

    #[test]
    fn pair_follows_the_addresses_it_names() {
        let c = p("[pair]\ninstance = \"VI_1\"\ninterface = \"d0\"\naddresses = [\"10.80.3.100\", \"10.80.3.101\"]\n").unwrap();
        let i = c.pair.followed().expect("followed");
        assert_eq!((i.name.as_str(), i.interface.as_str()), ("VI_1", "d0"));
        assert_eq!(i.addresses.len(), 2);
        assert!(c.pair.sync_daemon.is_none());
        let held: IpAddr = "10.80.3.100".parse().unwrap();
        assert_eq!(
            c.pair.state(|a| a == held),
            crate::service::pair::VrrpState::Backup
        );
        let c = p("[pair]\naddresses = [\"fd80:3::100\"]\n").unwrap();
        assert_eq!(c.pair.followed.as_deref(), Some("pair"));
        // Without [pair], a lone director.
        assert_eq!(p("").unwrap().pair, PairConfig::default());
    }

    #[test]
    fn pair_sync_interface_gives_the_daemon_that_follows_the_instance() {
        let c = p(
            "[pair]\ninstance = \"VI_1\"\naddresses = [\"10.80.3.100\"]\n\
                   sync_interface = \"s0\"\nsyncid = 7\nmcast_port = 8850\n",
        )
        .unwrap();
        let d = c.pair.sync_daemon.as_ref().expect("a sync daemon");
        assert_eq!((d.interface.as_str(), d.syncid), ("s0", 7));
        assert_eq!(d.instance.as_deref(), Some("VI_1"));
        assert_eq!(
            (d.port, d.ttl, d.maxlen, d.group),
            (Some(8850), None, None, None)
        );
        use crate::service::pair::VrrpState;
        let roles = c.pair.sync_roles(VrrpState::Master);
        assert!(roles.master && !roles.backup);
        let roles = c.pair.sync_roles(VrrpState::Backup);
        assert!(!roles.master && roles.backup);
        // It survives a render and a read back.
        let again = p(&crate::service::config::render::to_toml(&c)).unwrap();
        assert_eq!(again.pair, c.pair);
    }

    #[test]
    fn pair_sync_errors_name_their_line() {
        let base = "[pair]\naddresses = [\"10.0.0.1\"]\n";
        for (extra, line, what) in [
            ("sync_interface = \"\"\n", 3, "sync_interface"),
            ("sync_interface = \"a-very-long-name0\"\n", 3, "1 to 15"),
            (
                "sync_interface = \"s0\"\nmcast_group = \"10.1.1.1\"\n",
                4,
                "not a multicast",
            ),
            ("sync_interface = \"s0\"\nmcast_port = 0\n", 4, "mcast_port"),
            ("sync_interface = \"s0\"\nmcast_ttl = 0\n", 4, "mcast_ttl"),
            ("sync_interface = \"s0\"\nsyncid = 256\n", 4, ""),
            ("syncid = 3\n", 3, "give sync_interface"),
        ] {
            let e = p(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(
                e.contains(&format!(":{line}:")) && e.contains(what),
                "{extra}: {e}"
            );
        }
    }

    #[test]
    fn pair_errors_name_their_line() {
        let e = p("[director]\n\n[pair]\naddresses = []\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":4:") && e.contains("at least one address"),
            "{e}"
        );
        let e = p("[pair]\naddresses = [\"10.0.0.1\", \"fd00::1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2:") && e.contains("IPv4 and IPv6"), "{e}");
        let e = p("[pair]\naddresses = [\"10.0.0.1\"]\nvrid = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("vrid"), "{e}");
    }

    #[test]
    fn empty_file_is_an_empty_config() {
        assert_eq!(p("").unwrap(), Config::default());
    }
}
