//! The experiments: what happens to established flows when a director or a real server
//! comes or goes, how evenly mh spreads them, and what a different list order costs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use fastlb::sched::MaglevHashing;
use fastlb::service::{Dest, DestId, SchedFlags, SchedulerKind};
use serde::Serialize;

use crate::model::{random_bin, real_server, service, Director, Ecmp, Flow, NextHops, Rng};
use crate::progress::Progress;

/// A scheduler setting the simulation compares.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sched {
    /// `-s mh`: the source address picks the slot.
    Mh,
    /// `-s mh -b mh-port`: source address and port.
    MhPort,
    /// `-s rr`.
    Rr,
    /// `-s wlc`, the IPVS default.
    Wlc,
}

impl Sched {
    /// The scheduler kind and whether mh-port is set.
    fn setting(self) -> (SchedulerKind, bool) {
        match self {
            Sched::Mh => (SchedulerKind::Mh, false),
            Sched::MhPort => (SchedulerKind::Mh, true),
            Sched::Rr => (SchedulerKind::Rr, false),
            Sched::Wlc => (SchedulerKind::Wlc, false),
        }
    }
}

/// A director or a real server joining or leaving.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// One leaves (withdrawn, drained, dead; removed from the list).
    Remove,
    /// One joins.
    Add,
}

