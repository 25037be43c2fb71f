//! The director: the one owner of the control plane's state, sans-IO.
//!
//! ```text
//!  sources, each through a method              the Director              sinks
//!  ─────────────────────────────               ────────────              ─────
//!  ctl socket ─ execute ─> configure,          configured table    ┌─> workers: snapshots and
//!                          set_timeouts, zero  health states       │   next hops (channels)
//!  SIGHUP reload ────────> configure           the staged snapshot ├─> connection table:
//!  health monitor ───────> health_changed      next hops           │   protocol timeouts
//!  kernel tables ────────> nexthops_read,      counters, rates     ├─> XDP filter: service maps,
//!                          neighbour_missing   the pair's state     │   local addresses, standby
//!  VRRP addresses ───────> addresses_held           │              ├─> health monitor: what to check
//!  clock ────────────────> tick                     │              ├─> BIRD: the VIPs to announce
//!  ctl --drain ──────────> drain                    │              ├─> kernel: neighbours to resolve
//!  ctl (sync verbs) ─────> start_sync_daemon,       │              ├─> sync thread: daemons' sockets
//!                          stop_sync_daemon         └─ reconcile ──┴─> workers: standby flag
//! ```
//!
//! Every source changes the director only through its methods, and nothing else writes the
//! state the workers run from. A method that changes the configured table builds the next
//! snapshot at once (so a change that cannot be made is refused to whoever asked, and the
//! running table stays); nothing leaves the director until [`Director::reconcile`], which
//! hands the staged snapshot and the newest next hops to the workers' channels, applies
//! protocol timeouts to the shared connection table, and returns the rest as a [`Push`]:
//! what needs a system call (the XDP maps, the health thread, neighbour resolution) is done
//! by the caller, the appliance's loop. (Only `-Z` acts at once: it zeroes counters the
//! workers share, which no snapshot holds.) The director reads no clock (the loop hands
//! `now` to [`Director::tick`]) and opens no socket, so tests drive it through its methods
//! and check what each reconcile step pushes.
//!
//! The workers always run `effective_config(configured, health states)`: the configured
//! table less the real servers health checks took out, as [`effective_config`] says.
//!
//! **The director pair.** When the configuration follows a keepalived VRRP instance
//! ([`PairConfig`](crate::service::pair::PairConfig)), the director is MASTER while the
//! system holds every address of the instance and BACKUP otherwise
//! ([`Director::addresses_held`]); it starts as BACKUP until the first look. As BACKUP it is
//! the standby and forwards nothing: the reconcile step raises the workers' standby flag
//! and asks for the XDP filter's standby drop ([`Push::pair`]); the sync daemons follow the
//! state as keepalived drives the kernel's.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::listing::{self, ConnView, TableView};
use super::metrics::{HealthShare, MetricsSource};
use super::{PublishError, Publisher};
use crate::conn::defence::{Defence, EntryDropper};
use crate::conn::ConnTable;
use crate::forward::nexthop::NextHops;
use crate::ha::bgp::announcements;
use crate::health::{effective_config, health_view, HealthStates, Transition};
use crate::service::bgp::BgpSettings;
use crate::service::pair::{SyncRoles, VrrpState};
use crate::service::{Config, DestRegistry, ServiceKey, ServiceTable, TimeoutSettings};
use crate::stats::rate::RateTable;
use crate::stats::WorkerStats;
use crate::time::Instant;

/// How often the ids of removed real servers whose connections have all gone are reused.
const RECLAIM_INTERVAL: Duration = Duration::from_secs(1);

/// How long after asking the kernel to resolve a next hop the director wants the kernel's
/// tables read back quickly ([`Director::resolving`]): a packet toward a next hop with no
/// MAC is dropped, so the answer is wanted within milliseconds, not at the next second.
pub const RESOLVE_WINDOW: Duration = Duration::from_secs(1);

/// The state the director shares with the workers, built before them.
#[derive(Clone)]
pub struct DataPlane {
    /// Real servers' shared counters (connections per server, OVERLOAD).
    pub registry: Arc<DestRegistry>,
    /// The connection table.
    pub conns: Arc<ConnTable>,
    /// Every worker's counters.
    pub workers: Vec<Arc<WorkerStats>>,
    /// The next hops the workers start with.
    pub nexthops: Arc<NextHops>,
    /// Raised while this director is a pair's standby: the workers drop every frame.
    pub standby: Arc<AtomicBool>,
}

