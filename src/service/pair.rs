//! The director pair in the configuration model: the keepalived VRRP instance whose state
//! decides whether this director forwards, and the IPVS sync daemon it runs (keepalived's
//! `lvs_sync_daemon`).
//!
//! keepalived moves the instance's addresses (`virtual_ipaddress`) to the director that is
//! MASTER and removes them from the others; fastlb follows the instance by watching those
//! addresses (see `docs/decisions.md`, "Following keepalived"). Only keepalived.conf sets
//! these; TOML and `ipvsadm -S` files leave them empty, and fastlb then always forwards.

use std::fmt;
use std::net::IpAddr;

use super::DaemonConfig;

/// One `vrrp_instance` block, as far as fastlb needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpInstance {
    /// The instance's name (`vrrp_instance NAME`).
    pub name: String,
    /// The interface its adverts use (`interface`).
    pub interface: String,
    /// `virtual_router_id`.
    pub vrid: u8,
    /// Every address keepalived adds on becoming MASTER and removes on leaving it:
    /// `virtual_ipaddress` and `virtual_ipaddress_excluded`, in file order.
    pub addresses: Vec<IpAddr>,
    /// `use_vmac`: the MASTER answers for its addresses from the VRRP virtual MAC.
    pub use_vmac: bool,
}

impl VrrpInstance {
    /// Whether the instance speaks VRRP for IPv6 (its first address is IPv6); keepalived
    /// does not mix families in one instance's `virtual_ipaddress`.
    pub fn is_ipv6(&self) -> bool {
        self.addresses.first().is_some_and(IpAddr::is_ipv6)
    }

    /// The VRRP virtual MAC (RFC 5798 7.3: 00-00-5E-00-01-{VRID} for IPv4, 00-00-5E-00-02-
    /// {VRID} for IPv6), if the instance uses one (`use_vmac`).
    pub fn vmac(&self) -> Option<[u8; 6]> {
        let family = if self.is_ipv6() { 2 } else { 1 };
        self.use_vmac
            .then_some([0x00, 0x00, 0x5e, 0x00, family, self.vrid])
    }

    /// The state the instance is in on this director, judged by its addresses: MASTER
    /// while this director holds every one of them, BACKUP otherwise (keepalived adds them
    /// all on entering MASTER and removes them on leaving it, for BACKUP or FAULT).
    pub fn state(&self, held: impl Fn(IpAddr) -> bool) -> VrrpState {
        if !self.addresses.is_empty() && self.addresses.iter().all(|a| held(*a)) {
            VrrpState::Master
        } else {
            VrrpState::Backup
        }
    }
}

/// What fastlb makes of a VRRP instance's state: MASTER forwards, anything else (BACKUP,
/// FAULT, keepalived stopped) does not.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum VrrpState {
    /// This director holds the instance's addresses.
    Master,
    /// It does not: BACKUP, FAULT, or keepalived is not running.
    Backup,
}

impl fmt::Display for VrrpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VrrpState::Master => "MASTER",
            VrrpState::Backup => "BACKUP",
        })
    }
}

/// The sync daemon keepalived's `lvs_sync_daemon IF [INSTANCE] [id N] [maxlen N] [port N]
/// [ttl N] [group ADDR]` asks for: the settings of `ipvsadm --start-daemon`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncDaemonSettings {
    /// `--mcast-interface`.
    pub interface: String,
    /// `--syncid`: `id N`; without it the followed instance's `virtual_router_id`, or 0
    /// when no instance is named (as keepalived).
    pub syncid: u8,
    /// `--sync-maxlen`, when given.
    pub maxlen: Option<u16>,
    /// `--mcast-port`, when given (the daemon's default is 8848).
    pub port: Option<u16>,
    /// `--mcast-ttl`, when given.
    pub ttl: Option<u8>,
    /// `--mcast-group`, when given (the daemon's default is 224.0.0.81).
    pub group: Option<IpAddr>,
    /// The VRRP instance whose state picks the daemon's role (master while MASTER, backup
    /// otherwise); `None`: master and backup both run all the time, as keepalived's
    /// checker runs them when no instance is named.
    pub instance: Option<String>,
}

impl SyncDaemonSettings {
    /// The daemon as `ipvsadm --start-daemon` describes it; what is not given is left to
    /// the daemon's defaults (0 or none), as keepalived leaves it to the kernel's.
    pub fn daemon_config(&self) -> DaemonConfig {
        DaemonConfig {
            mcast_ifn: self.interface.clone(),
            syncid: self.syncid,
            sync_maxlen: self.maxlen.unwrap_or(0),
            mcast_group: self.group,
            mcast_port: self.port.unwrap_or(0),
            mcast_ttl: self.ttl.unwrap_or(0),
        }
    }
}

/// The sync daemons that should run in a given VRRP state, as keepalived drives the
/// kernel's: entering MASTER stops the backup daemon and starts the master, leaving MASTER
/// (for BACKUP or FAULT) stops the master and starts the backup, and at start the backup
/// runs until the instance becomes MASTER (`vrrp_state_become_master`,
/// `vrrp_state_leave_master`, `vrrp_init_state` in keepalived's `vrrp/`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncRoles {
    /// The master daemon (sends this director's connections).
    pub master: bool,
    /// The backup daemon (installs the peer's connections).
    pub backup: bool,
}

