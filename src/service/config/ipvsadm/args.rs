//! The argument parser: one ipvsadm argument vector to one [`IpvsCommand`], with ipvsadm's
//! option table, its checks of which options each command takes, and its messages.

use std::net::{IpAddr, Ipv4Addr};

use super::{
    usage, IpvsCommand, IpvsError, ListOptions, ServiceSpec, IPVSADM_DEFAULT_PERSISTENCE_SECS,
};
use crate::ha::sync::daemon::DEFAULT_INTERFACE;
use crate::service::config::error::{MAX_TIMEOUT_SECS, MAX_WEIGHT};
use crate::service::{
    DaemonConfig, ForwardMethod, Persistence, Protocol, RealServer, SchedFlags, SchedulerKind,
    ServiceKey, SyncRole,
};

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    Restore,
    Save,
    Zero,
    Help,
    Version,
    StartDaemon,
    StopDaemon,
}

impl Cmd {
    /// ipvsadm's `cmdnames`.
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::Timeout => "set",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
            Cmd::Help => "help",
            Cmd::Version => "version",
            Cmd::StartDaemon => "start-daemon",
            Cmd::StopDaemon => "stop-daemon",
        }
    }

    /// ipvsadm's `commands_v_options` row: per option (indexed as [`OPT_NAMES`]), `+`
    /// compulsory, `x` illegal, `1` at most one of the `1`s, space optional.
    fn table(self) -> &'static [u8; 34] {
        match self {
            Cmd::Add | Cmd::Edit => b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::List => b" 11xxxxxxxxx11       xxxxxxx xxxxx",
            Cmd::AddDest | Cmd::EditDest => b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
            Cmd::DelDest => b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Save => b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Zero => b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::StartDaemon => b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",
            Cmd::StopDaemon => b"xxxxxxxxxxx xxxxxxx xxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::Timeout | Cmd::Restore | Cmd::Help | Cmd::Version => {
                b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
            }
        }
    }
}

/// ipvsadm's `optnames`, the option names its messages use.
const OPT_NAMES: [&str; 34] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

// Indices into OPT_NAMES.
const O_NUMERIC: usize = 0;
const O_CONNECTION: usize = 1;
const O_SERVICE: usize = 2;
const O_SCHEDULER: usize = 3;
const O_PERSISTENT: usize = 4;
const O_NETMASK: usize = 5;
const O_SERVER: usize = 6;
const O_FORWARD: usize = 7;
const O_WEIGHT: usize = 8;
const O_UTHRESHOLD: usize = 9;
const O_LTHRESHOLD: usize = 10;
const O_MCAST: usize = 11;
const O_TIMEOUT: usize = 12;
const O_DAEMON: usize = 13;
const O_STATS: usize = 14;
const O_RATE: usize = 15;
const O_THRESHOLDS: usize = 16;
const O_PERSISTENTCONN: usize = 17;
const O_NOSORT: usize = 18;
const O_SYNCID: usize = 19;
const O_EXACT: usize = 20;
const O_SCHED_FLAGS: usize = 23;
const O_MCAST_GROUP: usize = 24;
const O_MCAST_PORT: usize = 25;
const O_MCAST_TTL: usize = 26;
const O_SYNC_MAXLEN: usize = 27;
const O_TUN_INFO: usize = 28;
const O_TUN_TYPE: usize = 29;
const O_TUN_PORT: usize = 30;
const O_TUN_NOCSUM: usize = 31;
const O_TUN_CSUM: usize = 32;
const O_TUN_REMCSUM: usize = 33;

#[derive(Copy, Clone, PartialEq, Eq)]
enum Arity {
    None,
    Required,
    Optional,
}

/// Every option ipvsadm knows: (long name, short letter, arity).
const OPTIONS: &[(&str, char, Arity)] = &[
    ("add-service", 'A', Arity::None),
    ("edit-service", 'E', Arity::None),
    ("delete-service", 'D', Arity::None),
    ("clear", 'C', Arity::None),
    ("list", 'L', Arity::None),
    ("", 'l', Arity::None),
    ("zero", 'Z', Arity::None),
    ("add-server", 'a', Arity::None),
    ("edit-server", 'e', Arity::None),
    ("delete-server", 'd', Arity::None),
    ("set", '\0', Arity::None),
    ("help", 'h', Arity::None),
    ("version", 'v', Arity::None),
    ("restore", 'R', Arity::None),
    ("save", 'S', Arity::None),
    ("start-daemon", '\0', Arity::Required),
    ("stop-daemon", '\0', Arity::Required),
    ("tcp-service", 't', Arity::Required),
    ("udp-service", 'u', Arity::Required),
    ("sctp-service", '\0', Arity::Required),
    ("fwmark-service", 'f', Arity::Required),
    ("scheduler", 's', Arity::Required),
    ("persistent", 'p', Arity::Optional),
    ("netmask", 'M', Arity::Required),
    ("real-server", 'r', Arity::Required),
    ("masquerading", 'm', Arity::None),
    ("ipip", 'i', Arity::None),
    ("gatewaying", 'g', Arity::None),
    ("weight", 'w', Arity::Required),
    ("u-threshold", 'x', Arity::Required),
    ("l-threshold", 'y', Arity::Required),
    ("numeric", 'n', Arity::None),
    ("connection", 'c', Arity::None),
    ("mcast-interface", '\0', Arity::Required),
    ("syncid", '\0', Arity::Required),
    ("timeout", '\0', Arity::None),
    ("daemon", '\0', Arity::None),
    ("stats", '\0', Arity::None),
    ("rate", '\0', Arity::None),
    ("thresholds", '\0', Arity::None),
    ("persistent-conn", '\0', Arity::None),
    ("nosort", '\0', Arity::None),
    ("sort", '\0', Arity::None),
    ("exact", 'X', Arity::None),
    ("ipv6", '6', Arity::None),
    ("ops", 'o', Arity::None),
    ("pe", '\0', Arity::Required),
    ("sched-flags", 'b', Arity::Required),
    ("mcast-group", '\0', Arity::Required),
    ("mcast-port", '\0', Arity::Required),
    ("mcast-ttl", '\0', Arity::Required),
    ("sync-maxlen", '\0', Arity::Required),
    ("tun-info", '\0', Arity::None),
    ("tun-type", '\0', Arity::Required),
    ("tun-port", '\0', Arity::Required),
    ("tun-nocsum", '\0', Arity::None),
    ("tun-csum", '\0', Arity::None),
    ("tun-remcsum", '\0', Arity::None),
];

