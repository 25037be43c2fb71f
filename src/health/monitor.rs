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
            targets: HashMap::new(),
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

struct Target {
    service: ServiceKey,
    server: (IpAddr, u16),
    connect: SocketAddr,
    check: HealthConfig,
    http: Option<Arc<HttpExchange>>,
    state: ServerHealth,
    in_flight: bool,
}

/// The monitor thread's state: every checked real server, the backend running network
/// checks and the running scripts.
struct CheckRunner {
    backend: Box<dyn NetBackend>,
    children: Children,
    targets: HashMap<u64, Target>,
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
        let mut old: HashMap<(ServiceKey, IpAddr, u16), (u64, Target)> = self
            .targets
            .drain()
            .map(|(id, t)| ((t.service, t.server.0, t.server.1), (id, t)))
            .collect();
        for svc in &config.services {
            for r in &svc.reals {
                let Some(check) = config.health.check_for(&svc.key, r.addr, r.port) else {
                    continue;
                };
                let port = check.port.unwrap_or(r.port);
                if check.uses_network() && port == 0 {
                    // Validation refuses this; a ctl-added server may still get here.
                    eprintln!(
                        "health: {} has no port to check; not checked",
                        SocketText(r.addr, r.port)
                    );
                    continue;
                }
                let k = (svc.key, r.addr, r.port);
                if let Some((id, t)) = old.remove(&k) {
                    if t.check == *check {
                        self.targets.insert(id, t);
                        continue;
                    }
                }
                let connect = SocketAddr::new(r.addr, port);
                let seed = u64::from(port)
                    ^ match r.addr {
                        IpAddr::V4(a) => u64::from(u32::from(a)) << 16,
                        IpAddr::V6(a) => (u128::from(a) as u64) << 16,
                    };
                let spread = state::warmup_spread(check.warmup, seed);
                let http = match &check.kind {
                    CheckKind::Http(h) => Some(Arc::new(HttpExchange::new(h, connect))),
                    _ => None,
                };
                let id = self.next_id;
                self.next_id += 1;
                self.targets.insert(
                    id,
                    Target {
                        service: svc.key,
                        server: (r.addr, r.port),
                        connect,
                        check: check.clone(),
                        http,
                        state: ServerHealth::new(check, now, spread),
                        in_flight: false,
                    },
                );
            }
        }
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
                    CheckKind::Tcp | CheckKind::Http(_) => self.backend.start(NetProbe {
                        token: id,
                        target: t.connect,
                        http: t.http.clone(),
                        deadline,
                    }),
                }
            }
            if self.children.busy() {
                next = next.min(SCRIPT_TICK);
            }
            if !results.is_empty() {
                next = Duration::ZERO;
            }
            self.backend.wait(next, &mut results);
            self.children.reap(std::time::Instant::now(), &mut results);
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
            CheckKind::Http(h) => format!("http: GET {} ok", h.path),
            CheckKind::Script(_) => "script: ok".to_string(),
        };
        let Some(change) = t.state.record(now, attempt) else {
            return;
        };
        let (up, weight, reason) = match change {
            Change::Up { weight } => (true, weight, passed_reason),
            Change::Down(reason) => (false, None, reason),
            Change::Weight(w) => (true, Some(w), format!("weight {w}")),
        };
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