/// The director pair: the instance fastlb follows and the sync daemon it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairConfig {
    /// Every `vrrp_instance` of the file (their virtual MACs are the director's too).
    pub instances: Vec<VrrpInstance>,
    /// Name of the instance whose state decides whether this director forwards: the one
    /// `lvs_sync_daemon` names, else the file's only instance; `None`: always forward.
    pub followed: Option<String>,
    /// `lvs_sync_daemon`, if given.
    pub sync_daemon: Option<SyncDaemonSettings>,
}

impl PairConfig {
    /// The instance fastlb follows, if any.
    pub fn followed(&self) -> Option<&VrrpInstance> {
        let name = self.followed.as_deref()?;
        self.instances.iter().find(|i| i.name == name)
    }

    /// The state this director is in, judged by the addresses it holds; MASTER when no
    /// instance is followed (a lone director always forwards).
    pub fn state(&self, held: impl Fn(IpAddr) -> bool) -> VrrpState {
        self.followed().map_or(VrrpState::Master, |i| i.state(held))
    }

    /// The sync daemons to run in `state`; none without `lvs_sync_daemon`.
    pub fn sync_roles(&self, state: VrrpState) -> SyncRoles {
        match &self.sync_daemon {
            None => SyncRoles::default(),
            Some(d) if d.instance.is_none() => SyncRoles {
                master: true,
                backup: true,
            },
            Some(_) => SyncRoles {
                master: state == VrrpState::Master,
                backup: state == VrrpState::Backup,
            },
        }
    }

    /// The VRRP virtual MACs of every instance with `use_vmac`, with the interface whose
    /// frames carry it.
    pub fn vmacs(&self) -> impl Iterator<Item = (&str, [u8; 6])> {
        self.instances
            .iter()
            .filter_map(|i| Some((i.interface.as_str(), i.vmac()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(addrs: &[&str]) -> VrrpInstance {
        VrrpInstance {
            name: "VI_1".into(),
            interface: "eth0".into(),
            vrid: 51,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            use_vmac: false,
        }
    }

    fn held<'a>(addrs: &'a [&'a str]) -> impl Fn(IpAddr) -> bool + 'a {
        move |a| addrs.iter().any(|h| h.parse::<IpAddr>().unwrap() == a)
    }

    #[test]
    fn master_only_while_every_address_is_held() {
        let i = instance(&["10.0.1.1", "10.0.2.1"]);
        assert_eq!(i.state(held(&["10.0.1.1", "10.0.2.1"])), VrrpState::Master);
        assert_eq!(i.state(held(&["10.0.1.1"])), VrrpState::Backup);
        assert_eq!(i.state(held(&[])), VrrpState::Backup);
        assert_eq!(instance(&[]).state(|_| true), VrrpState::Backup);
    }

    #[test]
    fn virtual_mac_by_family_and_vrid() {
        let mut i = instance(&["10.0.1.1"]);
        assert_eq!(i.vmac(), None);
        i.use_vmac = true;
        assert_eq!(i.vmac(), Some([0, 0, 0x5e, 0, 1, 51]));
        let mut v6 = instance(&["2001:db8::1"]);
        v6.use_vmac = true;
        assert_eq!(v6.vmac(), Some([0, 0, 0x5e, 0, 2, 51]));
    }

    #[test]
    fn sync_roles_follow_the_state_as_keepalived_drives_them() {
        let daemon = |instance: Option<&str>| SyncDaemonSettings {
            interface: "eth1".into(),
            syncid: 51,
            maxlen: None,
            port: None,
            ttl: None,
            group: None,
            instance: instance.map(Into::into),
        };
        let mut pair = PairConfig {
            instances: vec![instance(&["10.0.1.1"])],
            followed: Some("VI_1".into()),
            sync_daemon: None,
        };
        assert_eq!(pair.sync_roles(VrrpState::Master), SyncRoles::default());
        pair.sync_daemon = Some(daemon(Some("VI_1")));
        let master = pair.sync_roles(VrrpState::Master);
        assert!(master.master && !master.backup);
        let backup = pair.sync_roles(VrrpState::Backup);
        assert!(!backup.master && backup.backup);
        pair.sync_daemon = Some(daemon(None));
        for s in [VrrpState::Master, VrrpState::Backup] {
            assert_eq!(
                pair.sync_roles(s),
                SyncRoles {
                    master: true,
                    backup: true
                }
            );
        }
    }

    #[test]
    fn no_followed_instance_always_forwards() {
        let pair = PairConfig::default();
        assert_eq!(pair.state(|_| false), VrrpState::Master);
        let pair = PairConfig {
            instances: vec![instance(&["10.0.1.1"])],
            followed: Some("VI_1".into()),
            sync_daemon: None,
        };
        assert_eq!(pair.state(|_| false), VrrpState::Backup);
    }
}
