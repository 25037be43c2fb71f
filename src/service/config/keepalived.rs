//! keepalived.conf: the LVS part (`virtual_server` blocks), as keepalived.conf(5) describes
//! it.
//!
//! The director pair comes from the same file (module `vrrp`): each `vrrp_instance`'s
//! name, interface, `virtual_router_id`, addresses and `use_vmac`, and from `global_defs`
//! `lvs_sync_daemon` and `lvs_timeouts`. Lines may carry keepalived's conditional prefix:
//! fastlb reads them with the configuration id [`CONFIG_ID`] (`fastlb`), so `@fastlb
//! lvs_sync_daemon ...` is read by fastlb and skipped by keepalived (see README, "A director
//! pair"). Other blocks that belong to keepalived itself (`vrrp_script`, `vrrp_sync_group`,
//! `static_*`, `track_*`, `linkbeat_interfaces`) are skipped. Everything else fastlb does not do is an
//! error naming the keyword and its line, never dropped: `include`,
//! `virtual_server_group`, `sorry_server_inhibit`, `alpha`, `ops`, persistence engines,
//! SCTP, GUE and GRE tunnels, and the checkers other than `TCP_CHECK`, `HTTP_GET` and
//! `MISC_CHECK`. Those three map onto [`crate::service::health::HealthConfig`] with keepalived's
//! defaults (`delay_loop` 60 s, `connect_timeout` 5 s, `retry` 1 and `delay_before_retry`
//! 1 s for TCP and HTTP, `retry` 0 for scripts, `warmup` = `delay_loop`, `misc_timeout` =
//! `delay_loop`); a key in a checker block wins over the real server's, which wins over the
//! virtual server's. keepalived's own tuning keys fastlb has no use for (`quorum`,
//! `hysteresis`, `smtp_alert`, `snmp_name`, `omega`, `nat_mask`) are accepted and ignored.
//!
//! Defaults are keepalived's: forwarding method NAT, weight 1, `persistence_timeout`
//! without a value 360 s (6 minutes), protocol TCP; scheduler wlc when `lvs_sched` is not
//! given.

use std::net::IpAddr;
use std::path::Path;

use std::time::Duration;

use super::error::{validate, ConfigError, Fault};
use crate::forward::nexthop::MacAddr;
use crate::service::health::{
    CheckKind, HealthConfig, HttpCheck, ScriptCheck, ServiceHealth, SorryServer, StatusRange,
};
use crate::service::pair::SyncDaemonSettings;
use crate::service::{
    Config, ForwardMethod, Persistence, Protocol, RealServer, SchedFlags, SchedulerKind,
    ServiceKey, VirtualService, DEFAULT_MH_TABLE_SIZE,
};

mod vrrp;

/// keepalived's `persistence_timeout` without a value: 6 minutes.
pub const KEEPALIVED_DEFAULT_PERSISTENCE_SECS: u32 = 360;

/// One statement: its words, its line and, for a block, its children.
#[derive(Debug)]
struct Node {
    words: Vec<String>,
    line: usize,
    block: Option<Vec<Node>>,
}

impl Node {
    fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }
    fn args(&self) -> &[String] {
        self.words.get(1..).unwrap_or(&[])
    }
}

/// Words of a line: `#` and `!` start comments, `{` and `}` are words of their own, double
/// quotes group.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => cur.push(c),
            '#' | '!' => break,
            '{' | '}' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The configuration id fastlb reads keepalived.conf with: lines written `@fastlb ...` are
/// fastlb's, lines `@OTHER ...` are not, lines `@^fastlb ...` are everyone's but fastlb's.
pub const CONFIG_ID: &str = "fastlb";

/// What is left of `line` for fastlb after keepalived's conditional prefix (`@ID` keeps the
/// line only for config id ID, `@^ID` for every other id; `lib/parser.c`), or `None` if
/// the line is not fastlb's. keepalived's own id is its host name (or `-i ID`), so a line
/// `@fastlb lvs_sync_daemon ...` is fastlb's alone.
fn conditional(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    let Some(rest) = trimmed.strip_prefix('@') else {
        return Some(line);
    };
    let (reverse, rest) = match rest.strip_prefix('^') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let end = rest.find([' ', '\t'])?;
    ((&rest[..end] == CONFIG_ID) != reverse).then(|| rest[end..].trim_start())
}

fn tree(text: &str, path: &Path) -> Result<Vec<Node>, ConfigError> {
    let mut frames: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let Some(line) = conditional(line) else {
            continue;
        };
        let mut pending: Vec<String> = Vec::new();
        let flush = |pending: &mut Vec<String>, frames: &mut Vec<(Option<Node>, Vec<Node>)>| {
            if !pending.is_empty() {
                let words = std::mem::take(pending);
                frames.last_mut().expect("root frame").1.push(Node {
                    words,
                    line: n,
                    block: None,
                });
            }
        };
        for w in words(line) {
            match w.as_str() {
                "{" => {
                    let owner = if pending.is_empty() {
                        // `{` on the line after its keyword.
                        let list = &mut frames.last_mut().expect("root frame").1;
                        match list.last() {
                            Some(last) if last.block.is_none() => list.pop().expect("last"),
                            _ => {
                                return Err(ConfigError::at_line(path, n, "`{` without a keyword"))
                            }
                        }
                    } else {
                        Node {
                            words: std::mem::take(&mut pending),
                            line: n,
                            block: None,
                        }
                    };
                    frames.push((Some(owner), Vec::new()));
                }
                "}" => {
                    flush(&mut pending, &mut frames);
                    if frames.len() == 1 {
                        return Err(ConfigError::at_line(path, n, "`}` without a matching `{`"));
                    }
                    let (owner, children) = frames.pop().expect("checked");
                    let mut owner = owner.expect("only the root has no owner");
                    owner.block = Some(children);
                    frames.last_mut().expect("root frame").1.push(owner);
                }
                _ => pending.push(w),
            }
        }
        flush(&mut pending, &mut frames);
    }
    if frames.len() > 1 {
        let (owner, _) = frames.pop().expect("checked");
        let owner = owner.expect("not root");
        return Err(ConfigError::at_line(
            path,
            owner.line,
            format!("block `{}` is never closed", owner.key()),
        ));
    }
    Ok(frames.pop().expect("root").1)
}

