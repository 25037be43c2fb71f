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
use crate::service::health::parse_hex;
use crate::service::health::{
    CheckKind, DnsCheck, HealthConfig, HttpCheck, ScriptCheck, ServiceHealth, SorryServer,
    StatusRange, TlsCheck, UdpCheck, DNS_TYPES,
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
            "delay_loop" => self.delay_loop = Some(check_seconds(path, n, ctx)?),
            "connect_timeout" => self.connect_timeout = Some(check_seconds(path, n, ctx)?),
            "retry" => self.retry = Some(number(path, n, ctx)?),
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

/// The shortest check interval and timeout fastlb runs (its TOML's lower bound, too).
const SHORTEST_CHECK: Duration = Duration::from_millis(10);

/// [`seconds`] for a check's interval or timeout: at least [`SHORTEST_CHECK`].
/// Stricter than keepalived, which takes down to a microsecond (and logs `delay_loop 0` as
/// invalid and keeps its default): a check every few microseconds is no health check, and
/// a value TOML refuses would make a configuration fastlb cannot write back.
fn check_seconds(path: &Path, node: &Node, ctx: &str) -> Result<Duration, ConfigError> {
    let d = seconds(path, node, ctx)?;
    if d < SHORTEST_CHECK {
        return Err(err(
            path,
            node,
            ctx,
            format!(
                "`{}`: at least 0.01 s (fastlb's shortest check interval and timeout)",
                node.args().join(" ")
            ),
        ));
    }
    Ok(d)
}

/// A checker block read: its kind(s), where to connect and its own tuning. An `HTTP_GET`
/// or `SSL_GET` with several `url` blocks gives one kind per url (all must pass, as
/// keepalived checks every url in turn).
struct Checker {
    kinds: Vec<CheckKind>,
    port: Option<u16>,
    misc_timeout: Option<Duration>,
    tuning: Tuning,
    defaults: KindDefaults,
    /// `enable_sni`, and its `sni_name` if given.
    sni: Option<Option<String>>,
}

/// keepalived's per-checker defaults: `retry`, and `delay_before_retry` (`None`: the
/// checker's `delay_loop`).
#[derive(Copy, Clone)]
struct KindDefaults {
    retry: u32,
    delay_before_retry: Option<Duration>,
}

/// The checkers fastlb runs, with keepalived's defaults (check_api.c: retry 1,
/// delay_before_retry 1 s; HTTP_GET/SSL_GET 3 s; MISC_CHECK retry 0; DNS_CHECK retry 3 and
/// delay_before_retry = delay_loop).
fn kind_defaults(kind: &str) -> Option<KindDefaults> {
    let d = |retry, secs: Option<u64>| {
        Some(KindDefaults {
            retry,
            delay_before_retry: secs.map(Duration::from_secs),
        })
    };
    match kind {
        "TCP_CHECK" | "UDP_CHECK" | "PING_CHECK" => d(1, Some(1)),
        "HTTP_GET" | "SSL_GET" => d(1, Some(3)),
        "MISC_CHECK" => d(0, Some(1)),
        "DNS_CHECK" => d(3, None),
        _ => None,
    }
}

/// keepalived's checker keys fastlb accepts and ignores: logging only.
const CHECKER_IGNORED: &[&str] = &["log_all_failures"];

/// Reads a checker block. The checker's type is judged first: a type fastlb does not run
/// is refused by its own name before any of its keys is looked at.
fn checker_block(node: &Node, path: &Path, ctx: &str) -> Result<Checker, ConfigError> {
    let kind_name = node.key();
    let ctx = format!("{ctx} {kind_name}");
    let Some(defaults) = kind_defaults(kind_name) else {
        return Err(err(
            path,
            node,
            &ctx,
            format!(
                "{kind_name} health checks are not supported by fastlb (TCP_CHECK, HTTP_GET, \
                 SSL_GET, MISC_CHECK, UDP_CHECK, PING_CHECK, DNS_CHECK)"
            ),
        ));
    };
    let http = matches!(kind_name, "HTTP_GET" | "SSL_GET");
    let mut tuning = Tuning::default();
    let mut port = None;
    let mut misc_timeout = None;
    let mut urls: Vec<&Node> = Vec::new();
    let mut misc_path = None;
    let mut dynamic = false;
    let mut sni_enabled = false;
    let mut sni_name = None;
    let mut udp = UdpCheck {
        max_reply_len: 255,
        ..UdpCheck::default()
    };
    let mut dns = DnsCheck {
        qtype: 6,
        name: String::new(),
    };
    for n in node.block.iter().flatten() {
        if tuning.take(path, n, &ctx)? {
            continue;
        }
        match (kind_name, n.key()) {
            (_, k) if CHECKER_IGNORED.contains(&k) => {}
            ("MISC_CHECK", "misc_path") => misc_path = Some(n.args().join(" ")),
            // keepalived runs the script with `delay_loop` as its limit when misc_timeout is 0
            // (misc_check_thread), as when it is not given.
            ("MISC_CHECK", "misc_timeout") => {
                misc_timeout = match seconds(path, n, &ctx)? {
                    t if t.is_zero() => None,
                    _ => Some(check_seconds(path, n, &ctx)?),
                }
            }
            ("MISC_CHECK", "misc_dynamic") => dynamic = true,
            // keepalived's MISC_CHECK has no connection keys.
            (k, "connect_port") if k != "MISC_CHECK" => port = Some(number(path, n, &ctx)?),
            (_, "url") if http => urls.push(n),
            // Deprecated in keepalived but still read by HTTP_GET and SSL_GET (only there).
            (_, "nb_get_retry") if http => tuning.retry = Some(number(path, n, &ctx)?),
            (_, "virtualhost") if http => {
                tuning.virtualhost = Some(one_arg(path, n, &ctx)?.to_string())
            }
            (_, "enable_sni") if http => sni_enabled = true,
            (_, "sni_name") if http => sni_name = Some(one_arg(path, n, &ctx)?.to_string()),
            // Only how keepalived closes the TLS session.
            (_, "tls_compliant") if http => {}
            ("UDP_CHECK", "payload") => {
                udp.payload = Some(hex(path, n, &ctx, false)?.0);
            }
            ("UDP_CHECK", "require_reply") => {
                udp.require_reply = true;
                if !n.args().is_empty() {
                    (udp.reply, udp.reply_mask) = hex(path, n, &ctx, true)?;
                }
            }
            ("UDP_CHECK", "min_reply_length") => udp.min_reply_len = number(path, n, &ctx)?,
            ("UDP_CHECK", "max_reply_length") => udp.max_reply_len = number(path, n, &ctx)?,
            ("DNS_CHECK", "type") => {
                let t = one_arg(path, n, &ctx)?;
                dns.qtype = DNS_TYPES
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(t))
                    .map(|(_, v)| *v)
                    .ok_or_else(|| {
                        let known: Vec<&str> = DNS_TYPES.iter().map(|(n, _)| *n).collect();
                        err(path, n, &ctx, format!("`{t}`: one of {}", known.join(", ")))
                    })?;
            }
            ("DNS_CHECK", "name") => {
                let name = one_arg(path, n, &ctx)?;
                let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
                let bad_label = name != "." && labels.iter().any(|l| l.is_empty() || l.len() > 63)
                    || name.len() > 253;
                if bad_label {
                    return Err(err(
                        path,
                        n,
                        &ctx,
                        format!("`{name}`: a domain name with no empty label"),
                    ));
                }
                dns.name = name.to_string();
            }
            (_, "nb_get_retry") => {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    format!(
                        "keepalived reads `nb_get_retry` only in HTTP_GET and SSL_GET and \
                         ignores it in {kind_name}: write `retry`"
                    ),
                ))
            }
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
    let kinds = match kind_name {
        "TCP_CHECK" => vec![CheckKind::Tcp],
        "PING_CHECK" => vec![CheckKind::Ping],
        "UDP_CHECK" => {
            if udp.min_reply_len > udp.max_reply_len {
                return Err(err(
                    path,
                    node,
                    &ctx,
                    "min_reply_length is above max_reply_length: the check could never pass",
                ));
            }
            vec![CheckKind::Udp(udp)]
        }
        "DNS_CHECK" => vec![CheckKind::Dns(dns)],
        "MISC_CHECK" => vec![CheckKind::Script(ScriptCheck {
            command: misc_path.ok_or_else(|| err(path, node, &ctx, "needs misc_path"))?,
            dynamic,
        })],
        _ => {
            if urls.is_empty() {
                return Err(err(path, node, &ctx, "needs a url { path ... } block"));
            }
            let tls = (kind_name == "SSL_GET").then(TlsCheck::default);
            let mut kinds = Vec::new();
            for url in urls {
                let mut h = url_block(url, path, &ctx)?;
                h.tls = tls.clone();
                kinds.push(CheckKind::Http(h));
            }
            kinds
        }
    };
    Ok(Checker {
        kinds,
        port,
        misc_timeout,
        tuning,
        defaults,
        sni: sni_enabled.then_some(sni_name),
    })
}

