//! Rule files: `ipvsadm -R` reads one command per line ([`restore`], [`parse_rules`]) and
//! `ipvsadm -S` prints the table as such a file ([`save`]).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use super::args::prefix_to_dotted;
use super::{apply, parse, real_order, service_order, IpvsCommand, IpvsError};
use crate::service::config::error::{validate, ConfigError, Fault};
use crate::service::{
    Config, ForwardMethod, Protocol, RealServer, ServiceKey, SocketText, VirtualService,
};

/// Splits a rule-file line into words as `ipvsadm -R` does: whitespace-separated, `#`
/// starts a comment, a leading `ipvsadm` word is dropped.
fn words(line: &str) -> Vec<&str> {
    let line = line.split_once('#').map_or(line, |(a, _)| a);
    let mut w: Vec<&str> = line.split_whitespace().collect();
    if w.first() == Some(&"ipvsadm") {
        w.remove(0);
    }
    w
}

/// Applies an `ipvsadm -S` / `ipvsadm-save` rule file to `config`, all or nothing: on any
/// error `config` is unchanged and the error names the line. Only table-changing commands
/// (and `-Z`) may appear. After the last line the whole configuration is validated.
pub fn restore(config: &mut Config, text: &str, path: &Path) -> Result<(), ConfigError> {
    let mut work = config.clone();
    // Lines that introduced services and real servers, to place whole-config errors.
    let mut service_lines: Vec<(ServiceKey, usize)> = Vec::new();
    let mut real_lines: Vec<(ServiceKey, IpAddr, u16, usize)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let w = words(line);
        if w.is_empty() {
            continue;
        }
        let cmd = parse(&w).map_err(|e| ConfigError::at_line(path, n, e.to_string()))?;
        let context = match &cmd {
            IpvsCommand::AddService(s) | IpvsCommand::EditService(s) => {
                format!("service \"{}\"", s.key)
            }
            IpvsCommand::DeleteService(k) | IpvsCommand::Zero(Some(k)) => {
                format!("service \"{k}\"")
            }
            IpvsCommand::AddServer { service, server }
            | IpvsCommand::EditServer { service, server } => format!(
                "service \"{service}\" real {}",
                SocketText(server.addr, server.port)
            ),
            IpvsCommand::DeleteServer {
                service,
                addr,
                port,
            } => format!("service \"{service}\" real {}", SocketText(*addr, *port)),
            _ => String::new(),
        };
        apply(&mut work, &cmd).map_err(|e| {
            let mut err = ConfigError::at_line(path, n, e.to_string()).with_context(&context);
            if let IpvsError::Invalid(inv) = &e {
                err.message = inv.message.clone();
                err.field = Some(inv.field.to_string());
            }
            if e == IpvsError::NotAChange {
                err.message = format!("`{}` does not belong in a rule file", w.join(" "));
            }
            err
        })?;
        match &cmd {
            IpvsCommand::AddService(s) => service_lines.push((s.key, n)),
            IpvsCommand::AddServer { service, server } => {
                real_lines.push((*service, server.addr, server.port, n));
            }
            _ => {}
        }
    }
    validate(&work).map_err(|inv| {
        let line_of_service = |i: usize| {
            let key = work.services[i].key;
            service_lines
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map_or(0, |x| x.1)
        };
        let line = match inv.at {
            Fault::Service(i) => line_of_service(i),
            Fault::Real(i, j) => {
                let (key, r) = (work.services[i].key, &work.services[i].reals[j]);
                real_lines
                    .iter()
                    .rev()
                    .find(|x| x.0 == key && x.1 == r.addr && x.2 == r.port)
                    .map_or_else(|| line_of_service(i), |x| x.3)
            }
            Fault::Classifier(_) | Fault::Timeouts => 0,
        };
        inv.into_config_error(&work, path, line)
    })?;
    *config = work;
    Ok(())
}

/// Reads an `ipvsadm -S` rule file into a fresh [`Config`].
pub fn parse_rules(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    restore(&mut config, text, path)?;
    Ok(config)
}

/// Whether every non-blank, non-comment line of `text` is an ipvsadm option line.
pub fn looks_like_rules(text: &str) -> bool {
    let mut any = false;
    for line in text.lines() {
        let w = words(line);
        match w.first() {
            None => continue,
            Some(first) if first.starts_with('-') => any = true,
            Some(_) => return false,
        }
    }
    any
}