/// Whether `text` is a keepalived.conf with LVS blocks.
pub fn looks_like_keepalived(text: &str) -> bool {
    text.contains('{')
        && text.lines().any(|l| {
            let w = words(l);
            w.first()
                .is_some_and(|k| k == "virtual_server" || k == "virtual_server_group")
        })
}

const CHECKERS: &[&str] = &[
    "HTTP_GET",
    "SSL_GET",
    "TCP_CHECK",
    "SMTP_CHECK",
    "DNS_CHECK",
    "MISC_CHECK",
    "BFD_CHECK",
    "UDP_CHECK",
    "PING_CHECK",
    "FILE_CHECK",
];

/// keepalived keys fastlb accepts and ignores: they tune keepalived's own mail, SNMP and
/// quorum scripts.
const IGNORED: &[&str] = &[
    "quorum",
    "hysteresis",
    "smtp_alert",
    "snmp_name",
    "omega",
    "nat_mask",
];

/// Checker settings given at one level (virtual server, real server, checker block).
#[derive(Clone, Debug, Default)]
struct Tuning {
    delay_loop: Option<Duration>,
    connect_timeout: Option<Duration>,
    retry: Option<u32>,
    delay_before_retry: Option<Duration>,
    warmup: Option<Duration>,
    inhibit: bool,
    notify_up: Option<String>,
    notify_down: Option<String>,
    virtualhost: Option<String>,
}

impl Tuning {
    /// Takes `n` if it is a tuning key; `Ok(false)` if it is not one.
    fn take(&mut self, path: &Path, n: &Node, ctx: &str) -> Result<bool, ConfigError> {
        match n.key() {
            "delay_loop" => self.delay_loop = Some(seconds(path, n, ctx)?),
            "connect_timeout" => self.connect_timeout = Some(seconds(path, n, ctx)?),
            "retry" | "nb_get_retry" => self.retry = Some(number(path, n, ctx)?),
            "delay_before_retry" => self.delay_before_retry = Some(seconds(path, n, ctx)?),
            "warmup" => self.warmup = Some(seconds(path, n, ctx)?),
            "inhibit_on_failure" => self.inhibit = true,
            "notify_up" => self.notify_up = Some(n.args().join(" ")),
            "notify_down" => self.notify_down = Some(n.args().join(" ")),
            "virtualhost" => self.virtualhost = Some(one_arg(path, n, ctx)?.to_string()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `self` with the keys `over` sets replacing its own.
    fn under(&self, over: &Tuning) -> Tuning {
        Tuning {
            delay_loop: over.delay_loop.or(self.delay_loop),
            connect_timeout: over.connect_timeout.or(self.connect_timeout),
            retry: over.retry.or(self.retry),
            delay_before_retry: over.delay_before_retry.or(self.delay_before_retry),
            warmup: over.warmup.or(self.warmup),
            inhibit: over.inhibit || self.inhibit,
            notify_up: over.notify_up.clone().or_else(|| self.notify_up.clone()),
            notify_down: over
                .notify_down
                .clone()
                .or_else(|| self.notify_down.clone()),
            virtualhost: over
                .virtualhost
                .clone()
                .or_else(|| self.virtualhost.clone()),
        }
    }
}

/// A timer value: seconds, decimals allowed, as keepalived's `read_timer`.
fn seconds(path: &Path, node: &Node, ctx: &str) -> Result<Duration, ConfigError> {
    let a = one_arg(path, node, ctx)?;
    a.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && (0.0..=86_400.0).contains(x))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| err(path, node, ctx, format!("`{a}` is not a number of seconds")))
}

/// A checker block's kind, `connect_port`, `misc_timeout` and its own tuning.
type CheckerParts = (CheckKind, Option<u16>, Option<Duration>, Tuning);

/// Reads a checker block.
fn checker_block(node: &Node, path: &Path, ctx: &str) -> Result<CheckerParts, ConfigError> {
    let ctx = format!("{ctx} {}", node.key());
    let mut tuning = Tuning::default();
    let mut port = None;
    let mut misc_timeout = None;
    let mut urls: Vec<&Node> = Vec::new();
    let mut misc_path = None;
    let mut dynamic = false;
    let kind_name = node.key();
    for n in node.block.iter().flatten() {
        if tuning.take(path, n, &ctx)? {
            continue;
        }
        match (kind_name, n.key()) {
            ("TCP_CHECK" | "HTTP_GET", "connect_port") => port = Some(number(path, n, &ctx)?),
            ("HTTP_GET", "url") => urls.push(n),
            ("MISC_CHECK", "misc_path") => misc_path = Some(n.args().join(" ")),
            ("MISC_CHECK", "misc_timeout") => misc_timeout = Some(seconds(path, n, &ctx)?),
            ("MISC_CHECK", "misc_dynamic") => dynamic = true,
            (_, k) => {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    format!("`{k}` is not supported by fastlb in {kind_name}"),
                ))
            }
        }
    }
    let kind = match kind_name {
        "TCP_CHECK" => CheckKind::Tcp,
        "HTTP_GET" => {
            let url = match urls.as_slice() {
                [u] => *u,
                [] => return Err(err(path, node, &ctx, "needs a url { path ... } block")),
                [_, extra, ..] => {
                    return Err(err(path, extra, &ctx, "fastlb checks one url per HTTP_GET"))
                }
            };
            let mut http = HttpCheck {
                path: String::new(),
                status: Vec::new(),
                host: None,
            };
            for n in url.block.iter().flatten() {
                match n.key() {
                    "path" => http.path = one_arg(path, n, &ctx)?.to_string(),
                    "status_code" => {
                        for a in n.args() {
                            for part in a.split(',') {
                                http.status.push(StatusRange::parse(part).ok_or_else(|| {
                                    err(path, n, &ctx, format!("`{part}`: a status code or range"))
                                })?);
                            }
                        }
                    }
                    "virtualhost" => http.host = Some(one_arg(path, n, &ctx)?.to_string()),
                    k => {
                        return Err(err(
                            path,
                            n,
                            &ctx,
                            format!("`{k}` is not supported by fastlb in url"),
                        ))
                    }
                }
            }
            if http.path.is_empty() {
                return Err(err(path, url, &ctx, "needs a path"));
            }
            CheckKind::Http(http)
        }
        "MISC_CHECK" => CheckKind::Script(ScriptCheck {
            command: misc_path.ok_or_else(|| err(path, node, &ctx, "needs misc_path"))?,
            dynamic,
        }),
        other => {
            return Err(err(
                path,
                node,
                &ctx,
                format!("{other} health checks are not supported by fastlb (TCP_CHECK, HTTP_GET, MISC_CHECK)"),
            ))
        }
    };
    Ok((kind, port, misc_timeout, tuning))
}

