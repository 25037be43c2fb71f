//! Prometheus metrics over HTTP (`--metrics ADDR`), from a small std thread.
//!
//! The thread owns a [`MetricsSource`]: it subscribes to the [`Publisher`] like a worker
//! does, so it always knows the newest service table, and reads the same shared counters
//! the control thread reads. Each scrape builds a fresh registry and encodes it in the
//! Prometheus text format (0.0.4) with the `prometheus-client` crate; nothing is kept
//! between scrapes, so there is nothing to keep in step with reloads.
//!
//! Families (all prefixed `fastlb_`; `service` is `TCP 10.0.0.1:80`, `UDP ...`, `FWM 7`,
//! `FWM 7 IPv6`; `real` is `10.1.0.1:80` or `[2001:db8::1]:80`):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `service_connections_total`, `service_{in,out}_{packets,bytes}_total` | counter | service |
//! | `real_server_connections_total`, `real_server_{in,out}_{packets,bytes}_total` | counter | service, real |
//! | `real_server_active_connections`, `..._inactive_connections`, `..._persistent_connections`, `real_server_weight`, `real_server_overloaded` | gauge | service, real |
//! | `real_server_healthy` (1 up, 0 down; every real server a health check watches, also those the checks took out of the table) | gauge | service, real |
//! | `drops_total` | counter | reason |
//! | `fragments_total` (IP fragments `forwarded`; datagrams whose fragment entry `expired` before they completed; later fragments that came before their first one: `held`, `released` with their first, `hold_expired` waiting for it, `hold_full` not held) | counter | event |
//! | `worker_{rx,tx,passed}_frames_total`, `worker_batches_total`, `worker_kicks_total` (wakeup syscalls), `worker_to_kernel_frames_total` (passed frames the kernel's IP output took), `worker_tx_ring_full_frames_total` (dropped on a full tx ring), `worker_to_kernel_limited_frames_total` (passed frames not handed to the kernel: the worker's budget of 50 000/s for that path was spent) | counter | worker |
//! | `config_generation` | gauge | |
//! | `conn_table_entries`, `conn_table_capacity` (connections and templates live, and the bound) | gauge | |
//! | `conn_table_evictions_total` (entries evicted to admit a new one), `conn_table_insert_failures_total` (new connections refused: nothing could be evicted), `conn_table_dropped_entries_total` (connections the `drop_entry` defence ended) | counter | |
//! | `sync_events_total` (connection sync: entries and datagrams sent, received, installed, and dropped by reason; the names of `fastlb ctl -L --daemon --json`) | counter | event |
//!
//! Service figures are sums over the service's current real servers, as everywhere in
//! fastlb.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::Receiver;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::conn::ConnTable;
use crate::control::Publisher;
use crate::ha::sync::counters::DaemonCounters;
use crate::ha::sync::SyncShared;
use crate::health::HealthView;
use crate::service::{DestRegistry, ServiceTable, SocketText};
use crate::stats::{dest_totals, drop_totals, TrafficTotals, WorkerStats};

/// The health checks' view of every checked real server, shared by the director (which
/// writes it when a check changes its mind or the configuration changes) with the metrics
/// thread (which reads it at each scrape): `fastlb_real_server_healthy` is exported from it,
/// so a server the checks took out of the table still shows, as 0.
pub type HealthShare = Arc<Mutex<HealthView>>;

