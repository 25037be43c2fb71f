//! The daemons as the control plane sees them: a [`DaemonConfig`] from `--start-daemon`
//! becomes a [`DaemonState`] with the kernel's defaults filled in (`start_sync_thread`), the
//! way `ipvsadm -L --daemon` lists it; refusals carry ipvsadm's words.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use crate::service::{DaemonConfig, SyncRole};

/// The default group, 224.0.0.81 (`IP_VS_SYNC_GROUP`).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The default port (`IP_VS_SYNC_PORT`).
pub const DEFAULT_PORT: u16 = 8848;
/// The default multicast TTL.
pub const DEFAULT_TTL: u8 = 1;
/// The interface ipvsadm names when `--mcast-interface` is not given (`DEF_MCAST_IFN`).
pub const DEFAULT_INTERFACE: &str = "eth0";

/// What the daemons need of an interface.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Its index.
    pub index: u32,
    /// Its MTU.
    pub mtu: u32,
}

/// How the director finds an interface by name.
pub type InterfaceLookup = fn(&str) -> Option<Interface>;

/// An interface of this network namespace, from sysfs.
pub fn sysfs_interface(name: &str) -> Option<Interface> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    let read = |what: &str| -> Option<u32> {
        std::fs::read_to_string(format!("/sys/class/net/{name}/{what}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(Interface {
        index: read("ifindex")?,
        mtu: read("mtu")?,
    })
}

/// A running daemon: its settings with every default filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DaemonState {
    /// Master or backup.
    pub role: SyncRole,
    /// The interface's name.
    pub mcast_ifn: String,
    /// The interface's index.
    pub ifindex: u32,
    /// The sync group.
    pub syncid: u8,
    /// Largest message (UDP payload bytes).
    pub sync_maxlen: u16,
    /// The multicast group.
    pub mcast_group: IpAddr,
    /// The UDP port.
    pub mcast_port: u16,
    /// The multicast TTL (hop limit).
    pub mcast_ttl: u8,
}

impl DaemonState {
    /// `config` on interface `iface`, with the kernel's defaults: group 224.0.0.81, port
    /// 8848, TTL 1, and a maximum length from the MTU (a master assumes 1500 whatever the
    /// interface says, a backup takes the interface's, at least 1500), less the IP and UDP
    /// headers; a given length is clamped as the kernel clamps it.
    pub fn resolve(role: SyncRole, config: &DaemonConfig, iface: Interface) -> DaemonState {
        let group = config.mcast_group.unwrap_or(IpAddr::V4(DEFAULT_GROUP));
        let hlen: u32 = if group.is_ipv6() { 40 + 8 } else { 20 + 8 };
        let (mtu, min) = match role {
            SyncRole::Master => (1500, 1),
            SyncRole::Backup => (iface.mtu.clamp(1500, 65_535), 1024),
        };
        let maxlen = match config.sync_maxlen {
            0 => mtu - hlen,
            n => u32::from(n).clamp(min, 65_535 - hlen),
        };
        DaemonState {
            role,
            mcast_ifn: config.mcast_ifn.clone(),
            ifindex: iface.index,
            syncid: config.syncid,
            sync_maxlen: maxlen as u16,
            mcast_group: group,
            mcast_port: if config.mcast_port == 0 {
                DEFAULT_PORT
            } else {
                config.mcast_port
            },
            mcast_ttl: if config.mcast_ttl == 0 {
                DEFAULT_TTL
            } else {
                config.mcast_ttl
            },
        }
    }

    /// The line `ipvsadm -L --daemon` prints for it (ipvsadm 1.31's `list_daemon`).
    pub fn listing_line(&self) -> String {
        format!(
            "{} sync daemon (mcast={}, syncid={}, maxlen={}, group={}, port={}, ttl={})\n",
            self.role,
            self.mcast_ifn,
            self.syncid,
            self.sync_maxlen,
            self.mcast_group,
            self.mcast_port,
            self.mcast_ttl
        )
    }
}

/// The daemons that run, or are to run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncDaemons {
    /// The master, if started.
    pub master: Option<DaemonState>,
    /// The backup, if started.
    pub backup: Option<DaemonState>,
}

impl SyncDaemons {
    /// The daemon of `role`.
    pub fn get(&self, role: SyncRole) -> Option<&DaemonState> {
        match role {
            SyncRole::Master => self.master.as_ref(),
            SyncRole::Backup => self.backup.as_ref(),
        }
    }

