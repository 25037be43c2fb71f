//! What `fastlb top` reads at each refresh: one `ctl --top` answer, built on the server from
//! the director's `-L` view, the health checks' view and the workers' counters.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::control::listing::TableView;
use crate::health::HealthView;
use crate::service::{ForwardMethod, SocketText};
use crate::stats::{drop_totals, TrafficTotals, WorkerStats};

/// One refresh's worth of the running director: plain counters, no rates (top takes the
/// differences between two snapshots itself, every second).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Generation of the service table the workers run.
    pub generation: u64,
    /// Virtual services in configuration order.
    pub services: Vec<ServiceRow>,
    /// Packets dropped, by reason (every reason, zeros included).
    pub drops: BTreeMap<String, u64>,
    /// Per-worker frame counters.
    pub workers: Vec<WorkerRow>,
}

/// One virtual service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRow {
    /// `TCP 10.0.0.1:80`, `UDP [2001:db8::1]:53`, `FWM 7`: as the metrics' `service` label.
    pub service: String,
    /// Scheduler name (`wlc`).
    pub scheduler: String,
    /// Sums over its real servers in the running table.
    pub totals: Totals,
    /// Real servers: those in the running table in list order, then those the health
    /// checks took out (`in_table` false).
    pub reals: Vec<RealRow>,
}

/// One real server of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealRow {
    /// `10.1.0.1:80` or `[2001:db8::1]:80`: as the metrics' `real` label.
    pub real: String,
    /// `Masq`, `Route` or `Tunnel`, as ipvsadm prints it.
    pub forward: String,
    /// Weight in the running table (0 for a server the checks took out).
    pub weight: i32,
    /// Active connections.
    pub active: u32,
    /// Inactive connections.
    pub inactive: u32,
    /// Persistence templates pointing at it.
    pub persistent: u32,
    /// OVERLOAD by its connection thresholds.
    pub overloaded: bool,
    /// What its health check says: `None` when none watches it.
    pub healthy: Option<bool>,
    /// Whether it is in the running table.
    pub in_table: bool,
    /// Traffic counters.
    pub totals: Totals,
}

/// Traffic counters since start (or the last `-Z`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets from clients.
    pub in_pkts: u64,
    /// Packets to clients.
    pub out_pkts: u64,
    /// Bytes from clients.
    pub in_bytes: u64,
    /// Bytes to clients.
    pub out_bytes: u64,
}

impl From<TrafficTotals> for Totals {
    fn from(t: TrafficTotals) -> Totals {
        Totals {
            conns: t.conns,
            in_pkts: t.in_pkts,
            out_pkts: t.out_pkts,
            in_bytes: t.in_bytes,
            out_bytes: t.out_bytes,
        }
    }
}

/// One worker's frame counters.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRow {
    /// Frames received.
    pub rx: u64,
    /// Frames transmitted.
    pub tx: u64,
    /// Frames passed to the kernel.
    pub passed: u64,
    /// Batches processed.
    pub batches: u64,
}

/// ipvsadm's name of a forwarding method.
fn forward_name(m: ForwardMethod) -> &'static str {
    match m {
        ForwardMethod::Masquerade => "Masq",
        ForwardMethod::DirectRouting => "Route",
        ForwardMethod::Tunnel => "Tunnel",
    }
}

/// The snapshot of a director: its `-L` view, its health checks' view and its workers.
pub fn build(
    generation: u64,
    view: &TableView,
    health: &HealthView,
    workers: &[Arc<WorkerStats>],
) -> Snapshot {
    let services = view
        .services
        .iter()
        .map(|s| {
            let mut reals: Vec<RealRow> = s
                .reals
                .iter()
                .map(|r| RealRow {
                    real: SocketText(r.addr, r.port).to_string(),
                    forward: forward_name(r.method).to_string(),
                    weight: r.weight,
                    active: r.active,
                    inactive: r.inactive,
                    persistent: r.persistent,
                    overloaded: r.overloaded,
                    healthy: health.get(&(s.key, r.addr, r.port)).copied(),
                    in_table: true,
                    totals: r.stats.into(),
                })
                .collect();
            // Servers the checks took out are not in the running table; show them down.
            let mut out: Vec<_> = health
                .iter()
                .filter(|((key, addr, port), up)| {
                    *key == s.key
                        && !**up
                        && !s.reals.iter().any(|r| r.addr == *addr && r.port == *port)
                })
                .map(|((_, addr, port), _)| (*addr, *port))
                .collect();
            out.sort();
            reals.extend(out.into_iter().map(|(addr, port)| RealRow {
                real: SocketText(addr, port).to_string(),
                forward: String::new(),
                healthy: Some(false),
                ..RealRow::default()
            }));
            ServiceRow {
                service: s.key.to_string(),
                scheduler: s.scheduler.name().to_string(),
                totals: s.stats.into(),
                reals,
            }
        })
        .collect();
    Snapshot {
        generation,
        services,
        drops: drop_totals(workers.iter().map(|w| &**w))
            .into_iter()
            .map(|(r, n)| (r.to_string(), n))
            .collect(),
        workers: workers
            .iter()
            .map(|w| WorkerRow {
                rx: w.rx.get(),
                tx: w.tx.get(),
                passed: w.passed.get(),
                batches: w.batches.get(),
            })
            .collect(),
    }
}
