//! Writes a [`Config`] as fastlb TOML: what `fastlb import FILE` prints for an ipvsadm
//! rule file or a keepalived.conf. Parsing the output gives the same `Config` back.

use std::fmt::Write as _;
use std::time::Duration;

use crate::service::health::{hex_text, CheckKind, HealthConfig, DNS_TYPES};
use crate::service::{
    Config, DestOrder, ForwardMethod, Protocol, ServiceKey, TimeoutSettings, DEFAULT_MH_TABLE_SIZE,
};

/// The TOML name of a forwarding method.
fn method(m: ForwardMethod) -> &'static str {
    match m {
        ForwardMethod::Masquerade => "nat",
        ForwardMethod::DirectRouting => "dr",
        ForwardMethod::Tunnel => "tun",
    }
}

/// A string as a TOML basic string.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `[bgp]`, every key written.
fn bgp(o: &mut String, b: &crate::service::bgp::BgpSettings) {
    let _ = writeln!(
        o,
        "[bgp]\nlocal_as = {}\nneighbor = \"{}\"\nneighbor_as = {}",
        b.local_as, b.neighbor, b.neighbor_as
    );
    if let Some(a) = b.source {
        let _ = writeln!(o, "source = \"{a}\"");
    }
    if let Some(a) = b.router_id {
        let _ = writeln!(o, "router_id = \"{a}\"");
    }
    if let Some(a) = b.next_hop {
        let _ = writeln!(o, "next_hop = \"{a}\"");
    }
    let vips: Vec<String> = b.vips.iter().map(|v| format!("\"{v}\"")).collect();
    let _ = writeln!(
        o,
        "hold_time = {}\nbfd = {}\nbfd_interval_ms = {}\nbfd_multiplier = {}\nvips = [{}]\n\
         shutdown_grace_ms = {}\nbird = {}\nbirdc = {}\nstate_dir = {}\n",
        b.hold_time,
        b.bfd,
        b.bfd_interval_ms,
        b.bfd_multiplier,
        vips.join(", "),
        b.shutdown_grace_ms,
        quoted(&b.bird.to_string_lossy()),
        quoted(&b.birdc.to_string_lossy()),
        quoted(&b.state_dir.to_string_lossy()),
    );
}

/// Seconds as TOML: an integer when whole.
fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{}", d.as_secs_f64())
    }
}