/// Mean, minimum and maximum of a share over several cases (positions, trials).
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Stat {
    /// Of `values` (none gives zeros).
    pub fn of(values: &[f64]) -> Stat {
        if values.is_empty() {
            return Stat {
                mean: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        Stat {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Positions in a list of `count` at which a director leaves or joins: all of them up to
/// `max`, else `max` spread evenly from the first to the last.
pub fn positions(count: usize, max: usize) -> Vec<usize> {
    if count <= max || max < 2 {
        return (0..count).collect();
    }
    (0..max).map(|i| i * (count - 1) / (max - 1)).collect()
}

/// What one director event did to the flows.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DirectorOutcome {
    /// Flows the router now sends to another director.
    pub moved: usize,
    /// Flows whose real server changed.
    pub broken: usize,
}

/// A simulated cluster: fastlb directors behind one route, each with the same service
/// (`reals` real servers in the same order) and its own scheduler instance and counters.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Directors before the event.
    pub directors: usize,
    /// The router's multipath method.
    pub ecmp: Ecmp,
    /// The service's scheduler.
    pub sched: Sched,
    /// Real servers.
    pub reals: usize,
    /// mh table size.
    pub table_size: u32,
}

/// Every flow opens on the director the router picks; then a director leaves (or joins)
/// at `position` of the router's list and every flow sends its next packet.
///
/// A flow that stays on its director finds its connection entry and keeps its real server.
/// A flow that lands on another director finds none there and is scheduled like a new one
/// (what `sloppy_tcp` / `sloppy_udp` do with a mid-flow packet); it breaks if that pick is
/// another real server. Old entries stay where they were (as until their timeout), so wlc
/// sees the load every director has.
pub fn director_change(
    flows: &[Flow],
    c: &Cluster,
    event: Event,
    position: usize,
) -> DirectorOutcome {
    let Cluster {
        directors,
        ecmp,
        sched,
        reals,
        table_size,
    } = *c;
    let (kind, port) = sched.setting();
    let svc = service(
        kind,
        port,
        table_size,
        (0..reals).map(real_server).collect(),
    );
    let mut before: Vec<Option<Director>> = (0..directors)
        .map(|_| Some(Director::new(&svc, reals)))
        .collect();
    let route = NextHops::new(ecmp, directors);
    let mut home = Vec::with_capacity(flows.len());
    let mut server = Vec::with_capacity(flows.len());
    for f in flows {
        let d = route.pick(f.ecmp_hash);
        home.push(d);
        server.push(before[d].as_mut().expect("present").open(&svc, f));
    }

    // The router's list after the event, each entry the director's index before it (None
    // for the one that joins).
    let mut list: Vec<Option<usize>> = (0..directors).map(Some).collect();
    match event {
        Event::Remove => {
            list.remove(position);
        }
        Event::Add => list.insert(position, None),
    }
    let mut after: Vec<Director> = list
        .iter()
        .map(|d| match d {
            Some(d) => before[*d].take().expect("each director once"),
            None => Director::new(&svc, reals),
        })
        .collect();
    let route = NextHops::new(ecmp, list.len());
    let mut out = DirectorOutcome {
        moved: 0,
        broken: 0,
    };
    for (i, f) in flows.iter().enumerate() {
        let j = route.pick(f.ecmp_hash);
        if list[j] == Some(home[i]) {
            continue;
        }
        out.moved += 1;
        if after[j].open(&svc, f) != server[i] {
            out.broken += 1;
        }
    }
    out
}

/// One row of the director experiment: a cluster size, an event, a router and a scheduler,
/// over several positions of the director that leaves or joins.
#[derive(Clone, Debug, Serialize)]
pub struct DirectorChange {
    /// Directors before the event.
    pub directors: usize,
    /// Remove or add one.
    pub event: Event,
    /// The router's multipath method.
    pub ecmp: Ecmp,
    /// The service's scheduler.
    pub scheduler: Sched,
    /// Real servers behind every director.
    pub reals: usize,
    /// mh table size.
    pub table_size: u32,
    /// Positions (in the router's list) of the director that left or joined.
    pub positions: Vec<usize>,
    /// Flows simulated.
    pub flows: usize,
    /// Share of flows the router moved to another director.
    pub moved: Stat,
    /// Share of flows whose real server changed.
    pub broken: Stat,
}

/// Settings of the director experiment.
#[derive(Clone, Debug, Serialize)]
pub struct DirectorSettings {
    /// Cluster sizes.
    pub directors: Vec<usize>,
    /// Real servers.
    pub reals: usize,
    /// mh table size.
    pub table_size: u32,
    /// At most this many positions per cluster size and event.
    pub max_positions: usize,
}

/// Runs the director experiment on `threads` threads.
pub fn director_changes(
    flows: &[Flow],
    s: &DirectorSettings,
    threads: usize,
    progress: &Progress,
) -> Vec<DirectorChange> {
    let scheds = [Sched::Mh, Sched::MhPort, Sched::Rr, Sched::Wlc];
    let mut rows = Vec::new();
    let mut tasks = Vec::new();
    for &n in &s.directors {
        for event in [Event::Remove, Event::Add] {
            let count = match event {
                Event::Remove => n,
                Event::Add => n + 1,
            };
            // A cluster of one that loses its director has no route left.
            if n == 1 && event == Event::Remove {
                continue;
            }
            let pos = positions(count, s.max_positions);
            for ecmp in Ecmp::ALL {
                for sched in scheds {
                    let row = rows.len();
                    rows.push(DirectorChange {
                        directors: n,
                        event,
                        ecmp,
                        scheduler: sched,
                        reals: s.reals,
                        table_size: s.table_size,
                        positions: pos.clone(),
                        flows: flows.len(),
                        moved: Stat::of(&[]),
                        broken: Stat::of(&[]),
                    });
                    tasks.extend(pos.iter().map(|&p| (row, p)));
                }
            }
        }
    }
    progress.start("directors", tasks.len());
    let outcomes = par_map(&tasks, threads, progress, |&(row, p)| {
        let r = &rows[row];
        let cluster = Cluster {
            directors: r.directors,
            ecmp: r.ecmp,
            sched: r.scheduler,
            reals: r.reals,
            table_size: r.table_size,
        };
        director_change(flows, &cluster, r.event, p)
    });
    let share = |k: usize| k as f64 / flows.len() as f64;
    for (row, r) in rows.iter_mut().enumerate() {
        let mine: Vec<&DirectorOutcome> = tasks
            .iter()
            .zip(&outcomes)
            .filter(|((t, _), _)| *t == row)
            .map(|(_, o)| o)
            .collect();
        let moved: Vec<f64> = mine.iter().map(|o| share(o.moved)).collect();
        let broken: Vec<f64> = mine.iter().map(|o| share(o.broken)).collect();
        r.moved = Stat::of(&moved);
        r.broken = Stat::of(&broken);
    }
    progress.finish();
    rows
}

/// Applies `f` to every task on `threads` threads, in task order.
fn par_map<T: Sync, R: Send>(
    tasks: &[T],
    threads: usize,
    progress: &Progress,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..tasks.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(t) = tasks.get(i) else { break };
                let r = f(t);
                results.lock().expect("no panic while held")[i] = Some(r);
                progress.step();
            });
        }
    });
    results
        .into_inner()
        .expect("no panic while held")
        .into_iter()
        .map(|r| r.expect("every task ran"))
        .collect()
}

