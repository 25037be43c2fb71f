//! The director's connection-sync methods: the sync daemons are state the director owns,
//! changed by the ctl source (`--start-daemon`, `--stop-daemon`) or by any other source
//! that decides the role (keepalived's VRRP state), and pushed to the sync thread by the
//! reconcile step.
//!
//! ```text
//!   ctl / VRRP ──> start_sync_daemon(role, config)   checks what the kernel checks, records
//!                  stop_sync_daemon(role)            the daemon; nothing opens yet
//!   reconcile ───> Push.sync: SyncPlan               the appliance opens or closes the
//!                                                    sockets (SyncThread::apply) and reports
//!   appliance ───> sync_daemon_failed(role, why)     a socket that would not open
//!   reload ──────> configure()                       [director] sync_* settings reach the
//!                                                    workers at the next reconcile
//! ```
//!
//! Until [`Director::attach_sync`] gives it the workers' shared sync state (the appliance
//! does; a replay does not), starting a daemon is refused.

use std::sync::Arc;

use super::Director;
use crate::ha::sync::counters::{DaemonCounters, SyncCounters};
use crate::ha::sync::daemon::{
    sysfs_interface, DaemonError, DaemonState, InterfaceLookup, SyncDaemons,
};
use crate::ha::sync::SyncShared;
use crate::service::{Config, DaemonConfig, ServiceKey, SyncRole};

/// What the sync thread must run after a reconcile step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncPlan {
    /// The daemons, with their settings resolved.
    pub daemons: SyncDaemons,
    /// `sync_sock_size`: the sockets' buffer size, 0 for the system's default.
    pub sock_size: u32,
    /// Daemons the pair's `lvs_sync_daemon` could not start, and why (the appliance logs
    /// them; keepalived logs the kernel's refusal the same way and goes on).
    pub refused: Vec<(SyncRole, DaemonError)>,
}

/// The director's sync state.
pub(super) struct SyncControl {
    /// The workers' shared sync state and the sync thread's counters, once attached.
    plane: Option<(Arc<SyncShared>, Arc<DaemonCounters>)>,
    daemons: SyncDaemons,
    interfaces: InterfaceLookup,
    /// `[director] sync_*` changed: the workers' rules are republished at reconcile.
    rules_owed: bool,
    /// The daemons the pair's `lvs_sync_daemon` asked for at the last change, master then
    /// backup ([`Director::follow_pair_sync`]).
    pair_wanted: [Option<DaemonConfig>; 2],
    /// What the pair could not start since the last reconcile step, for the log.
    pair_refused: Vec<(SyncRole, DaemonError)>,
}

impl Default for SyncControl {
    fn default() -> SyncControl {
        SyncControl {
            plane: None,
            daemons: SyncDaemons::default(),
            interfaces: sysfs_interface,
            rules_owed: false,
            pair_wanted: [None, None],
            pair_refused: Vec::new(),
        }
    }
}

/// Whether some real server is of another address family than its service (a tunnel to
/// the other family): the kernel refuses to start sync then, since the protocol carries
/// one family per entry.
fn mixed_families(config: &Config) -> bool {
    config.services.iter().any(|s| {
        let v6 = match s.key {
            ServiceKey::Tuple { addr, .. } => addr.is_ipv6(),
            ServiceKey::Fwmark { ipv6, .. } => ipv6,
        };
        s.reals.iter().any(|r| r.addr.is_ipv6() != v6)
    })
}

impl Director {
    /// Gives the director the state its workers' sync hooks share and the sync thread's
    /// counters; the `[director] sync_*` settings are published to the workers at once.
    pub fn attach_sync(&mut self, shared: Arc<SyncShared>, counters: Arc<DaemonCounters>) {
        shared.set_rules(&self.configured.sync);
        self.sync.plane = Some((shared, counters));
        self.follow_pair_sync();
    }

