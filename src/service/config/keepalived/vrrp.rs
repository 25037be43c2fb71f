//! keepalived.conf: the director pair. `vrrp_instance` blocks (their name, interface,
//! `virtual_router_id`, addresses and `use_vmac`) and, in `global_defs`, `lvs_sync_daemon`
//! and `lvs_timeouts`.
//!
//! keepalived runs the VRRP instances (`keepalived -P`); fastlb only reads them to know
//! which addresses mark the MASTER. Every other key of a `vrrp_instance` (priority,
//! adverts, authentication, tracking, notify scripts, ...) is keepalived's business and is
//! accepted as it is. In `global_defs`, the settings of keepalived's LVS checker process
//! that fastlb does not have are errors naming them (`lvs_notify_fifo`, `nftables_ipvs`,
//! `net_namespace_ipvs`, `enable_snmp_checker`); the checker's own tuning and everything
//! else there (router id, mail, VRRP and script settings) is accepted and ignored.

use std::net::IpAddr;
use std::path::Path;

use super::{err, number, one_arg, Node};
use crate::service::config::{interface_name_fault, ConfigError};
use crate::service::pair::{PairConfig, SyncDaemonSettings, VrrpInstance};
use crate::service::TimeoutSettings;

/// `global_defs` keys of keepalived's LVS checker that fastlb does not support: what they
/// would do has no counterpart in fastlb.
const UNSUPPORTED_GLOBAL: &[(&str, &str)] = &[
    (
        "lvs_notify_fifo",
        "real-server change notifications through a FIFO",
    ),
    (
        "lvs_notify_fifo_script",
        "real-server change notifications through a FIFO",
    ),
    ("nftables_ipvs", "nftables marks for virtual_server groups"),
    (
        "nftables_ipvs_priority",
        "nftables marks for virtual_server groups",
    ),
    (
        "nftables_ipvs_start_fwmark",
        "nftables marks for virtual_server groups",
    ),
    ("net_namespace_ipvs", "IPVS in another network namespace"),
    ("enable_snmp_checker", "the checker's SNMP agent"),
];

/// What `global_defs` says about the pair and the table.
#[derive(Debug, Default)]
pub(super) struct GlobalDefs<'a> {
    /// `lvs_sync_daemon` (or a `vrrp_instance`'s `lvs_sync_daemon_interface`), with the
    /// node to blame.
    pub(super) sync_daemon: Option<(&'a Node, SyncDaemonSettings, bool)>,
    /// `lvs_timeouts`.
    pub(super) timeouts: Option<TimeoutSettings>,
}

/// Reads a `global_defs` block.
pub(super) fn global_defs<'a>(node: &'a Node, path: &Path) -> Result<GlobalDefs<'a>, ConfigError> {
    let ctx = "global_defs";
    let mut g = GlobalDefs::default();
    for n in node.block.iter().flatten() {
        let k = n.key();
        if let Some((_, what)) = UNSUPPORTED_GLOBAL.iter().find(|(key, _)| *key == k) {
            return Err(err(
                path,
                n,
                ctx,
                format!("`{k}` ({what}) is not supported by fastlb"),
            ));
        }
        match k {
            "lvs_sync_daemon" => {
                if g.sync_daemon.is_some() {
                    return Err(err(path, n, ctx, "lvs_sync_daemon is given twice"));
                }
                let (settings, id_given) = lvs_sync_daemon(n, path, ctx)?;
                g.sync_daemon = Some((n, settings, id_given));
            }
            "lvs_timeouts" => g.timeouts = Some(lvs_timeouts(n, path, ctx)?),
            _ => {}
        }
    }
    Ok(g)
}