/// What one worker receives from the director after it starts: every new snapshot of the
/// service table and every new next-hop table, newest last.
#[derive(Debug)]
pub struct WorkerFeed {
    /// Snapshots of the service table.
    pub tables: Receiver<Arc<ServiceTable>>,
    /// Routing and neighbour tables.
    pub nexthops: Receiver<Arc<NextHops>>,
}

/// Asks the kernel to resolve `hop` on `dev` (ARP or neighbour solicitation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighbourRequest {
    /// The next hop: the route's gateway, or the destination itself on a connected route.
    pub hop: IpAddr,
    /// The route's device.
    pub dev: String,
}

/// What one reconcile step pushed to the workers, and what the caller must still push.
#[derive(Clone, Debug, Default)]
pub struct Push {
    /// A new snapshot, already sent to the workers. The XDP filter's maps must follow it.
    pub table: Option<Arc<ServiceTable>>,
    /// New next hops, already sent to the workers.
    pub nexthops: Option<Arc<NextHops>>,
    /// New protocol timeouts, already applied to the connection table.
    pub timeouts: Option<TimeoutSettings>,
    /// The director's own addresses changed: the XDP filter must leave them to the kernel.
    pub local_addresses: Option<Vec<IpAddr>>,
    /// The configured table changed: the health monitor must check what it says now.
    pub health_checks: Option<Config>,
    /// Next hops the kernel should resolve.
    pub resolve: Vec<NeighbourRequest>,
    /// The pair's state changed (the workers' standby flag already follows it): the XDP
    /// filter must drop service traffic while BACKUP, and the sync daemons follow.
    pub pair: Option<PairState>,
    /// The sync daemons changed: the sync thread must run these (sockets to open or close).
    pub sync: Option<SyncPlan>,
    /// What BIRD must announce changed (the VIPs, or the `[bgp]` settings).
    pub announce: Option<Announce>,
}

/// What the director announces to the router by BGP ([`crate::ha::bgp`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Announce {
    /// The `[bgp]` settings; `None` when the configuration has none (no BIRD runs).
    pub settings: Option<BgpSettings>,
    /// The VIPs to announce.
    pub vips: BTreeSet<IpAddr>,
}

impl Push {
    /// Whether the step changed nothing.
    pub fn is_empty(&self) -> bool {
        self.table.is_none()
            && self.nexthops.is_none()
            && self.timeouts.is_none()
            && self.local_addresses.is_none()
            && self.health_checks.is_none()
            && self.resolve.is_empty()
            && self.pair.is_none()
            && self.announce.is_none()
            && self.sync.is_none()
    }
}

/// Where this director stands in its pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairState {
    /// The followed VRRP instance, if any (none: a lone director, always MASTER).
    pub instance: Option<String>,
    /// MASTER forwards; BACKUP is the standby and forwards nothing.
    pub state: VrrpState,
    /// The sync daemons that run in this state.
    pub sync: SyncRoles,
}

impl PairState {
    /// Whether the director forwards nothing.
    pub fn standby(&self) -> bool {
        self.state == VrrpState::Backup
    }
}

/// What the next reconcile step owes, besides the publisher's staged snapshot.
#[derive(Debug, Default)]
struct Owed {
    nexthops: bool,
    timeouts: bool,
    local_addresses: bool,
    health_checks: bool,
    resolve: Vec<NeighbourRequest>,
    pair: bool,
    sync: bool,
}

