//! The appliance: `fastlb --iface IF [--iface IF2] --config FILE`, the I/O shell around the
//! [`Director`].
//!
//! The calling thread becomes the control thread. [`run`] is start, turn, stop:
//! `Appliance::start` builds the director and the state it shares with the workers, starts
//! one AF_XDP worker per queue (each running a [`Pipeline`]) and the threads around them;
//! then the control loop turns every 20 ms, each turn one `Appliance::turn`:
//!
//! ```text
//!   director.tick(now)                        timers
//!   for source in sources: source.poll(..)    VRRP addresses, ctl socket, SIGHUP reload,
//!                                             health reports, kernel next hops (`sources`)
//!   plane.push(director.reconcile())          XDP filter maps, health checks, neighbours,
//!                                             sync daemons' sockets, BIRD (the VIPs
//!                                             announced by BGP)
//! ```
//!
//! Nothing else changes the director: the one thing a sink reports back (a sync daemon
//! whose socket would not open) goes through its method too.
//!
//! Before it serves, the appliance has the kernel resolve its real servers' next hops and
//! waits for them (up to a second), so that the first packets to them are not dropped.
//!
//! SIGINT or SIGTERM ends the loop: with `[bgp]`, the VIPs are withdrawn first and the
//! director keeps serving for `shutdown_grace_ms` while the router moves the flows away,
//! then BIRD stops; then the ctl socket is removed, the health thread stopped, the workers
//! drained and the XDP program detached, and the connection table is written to the state
//! file (`ha::state_file`) that the next start reads back before its workers run. On
//! SIGTERM with a state file, the XDP program is not detached but set to hold the
//! interfaces for the next start (`datapath::xdp::hold`): for `restart_hold`, nothing of the
//! services reaches the kernel's stack.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;

use super::ctl::CtlServer;
use super::metrics::MetricsServer;
use super::sources::{
    startup_nexthops, HealthReports, KernelNextHops, Reload, Source, VrrpAddresses,
};
use super::{DataPlane, Director, PairState, PublishError, Push};
use crate::conn::ConnTable;
use crate::datapath::pipeline::{Pipeline, PipelineSettings};
use crate::datapath::xdp::{self, netlink, XdpError, XdpMode, XdpOptions};
use crate::forward::nexthop::NextHops;
use crate::ha::bird::Bird;
use crate::ha::state_file::{self, StateFile};
use crate::ha::sync::counters::DaemonCounters;
use crate::ha::sync::thread::{SyncContext, SyncThread};
use crate::ha::sync::{self, SyncHook};
use crate::health::{HealthMonitor, MonitorOptions};
use crate::log::log;
use crate::service::config::{self, ConfigError};
use crate::service::{DestRegistry, ServiceTable, SyncRole};
use crate::stats::WorkerStats;
use crate::time::Instant;

/// Connection table size when the configuration sets none.
pub const DEFAULT_CONN_CAPACITY: usize = 1 << 20;

/// One turn of the control loop: how long it sleeps between turns.
const TURN: Duration = Duration::from_millis(20);

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
    /// `--state-file`: where the connection table is written at exit and read at start
    /// (wins over `[director] state_file`; an empty path turns it off).
    pub state_file: Option<PathBuf>,
    /// `--restart-hold`: after SIGTERM with a state file written, how long the XDP program
    /// holds the interfaces for the next start (zero: detach at once, as on SIGINT).
    pub restart_hold: Duration,
}

/// Where the connection state goes: `--state-file`, else `[director] state_file`, else
/// beside the ctl socket with the extension `.state` (`/run/fastlb/ctl.state`: a tmpfs,
/// so a reboot, after which no connection survives anyway, starts clean). `None` when the
/// path given is empty.
pub fn state_file_path(
    opts: &ApplianceOptions,
    config: &crate::service::Config,
) -> Option<PathBuf> {
    let path = opts
        .state_file
        .clone()
        .or_else(|| config.state_file.clone())
        .unwrap_or_else(|| opts.ctl_socket.with_extension("state"));
    (!path.as_os_str().is_empty()).then_some(path)
}