/// The checker `kind` with `t` (already layered) and keepalived's defaults.
fn health_config(kind: CheckKind, t: &Tuning, misc_timeout: Option<Duration>) -> HealthConfig {
    let script = matches!(kind, CheckKind::Script(_));
    let mut kind = kind;
    if let (CheckKind::Http(h), Some(host)) = (&mut kind, &t.virtualhost) {
        h.host.get_or_insert_with(|| host.clone());
    }
    let mut c = HealthConfig::new(kind);
    c.interval = t.delay_loop.unwrap_or(Duration::from_secs(60));
    c.timeout = if script {
        misc_timeout.unwrap_or(c.interval)
    } else {
        t.connect_timeout.unwrap_or(Duration::from_secs(5))
    };
    c.retries = t.retry.unwrap_or(if script { 0 } else { 1 });
    c.delay_before_retry = t.delay_before_retry.unwrap_or(if script {
        c.interval
    } else {
        Duration::from_secs(1)
    });
    c.warmup = t.warmup.unwrap_or(c.interval);
    c.rise = 1;
    c.fall = 1;
    c.inhibit_on_failure = t.inhibit;
    c.notify_up = t.notify_up.clone();
    c.notify_down = t.notify_down.clone();
    c
}

/// A `vrrp_instance` with `use_vmac`: keepalived answers for the VIPs from the VRRP virtual
/// MAC (00:00:5e:00:01:VRID for IPv4, 00:00:5e:00:02:VRID for IPv6, RFC 5798), so frames
/// to the VIP arrive addressed to it: both go into [`Config::accept_macs`]. Without
/// `use_vmac` the interface's own MAC is used and nothing is added.
fn vrrp_vmacs(node: &Node, path: &Path, config: &mut Config) -> Result<(), ConfigError> {
    let children = node.block.as_deref().unwrap_or(&[]);
    if !children.iter().any(|c| c.key() == "use_vmac") {
        return Ok(());
    }
    let Some(id) = children.iter().find(|c| c.key() == "virtual_router_id") else {
        return Err(err(
            path,
            node,
            "",
            "`use_vmac` without `virtual_router_id`",
        ));
    };
    let vrid = id
        .args()
        .first()
        .and_then(|a| a.parse::<u8>().ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| err(path, id, "", "`virtual_router_id` must be 1..255"))?;
    for family in [1, 2] {
        let mac = MacAddr([0, 0, 0x5e, 0, family, vrid]);
        if !config.accept_macs.contains(&mac) {
            config.accept_macs.push(mac);
        }
    }
    Ok(())
}

