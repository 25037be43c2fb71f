//! What a director announces, and the BIRD configuration that announces it (sans-IO).
//!
//! A VIP is announced while the director can serve it: the appliance is running, the
//! operator has not drained it (`fastlb ctl --drain`), and at least one real server of a
//! service on that address is available (in the running table, which health checks have
//! already thinned, with a weight above 0; a sorry server does not count: another director
//! may still have real servers). Anything else withdraws it, and the router's
//! ECMP moves its flows to the other directors; with the same rules, mh or sh and
//! `sloppy_tcp` there, they keep their real servers. [`announcements`] decides;
//! [`bird_config`] writes the whole configuration of the BIRD that fastlb runs for the
//! session, the VIPs as static routes exported to the router, BFD on the session.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::service::bgp::BgpSettings;
use crate::service::health::HealthSettings;
use crate::service::{ServiceKey, ServiceTable};

/// The VIPs to announce now: those of `settings` (every service address when it names
/// none) with an available real server, not counting `health`'s sorry servers, or none
/// while `drained`.
pub fn announcements(
    table: &ServiceTable,
    health: &HealthSettings,
    settings: &BgpSettings,
    drained: bool,
) -> BTreeSet<IpAddr> {
    if drained {
        return BTreeSet::new();
    }
    table
        .services
        .iter()
        .filter_map(|svc| match svc.config.key {
            ServiceKey::Tuple { addr, .. } => Some((addr, svc)),
            ServiceKey::Fwmark { .. } => None,
        })
        .filter(|(addr, _)| settings.vips.is_empty() || settings.vips.contains(addr))
        .filter(|(_, svc)| {
            let sorry = health.sorry_server(&svc.config.key);
            svc.dests.iter().any(|d| {
                d.server.weight > 0
                    && !sorry.is_some_and(|s| s.addr == d.server.addr && s.port == d.server.port)
            })
        })
        .map(|(addr, _)| addr)
        .collect()
}

/// Names of the BIRD protocols fastlb writes (what `birdc show protocols` lists).
pub const STATIC_PROTOCOL: &str = "fastlb_vips";
/// The BGP session's protocol name.
pub const BGP_PROTOCOL: &str = "fastlb_router";