/// The one owner of the control plane: the configured table, the health states, the
/// publisher of snapshots, the next hops and the counters' readers. See the module docs.
pub struct Director {
    /// The table as configured: the file, then ctl's edits. What `-S` saves.
    configured: Config,
    /// What the health monitor last said of each checked real server.
    health: HealthStates,
    /// Up or down per checked real server, for the metrics thread (read at each scrape).
    health_view: HealthShare,
    /// Builds the snapshots the workers run and holds their channels.
    publisher: Publisher,
    conns: Arc<ConnTable>,
    workers: Vec<Arc<WorkerStats>>,
    rates: RateTable,
    nexthops: Arc<NextHops>,
    nexthop_feeds: Vec<Sender<Arc<NextHops>>>,
    local_addresses: Vec<IpAddr>,
    /// The addresses the system held at the last look ([`Director::addresses_held`]).
    held: Vec<IpAddr>,
    pair: PairState,
    standby: Arc<AtomicBool>,
    /// Next hops the kernel was asked to resolve (new real servers, the workers' misses)
    /// and not seen resolved yet, with when they were asked for.
    resolving: Vec<(IpAddr, Instant)>,
    now: Instant,
    next_reclaim: Option<Instant>,
    owed: Owed,
    /// `ctl --drain`: announce nothing, keep serving.
    drained: bool,
    /// What the last reconcile step told BIRD.
    announced: Announce,
    /// Connection sync: the daemons and what they share with the workers.
    sync: SyncControl,
    /// The defence strategies' modes, evaluated once a second.
    defence: Defence,
    /// The `drop_entry` walk's memory between walks.
    dropper: EntryDropper,
}

impl Director {
    /// A director running `config` over `plane`. The first snapshot is what the workers
    /// start with ([`Director::table`]); health checks have said nothing yet, so servers
    /// whose check starts them down are not in it. Applies the configured protocol
    /// timeouts to the connection table. A director that follows a VRRP instance starts as
    /// its standby (BACKUP) until [`Director::addresses_held`] says otherwise, with the
    /// workers' standby flag raised at once.
    pub fn new(config: Config, plane: DataPlane) -> Result<Director, PublishError> {
        let health = HealthStates::new();
        let config_defence = config.defence;
        let publisher = Publisher::new(effective_config(&config, &health), plane.registry)?;
        plane.conns.timeouts().apply(&config.timeouts);
        let pair = pair_state(&config, &[]);
        plane.standby.store(pair.standby(), Ordering::Relaxed);
        let health_view = Arc::new(Mutex::new(health_view(&config, &health)));
        Ok(Director {
            held: Vec::new(),
            pair,
            standby: plane.standby,
            health_view,
            local_addresses: plane.nexthops.local_addresses().collect(),
            configured: config,
            health,
            publisher,
            conns: plane.conns,
            workers: plane.workers,
            rates: RateTable::new(),
            nexthops: plane.nexthops,
            nexthop_feeds: Vec::new(),
            resolving: Vec::new(),
            now: Instant::ZERO,
            next_reclaim: None,
            // The first step always says where the director stands.
            owed: Owed {
                pair: true,
                ..Owed::default()
            },
            drained: false,
            announced: Announce::default(),
            sync: SyncControl::default(),
            defence: Defence::new(config_defence),
            dropper: EntryDropper::new(random_seed()),
        })
    }

    /// The channels a new worker listens on.
    pub fn attach_worker(&mut self) -> WorkerFeed {
        let (tx, nexthops) = crossbeam_channel::unbounded();
        self.nexthop_feeds.push(tx);
        WorkerFeed {
            tables: self.publisher.subscribe(),
            nexthops,
        }
    }

    /// A metrics source that follows the snapshots this director publishes and the health
    /// checks' view of each checked real server.
    pub fn metrics_source(&mut self) -> MetricsSource {
        let source = MetricsSource::new(&mut self.publisher, self.workers.clone())
            .with_health(Arc::clone(&self.health_view))
            .with_conns(Arc::clone(&self.conns));
        match self.sync_plane() {
            Some((shared, counters)) => source.with_sync(shared, counters),
            None => source,
        }
    }

    /// Shares the health states with the metrics thread.
    fn share_health(&self) {
        let view = health_view(&self.configured, &self.health);
        *self.health_view.lock().unwrap_or_else(|e| e.into_inner()) = view;
    }

    /// The configured table (what ctl edits and `-S` saves).
    pub fn config(&self) -> &Config {
        &self.configured
    }

    /// The snapshot the workers run, or will from the next reconcile step.
    pub fn table(&self) -> Arc<ServiceTable> {
        self.publisher.table()
    }