/// Reads the `virtual_server` blocks of a keepalived.conf. `path` names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let nodes = tree(text, path)?;
    let mut config = Config::default();
    let mut service_lines = Vec::new();
    let mut real_lines: Vec<Vec<usize>> = Vec::new();
    let mut globals = vrrp::GlobalDefs::default();
    let mut instances = Vec::new();
    for node in &nodes {
        let k = node.key();
        if k == "vrrp_instance" {
            vrrp_vmacs(node, path, &mut config)?;
        }
        let skip = k == "linkbeat_interfaces"
            || (k.starts_with("vrrp_") && k != "vrrp_instance")
            || k.starts_with("static_")
            || k.starts_with("track_");
        if skip {
            continue;
        }
        match k {
            "global_defs" => {
                let g = vrrp::global_defs(node, path)?;
                if g.sync_daemon.is_some() {
                    if let Some((first, _, _)) = &globals.sync_daemon {
                        return Err(err(
                            path,
                            node,
                            "global_defs",
                            format!("lvs_sync_daemon is already given on line {}", first.line),
                        ));
                    }
                    globals.sync_daemon = g.sync_daemon;
                }
                globals.timeouts = g.timeouts.or(globals.timeouts);
            }
            "vrrp_instance" => {
                let (inst, legacy) = vrrp::vrrp_instance(node, path)?;
                if let Some((n, interface)) = legacy {
                    if globals.sync_daemon.is_some() {
                        return Err(err(
                            path,
                            n,
                            &format!("vrrp_instance {}", inst.name),
                            "lvs_sync_daemon is already given",
                        ));
                    }
                    let settings = SyncDaemonSettings {
                        interface,
                        syncid: inst.vrid,
                        maxlen: None,
                        port: None,
                        ttl: None,
                        group: None,
                        instance: Some(inst.name.clone()),
                    };
                    globals.sync_daemon = Some((n, settings, true));
                }
                instances.push((node, inst));
            }
            "virtual_server" => {
                let (svc, lines, health) = virtual_server(node, path)?;
                service_lines.push(node.line);
                real_lines.push(lines);
                if health != ServiceHealth::default() {
                    config.health.services.insert(svc.key, health);
                }
                config.services.push(svc);
            }
            "include" | "includer" | "includem" | "includew" | "includeb" | "includea" => {
                return Err(err(path, node, "", "`include` is not supported by fastlb"));
            }
            "virtual_server_group" => {
                return Err(err(
                    path,
                    node,
                    "",
                    "virtual_server_group is not supported by fastlb",
                ));
            }
            _ => return Err(err(path, node, "", format!("unknown keyword `{k}`"))),
        }
    }
    if let Some(t) = globals.timeouts {
        config.timeouts = t;
    }
    config.pair = vrrp::pair(path, instances, globals.sync_daemon)?;
    validate(&config).map_err(|inv| {
        let line = match inv.at {
            Fault::Service(i) => service_lines[i],
            Fault::Real(i, j) => real_lines[i][j],
            Fault::Classifier(_) | Fault::Timeouts => 0,
        };
        inv.into_config_error(&config, path, line)
    })?;
    Ok(config)
}

fn err(path: &Path, node: &Node, context: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::at_line(path, node.line, message)
        .with_field(node.key())
        .with_context(context)
}

fn one_arg<'a>(path: &Path, node: &'a Node, ctx: &str) -> Result<&'a str, ConfigError> {
    match node.args() {
        [a] => Ok(a),
        _ => Err(err(path, node, ctx, "takes exactly one value")),
    }
}

fn number<T: std::str::FromStr>(path: &Path, node: &Node, ctx: &str) -> Result<T, ConfigError> {
    let a = one_arg(path, node, ctx)?;
    a.parse()
        .map_err(|_| err(path, node, ctx, format!("`{a}` is not a valid number here")))
}

fn method(path: &Path, node: &Node, ctx: &str) -> Result<ForwardMethod, ConfigError> {
    let args = node.args();
    let m = match args.first().map(|s| s.to_ascii_uppercase()).as_deref() {
        Some("NAT") => ForwardMethod::Masquerade,
        Some("DR") => ForwardMethod::DirectRouting,
        Some("TUN") => ForwardMethod::Tunnel,
        _ => return Err(err(path, node, ctx, "must be NAT, DR or TUN")),
    };
    match &args[1..] {
        [] => Ok(m),
        [t, ty] if m == ForwardMethod::Tunnel && t == "type" && ty == "ipip" => Ok(m),
        _ => Err(err(
            path,
            node,
            ctx,
            format!(
                "`{}`: only ipip tunnels are supported by fastlb",
                node.args().join(" ")
            ),
        )),
    }
}