/// One `url { path ... }` block of an `HTTP_GET` or `SSL_GET`.
fn url_block(url: &Node, path: &Path, ctx: &str) -> Result<HttpCheck, ConfigError> {
    let mut http = HttpCheck::default();
    for n in url.block.iter().flatten() {
        match n.key() {
            "path" => http.path = one_arg(path, n, ctx)?.to_string(),
            "status_code" => {
                for a in n.args() {
                    for part in a.split(',') {
                        http.status.push(StatusRange::parse(part).ok_or_else(|| {
                            err(path, n, ctx, format!("`{part}`: a status code or range"))
                        })?);
                    }
                }
            }
            "virtualhost" => http.host = Some(one_arg(path, n, ctx)?.to_string()),
            "digest" => {
                let d = one_arg(path, n, ctx)?;
                let bytes = (d.len() == 32)
                    .then(|| {
                        (0..16)
                            .map(|i| u8::from_str_radix(&d[2 * i..2 * i + 2], 16).ok())
                            .collect::<Option<Vec<u8>>>()
                    })
                    .flatten()
                    .ok_or_else(|| {
                        err(path, n, ctx, format!("`{d}`: an MD5 sum, 32 hex digits"))
                    })?;
                if http.digest.is_some() {
                    return Err(err(path, n, ctx, "a url has one digest"));
                }
                http.digest = Some(bytes.try_into().expect("16 bytes"));
            }
            k => {
                return Err(err(
                    path,
                    n,
                    ctx,
                    format!("`{k}` is not supported by fastlb in url"),
                ))
            }
        }
    }
    if http.path.is_empty() {
        return Err(err(path, url, ctx, "needs a path"));
    }
    Ok(http)
}

