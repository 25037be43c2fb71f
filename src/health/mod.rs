//! Health checking: real servers leave and come back on their own.
//!
//! ```text
//!  Config ──> HealthMonitor thread ── Transition ──> control thread
//!             (checks: io_uring or poll,              HealthStates::apply
//!              scripts as children)                   effective_config(configured, states)
//!                                                       └─> Publisher::replace
//! ```
//!
//! [`HealthMonitor`] runs every check of a configuration concurrently on one thread and
//! sends a [`Transition`] whenever a real server goes, comes back, or gets a new dynamic
//! weight. The control thread keeps the [`HealthStates`] and, from the configured table and
//! those states, computes what the workers run with [`effective_config`], a pure function.
//! What is checked and how fast a failure is seen: `docs/health.md`.

pub mod state;

mod checker;
mod poll;
mod uring;

pub use checker::{BackendChoice, BackendKind};

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::service::health::{CheckKind, HealthConfig};
use crate::service::{Config, RealServer, ServiceKey, SocketText};
use checker::{Children, HttpExchange, NetBackend, NetProbe};
use state::{Attempt, Change, ServerHealth};

/// A real server went, came back, or got a new dynamic weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The service the real server belongs to.
    pub service: ServiceKey,
    /// The real server as configured (address, port).
    pub server: (IpAddr, u16),
    /// Whether it is up now.
    pub up: bool,
    /// Its dynamic weight (`misc_dynamic`), if a script gave one.
    pub weight: Option<i32>,
    /// Why: the failed attempt's reason, or what passed.
    pub reason: String,
    /// Wall-clock time of the change.
    pub at: SystemTime,
}

impl Transition {
    /// `2026-11-24T15:40:01Z 10.0.0.2:80 is gone (connect: connection refused)`, `... is
    /// back (...)`, or `... weight 3 (...)` for a weight change while up.
    pub fn log_line(&self) -> String {
        let what = match (self.up, self.reason.starts_with("weight")) {
            (false, _) => "is gone",
            (true, true) => "stays up",
            (true, false) => "is back",
        };
        format!(
            "{} {} {what} ({})",
            rfc3339(self.at),
            SocketText(self.server.0, self.server.1),
            self.reason
        )
    }
}

/// `SystemTime` as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Health of one real server as the control thread last heard it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ServerStatus {
    /// Up or down.
    pub up: bool,
    /// Dynamic weight, if a script gave one.
    pub weight: Option<i32>,
}

/// What the control thread knows of every checked real server, built from transitions.
/// A server it has heard nothing of is up, unless its check starts it down.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthStates {
    servers: HashMap<(ServiceKey, IpAddr, u16), ServerStatus>,
}

impl HealthStates {
    /// No news yet.
    pub fn new() -> HealthStates {
        HealthStates::default()
    }

    /// Records a transition.
    pub fn apply(&mut self, t: &Transition) {
        let entry = self
            .servers
            .entry((t.service, t.server.0, t.server.1))
            .or_insert(ServerStatus {
                up: t.up,
                weight: None,
            });
        entry.up = t.up;
        if t.weight.is_some() {
            entry.weight = t.weight;
        }
    }

    /// The last status heard of a real server.
    pub fn status(&self, service: &ServiceKey, addr: IpAddr, port: u16) -> Option<ServerStatus> {
        self.servers.get(&(*service, addr, port)).copied()
    }

    /// Forgets servers `configured` no longer checks (after a reload).
    pub fn retain_configured(&mut self, configured: &Config) {
        self.servers.retain(|(key, addr, port), _| {
            configured.health.check_for(key, *addr, *port).is_some()
                && configured.services.iter().any(|s| {
                    s.key == *key && s.reals.iter().any(|r| r.addr == *addr && r.port == *port)
                })
        });
    }
}

