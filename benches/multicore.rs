//! Many cores sharing one director: N worker threads, one pinned per core, each running its
//! own [`Pipeline`] over one shared [`ConnTable`] (the table of N workers, each allocating
//! from its own share of the slots), one [`DestRegistry`] (the real servers' connection
//! counters every worker updates, each in its own shard as a live worker thread does) and
//! the snapshots of one [`Publisher`] (every worker subscribed; the main thread publishes a
//! new snapshot of the same configuration every 100 ms while the workers run, so each
//! switches snapshots as a live director's workers do on a reload). Flows are split between
//! the workers as RSS splits them over the receive queues: by a hash of the 5-tuple, every
//! packet of a flow to the same worker.
//!
//! What each worker times is what `benches/pipeline.rs` times: `process_batch` on 64 frames
//! plus `between_batches`, the frames copied into its buffers untimed before each batch.
//! A run's total rate is the sum of the workers' rates over the same wall-clock window;
//! per-core efficiency is total(N) / (N x total(1)).
//!
//! Cases:
//! - `est_dr_v4_1k`: ACKs of 1 000 established flows per worker (cache-resident);
//! - `est_dr_v4_1m`: ACKs of 1 000 000 established connections in all, split by RSS, in a
//!   table of 2 Mi entries (so no worker's share overflows however unevenly RSS splits);
//! - `new_rr_dr_v4`: SYNs of 2 000 000 distinct flows split by RSS, rr over 8 DR real
//!   servers, each worker's virtual clock advancing 120 us x N per SYN so the director as a
//!   whole sees a SYN every 120 us of virtual time (about 500 k live connections in all,
//!   as in the one-core benchmark) with expiry between batches.
//!
//! Thread counts: `FASTLB_BENCH_THREADS` (comma-separated), default 1, 2, 4, 8, 14 where the
//! machine has that many cores (and N = cores when below 14). Runs: `FASTLB_BENCH_RUNS`
//! (default 3) of `FASTLB_BENCH_SECS` seconds (default 1); the median run is reported. A
//! positional argument runs only cases whose name contains it (results printed, not
//! written). Results: `bench-results/multicore.{json,md}`.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant as WallClock};

use serde_json::{json, Value};

use fastlb::conn::ConnTable;
use fastlb::control::Publisher;
use fastlb::datapath::pipeline::{Pipeline, PipelineSettings};
use fastlb::datapath::{Frame, PacketProcessor, Verdict, HEADROOM};
use fastlb::service::{config, Config, DestRegistry};
use fastlb::stats::WorkerStats;
use fastlb::time::Instant;

use common::{
    client, command_line, loadavg, nexthops, real_addr, round, shuffled, tcp_frame, Tcp, BATCH,
    BUF_SIZE, EPOCH_MICROS, FLOWS_LARGE, NEW_EXPIRE_BUDGET, NEW_FLOWS, NEW_STEP_MICROS, REALS,
    ROUTER_MAC,
};

/// Established flows per worker of the cache-resident case ([`FLOWS_LARGE`]: established
/// connections in all of the DRAM-bound case; [`NEW_FLOWS`]: distinct SYNs of the
/// new-connection case, in all, one every [`NEW_STEP_MICROS`] of virtual time at the
/// director, all workers together).
const FLOWS_SMALL_PER_WORKER: usize = 1_000;
/// How often the main thread publishes a new snapshot while the workers run, by default
/// (`FASTLB_BENCH_PUBLISH_MS`, 0 = never).
const PUBLISH_EVERY_MS: u64 = 100;

/// The service's address (one service, rr over [`REALS`] DR real servers).
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn config_text(capacity: usize) -> String {
    let mut t = format!(
        "[director]\nconn_capacity = {capacity}\n\n[[service]]\nprotocol = \"tcp\"\n\
         address = \"{VIP}\"\nport = 80\nscheduler = \"rr\"\n"
    );
    for i in 0..REALS {
        t += &format!(
            "[[service.real]]\naddress = \"{}\"\nport = 80\nweight = 1\nmethod = \"dr\"\n",
            real_addr(false, i)
        );
    }
    t
}

// ---- frames ---------------------------------------------------------------------------------

