//! The appliance: `fastlb --iface IF [--iface IF2] --config FILE`.
//!
//! The calling thread becomes the control thread. It starts one AF_XDP worker per queue
//! (each running a [`Pipeline`]), then loops: serves the ctl socket, reloads the
//! configuration on SIGHUP (a bad file is refused whole and the running table stays), keeps
//! the XDP filter's maps equal to the service table, refreshes next hops from the kernel
//! every second and asks the kernel to resolve the neighbours the workers missed and those
//! of new real servers (then reads them back within milliseconds, not at the next second:
//! a packet toward a next hop fastlb does not know yet is dropped). SIGINT or
//! SIGTERM stops the workers, detaches the XDP program and removes the ctl socket.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Sender;
use thiserror::Error;

use super::ctl::{ControlState, CtlServer, CtlState};
use super::listing::{ConnView, TableView};
use super::metrics::{MetricsServer, MetricsSource};
use super::{PublishError, Publisher};
use crate::conn::ConnTable;
use crate::datapath::pipeline::{Pipeline, PipelineSettings};
use crate::datapath::xdp::{self, netlink, XdpError, XdpMode, XdpOptions};
use crate::forward::nexthop::{MacAddr, NextHops, Route};
use crate::health::{effective_config, HealthMonitor, HealthStates, MonitorOptions};
use crate::service::config::{self, ConfigError};
use crate::service::{Config, DestRegistry, ServiceKey, ServiceTable, TimeoutSettings};
use crate::stats::WorkerStats;

/// Connection table size when the configuration sets none.
pub const DEFAULT_CONN_CAPACITY: usize = 1 << 20;

/// How the appliance runs.
#[derive(Clone, Debug)]
pub struct ApplianceOptions {
    /// Interfaces to serve, in order; a rewritten frame leaves by the interface its next
    /// hop's route names.
    pub ifaces: Vec<String>,
    /// Configuration file.
    pub config: PathBuf,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Queues per interface (`None`: all).
    pub queues: Option<u32>,
    /// Cores to pin workers to (empty: worker i on core i).
    pub cores: Vec<usize>,
    /// Busy-poll instead of sleeping when idle.
    pub busy_poll: bool,
    /// ctl socket path.
    pub ctl_socket: PathBuf,
    /// Prometheus metrics address, if any.
    pub metrics: Option<SocketAddr>,
}

/// The appliance could not start or stopped on an error.
#[derive(Debug, Error)]
pub enum ApplianceError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The first snapshot could not be built.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The AF_XDP datapath failed.
    #[error(transparent)]
    Xdp(#[from] XdpError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ApplianceError {
    move |source| ApplianceError::Io { what, source }
}

/// Logs a line on stderr with a UTC timestamp (the control thread's log).
pub fn log(msg: std::fmt::Arguments<'_>) {
    eprintln!(
        "{} fastlb: {msg}",
        crate::health::rfc3339(std::time::SystemTime::now())
    );
}