/// BIRD's whole configuration for `settings`, announcing `vips`: a device protocol, BFD
/// when asked, the VIPs as blackhole static routes (they only carry the announcement; the
/// director's own routing is untouched), and the BGP session exporting exactly those.
pub fn bird_config(settings: &BgpSettings, vips: &BTreeSet<IpAddr>) -> String {
    let s = settings;
    let mut o = String::from(
        "# Written by fastlb from its [bgp] settings, again on every change of what it\n\
         # announces; edits are overwritten.\n",
    );
    if let Some(id) = s.router_id {
        let _ = writeln!(o, "router id {id};");
    }
    o.push_str("log stderr { info, remote, warning, error, auth, fatal, bug };\n");
    o.push_str("protocol device {}\n");
    if s.bfd {
        let _ = writeln!(
            o,
            "protocol bfd fastlb_bfd {{\n  interface \"*\" {{ interval {} ms; multiplier {}; }};\n}}",
            s.bfd_interval_ms, s.bfd_multiplier
        );
    }
    let (channel, len) = if s.neighbor.is_ipv4() {
        ("ipv4", 32)
    } else {
        ("ipv6", 128)
    };
    let _ = writeln!(o, "protocol static {STATIC_PROTOCOL} {{\n  {channel};");
    for v in vips {
        let _ = writeln!(o, "  route {v}/{len} blackhole;");
    }
    o.push_str("}\n");
    let _ = writeln!(o, "protocol bgp {BGP_PROTOCOL} {{");
    match s.source {
        Some(a) => {
            let _ = writeln!(o, "  local {a} as {};", s.local_as);
        }
        None => {
            let _ = writeln!(o, "  local as {};", s.local_as);
        }
    }
    let _ = writeln!(o, "  neighbor {} as {};", s.neighbor, s.neighbor_as);
    let _ = writeln!(o, "  hold time {};", s.hold_time);
    if s.hold_time != 0 {
        let _ = writeln!(o, "  keepalive time {};", (s.hold_time / 3).max(1));
    }
    // Reconnect quickly after the router restarts, and back off if it keeps failing.
    o.push_str("  connect retry time 1;\n  error wait time 1, 5;\n");
    if s.bfd {
        o.push_str("  bfd on;\n");
    }
    let _ = writeln!(
        o,
        "  {channel} {{\n    import none;\n    export where proto = \"{STATIC_PROTOCOL}\";"
    );
    match s.next_hop {
        Some(a) => {
            let _ = writeln!(o, "    next hop address {a};");
        }
        None => o.push_str("    next hop self;\n"),
    }
    o.push_str("  };\n}\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::config;
    use crate::service::table::DestIds;
    use crate::service::DestRegistry;
    use std::path::Path;

    const RULES: &str = r#"
[bgp]
local_as = 65001
neighbor = "10.1.0.1"
neighbor_as = 65000
source = "10.1.0.11"

[[service]]
protocol = "tcp"
address = "192.0.2.100"
port = 80
scheduler = "mh"
[[service.real]]
address = "10.0.0.11"
[[service.real]]
address = "10.0.0.12"

[[service]]
protocol = "udp"
address = "192.0.2.100"
port = 53
[[service.real]]
address = "10.0.0.11"
weight = 0

[[service]]
protocol = "tcp"
address = "192.0.2.101"
port = 443
[[service.real]]
address = "10.0.0.13"
weight = 0
"#;

    fn table(text: &str) -> (ServiceTable, HealthSettings, BgpSettings) {
        let c = config::parse(text, Path::new("t.toml")).unwrap();
        let registry = DestRegistry::default();
        let mut ids = DestIds::new(registry.capacity());
        let t = ServiceTable::build(&c, &mut ids, &registry, 1).unwrap();
        (t, c.health, c.bgp.unwrap())
    }

    fn set(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_vip_is_announced_while_one_of_its_services_has_an_available_server() {
        let (t, h, s) = table(RULES);
        // .101's only server is quiesced (weight 0): nothing to serve, not announced.
        assert_eq!(announcements(&t, &h, &s, false), set(&["192.0.2.100"]));
        // Drained: nothing, whatever the servers.
        assert_eq!(announcements(&t, &h, &s, true), set(&[]));
        // Every server of .100 gone (health checks took them out, or -d): withdrawn.
        let gone = RULES.replace(
            "address = \"10.0.0.11\"\n[[service.real]]\naddress = \"10.0.0.12\"\n",
            "address = \"10.0.0.11\"\nweight = 0\n",
        );
        let (t, h, s) = table(&gone);
        assert_eq!(announcements(&t, &h, &s, false), set(&[]));
        // A sorry server standing in for them (as health::effective_config adds it, at
        // weight 1) does not bring the announcement back.
        let sorry = gone.replace(
            "scheduler = \"mh\"\n",
            "scheduler = \"mh\"\nsorry_server = \"10.0.0.99:80\"\n",
        );
        let sorry = sorry.replacen(
            "weight = 0\n",
            "weight = 0\n[[service.real]]\naddress = \"10.0.0.99\"\n",
            1,
        );
        let (t, h, s) = table(&sorry);
        assert_eq!(t.services[0].dests.len(), 2);
        assert!(h.sorry_server(&t.services[0].config.key).is_some());
        assert_eq!(announcements(&t, &h, &s, false), set(&[]));
    }

    #[test]
    fn only_the_listed_vips() {
        let text = RULES
            .replace("source = \"10.1.0.11\"\n", "vips = [\"192.0.2.101\"]\n")
            .replace(
                "address = \"10.0.0.13\"\nweight = 0\n",
                "address = \"10.0.0.13\"\n",
            );
        let (t, h, s) = table(&text);
        assert_eq!(announcements(&t, &h, &s, false), set(&["192.0.2.101"]));
    }

    #[test]
    fn bird_configuration_announces_exactly_the_set() {
        let (_, _, s) = table(RULES);
        let c = bird_config(&s, &set(&["192.0.2.100"]));
        assert!(c.contains("route 192.0.2.100/32 blackhole;"), "{c}");
        assert!(!c.contains("192.0.2.101"), "{c}");
        assert!(c.contains("local 10.1.0.11 as 65001;"), "{c}");
        assert!(c.contains("neighbor 10.1.0.1 as 65000;"), "{c}");
        assert!(c.contains("bfd on;"), "{c}");
        assert!(c.contains("interval 100 ms; multiplier 3;"), "{c}");
        assert!(c.contains("next hop self;"), "{c}");
        let empty = bird_config(&s, &set(&[]));
        assert!(!empty.contains("route "), "{empty}");
        assert!(
            empty.contains("protocol static fastlb_vips {\n  ipv4;\n}"),
            "{empty}"
        );
    }

    /// BIRD itself reads what fastlb writes (`bird -p`: parse the configuration and exit).
    #[test]
    fn bird_parses_the_configuration() {
        if std::process::Command::new("bird")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIP: bird (Debian bird2) is not installed");
            return;
        }
        let (_, _, mut s) = table(RULES);
        for (bfd, hop) in [(true, None), (false, Some("10.1.0.12".parse().unwrap()))] {
            s.bfd = bfd;
            s.next_hop = hop;
            s.router_id = Some("10.1.0.11".parse().unwrap());
            for vips in [set(&["192.0.2.100", "192.0.2.101"]), set(&[])] {
                let dir = std::env::temp_dir().join(format!("fastlb-bird-{}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                let conf = dir.join("bird.conf");
                std::fs::write(&conf, bird_config(&s, &vips)).unwrap();
                let out = std::process::Command::new("bird")
                    .arg("-p")
                    .arg("-c")
                    .arg(&conf)
                    .output()
                    .unwrap();
                let _ = std::fs::remove_dir_all(&dir);
                assert!(
                    out.status.success(),
                    "{}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    bird_config(&s, &vips)
                );
            }
        }
    }
}
