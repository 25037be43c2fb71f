//! Configuration errors and the validation pass every configuration source goes through.
//!
//! Validation works on the finished [`Config`] model, not on any file format, so the TOML
//! reader, the `ipvsadm` rule reader, the keepalived reader and live `ctl` changes all refuse
//! the same things. It reports *where in the model* a fault lies ([`Fault`]); each format then
//! turns that into a file line with [`Invalid::into_config_error`].

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::service::{Config, Persistence, RealServer, SchedulerKind, ServiceKey, VirtualService};

/// Longest persistence or protocol timeout ipvsadm accepts: 31 days, in seconds.
pub const MAX_TIMEOUT_SECS: u32 = 86_400 * 31;
/// Smallest Maglev table size.
pub const MIN_MH_TABLE_SIZE: u32 = 251;
/// Largest Maglev table size.
pub const MAX_MH_TABLE_SIZE: u32 = 65_521;
/// Largest real server weight (ipvsadm refuses more).
pub const MAX_WEIGHT: i32 = 65_535;

/// A configuration that cannot be used, with the file, line and field at fault.
///
/// Displays as `fastlb.toml:12: service "TCP 10.0.0.1:80" real 2: field `weight`: must be
/// 0..=65535`; parts that do not apply (no line for an unreadable file, no field for a
/// syntax error) are left out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, as the caller named it.
    pub path: PathBuf,
    /// 1-based line number; 0 when the fault has no line (the file could not be read).
    pub line: usize,
    /// What the line belongs to, such as `service "TCP 10.0.0.1:80" real 2`; may be empty.
    pub context: String,
    /// The field or token at fault, if one can be named.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error on `line` of `path` with no context and no field.
    pub fn at_line(path: &Path, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.to_path_buf(),
            line,
            context: String::new(),
            field: None,
            message: message.into(),
        }
    }

    /// The same error naming `field`.
    pub fn with_field(mut self, field: impl Into<String>) -> ConfigError {
        self.field = Some(field.into());
        self
    }

    /// The same error with `context` (what the line belongs to).
    pub fn with_context(mut self, context: impl Into<String>) -> ConfigError {
        self.context = context.into();
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        f.write_str(": ")?;
        if !self.context.is_empty() {
            write!(f, "{}: ", self.context)?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Where in a [`Config`] a validation fault lies. Indices are 0-based positions in the
/// model's vectors.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `config.services[i]`.
    Service(usize),
    /// `config.services[i].reals[j]`.
    Real(usize, usize),
    /// `config.classifiers[i]`.
    Classifier(usize),
    /// `config.timeouts`.
    Timeouts,
}

/// A validation failure: where, which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// Where the fault lies.
    pub at: Fault,
    /// The field at fault, named as fastlb's TOML names it.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Invalid {
    fn new(at: Fault, field: &'static str, message: impl Into<String>) -> Invalid {
        Invalid {
            at,
            field,
            message: message.into(),
        }
    }

    /// Human description of [`Invalid::at`] in `config`, e.g. `service "TCP 10.0.0.1:80"
    /// real 2` (real servers and classifiers numbered from 1).
    pub fn context(&self, config: &Config) -> String {
        let svc = |i: usize| match config.services.get(i) {
            Some(s) => format!("service \"{}\"", s.key),
            None => format!("service {}", i + 1),
        };
        match self.at {
            Fault::Service(i) => svc(i),
            Fault::Real(i, j) => format!("{} real {}", svc(i), j + 1),
            Fault::Classifier(i) => format!("classifier {}", i + 1),
            Fault::Timeouts => "timeouts".to_string(),
        }
    }

    /// A [`ConfigError`] for this fault on `line` of `path`.
    pub fn into_config_error(self, config: &Config, path: &Path, line: usize) -> ConfigError {
        ConfigError {
            path: path.to_path_buf(),
            line,
            context: self.context(config),
            field: Some(self.field.to_string()),
            message: self.message,
        }
    }
}