/// Runs the appliance until SIGINT or SIGTERM.
pub fn run(opts: &ApplianceOptions) -> Result<(), ApplianceError> {
    let config = config::load(&opts.config)?;
    let registry = Arc::new(DestRegistry::default());
    let mut publisher = Publisher::new(config.clone(), Arc::clone(&registry))?;
    let xopts = XdpOptions {
        ifaces: opts.ifaces.clone(),
        queues: opts.queues,
        mode: opts.xdp_mode,
        busy_poll: opts.busy_poll,
        cores: opts.cores.clone(),
        ..XdpOptions::default()
    };
    let workers = xdp::worker_count(&xopts).max(1);
    let capacity = if config.conn_capacity == 0 {
        DEFAULT_CONN_CAPACITY
    } else {
        config.conn_capacity
    };
    let conns = Arc::new(ConnTable::new(capacity, workers, Arc::clone(&registry)));
    conns.timeouts().apply(&config.timeouts);
    let stats: Vec<Arc<WorkerStats>> = (0..workers)
        .map(|_| Arc::new(WorkerStats::new(registry.capacity())))
        .collect();
    let nexthops = Arc::new(
        startup_nexthops(&opts.ifaces, &config).map_err(io("reading routes and neighbours"))?,
    );
    let (missing_tx, missing_rx) = crossbeam_channel::bounded::<IpAddr>(1024);

    // One snapshot channel and one next-hop channel per worker, handed over when the
    // datapath builds each worker's pipeline.
    let mut nexthop_txs: Vec<Sender<Arc<NextHops>>> = Vec::new();
    let mut slots = Vec::new();
    for _ in 0..workers {
        let (tx, rx) = crossbeam_channel::unbounded();
        nexthop_txs.push(tx);
        slots.push(Some((publisher.subscribe(), rx)));
    }
    let slots = Mutex::new(slots);
    let own_updates = publisher.subscribe();
    let metrics = match opts.metrics {
        Some(addr) => {
            let source = MetricsSource::new(&mut publisher, stats.clone());
            Some(MetricsServer::spawn(addr, source).map_err(io("starting the metrics server"))?)
        }
        None => None,
    };
    let settings = PipelineSettings {
        tunnel_source_v4: config.tunnel_source_v4,
        tunnel_source_v6: config.tunnel_source_v6,
        ..PipelineSettings::default()
    };
    let first = publisher.table();
    let make = |w: usize| {
        let (tables, hops) = slots.lock().expect("not poisoned")[w]
            .take()
            .expect("one pipeline per worker");
        Pipeline::new(
            w,
            Arc::clone(&first),
            Arc::clone(&conns),
            Arc::clone(&nexthops),
            Arc::clone(&stats[w]),
            settings,
        )
        .with_updates(tables)
        .with_nexthop_updates(hops)
        .with_missing_neighbours(missing_tx.clone())
    };

    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(io("installing signal handlers"))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(io("installing signal handlers"))?;

    let mut datapath = xdp::start(&xopts, make, Arc::clone(&stop))?;
    datapath.filter().sync(&first).map_err(XdpError::from)?;
    let mut locals: Vec<IpAddr> = nexthops.local_addresses().collect();
    datapath
        .filter()
        .set_local_addresses(&locals)
        .map_err(XdpError::from)?;
    if let Some(dir) = opts.ctl_socket.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating the ctl socket's directory"))?;
    }
    let mut ctl = CtlServer::bind(&opts.ctl_socket).map_err(io("binding the ctl socket"))?;
    let mut inner = ControlState::new(publisher, stats.clone());
    let listing = Arc::clone(&conns);
    inner.conns = Some(Box::new(move || {
        let mut v = Vec::new();
        listing.for_each(xdp::monotonic_now(), |e| v.push(ConnView::from(e)));
        v
    }));
    let timeouts = Arc::clone(&conns);
    inner.on_timeouts = Some(Box::new(move |t| timeouts.timeouts().apply(&t)));
    let (monitor, transitions) = HealthMonitor::start(&config, MonitorOptions::default())
        .map_err(io("starting health checks"))?;
    let mut state = ApplianceState {
        inner,
        configured: config,
        health: HealthStates::new(),
        monitor,
    };
    log(format_args!(
        "serving {} with {workers} worker(s), {} service(s), connection table {capacity}; ctl {}",
        opts.ifaces.join(", "),
        first.services.len(),
        opts.ctl_socket.display()
    ));

    for real in first.services.iter().flat_map(|s| &s.dests) {
        let addr = real.server.addr;
        match nexthops.resolve(addr) {
            Ok(nh) => log(format_args!(
                "real server {addr}: next hop {} on {}",
                nh.mac,
                opts.ifaces
                    .get(usize::from(nh.dev))
                    .map_or("?", String::as_str)
            )),
            Err(reason) => log(format_args!(
                "real server {addr}: not reachable yet ({})",
                reason.name()
            )),
        }
    }
    let mut last_refresh = xdp::monotonic_now();
    let mut current = Arc::clone(&nexthops);
    // Next hops the kernel was asked to resolve and fastlb has not seen resolved: while
    // there are any (for up to a second), next hops are read back every QUICK_REFRESH.
    let mut pending: Vec<IpAddr> = Vec::new();
    let mut quick_until = last_refresh;
    while !stop.load(Ordering::Relaxed) {
        let now = xdp::monotonic_now();
        state.inner.tick(now);
        if let Err(e) = ctl.poll(&mut state) {
            log(format_args!("ctl: {e}"));
        }
        if reload.swap(false, Ordering::Relaxed) {
            reload_config(&opts.config, &mut state);
        }
        let mut changed = false;
        for t in transitions.try_iter() {
            state.health.apply(&t);
            changed = true;
        }
        if changed {
            state.publish();
        }
        if let Some(table) = own_updates.try_iter().last() {
            sync_filter(&mut datapath, &table);
            // New real servers: have the kernel resolve them now, not at the next second.
            let asked = resolve_real_servers(&current, state.config());
            if !asked.is_empty() {
                pending.extend(asked);
                quick_until = now + Duration::from_secs(1);
            }
        }
        for addr in missing_rx.try_iter().take(64) {
            resolve(&current, addr);
            pending.push(addr);
            quick_until = now + Duration::from_secs(1);
        }
        if now >= quick_until {
            pending.clear();
        }
        let since = now.saturating_since(last_refresh);
        if since >= Duration::from_secs(1) || (!pending.is_empty() && since >= QUICK_REFRESH) {
            let tick = since >= Duration::from_secs(1);
            last_refresh = now;
            if let Some(t) = refresh_nexthops(&opts.ifaces, &nexthop_txs) {
                pending.retain(|a| t.resolve(*a).is_err());
                if tick {
                    // Keep asking for real servers that did not answer (down, or gone).
                    resolve_real_servers(&t, state.config());
                }
                let now_local: Vec<IpAddr> = t.local_addresses().collect();
                if now_local != locals {
                    if let Err(e) = datapath.filter().set_local_addresses(&now_local) {
                        log(format_args!("XDP filter update failed: {e}"));
                    }
                    locals = now_local;
                }
                current = t;
            }
            state.inner.publisher.reclaim();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    log(format_args!("stopping: draining workers and detaching XDP"));
    drop(ctl);
    drop(state);
    let totals = datapath.join()?;
    if let Some(m) = metrics {
        m.stop();
    }
    log(format_args!(
        "stopped: rx {} tx {} passed {}",
        totals.rx, totals.tx, totals.passed
    ));
    Ok(())
}

/// What ctl and reloads act on: the configured table (from the file and ctl commands),
/// and what health checks make of it, which is what the workers run.
struct ApplianceState {
    inner: ControlState,
    configured: Config,
    health: HealthStates,
    monitor: HealthMonitor,
}

impl ApplianceState {
    /// Publishes the effective table: the configured one less the servers health checks
    /// took out (or with their weights), with sorry servers where nothing is up.
    fn publish(&mut self) {
        let effective = effective_config(&self.configured, &self.health);
        if let Err(e) = self.inner.apply(effective) {
            log(format_args!(
                "publishing the table failed, previous one stays: {e}"
            ));
        }
    }
}

impl CtlState for ApplianceState {
    fn config(&self) -> &Config {
        &self.configured
    }

    fn apply(&mut self, config: Config) -> Result<(), String> {
        let effective = effective_config(&config, &self.health);
        self.inner.apply(effective)?;
        self.monitor.reconfigure(&config);
        self.health.retain_configured(&config);
        self.configured = config;
        Ok(())
    }

    fn table_view(&self) -> TableView {
        self.inner.table_view()
    }

    fn connections(&self) -> Vec<ConnView> {
        self.inner.connections()
    }

    fn zero(&mut self, service: Option<&ServiceKey>) {
        self.inner.zero(service);
    }

    fn set_timeouts(&mut self, timeouts: TimeoutSettings) -> Result<(), String> {
        self.inner.set_timeouts(timeouts)?;
        self.configured.timeouts = timeouts;
        Ok(())
    }
}

fn reload_config(path: &std::path::Path, state: &mut ApplianceState) {
    match config::load(path) {
        Ok(config) => {
            let n = config.services.len();
            match state.apply(config) {
                Ok(()) => log(format_args!("reloaded {}: {n} service(s)", path.display())),
                Err(e) => log(format_args!("reload refused, running table unchanged: {e}")),
            }
        }
        Err(e) => log(format_args!("reload refused, running table unchanged: {e}")),
    }
}

fn sync_filter(datapath: &mut xdp::Datapath, table: &ServiceTable) {
    if let Err(e) = datapath.filter().sync(table) {
        log(format_args!("XDP filter update failed: {e}"));
    }
}

/// The kernel's routes and neighbours as fastlb's next-hop tables, devices numbered in
/// `ifaces` order.
fn kernel_nexthops(ifaces: &[String]) -> std::io::Result<NextHops> {
    let name = |ifindex: u32| -> Option<String> {
        ifaces
            .iter()
            .find(|i| xdp::ifindex(i) == Some(ifindex))
            .cloned()
    };
    let mut routes = Vec::new();
    for r in netlink::routes()? {
        let dev = name(r.oif).or_else(|| (r.oif != 0).then(|| format!("if{}", r.oif)));
        let local = match (r.table, r.kind) {
            (netlink::TABLE_LOCAL, netlink::rtn::LOCAL) => true,
            (netlink::TABLE_MAIN, netlink::rtn::UNICAST) => false,
            _ => continue,
        };
        routes.push(Route {
            dst: r.dst,
            gateway: r.gateway,
            dev,
            src: r.prefsrc,
            mtu: None,
            metric: r.metric,
            local,
        });
    }
    let neighbours = netlink::neighbours()?
        .into_iter()
        .filter(|n| n.is_usable())
        .filter_map(|n| Some((n.addr, MacAddr(n.mac?))));
    Ok(NextHops::with_devices(ifaces, routes, neighbours))
}

/// How often next hops are read back while resolutions are pending.
const QUICK_REFRESH: Duration = Duration::from_millis(10);

/// How long the appliance waits at start for its real servers' neighbours to resolve
/// before it serves: a real server that does not answer ARP or neighbour discovery by then
/// is resolved later, while fastlb serves.
const STARTUP_RESOLVE: Duration = Duration::from_secs(1);

/// The next hops to start with: the kernel's tables, once the neighbours of every real
/// server of `config` are resolved (asked for here) or [`STARTUP_RESOLVE`] has passed, so
/// that the first packets to a real server are not dropped for want of its MAC.
fn startup_nexthops(ifaces: &[String], config: &Config) -> std::io::Result<NextHops> {
    let start = std::time::Instant::now();
    let mut t = kernel_nexthops(ifaces)?;
    if resolve_real_servers(&t, config).is_empty() {
        return Ok(t);
    }
    while start.elapsed() < STARTUP_RESOLVE {
        std::thread::sleep(QUICK_REFRESH);
        t = kernel_nexthops(ifaces)?;
        if unresolved_real_servers(&t, config).next().is_none() {
            break;
        }
    }
    Ok(t)
}

/// The real servers of `config` whose next hop has no usable neighbour entry in `t`.
fn unresolved_real_servers<'a>(
    t: &'a NextHops,
    config: &'a Config,
) -> impl Iterator<Item = IpAddr> + 'a {
    config
        .services
        .iter()
        .flat_map(|svc| svc.reals.iter().map(|r| r.addr))
        .filter(|a| t.resolve(*a).is_err())
}