    /// The newest next hops.
    pub fn nexthops(&self) -> &Arc<NextHops> {
        &self.nexthops
    }

    /// The director's own addresses, from the newest next hops.
    pub fn local_addresses(&self) -> &[IpAddr] {
        &self.local_addresses
    }

    /// Source ctl (`-A -E -D -a -e -d -C -R`) and reload: `config` becomes the configured
    /// table. Builds the snapshot the workers will run; if that fails nothing changes.
    /// `config` must already be validated.
    /// Real servers new to the table whose next hop has no neighbour entry are resolved at
    /// once, not at the next reading of the kernel's tables.
    pub fn configure(&mut self, config: Config) -> Result<(), PublishError> {
        self.publisher
            .stage(effective_config(&config, &self.health))?;
        self.health.retain_configured(&config);
        self.owed.health_checks |=
            config.services != self.configured.services || config.health != self.configured.health;
        self.owed.timeouts |= config.timeouts != self.configured.timeouts;
        self.defence.configure(config.defence);
        self.sync_settings_changed(&config);
        let known: Vec<IpAddr> = real_addresses(&self.configured).collect();
        let new: Vec<IpAddr> = real_addresses(&config)
            .filter(|a| !known.contains(a))
            .filter(|a| self.nexthops.resolve(*a).is_err())
            .collect();
        for addr in new {
            self.ask(addr);
        }
        if config.accept_macs != self.nexthops.extra_macs() {
            let mut t = NextHops::clone(&self.nexthops);
            t.set_extra_macs(&config.accept_macs);
            self.nexthops = Arc::new(t);
            self.owed.nexthops = true;
        }
        self.configured = config;
        self.share_health();
        self.follow_pair();
        Ok(())
    }

    /// Source ctl (`--set`): the protocol timeouts from now on (0s already replaced by the
    /// old values). They belong to the configuration and to the connection table.
    pub fn set_timeouts(&mut self, timeouts: TimeoutSettings) -> Result<(), PublishError> {
        let mut config = self.configured.clone();
        config.timeouts = timeouts;
        self.configure(config)
    }

    /// Source ctl (`-Z`): zeroes the traffic counters and rate estimators of one service, or
    /// of all.
    pub fn zero(&mut self, service: Option<&ServiceKey>) {
        let table = self.publisher.table();
        for svc in &table.services {
            if service.is_some_and(|k| *k != svc.config.key) {
                continue;
            }
            for d in &svc.dests {
                for w in &self.workers {
                    let s = w.dest(d.id);
                    for c in [&s.conns, &s.in_pkts, &s.out_pkts, &s.in_bytes, &s.out_bytes] {
                        c.zero();
                    }
                }
            }
        }
        self.rates.zero(service, &table, &self.workers);
    }

    /// Source ctl (`--drain`, `--undrain`): while drained the director announces nothing,
    /// so the router sends it no new flows, and keeps forwarding what still arrives.
    pub fn drain(&mut self, drained: bool) {
        self.drained = drained;
    }

    /// Whether the director is drained.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// What the director announces, as of the last reconcile step.
    pub fn announced(&self) -> &Announce {
        &self.announced
    }

    /// The `-L` view of the running table, with counters and rates.
    pub fn table_view(&self) -> TableView {
        listing::build_table_view(
            &self.publisher.table(),
            self.publisher.registry(),
            &self.workers,
            Some(&self.rates),
            self.configured.conn_capacity,
        )
    }

    /// What `fastlb top` shows at each refresh (`ctl --top`): the `-L` view, the health
    /// checks' view (servers they took out included), drops and the workers' counters.
    pub fn top_snapshot(&self) -> crate::control::top::Snapshot {
        let health = self.health_view.lock().unwrap_or_else(|e| e.into_inner());
        crate::control::top::build(
            self.publisher.table().generation,
            &self.table_view(),
            &health,
            &self.workers,
        )
    }

    /// The connection table for `-L -c`, as of the last [`tick`](Director::tick).
    pub fn connections(&self) -> Vec<ConnView> {
        let mut v = Vec::new();
        self.conns.for_each(self.now, |e| v.push(ConnView::from(e)));
        v
    }