/// A hex string key (`payload`, `require_reply`), as [`parse_hex`] reads it.
fn hex(
    path: &Path,
    node: &Node,
    ctx: &str,
    wildcards: bool,
) -> Result<(Vec<u8>, Vec<u8>), ConfigError> {
    let text = node.args().join(" ");
    parse_hex(&text, wildcards).ok_or_else(|| {
        let x = if wildcards { " or x" } else { "" };
        err(path, node, ctx, format!("`{text}`: hex digits{x}"))
    })
}

/// The checker `kind` with `t` (already layered) and keepalived's defaults for its type.
fn health_config(
    kind: CheckKind,
    t: &Tuning,
    misc_timeout: Option<Duration>,
    defaults: KindDefaults,
) -> HealthConfig {
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
    c.retries = t.retry.unwrap_or(defaults.retry);
    c.delay_before_retry = t
        .delay_before_retry
        .or(defaults.delay_before_retry)
        .unwrap_or(c.interval);
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
    // Groups first: a virtual_server may name a group written after it.
    let mut groups: Vec<(String, Vec<Addr>)> = Vec::new();
    for node in nodes.iter().filter(|n| n.key() == "virtual_server_group") {
        let g = virtual_server_group(node, path)?;
        if groups.iter().any(|(name, _)| *name == g.0) {
            return Err(err(
                path,
                node,
                "",
                format!("group `{}` is defined twice", g.0),
            ));
        }
        groups.push(g);
    }
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
                for (svc, lines, health) in virtual_server(node, path, &groups)? {
                    service_lines.push(node.line);
                    real_lines.push(lines);
                    if health != ServiceHealth::default() {
                        config.health.services.insert(svc.key, health);
                    }
                    config.services.push(svc);
                }
            }
            "include" | "includer" | "includem" | "includew" | "includeb" | "includea" => {
                return Err(err(path, node, "", "`include` is not supported by fastlb"));
            }
            "virtual_server_group" => {}
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
    // keepalived compares with strcmp: `nat` is not NAT. It would log the value and keep
    // its default (NAT); fastlb refuses it rather than guess.
    let m = match args.first().map(String::as_str) {
        Some("NAT") => ForwardMethod::Masquerade,
        Some("DR") => ForwardMethod::DirectRouting,
        Some("TUN") => ForwardMethod::Tunnel,
        Some(other) if ["NAT", "DR", "TUN"].contains(&other.to_ascii_uppercase().as_str()) => {
            return Err(err(
                path,
                node,
                ctx,
                format!(
                    "`{other}`: keepalived reads NAT, DR and TUN in capitals only (it would \
                     ignore `{other}` and use NAT)"
                ),
            ))
        }
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

/// One service a `virtual_server` stands for; a `virtual_server group` stands for many.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Addr {
    Tuple(IpAddr, u16),
    /// A mark and, from a group entry, its family (`Some(true)` for inet6).
    Fwmark(u32, Option<bool>),
}