/// Prints `config`'s services as `ipvsadm -S -n` prints the same table: services sorted by
/// (fwmark, family, protocol, address, port) and each service's real servers by (address,
/// port), as ipvsadm sorts them (its default `--sort`).
///
/// What ipvsadm prints, and therefore what this prints: `-A SVC -s SCHED`, then `-p
/// TIMEOUT` and `-M MASK` (only when not /32 or /128) for persistent services, then `-b
/// FLAGS`; each real server as `-a SVC -r ADDR:PORT -g|-m|-i -w WEIGHT`, tunnelled ones
/// followed by `--tun-type ipip`. Thresholds (`-x`, `-y`), the Maglev table size, protocol
/// timeouts, classifier rules and fastlb's list order are not in ipvsadm's output, so a
/// saved file does not carry them; use the TOML format to keep them.
///
/// ipvsadm compares addresses by a signed 32-bit subtraction, which misorders addresses
/// that differ by 2^31 or more (say 10.0.0.1 against 200.0.0.1); fastlb sorts them
/// numerically.
pub fn save(config: &Config) -> String {
    let mut services: Vec<&VirtualService> = config.services.iter().collect();
    services.sort_by_key(|s| service_order(&s.key));
    let mut out = String::new();
    for s in services {
        let svc = match s.key {
            ServiceKey::Tuple {
                protocol,
                addr,
                port,
            } => format!(
                "{} {}",
                match protocol {
                    Protocol::Tcp => "-t",
                    Protocol::Udp => "-u",
                },
                SocketText(addr, port)
            ),
            ServiceKey::Fwmark { mark, ipv6: false } => format!("-f {mark}"),
            ServiceKey::Fwmark { mark, ipv6: true } => format!("-f {mark} -6"),
        };
        let _ = write!(out, "-A {svc} -s {}", s.scheduler);
        if let Some(p) = s.persistence {
            let _ = write!(out, " -p {}", p.timeout_secs);
            match s.key.is_ipv6() {
                false if p.netmask != 32 => {
                    let _ = write!(out, " -M {}", prefix_to_dotted(p.netmask));
                }
                true if p.netmask != 128 => {
                    let _ = write!(out, " -M {}", p.netmask);
                }
                _ => {}
            }
        }
        let names = s.flags.names();
        if !names.is_empty() {
            let _ = write!(out, " -b {}", names.join(","));
        }
        out.push('\n');
        let mut reals: Vec<&RealServer> = s.reals.iter().collect();
        reals.sort_by_key(|r| real_order(r.addr, r.port));
        for r in reals {
            let _ = write!(
                out,
                "-a {svc} -r {} {} -w {}",
                SocketText(r.addr, r.port),
                r.method.ipvsadm_flag(),
                r.weight
            );
            if r.method == ForwardMethod::Tunnel {
                out.push_str(" --tun-type ipip");
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::super::examples::{tcp, EXAMPLE_1, EXAMPLE_2, EXAMPLE_V6};
    use super::*;
    use crate::service::config::error::MAX_TIMEOUT_SECS;
    use crate::service::{Persistence, SchedFlags, SchedulerKind, DEFAULT_MH_TABLE_SIZE};

    #[test]
    fn man_page_example_1() {
        let c = parse_rules(EXAMPLE_1, Path::new("ex1")).unwrap();
        assert_eq!(c.services.len(), 1);
        let s = &c.services[0];
        assert_eq!(s.key, tcp("207.175.44.110", 80));
        assert_eq!(s.scheduler, SchedulerKind::Rr);
        assert_eq!(s.reals.len(), 5);
        // Configuration order is list order.
        assert_eq!(s.reals[0].addr, "192.168.10.1".parse::<IpAddr>().unwrap());
        assert!(s
            .reals
            .iter()
            .all(|r| r.method == ForwardMethod::Masquerade && r.weight == 1 && r.port == 80));
    }

    #[test]
    fn man_page_example_2_fwmark() {
        let c = parse_rules(EXAMPLE_2, Path::new("ex2")).unwrap();
        let s = &c.services[0];
        assert_eq!(
            s.key,
            ServiceKey::Fwmark {
                mark: 1,
                ipv6: false
            }
        );
        assert_eq!(s.reals.len(), 5);
        assert!(s.reals.iter().all(|r| r.port == 0));
    }

    #[test]
    fn man_page_ipv6_example() {
        let c = parse_rules(EXAMPLE_V6, Path::new("ex6")).unwrap();
        assert_eq!(c.services[0].reals[0].port, 80);
        assert!(c.services[0].reals[0].addr.is_ipv6());
    }

    #[test]
    fn rule_file_errors_name_the_line_and_change_nothing() {
        let mut c = parse_rules(EXAMPLE_1, Path::new("x")).unwrap();
        let before = c.clone();
        let text = "# comment\n\n-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.1.1:80 -m\n-a -t 10.0.0.2:80 -r 10.0.1.1:80 -m  # no such service\n";
        let e = restore(&mut c, text, Path::new("rules")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "rules:5: service \"TCP 10.0.0.2:80\" real 10.0.1.1:80: Service not defined"
        );
        assert_eq!(c, before);
        let e = restore(
            &mut c,
            "-A -t 10.0.0.1:80\n-A -t 10.0.0.1:80 -x 1\n",
            Path::new("r"),
        )
        .unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(c, before);
        let e = restore(&mut c, "-L -n\n", Path::new("r")).unwrap_err();
        assert_eq!(e.to_string(), "r:1: `-L -n` does not belong in a rule file");
        // The good part of a file applies only when all of it does.
        restore(
            &mut c,
            "-A -u 10.0.0.1:53\n-a -u 10.0.0.1:53 -r 10.0.1.1 -m\n",
            Path::new("r"),
        )
        .unwrap();
        assert_eq!(c.services.len(), 2);
    }

    #[test]
    fn save_prints_like_ipvsadm() {
        let text = "
-A -u 10.0.0.2:53 -s rr
-a -u 10.0.0.2:53 -r 10.0.1.2:53 -m -w 2
-A -t 10.0.0.2:80 -s sh -b sh-fallback,sh-port
-a -t 10.0.0.2:80 -r 10.0.1.9:80 -g -w 1
-a -t 10.0.0.2:80 -r 10.0.1.10:80 -i -w 3
-a -t 10.0.0.2:80 -r 2001:db8::5 -i -w 1
-A -f 7 -s wlc -p 600 -M 255.255.0.0
-a -f 7 -r 10.0.2.1:0 -m -w 0
-A -f 7 -6 -s mh -b mh-port
-A -t 10.0.0.1:0 -s wlc -p
-A -t [2001:db8::1]:443 -s wrr -p 30 -M 64
-a -t [2001:db8::1]:443 -r [2001:db8::10]:443 -g -w 1
";
        let c = parse_rules(text, Path::new("x")).unwrap();
        let expected = "\
-A -t 10.0.0.1:0 -s wlc -p 360
-A -t 10.0.0.2:80 -s sh -b sh-fallback,sh-port
-a -t 10.0.0.2:80 -r 10.0.1.9:80 -g -w 1
-a -t 10.0.0.2:80 -r 10.0.1.10:80 -i -w 3 --tun-type ipip
-a -t 10.0.0.2:80 -r [2001:db8::5]:80 -i -w 1 --tun-type ipip
-A -u 10.0.0.2:53 -s rr
-a -u 10.0.0.2:53 -r 10.0.1.2:53 -m -w 2
-A -t [2001:db8::1]:443 -s wrr -p 30 -M 64
-a -t [2001:db8::1]:443 -r [2001:db8::10]:443 -g -w 1
-A -f 7 -s wlc -p 600 -M 255.255.0.0
-a -f 7 -r 10.0.2.1:0 -m -w 0
-A -f 7 -6 -s mh -b mh-port
";
        assert_eq!(save(&c), expected);
        let again = parse_rules(&save(&c), Path::new("saved")).unwrap();
        assert_eq!(save(&again), expected);
    }

    #[test]
    fn content_sniffing() {
        assert!(looks_like_rules(EXAMPLE_1));
        assert!(looks_like_rules(EXAMPLE_2));
        assert!(!looks_like_rules("[[service]]\n"));
        assert!(!looks_like_rules("# only a comment\n"));
    }

    fn arb_service() -> impl Strategy<Value = VirtualService> {
        let real = (any::<[u8; 2]>(), 1u16.., 0i32..=65_535, 0usize..3).prop_map(
            |(a, port, weight, m)| RealServer {
                addr: IpAddr::V4(Ipv4Addr::new(10, 1, a[0], a[1])),
                port,
                weight,
                method: [
                    ForwardMethod::Masquerade,
                    ForwardMethod::DirectRouting,
                    ForwardMethod::Tunnel,
                ][m],
                upper_threshold: 0,
                lower_threshold: 0,
            },
        );
        (
            any::<[u8; 2]>(),
            0u16..3,
            proptest::option::of((1u32..=MAX_TIMEOUT_SECS, 0u8..=32)),
            0usize..SchedulerKind::ALL.len(),
            proptest::collection::vec(real, 0..6),
            any::<bool>(),
        )
            .prop_map(|(a, port, pers, sched, reals, udp)| {
                let port = if pers.is_some() { port } else { port + 1 };
                VirtualService {
                    key: ServiceKey::Tuple {
                        protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                        addr: IpAddr::V4(Ipv4Addr::new(192, 0, a[0], a[1])),
                        port,
                    },
                    scheduler: SchedulerKind::ALL[sched],
                    flags: SchedFlags::default(),
                    mh_table_size: DEFAULT_MH_TABLE_SIZE,
                    persistence: pers.map(|(timeout_secs, netmask)| Persistence {
                        timeout_secs,
                        netmask,
                    }),
                    reals,
                }
            })
    }

    proptest! {
        /// save -> parse -> save is byte for byte the same, for any table save can print.
        #[test]
        fn save_round_trips(services in proptest::collection::vec(arb_service(), 0..5)) {
            let mut config = Config::default();
            for mut s in services {
                if config.services.iter().any(|x| x.key == s.key) {
                    continue;
                }
                let vport = match s.key { ServiceKey::Tuple { port, .. } => port, _ => 0 };
                let mut reals: Vec<RealServer> = Vec::new();
                for mut r in s.reals.drain(..) {
                    if r.method != ForwardMethod::Masquerade {
                        r.port = vport;
                    }
                    if !reals.iter().any(|x| x.addr == r.addr && x.port == r.port) {
                        reals.push(r);
                    }
                }
                s.reals = reals;
                config.services.push(s);
            }
            let first = save(&config);
            let restored = parse_rules(&first, Path::new("saved")).unwrap();
            prop_assert_eq!(save(&restored), first);
            prop_assert_eq!(restored.services.len(), config.services.len());
        }

    }
}
