//! The ipvsadm language, spoken as ipvsadm 1.31 speaks it (`ipvsadm.c`, `libipvs.c`; the
//! version Debian 12 ships), in four parts:
//!
//! | part | file | entry points |
//! |---|---|---|
//! | the argument parser: one argument vector to one [`IpvsCommand`] | `args.rs` | [`parse`], [`parse_address_port`] |
//! | edits: the table-changing commands applied to a [`Config`](crate::service::Config) | `edit.rs` | [`apply`] |
//! | rule files: `-R` and `-S` | `rules.rs` | [`restore`], [`parse_rules`], [`save`] |
//! | listing options: what `-L` was asked for, and the order ipvsadm lists in | `list.rs` | [`ListOptions`], [`service_order`] |
//!
//! It lives among the configuration languages because an `ipvsadm -S` rule file is one: the
//! configuration loader reads it with [`parse_rules`]. `fastlb ctl` (`control::ctl`) runs the
//! same commands against the running table; the `-L` layouts are printed there
//! (`control::listing`), since they show the workers' counters (`stats`), which sit above the
//! configuration model.
//!
//! Where ipvsadm's behaviour is not what one would guess, fastlb's follows it:
//!
//! - The first option must be a command; each option may appear once ("multiple 'weight'
//!   options specified"); which options each command takes follows ipvsadm's
//!   command/option table, with its messages ("Illegal 'weight' option with the
//!   'add-service' command").
//! - `-p` without a value means **360 s** (ipvsadm's `IPVS_SVC_PERSISTENT_TIMEOUT` is
//!   `6*60`; its man page says 300). `-p` takes the next argument only when that argument
//!   does not start with `-`.
//! - `-M` is a dotted netmask for IPv4 services (fastlb refuses non-contiguous masks) and a
//!   prefix length 1..=128 for IPv6 ones.
//! - `-r ADDR` without a port takes the service's port; with `-g` or `-i` on an
//!   address/port service the real server's port is forced to the service's.
//! - `-a`/`-e` default to `-g` and weight 1; `-e` and `-E` replace every setting, so
//!   unspecified ones return to their defaults, exactly as ipvsadm sends them.
//! - Addresses and ports are numeric only: fastlb resolves no host or service names.
//! - `--start-daemon`/`--stop-daemon` and their options parse as ipvsadm parses them; a
//!   too-long `--mcast-interface` is refused (ipvsadm cuts it to 15 characters).
//! - Not supported, refused by name: SCTP, `-o` (one-packet scheduling), `--pe`, GUE and
//!   GRE tunnels.

mod args;
mod edit;
mod list;
mod rules;

pub use args::{parse, parse_address_port};
pub use edit::apply;
pub use list::{real_order, service_order, ListOptions};
pub use rules::{looks_like_rules, parse_rules, restore, save};

use std::net::IpAddr;

use super::error::Invalid;
use crate::service::{
    DaemonConfig, Persistence, RealServer, SchedFlags, SchedulerKind, ServiceKey, SyncRole,
};

/// What `-p` without a value means in ipvsadm 1.31 (`IPVS_SVC_PERSISTENT_TIMEOUT`).
pub const IPVSADM_DEFAULT_PERSISTENCE_SECS: u32 = 360;

/// A virtual service as `-A`/`-E` describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `-t`, `-u` or `-f` [`-6`].
    pub key: ServiceKey,
    /// `-s`, default wlc.
    pub scheduler: SchedulerKind,
    /// `-b`.
    pub flags: SchedFlags,
    /// `-p` [`-M`].
    pub persistence: Option<Persistence>,
}