/// Reads the connection state a previous run wrote, before the workers start. A file that
/// is refused changes nothing: the table stays empty, and the log says why.
fn restore_state(
    path: &Path,
    conns: &ConnTable,
    table: &ServiceTable,
    workers: usize,
    in_pkts: u32,
) {
    let now_ms = state_file::wall_ms();
    match StateFile::load(path, now_ms) {
        Ok(None) => log(format_args!(
            "state: no {}; starting with an empty connection table",
            path.display()
        )),
        Ok(Some(file)) => {
            let done = file.restore(now_ms, conns, table, workers, xdp::monotonic_now(), in_pkts);
            log(format_args!(
                "state: read {} (written {} ms ago): {done}",
                path.display(),
                now_ms.saturating_sub(file.written_ms)
            ));
            // Read once: a later crash, which writes nothing, must not bring these back.
            if let Err(e) = std::fs::remove_file(path) {
                log(format_args!("state: removing {}: {e}", path.display()));
            }
        }
        Err(e) => log(format_args!(
            "state: {} refused, nothing restored ({e}); starting with an empty connection table",
            path.display()
        )),
    }
}

/// Writes the connection table once the workers have stopped; whether it was written.
fn save_state(path: &Path, conns: &ConnTable, table: &ServiceTable) -> bool {
    let t0 = std::time::Instant::now();
    match state_file::write(path, conns, table, xdp::monotonic_now()) {
        Ok(w) => {
            log(format_args!(
                "state: wrote {} connection(s) and {} template(s) to {} ({} bytes, {} ms)",
                w.conns,
                w.templates,
                path.display(),
                w.bytes,
                t0.elapsed().as_millis()
            ));
            true
        }
        Err(e) => {
            log(format_args!("state: writing {}: {e}", path.display()));
            false
        }
    }
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

/// Runs the appliance until SIGINT or SIGTERM: starts it, turns the control loop every
/// 20 ms, stops it.
pub fn run(opts: &ApplianceOptions) -> Result<(), ApplianceError> {
    let mut appliance = Appliance::start(opts)?;
    while !appliance.stop.load(Ordering::Relaxed) {
        appliance.turn(xdp::monotonic_now());
        std::thread::sleep(TURN);
    }
    appliance.stop()
}

/// A running appliance: the director, the sources that change it, and the sinks its
/// reconcile steps go to.
struct Appliance {
    director: Director,
    /// Polled in this order every turn.
    sources: Vec<Box<dyn Source>>,
    plane: Plane,
    /// Raised by SIGINT and SIGTERM.
    stop: Arc<AtomicBool>,
    /// Raised by SIGTERM alone: a planned restart, which holds the interfaces.
    term: Arc<AtomicBool>,
    /// `--restart-hold`.
    restart_hold: Duration,
    metrics: Option<MetricsServer>,
    conns: Arc<ConnTable>,
    /// Where the connection table is written at exit.
    state_path: Option<PathBuf>,
}

impl Appliance {
    /// Builds the director and the state it shares with the workers, reads back the previous
    /// run's connections, starts the sync thread, the workers, the ctl socket and the health
    /// checks, and applies the director's first step.
    fn start(opts: &ApplianceOptions) -> Result<Appliance, ApplianceError> {
        let config = config::load(&opts.config)?;
        let xopts = XdpOptions {
            ifaces: opts.ifaces.clone(),
            queues: opts.queues,
            mode: opts.xdp_mode,
            busy_poll: opts.busy_poll,
            cores: opts.cores.clone(),
            // The interfaces a stopped run holds under this state file, if any, are taken over.
            hold_key: state_file_path(opts, &config),
            ..XdpOptions::default()
        };
        let workers = xdp::worker_count(&xopts).max(1);
        let capacity = if config.conn_capacity == 0 {
            DEFAULT_CONN_CAPACITY
        } else {
            config.conn_capacity
        };
        let data = data_plane(opts, &config, workers, capacity)?;
        let mut director = Director::new(config.clone(), data.clone())?;
        // The connections of the previous run, once its rules are loaded and before a worker
        // runs (so any worker's slots may take them).
        let state_path = state_file_path(opts, &config);
        if let Some(path) = &state_path {
            restore_state(
                path,
                &data.conns,
                &director.table(),
                workers,
                config.sync.threshold(),
            );
        }
        let (missing_tx, missing_rx) = crossbeam_channel::bounded::<IpAddr>(1024);

        // Each worker's feed from the director, handed over when the datapath builds its
        // pipeline.
        let feeds: Vec<_> = (0..workers)
            .map(|_| Some(director.attach_worker()))
            .collect();
        let feeds = Mutex::new(feeds);

        // Connection sync: each worker's hook, and the sync thread with the other ends. No
        // daemon runs until ctl (--start-daemon) or the configuration starts one.
        let (sync_shared, hooks, ends) = sync::channels(workers, &config.sync);
        let sync_counters = Arc::new(DaemonCounters::default());
        director.attach_sync(Arc::clone(&sync_shared), Arc::clone(&sync_counters));
        // Where this director stands in its pair, before any worker runs: a standby must not
        // forward even its first packet, and the sync daemons follow its state from the
        // start.
        let mut vrrp = VrrpAddresses::new();
        vrrp.poll(xdp::monotonic_now(), &mut director);
        let first_step = director.reconcile();
        let sync_thread = SyncThread::spawn(SyncContext {
            conns: Arc::clone(&data.conns),
            tables: director.attach_worker().tables,
            table: director.table(),
            shared: sync_shared,
            ends,
            counters: sync_counters,
        })
        .map_err(io("starting the sync thread"))?;
        let hooks: Mutex<Vec<Option<SyncHook>>> = Mutex::new(hooks.into_iter().map(Some).collect());
        let metrics = match opts.metrics {
            Some(addr) => Some(
                MetricsServer::spawn(addr, director.metrics_source())
                    .map_err(io("starting the metrics server"))?,
            ),
            None => None,
        };
        let settings = PipelineSettings {
            tunnel_source_v4: config.tunnel_source_v4,
            tunnel_source_v6: config.tunnel_source_v6,
            ..PipelineSettings::default()
        };
        let first = director.table();
        let make = |w: usize| {
            let feed = feeds.lock().expect("not poisoned")[w]
                .take()
                .expect("one pipeline per worker");
            Pipeline::new(
                w,
                Arc::clone(&first),
                Arc::clone(&data.conns),
                Arc::clone(&data.nexthops),
                Arc::clone(&data.workers[w]),
                settings,
            )
            .with_updates(feed.tables)
            .with_nexthop_updates(feed.nexthops)
            .with_missing_neighbours(missing_tx.clone())
            .with_standby(Arc::clone(&data.standby))
            .with_sync(
                hooks.lock().expect("not poisoned")[w]
                    .take()
                    .expect("one pipeline per worker"),
            )
        };

        let (stop, reload) = signal_flags().map_err(io("installing signal handlers"))?;
        let term = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&term))
            .map_err(io("installing signal handlers"))?;

        let mut datapath = xdp::start(&xopts, &data.workers, make, Arc::clone(&stop))?;
        program_filter(&mut datapath, &director).map_err(XdpError::from)?;
        // Maps and sockets ready: the program a stopped run left holding goes now.
        let taken = datapath.filter().take_over().map_err(XdpError::from)?;
        if !taken.is_empty() {
            log(format_args!(
                "hold: took {} over from the previous run's XDP program",
                taken.join(", ")
            ));
        }
        if let Some(dir) = opts.ctl_socket.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating the ctl socket's directory"))?;
        }
        let ctl = CtlServer::bind(&opts.ctl_socket).map_err(io("binding the ctl socket"))?;
        let (monitor, transitions) = HealthMonitor::start(&config, MonitorOptions::default())
            .map_err(io("starting health checks"))?;
        let plane = Plane {
            datapath,
            monitor,
            bird: None,
            sync: sync_thread,
        };
        log(format_args!(
            "serving {} with {workers} worker(s), {} service(s), connection table {capacity}; ctl {}",
            opts.ifaces.join(", "),
            first.services.len(),
            opts.ctl_socket.display()
        ));
        log_next_hops(&first, &data.nexthops, &opts.ifaces);
        let sources: Vec<Box<dyn Source>> = vec![
            Box::new(vrrp),
            Box::new(ctl),
            Box::new(Reload::new(opts.config.clone(), reload)),
            Box::new(HealthReports::new(transitions)),
            Box::new(KernelNextHops::new(
                opts.ifaces.clone(),
                missing_rx,
                xdp::monotonic_now(),
            )),
        ];
        let mut appliance = Appliance {
            director,
            sources,
            plane,
            stop,
            term,
            restart_hold: opts.restart_hold,
            metrics,
            conns: data.conns,
            state_path,
        };
        appliance.apply(first_step);
        Ok(appliance)
    }

    /// One turn of the control loop: the clock, then each source, then one reconcile step.
    fn turn(&mut self, now: Instant) {
        self.director.tick(now);
        for source in &mut self.sources {
            source.poll(now, &mut self.director);
        }
        let step = self.director.reconcile();
        self.apply(step);
        self.plane.retry();
    }

    /// Pushes one reconcile step to the sinks; a sync daemon whose socket would not open
    /// goes back to the director.
    fn apply(&mut self, step: Push) {
        for role in self.plane.push(step) {
            self.director.sync_daemon_failed(role);
        }
    }

    /// Stops in order: BGP withdrawn first (while the workers still forward what the router
    /// sends meanwhile), then the ctl socket, the health thread, the sync thread and the
    /// workers; then the connection table goes to the state file.
    fn stop(self) -> Result<(), ApplianceError> {
        let Appliance {
            director,
            sources,
            plane,
            metrics,
            conns,
            state_path,
            term,
            restart_hold,
            ..
        } = self;
        let Plane {
            mut datapath,
            monitor,
            bird,
            sync,
        } = plane;
        if let Some(bird) = bird {
            bird.stop();
        }
        // A planned restart (SIGTERM with a state file): the program holds the interfaces
        // from now on, before the sockets close, so that nothing of the services reaches
        // the kernel.
        let mut hold =
            term.load(Ordering::Relaxed) && state_path.is_some() && !restart_hold.is_zero();
        if hold {
            if let Err(e) = datapath.filter().hold() {
                log(format_args!("hold: {e}; detaching XDP instead"));
                hold = false;
            }
        }
        if hold {
            log(format_args!(
                "stopping: draining workers; XDP holds the interfaces for the next start (up to {} s)",
                restart_hold.as_secs()
            ));
        } else {
            log(format_args!("stopping: draining workers and detaching XDP"));
        }
        // The ctl socket goes first, then the health thread and the workers' channels.
        drop(sources);
        drop(monitor);
        drop(sync);
        let table = director.table();
        drop(director);
        let (totals, links) = datapath.join_holding()?;
        let saved = match &state_path {
            Some(path) => save_state(path, &conns, &table),
            None => false,
        };
        match &state_path {
            Some(key) if hold && saved && !links.is_empty() => {
                let names: Vec<String> = links
                    .iter()
                    .map(|l| xdp::hold::iface_name(l.ifindex))
                    .collect();
                match xdp::hold::hand_off(key, links, restart_hold) {
                    Ok(pid) => log(format_args!(
                        "hold: {} held by pid {pid} for the next start (up to {} s)",
                        names.join(", "),
                        restart_hold.as_secs()
                    )),
                    Err(e) => log(format_args!("hold: {e}; XDP detached")),
                }
            }
            // Closing the links detaches the program.
            _ => drop(links),
        }
        if let Some(m) = metrics {
            m.stop();
        }
        log(format_args!(
            "stopped: rx {} tx {} passed {}",
            totals.rx, totals.tx, totals.passed
        ));
        Ok(())
    }
}

