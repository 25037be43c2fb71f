//! The health-check thread: [`HealthMonitor`] is its handle on the control thread; the
//! [`CheckRunner`] it owns starts every due check, collects the results from the network
//! backend and the script children, and sends a [`Transition`] for each change.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use super::checker::{
    self, BackendChoice, BackendKind, Children, HttpExchange, NetBackend, NetProbe,
};
use super::probe::{Probe, Probes};
use super::state::{self, Attempt, Change, ServerHealth};
use super::Transition;
use crate::service::health::{CheckKind, HealthConfig};
use crate::service::{Config, ServiceKey, SocketText};

/// Transition counts per real server, for stats. Written by the monitor thread, read by
/// stats exporters.
#[derive(Debug, Default)]
pub struct HealthCounters {
    inner: Mutex<HashMap<(ServiceKey, IpAddr, u16), TransitionCount>>,
}

/// How often one real server went and came back.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TransitionCount {
    /// Up to down.
    pub down: u64,
    /// Down to up.
    pub up: u64,
}

impl HealthCounters {
    /// Counts of one real server (zero if it never changed).
    pub fn get(&self, service: &ServiceKey, addr: IpAddr, port: u16) -> TransitionCount {
        self.lock()
            .get(&(*service, addr, port))
            .copied()
            .unwrap_or_default()
    }

    /// Every real server that ever changed, with its counts.
    pub fn all(&self) -> Vec<((ServiceKey, IpAddr, u16), TransitionCount)> {
        let mut v: Vec<_> = self.lock().iter().map(|(k, c)| (*k, *c)).collect();
        v.sort_by_key(|e| e.0);
        v
    }

