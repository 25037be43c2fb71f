//! The JSON report of `fastlb replay --report`.

use std::sync::Arc;

use serde::Serialize;

use super::replay::ReplayOutcome;
use crate::service::{DestRegistry, ServiceTable, SocketText};
use crate::stats::{dest_totals, drop_totals, TrafficTotals, WorkerStats};

/// Counters of one real server at the end of a replay.
#[derive(Debug, Serialize)]
pub struct RealReport {
    /// `ADDR:PORT`.
    pub address: String,
    /// `Masq`, `Route` or `Tunnel`.
    pub forward: &'static str,
    /// Configured weight.
    pub weight: i32,
    /// Active connections left at the end.
    pub active_conns: u32,
    /// Inactive connections left at the end.
    pub inactive_conns: u32,
    /// Persistence templates left at the end.
    pub persistent_conns: u32,
    /// Traffic.
    #[serde(flatten)]
    pub traffic: TrafficTotals,
}

/// Counters of one service.
#[derive(Debug, Serialize)]
pub struct ServiceReport {
    /// `TCP 192.0.2.1:80` or `FWM 1`.
    pub service: String,
    /// Scheduler name.
    pub scheduler: &'static str,
    /// Sum over its real servers.
    #[serde(flatten)]
    pub traffic: TrafficTotals,
    /// Its real servers, in list order.
    pub reals: Vec<RealReport>,
}

/// What `--report` writes.
#[derive(Debug, Serialize)]
pub struct ReplayReport {
    /// Frame totals.
    pub frames: ReplayOutcome,
    /// Drops by reason (every reason, zero or not).
    pub drops: std::collections::BTreeMap<&'static str, u64>,
    /// Connections and templates still in the table at the end.
    pub live_connections: usize,
    /// Per service.
    pub services: Vec<ServiceReport>,
}

impl ReplayReport {
    /// Collects the report from the replay's final state.
    pub fn new(
        frames: &ReplayOutcome,
        table: &ServiceTable,
        registry: &DestRegistry,
        workers: &[Arc<WorkerStats>],
        live_connections: usize,
    ) -> ReplayReport {
        let stats = || workers.iter().map(|w| &**w);
        let services = table
            .services
            .iter()
            .map(|svc| {
                let reals: Vec<RealReport> = svc
                    .dests
                    .iter()
                    .map(|d| {
                        let c = registry.get(d.id);
                        RealReport {
                            address: SocketText(d.server.addr, d.server.port).to_string(),
                            forward: d.server.method.ipvsadm_name(),
                            weight: d.server.weight,
                            active_conns: c.active(),
                            inactive_conns: c.inactive(),
                            persistent_conns: c.persistent(),
                            traffic: dest_totals(stats(), d.id),
                        }
                    })
                    .collect();
                let mut traffic = TrafficTotals::default();
                for r in &reals {
                    traffic += r.traffic;
                }
                ServiceReport {
                    service: svc.config.key.to_string(),
                    scheduler: svc.config.scheduler.name(),
                    traffic,
                    reals,
                }
            })
            .collect();
        ReplayReport {
            frames: *frames,
            drops: drop_totals(stats()).into_iter().collect(),
            live_connections,
            services,
        }
    }
}