/// The receive queue RSS would put client `i`'s flow on: a hash of the 5-tuple (a stand-in
/// for the NIC's Toeplitz hash; what matters here is that a flow stays on one queue and the
/// split is as uneven as hashing makes it).
fn rss_queue(i: usize, queues: usize) -> usize {
    let (IpAddr::V4(addr), port) = client(false, i, 64) else {
        unreachable!("IPv4 clients")
    };
    let x = u64::from(u32::from(addr)) << 32 | u64::from(u32::from(VIP));
    let y = u64::from(port) << 16 | 80 | 6 << 32;
    let r = u128::from(x ^ 0x9e37_79b9_7f4a_7c15) * u128::from(y ^ 0xbf58_476d_1ce4_e5b9);
    let h = (r as u64) ^ (r >> 64) as u64;
    (((h >> 32) * queues as u64) >> 32) as usize
}

/// Prebuilt 60-byte frames back to back.
struct Pool {
    data: Vec<u8>,
}

const FRAME_LEN: usize = 60;

impl Pool {
    fn len(&self) -> usize {
        self.data.len() / FRAME_LEN
    }
}

/// Frames of clients `ids` (64 source ports per client address), SYNs or ACKs to the VIP,
/// in a fixed shuffled order.
fn pool(ids: &[usize], syn: bool) -> Pool {
    let kind = if syn { Tcp::Syn } else { Tcp::Ack };
    let mut data = Vec::with_capacity(ids.len() * FRAME_LEN);
    for k in shuffled(ids.len()) {
        let (c, port) = client(false, ids[k], 64);
        let f = tcp_frame(ROUTER_MAC, c, port, IpAddr::V4(VIP), 80, kind);
        assert_eq!(f.len(), FRAME_LEN, "an IPv4 ACK or SYN is a minimum frame");
        data.extend_from_slice(&f);
    }
    Pool { data }
}

/// The clients of `flows` flows that RSS puts on each of `queues` queues.
fn split(flows: usize, queues: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); queues];
    for i in 0..flows {
        out[rss_queue(i, queues)].push(i);
    }
    out
}

// ---- one worker -----------------------------------------------------------------------------

/// A worker's clock: wall time since a start all workers share, or virtual time.
#[derive(Copy, Clone)]
enum Clock {
    Real(WallClock),
    Stepped { now_ns: u64, step_ns: u64 },
}

impl Clock {
    fn at(&mut self, wall: WallClock) -> Instant {
        match self {
            Clock::Real(start) => {
                Instant::from_micros(EPOCH_MICROS + wall.duration_since(*start).as_micros() as u64)
            }
            Clock::Stepped { now_ns, step_ns } => {
                *now_ns += *step_ns * BATCH as u64;
                Instant::from_micros(*now_ns / 1000)
            }
        }
    }
}

struct Worker {
    pipeline: Pipeline,
    bufs: Vec<u8>,
    cursor: usize,
    clock: Clock,
}

impl Worker {
    /// Batches of `pool` until `min_time` of timed processing and `min_packets` packets;
    /// returns (packets, timed nanoseconds, frames not transmitted).
    fn drive(&mut self, pool: &Pool, min_time: Duration, min_packets: u64) -> (u64, u64, u64) {
        let mut packets = 0u64;
        let mut timed = Duration::ZERO;
        let mut lost = 0u64;
        let mut lens = [0usize; BATCH];
        while timed < min_time || packets < min_packets {
            for (b, len) in lens.iter_mut().enumerate() {
                let f = &pool.data[self.cursor * FRAME_LEN..(self.cursor + 1) * FRAME_LEN];
                let at = b * BUF_SIZE + HEADROOM;
                self.bufs[at..at + FRAME_LEN].copy_from_slice(f);
                *len = FRAME_LEN;
                self.cursor = (self.cursor + 1) % pool.len();
            }
            let t0 = WallClock::now();
            let now = self.clock.at(t0);
            let mut chunks = self.bufs.chunks_exact_mut(BUF_SIZE);
            let mut frames: [Frame<'_>; BATCH] = std::array::from_fn(|b| {
                Frame::new(chunks.next().expect("BATCH buffers"), HEADROOM, lens[b])
            });
            let mut verdicts = [Verdict::Pass; BATCH];
            self.pipeline.process_batch(now, &mut frames, &mut verdicts);
            self.pipeline.between_batches(now);
            timed += t0.elapsed();
            packets += BATCH as u64;
            lost += verdicts.iter().filter(|v| **v != Verdict::Transmit).count() as u64;
        }
        (packets, timed.as_nanos() as u64, lost)
    }
}