type Labels = Vec<(&'static str, String)>;

/// Everything a scrape reads.
pub struct MetricsSource {
    tables: Receiver<Arc<ServiceTable>>,
    table: Arc<ServiceTable>,
    registry: Arc<DestRegistry>,
    workers: Vec<Arc<WorkerStats>>,
    health: Option<HealthShare>,
    sync: Option<(Arc<SyncShared>, Arc<DaemonCounters>)>,
    conns: Option<Arc<ConnTable>>,
}

impl MetricsSource {
    /// A source that follows `publisher`'s snapshots and reads `workers`' counters.
    pub fn new(publisher: &mut Publisher, workers: Vec<Arc<WorkerStats>>) -> MetricsSource {
        MetricsSource {
            tables: publisher.subscribe(),
            table: publisher.table(),
            registry: Arc::clone(publisher.registry()),
            workers,
            health: None,
            sync: None,
            conns: None,
        }
    }

    /// Adds the connection table's size, bound and evictions (`fastlb_conn_table_*`).
    pub fn with_conns(mut self, conns: Arc<ConnTable>) -> MetricsSource {
        self.conns = Some(conns);
        self
    }

    /// Adds the connection sync counters (`fastlb_sync_events_total`): the sync thread's
    /// and, summed, the workers'.
    pub fn with_sync(
        mut self,
        shared: Arc<SyncShared>,
        counters: Arc<DaemonCounters>,
    ) -> MetricsSource {
        self.sync = Some((shared, counters));
        self
    }

    /// Adds the health checks' view (`fastlb_real_server_healthy`).
    pub fn with_health(mut self, view: HealthShare) -> MetricsSource {
        self.health = Some(view);
        self
    }

    /// The metrics as Prometheus text, from the newest snapshot.
    pub fn render(&mut self) -> String {
        while let Ok(t) = self.tables.try_recv() {
            self.table = t;
        }
        let mut reg = Registry::with_prefix("fastlb");
        let counters = |reg: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels, Counter>::default();
            reg.register(name, help, f.clone());
            f
        };
        let gauges = |reg: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels, Gauge>::default();
            reg.register(name, help, f.clone());
            f
        };
        let traffic = |reg: &mut Registry, what: &str| {
            [
                ("connections", "Connections scheduled"),
                ("in_packets", "Packets from clients"),
                ("out_packets", "Packets to clients"),
                ("in_bytes", "Bytes from clients"),
                ("out_bytes", "Bytes to clients"),
            ]
            .map(|(n, h)| counters(reg, &format!("{what}_{n}"), &format!("{h}, per {what}")))
        };
        let svc_traffic = traffic(&mut reg, "service");
        let real_traffic = traffic(&mut reg, "real_server");
        let active = gauges(
            &mut reg,
            "real_server_active_connections",
            "Active connections",
        );
        let inactive = gauges(
            &mut reg,
            "real_server_inactive_connections",
            "Inactive connections",
        );
        let persistent = gauges(
            &mut reg,
            "real_server_persistent_connections",
            "Persistence templates pointing at the real server",
        );
        let weight = gauges(&mut reg, "real_server_weight", "Configured weight");
        let overloaded = gauges(
            &mut reg,
            "real_server_overloaded",
            "1 while the connection threshold marks the real server OVERLOAD",
        );
        let healthy = self.health.as_ref().map(|_| {
            gauges(
                &mut reg,
                "real_server_healthy",
                "1 up, 0 down, by the health checker; absent when not checked",
            )
        });
        let put = |fam: &[Family<Labels, Counter>; 5], labels: &Labels, t: TrafficTotals| {
            for (f, v) in fam
                .iter()
                .zip([t.conns, t.in_pkts, t.out_pkts, t.in_bytes, t.out_bytes])
            {
                f.get_or_create(labels).inc_by(v);
            }
        };
        for svc in &self.table.services {
            let service = svc.config.key.to_string();
            let mut sum = TrafficTotals::default();
            for d in &svc.dests {
                let labels: Labels = vec![
                    ("service", service.clone()),
                    ("real", SocketText(d.server.addr, d.server.port).to_string()),
                ];
                let t = dest_totals(self.workers.iter().map(|w| &**w), d.id);
                sum += t;
                put(&real_traffic, &labels, t);
                let c = self.registry.get(d.id);
                active.get_or_create(&labels).set(i64::from(c.active()));
                inactive.get_or_create(&labels).set(i64::from(c.inactive()));
                persistent
                    .get_or_create(&labels)
                    .set(i64::from(c.persistent()));
                weight
                    .get_or_create(&labels)
                    .set(i64::from(d.server.weight));
                overloaded
                    .get_or_create(&labels)
                    .set(i64::from(c.is_overloaded()));
            }
            put(&svc_traffic, &vec![("service", service)], sum);
        }
        if let (Some(fam), Some(view)) = (&healthy, &self.health) {
            let view = view.lock().unwrap_or_else(|e| e.into_inner());
            for (&(key, addr, port), &up) in view.iter() {
                let labels: Labels = vec![
                    ("service", key.to_string()),
                    ("real", SocketText(addr, port).to_string()),
                ];
                fam.get_or_create(&labels).set(i64::from(up));
            }
        }
        let drops = counters(&mut reg, "drops", "Packets dropped, by reason");
        for (reason, n) in drop_totals(self.workers.iter().map(|w| &**w)) {
            drops
                .get_or_create(&vec![("reason", reason.to_string())])
                .inc_by(n);
        }
        let fragments = counters(
            &mut reg,
            "fragments",
            "IP fragments forwarded, datagrams whose fragment entry expired incomplete, and \
             later fragments held for their first one (held, released, hold_expired, hold_full)",
        );
        for (event, n) in [
            (
                "forwarded",
                self.workers.iter().map(|w| w.fragments.get()).sum(),
            ),
            (
                "expired",
                self.workers.iter().map(|w| w.fragment_timeouts.get()).sum(),
            ),
            (
                "held",
                self.workers.iter().map(|w| w.fragments_held.get()).sum(),
            ),
            (
                "released",
                self.workers
                    .iter()
                    .map(|w| w.fragments_released.get())
                    .sum(),
            ),
            (
                "hold_expired",
                self.workers
                    .iter()
                    .map(|w| w.fragment_hold_expired.get())
                    .sum(),
            ),
            (
                "hold_full",
                self.workers
                    .iter()
                    .map(|w| w.fragment_hold_full.get())
                    .sum(),
            ),
        ] {
            fragments
                .get_or_create(&vec![("event", event.to_string())])
                .inc_by(n);
        }
        let per_worker = [
            ("worker_rx_frames", "Frames received"),
            ("worker_tx_frames", "Frames transmitted"),
            ("worker_passed_frames", "Frames passed to the kernel"),
            ("worker_batches", "Batches processed"),
            ("worker_kicks", "Wakeup syscalls (tx sendto, rx recvfrom)"),
            (
                "worker_to_kernel_frames",
                "Passed frames the kernel took through its IP output",
            ),
            (
                "worker_tx_ring_full_frames",
                "Frames to transmit dropped on a full tx ring",
            ),
            (
                "worker_to_kernel_limited_frames",
                "Passed frames not handed to the kernel: the worker's budget for that path was spent",
            ),
        ]
        .map(|(n, h)| counters(&mut reg, n, h));
        for (i, w) in self.workers.iter().enumerate() {
            let labels: Labels = vec![("worker", i.to_string())];
            let each = [
                &w.rx,
                &w.tx,
                &w.passed,
                &w.batches,
                &w.kicks,
                &w.to_kernel,
                &w.tx_ring_full,
                &w.to_kernel_limited,
            ];
            for (f, c) in per_worker.iter().zip(each) {
                f.get_or_create(&labels).inc_by(c.get());
            }
        }
        if let Some((shared, sync)) = &self.sync {
            let events = counters(
                &mut reg,
                "sync_events",
                "Connection sync: entries and datagrams sent, received, installed and dropped, by event",
            );
            for (event, n) in sync.snapshot(shared).named() {
                events
                    .get_or_create(&vec![("event", event.to_string())])
                    .inc_by(n);
            }
        }
        if let Some(conns) = &self.conns {
            table_metrics(&mut reg, conns);
        }
        let generation = Gauge::<i64>::default();
        generation.set(self.table.generation as i64);
        reg.register(
            "config_generation",
            "Generation of the service table the workers run",
            generation,
        );
        let mut out = String::new();
        prometheus_text::encode(&mut out, &reg).expect("writing to a String cannot fail");
        out
    }
}