fn virtual_server(
    node: &Node,
    path: &Path,
) -> Result<(VirtualService, Vec<usize>, ServiceHealth), ConfigError> {
    let ctx = format!("virtual_server {}", node.args().join(" "));
    let block = node
        .block
        .as_ref()
        .ok_or_else(|| err(path, node, &ctx, "needs a { ... } block"))?;
    enum Addr {
        Tuple(IpAddr, u16),
        Fwmark(u32),
    }
    let addr = match node.args() {
        [f, m] if f == "fwmark" => Addr::Fwmark(
            m.parse()
                .map_err(|_| err(path, node, &ctx, format!("bad fwmark `{m}`")))?,
        ),
        [g, _] if g == "group" => {
            return Err(err(
                path,
                node,
                &ctx,
                "virtual_server group is not supported by fastlb",
            ))
        }
        [a, rest @ ..] if rest.len() <= 1 => {
            let ip: IpAddr = a
                .parse()
                .map_err(|_| err(path, node, &ctx, format!("bad address `{a}`")))?;
            let port = match rest.first() {
                None => 0,
                Some(p) => p
                    .parse()
                    .map_err(|_| err(path, node, &ctx, format!("bad port `{p}`")))?,
            };
            Addr::Tuple(ip, port)
        }
        _ => return Err(err(path, node, &ctx, "expects IP [PORT] or fwmark N")),
    };

    let mut protocol = Protocol::Tcp;
    let mut scheduler = SchedulerKind::Wlc;
    let mut flags = SchedFlags::default();
    let mut flag_nodes: Vec<&Node> = Vec::new();
    let mut method_default = ForwardMethod::Masquerade;
    let mut timeout: Option<u32> = None;
    let mut granularity: Option<&Node> = None;
    let mut ipv6_family = false;
    let mut real_nodes: Vec<&Node> = Vec::new();
    let mut tuning = Tuning::default();
    let mut sorry: Option<(&Node, IpAddr, u16)> = None;
    let mut sorry_method: Option<ForwardMethod> = None;
    for n in block {
        if tuning.take(path, n, &ctx)? {
            continue;
        }
        let k = n.key();
        match k {
            "lvs_sched" | "lb_algo" => {
                let s = one_arg(path, n, &ctx)?;
                scheduler = s.parse().map_err(|m: String| err(path, n, &ctx, m))?;
            }
            "lvs_method" | "lb_kind" => method_default = method(path, n, &ctx)?,
            "protocol" => {
                protocol = match one_arg(path, n, &ctx)?.to_ascii_uppercase().as_str() {
                    "TCP" => Protocol::Tcp,
                    "UDP" => Protocol::Udp,
                    other => {
                        return Err(err(
                            path,
                            n,
                            &ctx,
                            format!("protocol `{other}` is not supported by fastlb (TCP, UDP)"),
                        ))
                    }
                }
            }
            "persistence_timeout" => {
                timeout = Some(if n.args().is_empty() {
                    KEEPALIVED_DEFAULT_PERSISTENCE_SECS
                } else {
                    number(path, n, &ctx)?
                });
            }
            "persistence_granularity" => granularity = Some(n),
            "ip_family" => {
                ipv6_family = match one_arg(path, n, &ctx)? {
                    "inet" => false,
                    "inet6" => true,
                    other => return Err(err(path, n, &ctx, format!("`{other}`: inet or inet6"))),
                }
            }
            "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" | "flag-1" | "flag-2" => {
                flag_nodes.push(n)
            }
            "real_server" => real_nodes.push(n),
            k if IGNORED.contains(&k) => {}
            "sorry_server" => {
                let (a, p) = match n.args() {
                    [a, p] => (a, p),
                    _ => return Err(err(path, n, &ctx, "expects IP PORT")),
                };
                let ip: IpAddr = a
                    .parse()
                    .map_err(|_| err(path, n, &ctx, format!("bad address `{a}`")))?;
                let port = p
                    .parse()
                    .map_err(|_| err(path, n, &ctx, format!("bad port `{p}`")))?;
                sorry = Some((n, ip, port));
            }
            "sorry_server_lvs_method" => sorry_method = Some(method(path, n, &ctx)?),
            "sorry_server_inhibit" => {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    "sorry_server_inhibit is not supported by fastlb",
                ))
            }
            k if CHECKERS.contains(&k) => {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    format!("{k} belongs in a real_server block"),
                ))
            }
            _ => {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    format!("`{k}` is not supported by fastlb"),
                ))
            }
        }
    }
    for n in flag_nodes {
        let (sh, mh) = (
            scheduler == SchedulerKind::Sh,
            scheduler == SchedulerKind::Mh,
        );
        match n.key() {
            "sh-port" if sh => flags.sh_port = true,
            "sh-fallback" if sh => flags.sh_fallback = true,
            "mh-port" if mh => flags.mh_port = true,
            "mh-fallback" if mh => flags.mh_fallback = true,
            "flag-1" if sh => flags.sh_fallback = true,
            "flag-2" if sh => flags.sh_port = true,
            "flag-1" if mh => flags.mh_fallback = true,
            "flag-2" if mh => flags.mh_port = true,
            f => {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    format!("scheduler flag `{f}` does not apply to {scheduler}"),
                ))
            }
        }
    }
    let key = match addr {
        Addr::Tuple(addr, port) => ServiceKey::Tuple {
            protocol,
            addr,
            port,
        },
        Addr::Fwmark(mark) => ServiceKey::Fwmark {
            mark,
            ipv6: ipv6_family,
        },
    };
    let ipv6 = key.is_ipv6();
    let persistence = match (timeout, granularity) {
        (None, Some(g)) => {
            return Err(err(path, g, &ctx, "needs persistence_timeout"));
        }
        (None, None) => None,
        (Some(timeout_secs), g) => Some(Persistence {
            timeout_secs,
            netmask: match g {
                None if ipv6 => 128,
                None => 32,
                Some(g) => granularity_prefix(one_arg(path, g, &ctx)?)
                    .ok_or_else(|| err(path, g, &ctx, "a contiguous netmask or a prefix length"))?,
            },
        }),
    };
    let vport = match key {
        ServiceKey::Tuple { port, .. } => port,
        ServiceKey::Fwmark { .. } => 0,
    };
    let mut reals = Vec::new();
    let mut lines = Vec::new();
    let mut health = ServiceHealth::default();
    for n in real_nodes {
        let (r, check) = real_server(n, path, &ctx, vport, method_default, &key, &tuning)?;
        if let Some(check) = check {
            health.reals.insert((r.addr, r.port), check);
        }
        reals.push(r);
        lines.push(n.line);
    }
    if let Some((n, addr, port)) = sorry {
        let method = sorry_method.unwrap_or(method_default);
        if method != ForwardMethod::Tunnel && addr.is_ipv6() != ipv6 {
            return Err(err(
                path,
                n,
                &ctx,
                "address family differs from the virtual server's (allowed only with TUN)",
            ));
        }
        health.sorry_server = Some(SorryServer { addr, port, method });
    } else if sorry_method.is_some() {
        let n = block
            .iter()
            .find(|n| n.key() == "sorry_server_lvs_method")
            .expect("seen above");
        return Err(err(path, n, &ctx, "needs sorry_server"));
    }
    Ok((
        VirtualService {
            key,
            scheduler,
            flags,
            mh_table_size: DEFAULT_MH_TABLE_SIZE,
            persistence,
            reals,
        },
        lines,
        health,
    ))
}

