//! When a sync master sends a connection: the kernel's `net.ipv4.vs.sync_*` sysctls, as
//! `[director]` settings of the same names (`docs/config.md`). The daemons themselves
//! (interface, syncid, group) are started with `fastlb ctl --start-daemon`; these settings
//! only shape what a running master sends.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Which sync daemon: the one that sends (`master`) or the one that receives (`backup`).
/// A director may run both.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncRole {
    /// Sends this director's connections.
    Master,
    /// Installs another director's connections.
    Backup,
}

impl fmt::Display for SyncRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncRole::Master => "master",
            SyncRole::Backup => "backup",
        })
    }
}

/// One sync daemon as `--start-daemon` describes it (`struct ipvs_sync_daemon_cfg`): zero
/// and `None` mean the kernel's defaults, filled in when the daemon starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonConfig {
    /// `--mcast-interface`: the interface the datagrams leave or arrive by.
    pub mcast_ifn: String,
    /// `--syncid`: the sync group (a backup with 0 takes every group).
    pub syncid: u8,
    /// `--sync-maxlen`: largest message, bytes of UDP payload (0: from the interface MTU).
    pub sync_maxlen: u16,
    /// `--mcast-group` (default 224.0.0.81).
    pub mcast_group: Option<IpAddr>,
    /// `--mcast-port` (0: 8848).
    pub mcast_port: u16,
    /// `--mcast-ttl` (0: 1).
    pub mcast_ttl: u8,
}

/// Why a sync setting was refused: the field and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadSyncSetting {
    /// The setting's name.
    pub field: &'static str,
    /// What is wrong with its value.
    pub message: String,
}

/// The sync sysctls. Defaults are the kernel's.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSettings {
    /// `sync_threshold`: `[threshold, period]`, default `[3, 50]`. A connection is sent at
    /// its `threshold`-th packet from the client and then every `period` packets (with
    /// period 0: only at the `threshold`-th). The kernel's `sync_period` is this second
    /// value.
    pub sync_threshold: [u32; 2],
    /// `sync_refresh_period`, seconds (default 0): when not 0, a connection is sent again
    /// only once its timer has moved by this much (or by half its timeout) since it was
    /// last sent, whatever `sync_threshold` says, plus on state changes.
    pub sync_refresh_period: u32,
    /// `sync_retries` (0 to 3, default 0): with `sync_refresh_period`, how many times an
    /// unchanged connection is sent again, `sync_refresh_period / 8` apart.
    pub sync_retries: u8,
    /// `sync_persist_mode` (default false): connections controlled by a persistence
    /// template are not sent; their templates are.
    pub sync_persist_mode: bool,
    /// `sync_qlen_max`: connections each worker may have waiting for the sync thread
    /// (default 65536); when its queue is full a connection to send is dropped and counted.
    /// The kernel counts this in messages; fastlb's workers queue connections.
    pub sync_qlen_max: u32,
    /// `sync_sock_size`: send and receive buffer of the sync sockets in bytes, 0 for the
    /// system's default (the kernel's default too).
    pub sync_sock_size: u32,
}

impl Default for SyncSettings {
    fn default() -> SyncSettings {
        SyncSettings {
            sync_threshold: [3, 50],
            sync_refresh_period: 0,
            sync_retries: 0,
            sync_persist_mode: false,
            sync_qlen_max: 65_536,
            sync_sock_size: 0,
        }
    }
}

impl SyncSettings {
    /// The `threshold` of `sync_threshold`.
    pub fn threshold(&self) -> u32 {
        self.sync_threshold[0]
    }

    /// The `period` of `sync_threshold` (the kernel's `sysctl_sync_period`).
    pub fn period(&self) -> u32 {
        self.sync_threshold[1]
    }

    /// Checks the values as the kernel's sysctl handlers do (`proc_do_sync_threshold`,
    /// `sync_retries` 0..=3), and that a queue holds at least one connection.
    pub fn validate(&self) -> Result<(), BadSyncSetting> {
        let [threshold, period] = self.sync_threshold;
        if period != 0 && threshold >= period {
            return Err(BadSyncSetting {
                field: "sync_threshold",
                message: format!(
                    "threshold {threshold} must be below the period {period} (or the period 0)"
                ),
            });
        }
        if self.sync_retries > 3 {
            return Err(BadSyncSetting {
                field: "sync_retries",
                message: format!("{} is not in 0..=3", self.sync_retries),
            });
        }
        if self.sync_qlen_max == 0 {
            return Err(BadSyncSetting {
                field: "sync_qlen_max",
                message: "must be at least 1".into(),
            });
        }
        if self.sync_refresh_period > i32::MAX as u32 / 1000 {
            return Err(BadSyncSetting {
                field: "sync_refresh_period",
                message: format!("{} s is too long", self.sync_refresh_period),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_checks() {
        assert_eq!(SyncSettings::default().validate(), Ok(()));
        let with = |threshold: [u32; 2]| SyncSettings {
            sync_threshold: threshold,
            ..SyncSettings::default()
        };
        assert!(with([1, 0]).validate().is_ok());
        assert!(with([0, 0]).validate().is_ok());
        assert_eq!(
            with([50, 50]).validate().unwrap_err().field,
            "sync_threshold"
        );
        let retries = SyncSettings {
            sync_retries: 4,
            ..SyncSettings::default()
        };
        assert_eq!(retries.validate().unwrap_err().field, "sync_retries");
    }
}