/// Checks a whole configuration: every service ([`validate_service`]), no two services with
/// the same key, classifier rules that make sense and feed an existing fwmark service, and
/// protocol timeouts within ipvsadm's range.
///
/// A fwmark service without a classifier rule is allowed: it is simply never reached, which
/// is what an `ipvsadm -S` file (which cannot express classifier rules) gives.
pub fn validate(config: &Config) -> Result<(), Invalid> {
    for (i, svc) in config.services.iter().enumerate() {
        validate_service(svc, i)?;
        if let Some(first) = config.services[..i].iter().position(|s| s.key == svc.key) {
            return Err(Invalid::new(
                Fault::Service(i),
                "address",
                format!(
                    "duplicate service (already defined as service {})",
                    first + 1
                ),
            ));
        }
    }
    for (i, rule) in config.classifiers.iter().enumerate() {
        let at = Fault::Classifier(i);
        if rule.ports.0 > rule.ports.1 {
            return Err(Invalid::new(
                at,
                "ports",
                format!("empty range {}-{}", rule.ports.0, rule.ports.1),
            ));
        }
        if rule.mark == 0 {
            return Err(Invalid::new(at, "mark", "must be greater than 0"));
        }
        let ipv6 = rule.dst.addr.is_ipv6();
        let used = config.services.iter().any(|s| {
            s.key
                == ServiceKey::Fwmark {
                    mark: rule.mark,
                    ipv6,
                }
        });
        if !used {
            return Err(Invalid::new(
                at,
                "mark",
                format!(
                    "no {} fwmark service uses mark {}",
                    if ipv6 { "IPv6" } else { "IPv4" },
                    rule.mark
                ),
            ));
        }
    }
    let t = &config.timeouts;
    for (field, v) in [("tcp", t.tcp), ("tcpfin", t.tcpfin), ("udp", t.udp)] {
        if v == 0 || v > MAX_TIMEOUT_SECS {
            return Err(Invalid::new(
                Fault::Timeouts,
                field,
                format!("must be 1..={MAX_TIMEOUT_SECS} seconds"),
            ));
        }
    }
    Ok(())
}

/// Checks one service, reported as service `index`: the rules ipvsadm and the kernel
/// enforce, plus fastlb's own (Maglev table size).
///
/// - port 0 only with persistence (ipvsadm: "Zero port specified for non-persistent
///   service");
/// - fwmark greater than 0;
/// - persistence timeout 1..=31 days, netmask /0../32 for IPv4 and /1../128 for IPv6 (the
///   kernel refuses an IPv6 mask outside 1..=128);
/// - `sh-*` flags only with `sh`, `mh-*` flags only with `mh`;
/// - Maglev table size a prime in 251..=65521;
/// - each real server: weight 0..=65535, lower threshold not above upper (the kernel's
///   -ERANGE), same address family as the service unless tunnelled (the kernel forwards
///   mixed families only through tunnels), no two with the same address and port.
pub fn validate_service(svc: &VirtualService, index: usize) -> Result<(), Invalid> {
    let at = Fault::Service(index);
    let ipv6 = svc.key.is_ipv6();
    match svc.key {
        ServiceKey::Tuple { port: 0, .. } if svc.persistence.is_none() => {
            return Err(Invalid::new(
                at,
                "port",
                "port 0 (all ports) is allowed only for persistent services",
            ));
        }
        ServiceKey::Fwmark { mark: 0, .. } => {
            return Err(Invalid::new(at, "fwmark", "must be greater than 0"));
        }
        _ => {}
    }
    if let Some(Persistence {
        timeout_secs,
        netmask,
    }) = svc.persistence
    {
        if timeout_secs == 0 || timeout_secs > MAX_TIMEOUT_SECS {
            return Err(Invalid::new(
                at,
                "persistence",
                format!("timeout must be 1..={MAX_TIMEOUT_SECS} seconds"),
            ));
        }
        let (lo, hi) = if ipv6 { (1, 128) } else { (0, 32) };
        if !(lo..=hi).contains(&netmask) {
            return Err(Invalid::new(
                at,
                "persistence_netmask",
                format!("prefix length must be {lo}..={hi} for this address family"),
            ));
        }
    }
    let f = svc.flags;
    if (f.sh_fallback || f.sh_port) && svc.scheduler != SchedulerKind::Sh {
        return Err(Invalid::new(
            at,
            "flags",
            format!(
                "sh-fallback and sh-port need scheduler sh, not {}",
                svc.scheduler
            ),
        ));
    }
    if (f.mh_fallback || f.mh_port) && svc.scheduler != SchedulerKind::Mh {
        return Err(Invalid::new(
            at,
            "flags",
            format!(
                "mh-fallback and mh-port need scheduler mh, not {}",
                svc.scheduler
            ),
        ));
    }
    if !(MIN_MH_TABLE_SIZE..=MAX_MH_TABLE_SIZE).contains(&svc.mh_table_size)
        || !is_prime(svc.mh_table_size)
    {
        return Err(Invalid::new(
            at,
            "mh_table_size",
            format!("must be a prime from {MIN_MH_TABLE_SIZE} to {MAX_MH_TABLE_SIZE}"),
        ));
    }
    for (j, real) in svc.reals.iter().enumerate() {
        validate_real(real, ipv6, Fault::Real(index, j))?;
        if svc.reals[..j]
            .iter()
            .any(|r| r.addr == real.addr && r.port == real.port)
        {
            return Err(Invalid::new(
                Fault::Real(index, j),
                "address",
                format!(
                    "duplicate real server {}",
                    crate::service::SocketText(real.addr, real.port)
                ),
            ));
        }
    }
    Ok(())
}