/// Asks the kernel to resolve every real server of `config` that `t` has no neighbour for
/// (real servers are the next hops that matter most); returns them.
fn resolve_real_servers(t: &NextHops, config: &Config) -> Vec<IpAddr> {
    let asked: Vec<IpAddr> = unresolved_real_servers(t, config).collect();
    for addr in &asked {
        resolve(t, *addr);
    }
    asked
}

/// Reads the kernel's tables again and sends them to every worker.
fn refresh_nexthops(ifaces: &[String], txs: &[Sender<Arc<NextHops>>]) -> Option<Arc<NextHops>> {
    match kernel_nexthops(ifaces) {
        Ok(t) => {
            let t = Arc::new(t);
            for tx in txs {
                // A worker that has stopped needs no more updates.
                let _ = tx.send(Arc::clone(&t));
            }
            Some(t)
        }
        Err(e) => {
            log(format_args!("reading routes and neighbours: {e}"));
            None
        }
    }
}

/// Asks the kernel to resolve the next hop toward `addr` (ARP / neighbour solicitation).
fn resolve(t: &NextHops, addr: IpAddr) {
    let Some(route) = t.route(addr) else { return };
    let hop = route.gateway.unwrap_or(addr);
    let Some(ifindex) = route.dev.as_deref().and_then(xdp::ifindex) else {
        return;
    };
    if let Err(e) = netlink::resolve_neighbour(hop, ifindex) {
        log(format_args!("resolving {hop}: {e}"));
    }
}
