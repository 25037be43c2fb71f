//! keepalived.conf: the LVS part (`virtual_server` blocks), as keepalived.conf(5) describes
//! it.
//!
//! Blocks that belong to keepalived itself (`global_defs`, `vrrp_*`, `static_*`,
//! `track_*`, `linkbeat_interfaces`) are skipped. Everything else fastlb does not do is an
//! error naming the keyword and its line, never dropped: `include`,
//! `virtual_server_group`, `sorry_server`, `alpha`, `ops`, persistence engines, SCTP, GUE
//! and GRE tunnels, and, until the health checker lands, every checker block (`TCP_CHECK`,
//! `HTTP_GET`, `MISC_CHECK`, ...). Checker tuning keys that only matter to a checker
//! (`delay_loop`, `connect_timeout`, `retry`, `inhibit_on_failure`, `quorum`, ...) are
//! accepted and have no effect while fastlb runs no checks: every real server is up.
//!
//! Defaults are keepalived's: forwarding method NAT, weight 1, `persistence_timeout`
//! without a value 360 s (6 minutes), protocol TCP; scheduler wlc when `lvs_sched` is not
//! given.

use std::net::IpAddr;
use std::path::Path;

use super::error::{key_is_ipv6, validate, ConfigError, Fault};
use crate::service::{
    Config, ForwardMethod, Persistence, Protocol, RealServer, SchedFlags, SchedulerKind,
    ServiceKey, VirtualService, DEFAULT_MH_TABLE_SIZE,
};

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

fn tree(text: &str, path: &Path) -> Result<Vec<Node>, ConfigError> {
    let mut frames: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
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

/// Keys that tune checkers or notifications and so do nothing while fastlb runs none.
const CHECKER_TUNING: &[&str] = &[
    "delay_loop",
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "warmup",
    "inhibit_on_failure",
    "quorum",
    "hysteresis",
    "smtp_alert",
    "snmp_name",
    "virtualhost",
    "omega",
    "notify_up",
    "notify_down",
    "nat_mask",
];

/// Reads the `virtual_server` blocks of a keepalived.conf. `path` names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let nodes = tree(text, path)?;
    let mut config = Config::default();
    let mut service_lines = Vec::new();
    let mut real_lines: Vec<Vec<usize>> = Vec::new();
    for node in &nodes {
        let k = node.key();
        let skip = k == "global_defs"
            || k == "linkbeat_interfaces"
            || k.starts_with("vrrp_")
            || k.starts_with("static_")
            || k.starts_with("track_");
        if skip {
            continue;
        }
        match k {
            "virtual_server" => {
                let (svc, lines) = virtual_server(node, path)?;
                service_lines.push(node.line);
                real_lines.push(lines);
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

fn virtual_server(node: &Node, path: &Path) -> Result<(VirtualService, Vec<usize>), ConfigError> {
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
    for n in block {
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
            k if CHECKER_TUNING.contains(&k) => {}
            "sorry_server" | "sorry_server_inhibit" | "sorry_server_lvs_method" => {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    "sorry servers are not yet supported by fastlb",
                ))
            }
            k if CHECKERS.contains(&k) => {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    format!("{k} health checks are not yet supported by fastlb"),
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
    let ipv6 = key_is_ipv6(&key);
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
    for n in real_nodes {
        reals.push(real_server(n, path, &ctx, vport, method_default, &key)?);
        lines.push(n.line);
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
) -> Result<RealServer, ConfigError> {
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
    for n in node.block.iter().flatten() {
        let k = n.key();
        match k {
            "weight" => r.weight = number(path, n, &ctx)?,
            "lvs_method" | "lb_kind" => r.method = method(path, n, &ctx)?,
            "uthreshold" => r.upper_threshold = number(path, n, &ctx)?,
            "lthreshold" => r.lower_threshold = number(path, n, &ctx)?,
            k if CHECKER_TUNING.contains(&k) => {}
            k if CHECKERS.contains(&k) => {
                return Err(err(
                    path,
                    n,
                    &ctx,
                    format!("{k} health checks are not yet supported by fastlb"),
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
    // As ipvsadm: DR and TUN keep the client's port, so the real port is the service's.
    if matches!(key, ServiceKey::Tuple { .. }) && r.method != ForwardMethod::Masquerade {
        r.port = vport;
    }
    Ok(r)
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

    #[test]
    fn checkers_are_reported_with_their_line() {
        let text = SAMPLE.replace(
            "weight 3\n",
            "weight 3\n        TCP_CHECK {\n            connect_port 1358\n            connect_timeout 3\n        }\n",
        );
        let e = p(&text).unwrap_err();
        assert_eq!(e.line, line_of(&text, "TCP_CHECK"));
        assert_eq!(e.field.as_deref(), Some("TCP_CHECK"));
        assert!(e.message.contains("not yet supported"), "{e}");
        let text = SAMPLE.replace(
            "lb_kind NAT",
            "lb_kind NAT\n    MISC_CHECK {\n misc_path \"/bin/true x\"\n }",
        );
        assert_eq!(p(&text).unwrap_err().field.as_deref(), Some("MISC_CHECK"));
        let text = SAMPLE.replace(
            "weight 1\n        inhibit",
            "HTTP_GET {\n url {\n path /\n status_code 200\n }\n }\n inhibit",
        );
        assert_eq!(p(&text).unwrap_err().field.as_deref(), Some("HTTP_GET"));
    }

    #[test]
    fn unsupported_things_are_errors_naming_them() {
        let cases = [
            (
                "protocol TCP\n\n    real_server 192.168.201.100",
                "sorry_server 10.0.0.9 443\n    protocol TCP\n\n    real_server 192.168.201.100",
                "sorry_server",
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