/// One option as written: its table entry (long name or short letter), how it was spelled
/// (for messages) and its argument.
struct Item {
    long: &'static str,
    short: char,
    spelled: String,
    value: Option<String>,
}

/// Splits an argument vector popt's way: `--long`, `--long=value`, `--long value`,
/// bundled short options (`-Ln`), `-tVALUE` or `-t VALUE`; everything else is positional.
fn tokenize<S: AsRef<str>>(args: &[S]) -> Result<(Vec<Item>, Vec<String>), IpvsError> {
    let mut items = Vec::new();
    let mut positional = Vec::new();
    let mut i = 0;
    let next_value = |i: &mut usize, optional: bool| -> Option<String> {
        let next = args.get(*i + 1)?.as_ref();
        if optional && next.starts_with('-') {
            return None;
        }
        *i += 1;
        Some(next.to_string())
    };
    while i < args.len() {
        let a = args[i].as_ref();
        if a == "--" {
            positional.extend(args[i + 1..].iter().map(|s| s.as_ref().to_string()));
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let &(lname, short, arity) = OPTIONS
                .iter()
                .find(|o| !o.0.is_empty() && o.0 == name)
                .ok_or_else(|| usage(format!("{a}: unknown option")))?;
            let value = match arity {
                Arity::None if inline.is_some() => {
                    return Err(usage(format!("--{name}: option does not take an argument")))
                }
                Arity::None => None,
                Arity::Required => Some(
                    inline
                        .or_else(|| next_value(&mut i, false))
                        .ok_or_else(|| usage(format!("--{name}: missing argument")))?,
                ),
                Arity::Optional => inline.or_else(|| next_value(&mut i, true)),
            };
            items.push(Item {
                long: lname,
                short,
                spelled: format!("--{name}"),
                value,
            });
        } else if a.len() > 1 && a.starts_with('-') {
            let letters = &a[1..];
            for (k, c) in letters.char_indices() {
                let &(lname, short, arity) = OPTIONS
                    .iter()
                    .find(|o| o.1 == c && c != '\0')
                    .ok_or_else(|| usage(format!("-{c}: unknown option")))?;
                let rest = &letters[k + c.len_utf8()..];
                let (value, done) = match arity {
                    Arity::None => (None, false),
                    Arity::Required if !rest.is_empty() => (Some(rest.to_string()), true),
                    Arity::Required => (
                        Some(
                            next_value(&mut i, false)
                                .ok_or_else(|| usage(format!("-{c}: missing argument")))?,
                        ),
                        true,
                    ),
                    Arity::Optional if !rest.is_empty() => (Some(rest.to_string()), true),
                    Arity::Optional => (next_value(&mut i, true), true),
                };
                items.push(Item {
                    long: lname,
                    short,
                    spelled: format!("-{c}"),
                    value,
                });
                if done {
                    break;
                }
            }
        } else {
            positional.push(a.to_string());
        }
        i += 1;
    }
    Ok((items, positional))
}

/// ipvsadm's `string_to_number`: decimal, within `min..=max`.
fn number(s: &str, min: i64, max: i64) -> Option<i64> {
    s.parse::<i64>().ok().filter(|n| (min..=max).contains(n))
}

/// ipvsadm's `parse_service` without name resolution: `ADDR`, `ADDR:PORT` or
/// `[V6ADDR]:PORT`. Returns the address and the port if one was written.
pub fn parse_address_port(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if s.is_empty() || s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = |p: &str| number(p, 0, 65_535).map(|n| n as u16);
    if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest.split_once(']')?;
        let p = p.strip_prefix(':')?;
        let addr: std::net::Ipv6Addr = a.parse().ok()?;
        return Some((IpAddr::V6(addr), Some(port(p)?)));
    }
    if let Ok(a) = s.parse::<std::net::Ipv6Addr>() {
        return Some((IpAddr::V6(a), None));
    }
    match s.rsplit_once(':') {
        Some((a, p)) => Some((IpAddr::V4(a.parse().ok()?), Some(port(p)?))),
        None => Some((IpAddr::V4(s.parse().ok()?), None)),
    }
}