    /// Source health monitor: records what the checks said, then builds the snapshot the
    /// workers will run. If that fails the states are kept and the running table stays.
    pub fn health_changed<'a>(
        &mut self,
        transitions: impl IntoIterator<Item = &'a Transition>,
    ) -> Result<(), PublishError> {
        let mut any = false;
        for t in transitions {
            self.health.apply(t);
            any = true;
        }
        if any {
            self.share_health();
            self.publisher
                .stage(effective_config(&self.configured, &self.health))?;
        }
        Ok(())
    }

    /// Source kernel tables: the routes and neighbours, read again. Real servers the kernel
    /// has no neighbour entry for are to be resolved (again, unless asked for within the
    /// last [`RESOLVE_WINDOW`]).
    pub fn nexthops_read(&mut self, mut table: NextHops) {
        table.set_extra_macs(&self.configured.accept_macs);
        let now = self.now;
        self.resolving
            .retain(|(a, asked)| table.resolve(*a).is_err() && now < *asked + RESOLVE_WINDOW);
        for addr in real_addresses(&self.configured) {
            if table.resolve(addr).is_err() && !self.resolving.iter().any(|(a, _)| *a == addr) {
                self.owed.resolve.extend(neighbour_request(&table, addr));
            }
        }
        let local: Vec<IpAddr> = table.local_addresses().collect();
        if local != self.local_addresses {
            self.local_addresses = local;
            self.owed.local_addresses = true;
        }
        self.nexthops = Arc::new(table);
        self.owed.nexthops = true;
    }

    /// Source VRRP addresses: the addresses the system holds now (every interface). The
    /// pair's state follows: MASTER while every address of the followed instance is held.
    pub fn addresses_held(&mut self, mut held: Vec<IpAddr>) {
        held.sort_unstable();
        held.dedup();
        self.held = held;
        self.follow_pair();
    }

    /// Where this director stands in its pair (as of the last step's sources).
    pub fn pair(&self) -> &PairState {
        &self.pair
    }

    fn follow_pair(&mut self) {
        let now = pair_state(&self.configured, &self.held);
        if now != self.pair {
            self.pair = now;
            self.owed.pair = true;
        }
        self.follow_pair_sync();
    }

    /// Source workers: a packet's next hop toward `addr` had no neighbour entry.
    pub fn neighbour_missing(&mut self, addr: IpAddr) {
        self.ask(addr);
    }

    /// Asks the kernel to resolve the next hop toward `addr` (unless that was asked within
    /// the last [`RESOLVE_WINDOW`]) and wants the tables read back quickly meanwhile.
    fn ask(&mut self, addr: IpAddr) {
        let now = self.now;
        if self
            .resolving
            .iter()
            .any(|(a, asked)| *a == addr && now < *asked + RESOLVE_WINDOW)
        {
            return;
        }
        if let Some(r) = neighbour_request(&self.nexthops, addr) {
            self.owed.resolve.push(r);
            self.resolving.retain(|(a, _)| *a != addr);
            self.resolving.push((addr, now));
        }
    }

    /// Whether the kernel was asked to resolve a next hop within the last
    /// [`RESOLVE_WINDOW`] and fastlb has not seen it resolved: the kernel's tables should be
    /// read back at once.
    pub fn resolving(&self) -> bool {
        self.resolving
            .iter()
            .any(|(_, asked)| self.now < *asked + RESOLVE_WINDOW)
    }

    /// Source clock: call every control-loop turn. Runs the rate estimators when their
    /// interval has passed and, once a second, lets the ids of removed real servers whose
    /// connections have gone be reused and evaluates the defence strategies (as the
    /// kernel's `defense_work_handler`).
    pub fn tick(&mut self, now: Instant) {
        self.now = now;
        let table = self.publisher.table();
        self.rates.tick(now, &table, &self.workers);
        match self.next_reclaim {
            Some(due) if now < due => {}
            Some(_) => {
                self.publisher.reclaim();
                self.update_defence();
                self.next_reclaim = Some(now + RECLAIM_INTERVAL);
            }
            None => self.next_reclaim = Some(now + RECLAIM_INTERVAL),
        }
    }

    /// `update_defense_level`: the strategies' modes from the table's free entries, and
    /// the level the workers apply until the next evaluation.
    /// With `drop_entry` on, then walks a random 1/32 of the table
    /// (`ip_vs_random_dropentry`, [`EntryDropper`]).
    fn update_defence(&mut self) {
        let free = self.conns.capacity().saturating_sub(self.conns.len()) as u64;
        let level = self.defence.update(free);
        self.conns.defence().store(level);
        if level.drop_entry {
            let (start, count) = self.dropper.next_walk(self.conns.capacity());
            let dropper = &mut self.dropper;
            self.conns
                .drop_entries(self.now, start, count, |c| dropper.choose(c));
        }
    }

    /// The defence strategies' modes now (`drop_packet`, `secure_tcp`): 1 and 2 switch
    /// into each other as the table fills and empties, as the kernel's sysctls read.
    pub fn defence_modes(&self) -> (u8, u8) {
        self.defence.modes()
    }

    /// The `drop_entry` mode now (1 and 2 switch into each other as the table fills and
    /// empties, as the kernel's sysctl reads).
    pub fn drop_entry_mode(&self) -> u8 {
        self.defence.drop_entry_mode()
    }

    /// The reconcile step: pushes what changed since the last step to the workers and the
    /// connection table, and returns it with what the caller must push to the XDP filter,
    /// the health monitor and the kernel.
    pub fn reconcile(&mut self) -> Push {
        let owed = std::mem::take(&mut self.owed);
        let nexthops = owed.nexthops.then(|| {
            let t = Arc::clone(&self.nexthops);
            // A worker that has gone away needs no more updates.
            self.nexthop_feeds
                .retain(|tx| tx.send(Arc::clone(&t)).is_ok());
            t
        });
        self.publish_sync_rules();
        let timeouts = owed.timeouts.then(|| {
            self.conns.timeouts().apply(&self.configured.timeouts);
            self.configured.timeouts
        });
        let pair = owed.pair.then(|| {
            self.standby.store(self.pair.standby(), Ordering::Relaxed);
            self.pair.clone()
        });
        let table = self.publisher.publish();
        let settings = self.configured.bgp.clone();
        let vips = settings.as_ref().map_or_else(BTreeSet::new, |s| {
            announcements(
                &self.publisher.table(),
                &self.configured.health,
                s,
                self.drained,
            )
        });
        let want = Announce { settings, vips };
        let announce = (want != self.announced).then(|| {
            self.announced = want.clone();
            want
        });
        Push {
            table,
            nexthops,
            timeouts,
            local_addresses: owed.local_addresses.then(|| self.local_addresses.clone()),
            health_checks: owed.health_checks.then(|| self.configured.clone()),
            resolve: owed.resolve,
            pair,
            announce,
            sync: owed.sync.then(|| self.sync_plan()),
        }
    }
}

/// The pair's state under `config` with `held` (sorted) the addresses the system holds.
fn pair_state(config: &Config, held: &[IpAddr]) -> PairState {
    let state = config.pair.state(|a| held.binary_search(&a).is_ok());
    PairState {
        instance: config.pair.followed.clone(),
        state,
        sync: config.pair.sync_roles(state),
    }
}

/// The addresses of every real server `config` names.
pub(crate) fn real_addresses(config: &Config) -> impl Iterator<Item = IpAddr> + '_ {
    config
        .services
        .iter()
        .flat_map(|svc| svc.reals.iter().map(|r| r.addr))
}

/// The neighbour to resolve on the way to `addr`, if a route with a device leads there.
pub(crate) fn neighbour_request(t: &NextHops, addr: IpAddr) -> Option<NeighbourRequest> {
    let route = t.route(addr)?;
    Some(NeighbourRequest {
        hop: route.gateway.unwrap_or(addr),
        dev: route.dev.clone()?,
    })
}

mod sync;
#[cfg(test)]
mod tests;

use sync::SyncControl;
pub use sync::SyncPlan;

/// A seed that differs from run to run, for the `drop_entry` walk's random start.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x6472_6f70_656e_7472);
    h.finish()
}