/// The most services one `virtual_server_group` entry may expand to.
const MAX_GROUP_ENTRY: u128 = 4096;

/// A `virtual_server_group NAME { ... }`: the services it stands for, in order.
fn virtual_server_group(node: &Node, path: &Path) -> Result<(String, Vec<Addr>), ConfigError> {
    let name = match node.args() {
        [name] => name.clone(),
        _ => return Err(err(path, node, "", "expects a group name")),
    };
    let ctx = format!("virtual_server_group {name}");
    let mut addrs = Vec::new();
    for n in node.block.iter().flatten() {
        let bad = |m: String| err(path, n, &ctx, m);
        if n.block.is_some() {
            return Err(bad("a group entry has no block".into()));
        }
        let words: Vec<&str> = n.words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["fwmark", m, family @ ..] if family.len() <= 1 => {
                let mark = m.parse().map_err(|_| bad(format!("bad fwmark `{m}`")))?;
                let family = match family.first() {
                    None => None,
                    Some(&"inet") => Some(false),
                    Some(&"inet6") => Some(true),
                    Some(f) => return Err(bad(format!("`{f}`: inet or inet6"))),
                };
                addrs.push(Addr::Fwmark(mark, family));
            }
            [a, rest @ ..] if rest.len() <= 1 => {
                let port = match rest.first() {
                    None => 0,
                    Some(p) => p.parse().map_err(|_| bad(format!("bad port `{p}`")))?,
                };
                let (lo, hi) = group_range(a).map_err(bad)?;
                if hi - lo >= MAX_GROUP_ENTRY {
                    return Err(bad(format!(
                        "`{a}` stands for {} addresses; fastlb expands at most {MAX_GROUP_ENTRY} \
                         per entry into services",
                        hi - lo + 1
                    )));
                }
                let v6 = a.contains(':');
                for x in lo..=hi {
                    let ip = if v6 {
                        IpAddr::from(std::net::Ipv6Addr::from(x))
                    } else {
                        IpAddr::from(std::net::Ipv4Addr::from(x as u32))
                    };
                    addrs.push(Addr::Tuple(ip, port));
                }
            }
            _ => {
                return Err(bad(
                    "expects IP[-END|/PREFIX] [PORT] or fwmark N [inet|inet6]".into(),
                ))
            }
        }
    }
    if addrs.is_empty() {
        return Err(err(path, node, &ctx, "has no entries"));
    }
    Ok((name, addrs))
}

/// A group entry's address range, as keepalived reads it: `10.0.0.1`, `10.0.0.1-10`
/// (the last octet, or the last 16-bit group in hex for IPv6, up to that value),
/// `10.0.0.1-10.0.0.10`, or `10.0.0.0/29` (host bits zero; every address of the prefix).
fn group_range(a: &str) -> Result<(u128, u128), String> {
    let ip = |s: &str| -> Result<u128, String> {
        match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => Ok(u128::from(u32::from(v4))),
            Ok(IpAddr::V6(v6)) => Ok(u128::from(v6)),
            Err(_) => Err(format!("bad address `{s}`")),
        }
    };
    let v6 = a.contains(':');
    if let Some((base, len)) = a.split_once('/') {
        let start = ip(base)?;
        let bits = if v6 { 128 } else { 32 };
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| (1..=bits).contains(l))
            .ok_or_else(|| format!("`{a}`: a prefix length from 1 to {bits}"))?;
        let host = if bits - len == 128 {
            u128::MAX
        } else {
            (1u128 << (bits - len)) - 1
        };
        if start & host != 0 {
            return Err(format!("`{a}`: the address has host bits set"));
        }
        return Ok((start, start | host));
    }
    let Some((base, end)) = a.split_once('-') else {
        let x = ip(a)?;
        return Ok((x, x));
    };
    let start = ip(base)?;
    let full_end = if v6 {
        end.contains(':')
    } else {
        end.contains('.')
    };
    let end = if full_end {
        let e = ip(end)?;
        if end.contains(':') != v6 {
            return Err(format!("`{a}`: the two ends are of different families"));
        }
        e
    } else {
        let (radix, max, mask) = if v6 {
            (16, 0xffff, 0xffff)
        } else {
            (10, 255, 0xff)
        };
        let last = u128::from_str_radix(end, radix)
            .ok()
            .filter(|&v| v <= max)
            .ok_or_else(|| format!("`{a}`: the range end must be at most {max}"))?;
        (start & !mask) | last
    };
    if end < start || (!full_end && end == start) {
        return Err(format!("`{a}`: the range ends before it starts"));
    }
    Ok((start, end))
}