/// `255.255.255.0` or `24` to a prefix length.
fn granularity_prefix(s: &str) -> Option<u8> {
    if let Ok(n) = s.parse::<u8>() {
        return (n <= 128).then_some(n);
    }
    let m = u32::from(s.parse::<std::net::Ipv4Addr>().ok()?);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

fn real_server(
    node: &Node,
    path: &Path,
    vctx: &str,
    vport: u16,
    default_method: ForwardMethod,
    key: &ServiceKey,
    vs_tuning: &Tuning,
) -> Result<(RealServer, Option<HealthConfig>), ConfigError> {
    let ctx = format!("{vctx} real_server {}", node.args().join(" "));
    let (addr, port) = match node.args() {
        [a, rest @ ..] if rest.len() <= 1 => {
            let ip: IpAddr = a
                .parse()
                .map_err(|_| err(path, node, &ctx, format!("bad address `{a}`")))?;
            let port = match rest.first() {
                None => vport,
                Some(p) => p
                    .parse()
                    .map_err(|_| err(path, node, &ctx, format!("bad port `{p}`")))?,
            };
            (ip, port)
        }
        _ => return Err(err(path, node, &ctx, "expects IP [PORT]")),
    };
    let mut r = RealServer {
        addr,
        port,
        weight: 1,
        method: default_method,
        upper_threshold: 0,
        lower_threshold: 0,
    };
    let mut tuning = Tuning::default();
    let mut checker: Option<(&Node, CheckerParts)> = None;
    for n in node.block.iter().flatten() {
        if tuning.take(path, n, &ctx)? {
            continue;
        }
        let k = n.key();
        match k {
            "weight" => r.weight = number(path, n, &ctx)?,
            "lvs_method" | "lb_kind" => r.method = method(path, n, &ctx)?,
            "uthreshold" => r.upper_threshold = number(path, n, &ctx)?,
            "lthreshold" => r.lower_threshold = number(path, n, &ctx)?,
            k if IGNORED.contains(&k) => {}
            k if CHECKERS.contains(&k) => {
                if checker.is_some() {
                    return Err(err(
                        path,
                        n,
                        &ctx,
                        "fastlb runs one checker per real server",
                    ));
                }
                checker = Some((n, checker_block(n, path, &ctx)?));
            }
            _ => {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    format!("`{k}` is not supported by fastlb"),
                ))
            }
        }
    }
    let written_port = r.port;
    // As ipvsadm: DR and TUN keep the client's port, so the real port is the service's.
    if matches!(key, ServiceKey::Tuple { .. }) && r.method != ForwardMethod::Masquerade {
        r.port = vport;
    }
    let check = match checker {
        None => None,
        Some((n, (kind, port, misc_timeout, t))) => {
            let layered = vs_tuning.under(&tuning).under(&t);
            let mut c = health_config(kind, &layered, misc_timeout);
            // keepalived connects to the port the real server is written with.
            c.port = port.or((written_port != r.port).then_some(written_port));
            if c.uses_network() && c.port.unwrap_or(r.port) == 0 {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    "needs connect_port: the real server has no port",
                ));
            }
            Some(c)
        }
    };
    Ok((r, check))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("keepalived.conf"))
    }

    /// Shaped like keepalived's own `keepalived.conf.sample`, checkers removed.
    const SAMPLE: &str = r#"
! Configuration File for keepalived

global_defs {
   notification_email {
     acassen@firewall.loc
   }
   notification_email_from Alexandre.Cassen@firewall.loc
   smtp_server 192.168.200.1
   smtp_connect_timeout 30
   router_id LVS_DEVEL
}

vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        192.168.200.16
    }
}

virtual_server 192.168.200.100 443 {
    delay_loop 6
    lb_algo rr
    lb_kind NAT
    persistence_timeout 50
    protocol TCP

    real_server 192.168.201.100 443 {
        weight 1
        inhibit_on_failure
    }
}

virtual_server 10.10.10.2 1358
{
    delay_loop 6
    lvs_sched wrr
    lvs_method DR
    persistence_timeout
    persistence_granularity 255.255.255.0
    protocol UDP

    real_server 192.168.200.2 1358 {
        weight 3
        uthreshold 100
        lthreshold 10
    }
    real_server 192.168.200.3 8080 {    # DR: the port becomes the service's
        weight 1
    }
}