/// Every flow's pick on a director that has just loaded `dests` (its list in this order).
fn picks(flows: &[Flow], sched: Sched, table_size: u32, dests: Vec<Dest>) -> Vec<DestId> {
    let (kind, port) = sched.setting();
    let n = dests.iter().map(|d| d.id.0 as usize + 1).max().unwrap_or(0);
    let svc = service(kind, port, table_size, dests);
    let mut d = Director::new(&svc, n);
    flows.iter().map(|f| d.open(&svc, f)).collect()
}

/// Each table slot's real server id (`None` if empty), for the table mh builds from `dests`.
fn table(dests: &[Dest], table_size: u32) -> Vec<Option<DestId>> {
    MaglevHashing::new(dests, table_size, SchedFlags::default())
        .slots()
        .map(|s| s.map(|i| dests[i].id))
        .collect()
}

fn differ<T: PartialEq>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len().max(1) as f64
}

/// One row of the real-server experiment.
#[derive(Clone, Debug, Serialize)]
pub struct RealServerChange {
    /// mh table size (rr ignores it).
    pub table_size: u32,
    /// Real servers before the event.
    pub reals: usize,
    /// Remove or add one.
    pub event: Event,
    /// The service's scheduler.
    pub scheduler: Sched,
    /// Trials (a different server removed or added each time).
    pub trials: usize,
    /// Flows simulated.
    pub flows: usize,
    /// The least any scheduler must move: the share on the removed server, or 1/(R + 1)
    /// for the one that joins.
    pub ideal: f64,
    /// Share of flows whose pick changed (what a flow without a connection entry sees).
    pub changed: Stat,
    /// Share of flows whose pick changed between two servers that both stay: moves no
    /// scheduler needs to make.
    pub needless: Stat,
    /// mh only: share of table slots that changed server (Maglev's measure).
    pub slots_changed: Option<Stat>,
}

/// One row of the balance experiment: how evenly mh spreads load at a table size.
#[derive(Clone, Debug, Serialize)]
pub struct Balance {
    /// mh table size.
    pub table_size: u32,
    /// Real servers.
    pub reals: usize,
    /// Most table slots of one server over the mean (M / R).
    pub slots_max_over_mean: f64,
    /// Fewest table slots of one server over the mean.
    pub slots_min_over_mean: f64,
    /// Servers that got no slot at all (M < R leaves some out).
    pub servers_without_slot: usize,
    /// Flows simulated.
    pub flows: usize,
    /// Most flows on one server over the mean, without mh-port.
    pub flows_max_over_mean: f64,
    /// The same with mh-port.
    pub flows_port_max_over_mean: f64,
    /// Baseline: the same flows, each client address sent to a uniformly random server.
    pub random_max_over_mean: f64,
    /// Baseline: each flow sent to a uniformly random server.
    pub random_port_max_over_mean: f64,
}

/// One row of the list-order experiment.
#[derive(Clone, Debug, Serialize)]
pub struct OrderMismatch {
    /// mh table size.
    pub table_size: u32,
    /// Real servers.
    pub reals: usize,
    /// Share of slots whose server differs between the list and the same list reversed.
    pub slots_differ: f64,
    /// Share of flows (without mh-port) whose pick differs.
    pub flows_differ: f64,
}

/// Settings of the real-server, balance and order experiments.
#[derive(Clone, Debug, Serialize)]
pub struct RealServerSettings {
    /// mh table sizes.
    pub table_sizes: Vec<u32>,
    /// Real server counts.
    pub reals: Vec<usize>,
    /// Trials per event.
    pub trials: usize,
    /// Seed for the choice of the server that leaves.
    pub seed: u64,
}