/// Checks one real server of a service of the given family, reported at `at`: weight
/// 0..=65535, lower threshold not above upper, family (unless tunnelled) and unicast
/// address. Used by [`validate_service`] and by `ipvsadm` `-a`/`-e`, which check the one
/// server they change.
pub fn validate_real(real: &RealServer, service_ipv6: bool, at: Fault) -> Result<(), Invalid> {
    if !(0..=MAX_WEIGHT).contains(&real.weight) {
        return Err(Invalid::new(at, "weight", "must be 0..=65535"));
    }
    if real.lower_threshold > real.upper_threshold {
        return Err(Invalid::new(
            at,
            "lower_threshold",
            format!(
                "lower threshold {} is higher than upper threshold {}",
                real.lower_threshold, real.upper_threshold
            ),
        ));
    }
    if real.addr.is_ipv6() != service_ipv6 && real.method != crate::service::ForwardMethod::Tunnel {
        return Err(Invalid::new(
            at,
            "address",
            "different address family is allowed only for tunneling servers",
        ));
    }
    if is_unusable(real.addr) {
        return Err(Invalid::new(
            at,
            "address",
            format!("{} is not a unicast address", real.addr),
        ));
    }
    Ok(())
}

/// Addresses the kernel refuses as real servers (it wants unicast or local addresses).
fn is_unusable(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    }
}