/// Parses one ipvsadm argument vector, without the program name (`["-A", "-t",
/// "10.0.0.1:80", "-s", "rr"]`). A leading `ipvsadm` word is skipped.
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<IpvsCommand, IpvsError> {
    let args = match args.first() {
        Some(a) if a.as_ref() == "ipvsadm" => &args[1..],
        _ => args,
    };
    let (items, positional) = tokenize(args)?;
    let mut items = items.into_iter();
    let first = items.next().ok_or_else(|| usage("no command given"))?;
    let mut role = None;
    let cmd = match (first.short, first.long) {
        ('A', _) => Cmd::Add,
        ('E', _) => Cmd::Edit,
        ('D', _) => Cmd::Del,
        ('a', _) => Cmd::AddDest,
        ('e', _) => Cmd::EditDest,
        ('d', _) => Cmd::DelDest,
        ('C', _) => Cmd::Flush,
        ('L' | 'l', _) => Cmd::List,
        ('Z', _) => Cmd::Zero,
        ('R', _) => Cmd::Restore,
        ('S', _) => Cmd::Save,
        ('h', _) => Cmd::Help,
        ('v', _) => Cmd::Version,
        (_, "set") => Cmd::Timeout,
        (_, "start-daemon" | "stop-daemon") => {
            let start = first.long == "start-daemon";
            role = Some(match first.value.as_deref() {
                Some("master") => SyncRole::Master,
                Some("backup") => SyncRole::Backup,
                // ipvsadm's two messages, as they are.
                _ if start => return Err(usage("illegal start-daemon parameter specified")),
                _ => return Err(usage("illegal start_daemon specified")),
            });
            if start {
                Cmd::StartDaemon
            } else {
                Cmd::StopDaemon
            }
        }
        _ => {
            return Err(usage(format!(
                "{}: the first option must be a command (-A -E -D -a -e -d -L -S -R -Z -C --set)",
                first.spelled
            )))
        }
    };

    let mut p = OptionValues::default();
    let mut options = 0u64;
    for it in items {
        let opt = match (it.short, it.long) {
            ('t' | 'u', _) | (_, "sctp-service") => O_SERVICE,
            ('f', _) => O_SERVICE,
            ('s', _) => O_SCHEDULER,
            ('p', _) => O_PERSISTENT,
            ('M', _) => O_NETMASK,
            ('r', _) => O_SERVER,
            ('m' | 'i' | 'g', _) => O_FORWARD,
            ('w', _) => O_WEIGHT,
            ('x', _) => O_UTHRESHOLD,
            ('y', _) => O_LTHRESHOLD,
            ('n', _) => O_NUMERIC,
            ('c', _) => O_CONNECTION,
            ('X', _) => O_EXACT,
            ('b', _) => O_SCHED_FLAGS,
            (_, "timeout") => O_TIMEOUT,
            (_, "daemon") => O_DAEMON,
            (_, "stats") => O_STATS,
            (_, "rate") => O_RATE,
            (_, "thresholds") => O_THRESHOLDS,
            (_, "persistent-conn") => O_PERSISTENTCONN,
            (_, "nosort") => O_NOSORT,
            (_, "tun-info") => O_TUN_INFO,
            (_, "tun-type") => O_TUN_TYPE,
            (_, "tun-port") => O_TUN_PORT,
            (_, "tun-nocsum") => O_TUN_NOCSUM,
            (_, "tun-csum") => O_TUN_CSUM,
            (_, "tun-remcsum") => O_TUN_REMCSUM,
            (_, "sort") => continue,
            ('6', _) => {
                if p.fwmark.is_none() {
                    return Err(usage("-6 used before -f"));
                }
                p.ipv6 = true;
                continue;
            }
            ('o', _) => {
                return Err(usage(
                    "-o: one-packet scheduling is not supported by fastlb",
                ))
            }
            (_, "pe") => {
                return Err(usage(format!(
                    "--pe {}: persistence engines are not supported by fastlb",
                    it.value.unwrap_or_default()
                )))
            }
            (_, "mcast-interface") => O_MCAST,
            (_, "syncid") => O_SYNCID,
            (_, "mcast-group") => O_MCAST_GROUP,
            (_, "mcast-port") => O_MCAST_PORT,
            (_, "mcast-ttl") => O_MCAST_TTL,
            (_, "sync-maxlen") => O_SYNC_MAXLEN,
            _ => return Err(usage(format!("invalid option `{}'", it.spelled))),
        };
        let bit = 1u64 << opt;
        if options & bit != 0 {
            return Err(usage(format!(
                "multiple '{}' options specified",
                OPT_NAMES[opt]
            )));
        }
        options |= bit;
        p.take(&it, opt)?;
    }

    // ipvsadm's generic_opt_check.
    let table = cmd.table();
    let mut exclusive: Option<usize> = None;
    for (j, &rule) in table.iter().enumerate() {
        let given = options & (1 << j) != 0;
        match (rule, given) {
            (b'+', false) => {
                return Err(usage(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    OPT_NAMES[j],
                    cmd.name()
                )))
            }
            (b'x', true) => {
                return Err(usage(format!(
                    "Illegal '{}' option with the '{}' command",
                    OPT_NAMES[j],
                    cmd.name()
                )))
            }
            (b'1', true) => {
                if let Some(last) = exclusive {
                    return Err(usage(format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        OPT_NAMES[j],
                        OPT_NAMES[last],
                        cmd.name()
                    )));
                }
                exclusive = Some(j);
            }
            _ => {}
        }
    }

    if cmd == Cmd::Timeout {
        if positional.len() < 3 {
            return Err(usage("--set option requires 3 timeout values"));
        }
        let t = |s: &str| {
            number(s, 0, i64::from(MAX_TIMEOUT_SECS))
                .map(|n| n as u32)
                .ok_or_else(|| usage(format!("invalid timeout value `{s}' specified")))
        };
        let (tcp, tcpfin, udp) = (t(&positional[0])?, t(&positional[1])?, t(&positional[2])?);
        if let Some(extra) = positional.get(3) {
            return Err(usage(format!("unexpected argument {extra}")));
        }
        return Ok(IpvsCommand::SetTimeouts { tcp, tcpfin, udp });
    }
    if let Some(extra) = positional.first() {
        return Err(usage(format!("unexpected argument {extra}")));
    }

    let key = p.key();
    Ok(match cmd {
        Cmd::Add | Cmd::Edit => {
            let spec = p.service_spec(key.expect("service-address is compulsory"))?;
            if cmd == Cmd::Add {
                IpvsCommand::AddService(spec)
            } else {
                IpvsCommand::EditService(spec)
            }
        }
        Cmd::Del => IpvsCommand::DeleteService(key.expect("service-address is compulsory")),
        Cmd::AddDest | Cmd::EditDest => {
            let service = key.expect("service-address is compulsory");
            let server = p.real_server(&service, options)?;
            if cmd == Cmd::AddDest {
                IpvsCommand::AddServer { service, server }
            } else {
                IpvsCommand::EditServer { service, server }
            }
        }
        Cmd::DelDest => {
            let service = key.expect("service-address is compulsory");
            let (addr, port) = p.real_addr(&service);
            IpvsCommand::DeleteServer {
                service,
                addr,
                port,
            }
        }
        Cmd::Flush => IpvsCommand::Clear,
        Cmd::List => {
            let has = |o: usize| options & (1 << o) != 0;
            if (has(O_CONNECTION) || has(O_TIMEOUT) || has(O_DAEMON))
                && (has(O_STATS) || has(O_RATE) || has(O_THRESHOLDS))
                || (has(O_TIMEOUT) || has(O_DAEMON)) && has(O_PERSISTENTCONN)
            {
                return Err(usage("options conflicts in the list command"));
            }
            IpvsCommand::List(ListOptions {
                service: key,
                numeric: has(O_NUMERIC),
                connections: has(O_CONNECTION),
                timeout: has(O_TIMEOUT),
                daemon: has(O_DAEMON),
                stats: has(O_STATS),
                rate: has(O_RATE),
                thresholds: has(O_THRESHOLDS),
                persistent_conn: has(O_PERSISTENTCONN),
                exact: has(O_EXACT),
                nosort: has(O_NOSORT),
                tun_info: has(O_TUN_INFO),
            })
        }
        Cmd::Save => IpvsCommand::Save {
            numeric: options & (1 << O_NUMERIC) != 0,
        },
        Cmd::Restore => IpvsCommand::Restore,
        Cmd::Zero => IpvsCommand::Zero(key),
        Cmd::Help => IpvsCommand::Help,
        Cmd::Version => IpvsCommand::Version,
        Cmd::StartDaemon => {
            let mut config = p.daemon;
            if config.mcast_ifn.is_empty() {
                // ipvsadm's DEF_MCAST_IFN.
                config.mcast_ifn = DEFAULT_INTERFACE.to_string();
            }
            IpvsCommand::StartDaemon {
                role: role.expect("set with the command"),
                config,
            }
        }
        Cmd::StopDaemon => IpvsCommand::StopDaemon(role.expect("set with the command")),
        Cmd::Timeout => unreachable!("handled above"),
    })
}