/// One run of one worker.
#[derive(Copy, Clone, Debug, Default)]
struct Share {
    packets: u64,
    timed_ns: u64,
    lost: u64,
}

impl Share {
    fn mpps(&self) -> f64 {
        self.packets as f64 * 1e3 / self.timed_ns as f64
    }
}

// ---- a case ---------------------------------------------------------------------------------

#[derive(Copy, Clone, PartialEq, Eq)]
enum Load {
    /// Established ACKs after a fill; flows per worker or in all.
    Established { flows: usize, per_worker: bool },
    /// SYNs of new flows.
    New,
}

struct Case {
    name: &'static str,
    what: &'static str,
    load: Load,
}

/// One case at one thread count.
struct Point {
    /// Total Mpps of each run (sum over the workers).
    runs: Vec<f64>,
    /// Per-worker Mpps of the median run.
    per_worker: Vec<f64>,
    flows: usize,
    live: usize,
    lost: u64,
}

impl Point {
    fn median(&self) -> f64 {
        let mut v = self.runs.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    }
}

fn pin(cores: &[core_affinity::CoreId], w: usize) {
    if let Some(c) = cores.get(w % cores.len().max(1)) {
        core_affinity::set_for_current(*c);
    }
}

fn run_case(case: &Case, n: usize, runs: usize, secs: Duration, publish: Duration) -> Point {
    let (flows, capacity) = match case.load {
        Load::Established { flows, per_worker } => {
            let all = if per_worker { flows * n } else { flows };
            (
                all,
                (all * 2)
                    .next_power_of_two()
                    .max(ConnTable::DEFAULT_CAPACITY),
            )
        }
        Load::New => (NEW_FLOWS, ConnTable::DEFAULT_CAPACITY),
    };
    let config: Config =
        config::parse(&config_text(capacity), Path::new("bench.toml")).expect("bench config");
    let registry = Arc::new(DestRegistry::default());
    let mut publisher = Publisher::new(config.clone(), Arc::clone(&registry)).expect("publish");
    let conns = Arc::new(ConnTable::new(capacity, n, Arc::clone(&registry)));
    conns.timeouts().apply(&config.timeouts);
    let hops = Arc::new(nexthops());
    let settings = match case.load {
        // The one-worker budget divided by N: N workers' clocks run N times faster, each
        // over a share 1/N of the slots.
        Load::New => PipelineSettings {
            expire_budget: NEW_EXPIRE_BUDGET.div_ceil(n),
            ..PipelineSettings::default()
        },
        Load::Established { .. } => PipelineSettings::default(),
    };
    let shares = split(flows, n);
    let start = WallClock::now();
    let mut workers: Vec<(Worker, Vec<usize>)> = shares
        .into_iter()
        .enumerate()
        .map(|(w, ids)| {
            let pipeline = Pipeline::new(
                w,
                publisher.table(),
                Arc::clone(&conns),
                Arc::clone(&hops),
                Arc::new(WorkerStats::new(registry.capacity())),
                settings,
            )
            .with_updates(publisher.subscribe());
            let clock = match case.load {
                Load::New => Clock::Stepped {
                    now_ns: EPOCH_MICROS * 1000,
                    step_ns: NEW_STEP_MICROS * 1000 * n as u64,
                },
                Load::Established { .. } => Clock::Real(start),
            };
            let worker = Worker {
                pipeline,
                bufs: vec![0; BATCH * BUF_SIZE],
                cursor: 0,
                clock,
            };
            (worker, ids)
        })
        .collect();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    // Workers, plus the main thread, meet at each step.
    let barrier = Barrier::new(n + 1);
    let mut results: Vec<Vec<Share>> = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter_mut()
            .enumerate()
            .map(|(w, (worker, ids))| {
                let (barrier, cores, case) = (&barrier, &cores, case);
                let ids = std::mem::take(ids);
                s.spawn(move || {
                    pin(cores, w);
                    // As a live worker thread: its own shard of the real servers' counters.
                    fastlb::service::count_as_worker(w);
                    let timed = match case.load {
                        Load::Established { .. } => {
                            let syns = pool(&ids, true);
                            worker.drive(&syns, Duration::ZERO, syns.len() as u64);
                            drop(syns);
                            let acks = pool(&ids, false);
                            worker.cursor = 0;
                            worker.drive(&acks, Duration::ZERO, acks.len().max(1 << 16) as u64);
                            acks
                        }
                        Load::New => {
                            let syns = pool(&ids, true);
                            // One pass: every worker's clock past the SYN_RECV timeout, so
                            // expiry is in its steady state.
                            worker.drive(&syns, Duration::ZERO, syns.len() as u64);
                            syns
                        }
                    };
                    let mut out = Vec::new();
                    barrier.wait();
                    for _ in 0..runs {
                        barrier.wait();
                        let (packets, timed_ns, lost) = worker.drive(&timed, secs, 0);
                        if std::env::var_os("FASTLB_BENCH_VERBOSE").is_some() {
                            eprintln!("    worker {w}: {packets} packets in {timed_ns} ns timed");
                        }
                        out.push(Share {
                            packets,
                            timed_ns,
                            lost,
                        });
                        barrier.wait();
                    }
                    out
                })
            })
            .collect();
        barrier.wait();
        for _ in 0..runs {
            barrier.wait();
            // While the workers run: a new snapshot of the same configuration every
            // `publish`, as a reload publishes one, until the first worker is done
            // (the others follow within a batch or two of `secs`).
            let t = WallClock::now();
            while t.elapsed() < secs {
                if publish.is_zero() {
                    std::thread::sleep(secs);
                    break;
                }
                std::thread::sleep(publish.min(secs));
                if t.elapsed() < secs {
                    publisher
                        .replace(config.clone())
                        .expect("same configuration");
                }
            }
            barrier.wait();
        }
        for h in handles {
            results.push(h.join().expect("worker"));
        }
    });
    let totals: Vec<f64> = (0..runs)
        .map(|r| results.iter().map(|w| w[r].mpps()).sum())
        .collect();
    let mut order: Vec<usize> = (0..runs).collect();
    order.sort_by(|a, b| totals[*a].partial_cmp(&totals[*b]).unwrap());
    let median_run = order[runs / 2];
    Point {
        runs: totals,
        per_worker: results.iter().map(|w| w[median_run].mpps()).collect(),
        flows,
        live: conns.len(),
        lost: results.iter().flatten().map(|s| s.lost).sum(),
    }
}