/// `lvs_sync_daemon IF [INSTANCE | inst INSTANCE] [id N] [maxlen N] [port N] [ttl N] [group
/// ADDR]`, as keepalived's `lvs_syncd_handler` reads it (a bare third word is the instance,
/// a bare fourth the id, the older form). Returns the settings and whether `id` was given
/// (else it is the instance's `virtual_router_id`, filled in later).
fn lvs_sync_daemon(
    n: &Node,
    path: &Path,
    ctx: &str,
) -> Result<(SyncDaemonSettings, bool), ConfigError> {
    let args = n.args();
    let Some(interface) = args.first() else {
        return Err(err(path, n, ctx, "lvs_sync_daemon needs an interface"));
    };
    if let Some(fault) = interface_name_fault(interface) {
        return Err(err(path, n, ctx, fault));
    }
    let mut d = SyncDaemonSettings {
        interface: interface.clone(),
        syncid: 0,
        maxlen: None,
        port: None,
        ttl: None,
        group: None,
        instance: None,
    };
    let mut id_given = false;
    let mut i = 1;
    while i < args.len() {
        let word = args[i].as_str();
        let value = args.get(i + 1).map(String::as_str);
        let bad = |what: &str| err(path, n, ctx, format!("lvs_sync_daemon {word}: {what}"));
        let needs = || bad("needs a value");
        match word {
            "inst" => d.instance = Some(value.ok_or_else(needs)?.to_string()),
            "id" => {
                d.syncid = value
                    .ok_or_else(needs)?
                    .parse()
                    .map_err(|_| bad("must be 0..=255"))?;
                id_given = true;
            }
            "maxlen" => {
                // keepalived: 1 ..= 65535 - 20 (IP) - 8 (UDP).
                let v: u16 = value
                    .ok_or_else(needs)?
                    .parse()
                    .map_err(|_| bad("must be 1..=65507"))?;
                if !(1..=65507).contains(&v) {
                    return Err(bad("must be 1..=65507"));
                }
                d.maxlen = Some(v);
            }
            "port" => {
                let v: u16 = value
                    .ok_or_else(needs)?
                    .parse()
                    .map_err(|_| bad("must be 1..=65535"))?;
                if v == 0 {
                    return Err(bad("must be 1..=65535"));
                }
                d.port = Some(v);
            }
            "ttl" => {
                let v: u8 = value
                    .ok_or_else(needs)?
                    .parse()
                    .map_err(|_| bad("must be 1..=255"))?;
                if v == 0 {
                    return Err(bad("must be 1..=255"));
                }
                d.ttl = Some(v);
            }
            "group" => {
                let a: IpAddr = value
                    .ok_or_else(needs)?
                    .parse()
                    .map_err(|_| bad("not an address"))?;
                if !a.is_multicast() {
                    return Err(bad(&format!("{a} is not a multicast address")));
                }
                d.group = Some(a);
            }
            // The older positional form: IF INSTANCE [SYNCID].
            _ if i == 1 => {
                d.instance = Some(word.to_string());
                i += 1;
                continue;
            }
            _ if i == 2 && d.instance.is_some() && !id_given => {
                d.syncid = word
                    .parse()
                    .map_err(|_| err(path, n, ctx, format!("syncid `{word}` must be 0..=255")))?;
                id_given = true;
                i += 1;
                continue;
            }
            _ => {
                return Err(err(
                    path,
                    n,
                    ctx,
                    format!("unknown lvs_sync_daemon option `{word}`"),
                ))
            }
        }
        i += 2;
    }
    Ok((d, id_given))
}