/// Counts per server id.
fn loads(ids: impl Iterator<Item = DestId>, n: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for id in ids {
        c[id.0 as usize] += 1;
    }
    c
}

fn max_over_mean(loads: &[usize], total: usize) -> f64 {
    let mean = total as f64 / loads.len() as f64;
    *loads.iter().max().unwrap_or(&0) as f64 / mean
}

/// A director's picks for every flow, and its mh table, before a real-server change.
struct Baseline {
    sched: Sched,
    table_size: u32,
    picks: Vec<DestId>,
    /// mh only.
    table: Option<Vec<Option<DestId>>>,
}

/// What one real-server change did, as shares.
struct Trial {
    /// Flows whose pick changed.
    changed: f64,
    /// Flows whose pick changed between two servers that both stay.
    needless: f64,
    /// mh only: table slots that changed server.
    slots: Option<f64>,
}

impl Baseline {
    fn new(flows: &[Flow], sched: Sched, table_size: u32, dests: &[Dest]) -> Baseline {
        Baseline {
            sched,
            table_size,
            picks: picks(flows, sched, table_size, dests.to_vec()),
            table: (sched != Sched::Rr).then(|| table(dests, table_size)),
        }
    }

    /// Loads `list` (the list after the change) on a fresh director and compares; `subject`
    /// is the server that left or joined.
    fn compare(&self, flows: &[Flow], event: Event, list: Vec<Dest>, subject: DestId) -> Trial {
        let after_table = self.table.as_ref().map(|_| table(&list, self.table_size));
        let after = picks(flows, self.sched, self.table_size, list);
        let needless = self
            .picks
            .iter()
            .zip(&after)
            .filter(|(b, a)| {
                b != a
                    && match event {
                        Event::Remove => **b != subject,
                        Event::Add => **a != subject,
                    }
            })
            .count() as f64
            / flows.len() as f64;
        Trial {
            changed: differ(&self.picks, &after),
            needless,
            slots: self
                .table
                .as_deref()
                .zip(after_table.as_deref())
                .map(|(b, a)| differ(b, a)),
        }
    }
}