// ---- output ---------------------------------------------------------------------------------

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let env = |k: &str| std::env::var(k).ok();
    let runs: usize = env("FASTLB_BENCH_RUNS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let secs = Duration::from_secs_f64(
        env("FASTLB_BENCH_SECS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0),
    );
    let publish = Duration::from_millis(
        env("FASTLB_BENCH_PUBLISH_MS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(PUBLISH_EVERY_MS),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<usize> = match env("FASTLB_BENCH_THREADS") {
        Some(v) => v
            .split(',')
            .map(|t| t.trim().parse().expect("FASTLB_BENCH_THREADS: numbers"))
            .collect(),
        None => {
            let mut t: Vec<usize> = [1, 2, 4, 8, 14]
                .into_iter()
                .filter(|n| *n <= cores)
                .collect();
            if cores < 14 && !t.contains(&cores) {
                t.push(cores);
            }
            t
        }
    };
    let cases = [
        Case {
            name: "est_dr_v4_1k",
            what: "direct routing, IPv4: ACKs of 1000 established flows per worker",
            load: Load::Established {
                flows: FLOWS_SMALL_PER_WORKER,
                per_worker: true,
            },
        },
        Case {
            name: "est_dr_v4_1m",
            what: "direct routing, IPv4: ACKs of 1000000 established connections in all, split by RSS",
            load: Load::Established {
                flows: FLOWS_LARGE,
                per_worker: false,
            },
        },
        Case {
            name: "new_rr_dr_v4",
            what: "SYNs of 2000000 distinct new flows split by RSS, rr over 8 DR real servers, expiry between batches",
            load: Load::New,
        },
    ];
    let load_start = loadavg();
    eprintln!(
        "fastlb multicore benchmark: threads {threads:?} on {cores} cores, {runs} runs of {} s; load {load_start}",
        secs.as_secs_f64()
    );
    let mut json_cases = Vec::new();
    let mut md = String::from(
        "| case | workers | total Mpps | runs (Mpps) | per worker (Mpps, median run) | per-core efficiency |\n|---|---:|---:|---|---|---:|\n",
    );
    for case in &cases {
        if filter
            .as_ref()
            .is_some_and(|f| !case.name.contains(f.as_str()))
        {
            continue;
        }
        let mut one: Option<f64> = None;
        let mut points = Vec::new();
        for &n in &threads {
            eprintln!("{}: {n} workers", case.name);
            let p = run_case(case, n, runs, secs, publish);
            let total = p.median();
            if n == 1 {
                one = Some(total);
            }
            let eff = one.map(|o| total / (o * n as f64));
            eprintln!(
                "  {} x{n}: {total:.2} Mpps (runs {:?}), per worker {:?}, efficiency {}",
                case.name,
                p.runs.iter().map(|r| round(*r, 2)).collect::<Vec<_>>(),
                p.per_worker
                    .iter()
                    .map(|r| round(*r, 2))
                    .collect::<Vec<_>>(),
                eff.map_or("-".into(), |e| format!("{:.0} %", e * 100.0)),
            );
            assert_eq!(
                p.lost, 0,
                "{} x{n}: frames dropped or passed (every frame must be forwarded)",
                case.name
            );
            md += &format!(
                "| `{}` | {n} | {total:.2} | {} | {} | {} |\n",
                case.name,
                p.runs
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                p.per_worker
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                eff.map_or("-".into(), |e| format!("{:.0} %", e * 100.0)),
            );
            points.push(json!({
                "threads": n,
                "total_mpps": round(total, 3),
                "runs_mpps": p.runs.iter().map(|r| round(*r, 3)).collect::<Vec<_>>(),
                "per_worker_mpps": p.per_worker.iter().map(|r| round(*r, 3)).collect::<Vec<_>>(),
                "per_core_efficiency": eff.map(|e| round(e, 3)),
                "flows": p.flows,
                "live_conns_at_end": p.live,
                "not_transmitted": p.lost,
            }));
        }
        json_cases.push(json!({"name": case.name, "what": case.what, "points": points}));
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let load_end = loadavg();
    let date = command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    let json: Value = json!({
        "benchmark": "fastlb pipeline, N worker threads sharing one connection table, registry and publisher",
        "machine": {
            "cpu": cpu,
            "cpus": cores,
            "kernel": command_line("uname", &["-r"]),
            "rustc": command_line(&rustc, &["--version"]),
            "date": date,
        },
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "method": {
            "batch": BATCH,
            "runs": runs,
            "seconds_per_run": secs.as_secs_f64(),
            "statistic": "median run by total rate",
            "total": "sum over workers of packets / timed ns (process_batch + between_batches), all workers running in the same window",
            "per_core_efficiency": "total(N) / (N * total(1))",
            "split": "flows to workers by a hash of the 5-tuple, as RSS splits them over receive queues",
            "snapshots": "every worker subscribed to one Publisher; a new snapshot of the same configuration published every FASTLB_BENCH_PUBLISH_MS (default 100) ms while the workers run",
        },
        "cases": json_cases,
    });
    let mut text = String::from("# Many cores sharing one director\n\n");
    text += &format!(
        "`cargo bench --bench multicore`, {date}; {}; {cpu} ({cores} CPUs). Median of {runs} runs of {} s; \
         load average {load_start} at start, {load_end} at end. Workers pinned one per core; \
         with as many workers as cores they share them with everything else on the machine.\n\n",
        json["machine"]["rustc"].as_str().unwrap_or(""),
        secs.as_secs_f64(),
    );
    text += &md;
    if filter.is_some() {
        println!("{text}");
        eprintln!("filtered run: results not written");
        return;
    }
    let dir = common::results_dir();
    std::fs::create_dir_all(&dir).expect("bench-results/");
    let out = serde_json::to_string_pretty(&json).expect("json") + "\n";
    std::fs::write(dir.join("multicore.json"), out).expect("write multicore.json");
    std::fs::write(dir.join("multicore.md"), &text).expect("write multicore.md");
    println!("{text}");
}