/// `lvs_timeouts [tcp N] [tcpfin N] [udp N]`: `ipvsadm --set`; what is not given keeps
/// fastlb's default.
fn lvs_timeouts(n: &Node, path: &Path, ctx: &str) -> Result<TimeoutSettings, ConfigError> {
    let mut t = TimeoutSettings::default();
    let args = n.args();
    if args.is_empty() || args.len() % 2 != 0 {
        return Err(err(path, n, ctx, "expects tcp N, tcpfin N and/or udp N"));
    }
    for pair in args.chunks(2) {
        let secs: u32 = pair[1].parse().ok().filter(|s| *s > 0).ok_or_else(|| {
            err(
                path,
                n,
                ctx,
                format!("{} `{}`: a number of seconds above 0", pair[0], pair[1]),
            )
        })?;
        match pair[0].as_str() {
            "tcp" => t.tcp = secs,
            "tcpfin" => t.tcpfin = secs,
            "udp" => t.udp = secs,
            other => {
                return Err(err(
                    path,
                    n,
                    ctx,
                    format!("unknown lvs_timeouts option `{other}` (tcp, tcpfin, udp)"),
                ))
            }
        }
    }
    Ok(t)
}

/// An instance's `lvs_sync_daemon_interface` line and the interface it names.
pub(super) type LegacySyncDaemon<'a> = (&'a Node, String);

/// Reads a `vrrp_instance NAME { ... }` block. Also returns the instance's
/// `lvs_sync_daemon_interface`, keepalived's older way to name the sync daemon's interface
/// and tie it to this instance.
pub(super) fn vrrp_instance<'a>(
    node: &'a Node,
    path: &Path,
) -> Result<(VrrpInstance, Option<LegacySyncDaemon<'a>>), ConfigError> {
    let name = match node.args() {
        [name] => name.clone(),
        _ => return Err(err(path, node, "", "vrrp_instance expects a name")),
    };
    let ctx = format!("vrrp_instance {name}");
    let block = node
        .block
        .as_ref()
        .ok_or_else(|| err(path, node, &ctx, "needs a { ... } block"))?;
    let mut interface = None;
    let mut vrid = None;
    let mut addresses = Vec::new();
    let mut use_vmac = false;
    let mut legacy_sync = None;
    for n in block {
        match n.key() {
            "interface" => interface = Some(ifname(path, n, &ctx)?),
            "virtual_router_id" => {
                let v: u8 = number(path, n, &ctx)?;
                if v == 0 {
                    return Err(err(path, n, &ctx, "must be 1..=255"));
                }
                vrid = Some(v);
            }
            "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                for a in n.block.iter().flatten() {
                    addresses.push(vip(a, path, &ctx)?);
                }
                if n.block.is_none() {
                    return Err(err(path, n, &ctx, "needs a { ... } block of addresses"));
                }
            }
            "use_vmac" => use_vmac = true,
            "lvs_sync_daemon_interface" => {
                legacy_sync = Some((n, ifname(path, n, &ctx)?));
            }
            _ => {}
        }
    }
    let interface = interface.ok_or_else(|| err(path, node, &ctx, "needs an interface"))?;
    let vrid = vrid.ok_or_else(|| err(path, node, &ctx, "needs a virtual_router_id"))?;
    if let Some(mixed) = addresses
        .iter()
        .find(|a| a.is_ipv6() != addresses[0].is_ipv6())
    {
        return Err(err(
            path,
            node,
            &ctx,
            format!("{mixed}: IPv4 and IPv6 addresses in one instance"),
        ));
    }
    Ok((
        VrrpInstance {
            name,
            interface,
            vrid,
            addresses,
            use_vmac,
        },
        legacy_sync,
    ))
}

/// A line's one argument, an interface name.
fn ifname(path: &Path, n: &Node, ctx: &str) -> Result<String, ConfigError> {
    let name = one_arg(path, n, ctx)?;
    match interface_name_fault(name) {
        Some(fault) => Err(err(path, n, ctx, fault)),
        None => Ok(name.to_string()),
    }
}

/// One line of `virtual_ipaddress`: `ADDR[/LEN] [brd ..] [dev IF] [scope ..] [label ..]
/// ...`; fastlb needs the address only.
fn vip(n: &Node, path: &Path, ctx: &str) -> Result<IpAddr, ConfigError> {
    let word = n.key();
    let addr = word.split('/').next().unwrap_or(word);
    addr.parse().map_err(|_| {
        ConfigError::at_line(
            path,
            n.line,
            format!("virtual_ipaddress `{word}`: not an address"),
        )
        .with_context(ctx)
    })
}

