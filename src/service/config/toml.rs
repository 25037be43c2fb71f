//! fastlb's TOML configuration (schema and example in `docs/config.md`).
//!
//! The text is read with `toml` + serde into private raw structs that refuse unknown fields,
//! then converted to the [`Config`] model and validated. Each table keeps its byte span so
//! every error, from serde, from conversion or from validation, names a line: the line of
//! the offending key when it is written, else the table's header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::error::{validate, ConfigError, Fault};
use crate::service::{
    ClassifierRule, Config, ForwardMethod, Persistence, Prefix, Protocol, RealServer, SchedFlags,
    SchedulerKind, ServiceKey, TimeoutSettings, VirtualService, DEFAULT_MH_TABLE_SIZE,
    DEFAULT_PERSISTENCE_SECS,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    director: Option<Spanned<RawDirector>>,
    timeouts: Option<Spanned<RawTimeouts>>,
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

/// Reads fastlb's TOML. `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawFile = ::toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        ConfigError::at_line(path, line, e.message().trim_end())
    })?;
    let lines = Lines { text, path };
    let mut spans = Spans::default();
    let mut config = Config::default();

    if let Some(d) = raw.director {
        let span = d.span();
        let d = d.into_inner();
        config.conn_capacity = d.conn_capacity.unwrap_or(0);
        config.tunnel_source_v4 = d.tunnel_source_v4;
        config.tunnel_source_v6 = d.tunnel_source_v6;
        if config.tunnel_source_v4.is_some_and(|a| a.is_unspecified()) {
            return Err(lines
                .field(&span, "tunnel_source_v4", "must be a unicast address")
                .with_context("director"));
        }
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
        let (svc, real_spans) = convert_service(s, &lines, &own, i)?;
        config.services.push(svc);
        spans.services.push(own);
        spans.reals.push(real_spans);
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

fn convert_service(
    s: RawService,
    lines: &Lines<'_>,
    own: &Range<usize>,
    index: usize,
) -> Result<(VirtualService, Vec<Range<usize>>), ConfigError> {
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
    let ipv6 = super::error::key_is_ipv6(&key);
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
    let mut reals = Vec::with_capacity(s.real.len());
    let mut real_spans = Vec::with_capacity(s.real.len());
    for (j, r) in s.real.into_iter().enumerate() {
        let span = r.span();
        let r = r.into_inner();
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
        reals.push(RealServer {
            addr: r.address,
            port: r.port.unwrap_or(service_port),
            weight,
            method,
            upper_threshold: r.upper_threshold.unwrap_or(0),
            lower_threshold: r.lower_threshold.unwrap_or(0),
        });
        real_spans.push(span);
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

    fn line_of_text(text: &str, needle: &str) -> usize {
        line_of(text, text.find(needle).unwrap())
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

    #[test]
    fn serde_errors_carry_a_line() {
        let text = EXAMPLE.replace("port = 8080", "port = \"eighty\"");
        let e = p(&text).unwrap_err();
        assert_eq!(e.line, line_of_text(&text, "port = \"eighty\""));
        let e = p("[[service]]\nprotocol = \"sctp\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = p("[director]\nconn_capacity = = 3\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
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

    #[test]
    fn empty_file_is_an_empty_config() {
        assert_eq!(p("").unwrap(), Config::default());
    }
}