/// The configuration the workers should run, given the configured one and what health
/// checks say:
///
/// - a down real server is removed, or kept with weight 0 with `inhibit_on_failure` (its
///   connections go on, no new ones come);
/// - an up server with a `misc_dynamic` weight runs with that weight;
/// - a service with a sorry server and no real server up gets the sorry server with weight
///   1; quiesced (inhibited) servers stay beside it at weight 0. When a real server comes
///   back the sorry server goes.
///
/// Unchecked servers are always up. The result keeps `configured.health`.
pub fn effective_config(configured: &Config, states: &HealthStates) -> Config {
    let mut out = configured.clone();
    for svc in &mut out.services {
        let key = svc.key;
        let mut any_up = false;
        svc.reals.retain_mut(|r| {
            let Some(check) = configured.health.check_for(&key, r.addr, r.port) else {
                any_up = true;
                return true;
            };
            let st = states.status(&key, r.addr, r.port).unwrap_or(ServerStatus {
                up: !check.start_down,
                weight: None,
            });
            if st.up {
                any_up = true;
                if let Some(w) = st.weight {
                    r.weight = w;
                }
                true
            } else if check.inhibit_on_failure {
                r.weight = 0;
                true
            } else {
                false
            }
        });
        if any_up {
            continue;
        }
        if let Some(sorry) = configured.health.sorry_server(&key) {
            let server = RealServer {
                addr: sorry.addr,
                port: sorry.port,
                weight: 1,
                method: sorry.method,
                upper_threshold: 0,
                lower_threshold: 0,
            };
            match svc
                .reals
                .iter_mut()
                .find(|r| r.addr == sorry.addr && r.port == sorry.port)
            {
                Some(r) => *r = server,
                None => svc.reals.push(server),
            }
        }
    }
    out
}

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

enum Command {
    Reconfigure(Box<Config>),
    Stop,
}

/// The health-check thread's handle.
#[derive(Debug)]
pub struct HealthMonitor {
    commands: Sender<Command>,
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
        let mut worker = Worker {
            backend,
            children: Children::default(),
            targets: HashMap::new(),
            next_id: 0,
            epoch: std::time::Instant::now(),
            out: tx,
            counters: Arc::clone(&counters),
            log: options.log,
        };
        worker.reconfigure(config);
        let thread = std::thread::Builder::new()
            .name("fastlb-health".into())
            .spawn(move || worker.run(&crx))?;
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
            .send(Command::Reconfigure(Box::new(config.clone())));
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
        let _ = self.commands.send(Command::Stop);
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

struct Worker {
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

impl Worker {
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