/// The state the director shares with the workers: the real servers' counters, the
/// connection table, each worker's counters, the next hops to start with (the kernel's,
/// once the real servers' neighbours are resolved) and the standby flag.
fn data_plane(
    opts: &ApplianceOptions,
    config: &crate::service::Config,
    workers: usize,
    capacity: usize,
) -> Result<DataPlane, ApplianceError> {
    let registry = Arc::new(DestRegistry::default());
    let conns = Arc::new(ConnTable::configured(
        capacity,
        config,
        workers,
        Arc::clone(&registry),
    ));
    let stats: Vec<Arc<WorkerStats>> = (0..workers)
        .map(|_| Arc::new(WorkerStats::new(registry.capacity())))
        .collect();
    let mut nexthops =
        startup_nexthops(&opts.ifaces, config).map_err(io("reading routes and neighbours"))?;
    nexthops.set_extra_macs(&config.accept_macs);
    Ok(DataPlane {
        registry,
        conns,
        workers: stats,
        nexthops: Arc::new(nexthops),
        standby: Arc::new(AtomicBool::new(false)),
    })
}

/// The XDP filter's first programming, before anything is redirected: the standby drop
/// first, then the service maps, the director's own addresses and the MACs it takes.
fn program_filter(
    datapath: &mut xdp::Datapath,
    director: &Director,
) -> Result<(), xdp::FilterError> {
    datapath.filter().set_standby(director.pair().standby())?;
    datapath.filter().sync(&director.table())?;
    datapath
        .filter()
        .set_local_addresses(director.local_addresses())?;
    sync_macs(datapath, director.nexthops())
}