/// Runs the real-server, balance and list-order experiments.
pub fn real_server_changes(
    flows: &[Flow],
    s: &RealServerSettings,
    progress: &Progress,
) -> (Vec<RealServerChange>, Vec<Balance>, Vec<OrderMismatch>) {
    let mut changes = Vec::new();
    let mut balance = Vec::new();
    let mut order = Vec::new();
    progress.start(
        "real servers",
        s.reals.len() * (s.table_sizes.len() * 2 + 1),
    );
    for &r in &s.reals {
        let mut rng = Rng::new(s.seed ^ r as u64);
        let removed: Vec<usize> = rng.sample(r, s.trials);
        let dests: Vec<Dest> = (0..r).map(real_server).collect();
        let without = |k: usize| -> Vec<Dest> {
            let mut l = dests.clone();
            l.remove(k);
            l
        };
        let with_new = |t: usize| -> Vec<Dest> {
            let mut l = dests.clone();
            l.push(real_server(r + t));
            l
        };
        let mut scheds = Vec::new();
        for &m in &s.table_sizes {
            scheds.push((Sched::Mh, m));
            scheds.push((Sched::MhPort, m));
        }
        // rr does not look at the table size; one row per real-server count.
        scheds.push((Sched::Rr, s.table_sizes[0]));
        for (sched, m) in scheds {
            let is_mh = sched != Sched::Rr;
            let base = Baseline::new(flows, sched, m, &dests);
            for event in [Event::Remove, Event::Add] {
                let mut changed = Vec::new();
                let mut needless = Vec::new();
                let mut slots = Vec::new();
                let mut ideal = Vec::new();
                for (t, &k) in removed.iter().enumerate() {
                    let (list, subject) = match event {
                        Event::Remove => (without(k), DestId(k as u32)),
                        Event::Add => (with_new(t), DestId((r + t) as u32)),
                    };
                    ideal.push(match event {
                        Event::Remove => {
                            base.picks.iter().filter(|&&b| b == subject).count() as f64
                                / flows.len() as f64
                        }
                        Event::Add => 1.0 / (r + 1) as f64,
                    });
                    let trial = base.compare(flows, event, list, subject);
                    changed.push(trial.changed);
                    needless.push(trial.needless);
                    slots.extend(trial.slots);
                }
                changes.push(RealServerChange {
                    table_size: m,
                    reals: r,
                    event,
                    scheduler: sched,
                    trials: s.trials,
                    flows: flows.len(),
                    ideal: Stat::of(&ideal).mean,
                    changed: Stat::of(&changed),
                    needless: Stat::of(&needless),
                    slots_changed: is_mh.then(|| Stat::of(&slots)),
                });
            }
            if sched == Sched::MhPort {
                let plain = picks(flows, Sched::Mh, m, dests.clone());
                let t = base.table.as_deref().expect("mh has a table");
                let slot_loads = loads(t.iter().flatten().copied(), r);
                balance.push(Balance {
                    table_size: m,
                    reals: r,
                    slots_max_over_mean: max_over_mean(&slot_loads, t.len()),
                    slots_min_over_mean: *slot_loads.iter().min().unwrap_or(&0) as f64
                        / (t.len() as f64 / r as f64),
                    servers_without_slot: slot_loads.iter().filter(|&&c| c == 0).count(),
                    flows: flows.len(),
                    flows_max_over_mean: max_over_mean(
                        &loads(plain.iter().copied(), r),
                        flows.len(),
                    ),
                    flows_port_max_over_mean: max_over_mean(
                        &loads(base.picks.iter().copied(), r),
                        flows.len(),
                    ),
                    random_max_over_mean: max_over_mean(
                        &loads(
                            flows.iter().map(|f| {
                                DestId(random_bin(u32::from(f.client).into(), m.into(), r) as u32)
                            }),
                            r,
                        ),
                        flows.len(),
                    ),
                    random_port_max_over_mean: max_over_mean(
                        &loads(
                            flows.iter().map(|f| {
                                let key =
                                    (u64::from(u32::from(f.client)) << 16) | u64::from(f.port);
                                DestId(random_bin(key, m.into(), r) as u32)
                            }),
                            r,
                        ),
                        flows.len(),
                    ),
                });
                let reversed: Vec<Dest> = dests.iter().rev().cloned().collect();
                order.push(OrderMismatch {
                    table_size: m,
                    reals: r,
                    slots_differ: differ(t, &table(&reversed, m)),
                    flows_differ: differ(&plain, &picks(flows, Sched::Mh, m, reversed)),
                });
            }
            progress.step();
        }
    }
    progress.finish();
    (changes, balance, order)
}

/// One point of the resilience experiment (after Maglev's figure on backend failures).
#[derive(Clone, Debug, Serialize)]
pub struct Resilience {
    /// mh table size.
    pub table_size: u32,
    /// Real servers before.
    pub reals: usize,
    /// Servers removed at once.
    pub removed: usize,
    /// `removed / reals`: the share of slots (and flows) that must change.
    pub removed_share: f64,
    /// Share of table slots whose server changed.
    pub slots_changed: f64,
    /// Share of flows (without mh-port) whose pick changed.
    pub flows_changed: f64,
}

/// Settings of the resilience experiment.
#[derive(Clone, Debug, Serialize)]
pub struct ResilienceSettings {
    /// mh table sizes.
    pub table_sizes: Vec<u32>,
    /// Real servers.
    pub reals: usize,
    /// Percentages of them removed at once.
    pub removed_pct: Vec<u32>,
    /// Seed for the choice of servers that leave.
    pub seed: u64,
}