    fn run(&mut self, commands: &Receiver<Command>) {
        let mut results = Vec::new();
        loop {
            loop {
                match commands.try_recv() {
                    Ok(Command::Reconfigure(c)) => self.reconfigure(&c),
                    Ok(Command::Stop) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        return
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::health::{ServiceHealth, SorryServer};
    use crate::service::{ForwardMethod, Protocol, SchedFlags, SchedulerKind, VirtualService};

    fn key() -> ServiceKey {
        ServiceKey::Tuple {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port: 80,
        }
    }

    fn real(last: u8, weight: i32) -> RealServer {
        RealServer {
            addr: IpAddr::from([10, 0, 1, last]),
            port: 80,
            weight,
            method: ForwardMethod::DirectRouting,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    fn configured(inhibit_b: bool) -> Config {
        let mut c = Config {
            services: vec![VirtualService {
                key: key(),
                scheduler: SchedulerKind::Wrr,
                flags: SchedFlags::default(),
                mh_table_size: 4093,
                persistence: None,
                reals: vec![real(1, 3), real(2, 2), real(3, 1)],
            }],
            ..Config::default()
        };
        let mut s = ServiceHealth {
            check: Some(HealthConfig::new(CheckKind::Tcp)),
            sorry_server: Some(SorryServer {
                addr: "10.0.9.9".parse().unwrap(),
                port: 8080,
                method: ForwardMethod::Masquerade,
            }),
            ..ServiceHealth::default()
        };
        let mut b = HealthConfig::new(CheckKind::Tcp);
        b.inhibit_on_failure = inhibit_b;
        s.reals.insert((IpAddr::from([10, 0, 1, 2]), 80), b);
        c.health.services.insert(key(), s);
        c
    }

    fn tr(last: u8, up: bool, weight: Option<i32>) -> Transition {
        Transition {
            service: key(),
            server: (IpAddr::from([10, 0, 1, last]), 80),
            up,
            weight,
            reason: "test".into(),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    fn weights(c: &Config) -> Vec<(u8, i32, ForwardMethod)> {
        c.services[0]
            .reals
            .iter()
            .map(|r| match r.addr {
                IpAddr::V4(a) => (a.octets()[3], r.weight, r.method),
                IpAddr::V6(_) => unreachable!(),
            })
            .collect()
    }

    const DR: ForwardMethod = ForwardMethod::DirectRouting;

    #[test]
    fn no_news_means_the_configured_table() {
        let c = configured(false);
        assert_eq!(effective_config(&c, &HealthStates::new()), c);
    }

    #[test]
    fn down_servers_go_or_are_quiesced_and_weights_apply() {
        let c = configured(true);
        let mut st = HealthStates::new();
        st.apply(&tr(1, false, None));
        st.apply(&tr(2, false, None));
        st.apply(&tr(3, true, Some(7)));
        let e = effective_config(&c, &st);
        // 1 removed, 2 quiesced (inhibit_on_failure), 3 runs with its script's weight.
        assert_eq!(weights(&e), vec![(2, 0, DR), (3, 7, DR)]);
        // The rest of the configuration is untouched.
        assert_eq!(e.services[0].scheduler, SchedulerKind::Wrr);
        assert_eq!(e.health, c.health);
        // Coming back restores the configured weight.
        st.apply(&tr(2, true, None));
        let e = effective_config(&c, &st);
        assert_eq!(weights(&e), vec![(2, 2, DR), (3, 7, DR)]);
    }

    #[test]
    fn sorry_server_only_while_nothing_is_up() {
        let c = configured(true);
        let mut st = HealthStates::new();
        for i in 1..=3 {
            st.apply(&tr(i, false, None));
        }
        let e = effective_config(&c, &st);
        // The quiesced server stays (its connections go on) beside the sorry server.
        assert_eq!(
            weights(&e),
            vec![(2, 0, DR), (9, 1, ForwardMethod::Masquerade)]
        );
        assert_eq!(e.services[0].reals[1].port, 8080);
        st.apply(&tr(3, true, None));
        assert_eq!(
            weights(&effective_config(&c, &st)),
            vec![(2, 0, DR), (3, 1, DR)]
        );
    }

    #[test]
    fn unchecked_servers_are_always_up_and_start_down_is_honoured() {
        let mut c = configured(false);
        c.health.services.get_mut(&key()).unwrap().check = None;
        let mut st = HealthStates::new();
        st.apply(&tr(2, false, None));
        // 1 and 3 have no check: a stray transition for them changes nothing either.
        st.apply(&tr(1, false, None));
        assert_eq!(
            weights(&effective_config(&c, &st)),
            vec![(1, 3, DR), (3, 1, DR)]
        );
        let mut c = configured(false);
        let s = c.health.services.get_mut(&key()).unwrap();
        s.check.as_mut().unwrap().start_down = true;
        let e = effective_config(&c, &HealthStates::new());
        assert_eq!(weights(&e), vec![(2, 2, DR)]);
    }

    #[test]
    fn sorry_server_replaces_a_quiesced_entry_with_its_address() {
        let mut c = configured(true);
        c.health.services.get_mut(&key()).unwrap().sorry_server = Some(SorryServer {
            addr: IpAddr::from([10, 0, 1, 2]),
            port: 80,
            method: DR,
        });
        let mut st = HealthStates::new();
        for i in 1..=3 {
            st.apply(&tr(i, false, None));
        }
        assert_eq!(weights(&effective_config(&c, &st)), vec![(2, 1, DR)]);
    }

    #[test]
    fn states_forget_unconfigured_servers() {
        let c = configured(false);
        let mut st = HealthStates::new();
        st.apply(&tr(1, false, None));
        st.apply(&tr(8, false, None));
        st.retain_configured(&c);
        assert!(st.status(&key(), IpAddr::from([10, 0, 1, 1]), 80).is_some());
        assert!(st.status(&key(), IpAddr::from([10, 0, 1, 8]), 80).is_none());
    }

    #[test]
    fn log_lines() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_534_801);
        let mut t = tr(2, false, None);
        t.reason = "connect: connection refused".into();
        t.at = at;
        assert_eq!(
            t.log_line(),
            "2026-11-24T15:40:01Z 10.0.1.2:80 is gone (connect: connection refused)"
        );
        t.up = true;
        t.reason = "connect: ok".into();
        assert_eq!(
            t.log_line(),
            "2026-11-24T15:40:01Z 10.0.1.2:80 is back (connect: ok)"
        );
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // A leap day.
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