/// Trial division; table sizes are at most 65521, so at most ~128 divisions.
pub(crate) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{
        ClassifierRule, ForwardMethod, Prefix, Protocol, SchedFlags, DEFAULT_MH_TABLE_SIZE,
    };

    fn real(addr: &str, port: u16) -> RealServer {
        RealServer {
            addr: addr.parse().unwrap(),
            port,
            weight: 1,
            method: ForwardMethod::Masquerade,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    fn svc(addr: &str, port: u16) -> VirtualService {
        VirtualService {
            key: ServiceKey::Tuple {
                protocol: Protocol::Tcp,
                addr: addr.parse().unwrap(),
                port,
            },
            scheduler: SchedulerKind::Wlc,
            flags: SchedFlags::default(),
            mh_table_size: DEFAULT_MH_TABLE_SIZE,
            persistence: None,
            reals: vec![real("10.0.1.1", 80), real("10.0.1.2", 80)],
        }
    }

    fn config(services: Vec<VirtualService>) -> Config {
        Config {
            services,
            ..Config::default()
        }
    }

    #[test]
    fn display_names_file_line_context_and_field() {
        let c = config(vec![svc("10.0.0.1", 80)]);
        let e = Invalid::new(Fault::Real(0, 1), "weight", "must be 0..=65535").into_config_error(
            &c,
            Path::new("fastlb.toml"),
            12,
        );
        assert_eq!(
            e.to_string(),
            "fastlb.toml:12: service \"TCP 10.0.0.1:80\" real 2: field `weight`: must be 0..=65535"
        );
        let e = ConfigError::at_line(Path::new("x.rules"), 0, "cannot read");
        assert_eq!(e.to_string(), "x.rules: cannot read");
    }

    #[test]
    fn accepts_a_plain_service() {
        assert_eq!(validate(&config(vec![svc("10.0.0.1", 80)])), Ok(()));
    }

    #[test]
    fn port_zero_needs_persistence() {
        let mut s = svc("10.0.0.1", 0);
        let e = validate(&config(vec![s.clone()])).unwrap_err();
        assert_eq!((e.at, e.field), (Fault::Service(0), "port"));
        s.persistence = Some(Persistence {
            timeout_secs: 300,
            netmask: 32,
        });
        assert_eq!(validate(&config(vec![s])), Ok(()));
    }

    #[test]
    fn weight_range() {
        let mut s = svc("10.0.0.1", 80);
        s.reals[1].weight = 65_535;
        assert!(validate_service(&s, 0).is_ok());
        s.reals[1].weight = 65_536;
        let e = validate_service(&s, 3).unwrap_err();
        assert_eq!((e.at, e.field), (Fault::Real(3, 1), "weight"));
        s.reals[1].weight = -1;
        assert!(validate_service(&s, 0).is_err());
    }

    #[test]
    fn thresholds_lower_not_above_upper() {
        let mut s = svc("10.0.0.1", 80);
        s.reals[0].upper_threshold = 100;
        s.reals[0].lower_threshold = 100;
        assert!(validate_service(&s, 0).is_ok());
        s.reals[0].lower_threshold = 101;
        assert_eq!(
            validate_service(&s, 0).unwrap_err().field,
            "lower_threshold"
        );
        // The kernel compares even when upper is 0 ("no limit").
        s.reals[0].upper_threshold = 0;
        s.reals[0].lower_threshold = 1;
        assert!(validate_service(&s, 0).is_err());
    }

    #[test]
    fn mh_table_size_prime_in_range() {
        let mut s = svc("10.0.0.1", 80);
        for ok in [251, 4093, 65_521, 257] {
            s.mh_table_size = ok;
            assert!(validate_service(&s, 0).is_ok(), "{ok}");
        }
        for bad in [250, 241, 4095, 65_537, 0] {
            s.mh_table_size = bad;
            assert_eq!(
                validate_service(&s, 0).unwrap_err().field,
                "mh_table_size",
                "{bad}"
            );
        }
    }

    #[test]
    fn netmask_within_family() {
        let mut s = svc("10.0.0.1", 80);
        s.persistence = Some(Persistence {
            timeout_secs: 300,
            netmask: 33,
        });
        assert_eq!(
            validate_service(&s, 0).unwrap_err().field,
            "persistence_netmask"
        );
        let mut s6 = svc("2001:db8::1", 80);
        s6.reals = vec![real("2001:db8::10", 80)];
        s6.persistence = Some(Persistence {
            timeout_secs: 300,
            netmask: 64,
        });
        assert!(validate_service(&s6, 0).is_ok());
        s6.persistence = Some(Persistence {
            timeout_secs: 300,
            netmask: 0,
        });
        assert!(validate_service(&s6, 0).is_err());
    }

    #[test]
    fn duplicates_refused() {
        let e = validate(&config(vec![svc("10.0.0.1", 80), svc("10.0.0.1", 80)])).unwrap_err();
        assert_eq!(e.at, Fault::Service(1));
        let mut s = svc("10.0.0.1", 80);
        s.reals.push(real("10.0.1.1", 80));
        assert_eq!(validate_service(&s, 0).unwrap_err().at, Fault::Real(0, 2));
        // Same address, other port: a different real server.
        s.reals[2].port = 81;
        assert!(validate_service(&s, 0).is_ok());
    }

    #[test]
    fn mixed_family_only_for_tunnels() {
        let mut s = svc("10.0.0.1", 80);
        s.reals[0] = real("2001:db8::10", 80);
        assert_eq!(validate_service(&s, 0).unwrap_err().field, "address");
        s.reals[0].method = ForwardMethod::Tunnel;
        assert!(validate_service(&s, 0).is_ok());
    }

    #[test]
    fn scheduler_flags_need_their_scheduler() {
        let mut s = svc("10.0.0.1", 80);
        s.flags.sh_port = true;
        assert_eq!(validate_service(&s, 0).unwrap_err().field, "flags");
        s.scheduler = SchedulerKind::Sh;
        assert!(validate_service(&s, 0).is_ok());
        s.flags.mh_fallback = true;
        assert!(validate_service(&s, 0).is_err());
    }

    #[test]
    fn classifier_marks_must_feed_a_fwmark_service() {
        let mut fw = svc("10.0.0.1", 80);
        fw.key = ServiceKey::Fwmark {
            mark: 7,
            ipv6: false,
        };
        let rule = |mark, dst: &str| ClassifierRule {
            protocol: None,
            dst: dst.parse::<Prefix>().unwrap(),
            ports: (0, 65_535),
            mark,
        };
        let mut c = config(vec![fw]);
        c.classifiers = vec![rule(7, "10.0.0.0/24")];
        assert_eq!(validate(&c), Ok(()));
        c.classifiers = vec![rule(8, "10.0.0.0/24")];
        assert_eq!(validate(&c).unwrap_err().at, Fault::Classifier(0));
        // Mark 7 exists for IPv4 only.
        c.classifiers = vec![rule(7, "2001:db8::/64")];
        assert!(validate(&c).is_err());
        c.classifiers = vec![ClassifierRule {
            ports: (90, 80),
            ..rule(7, "10.0.0.0/24")
        }];
        assert_eq!(validate(&c).unwrap_err().field, "ports");
    }

    #[test]
    fn timeouts_in_range() {
        let mut c = config(vec![]);
        c.timeouts.udp = 0;
        assert_eq!(validate(&c).unwrap_err().field, "udp");
        c.timeouts.udp = MAX_TIMEOUT_SECS + 1;
        assert!(validate(&c).is_err());
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65_521) && !is_prime(65_523) && is_prime(4093));
    }
}