/// `fastlb_conn_table_*`: what a SYN flood fills, and what it costs (docs/bounds.md).
fn table_metrics(reg: &mut Registry, conns: &ConnTable) {
    let stats = conns.stats();
    for (name, help, v) in [
        (
            "conn_table_entries",
            "Connections and persistence templates in the connection table",
            conns.len(),
        ),
        (
            "conn_table_capacity",
            "Entries the connection table holds at most",
            conns.capacity(),
        ),
    ] {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        reg.register(name, help, g);
    }
    for (name, help, v) in [
        (
            "conn_table_evictions",
            "Entries evicted from a full connection table to admit a new one",
            stats.evictions,
        ),
        (
            "conn_table_insert_failures",
            "New connections refused: the table was full and nothing could be evicted",
            stats.insert_failures,
        ),
        (
            "conn_table_dropped_entries",
            "Connections the drop_entry defence ended",
            stats.dropped_entries,
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        reg.register(name, help, c);
    }
}

/// The metrics HTTP endpoint: one thread answering `GET /metrics`.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

/// How long a scraper may take to send its request.
const SCRAPER_TIMEOUT: Duration = Duration::from_secs(2);

impl MetricsServer {
    /// Listens on `addr` (port 0 picks one) and serves scrapes from `source` on a new
    /// thread named `fastlb-metrics`.
    pub fn spawn(addr: SocketAddr, mut source: MetricsSource) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("fastlb-metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(s) = stream {
                        // A scraper that goes away mid-answer costs nothing but its answer.
                        let _ = answer(s, &mut source);
                    }
                }
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread and closes the port.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept; if nothing can connect, the thread is gone already.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn answer(stream: TcpStream, source: &mut MetricsSource) -> io::Result<()> {
    stream.set_read_timeout(Some(SCRAPER_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPER_TIMEOUT))?;
    let mut reader = BufReader::new((&stream).take(16 * 1024));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read the rest of the head so the client is not reset while still sending it.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", prometheus_text::CONTENT_TYPE, source.render()),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "fastlb serves /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET only\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut w = &stream;
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::config::ipvsadm::parse_rules;
    use crate::stats::DropReason;

    #[test]
    fn render_reports_counters_and_follows_reloads() {
        let config = parse_rules(
            "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 4\n",
            std::path::Path::new("x"),
        )
        .unwrap();
        let mut p = Publisher::new(config, Arc::new(DestRegistry::new(8))).unwrap();
        let workers = vec![Arc::new(WorkerStats::new(8)), Arc::new(WorkerStats::new(8))];
        let mut src = MetricsSource::new(&mut p, workers.clone());
        let id = p.table().services[0].dests[0].id;
        workers[0].dest(id).in_bytes.add(1000);
        workers[1].dest(id).in_bytes.add(500);
        workers[1].count_drop(DropReason::NoRoute);
        workers[1].rx.add(9);
        workers[0].to_kernel.add(3);
        workers[1].tx_ring_full.add(2);
        p.registry()
            .get(id)
            .set(crate::service::ConnCount::Inactive, 2);
        let text = src.render();
        for line in [
            "fastlb_service_in_bytes_total{service=\"TCP 10.0.0.1:80\"} 1500",
            "fastlb_real_server_in_bytes_total{service=\"TCP 10.0.0.1:80\",real=\"10.1.0.1:80\"} 1500",
            "fastlb_real_server_inactive_connections{service=\"TCP 10.0.0.1:80\",real=\"10.1.0.1:80\"} 2",
            "fastlb_real_server_weight{service=\"TCP 10.0.0.1:80\",real=\"10.1.0.1:80\"} 4",
            "fastlb_drops_total{reason=\"no_route\"} 1",
            "fastlb_drops_total{reason=\"malformed\"} 0",
            "fastlb_worker_rx_frames_total{worker=\"1\"} 9",
            "fastlb_worker_to_kernel_frames_total{worker=\"0\"} 3",
            "fastlb_worker_tx_ring_full_frames_total{worker=\"1\"} 2",
            "fastlb_worker_kicks_total{worker=\"0\"} 0",
            "fastlb_config_generation 1",
            "# TYPE fastlb_service_connections_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains("healthy"));
        let mut cfg = p.config().clone();
        cfg.services[0].reals[0].weight = 7;
        p.replace(cfg).unwrap();
        let key = p.config().services[0].key;
        let view: HealthShare = Arc::default();
        view.lock()
            .unwrap()
            .insert((key, "10.1.0.1".parse().unwrap(), 80), true);
        // Down, so out of the table the workers run, and still shown.
        view.lock()
            .unwrap()
            .insert((key, "10.1.0.2".parse().unwrap(), 80), false);
        let mut src = src.with_health(view);
        let text = src.render();
        assert!(text.contains(
            "fastlb_real_server_weight{service=\"TCP 10.0.0.1:80\",real=\"10.1.0.1:80\"} 7"
        ));
        assert!(text.contains(
            "fastlb_real_server_healthy{service=\"TCP 10.0.0.1:80\",real=\"10.1.0.1:80\"} 1"
        ));
        assert!(text.contains(
            "fastlb_real_server_healthy{service=\"TCP 10.0.0.1:80\",real=\"10.1.0.2:80\"} 0"
        ));
        assert!(text.contains("fastlb_config_generation 2"));
    }

    #[test]
    fn the_connection_table_shows_its_size_bound_and_evictions() {
        use crate::conn::{NewConn, TcpFlags};
        use crate::service::{ForwardMethod, Protocol};
        use crate::time::Instant;
        let config = parse_rules(
            "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 1\n",
            std::path::Path::new("x"),
        )
        .unwrap();
        let registry = Arc::new(DestRegistry::new(8));
        let mut p = Publisher::new(config, Arc::clone(&registry)).unwrap();
        let conns = Arc::new(ConnTable::new(8, 1, registry));
        let id = p.table().services[0].dests[0].id;
        // A SYN flood in miniature: 12 handshakes into 8 slots.
        for port in 0..12u16 {
            let new = NewConn {
                protocol: Protocol::Tcp,
                client: "192.0.2.7".parse().unwrap(),
                cport: 1000 + port,
                vaddr: "10.0.0.1".parse().unwrap(),
                vport: 80,
                daddr: "10.1.0.1".parse().unwrap(),
                dport: 80,
                method: ForwardMethod::DirectRouting,
                dest: id,
                flags: Some(TcpFlags::SYN),
                template: None,
            };
            conns.insert(0, Instant::from_secs(1), new).unwrap();
        }
        // The drop_entry walk ends two of them (still counted as entries until their
        // owner reclaims the slots).
        assert_eq!(conns.drop_entries(Instant::from_secs(1), 0, 2, |_| true), 2);
        let mut src = MetricsSource::new(&mut p, Vec::new()).with_conns(Arc::clone(&conns));
        let text = src.render();
        for line in [
            "fastlb_conn_table_dropped_entries_total 2",
            "fastlb_conn_table_entries 8",
            "fastlb_conn_table_capacity 8",
            "fastlb_conn_table_evictions_total 4",
            "fastlb_conn_table_insert_failures_total 0",
            "# TYPE fastlb_conn_table_evictions_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }
}