/// Makes the XDP filter take frames for the MACs the workers take: each interface's own
/// (devices are numbered in `--iface` order, as the filter attached them) and the
/// configuration's `accept_macs`.
fn sync_macs(datapath: &mut xdp::Datapath, nexthops: &NextHops) -> Result<(), xdp::FilterError> {
    let filter = datapath.filter();
    let own: Vec<_> = (0..filter.attached().len())
        .map(|i| u16::try_from(i).ok().and_then(|i| nexthops.device_mac(i)))
        .collect();
    filter.set_accepted_macs(&own, nexthops.extra_macs())
}

/// SIGINT and SIGTERM set the first flag (stop), SIGHUP the second (reload).
fn signal_flags() -> std::io::Result<(Arc<AtomicBool>, Arc<AtomicBool>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))?;
    Ok((stop, reload))
}

/// Logs, for each real server, its next hop or why it has none yet.
fn log_next_hops(table: &ServiceTable, nexthops: &NextHops, ifaces: &[String]) {
    for real in table.services.iter().flat_map(|s| &s.dests) {
        let addr = real.server.addr;
        match nexthops.resolve(addr) {
            Ok(nh) => log(format_args!(
                "real server {addr}: next hop {} on {}",
                nh.mac,
                ifaces.get(usize::from(nh.dev)).map_or("?", String::as_str)
            )),
            Err(reason) => log(format_args!(
                "real server {addr}: not reachable yet ({})",
                reason.name()
            )),
        }
    }
}