    /// The sync daemons follow the pair's state, as keepalived drives the kernel's when
    /// `lvs_sync_daemon` names the instance (`ipvs_syncd_master` on entering MASTER: stop
    /// the backup daemon, start the master; `ipvs_syncd_backup` on leaving it: the
    /// reverse). Without an instance named both run; without `lvs_sync_daemon`, the pair
    /// starts and stops nothing and ctl alone decides. Acts on changes only (of the state,
    /// of `lvs_sync_daemon`, or once sync is attached); a refusal is reported with the next
    /// [`SyncPlan`] and not retried until the next change, as keepalived does.
    pub(super) fn follow_pair_sync(&mut self) {
        if self.sync.plane.is_none() {
            return;
        }
        let want = match &self.configured.pair.sync_daemon {
            None => [None, None],
            Some(d) => {
                let c = d.daemon_config();
                let roles = self.pair.sync;
                [roles.master.then(|| c.clone()), roles.backup.then_some(c)]
            }
        };
        if want == self.sync.pair_wanted {
            return;
        }
        let old = std::mem::replace(&mut self.sync.pair_wanted, want.clone());
        let roles = [SyncRole::Master, SyncRole::Backup];
        // The role left first, then the role taken.
        for (i, role) in roles.into_iter().enumerate() {
            if old[i].is_some() && old[i] != want[i] {
                // Stopped by ctl meanwhile: nothing to stop.
                let _ = self.stop_sync_daemon(role);
            }
        }
        for (i, role) in roles.into_iter().enumerate() {
            if let Some(c) = &want[i] {
                if old[i].as_ref() != Some(c) {
                    if let Err(e) = self.start_sync_daemon(role, c) {
                        self.sync.pair_refused.push((role, e));
                        self.owed.sync = true;
                    }
                }
            }
        }
    }

    /// The workers' shared sync state and the sync thread's counters, once attached.
    pub(super) fn sync_plane(&self) -> Option<(Arc<SyncShared>, Arc<DaemonCounters>)> {
        self.sync.plane.clone()
    }

    /// Finds interfaces with `lookup` instead of sysfs (tests).
    pub fn with_interfaces(mut self, lookup: InterfaceLookup) -> Director {
        self.sync.interfaces = lookup;
        self
    }

    /// Source ctl (`--start-daemon`), or whatever decides the role: records a `role`
    /// daemon over `config`, refused as the kernel refuses it (a daemon of that role runs,
    /// no such interface, a tunnel real server of the other family). Its socket opens at
    /// the next reconcile step.
    pub fn start_sync_daemon(
        &mut self,
        role: SyncRole,
        config: &DaemonConfig,
    ) -> Result<(), DaemonError> {
        if self.sync.plane.is_none() {
            return Err(DaemonError::Unavailable);
        }
        if self.sync.daemons.get(role).is_some() {
            return Err(DaemonError::AlreadyRunning);
        }
        if config.mcast_group.is_some_and(|g| !g.is_multicast()) {
            return Err(DaemonError::Invalid);
        }
        let iface = (self.sync.interfaces)(&config.mcast_ifn).ok_or(DaemonError::NoSuchDevice)?;
        if mixed_families(&self.configured) {
            return Err(DaemonError::Invalid);
        }
        *self.sync.daemons.slot(role) = Some(DaemonState::resolve(role, config, iface));
        self.owed.sync = true;
        Ok(())
    }

    /// Source ctl (`--stop-daemon`): stops the `role` daemon at the next reconcile step.
    pub fn stop_sync_daemon(&mut self, role: SyncRole) -> Result<(), DaemonError> {
        if self.sync.daemons.slot(role).take().is_none() {
            return Err(DaemonError::NotRunning);
        }
        self.owed.sync = true;
        Ok(())
    }

    /// The appliance could not open the `role` daemon's socket: it does not run.
    pub fn sync_daemon_failed(&mut self, role: SyncRole) {
        *self.sync.daemons.slot(role) = None;
    }

    /// The daemons started (what `-L --daemon` lists).
    pub fn sync_daemons(&self) -> &SyncDaemons {
        &self.sync.daemons
    }

    /// Every sync counter, once sync is attached.
    pub fn sync_counters(&self) -> Option<SyncCounters> {
        self.sync
            .plane
            .as_ref()
            .map(|(shared, counters)| counters.snapshot(shared))
    }

    /// Called by `configure` with the new configuration.
    pub(super) fn sync_settings_changed(&mut self, config: &Config) {
        if config.sync != self.configured.sync {
            self.sync.rules_owed = true;
            // The socket buffer size is the sockets' own: reopen them.
            if config.sync.sync_sock_size != self.configured.sync.sync_sock_size {
                self.owed.sync = true;
            }
        }
    }

    /// Called by `reconcile`: publishes changed rules to the workers and says what the
    /// sync thread must run.
    pub(super) fn sync_plan(&mut self) -> SyncPlan {
        SyncPlan {
            daemons: self.sync.daemons.clone(),
            sock_size: self.configured.sync.sync_sock_size,
            refused: std::mem::take(&mut self.sync.pair_refused),
        }
    }

    /// Called by `reconcile` every step: rules changed by a reload reach the workers.
    pub(super) fn publish_sync_rules(&mut self) {
        if std::mem::take(&mut self.sync.rules_owed) {
            if let Some((shared, _)) = &self.sync.plane {
                shared.set_rules(&self.configured.sync);
            }
        }
    }
}