/// A `virtual_server` block: one service, or one per address of its group.
type ServiceParts = (VirtualService, Vec<usize>, ServiceHealth);

fn virtual_server(
    node: &Node,
    path: &Path,
    groups: &[(String, Vec<Addr>)],
) -> Result<Vec<ServiceParts>, ConfigError> {
    let ctx = format!("virtual_server {}", node.args().join(" "));
    let block = node
        .block
        .as_ref()
        .ok_or_else(|| err(path, node, &ctx, "needs a { ... } block"))?;
    let addrs = match node.args() {
        [f, m] if f == "fwmark" => vec![Addr::Fwmark(
            m.parse()
                .map_err(|_| err(path, node, &ctx, format!("bad fwmark `{m}`")))?,
            None,
        )],
        [g, name] if g == "group" => groups
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| {
                err(
                    path,
                    node,
                    &ctx,
                    format!("no virtual_server_group `{name}` in this file"),
                )
            })?,
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
            vec![Addr::Tuple(ip, port)]
        }
        _ => {
            return Err(err(
                path,
                node,
                &ctx,
                "expects IP [PORT], fwmark N or group NAME",
            ))
        }
    };

    let mut protocol = None;
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
                    "TCP" => Some(Protocol::Tcp),
                    "UDP" => Some(Protocol::Udp),
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
    // keepalived 2.2 runs an address service without `protocol` as UDP and reports a
    // configuration error (check_data.c); fastlb asks instead of guessing.
    let needs_protocol = addrs.iter().any(|a| matches!(a, Addr::Tuple(..)));
    let protocol = match protocol {
        Some(p) => p,
        None if needs_protocol => {
            return Err(err(
                path,
                node,
                &ctx,
                "no `protocol`: keepalived 2.2 would run this service as UDP (and report a \
                 configuration error); write `protocol TCP` or `protocol UDP`",
            )
            .with_field("protocol"))
        }
        // Unused by fwmark services.
        None => Protocol::Tcp,
    };
    let mut out = Vec::new();
    for addr in addrs {
        out.push(one_service(
            addr,
            &Shared {
                path,
                ctx: &ctx,
                block,
                protocol,
                ipv6_family,
                scheduler,
                flags,
                timeout,
                granularity,
                method_default,
                real_nodes: &real_nodes,
                tuning: &tuning,
                sorry,
                sorry_method,
            },
        )?);
    }
    Ok(out)
}

/// What every service of one `virtual_server` block shares.
struct Shared<'a> {
    path: &'a Path,
    ctx: &'a str,
    block: &'a [Node],
    protocol: Protocol,
    ipv6_family: bool,
    scheduler: SchedulerKind,
    flags: SchedFlags,
    timeout: Option<u32>,
    granularity: Option<&'a Node>,
    method_default: ForwardMethod,
    real_nodes: &'a [&'a Node],
    tuning: &'a Tuning,
    sorry: Option<(&'a Node, IpAddr, u16)>,
    sorry_method: Option<ForwardMethod>,
}