/// The sinks that take a system call: the XDP filter's maps, the health thread, the
/// kernel's neighbour table, BIRD. (The workers' channels and the connection table the
/// director updates itself.)
struct Plane {
    datapath: xdp::Datapath,
    monitor: HealthMonitor,
    /// The BIRD announcing the VIPs, while the configuration has `[bgp]`.
    bird: Option<Bird>,
    sync: SyncThread,
}

impl Plane {
    /// Asks BIRD again for a configuration it has not confirmed yet (every turn).
    fn retry(&mut self) {
        if let Some(bird) = &mut self.bird {
            bird.retry();
        }
    }

    /// The pair's state changed: the XDP filter drops service traffic while BACKUP.
    fn follow_pair(&mut self, pair: &PairState) {
        if let Err(e) = self.datapath.filter().set_standby(pair.standby()) {
            log(format_args!("XDP filter update failed: {e}"));
        }
        let Some(instance) = &pair.instance else {
            return;
        };
        let what = if pair.standby() {
            "standby: forwarding nothing"
        } else {
            "forwarding"
        };
        let daemons: Vec<&str> = [(pair.sync.master, "master"), (pair.sync.backup, "backup")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        let sync = if daemons.is_empty() {
            String::new()
        } else {
            format!("; sync daemon {}", daemons.join(" and "))
        };
        // What the filter dropped as the standby so far: the proof that a standby forwarded
        // nothing that reached it (the workers count the few frames already on their way).
        let dropped = match self.datapath.filter().counters() {
            Ok(c) => format!(" (XDP standby drops so far: {})", c.standby_dropped),
            Err(_) => String::new(),
        };
        log(format_args!(
            "VRRP instance {instance} is {} here: {what}{sync}{dropped}",
            pair.state
        ));
    }

    /// Applies one reconcile step. Failures are logged; the next change tries again. Returns
    /// the sync daemons whose socket would not open (they do not run).
    fn push(&mut self, push: Push) -> Vec<SyncRole> {
        let mut failed = Vec::new();
        if let Some(plan) = &push.sync {
            for (role, e) in &plan.refused {
                log(format_args!(
                    "{role} sync daemon (lvs_sync_daemon) not started: {e}"
                ));
            }
            for (role, e) in self.sync.apply(&plan.daemons, plan.sock_size) {
                log(format_args!("{role} sync daemon not started: {e}"));
                failed.push(role);
            }
            for d in [&plan.daemons.master, &plan.daemons.backup]
                .into_iter()
                .flatten()
            {
                if !failed.contains(&d.role) {
                    log(format_args!("{}", d.listing_line().trim_end()));
                }
            }
        }
        if let Some(table) = &push.table {
            if let Err(e) = self.datapath.filter().sync(table) {
                log(format_args!("XDP filter update failed: {e}"));
            }
        }
        if let Some(addrs) = &push.local_addresses {
            if let Err(e) = self.datapath.filter().set_local_addresses(addrs) {
                log(format_args!("XDP filter update failed: {e}"));
            }
        }
        if let Some(nexthops) = &push.nexthops {
            if let Err(e) = sync_macs(&mut self.datapath, nexthops) {
                log(format_args!("XDP filter update failed: {e}"));
            }
        }
        if let Some(config) = &push.health_checks {
            self.monitor.reconfigure(config);
        }
        if let Some(pair) = &push.pair {
            self.follow_pair(pair);
        }
        if let Some(a) = &push.announce {
            match (&a.settings, &mut self.bird) {
                (Some(s), Some(bird)) => bird.update(s, &a.vips),
                (Some(s), None) => match Bird::start(s, &a.vips) {
                    Ok(bird) => self.bird = Some(bird),
                    Err(e) => log(format_args!("bgp: starting {}: {e}", s.bird.display())),
                },
                (None, _) => {
                    if let Some(bird) = self.bird.take() {
                        bird.stop();
                    }
                }
            }
        }
        for r in &push.resolve {
            let Some(ifindex) = xdp::ifindex(&r.dev) else {
                continue;
            };
            if let Err(e) = netlink::resolve_neighbour(r.hop, ifindex) {
                log(format_args!("resolving {}: {e}", r.hop));
            }
        }
        failed
    }
}