/// Removes a growing share of the real servers at once (each step's set contains the
/// previous one) and counts the slots and flows that change server.
pub fn resilience(flows: &[Flow], s: &ResilienceSettings, progress: &Progress) -> Vec<Resilience> {
    let dests: Vec<Dest> = (0..s.reals).map(real_server).collect();
    let order = Rng::new(s.seed).sample(s.reals, s.reals);
    let mut out = Vec::new();
    progress.start("resilience", s.table_sizes.len() * s.removed_pct.len());
    for &m in &s.table_sizes {
        let before_table = table(&dests, m);
        let before = picks(flows, Sched::Mh, m, dests.clone());
        for &pct in &s.removed_pct {
            let k = (s.reals * pct as usize).div_ceil(100);
            let gone: std::collections::HashSet<usize> = order[..k].iter().copied().collect();
            let list: Vec<Dest> = dests
                .iter()
                .filter(|d| !gone.contains(&(d.id.0 as usize)))
                .cloned()
                .collect();
            out.push(Resilience {
                table_size: m,
                reals: s.reals,
                removed: k,
                removed_share: k as f64 / s.reals as f64,
                slots_changed: differ(&before_table, &table(&list, m)),
                flows_changed: differ(&before, &picks(flows, Sched::Mh, m, list)),
            });
            progress.step();
        }
    }
    progress.finish();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::flows;

    fn quiet() -> Progress {
        Progress::new(false)
    }

    #[test]
    fn positions_cover_both_ends() {
        assert_eq!(positions(3, 8), [0, 1, 2]);
        assert_eq!(positions(65, 5), [0, 16, 32, 48, 64]);
    }

    #[test]
    fn mh_keeps_every_flow_when_a_director_leaves_or_joins_and_rr_does_not() {
        let f = flows(20_000, 5_000, 3);
        let cluster = |ecmp, sched| Cluster {
            directors: 4,
            ecmp,
            sched,
            reals: 50,
            table_size: 4093,
        };
        for ecmp in Ecmp::ALL {
            for (event, pos) in [(Event::Remove, 1), (Event::Add, 2)] {
                for sched in [Sched::Mh, Sched::MhPort] {
                    let o = director_change(&f, &cluster(ecmp, sched), event, pos);
                    // The router moved flows, and none changed real server.
                    assert!(o.moved > 20_000 / 5, "{ecmp:?} {event:?} {o:?}");
                    assert_eq!(o.broken, 0, "{ecmp:?} {event:?} {sched:?}");
                }
                for sched in [Sched::Rr, Sched::Wlc] {
                    let o = director_change(&f, &cluster(ecmp, sched), event, pos);
                    // A moved flow keeps its server only when the fresh pick happens to
                    // be the same one: about 1 in 50.
                    let kept = (o.moved - o.broken) as f64 / o.moved as f64;
                    assert!(kept < 0.06, "{ecmp:?} {event:?} {sched:?} {o:?}");
                }
            }
        }
    }

    #[test]
    fn removing_the_last_of_three_directors_moves_half_the_flows() {
        // Hash-threshold regions [0, 1/3, 2/3, 1) become [0, 1/2, 1): the third next hop's
        // flows (1/3) and the second's in [1/2, 2/3) (1/6) move. rr repicks them over 10
        // servers: a moved flow keeps its server only when the new director's cursor
        // happens to point at it, about 1 in 10 (the cursors are not independent of the
        // old picks, so not exactly).
        let f = flows(40_000, 40_000, 4);
        let three = Cluster {
            directors: 3,
            ecmp: Ecmp::HashThreshold,
            sched: Sched::Rr,
            reals: 10,
            table_size: 251,
        };
        let o = director_change(&f, &three, Event::Remove, 2);
        let moved = o.moved as f64 / f.len() as f64;
        assert!((moved - 0.5).abs() < 0.01, "{moved}");
        let broken = o.broken as f64 / o.moved as f64;
        assert!(broken > 0.85, "{broken}");
    }

    #[test]
    fn removing_a_real_server_from_a_large_mh_table_moves_about_its_share() {
        // 100 servers, M = 65521: the removed one's flows (about 1 %) must move; Maglev
        // moves a few others too, far fewer than rr's fresh picks.
        let f = flows(50_000, 50_000, 5);
        let dests: Vec<Dest> = (0..100).map(real_server).collect();
        let mh = Baseline::new(&f, Sched::Mh, 65521, &dests);
        let mut list = dests.clone();
        list.remove(37);
        let t = mh.compare(&f, Event::Remove, list.clone(), DestId(37));
        let on_removed = mh.picks.iter().filter(|&&b| b == DestId(37)).count() as f64 / 50_000.0;
        assert!((0.007..0.013).contains(&on_removed), "{on_removed}");
        // Every flow of the removed server moves, and the rest that move are needless.
        assert!((t.changed - on_removed - t.needless).abs() < 1e-9);
        assert!(t.needless < 0.01, "{}", t.needless);
        let slots = t.slots.expect("mh has a table");
        assert!((0.009..0.02).contains(&slots), "{slots}");

        // rr: a fresh pick over 99 servers lands elsewhere for almost every flow.
        let rr = Baseline::new(&f, Sched::Rr, 65521, &dests);
        let t = rr.compare(&f, Event::Remove, list, DestId(37));
        assert!(t.slots.is_none());
        assert!(t.changed > 0.9, "{}", t.changed);
    }

    #[test]
    fn equal_weights_give_each_server_the_floor_or_ceiling_of_m_over_r_slots() {
        // One slot per server per round of the kernel's fill: the balance is set by M / R
        // alone, max / mean = ceil(M / R) / (M / R).
        for (r, m) in [(1000, 4093), (1000, 1021), (100, 251), (10, 65521)] {
            let dests: Vec<Dest> = (0..r).map(real_server).collect();
            let l = loads(table(&dests, m).iter().flatten().copied(), r);
            let low = m as usize / r;
            assert!(l.iter().all(|&c| c == low || c == low + 1), "{r} {m}");
            assert_eq!(l.iter().sum::<usize>(), m as usize);
        }
        // A table smaller than the list: the first M servers in list order get one slot
        // each, the others none.
        let dests: Vec<Dest> = (0..1000).map(real_server).collect();
        let l = loads(table(&dests, 251).iter().flatten().copied(), 1000);
        assert!(l[..251].iter().all(|&c| c == 1) && l[251..].iter().all(|&c| c == 0));
    }

    #[test]
    fn the_quick_run_holds_together() {
        let f = flows(5_000, 1_000, 6);
        let p = quiet();
        let rows = director_changes(
            &f,
            &DirectorSettings {
                directors: vec![2, 5],
                reals: 20,
                table_size: 251,
                max_positions: 3,
            },
            2,
            &p,
        );
        // 2 sizes x 2 events x 2 routers x 4 schedulers.
        assert_eq!(rows.len(), 32);
        for r in &rows {
            assert!(r.moved.min > 0.0 && r.moved.max <= 1.0, "{r:?}");
            match r.scheduler {
                Sched::Mh | Sched::MhPort => assert_eq!(r.broken.max, 0.0, "{r:?}"),
                Sched::Rr | Sched::Wlc => assert!(r.broken.mean > 0.8 * r.moved.mean, "{r:?}"),
            }
        }
        let (changes, balance, order) = real_server_changes(
            &f,
            &RealServerSettings {
                table_sizes: vec![251, 4093],
                reals: vec![10],
                trials: 2,
                seed: 1,
            },
            &p,
        );
        // (2 sizes x 2 mh settings + rr) x 2 events.
        assert_eq!(changes.len(), 10);
        for c in &changes {
            assert!(c.changed.mean >= c.needless.mean);
            assert_eq!(c.slots_changed.is_some(), c.scheduler != Sched::Rr);
        }
        assert_eq!(balance.len(), 2);
        // 251 = 10 x 25 + 1: one server has one slot more than the others.
        assert!((balance[0].slots_max_over_mean - 26.0 / 25.1).abs() < 1e-9);
        assert!(order.iter().all(|o| o.slots_differ > 0.0));
        let res = resilience(
            &f,
            &ResilienceSettings {
                table_sizes: vec![4093],
                reals: 50,
                removed_pct: vec![2, 10],
                seed: 2,
            },
            &p,
        );
        assert_eq!(res.len(), 2);
        assert!(res[0].slots_changed >= res[0].removed_share);
        assert!(res[1].slots_changed > res[0].slots_changed);
    }
}