virtual_server fwmark 7 {
    lvs_sched sh
    sh-port
    lvs_method TUN type ipip
    real_server 10.0.3.1 {
        weight 2
    }
}
"#;

    #[test]
    fn reads_the_sample() {
        let c = p(SAMPLE).unwrap();
        assert_eq!(c.services.len(), 3);
        let a = &c.services[0];
        assert_eq!(a.scheduler, SchedulerKind::Rr);
        assert_eq!(a.persistence.unwrap().timeout_secs, 50);
        assert_eq!(a.reals[0].method, ForwardMethod::Masquerade);
        let b = &c.services[1];
        assert!(matches!(
            b.key,
            ServiceKey::Tuple {
                protocol: Protocol::Udp,
                port: 1358,
                ..
            }
        ));
        assert_eq!(
            b.persistence,
            Some(Persistence {
                timeout_secs: 360,
                netmask: 24
            })
        );
        assert_eq!(b.reals[0].upper_threshold, 100);
        assert_eq!(b.reals[0].lower_threshold, 10);
        assert_eq!(b.reals[1].port, 1358);
        assert_eq!(b.reals[1].method, ForwardMethod::DirectRouting);
        let f = &c.services[2];
        assert_eq!(
            f.key,
            ServiceKey::Fwmark {
                mark: 7,
                ipv6: false
            }
        );
        assert!(f.flags.sh_port);
        assert_eq!(f.reals[0].method, ForwardMethod::Tunnel);
        assert_eq!(f.reals[0].port, 0);
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text[..text.find(needle).unwrap()].matches('\n').count() + 1
    }

    const CHECKED: &str = r#"