/// The service at `addr` with the block's settings.
fn one_service(addr: Addr, sh: &Shared<'_>) -> Result<ServiceParts, ConfigError> {
    let Shared {
        path,
        ctx,
        block,
        protocol,
        ipv6_family,
        scheduler,
        flags,
        timeout,
        granularity,
        method_default,
        real_nodes,
        tuning,
        sorry,
        sorry_method,
    } = *sh;
    let ctx = ctx.to_string();
    let key = match addr {
        Addr::Tuple(addr, port) => ServiceKey::Tuple {
            protocol,
            addr,
            port,
        },
        Addr::Fwmark(mark, family) => ServiceKey::Fwmark {
            mark,
            ipv6: family.unwrap_or(ipv6_family),
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
        let (r, check) = real_server(n, path, &ctx, vport, method_default, &key, tuning)?;
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
    let mut checkers: Vec<(&Node, Checker)> = Vec::new();
    for n in node.block.iter().flatten() {
        if tuning.take(path, n, &ctx)? {
            continue;
        }
        let k = n.key();
        match k {
            "weight" => r.weight = number(path, n, &ctx)?,
            "lvs_method" => r.method = method(path, n, &ctx)?,
            "lb_kind" => {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    "`lb_kind` is a virtual_server keyword; keepalived ignores it in a \
                     real_server (write `lvs_method`)",
                ))
            }
            "uthreshold" => r.upper_threshold = number(path, n, &ctx)?,
            "lthreshold" => r.lower_threshold = number(path, n, &ctx)?,
            k if IGNORED.contains(&k) => {}
            k if CHECKERS.contains(&k) => checkers.push((n, checker_block(n, path, &ctx)?)),
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
    // Every checker of the real server, every url of an HTTP_GET/SSL_GET: the first is the
    // check, the others its `also` (the server is up only while all pass, as keepalived).
    let mut all = Vec::new();
    for (n, c) in checkers {
        let layered = vs_tuning.under(&tuning).under(&c.tuning);
        for kind in c.kinds {
            let mut h = health_config(kind, &layered, c.misc_timeout, c.defaults);
            if let (CheckKind::Http(web), Some(sni)) = (&mut h.kind, &c.sni) {
                // keepalived's SNI: sni_name, else the url's virtualhost, else the
                // checker's or the virtual server's (all in `host` by now).
                if let Some(tls) = &mut web.tls {
                    tls.sni = sni.clone().or_else(|| web.host.clone());
                }
            }
            // keepalived connects to the port the real server is written with.
            if h.uses_network() {
                h.port = c.port.or((written_port != r.port).then_some(written_port));
            }
            if h.uses_network() && h.port.unwrap_or(r.port) == 0 {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    "needs connect_port: the real server has no port",
                ));
            }
            all.push(h);
        }
    }
    let check = if all.is_empty() {
        None
    } else {
        let mut first = all.remove(0);
        first.also = all;
        Some(first)
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
    protocol TCP
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
        // misc_timeout 0 is delay_loop, as not given (found by the config_keepalived fuzzer:
        // 0 was taken, and the TOML it renders to refused).
        let zero = p(&CHECKED.replace("misc_timeout 4", "misc_timeout 0")).unwrap();
        let misc0 = zero.health.check_for(&key, ip("10.0.1.3"), 80).unwrap();
        assert_eq!(misc0.timeout, misc0.interval);
        // Below 10 ms an interval or timeout is refused at its line (found by the
        // config_keepalived fuzzer: `delay_loop 0` was taken, and the TOML it renders to
        // refused).
        for (from, to, line) in [
            ("delay_loop 10", "delay_loop 0", 3),
            ("connect_timeout 3", "connect_timeout 0.001", 16),
            ("misc_timeout 4", "misc_timeout 0.005", 32),
        ] {
            let e = p(&CHECKED.replace(from, to)).unwrap_err();
            assert!(e.message.contains("at least 0.01 s"), "{to}: {e}");
            assert_eq!(e.line, line, "{to}: {e}");
            assert_eq!(CHECKED.lines().nth(line - 1).map(str::trim), Some(from));
        }
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
            "virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.0.1.1 80 {\n TCP_CHECK {\n }\n }\n}\n",
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
                "weight 2\n",
                "weight 2\n        SMTP_CHECK {\n        }\n",
                "SMTP_CHECK",
            ),
            (
                "connect_timeout 3",
                "connect_timeout 3\n            nb_get_retry 3",
                "nb_get_retry",
            ),
            ("lb_kind DR", "lb_kind dr", "lb_kind"),
            ("weight 2\n", "weight 2\n        lb_kind NAT\n", "lb_kind"),
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

    const NEW_CHECKERS: &str = r#"
virtual_server 10.0.0.1 443 {
    delay_loop 10
    protocol TCP
    lb_kind NAT
    virtualhost www.example.com
    real_server 10.0.1.1 443 {
        SSL_GET {
            url {
                path /health
                digest 9e107d9d372bb6826bd81d3542a419d6
            }
            url {
                path /ready
                status_code 200-204
                virtualhost ready.example.com
            }
            enable_sni
            nb_get_retry 2
        }
        TCP_CHECK {
            connect_port 8443
        }
    }
    real_server 10.0.1.2 443 {
        HTTP_GET {
            url {
                path /
            }
        }
        MISC_CHECK {
            misc_path /bin/true
        }
        PING_CHECK {
        }
    }
}
virtual_server 10.0.0.2 53 {
    protocol UDP
    real_server 10.0.2.1 53 {
        UDP_CHECK {
            payload 00 01 0203
            require_reply 00 0x
            min_reply_length 2
            max_reply_length 512
        }
        DNS_CHECK {
            type a
            name www.example.com
        }
    }
    real_server 10.0.2.2 53 {
        DNS_CHECK {
        }
    }
}
"#;

    #[test]
    fn ssl_udp_ping_dns_and_several_checkers_per_server() {
        let c = p(NEW_CHECKERS).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let web = c.services[0].key;
        let a = c.health.check_for(&web, ip("10.0.1.1"), 443).unwrap();
        let CheckKind::Http(h) = &a.kind else {
            panic!("{a:?}")
        };
        assert_eq!(h.path, "/health");
        assert_eq!(
            h.digest
                .map(|d| crate::service::health::hex_text(&d, &[]))
                .as_deref(),
            Some("9e107d9d372bb6826bd81d3542a419d6")
        );
        // enable_sni: the url's virtualhost, else the checker's (here the vs's).
        assert_eq!(
            h.tls.as_ref().unwrap().sni.as_deref(),
            Some("www.example.com")
        );
        assert_eq!(h.host.as_deref(), Some("www.example.com"));
        assert_eq!(a.retries, 2, "nb_get_retry counts in SSL_GET");
        assert_eq!(
            a.delay_before_retry,
            Duration::from_secs(3),
            "keepalived's HTTP_GET/SSL_GET default"
        );
        // The second url and the TCP_CHECK: all must pass.
        assert_eq!(a.also.len(), 2);
        let CheckKind::Http(ready) = &a.also[0].kind else {
            panic!()
        };
        assert_eq!(
            (ready.path.as_str(), ready.host.as_deref()),
            ("/ready", Some("ready.example.com"))
        );
        assert_eq!(
            ready.tls.as_ref().unwrap().sni.as_deref(),
            Some("ready.example.com")
        );
        assert_eq!(a.also[1].kind, CheckKind::Tcp);
        assert_eq!(a.also[1].port, Some(8443));
        assert_eq!(a.also[1].retries, 1);
        assert_eq!(a.also[1].delay_before_retry, Duration::from_secs(1));

        let b = c.health.check_for(&web, ip("10.0.1.2"), 443).unwrap();
        let kinds: Vec<_> = b.all().map(|c| &c.kind).collect();
        assert!(matches!(kinds[0], CheckKind::Http(h) if h.tls.is_none()));
        assert!(matches!(kinds[1], CheckKind::Script(_)));
        assert_eq!(*kinds[2], CheckKind::Ping);
        assert_eq!(b.delay_before_retry, Duration::from_secs(3));
        let misc = &b.also[0];
        assert_eq!(
            (misc.retries, misc.delay_before_retry, misc.timeout),
            (0, Duration::from_secs(1), Duration::from_secs(10)),
            "MISC_CHECK: retry 0, delay_before_retry 1 s, misc_timeout = delay_loop"
        );

        let dns_svc = c.services[1].key;
        let u = c.health.check_for(&dns_svc, ip("10.0.2.1"), 53).unwrap();
        let CheckKind::Udp(udp) = &u.kind else {
            panic!("{u:?}")
        };
        assert_eq!(udp.payload.as_deref(), Some(&[0, 1, 2, 3][..]));
        assert!(udp.require_reply);
        assert_eq!(
            (udp.reply.clone(), udp.reply_mask.clone()),
            (vec![0, 0], vec![0, 0x0f])
        );
        assert_eq!((udp.min_reply_len, udp.max_reply_len), (2, 512));
        assert_eq!(
            u.also[0].kind,
            CheckKind::Dns(DnsCheck {
                qtype: 1,
                name: "www.example.com".into()
            })
        );
        let d = c.health.check_for(&dns_svc, ip("10.0.2.2"), 53).unwrap();
        assert_eq!(
            d.kind,
            CheckKind::Dns(DnsCheck {
                qtype: 6,
                name: String::new()
            }),
            "keepalived's default: SOA of the root"
        );
        assert_eq!(
            (d.retries, d.delay_before_retry),
            (3, Duration::from_secs(60)),
            "DNS_CHECK: retry 3, delay_before_retry = delay_loop"
        );
    }

    #[test]
    fn new_checker_errors_name_their_key_and_line() {
        let cases = [
            ("type a", "type AXFR", "type"),
            ("name www.example.com", "name www..example.com", "name"),
            ("payload 00 01 0203", "payload 0g", "payload"),
            ("max_reply_length 512", "max_reply_length 1", "UDP_CHECK"),
            (
                "digest 9e107d9d372bb6826bd81d3542a419d6",
                "digest 9e107d9d",
                "digest",
            ),
            (
                "path /ready",
                "path /ready\n                regex ^ok",
                "regex",
            ),
            (
                "enable_sni",
                "enable_sni\n            fast_recovery",
                "fast_recovery",
            ),
            (
                "misc_path /bin/true",
                "misc_path /bin/true\n            connect_port 80",
                "connect_port",
            ),
        ];
        for (from, to, field) in cases {
            let text = NEW_CHECKERS.replacen(from, to, 1);
            let e = p(&text).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{e}");
            let needle = to.lines().rev().find(|l| l.contains(field));
            let line = match needle {
                Some(l) => line_of(&text, l.trim()),
                // A block-level refusal: the checker's own line.
                None => line_of(&text, field),
            };
            assert_eq!(e.line, line, "{e}");
        }
    }

    #[test]
    fn virtual_server_groups_expand_as_keepalived_reads_them() {
        let text = r#"
virtual_server_group WEB {
    192.0.2.1 80
    192.0.2.10-12 80
    192.0.2.20-192.0.2.21 8080
    192.0.2.32/31 443
    fwmark 7
    fwmark 8 inet
}
virtual_server group WEB {
    protocol TCP
    lb_algo rr
    lb_kind DR
    real_server 10.0.0.1 80 {
        TCP_CHECK {
        }
    }
}
"#;
        let c = p(text).unwrap();
        let keys: Vec<String> = c.services.iter().map(|s| s.key.to_string()).collect();
        assert_eq!(
            keys,
            [
                "TCP 192.0.2.1:80",
                "TCP 192.0.2.10:80",
                "TCP 192.0.2.11:80",
                "TCP 192.0.2.12:80",
                "TCP 192.0.2.20:8080",
                "TCP 192.0.2.21:8080",
                "TCP 192.0.2.32:443",
                "TCP 192.0.2.33:443",
                "FWM 7",
                "FWM 8",
            ]
        );
        // DR keeps the service's port on each; every service gets the check.
        assert_eq!(c.services[4].reals[0].port, 8080);
        for s in &c.services[..8] {
            let real = s.reals[0].port;
            let h = c
                .health
                .check_for(&s.key, "10.0.0.1".parse().unwrap(), real);
            // keepalived checks the port the real server is written with.
            assert_eq!(h.map(|h| h.port.unwrap_or(real)), Some(80), "{}", s.key);
        }
        for (entry, why) in [
            ("192.0.2.12-10 80", "ends before"),
            ("192.0.2.1/24 80", "host bits"),
            ("192.0.2.1-300 80", "at most 255"),
            ("10.0.0.0/8 80", "at most 4096"),
            ("192.0.2.1 http", "bad port"),
            ("fwmark 9 inet4", "inet or inet6"),
        ] {
            let bad = text.replace("192.0.2.1 80", entry);
            let e = p(&bad).unwrap_err();
            assert!(e.message.contains(why), "{entry}: {e}");
            assert_eq!(e.line, 3, "{e}");
        }
        let e =
            p(&text.replace("group WEB {\n    protocol", "group WWW {\n    protocol")).unwrap_err();
        assert!(e.message.contains("no virtual_server_group `WWW`"), "{e}");
        // IPv6: the range end is the last 16-bit group, in hex.
        let v6 = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        assert_eq!(
            group_range("2001:db8::a-1f"),
            Ok((v6("2001:db8::a"), v6("2001:db8::1f")))
        );
        assert_eq!(
            group_range("2001:db8::/126"),
            Ok((v6("2001:db8::"), v6("2001:db8::3")))
        );
        assert!(group_range("2001:db8::a-10.0.0.1").is_err());
    }

    #[test]
    fn a_service_without_protocol_is_refused_as_keepalived_would_run_it_as_udp() {
        let text =
            "\nvirtual_server 10.0.0.1 80 {\n lb_algo rr\n real_server 10.0.1.1 80 {\n }\n}\n";
        let e = p(text).unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (2, Some("protocol")), "{e}");
        assert!(e.message.contains("as UDP"), "{e}");
        // A fwmark service carries no protocol.
        let c = p("virtual_server fwmark 3 {\n real_server 10.0.1.1 0 {\n }\n}\n").unwrap();
        assert_eq!(c.services.len(), 1);
    }

    #[test]
    fn use_vmac_accepts_the_vrrp_virtual_macs() {
        let vs =
            "virtual_server 192.0.2.100 80 {\n protocol TCP\n lb_kind DR\n real_server 10.0.0.11 80 {\n }\n}\n";
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
        let e = p("virtual_server group G {\n real_server 10.0.1.1 80 {\n }\n}\n").unwrap_err();
        assert!(e.message.contains("virtual_server_group `G`"), "{e}");
    }

    #[test]
    fn validation_errors_point_at_the_block() {
        let text = SAMPLE.replace("weight 3", "weight 70000");
        let e = p(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("weight"));
        assert_eq!(e.line, line_of(&text, "real_server 192.168.200.2"));
        let e = p("virtual_server 10.0.0.1 0 {\n protocol TCP\n lb_algo rr\n}\n").unwrap_err();
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