/// Renders `config` as fastlb TOML.
pub fn to_toml(config: &Config) -> String {
    let mut out = String::new();
    let o = &mut out;
    let sync = config.sync;
    let default_sync = crate::service::SyncSettings::default();
    if config.conn_capacity != 0
        || config.tunnel_source_v4.is_some()
        || config.tunnel_source_v6.is_some()
        || sync != default_sync
        || config.dest_order != DestOrder::default()
        || config.sloppy_tcp
        || !config.accept_macs.is_empty()
        || config.state_file.is_some()
        || config.defence != crate::conn::defence::DefenceSettings::default()
    {
        o.push_str("[director]\n");
        if config.dest_order != DestOrder::default() {
            let _ = writeln!(o, "dest_order = \"{}\"", config.dest_order.name());
        }
        if config.sloppy_tcp {
            o.push_str("sloppy_tcp = true\n");
        }
        if config.conn_capacity != 0 {
            let _ = writeln!(o, "conn_capacity = {}", config.conn_capacity);
        }
        if let Some(p) = &config.state_file {
            let _ = writeln!(o, "state_file = {}", quoted(&p.display().to_string()));
        }
        if let Some(a) = config.tunnel_source_v4 {
            let _ = writeln!(o, "tunnel_source_v4 = \"{a}\"");
        }
        if let Some(a) = config.tunnel_source_v6 {
            let _ = writeln!(o, "tunnel_source_v6 = \"{a}\"");
        }
        if sync.sync_threshold != default_sync.sync_threshold {
            let [t, p] = sync.sync_threshold;
            let _ = writeln!(o, "sync_threshold = [{t}, {p}]");
        }
        if sync.sync_refresh_period != default_sync.sync_refresh_period {
            let _ = writeln!(o, "sync_refresh_period = {}", sync.sync_refresh_period);
        }
        if sync.sync_retries != default_sync.sync_retries {
            let _ = writeln!(o, "sync_retries = {}", sync.sync_retries);
        }
        if sync.sync_persist_mode != default_sync.sync_persist_mode {
            let _ = writeln!(o, "sync_persist_mode = {}", sync.sync_persist_mode);
        }
        if sync.sync_qlen_max != default_sync.sync_qlen_max {
            let _ = writeln!(o, "sync_qlen_max = {}", sync.sync_qlen_max);
        }
        if sync.sync_sock_size != default_sync.sync_sock_size {
            let _ = writeln!(o, "sync_sock_size = {}", sync.sync_sock_size);
        }
        let defence = config.defence;
        let default_defence = crate::conn::defence::DefenceSettings::default();
        if defence.drop_entry != default_defence.drop_entry {
            let _ = writeln!(o, "drop_entry = {}", defence.drop_entry);
        }
        if defence.drop_packet != default_defence.drop_packet {
            let _ = writeln!(o, "drop_packet = {}", defence.drop_packet);
        }
        if defence.secure_tcp != default_defence.secure_tcp {
            let _ = writeln!(o, "secure_tcp = {}", defence.secure_tcp);
        }
        if defence.amemthresh != default_defence.amemthresh {
            let _ = writeln!(o, "amemthresh = {}", defence.amemthresh);
        }
        if defence.am_droprate != default_defence.am_droprate {
            let _ = writeln!(o, "am_droprate = {}", defence.am_droprate);
        }
        if !config.accept_macs.is_empty() {
            let list: Vec<String> = config
                .accept_macs
                .iter()
                .map(|m| format!("\"{m}\""))
                .collect();
            let _ = writeln!(o, "accept_macs = [{}]", list.join(", "));
        }
        o.push('\n');
    }
    if let Some(b) = &config.bgp {
        bgp(o, b);
    }
    if config.timeouts != TimeoutSettings::default() {
        let t = config.timeouts;
        let _ = writeln!(
            o,
            "[timeouts]\ntcp = {}\ntcpfin = {}\nudp = {}\n",
            t.tcp, t.tcpfin, t.udp
        );
    }
    if let Some(i) = config.pair.followed() {
        // The followed instance, and a sync daemon that follows it (one that runs in both
        // roles, keepalived's `lvs_sync_daemon` with no instance, TOML cannot say).
        let addrs: Vec<String> = i.addresses.iter().map(|a| format!("\"{a}\"")).collect();
        let _ = writeln!(o, "[pair]\ninstance = {}", quoted(&i.name));
        if !i.interface.is_empty() {
            let _ = writeln!(o, "interface = {}", quoted(&i.interface));
        }
        let _ = writeln!(o, "addresses = [{}]", addrs.join(", "));
        if let Some(d) = config
            .pair
            .sync_daemon
            .as_ref()
            .filter(|d| d.instance.as_deref() == Some(i.name.as_str()))
        {
            let _ = writeln!(
                o,
                "sync_interface = {}\nsyncid = {}",
                quoted(&d.interface),
                d.syncid
            );
            if let Some(n) = d.maxlen {
                let _ = writeln!(o, "sync_maxlen = {n}");
            }
            if let Some(g) = d.group {
                let _ = writeln!(o, "mcast_group = \"{g}\"");
            }
            if let Some(n) = d.port {
                let _ = writeln!(o, "mcast_port = {n}");
            }
            if let Some(n) = d.ttl {
                let _ = writeln!(o, "mcast_ttl = {n}");
            }
        }
        o.push('\n');
    }
    for r in &config.classifiers {
        o.push_str("[[classifier]]\n");
        if let Some(p) = r.protocol {
            let _ = writeln!(o, "protocol = \"{}\"", proto(p));
        }
        let _ = writeln!(o, "destination = \"{}\"", r.dst);
        let _ = writeln!(
            o,
            "ports = \"{}-{}\"\nmark = {}\n",
            r.ports.0, r.ports.1, r.mark
        );
    }
    for svc in &config.services {
        o.push_str("[[service]]\n");
        match svc.key {
            ServiceKey::Tuple {
                protocol,
                addr,
                port,
            } => {
                let _ = writeln!(
                    o,
                    "protocol = \"{}\"\naddress = \"{addr}\"\nport = {port}",
                    proto(protocol)
                );
            }
            ServiceKey::Fwmark { mark, ipv6 } => {
                let _ = writeln!(o, "fwmark = {mark}");
                if ipv6 {
                    o.push_str("ipv6 = true\n");
                }
            }
        }
        let _ = writeln!(o, "scheduler = \"{}\"", svc.scheduler.name());
        let flags = svc.flags.names();
        if !flags.is_empty() {
            let list: Vec<String> = flags.iter().map(|f| quoted(f)).collect();
            let _ = writeln!(o, "flags = [{}]", list.join(", "));
        }
        if let Some(p) = svc.persistence {
            let _ = writeln!(
                o,
                "persistence = {}\npersistence_netmask = {}",
                p.timeout_secs, p.netmask
            );
        }
        if svc.mh_table_size != DEFAULT_MH_TABLE_SIZE {
            let _ = writeln!(o, "mh_table_size = {}", svc.mh_table_size);
        }
        let health = config.health.services.get(&svc.key);
        if let Some(sorry) = health.and_then(|h| h.sorry_server.as_ref()) {
            let _ = writeln!(
                o,
                "sorry_server = \"{}\"",
                crate::service::SocketText(sorry.addr, sorry.port)
            );
            let _ = writeln!(o, "sorry_server_method = \"{}\"", method(sorry.method));
        }
        if let Some(check) = health.and_then(|h| h.check.as_ref()) {
            o.push_str("\n[service.health]\n");
            write_health(o, check, "service.health");
        }
        for real in &svc.reals {
            let _ = writeln!(
                o,
                "\n[[service.real]]\naddress = \"{}\"\nport = {}\nweight = {}\nmethod = \"{}\"",
                real.addr,
                real.port,
                real.weight,
                method(real.method)
            );
            if real.upper_threshold != 0 || real.lower_threshold != 0 {
                let _ = writeln!(
                    o,
                    "upper_threshold = {}\nlower_threshold = {}",
                    real.upper_threshold, real.lower_threshold
                );
            }
            if let Some(check) = health.and_then(|h| h.reals.get(&(real.addr, real.port))) {
                o.push_str("\n[service.real.health]\n");
                write_health(o, check, "service.real.health");
            }
        }
        o.push('\n');
    }
    out
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// Every key of a check, so the output does not depend on which defaults applied.
fn write_health(o: &mut String, h: &HealthConfig, table: &str) {
    match &h.kind {
        CheckKind::Tcp => o.push_str("check = \"tcp\"\n"),
        CheckKind::Ping => o.push_str("check = \"ping\"\n"),
        CheckKind::Udp(u) => {
            o.push_str("check = \"udp\"\n");
            if let Some(p) = &u.payload {
                let _ = writeln!(o, "payload = {}", quoted(&hex_text(p, &[])));
            }
            let _ = writeln!(o, "require_reply = {}", u.require_reply);
            if !u.reply.is_empty() {
                let _ = writeln!(o, "reply = {}", quoted(&hex_text(&u.reply, &u.reply_mask)));
            }
            let _ = writeln!(
                o,
                "min_reply_length = {}\nmax_reply_length = {}",
                u.min_reply_len, u.max_reply_len
            );
        }
        CheckKind::Dns(d) => {
            let name = DNS_TYPES
                .iter()
                .find(|(_, v)| *v == d.qtype)
                .map_or("SOA", |(n, _)| n);
            let _ = writeln!(
                o,
                "check = \"dns\"\ndns_type = {}\ndns_name = {}",
                quoted(name),
                quoted(&d.name)
            );
        }
        CheckKind::Http(http) => {
            let scheme = if http.tls.is_some() { "https" } else { "http" };
            let _ = writeln!(o, "check = \"{scheme}\"\npath = {}", quoted(&http.path));
            if let Some(d) = &http.digest {
                let _ = writeln!(o, "digest = {}", quoted(&hex_text(d, &[])));
            }
            if let Some(sni) = http.tls.as_ref().and_then(|t| t.sni.as_ref()) {
                let _ = writeln!(o, "sni = {}", quoted(sni));
            }
            if !http.status.is_empty() {
                let list: Vec<String> = http
                    .status
                    .iter()
                    .map(|r| quoted(&format!("{}-{}", r.lo, r.hi)))
                    .collect();
                let _ = writeln!(o, "status = [{}]", list.join(", "));
            }
            if let Some(host) = &http.host {
                let _ = writeln!(o, "host = {}", quoted(host));
            }
        }
        CheckKind::Script(s) => {
            let _ = writeln!(
                o,
                "check = \"script\"\ncommand = {}\ndynamic = {}",
                quoted(&s.command),
                s.dynamic
            );
        }
    }
    if let Some(p) = h.port {
        let _ = writeln!(o, "port = {p}");
    }
    let _ = writeln!(
        o,
        "interval = {}\ntimeout = {}\nretries = {}\ndelay_before_retry = {}\nrise = {}\nfall = {}\nwarmup = {}",
        secs(h.interval),
        secs(h.timeout),
        h.retries,
        secs(h.delay_before_retry),
        h.rise,
        h.fall,
        secs(h.warmup)
    );
    let _ = writeln!(
        o,
        "inhibit_on_failure = {}\nstart_down = {}",
        h.inhibit_on_failure, h.start_down
    );
    for (key, v) in [
        ("notify", &h.notify),
        ("notify_up", &h.notify_up),
        ("notify_down", &h.notify_down),
    ] {
        if let Some(cmd) = v {
            let _ = writeln!(o, "{key} = {}", quoted(cmd));
        }
    }
    for more in &h.also {
        let _ = writeln!(o, "\n[[{table}.also]]");
        write_health(o, more, table);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::service::config::parse;

    fn round_trip(text: &str, name: &str) {
        let config = parse(text, Path::new(name)).unwrap();
        let toml = to_toml(&config);
        let again =
            parse(&toml, Path::new("rendered.toml")).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(again, config, "{toml}");
    }

    #[test]
    fn ipvsadm_rules_round_trip_through_toml() {
        round_trip(
            "-A -t 192.0.2.1:80 -s wrr -p 600 -M 255.255.255.0\n\
             -a -t 192.0.2.1:80 -r 10.0.0.1:8080 -m -w 3 -x 100 -y 50\n\
             -a -t 192.0.2.1:80 -r 10.0.0.2:8080 -m -w 0\n\
             -A -u [2001:db8::1]:53 -s sh -b sh-port\n\
             -a -u [2001:db8::1]:53 -r [2001:db8:1::1]:53 -i -w 1\n\
             -A -f 7 -s mh -b mh-fallback\n\
             -a -f 7 -r 10.0.0.3:0 -g -w 2\n",
            "rules",
        );
    }

    #[test]
    fn keepalived_samples_with_every_checker_round_trip_through_toml() {
        // SSL_GET with digest and SNI, several checkers per server (`also`), UDP, ping,
        // DNS, and a virtual_server_group.
        for (name, text) in [
            (
                "ssl-multi-check.conf",
                include_str!("../../../tests/keepalived/ssl-multi-check.conf"),
            ),
            (
                "udp-dns-ping.conf",
                include_str!("../../../tests/keepalived/udp-dns-ping.conf"),
            ),
            (
                "groups.conf",
                include_str!("../../../tests/keepalived/groups.conf"),
            ),
        ] {
            round_trip(text, name);
        }
    }

    #[test]
    fn keepalived_with_checkers_round_trips_through_toml() {
        round_trip(
            r#"
virtual_server 192.0.2.10 80 {
    delay_loop 3
    lb_algo wlc
    lb_kind DR
    persistence_timeout 120
    protocol TCP
    sorry_server 10.0.0.99 80
    real_server 10.0.0.1 80 {
        weight 2
        HTTP_GET {
            url {
                path /health
                status_code 200
            }
            connect_timeout 2
            retry 2
            delay_before_retry 1
        }
    }
    real_server 10.0.0.2 80 {
        weight 1
        MISC_CHECK {
            misc_path "/usr/local/bin/check \"quoted\" arg"
            misc_dynamic
        }
    }
}
"#,
            "keepalived.conf",
        );
    }

    #[test]
    fn toml_documentation_example_round_trips() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md"))
            .unwrap();
        let start = doc.find("```toml\n").unwrap() + 8;
        let end = start + doc[start..].find("```").unwrap();
        round_trip(&doc[start..end], "doc.toml");
    }
}