virtual_server 10.0.0.1 80 {
    delay_loop 10
    lb_kind DR
    retry 4
    inhibit_on_failure
    virtualhost www.example.com
    sorry_server 10.0.9.9 80

    real_server 10.0.1.1 80 {
        weight 2
        delay_before_retry 2
        notify_down "/usr/local/bin/down 10.0.1.1"
        TCP_CHECK {
            connect_timeout 3
            connect_port 8080
        }
    }
    real_server 10.0.1.2 80 {
        HTTP_GET {
            url {
                path /health
                status_code 200 301-302
            }
            retry 2
        }
    }
    real_server 10.0.1.3 80 {
        MISC_CHECK {
            misc_path "/usr/local/bin/check 10.0.1.3"
            misc_timeout 4
            misc_dynamic
        }
    }
    real_server 10.0.1.4 80 {
    }
}
"#;

    #[test]
    fn checkers_map_onto_health_checks() {
        let c = p(CHECKED).unwrap();
        let key = c.services[0].key;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let tcp = c.health.check_for(&key, ip("10.0.1.1"), 80).unwrap();
        assert_eq!(tcp.kind, CheckKind::Tcp);
        assert_eq!(tcp.port, Some(8080));
        assert_eq!(tcp.interval, Duration::from_secs(10));
        assert_eq!(tcp.timeout, Duration::from_secs(3));
        // retry from the virtual server, delay_before_retry from the real server.
        assert_eq!(
            (tcp.retries, tcp.delay_before_retry),
            (4, Duration::from_secs(2))
        );
        assert!(tcp.inhibit_on_failure);
        assert_eq!(
            tcp.notify_down.as_deref(),
            Some("/usr/local/bin/down 10.0.1.1")
        );
        assert_eq!(
            tcp.warmup,
            Duration::from_secs(10),
            "warmup defaults to delay_loop"
        );
        let http = c.health.check_for(&key, ip("10.0.1.2"), 80).unwrap();
        let CheckKind::Http(h) = &http.kind else {
            panic!("{http:?}")
        };
        assert_eq!(h.path, "/health");
        assert_eq!(h.host.as_deref(), Some("www.example.com"));
        assert_eq!(
            h.status,
            vec![
                StatusRange { lo: 200, hi: 200 },
                StatusRange { lo: 301, hi: 302 }
            ]
        );
        assert_eq!(http.retries, 2, "the checker's own retry wins");
        assert_eq!(
            http.timeout,
            Duration::from_secs(5),
            "keepalived's connect_timeout"
        );
        let misc = c.health.check_for(&key, ip("10.0.1.3"), 80).unwrap();
        assert_eq!(
            misc.kind,
            CheckKind::Script(ScriptCheck {
                command: "/usr/local/bin/check 10.0.1.3".into(),
                dynamic: true
            })
        );
        assert_eq!(misc.timeout, Duration::from_secs(4));
        assert!(c.health.check_for(&key, ip("10.0.1.4"), 80).is_none());
        let sorry = c.health.sorry_server(&key).unwrap();
        // The virtual server's lb_kind, as keepalived's alloc_ssvr.
        assert_eq!(sorry.method, ForwardMethod::DirectRouting);
        let text = CHECKED.replace(
            "sorry_server 10.0.9.9 80",
            "sorry_server 10.0.9.9 80\n    sorry_server_lvs_method NAT",
        );
        let c = p(&text).unwrap();
        assert_eq!(
            c.health.sorry_server(&key).unwrap().method,
            ForwardMethod::Masquerade
        );
        // Defaults without any tuning: keepalived's.
        let c = p(
            "virtual_server 10.0.0.1 80 {\n real_server 10.0.1.1 80 {\n TCP_CHECK {\n }\n }\n}\n",
        )
        .unwrap();
        let d = c
            .health
            .check_for(&c.services[0].key, ip("10.0.1.1"), 80)
            .unwrap();
        assert_eq!(
            (d.interval, d.timeout, d.retries, d.delay_before_retry),
            (
                Duration::from_secs(60),
                Duration::from_secs(5),
                1,
                Duration::from_secs(1)
            )
        );
    }

    #[test]
    fn checker_errors_name_their_line() {
        let cases = [
            (
                "connect_timeout 3",
                "connect_timeout 3\n            bindto 10.0.0.5",
                "bindto",
            ),
            (
                "path /health",
                "path /health\n                digest abc",
                "digest",
            ),
            (
                "misc_dynamic",
                "misc_dynamic\n            user nobody",
                "user",
            ),
            ("status_code 200 301-302", "status_code 2xx", "status_code"),
            (
                "weight 2\n",
                "weight 2\n        SSL_GET {\n        }\n",
                "SSL_GET",
            ),
            (
                "    }\n    real_server 10.0.1.2",
                "        MISC_CHECK {\n misc_path /bin/true\n }\n    }\n    real_server 10.0.1.2",
                "MISC_CHECK",
            ),
            (
                "sorry_server 10.0.9.9 80",
                "sorry_server 10.0.9.9 80\n    sorry_server_inhibit",
                "sorry_server_inhibit",
            ),
            (
                "sorry_server 10.0.9.9 80",
                "sorry_server 2001:db8::9 80",
                "sorry_server",
            ),
        ];
        for (from, to, field) in cases {
            let text = CHECKED.replacen(from, to, 1);
            let e = p(&text).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{e}");
            let needle = to.lines().rev().find(|l| l.contains(field)).unwrap().trim();
            assert_eq!(e.line, line_of(&text, needle), "{e}");
        }
        let e = p("virtual_server fwmark 3 {\n real_server 10.0.1.1 {\n TCP_CHECK {\n }\n }\n}\n")
            .unwrap_err();
        assert!(e.message.contains("connect_port"), "{e}");
        assert_eq!(e.line, 3);
    }

    #[test]
    fn use_vmac_accepts_the_vrrp_virtual_macs() {
        let vs =
            "virtual_server 192.0.2.100 80 {\n lb_kind DR\n real_server 10.0.0.11 80 {\n }\n}\n";
        let plain = format!(
            "vrrp_instance V {{\n interface eth0\n virtual_router_id 51\n \
             virtual_ipaddress {{\n  192.0.2.100\n }}\n}}\n{vs}"
        );
        assert!(p(&plain).unwrap().accept_macs.is_empty());
        let vmac = plain.replace("interface eth0", "interface eth0\n use_vmac");
        let macs: Vec<String> = p(&vmac)
            .unwrap()
            .accept_macs
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(macs, ["00:00:5e:00:01:33", "00:00:5e:00:02:33"]);
        let e = p(&vmac.replace("virtual_router_id 51", "virtual_router_id 0")).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_deref()),
            (4, Some("virtual_router_id")),
            "{e}"
        );
    }

    #[test]
    fn unsupported_things_are_errors_naming_them() {
        let cases = [
            (
                "protocol TCP\n\n    real_server 192.168.201.100",
                "sorry_server 10.0.0.9 443\n    sorry_server_inhibit\n    protocol TCP\n\n    real_server 192.168.201.100",
                "sorry_server_inhibit",
            ),
            ("lb_algo rr", "lb_algo rr\n    ops", "ops"),
            ("lb_algo rr", "lb_algo rr\n    alpha", "alpha"),
            (
                "lvs_method TUN type ipip",
                "lvs_method TUN type gue port 6080",
                "lvs_method",
            ),
            ("protocol UDP", "protocol SCTP", "protocol"),
        ];
        for (from, to, field) in cases {
            let text = SAMPLE.replacen(from, to, 1);
            let e = p(&text).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{e}");
            assert_eq!(
                e.line,
                line_of(
                    &text,
                    to.lines().find(|l| l.contains(field)).unwrap().trim()
                ),
                "{e}"
            );
        }
        let e =
            p("include /etc/keepalived/lvs.conf\nvirtual_server 1.2.3.4 80 {\n}\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = p("virtual_server_group G {\n 10.0.0.1 80\n}\n").unwrap_err();
        assert!(e.message.contains("virtual_server_group"));
    }

    #[test]
    fn validation_errors_point_at_the_block() {
        let text = SAMPLE.replace("weight 3", "weight 70000");
        let e = p(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("weight"));
        assert_eq!(e.line, line_of(&text, "real_server 192.168.200.2"));
        let e = p("virtual_server 10.0.0.1 0 {\n lb_algo rr\n}\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert_eq!(e.field.as_deref(), Some("port"));
    }

    #[test]
    fn braces_must_balance() {
        let e = p("virtual_server 10.0.0.1 80 {\n lb_algo rr\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("never closed"));
        let e = p("virtual_server 10.0.0.1 80 {\n}\n}\n").unwrap_err();
        assert_eq!(e.line, 3);
    }

    #[test]
    fn comment_and_quote_handling() {
        assert_eq!(words("a b # c"), ["a", "b"]);
        assert_eq!(words("a ! c"), ["a"]);
        assert_eq!(
            words("real_server 1.2.3.4 80{"),
            ["real_server", "1.2.3.4", "80", "{"]
        );
        assert_eq!(
            words("misc_path \"/bin/x -a # b\""),
            ["misc_path", "/bin/x -a # b"]
        );
    }
}