    fn count(&self, t: &Transition) {
        let mut m = self.lock();
        let c = m.entry((t.service, t.server.0, t.server.1)).or_default();
        if t.up {
            c.up += 1;
        } else {
            c.down += 1;
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(ServiceKey, IpAddr, u16), TransitionCount>> {
        // A panicking writer leaves plain counters behind: still worth reading.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How the monitor runs.
#[derive(Clone, Debug)]
pub struct MonitorOptions {
    /// Network backend: io_uring with a poll(2) fallback by default.
    pub backend: BackendChoice,
    /// Print each transition's log line on stderr.
    pub log: bool,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            backend: BackendChoice::Auto,
            log: true,
        }
    }
}

/// What the control thread asks of the monitor thread.
enum MonitorCommand {
    Reconfigure(Box<Config>),
    Stop,
}

/// The health-check thread's handle.
#[derive(Debug)]
pub struct HealthMonitor {
    commands: Sender<MonitorCommand>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<HealthCounters>,
    backend: BackendKind,
}

impl HealthMonitor {
    /// Starts checking every checked real server of `config` on a new thread. Transitions
    /// arrive on the returned channel. Fails when the backend cannot be opened (only with
    /// [`BackendChoice::Uring`] where io_uring is unavailable) or the thread cannot start.
    pub fn start(
        config: &Config,
        options: MonitorOptions,
    ) -> io::Result<(HealthMonitor, Receiver<Transition>)> {
        let (backend, kind) = checker::open_backend(options.backend)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ctx, crx) = crossbeam_channel::unbounded();
        let counters = Arc::new(HealthCounters::default());
        let mut runner = CheckRunner {
            backend,
            children: Children::default(),
            probes: Probes::default(),
            targets: HashMap::new(),
            reported: HashMap::new(),
            next_id: 0,
            epoch: std::time::Instant::now(),
            out: tx,
            counters: Arc::clone(&counters),
            log: options.log,
        };
        runner.reconfigure(config);
        let thread = std::thread::Builder::new()
            .name("fastlb-health".into())
            .spawn(move || runner.run(&crx))?;
        Ok((
            HealthMonitor {
                commands: ctx,
                thread: Some(thread),
                counters,
                backend: kind,
            },
            rx,
        ))
    }

    /// Checks what `config` says from now on. Servers whose check is unchanged keep their
    /// state and schedule; new ones start as their check says.
    pub fn reconfigure(&self, config: &Config) {
        // The thread only goes away in `stop`/`drop`, so the send cannot fail before.
        let _ = self
            .commands
            .send(MonitorCommand::Reconfigure(Box::new(config.clone())));
    }

    /// Transition counters.
    pub fn counters(&self) -> &Arc<HealthCounters> {
        &self.counters
    }

    /// The network backend in use.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// Stops the thread and waits for it (at most the longest check timeout).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.commands.send(MonitorCommand::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One check of one real server (a server with several checks has several targets).
struct Target {
    service: ServiceKey,
    server: (IpAddr, u16),
    /// Which of the server's checks: 0 the check itself, then its `also` in order.
    index: usize,
    /// How many checks the server has.
    checks: usize,
    connect: SocketAddr,
    /// This check alone (its `also` emptied).
    check: HealthConfig,
    http: Option<Arc<HttpExchange>>,
    /// The attempt a thread runs, for the checks that run on threads.
    probe: Option<Arc<Probe>>,
    state: ServerHealth,
    in_flight: bool,
}

/// The monitor thread's state: every check of every checked real server, the backend
/// running network checks, the running scripts and thread-run attempts.
struct CheckRunner {
    backend: Box<dyn NetBackend>,
    children: Children,
    probes: Probes,
    targets: HashMap<u64, Target>,
    /// Per real server, whether it was last reported up: up only while all its checks are.
    reported: HashMap<(ServiceKey, IpAddr, u16), bool>,
    next_id: u64,
    epoch: std::time::Instant,
    out: Sender<Transition>,
    counters: Arc<HealthCounters>,
    log: bool,
}

/// How often the loop looks at running scripts and commands when nothing else is due.
const SCRIPT_TICK: Duration = Duration::from_millis(10);
const IDLE_TICK: Duration = Duration::from_millis(200);

impl CheckRunner {
    fn now(&self) -> crate::time::Instant {
        crate::time::Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    fn reconfigure(&mut self, config: &Config) {
        let now = self.now();
        let mut old: HashMap<(ServiceKey, IpAddr, u16, usize), (u64, Target)> = self
            .targets
            .drain()
            .map(|(id, t)| ((t.service, t.server.0, t.server.1, t.index), (id, t)))
            .collect();
        let mut reported = HashMap::new();
        for svc in &config.services {
            for r in &svc.reals {
                let Some(full) = config.health.check_for(&svc.key, r.addr, r.port) else {
                    continue;
                };
                let server = (svc.key, r.addr, r.port);
                for (index, check) in full.all().enumerate() {
                    let port = check.port.unwrap_or(r.port);
                    if check.uses_network() && port == 0 {
                        // Validation refuses this; a ctl-added server may still get here.
                        eprintln!(
                            "health: {} has no port to check; not checked",
                            SocketText(r.addr, r.port)
                        );
                        continue;
                    }
                    let check = HealthConfig {
                        also: Vec::new(),
                        ..check.clone()
                    };
                    let k = (svc.key, r.addr, r.port, index);
                    if let Some((id, t)) = old.remove(&k) {
                        if t.check == check {
                            self.targets.insert(id, t);
                            continue;
                        }
                    }
                    let connect = SocketAddr::new(r.addr, port);
                    let seed = u64::from(port)
                        ^ ((index as u64) << 56)
                        ^ match r.addr {
                            IpAddr::V4(a) => u64::from(u32::from(a)) << 16,
                            IpAddr::V6(a) => (u128::from(a) as u64) << 16,
                        };
                    let spread = state::warmup_spread(check.warmup, seed);
                    let (http, probe) = match &check.kind {
                        CheckKind::Http(h) => {
                            let ex = Arc::new(HttpExchange::new(h, connect));
                            // TLS and body digests run on threads; plain status checks
                            // stay on the backend.
                            if h.tls.is_some() || h.digest.is_some() {
                                let probe = Probe::Http {
                                    target: connect,
                                    exchange: ex,
                                };
                                (None, Some(Arc::new(probe)))
                            } else {
                                (Some(ex), None)
                            }
                        }
                        CheckKind::Udp(u) => (
                            None,
                            Some(Arc::new(Probe::Udp {
                                target: connect,
                                check: u.clone(),
                            })),
                        ),
                        CheckKind::Ping => (None, Some(Arc::new(Probe::Ping(r.addr)))),
                        CheckKind::Dns(d) => (
                            None,
                            Some(Arc::new(Probe::Dns {
                                target: connect,
                                check: d.clone(),
                            })),
                        ),
                        CheckKind::Tcp | CheckKind::Script(_) => (None, None),
                    };
                    let id = self.next_id;
                    self.next_id += 1;
                    self.targets.insert(
                        id,
                        Target {
                            service: svc.key,
                            server: (r.addr, r.port),
                            index,
                            checks: full.all().count(),
                            connect,
                            state: ServerHealth::new(&check, now, spread),
                            check,
                            http,
                            probe,
                            in_flight: false,
                        },
                    );
                }
                let was = self.reported.get(&server).copied();
                reported.insert(server, was.unwrap_or(!full.starts_down()));
            }
        }
        self.reported = reported;
        // Results of checks that were running for removed targets are dropped on arrival
        // (their ids are gone); running scripts of removed targets are killed.
        let targets = &self.targets;
        self.children.forget(|id| targets.contains_key(&id));
    }

    fn run(&mut self, commands: &Receiver<MonitorCommand>) {
        let mut results = Vec::new();
        loop {
            loop {
                match commands.try_recv() {
                    Ok(MonitorCommand::Reconfigure(c)) => self.reconfigure(&c),
                    Ok(MonitorCommand::Stop)
                    | Err(crossbeam_channel::TryRecvError::Disconnected) => return,
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                }
            }
            let now = self.now();
            let mut next = IDLE_TICK;
            for (&id, t) in &mut self.targets {
                if t.in_flight {
                    continue;
                }
                let due = t.state.due();
                if due > now {
                    next = next.min(due.saturating_since(now));
                    continue;
                }
                t.state.started(now);
                t.in_flight = true;
                let deadline = std::time::Instant::now() + t.check.timeout;
                match &t.check.kind {
                    CheckKind::Script(s) => {
                        if let Err(a) = self.children.start_script(id, s, deadline) {
                            results.push((id, a));
                        }
                    }
                    _ if t.probe.is_some() => {
                        let probe = Arc::clone(t.probe.as_ref().expect("checked"));
                        if let Err(a) = self.probes.start(id, probe, deadline) {
                            results.push((id, a));
                        }
                    }
                    _ => self.backend.start(NetProbe {
                        token: id,
                        target: t.connect,
                        http: t.http.clone(),
                        deadline,
                    }),
                }
            }
            if self.children.busy() || self.probes.busy() {
                next = next.min(SCRIPT_TICK);
            }
            if !results.is_empty() {
                next = Duration::ZERO;
            }
            self.backend.wait(next, &mut results);
            self.children.reap(std::time::Instant::now(), &mut results);
            self.probes.reap(&mut results);
            for (id, attempt) in results.drain(..) {
                self.record(id, attempt);
            }
        }
    }

    fn record(&mut self, id: u64, attempt: Attempt) {
        let now = self.now();
        let Some(t) = self.targets.get_mut(&id) else {
            return;
        };
        t.in_flight = false;
        let passed_reason = match &t.check.kind {
            CheckKind::Tcp => "connect: ok".to_string(),
            CheckKind::Http(h) if h.tls.is_some() => format!("https: GET {} ok", h.path),
            CheckKind::Http(h) => format!("http: GET {} ok", h.path),
            CheckKind::Script(_) => "script: ok".to_string(),
            CheckKind::Udp(_) => "udp: ok".to_string(),
            CheckKind::Ping => "ping: ok".to_string(),
            CheckKind::Dns(_) => "dns: ok".to_string(),
        };
        let Some(change) = t.state.record(now, attempt) else {
            return;
        };
        // The server is up only while every one of its checks is.
        let key = (t.service, t.server.0, t.server.1);
        let all_up = if t.checks == 1 {
            t.state.is_up()
        } else {
            self.targets
                .values()
                .filter(|o| (o.service, o.server.0, o.server.1) == key)
                .all(|o| o.state.is_up())
        };
        let t = &self.targets[&id];
        let was_up = self.reported.get(&key).copied().unwrap_or(true);
        let (up, weight, reason) = match change {
            Change::Up { .. } | Change::Down(_) if all_up == was_up => return,
            Change::Up { weight } => (true, weight, passed_reason),
            Change::Down(reason) => (false, None, reason),
            Change::Weight(_) if !all_up => return,
            Change::Weight(w) => (true, Some(w), format!("weight {w}")),
        };
        self.reported.insert(key, up);
        let tr = Transition {
            service: t.service,
            server: t.server,
            up,
            weight,
            reason,
            at: SystemTime::now(),
        };
        if self.log {
            eprintln!("{}", tr.log_line());
        }
        if tr.reason.starts_with("weight") {
            let _ = self.out.send(tr);
            return;
        }
        self.counters.count(&tr);
        let service = tr.service.to_string();
        let server = SocketText(tr.server.0, tr.server.1).to_string();
        let word = if up { "up" } else { "down" };
        if let Some(cmd) = &t.check.notify {
            self.children.notify(cmd, &[word, &service, &server]);
        }
        let own = if up {
            &t.check.notify_up
        } else {
            &t.check.notify_down
        };
        if let Some(cmd) = own {
            self.children.notify(cmd, &[]);
        }
        // A control thread that has gone away has nothing left to update.
        let _ = self.out.send(tr);
    }
}