/// Option values as written, resolved once the whole line is read (ipvsadm resolves some
/// while reading, which makes `-M` and `-r` depend on coming after `-t`; fastlb does not).
#[derive(Default)]
struct OptionValues {
    tuple: Option<(Protocol, IpAddr, Option<u16>)>,
    fwmark: Option<u32>,
    ipv6: bool,
    scheduler: Option<String>,
    persistent: Option<Option<String>>,
    netmask: Option<String>,
    real: Option<(IpAddr, Option<u16>)>,
    method: Option<ForwardMethod>,
    weight: Option<i32>,
    upper: Option<u32>,
    lower: Option<u32>,
    sched_flags: Option<String>,
    daemon: DaemonConfig,
}

impl OptionValues {
    fn take(&mut self, it: &Item, opt: usize) -> Result<(), IpvsError> {
        let v = it.value.as_deref().unwrap_or("");
        match opt {
            O_SERVICE if it.short == 'f' => {
                let mark = number(v, 1, i64::from(u32::MAX))
                    .ok_or_else(|| usage(format!("invalid fwmark value `{v}' specified")))?;
                self.fwmark = Some(mark as u32);
            }
            O_SERVICE => {
                let protocol = match it.short {
                    't' => Protocol::Tcp,
                    'u' => Protocol::Udp,
                    _ => return Err(usage("--sctp-service: SCTP is not supported by fastlb")),
                };
                let (addr, port) = parse_address_port(v)
                    .ok_or_else(|| usage("illegal virtual server address[:port] specified"))?;
                self.tuple = Some((protocol, addr, port));
            }
            O_SCHEDULER => self.scheduler = Some(v.to_string()),
            O_PERSISTENT => self.persistent = Some(it.value.clone()),
            O_NETMASK => self.netmask = Some(v.to_string()),
            O_SERVER => {
                self.real = Some(
                    parse_address_port(v)
                        .ok_or_else(|| usage("illegal real server address[:port] specified"))?,
                );
            }
            O_FORWARD => {
                self.method = Some(match it.short {
                    'm' => ForwardMethod::Masquerade,
                    'i' => ForwardMethod::Tunnel,
                    _ => ForwardMethod::DirectRouting,
                });
            }
            O_WEIGHT => {
                self.weight = Some(
                    number(v, 0, i64::from(MAX_WEIGHT))
                        .ok_or_else(|| usage("illegal weight specified"))?
                        as i32,
                );
            }
            O_UTHRESHOLD => {
                self.upper = Some(
                    number(v, 0, i64::from(i32::MAX))
                        .ok_or_else(|| usage("illegal u_threshold specified"))?
                        as u32,
                );
            }
            O_LTHRESHOLD => {
                self.lower = Some(
                    number(v, 0, i64::from(i32::MAX))
                        .ok_or_else(|| usage("illegal l_threshold specified"))?
                        as u32,
                );
            }
            O_SCHED_FLAGS => self.sched_flags = Some(v.to_string()),
            O_MCAST => {
                // ipvsadm copies at most IP_VS_IFNAME_MAXLEN - 1 bytes; fastlb refuses
                // a longer name rather than cut it.
                if let Some(fault) = crate::service::config::interface_name_fault(v) {
                    return Err(usage(format!("illegal mcast-interface specified: {fault}")));
                }
                self.daemon.mcast_ifn = v.to_string();
            }
            O_SYNCID => {
                self.daemon.syncid =
                    number(v, 0, 255).ok_or_else(|| usage("illegal syncid specified"))? as u8;
            }
            O_MCAST_GROUP => {
                let group = if v.contains(':') {
                    v.parse::<std::net::Ipv6Addr>()
                        .ok()
                        .filter(|a| a.is_multicast())
                        .map(IpAddr::V6)
                        .ok_or_else(|| usage(format!("invalid IPv6 mcast-group `{v}'")))?
                } else {
                    v.parse::<Ipv4Addr>()
                        .ok()
                        .filter(|a| a.is_multicast())
                        .map(IpAddr::V4)
                        .ok_or_else(|| usage(format!("invalid IPv4 mcast-group `{v}'")))?
                };
                self.daemon.mcast_group = Some(group);
            }
            O_MCAST_PORT => {
                self.daemon.mcast_port = number(v, 1, 65_535)
                    .ok_or_else(|| usage("illegal mcast-port specified"))?
                    as u16;
            }
            O_MCAST_TTL => {
                self.daemon.mcast_ttl =
                    number(v, 1, 255).ok_or_else(|| usage("illegal mcast-ttl specified"))? as u8;
            }
            O_SYNC_MAXLEN => {
                self.daemon.sync_maxlen = number(v, 1, 65_535 - 20 - 8)
                    .ok_or_else(|| usage("illegal sync-maxlen specified"))?
                    as u16;
            }
            O_TUN_TYPE => match v {
                "ipip" => {}
                "gue" | "gre" => {
                    return Err(usage(format!(
                        "tunnel type `{v}' is not supported by fastlb (only ipip)"
                    )))
                }
                _ => return Err(usage("illegal tunnel type specified")),
            },
            O_TUN_PORT => {
                number(v, 1, 65_535).ok_or_else(|| usage("illegal tunnel port specified"))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn key(&self) -> Option<ServiceKey> {
        if let Some(mark) = self.fwmark {
            return Some(ServiceKey::Fwmark {
                mark,
                ipv6: self.ipv6,
            });
        }
        self.tuple.map(|(protocol, addr, port)| ServiceKey::Tuple {
            protocol,
            addr,
            port: port.unwrap_or(0),
        })
    }

    fn service_spec(&self, key: ServiceKey) -> Result<ServiceSpec, IpvsError> {
        let persistence = match &self.persistent {
            None => None,
            Some(t) => {
                let timeout_secs = match t {
                    None => IPVSADM_DEFAULT_PERSISTENCE_SECS,
                    Some(s) => number(s, 1, i64::from(MAX_TIMEOUT_SECS))
                        .ok_or_else(|| usage(format!("invalid timeout value `{s}' specified")))?
                        as u32,
                };
                let ipv6 = key.is_ipv6();
                let netmask = match &self.netmask {
                    None if ipv6 => 128,
                    None => 32,
                    Some(m) if ipv6 => number(m, 1, 128)
                        .ok_or_else(|| usage("illegal ipv6 netmask specified"))?
                        as u8,
                    Some(m) => dotted_to_prefix(m)
                        .ok_or_else(|| usage("illegal virtual server persistent mask specified"))?,
                };
                Some(Persistence {
                    timeout_secs,
                    netmask,
                })
            }
        };
        if let ServiceKey::Tuple { port: 0, .. } = key {
            if persistence.is_none() {
                return Err(usage("Zero port specified for non-persistent service"));
            }
        }
        let scheduler: SchedulerKind = match &self.scheduler {
            None => SchedulerKind::Wlc,
            Some(s) => s
                .parse()
                .map_err(|_| usage("Scheduler or persistence engine not found"))?,
        };
        let flags = match &self.sched_flags {
            None => SchedFlags::default(),
            Some(f) => parse_sched_flags(scheduler, f)?,
        };
        Ok(ServiceSpec {
            key,
            scheduler,
            flags,
            persistence,
        })
    }

    /// `-r` with ipvsadm's port default: the service's port when none is written.
    fn real_addr(&self, service: &ServiceKey) -> (IpAddr, u16) {
        let (addr, port) = self.real.expect("real-server is compulsory");
        let service_port = match *service {
            ServiceKey::Tuple { port, .. } => port,
            ServiceKey::Fwmark { .. } => 0,
        };
        (addr, port.unwrap_or(service_port))
    }

    fn real_server(&self, service: &ServiceKey, options: u64) -> Result<RealServer, IpvsError> {
        let (addr, mut port) = self.real_addr(service);
        let method = self.method.unwrap_or(ForwardMethod::DirectRouting);
        if let ServiceKey::Tuple { port: vport, .. } = *service {
            // DR and TUN cannot change the port: the packet keeps the client's.
            if method != ForwardMethod::Masquerade {
                port = vport;
            }
        }
        if addr.is_ipv6() != service.is_ipv6() && method != ForwardMethod::Tunnel {
            return Err(usage(
                "Different address family is allowed only for tunneling servers",
            ));
        }
        let tun_opts = (1 << O_TUN_TYPE)
            | (1 << O_TUN_PORT)
            | (1 << O_TUN_NOCSUM)
            | (1 << O_TUN_CSUM)
            | (1 << O_TUN_REMCSUM);
        if options & tun_opts != 0 && method != ForwardMethod::Tunnel {
            return Err(usage("Tunnel options conflict with forward method"));
        }
        // Only ipip gets here (gue and gre are refused while reading --tun-type), and ipip
        // takes none of the other tunnel options.
        for o in [O_TUN_PORT, O_TUN_NOCSUM, O_TUN_CSUM, O_TUN_REMCSUM] {
            if options & (1 << o) != 0 {
                return Err(usage(format!(
                    "Illegal '{}' option with the 'ipip' tunnel type",
                    OPT_NAMES[o]
                )));
            }
        }
        Ok(RealServer {
            addr,
            port,
            weight: self.weight.unwrap_or(1),
            method,
            upper_threshold: self.upper.unwrap_or(0),
            lower_threshold: self.lower.unwrap_or(0),
        })
    }
}

/// A dotted IPv4 netmask to a prefix length; `None` unless the mask is contiguous.
fn dotted_to_prefix(s: &str) -> Option<u8> {
    let m = u32::from(s.parse::<Ipv4Addr>().ok()?);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// A prefix length as a dotted IPv4 netmask (how `-S` writes `-M`).
pub(super) fn prefix_to_dotted(len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0))
}

/// ipvsadm's `parse_sched_flags`: a comma-separated list, checked against the scheduler
/// (wlc when `-s` is not given).
fn parse_sched_flags(scheduler: SchedulerKind, list: &str) -> Result<SchedFlags, IpvsError> {
    let mut f = SchedFlags::default();
    for flag in list.split(',').filter(|s| !s.is_empty()) {
        let incompatible = || usage(format!("incompatible scheduler flag `{flag}'"));
        let (sh, mh) = (
            scheduler == SchedulerKind::Sh,
            scheduler == SchedulerKind::Mh,
        );
        match flag {
            "sh-fallback" if sh => f.sh_fallback = true,
            "sh-port" if sh => f.sh_port = true,
            "mh-fallback" if mh => f.mh_fallback = true,
            "mh-port" if mh => f.mh_port = true,
            "sh-fallback" | "sh-port" | "mh-fallback" | "mh-port" => return Err(incompatible()),
            "flag-1" if sh => f.sh_fallback = true,
            "flag-2" if sh => f.sh_port = true,
            "flag-1" if mh => f.mh_fallback = true,
            "flag-2" if mh => f.mh_port = true,
            // ipvsadm passes these to any scheduler, which ignores them; fastlb has nowhere
            // to keep them, so it says so rather than drop them.
            "flag-1" | "flag-2" | "flag-3" => {
                return Err(usage(format!(
                    "scheduler flag `{flag}' means nothing to {scheduler} in fastlb"
                )))
            }
            _ => return Err(usage(format!("invalid scheduler flag `{flag}'"))),
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::super::examples::{cmd, run, tcp};
    use super::*;
    use crate::service::Config;

    #[test]
    fn man_page_tunnel_examples_are_refused_by_name() {
        // EXAMPLES 3 and 4 use GUE and GRE tunnels, which fastlb does not do.
        let e = cmd("-a -t 207.175.44.110:80 -r 192.168.10.1:80 -i --tun-type gue --tun-port 6080 --tun-nocsum").unwrap_err();
        assert!(e.to_string().contains("`gue' is not supported"), "{e}");
        let e =
            cmd("-a -t 10.0.0.1:80 -r 192.168.11.1:80 -i --tun-type gre --tun-csum").unwrap_err();
        assert!(e.to_string().contains("`gre' is not supported"), "{e}");
        // The ipip type, which ipvsadm -S prints for tunnels, is fine.
        let c = cmd("-a -t 10.0.0.1:80 -r 192.168.11.1:80 -i --tun-type ipip").unwrap();
        assert!(
            matches!(c, IpvsCommand::AddServer { server, .. } if server.method == ForwardMethod::Tunnel)
        );
    }

    #[test]
    fn sync_daemon_commands_as_ipvsadm_parses_them() {
        let c = cmd("--start-daemon master --mcast-interface eth1 --syncid 7 --sync-maxlen 1200 --mcast-group 239.1.2.3 --mcast-port 9000 --mcast-ttl 2").unwrap();
        let IpvsCommand::StartDaemon { role, config } = c else {
            panic!("{c:?}")
        };
        assert_eq!(role, SyncRole::Master);
        assert_eq!(
            config,
            DaemonConfig {
                mcast_ifn: "eth1".into(),
                syncid: 7,
                sync_maxlen: 1200,
                mcast_group: Some("239.1.2.3".parse().unwrap()),
                mcast_port: 9000,
                mcast_ttl: 2,
            }
        );
        // ipvsadm's default interface.
        let c = cmd("--start-daemon backup").unwrap();
        assert!(
            matches!(c, IpvsCommand::StartDaemon { role: SyncRole::Backup, config } if config.mcast_ifn == "eth0")
        );
        assert_eq!(
            cmd("--stop-daemon backup").unwrap(),
            IpvsCommand::StopDaemon(SyncRole::Backup)
        );
        for (line, msg) in [
            (
                "--start-daemon primary",
                "illegal start-daemon parameter specified",
            ),
            ("--stop-daemon x", "illegal start_daemon specified"),
            (
                "--start-daemon master --syncid 256",
                "illegal syncid specified",
            ),
            (
                "--start-daemon master --mcast-group 10.0.0.1",
                "invalid IPv4 mcast-group `10.0.0.1'",
            ),
            (
                "--start-daemon master --mcast-group 2001:db8::1",
                "invalid IPv6 mcast-group `2001:db8::1'",
            ),
            (
                "--start-daemon master --mcast-port 0",
                "illegal mcast-port specified",
            ),
            (
                "--start-daemon master --mcast-ttl 256",
                "illegal mcast-ttl specified",
            ),
            (
                "--start-daemon master --sync-maxlen 65508",
                "illegal sync-maxlen specified",
            ),
            (
                "--stop-daemon master --sync-maxlen 1000",
                "Illegal 'sync-maxlen' option with the 'stop-daemon' command",
            ),
            (
                "--start-daemon master -n",
                "Illegal 'numeric' option with the 'start-daemon' command",
            ),
            (
                "-L --daemon -c",
                "The option 'daemon' conflicts with the 'connection' option in the 'list' command",
            ),
            (
                "-L --daemon --stats",
                "options conflicts in the list command",
            ),
        ] {
            assert_eq!(cmd(line).unwrap_err().to_string(), msg, "{line}");
        }
        let IpvsCommand::List(o) = cmd("-L --daemon").unwrap() else {
            panic!()
        };
        assert!(o.daemon);
    }

    #[test]
    fn defaults_of_add_server() {
        let c = cmd("-a -t 10.0.0.1:80 -r 10.0.1.1").unwrap();
        assert_eq!(
            c,
            IpvsCommand::AddServer {
                service: tcp("10.0.0.1", 80),
                server: RealServer {
                    addr: "10.0.1.1".parse().unwrap(),
                    port: 80,
                    weight: 1,
                    method: ForwardMethod::DirectRouting,
                    upper_threshold: 0,
                    lower_threshold: 0,
                }
            }
        );
        // -g forces the service's port; -m keeps the written one.
        let IpvsCommand::AddServer { server, .. } =
            cmd("-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -g").unwrap()
        else {
            panic!()
        };
        assert_eq!(server.port, 80);
        let IpvsCommand::AddServer { server, .. } =
            cmd("--add-server --tcp-service 10.0.0.1:80 --real-server 10.0.1.1:8080 --masquerading --weight 7 -x 100 -y 50").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (
                server.port,
                server.weight,
                server.upper_threshold,
                server.lower_threshold
            ),
            (8080, 7, 100, 50)
        );
    }

    #[test]
    fn persistence_forms() {
        let spec = |line: &str| match cmd(line).unwrap() {
            IpvsCommand::AddService(s) => s,
            other => panic!("{other:?}"),
        };
        // -p without a value: ipvsadm 1.31 sends 6*60.
        assert_eq!(
            spec("-A -t 10.0.0.1:0 -p").persistence,
            Some(Persistence {
                timeout_secs: 360,
                netmask: 32
            })
        );
        // The next word is taken only if it does not start with '-'.
        let s = spec("-A -t 10.0.0.1:443 -p -s rr");
        assert_eq!(s.persistence.unwrap().timeout_secs, 360);
        assert_eq!(s.scheduler, SchedulerKind::Rr);
        assert_eq!(
            spec("-A -t 10.0.0.1:443 -p 600 -M 255.255.255.0").persistence,
            Some(Persistence {
                timeout_secs: 600,
                netmask: 24
            })
        );
        assert_eq!(
            spec("-A -t 10.0.0.1:443 -p600")
                .persistence
                .unwrap()
                .timeout_secs,
            600
        );
        assert_eq!(
            spec("-A -t 10.0.0.1:443 --persistent=900")
                .persistence
                .unwrap()
                .timeout_secs,
            900
        );
        assert_eq!(
            spec("-A -t [2001:db8::1]:443 -p 60 -M 64")
                .persistence
                .unwrap()
                .netmask,
            64
        );
        assert_eq!(
            cmd("-A -t 10.0.0.1:443 -p 0").unwrap_err(),
            usage("invalid timeout value `0' specified")
        );
        assert_eq!(
            cmd("-A -t 10.0.0.1:443 -p 60 -M 255.0.255.0").unwrap_err(),
            usage("illegal virtual server persistent mask specified")
        );
        assert_eq!(
            cmd("-A -t [2001:db8::1]:443 -p 60 -M 129").unwrap_err(),
            usage("illegal ipv6 netmask specified")
        );
    }

    #[test]
    fn ipvsadm_messages() {
        let e = |l: &str| cmd(l).unwrap_err().to_string();
        assert_eq!(
            e("-A -t 10.0.0.1"),
            "Zero port specified for non-persistent service"
        );
        assert_eq!(
            e("-A -s rr"),
            "You need to supply the 'service-address' option for the 'add-service' command"
        );
        assert_eq!(
            e("-A -t 10.0.0.1:80 -w 3"),
            "Illegal 'weight' option with the 'add-service' command"
        );
        assert_eq!(
            e("-a -t 10.0.0.1:80 -r 10.0.1.1 -w 70000"),
            "illegal weight specified"
        );
        assert_eq!(
            e("-a -t 10.0.0.1:80 -r 10.0.1.1 -w 1 -w 2"),
            "multiple 'weight' options specified"
        );
        assert_eq!(
            e("-a -t 10.0.0.1:80"),
            "You need to supply the 'real-server' option for the 'add-server' command"
        );
        assert_eq!(
            e("-A -t 10.0.0.1:80 -s foo"),
            "Scheduler or persistence engine not found"
        );
        assert_eq!(
            e("-A -t 10.0.0.1:80 -b sh-port"),
            "incompatible scheduler flag `sh-port'"
        );
        assert_eq!(
            e("-A -t 10.0.0.1:80 -s sh -b sh-spin"),
            "invalid scheduler flag `sh-spin'"
        );
        assert_eq!(
            e("-A -t bogus:80"),
            "illegal virtual server address[:port] specified"
        );
        assert_eq!(
            e("-a -t 10.0.0.1:80 -r 2001:db8::1 -m"),
            "Different address family is allowed only for tunneling servers"
        );
        assert_eq!(
            e("-a -t 10.0.0.1:80 -r 10.0.1.1 --tun-type ipip"),
            "Tunnel options conflict with forward method"
        );
        assert_eq!(
            e("-f 0 -A"),
            "-f: the first option must be a command (-A -E -D -a -e -d -L -S -R -Z -C --set)"
        );
        assert_eq!(e("-A -f 0"), "invalid fwmark value `0' specified");
        assert_eq!(e("-A -6 -f 1"), "-6 used before -f");
        assert_eq!(
            e("-L -c --timeout"),
            "The option 'timeout' conflicts with the 'connection' option in the 'list' command"
        );
        assert_eq!(e("--set 900 120"), "--set option requires 3 timeout values");
        assert_eq!(e("-C extra"), "unexpected argument extra");
        assert_eq!(e("-A -t 10.0.0.1:80 -q"), "-q: unknown option");
        assert_eq!(e("-A -t"), "-t: missing argument");
        assert_eq!(
            e("-A -u 10.0.0.1:53 -o"),
            "-o: one-packet scheduling is not supported by fastlb"
        );
    }

    #[test]
    fn list_save_zero_set() {
        assert_eq!(
            cmd("-Ln").unwrap(),
            IpvsCommand::List(ListOptions {
                numeric: true,
                ..ListOptions::default()
            })
        );
        let IpvsCommand::List(o) = cmd("-L -n -t 10.0.0.1:80 --stats --exact --sort").unwrap()
        else {
            panic!()
        };
        assert!(o.stats && o.exact && o.numeric && o.service == Some(tcp("10.0.0.1", 80)));
        let IpvsCommand::List(o) = cmd("-l --rate").unwrap() else {
            panic!()
        };
        assert!(o.rate);
        let IpvsCommand::List(o) = cmd("-L -c -n").unwrap() else {
            panic!()
        };
        assert!(o.connections);
        let IpvsCommand::List(o) = cmd("--list --timeout").unwrap() else {
            panic!()
        };
        assert!(o.timeout);
        let IpvsCommand::List(o) = cmd("-L --persistent-conn --thresholds").unwrap() else {
            panic!()
        };
        assert!(o.persistent_conn && o.thresholds);
        assert_eq!(cmd("-S -n").unwrap(), IpvsCommand::Save { numeric: true });
        assert_eq!(cmd("--save").unwrap(), IpvsCommand::Save { numeric: false });
        assert_eq!(cmd("-R").unwrap(), IpvsCommand::Restore);
        assert_eq!(cmd("-C").unwrap(), IpvsCommand::Clear);
        assert_eq!(cmd("--clear").unwrap(), IpvsCommand::Clear);
        assert_eq!(cmd("-Z").unwrap(), IpvsCommand::Zero(None));
        assert_eq!(
            cmd("-Z -t 10.0.0.1:80").unwrap(),
            IpvsCommand::Zero(Some(tcp("10.0.0.1", 80)))
        );
        assert_eq!(
            cmd("--set 900 0 300").unwrap(),
            IpvsCommand::SetTimeouts {
                tcp: 900,
                tcpfin: 0,
                udp: 300
            }
        );
        let mut c = Config::default();
        run(&mut c, "--set 1000 0 60").unwrap();
        assert_eq!(
            (c.timeouts.tcp, c.timeouts.tcpfin, c.timeouts.udp),
            (1000, 120, 60)
        );
        assert_eq!(
            run(&mut c, "-Z -t 10.0.0.1:80"),
            Err(IpvsError::NoSuchService)
        );
        assert_eq!(run(&mut c, "-L -n"), Err(IpvsError::NotAChange));
    }

    #[test]
    fn netmask_conversions() {
        assert_eq!(dotted_to_prefix("255.255.255.255"), Some(32));
        assert_eq!(dotted_to_prefix("255.255.240.0"), Some(20));
        assert_eq!(dotted_to_prefix("0.0.0.0"), Some(0));
        assert_eq!(dotted_to_prefix("255.0.255.0"), None);
        assert_eq!(dotted_to_prefix("24"), None);
        for len in 0..=32u8 {
            assert_eq!(
                dotted_to_prefix(&prefix_to_dotted(len).to_string()),
                Some(len)
            );
        }
    }
}