/// One ipvsadm command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpvsCommand {
    /// `-A`.
    AddService(ServiceSpec),
    /// `-E`.
    EditService(ServiceSpec),
    /// `-D`.
    DeleteService(ServiceKey),
    /// `-a`.
    AddServer {
        /// The service.
        service: ServiceKey,
        /// The real server, defaults filled in.
        server: RealServer,
    },
    /// `-e`.
    EditServer {
        /// The service.
        service: ServiceKey,
        /// The real server's new settings; `addr` and `port` find it.
        server: RealServer,
    },
    /// `-d`.
    DeleteServer {
        /// The service.
        service: ServiceKey,
        /// Real server address.
        addr: IpAddr,
        /// Real server port.
        port: u16,
    },
    /// `-C`.
    Clear,
    /// `--set tcp tcpfin udp`; 0 leaves a value unchanged.
    SetTimeouts {
        /// TCP ESTABLISHED.
        tcp: u32,
        /// TCP FIN_WAIT.
        tcpfin: u32,
        /// UDP.
        udp: u32,
    },
    /// `-L`/`-l`.
    List(ListOptions),
    /// `-S` [`-n`].
    Save {
        /// `-n` given (fastlb always prints numerically).
        numeric: bool,
    },
    /// `-R`.
    Restore,
    /// `-Z` [service].
    Zero(Option<ServiceKey>),
    /// `-h`.
    Help,
    /// `-v`.
    Version,
    /// `--start-daemon master|backup` with its daemon options (`--mcast-interface` filled
    /// with ipvsadm's default, eth0, when not given).
    StartDaemon {
        /// Master or backup.
        role: SyncRole,
        /// The daemon options as written.
        config: DaemonConfig,
    },
    /// `--stop-daemon master|backup`.
    StopDaemon(SyncRole),
}

/// An ipvsadm command refused: by the option parser, with ipvsadm's own message, or by the
/// table, with libipvs's `ipvs_strerror` text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpvsError {
    /// The command line is wrong (ipvsadm's `fail(2, ...)` messages).
    #[error("{0}")]
    Usage(String),
    /// `-A` of an existing service.
    #[error("Service already exists")]
    ServiceExists,
    /// `-E`, `-D` or `-Z` of a missing service.
    #[error("No such service")]
    NoSuchService,
    /// `-a`, `-e` or `-d` on a missing service.
    #[error("Service not defined")]
    ServiceNotDefined,
    /// `-a` of an existing real server.
    #[error("Destination already exists")]
    DestinationExists,
    /// `-e` or `-d` of a missing real server.
    #[error("No such destination")]
    NoSuchDestination,
    /// The change would make the table invalid.
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(Invalid),
    /// `-L`, `-S`, `-R`, `-h`, `-v` given to [`apply`], which changes tables only.
    #[error("not a table-changing command")]
    NotAChange,
}

fn usage(msg: impl Into<String>) -> IpvsError {
    IpvsError::Usage(msg.into())
}

#[cfg(test)]
mod examples {
    //! Test helpers shared by the parts' tests: one-line commands and the man page's examples.

    use super::*;
    use crate::service::{Config, Protocol};

    pub fn cmd(line: &str) -> Result<IpvsCommand, IpvsError> {
        parse(&line.split_whitespace().collect::<Vec<_>>())
    }

    pub fn run(config: &mut Config, line: &str) -> Result<(), IpvsError> {
        apply(config, &cmd(line)?)
    }

    pub fn tcp(addr: &str, port: u16) -> ServiceKey {
        ServiceKey::Tuple {
            protocol: Protocol::Tcp,
            addr: addr.parse().unwrap(),
            port,
        }
    }

    /// ipvsadm(8) EXAMPLE 1, both as single commands and as an `ipvsadm -R` input.
    pub const EXAMPLE_1: &str = "
-A -t 207.175.44.110:80 -s rr
-a -t 207.175.44.110:80 -r 192.168.10.1:80 -m
-a -t 207.175.44.110:80 -r 192.168.10.2:80 -m
-a -t 207.175.44.110:80 -r 192.168.10.3:80 -m
-a -t 207.175.44.110:80 -r 192.168.10.4:80 -m
-a -t 207.175.44.110:80 -r 192.168.10.5:80 -m
";

    /// EXAMPLE 2 (fwmark), as the man page writes it, with `ipvsadm` in front.
    pub const EXAMPLE_2: &str = "
ipvsadm -A -f 1  -s rr
ipvsadm -a -f 1 -r 192.168.10.1:0 -m
ipvsadm -a -f 1 -r 192.168.10.2:0 -m
ipvsadm -a -f 1 -r 192.168.10.3:0 -m
ipvsadm -a -f 1 -r 192.168.10.4:0 -m
ipvsadm -a -f 1 -r 192.168.10.5:0 -m
";

    /// The IPv6 section's examples.
    pub const EXAMPLE_V6: &str = "
ipvsadm -A -t [2001:db8::80]:80 -s rr
ipvsadm -a -t [2001:db8::80]:80 -r [2001:db8::a0a0]:80 -m
";
}