/// Puts the pair together once the whole file is read: the instance fastlb follows (the
/// one `lvs_sync_daemon` names, else the file's only one) and the sync daemon's id.
pub(super) fn pair(
    path: &Path,
    instances: Vec<(&Node, VrrpInstance)>,
    sync_daemon: Option<(&Node, SyncDaemonSettings, bool)>,
) -> Result<PairConfig, ConfigError> {
    for (i, (n, inst)) in instances.iter().enumerate() {
        if instances[..i].iter().any(|(_, o)| o.name == inst.name) {
            return Err(err(
                path,
                n,
                "",
                format!("vrrp_instance {} is defined twice", inst.name),
            ));
        }
    }
    let sync;
    let followed = match &sync_daemon {
        Some((n, d, id_given)) if d.instance.is_some() => {
            let name = d.instance.as_deref().expect("matched");
            let Some((_, inst)) = instances.iter().find(|(_, i)| i.name == name) else {
                return Err(err(
                    path,
                    n,
                    "global_defs",
                    format!("lvs_sync_daemon names vrrp_instance {name}, which is not in the file"),
                ));
            };
            let mut d = d.clone();
            if !id_given {
                d.syncid = inst.vrid;
            }
            sync = Some(d);
            Some(name.to_string())
        }
        other => {
            sync = other.as_ref().map(|(_, d, _)| d.clone());
            match instances.as_slice() {
                [] => None,
                [(_, only)] => Some(only.name.clone()),
                [_, (n, second), ..] => {
                    return Err(err(
                        path,
                        n,
                        "",
                        format!(
                            "several vrrp_instance blocks ({} is the second) and no \
                             lvs_sync_daemon naming one: fastlb cannot tell which instance \
                             decides whether this director forwards",
                            second.name
                        ),
                    ))
                }
            }
        }
    };
    if let Some(name) = &followed {
        let (n, inst) = instances
            .iter()
            .find(|(_, i)| &i.name == name)
            .expect("found above");
        if inst.addresses.is_empty() {
            return Err(err(
                path,
                n,
                &format!("vrrp_instance {name}"),
                "fastlb follows this instance by its virtual_ipaddress, and it has none",
            ));
        }
    }
    Ok(PairConfig {
        instances: instances.into_iter().map(|(_, i)| i).collect(),
        followed,
        sync_daemon: sync,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use crate::service::config::ConfigError;
    use crate::service::pair::{SyncDaemonSettings, VrrpState};
    use crate::service::{Config, TimeoutSettings};
    use std::net::IpAddr;
    use std::path::Path;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("keepalived.conf"))
    }

    const SERVICE: &str =
        "virtual_server 10.80.100.1 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  \
        real_server 10.80.2.11 80 {\n  }\n}\n";

    /// A pair's file: one instance holding the clients' gateway and the real servers'.
    fn pair_file(global: &str) -> String {
        format!(
            "global_defs {{\n  router_id dir1\n{global}}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface d0\n  virtual_router_id 51\n  \
             priority 150\n  advert_int 1\n  authentication {{\n    auth_type PASS\n    \
             auth_pass secret\n  }}\n  virtual_ipaddress {{\n    10.80.1.1/24 dev d0\n    \
             10.80.2.1/24 dev d1 label d1:vip\n  }}\n  track_interface {{\n    d1\n  }}\n}}\n\
             {SERVICE}"
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_the_instance_and_the_sync_daemon() {
        let c = p(&pair_file(
            "  lvs_sync_daemon d1 VI_1 maxlen 1400 port 8849 ttl 2 group 224.0.0.82\n",
        ))
        .unwrap();
        let i = c.pair.followed().unwrap();
        assert_eq!(i.name, "VI_1");
        assert_eq!(i.interface, "d0");
        assert_eq!(i.vrid, 51);
        assert_eq!(i.addresses, vec![ip("10.80.1.1"), ip("10.80.2.1")]);
        assert!(!i.use_vmac);
        assert_eq!(
            c.pair.sync_daemon,
            Some(SyncDaemonSettings {
                interface: "d1".into(),
                // No `id`: the instance's virtual_router_id, as keepalived.
                syncid: 51,
                maxlen: Some(1400),
                port: Some(8849),
                ttl: Some(2),
                group: Some(ip("224.0.0.82")),
                instance: Some("VI_1".into()),
            })
        );
        assert_eq!(c.services.len(), 1);
        let held = [ip("10.80.1.1"), ip("10.80.2.1")];
        assert_eq!(c.pair.state(|a| held.contains(&a)), VrrpState::Master);
        assert_eq!(c.pair.state(|a| a == held[0]), VrrpState::Backup);
    }

    #[test]
    fn every_form_of_lvs_sync_daemon() {
        let d = |g: &str| p(&pair_file(g)).unwrap().pair.sync_daemon.unwrap();
        let keyword = d("  lvs_sync_daemon d1 inst VI_1 id 7\n");
        assert_eq!(
            (keyword.syncid, keyword.instance.as_deref()),
            (7, Some("VI_1"))
        );
        let positional = d("  lvs_sync_daemon d1 VI_1 9\n");
        assert_eq!(
            (positional.syncid, positional.instance.as_deref()),
            (9, Some("VI_1"))
        );
        // No instance: both daemons run, id 0, and the only instance is still followed.
        let c = p(&pair_file("  lvs_sync_daemon d1\n")).unwrap();
        let d = c.pair.sync_daemon.as_ref().unwrap();
        assert_eq!((d.syncid, d.instance.as_deref()), (0, None));
        assert_eq!(c.pair.followed.as_deref(), Some("VI_1"));
        let roles = c.pair.sync_roles(VrrpState::Backup);
        assert!(roles.master && roles.backup);
    }

    #[test]
    fn the_older_instance_form_names_the_interface() {
        let text = pair_file("").replace(
            "  virtual_router_id 51\n",
            "  virtual_router_id 51\n  lvs_sync_daemon_interface d1\n",
        );
        let d = p(&text).unwrap().pair.sync_daemon.unwrap();
        assert_eq!(d.interface, "d1");
        assert_eq!(d.instance.as_deref(), Some("VI_1"));
        assert_eq!(d.syncid, 51);
    }

    #[test]
    fn conditional_lines_are_read_for_config_id_fastlb() {
        // keepalived (config id = its host name) skips the first line, fastlb reads it;
        // fastlb skips the lines for other ids and reads the `@^` line not meant for it.
        let c = p(&pair_file(
            "  @fastlb lvs_sync_daemon d1 VI_1\n  @dir1 lvs_sync_daemon d0 VI_1\n  \
             @^fastlb lvs_timeouts tcp 1\n  @^dir1 lvs_timeouts tcp 600 udp 30\n",
        ))
        .unwrap();
        assert_eq!(c.pair.sync_daemon.unwrap().interface, "d1");
        assert_eq!(
            c.timeouts,
            TimeoutSettings {
                tcp: 600,
                tcpfin: 120,
                udp: 30
            }
        );
    }

    #[test]
    fn use_vmac_gives_the_virtual_mac() {
        let text = pair_file("").replace("  priority 150\n", "  priority 150\n  use_vmac\n");
        let c = p(&text).unwrap();
        assert!(c.pair.followed().unwrap().use_vmac);
        assert_eq!(
            c.pair.vmacs().collect::<Vec<_>>(),
            vec![("d0", [0, 0, 0x5e, 0, 1, 51])]
        );
    }

    #[test]
    fn no_vrrp_means_no_pair() {
        let c = p(SERVICE).unwrap();
        assert_eq!(c.pair, Default::default());
        assert_eq!(c.pair.state(|_| false), VrrpState::Master);
    }

    fn error(text: &str) -> String {
        p(text).unwrap_err().to_string()
    }

    #[test]
    fn what_fastlb_cannot_follow_is_refused_by_line() {
        assert_eq!(
            error(&pair_file("  lvs_sync_daemon d1 VI_9\n")),
            "keepalived.conf:3: global_defs: field `lvs_sync_daemon`: lvs_sync_daemon names \
             vrrp_instance VI_9, which is not in the file"
        );
        assert_eq!(
            error(&pair_file("  lvs_sync_daemon d1 VI_1 id 5 colour blue\n")),
            "keepalived.conf:3: global_defs: field `lvs_sync_daemon`: unknown lvs_sync_daemon \
             option `colour`"
        );
        assert!(
            error(&pair_file("  lvs_sync_daemon d1 VI_1 group 10.0.0.1\n"))
                .ends_with("lvs_sync_daemon group: 10.0.0.1 is not a multicast address")
        );
        assert!(error(&pair_file("  lvs_sync_daemon d1 VI_1 id 256\n"))
            .ends_with("lvs_sync_daemon id: must be 0..=255"));
        assert_eq!(
            error(&pair_file("  lvs_notify_fifo /run/fifo\n")),
            "keepalived.conf:3: global_defs: field `lvs_notify_fifo`: `lvs_notify_fifo` \
             (real-server change notifications through a FIFO) is not supported by fastlb"
        );
        let no_addresses = pair_file("").replace(
            "  virtual_ipaddress {\n    10.80.1.1/24 dev d0\n    10.80.2.1/24 dev d1 label \
             d1:vip\n  }\n",
            "",
        );
        assert_eq!(
            error(&no_addresses),
            "keepalived.conf:4: vrrp_instance VI_1: field `vrrp_instance`: fastlb follows this \
             instance by its virtual_ipaddress, and it has none"
        );
        let two = format!(
            "{}vrrp_instance VI_2 {{\n  interface d1\n  virtual_router_id 52\n  \
             virtual_ipaddress {{\n    10.80.2.1\n  }}\n}}\n",
            pair_file("")
        );
        assert!(error(&two).starts_with(
            "keepalived.conf:29: field `vrrp_instance`: several vrrp_instance blocks (VI_2 is \
             the second) and no lvs_sync_daemon naming one"
        ));
        // Naming one of them settles it.
        let named = two.replace(
            "router_id dir1\n",
            "router_id dir1\n  lvs_sync_daemon d1 VI_2\n",
        );
        assert_eq!(p(&named).unwrap().pair.followed.as_deref(), Some("VI_2"));
        assert!(
            error(&pair_file("").replace("10.80.2.1/24", "10.80.2.x/24"))
                .contains("virtual_ipaddress `10.80.2.x/24`: not an address")
        );
        assert!(
            error(&pair_file("").replace("10.80.2.1/24", "2001:db8::1/64"))
                .contains("IPv4 and IPv6 addresses in one instance")
        );
        assert!(
            error(&pair_file("").replace("  virtual_router_id 51\n", ""))
                .ends_with("needs a virtual_router_id")
        );
    }

    #[test]
    fn lvs_timeouts_set_the_protocol_timeouts() {
        let c = p(&pair_file("  lvs_timeouts tcp 7200 tcpfin 60\n")).unwrap();
        assert_eq!(
            c.timeouts,
            TimeoutSettings {
                tcp: 7200,
                tcpfin: 60,
                udp: 300
            }
        );
        assert!(error(&pair_file("  lvs_timeouts tcp 0\n")).contains("above 0"));
        assert!(error(&pair_file("  lvs_timeouts sctp 5\n")).contains("unknown lvs_timeouts"));
    }
}