    /// The slot of `role`.
    pub fn slot(&mut self, role: SyncRole) -> &mut Option<DaemonState> {
        match role {
            SyncRole::Master => &mut self.master,
            SyncRole::Backup => &mut self.backup,
        }
    }

    /// What `ipvsadm -L --daemon` prints: the master first, then the backup.
    pub fn listing(&self) -> String {
        [&self.master, &self.backup]
            .into_iter()
            .flatten()
            .map(DaemonState::listing_line)
            .collect()
    }
}

/// Why a daemon was not started or stopped. `Display` gives ipvsadm's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonError {
    /// A daemon of that role runs already (`EEXIST`).
    AlreadyRunning,
    /// No daemon of that role runs (`ESRCH`).
    NotRunning,
    /// The interface does not exist (`ENODEV`).
    NoSuchDevice,
    /// The kernel's `EINVAL`: a tunnel real server of the other address family exists
    /// (the protocol cannot carry such connections), or a group that is not multicast.
    Invalid,
    /// This fastlb runs no sync thread (a replay).
    Unavailable,
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DaemonError::AlreadyRunning => "Daemon has already run",
            DaemonError::NotRunning => "No daemon is running",
            DaemonError::NoSuchDevice => "No such device",
            DaemonError::Invalid => {
                "Invalid operation.  Possibly wrong module version, address not unicast, ..."
            }
            DaemonError::Unavailable => "connection sync is not available in this fastlb",
        })
    }
}

impl std::error::Error for DaemonError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(mtu: u32) -> Interface {
        Interface { index: 3, mtu }
    }

    #[test]
    fn defaults_as_start_sync_thread_fills_them() {
        let cfg = DaemonConfig {
            mcast_ifn: "eth1".into(),
            syncid: 7,
            ..DaemonConfig::default()
        };
        let m = DaemonState::resolve(SyncRole::Master, &cfg, eth(9000));
        assert_eq!(
            m.listing_line(),
            "master sync daemon (mcast=eth1, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
        );
        // A backup reads with the interface's MTU (at least 1500).
        assert_eq!(
            DaemonState::resolve(SyncRole::Backup, &cfg, eth(9000)).sync_maxlen,
            8972
        );
        assert_eq!(
            DaemonState::resolve(SyncRole::Backup, &cfg, eth(1280)).sync_maxlen,
            1472
        );
        // An IPv6 group takes 20 more bytes of headers; given lengths are clamped.
        let v6 = DaemonConfig {
            mcast_group: Some("ff02::81".parse().unwrap()),
            sync_maxlen: 100,
            mcast_port: 9000,
            mcast_ttl: 3,
            ..cfg.clone()
        };
        let m = DaemonState::resolve(SyncRole::Master, &v6, eth(1500));
        assert_eq!((m.sync_maxlen, m.mcast_port, m.mcast_ttl), (100, 9000, 3));
        assert_eq!(
            DaemonState::resolve(SyncRole::Backup, &v6, eth(1500)).sync_maxlen,
            1024
        );
        let big = DaemonConfig {
            sync_maxlen: 65_507,
            ..v6
        };
        assert_eq!(
            DaemonState::resolve(SyncRole::Master, &big, eth(1500)).sync_maxlen,
            65_487
        );
    }

    #[test]
    fn listing_puts_the_master_first() {
        let cfg = DaemonConfig {
            mcast_ifn: "eth0".into(),
            ..DaemonConfig::default()
        };
        let mut d = SyncDaemons::default();
        assert_eq!(d.listing(), "");
        d.backup = Some(DaemonState::resolve(SyncRole::Backup, &cfg, eth(1500)));
        d.master = Some(DaemonState::resolve(SyncRole::Master, &cfg, eth(1500)));
        let l = d.listing();
        assert!(l.starts_with("master sync daemon (mcast=eth0, syncid=0, maxlen=1472"));
        assert!(l.contains("\nbackup sync daemon (mcast=eth0, syncid=0, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"));
    }

    #[test]
    fn sysfs_knows_loopback_and_refuses_paths() {
        assert!(sysfs_interface("lo").is_some_and(|i| i.index >= 1));
        assert_eq!(sysfs_interface("../lo"), None);
        assert_eq!(sysfs_interface("no-such-if0"), None);
    }
}
