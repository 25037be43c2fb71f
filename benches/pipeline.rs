//! In-process benchmark of the forwarding pipeline on one core.
//!
//! `cargo bench` builds a director from a TOML configuration exactly as `fastlb replay` does
//! (a [`Publisher`] snapshot, a [`ConnTable`], [`NextHops`](fastlb::forward::nexthop::NextHops), [`WorkerStats`]) and drives the
//! real [`Pipeline`] the way a worker does: batches of 64 frames through
//! [`PacketProcessor::process_batch`], then [`PacketProcessor::between_batches`] (which runs
//! connection expiry). Frames are prebuilt; before each batch the 64 frames are copied into
//! the worker's buffers outside the timed region (NAT and tunnel rewrite frames in place, so
//! every batch must start from pristine bytes), and only process + between_batches are
//! timed, with one clock read on each side of the batch.
//!
//! Cases (see `docs/performance.md` for what each one means and what costs the time):
//! - baselines on the same frames: `parse_frame` alone, and the bare MAC-swap forwarder
//!   (`xdp-fwd`'s [`Bounce`]); measured first and again last to show drift;
//! - established flows per forwarding method, with 1 k flows (cache-resident) and with
//!   1 M live connections in a table of the default capacity (DRAM-bound); and with 1 k
//!   flows whose checksums are partial, as a sender on the same host leaves them
//!   (`_partial`: what completing them costs);
//! - memory per connection: DR with 10 M and 20 M live connections, each in a table of
//!   exactly that capacity, with the resident memory the table took (`bytes_per_conn` in
//!   the JSON; about 6 GiB of memory at the peak of the 20 M case, frame pools included;
//!   `FASTLB_BENCH_MEMORY_EXPIRE_BUDGET=N` sweeps N slots per ms instead of the default);
//! - new connections: every packet a SYN of a new flow, with the table in steady state
//!   (entries expiring between batches as fast as new ones arrive).
//!
//! Each case runs `FASTLB_BENCH_RUNS` times (default 5) for at least
//! `FASTLB_BENCH_SECS` seconds of timed processing (default 1) and reports the median.
//! A positional argument runs only cases whose name contains it, or, ending in `$`, the
//! case of exactly that name (results are then printed but not written). Results go to
//! `bench-results/pipeline.{json,md}`.

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use serde_json::{json, Value};

use fastlb::conn::{ConnTable, FlowKey};
use fastlb::control::Publisher;
use fastlb::datapath::pipeline::{Pipeline, PipelineSettings};
use fastlb::datapath::xdp::Bounce;
use fastlb::datapath::{Frame, PacketProcessor, Verdict, HEADROOM};
use fastlb::ha::sync::backup::{route, Backup};
use fastlb::ha::sync::counters::DaemonCounters;
use fastlb::ha::sync::wire::flags;
use fastlb::ha::sync::{channels, Encoder, SyncConn, SyncEnds};
use fastlb::service::{config, DestRegistry, Protocol, ServiceTable};
use fastlb::stats::{DropReason, WorkerStats};
use fastlb::time::Instant;

use common::{
    client, command_line, loadavg, nexthops, real_addr, real_mac, round, shuffled, tcp_frame, Tcp,
    BATCH, BUF_SIZE, EPOCH_MICROS, FLOWS_LARGE, NEW_EXPIRE_BUDGET, NEW_FLOWS, NEW_STEP_MICROS,
    REALS, ROUTER_MAC,
};

/// Flows of the cache-resident cases.
const FLOWS_SMALL: usize = 1_000;
/// Live connections of the memory cases (`est_dr_v4_10m`, `est_dr_v4_20m`), each in a
/// table of exactly that capacity.
const FLOWS_MEMORY: [(usize, &str); 2] = [(10_000_000, "10m"), (20_000_000, "20m")];
/// Virtual time per packet while the memory cases fill their tables (untimed): 20 M SYNs
/// take 2 s of the connections' 60 s SYN_RECV timeout however slowly the machine runs.
const FILL_STEP_NS: u64 = 100;
/// The memory target of issue 12: 10 M connections per GiB.
const TARGET_BYTES_PER_CONN: f64 = 107.0;
/// Connections a sync backup installs in the sync case.
const SYNC_CONNS: usize = 1_000_000;

// ---- the director ---------------------------------------------------------------------------

/// One virtual service of the benchmark configuration.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Svc {
    DrV4,
    NatV4,
    TunV4,
    DrV6,
    WlcDrV4,
    PersistDrV4,
}

impl Svc {
    fn vip(self) -> IpAddr {
        match self {
            Svc::DrV4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)),
            Svc::NatV4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 101)),
            Svc::TunV4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 102)),
            Svc::WlcDrV4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 103)),
            Svc::PersistDrV4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 104)),
            Svc::DrV6 => IpAddr::V6("2001:db8::100".parse().unwrap()),
        }
    }

    fn v6(self) -> bool {
        self == Svc::DrV6
    }
}

/// The configuration every director of the benchmark runs: one service per case family,
/// each with [`REALS`] real servers, as a user would write it; `v6_capacity` is
/// `conn_v6_capacity` (unset: the default, a quarter of the table).
fn config_text(capacity: usize, v6_capacity: Option<usize>) -> String {
    let mut t = format!("[director]\nconn_capacity = {capacity}\n");
    if let Some(v6) = v6_capacity {
        t += &format!("conn_v6_capacity = {v6}\n");
    }
    let services: [(Svc, &str, &str, &str, u16); 6] = [
        (Svc::DrV4, "rr", "dr", "", 80),
        (Svc::NatV4, "rr", "nat", "", 8080),
        (Svc::TunV4, "rr", "tun", "", 80),
        (Svc::DrV6, "rr", "dr", "", 80),
        (Svc::WlcDrV4, "wlc", "dr", "", 80),
        (Svc::PersistDrV4, "rr", "dr", "persistence = 300\n", 80),
    ];
    for (svc, sched, method, extra, rport) in services {
        t += &format!(
            "\n[[service]]\nprotocol = \"tcp\"\naddress = \"{}\"\nport = 80\nscheduler = \"{sched}\"\n{extra}",
            svc.vip()
        );
        for i in 0..REALS {
            t += &format!(
                "[[service.real]]\naddress = \"{}\"\nport = {rport}\nweight = 1\nmethod = \"{method}\"\n",
                real_addr(svc.v6(), i)
            );
        }
    }
    t
}

/// A director as `fastlb replay` builds one, with `settings`; with `sync`, a sync master
/// runs: the worker's hook is on and the sync thread's ends of its queues are here.
struct Director {
    pipeline: Pipeline,
    conns: Arc<ConnTable>,
    table: Arc<ServiceTable>,
    sync: Option<SyncEnds>,
}

/// A [`Director`] driven as a worker drives its pipeline, with the sync thread's share of
/// a running master done between batches: the worker's outbound queue is emptied (the sync
/// thread's cost, counted here so the `_sync` cases overstate rather than understate).
struct Worker<'a>(&'a mut Director);

impl PacketProcessor for Worker<'_> {
    #[inline]
    fn process(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
        self.0.pipeline.process(now, frame)
    }

    #[inline]
    fn process_batch(&mut self, now: Instant, frames: &mut [Frame<'_>], verdicts: &mut [Verdict]) {
        self.0.pipeline.process_batch(now, frames, verdicts);
    }

    fn between_batches(&mut self, now: Instant) {
        self.0.pipeline.between_batches(now);
        if let Some(ends) = &mut self.0.sync {
            for q in &mut ends.outbound {
                while q.pop().is_some() {}
            }
        }
    }
}

fn worker_tally(w: &Worker<'_>) -> Tally {
    tally_of(&w.0.pipeline)
}

impl Director {
    fn with_sync(settings: PipelineSettings, sync: bool) -> Director {
        Director::with_capacity(settings, sync, ConnTable::DEFAULT_CAPACITY, None)
    }

    /// As [`Director::with_sync`], with a table of `capacity` entries, `v6_capacity` of
    /// them with room for IPv6 addresses (`None`: the default). The table is built from
    /// the configuration as the director builds it.
    fn with_capacity(
        settings: PipelineSettings,
        sync: bool,
        capacity: usize,
        v6_capacity: Option<usize>,
    ) -> Director {
        let config = config::parse(&config_text(capacity, v6_capacity), Path::new("bench.toml"))
            .expect("bench config");
        let registry = Arc::new(DestRegistry::default());
        let publisher = Publisher::new(config.clone(), Arc::clone(&registry)).expect("publish");
        let conns = Arc::new(ConnTable::configured(
            config.conn_capacity,
            &config,
            1,
            Arc::clone(&registry),
        ));
        conns.timeouts().apply(&config.timeouts);
        let stats = Arc::new(WorkerStats::new(registry.capacity()));
        let pipeline = Pipeline::new(
            0,
            publisher.table(),
            Arc::clone(&conns),
            Arc::new(nexthops()),
            stats,
            settings,
        );
        if !sync {
            return Director {
                pipeline,
                conns,
                table: publisher.table(),
                sync: None,
            };
        }
        let (shared, mut hooks, ends) = channels(1, &config.sync);
        shared.set_master(true);
        let pipeline = pipeline.with_sync(hooks.pop().expect("one worker"));
        Director {
            pipeline,
            conns,
            table: publisher.table(),
            sync: Some(ends),
        }
    }

    fn tally(&self) -> Tally {
        tally_of(&self.pipeline)
    }
}

#[derive(Copy, Clone, Debug, Default)]
struct Tally {
    rx: u64,
    tx: u64,
    passed: u64,
    dropped: u64,
    conns: u64,
}

impl std::ops::Sub for Tally {
    type Output = Tally;
    fn sub(self, o: Tally) -> Tally {
        Tally {
            rx: self.rx - o.rx,
            tx: self.tx - o.tx,
            passed: self.passed - o.passed,
            dropped: self.dropped - o.dropped,
            conns: self.conns - o.conns,
        }
    }
}

/// The pipeline's clock as the benchmark drives it.
#[derive(Copy, Clone, Debug)]
enum Clock {
    /// Wall time since `start` after `base` microseconds, read once per batch as the
    /// AF_XDP worker does.
    Real { start: WallClock, base: u64 },
    /// Virtual time advancing by `step` nanoseconds per packet, so the new-connection
    /// cases see a whole SYN_RECV lifetime pass in a second of benchmark, and callgrind
    /// runs (`FASTLB_BENCH_VCLOCK_NS`) see the same clock however slowly they execute.
    Stepped { now_ns: u64, step_ns: u64 },
}

impl Clock {
    /// The clock of the established and baseline cases: wall time, or with
    /// `FASTLB_BENCH_VCLOCK_NS=N` virtual time advancing N ns per packet, which makes
    /// instruction counts under callgrind independent of how slowly it runs the code.
    fn real() -> Clock {
        match std::env::var("FASTLB_BENCH_VCLOCK_NS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            Some(step_ns) => Clock::stepped_ns(step_ns),
            None => Clock::Real {
                start: WallClock::now(),
                base: EPOCH_MICROS,
            },
        }
    }

    fn stepped_ns(step_ns: u64) -> Clock {
        Clock::Stepped {
            now_ns: EPOCH_MICROS * 1000,
            step_ns,
        }
    }

    /// Wall time from now on, continuing from where this clock stands.
    fn then_real(self) -> Clock {
        let base = match self {
            Clock::Real { start, base } => base + start.elapsed().as_micros() as u64,
            Clock::Stepped { now_ns, .. } => now_ns / 1000,
        };
        Clock::Real {
            start: WallClock::now(),
            base,
        }
    }

    #[inline]
    fn at(&mut self, wall: WallClock, packets: usize) -> Instant {
        match self {
            Clock::Real { start, base } => {
                Instant::from_micros(*base + wall.duration_since(*start).as_micros() as u64)
            }
            Clock::Stepped { now_ns, step_ns } => {
                *now_ns += *step_ns * packets as u64;
                Instant::from_micros(*now_ns / 1000)
            }
        }
    }
}

// ---- frames ---------------------------------------------------------------------------------

/// Prebuilt frames back to back at a fixed stride.
struct Pool {
    data: Vec<u8>,
    lens: Vec<u16>,
    stride: usize,
}

impl Pool {
    fn new(stride: usize, capacity: usize) -> Pool {
        Pool {
            data: Vec::with_capacity(stride * capacity),
            lens: Vec::with_capacity(capacity),
            stride,
        }
    }

    fn push(&mut self, frame: &[u8]) {
        assert!(
            frame.len() <= self.stride,
            "frame longer than the pool's stride"
        );
        let start = self.data.len();
        self.data.extend_from_slice(frame);
        self.data.resize(start + self.stride, 0);
        self.lens.push(frame.len() as u16);
    }

    fn len(&self) -> usize {
        self.lens.len()
    }

    #[inline]
    fn frame(&self, i: usize) -> &[u8] {
        &self.data[i * self.stride..i * self.stride + self.lens[i] as usize]
    }
}

/// Leaves a frame's TCP checksum as a sender with checksum offload hands it over on a
/// veth (`CHECKSUM_PARTIAL`): the field holds only the pseudo-header sum, and the pipeline
/// completes it before forwarding.
fn make_partial(frame: &mut [u8]) {
    let p = fastlb::wire::parse_frame(frame).expect("own frame parses");
    let ip = p.ip.expect("IP frame");
    let len = (p.l3_offset + ip.len - ip.l4_offset) as u32;
    let sum = fastlb::wire::checksum::pseudo_header(&ip.src, &ip.dst, 6, len);
    let at = ip.l4_offset + fastlb::wire::tcp::CHECKSUM_OFFSET;
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// Checksums of a frame pool's frames: complete, or partial as a local sender leaves them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Checksums {
    Complete,
    Partial,
}

/// Client-to-VIP frames of `flows` flows (64 source ports per client), in shuffled order.
fn client_pool(svc: Svc, flows: usize, kind: Tcp, per_client: usize, sums: Checksums) -> Pool {
    let mut pool = Pool::new(if svc.v6() { 128 } else { 64 }, flows);
    for i in shuffled(flows) {
        let (c, port) = client(svc.v6(), i, per_client);
        let mut f = tcp_frame(ROUTER_MAC, c, port, svc.vip(), 80, kind);
        if sums == Checksums::Partial {
            make_partial(&mut f);
        }
        pool.push(&f);
    }
    pool
}

/// Real-server-to-client frames of the NAT connections the client pool created.
fn reply_pool(d: &Director, clients: &Pool, sums: Checksums) -> Pool {
    let mut pool = Pool::new(64, clients.len());
    for i in 0..clients.len() {
        let p = fastlb::wire::parse_frame(clients.frame(i)).expect("own frame parses");
        let ip = p.ip.expect("IP frame");
        let (sport, dport) = match ip.l4 {
            fastlb::wire::L4Info::Tcp {
                src_port, dst_port, ..
            } => (src_port, dst_port),
            _ => unreachable!("TCP frames only"),
        };
        let key = FlowKey {
            protocol: Protocol::Tcp,
            src: ip.src,
            sport,
            dst: ip.dst,
            dport,
        };
        let hit = d
            .conns
            .lookup(&key)
            .expect("the inbound pass created the connection");
        let real = (0..REALS)
            .find(|r| real_addr(false, *r) == hit.info.daddr)
            .expect("known real");
        let mut f = tcp_frame(
            real_mac(real),
            hit.info.daddr,
            hit.info.dport,
            ip.src,
            sport,
            Tcp::Ack,
        );
        if sums == Checksums::Partial {
            make_partial(&mut f);
        }
        pool.push(&f);
    }
    pool
}

// ---- the harness ----------------------------------------------------------------------------

/// The worker's receive buffers: [`BATCH`] buffers of [`BUF_SIZE`] bytes.
struct Bufs {
    data: Vec<u8>,
    lens: [usize; BATCH],
}

impl Bufs {
    fn new() -> Bufs {
        Bufs {
            data: vec![0; BATCH * BUF_SIZE],
            lens: [0; BATCH],
        }
    }

    /// Copies the next batch of pristine frames in (untimed), as the NIC would have.
    #[inline]
    fn fill(&mut self, pool: &Pool, cursor: &mut usize) {
        for b in 0..BATCH {
            let f = pool.frame(*cursor);
            let at = b * BUF_SIZE + HEADROOM;
            self.data[at..at + f.len()].copy_from_slice(f);
            self.lens[b] = f.len();
            *cursor += 1;
            if *cursor == pool.len() {
                *cursor = 0;
            }
        }
    }
}

/// Opens `flows` connections of `svc` through the pipeline itself: one SYN per flow, 64
/// flows per client (untimed).
fn prefill(d: &mut Director, clock: &mut Clock, svc: Svc, flows: usize, bufs: &mut Bufs) {
    let syns = client_pool(svc, flows, Tcp::Syn, 64, Checksums::Complete);
    let mut cursor = 0;
    drive(
        &mut d.pipeline,
        clock,
        &syns,
        &mut cursor,
        bufs,
        Duration::ZERO,
        flows as u64,
    );
}

/// Runs batches until `min_time` of timed processing and `min_packets` packets; returns
/// (packets, timed nanoseconds, frames transmitted).
fn drive<P: PacketProcessor>(
    p: &mut P,
    clock: &mut Clock,
    pool: &Pool,
    cursor: &mut usize,
    bufs: &mut Bufs,
    min_time: Duration,
    min_packets: u64,
) -> (u64, u64, u64) {
    // FASTLB_BENCH_PER_FRAME=1: `process` frame by frame, as before `process_batch`.
    let per_frame = std::env::var_os("FASTLB_BENCH_PER_FRAME").is_some();
    let mut packets = 0u64;
    let mut timed = Duration::ZERO;
    let mut transmitted = 0u64;
    while timed < min_time || packets < min_packets {
        bufs.fill(pool, cursor);
        let t0 = WallClock::now();
        let now = clock.at(t0, BATCH);
        let mut chunks = bufs.data.chunks_exact_mut(BUF_SIZE);
        let lens = &bufs.lens;
        let mut frames: [Frame<'_>; BATCH] = std::array::from_fn(|b| {
            Frame::new(chunks.next().expect("BATCH buffers"), HEADROOM, lens[b])
        });
        let mut verdicts = [Verdict::Pass; BATCH];
        if per_frame {
            for (f, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
                *v = p.process(now, f);
            }
        } else {
            p.process_batch(now, &mut frames, &mut verdicts);
        }
        transmitted += verdicts.iter().filter(|v| **v == Verdict::Transmit).count() as u64;
        p.between_batches(now);
        timed += t0.elapsed();
        packets += BATCH as u64;
    }
    (packets, timed.as_nanos() as u64, transmitted)
}

/// `parse_frame` alone: the floor of anything that looks at the headers.
struct ParseOnly;

impl PacketProcessor for ParseOnly {
    #[inline]
    fn process(&mut self, _now: Instant, frame: &mut Frame<'_>) -> Verdict {
        match fastlb::wire::parse_frame(black_box(frame.data())) {
            Ok(p) => {
                black_box(&p);
                Verdict::Transmit
            }
            Err(_) => Verdict::Drop(DropReason::Malformed),
        }
    }
}

// ---- cases ----------------------------------------------------------------------------------

struct Settings {
    runs: usize,
    min_time: Duration,
    filter: Option<String>,
}

/// One measured case.
struct Measured {
    name: String,
    group: &'static str,
    what: String,
    flows: usize,
    live_conns: usize,
    /// Nanoseconds per packet of each run.
    runs_ns: Vec<f64>,
    packets: u64,
    check: Tally,
    /// Memory cases: what the process kept resident for the table.
    memory: Option<Memory>,
}

/// Resident memory of a memory case: the process's resident set just before its director
/// was built and after the table held every connection (frame pools not counted).
#[derive(Copy, Clone, Debug)]
struct Memory {
    capacity: usize,
    live: usize,
    rss_before: u64,
    rss_filled: u64,
    /// [`ConnTable::footprint`]: what the table allocated.
    table_bytes: usize,
}

impl Memory {
    fn bytes_per_conn(&self) -> f64 {
        (self.rss_filled.saturating_sub(self.rss_before)) as f64 / self.live as f64
    }
}

/// The process's resident set in bytes (`VmRSS` of /proc/self/status).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

impl Measured {
    fn median_ns(&self) -> f64 {
        let mut v = self.runs_ns.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    }
}

struct Bench {
    s: Settings,
    bufs: Bufs,
    results: Vec<Measured>,
}

impl Bench {
    fn wants(&self, name: &str) -> bool {
        self.s
            .filter
            .as_ref()
            .is_none_or(|f| match f.strip_suffix('$') {
                Some(exact) => name == exact,
                None => name.contains(f.as_str()),
            })
    }

    /// Measures `p` over `pool`: a warm-up of `warm` packets, then the runs.
    #[allow(clippy::too_many_arguments)]
    fn measure<P: PacketProcessor>(
        &mut self,
        name: &str,
        group: &'static str,
        what: String,
        p: &mut P,
        clock: &mut Clock,
        pool: &Pool,
        warm: u64,
        live_conns: usize,
        tally: impl Fn(&P) -> Tally,
    ) {
        let mut cursor = 0;
        drive(
            p,
            clock,
            pool,
            &mut cursor,
            &mut self.bufs,
            Duration::ZERO,
            warm,
        );
        let before = tally(p);
        let mut runs_ns = Vec::new();
        let mut total = 0;
        let mut total_tx = 0;
        for run in 1..=self.s.runs {
            let (n, ns, tx) = drive(
                p,
                clock,
                pool,
                &mut cursor,
                &mut self.bufs,
                self.s.min_time,
                0,
            );
            total += n;
            total_tx += tx;
            let per = ns as f64 / n as f64;
            eprintln!(
                "  {name:<22} run {run}/{}: {:>6.2} Mpps {:>7.1} ns/pkt ({n} packets)",
                self.s.runs,
                1e3 / per,
                per
            );
            runs_ns.push(per);
        }
        let mut check = tally(p) - before;
        if check.rx == 0 {
            // A baseline processor keeps no counters: what it returned is the record.
            check = Tally {
                rx: total,
                tx: total_tx,
                ..Tally::default()
            };
        }
        if check.tx != check.rx {
            eprintln!(
                "  WARNING {name}: {} of {} frames not transmitted ({check:?})",
                check.rx - check.tx,
                check.rx
            );
        }
        let m = Measured {
            name: name.into(),
            group,
            what,
            flows: pool.len(),
            live_conns,
            runs_ns,
            packets: total,
            check,
            memory: None,
        };
        eprintln!(
            "  {name:<22} median {:>6.2} Mpps {:>7.1} ns/pkt",
            1e3 / m.median_ns(),
            m.median_ns()
        );
        self.results.push(m);
    }

    /// A sync backup taking [`SYNC_CONNS`] new connections (TCP, ESTABLISHED, DR, as a
    /// kernel master sends them, 40 to a 1472-byte datagram): each datagram decoded and
    /// bound to a real server (`Backup::handle`, the sync thread's work), queued to the
    /// worker, and installed between batches (`ConnTable::install`, the worker's). Receiving
    /// the datagrams (one `recvmsg` each) is left out. Reported per connection.
    fn sync_backup(&mut self) {
        let name = "sync_backup_install_v4";
        if !self.wants(name) {
            return;
        }
        eprintln!("{name}: encoding {SYNC_CONNS} connections");
        let mut enc = Encoder::new(0, 1472);
        let mut datagrams: Vec<Vec<u8>> = Vec::new();
        for i in 0..SYNC_CONNS {
            let (caddr, cport) = client(false, i, 64);
            let c = SyncConn {
                protocol: 6,
                flags: flags::DROUTE,
                state: 1,
                cport,
                vport: 80,
                dport: 80,
                fwmark: 0,
                timeout: 900,
                caddr,
                vaddr: Svc::DrV4.vip(),
                daddr: real_addr(false, i % REALS),
            };
            enc.push(&c, |b| datagrams.push(b.to_vec()))
                .expect("one family");
        }
        enc.flush(|b| datagrams.push(b.to_vec()));
        let backup = Backup {
            syncid: 0,
            ifindex: 1,
        };
        let now = Instant::from_micros(EPOCH_MICROS);
        let mut runs_ns = Vec::new();
        for run in 1..=self.s.runs {
            let mut d = Director::with_sync(PipelineSettings::default(), true);
            let counters = DaemonCounters::default();
            let Director {
                pipeline,
                conns,
                table,
                sync,
            } = &mut d;
            let ends = sync.as_mut().expect("sync on");
            let t0 = WallClock::now();
            for dg in &datagrams {
                backup.handle(dg, Some(1), table, conns.timeouts(), &counters, &mut |s| {
                    while !route(s, &mut ends.installs) {
                        pipeline.between_batches(now);
                    }
                });
            }
            while conns.len() < SYNC_CONNS {
                let before = conns.len();
                pipeline.between_batches(now);
                assert!(conns.len() > before, "{name}: installs stalled at {before}");
            }
            let ns = t0.elapsed().as_nanos() as f64 / SYNC_CONNS as f64;
            eprintln!(
                "  {name:<22} run {run}/{}: {:>7.1} ns/connection ({:.2} M connections/s)",
                self.s.runs,
                ns,
                1e3 / ns
            );
            runs_ns.push(ns);
        }
        let m = Measured {
            name: name.into(),
            group: "sync",
            what: format!(
                "sync backup: {SYNC_CONNS} new TCP connections from {} datagrams decoded, bound and installed (ns per connection; receive syscalls not included)",
                datagrams.len()
            ),
            flows: SYNC_CONNS,
            live_conns: SYNC_CONNS,
            runs_ns,
            packets: SYNC_CONNS as u64 * self.s.runs as u64,
            check: Tally::default(),
            memory: None,
        };
        eprintln!(
            "  {name:<22} median {:>7.1} ns/connection ({:.2} M connections/s)",
            m.median_ns(),
            1e3 / m.median_ns()
        );
        self.results.push(m);
    }

    fn baselines(&mut self, suffix: &str) {
        let names = [
            format!("baseline_parse{suffix}"),
            format!("baseline_mac_swap{suffix}"),
        ];
        if !names.iter().any(|n| self.wants(n)) && self.s.filter.is_some() {
            return;
        }
        let pool = client_pool(Svc::DrV4, FLOWS_SMALL, Tcp::Ack, 64, Checksums::Complete);
        let mut clock = Clock::real();
        let what = "parse_frame of the established DR IPv4 frames, nothing else".to_string();
        self.measure(
            &names[0],
            "baseline",
            what,
            &mut ParseOnly,
            &mut clock,
            &pool,
            1 << 16,
            0,
            |_| Tally::default(),
        );
        let what =
            "swap the MAC addresses of the same frames (the bare xdp-fwd forwarder)".to_string();
        self.measure(
            &names[1],
            "baseline",
            what,
            &mut Bounce,
            &mut clock,
            &pool,
            1 << 16,
            0,
            |_| Tally::default(),
        );
    }

    /// Established flows of `svc`: SYNs create the connections, one pass of ACKs makes them
    /// ESTABLISHED (untimed), then ACKs are timed. NAT also times the replies. With
    /// [`Checksums::Partial`] every timed frame's checksum is partial (`_partial` cases).
    fn established(&mut self, svc: Svc, flows: usize, label: &str, sums: Checksums, sync: bool) {
        let mut label = match sums {
            Checksums::Complete => label.to_string(),
            Checksums::Partial => format!("{label}_partial"),
        };
        if sync {
            label.push_str("_sync");
        }
        let base = match svc {
            Svc::DrV4 => "est_dr_v4",
            Svc::NatV4 => "est_nat_in_v4",
            Svc::TunV4 => "est_tun_v4",
            Svc::DrV6 => "est_dr_v6",
            _ => unreachable!(),
        };
        let name = format!("{base}_{label}");
        let reply_name = format!("est_nat_reply_v4_{label}");
        if !(self.wants(&name) || svc == Svc::NatV4 && self.wants(&reply_name)) {
            return;
        }
        eprintln!("{name}: building {flows} flows and prefilling the table");
        // The IPv6 cases hold nothing but IPv6 connections: their table has room for the
        // addresses of every entry (`conn_v6_capacity`), as a user with such traffic sets it.
        let v6_capacity = svc.v6().then_some(ConnTable::DEFAULT_CAPACITY);
        let mut d = Director::with_capacity(
            PipelineSettings::default(),
            sync,
            ConnTable::DEFAULT_CAPACITY,
            v6_capacity,
        );
        let mut clock = Clock::real();
        prefill(&mut d, &mut clock, svc, flows, &mut self.bufs);
        let acks = client_pool(svc, flows, Tcp::Ack, 64, sums);
        let live = d.conns.len();
        assert!(
            live >= flows,
            "{name}: only {live} of {flows} connections created"
        );
        let method = match svc {
            Svc::DrV4 => "direct routing, IPv4",
            Svc::NatV4 => "NAT inbound (DNAT), IPv4",
            Svc::TunV4 => "IPIP tunnel, IPv4",
            Svc::DrV6 => "direct routing, IPv6",
            _ => unreachable!(),
        };
        let partial = match sums {
            Checksums::Complete => "",
            Checksums::Partial => ", checksums partial (completed by fastlb)",
        };
        let synced = if sync {
            ", a sync master running (ip_vs_sync_conn_needed per packet, due entries queued)"
        } else {
            ""
        };
        let what =
            format!("{method}: ACKs of {flows} established flows in random order{partial}{synced}");
        let warm = flows.max(1 << 16) as u64;
        self.measure(
            &name,
            "established",
            what,
            &mut Worker(&mut d),
            &mut clock,
            &acks,
            warm,
            live,
            worker_tally,
        );
        if svc == Svc::NatV4 && self.wants(&reply_name) {
            let replies = reply_pool(&d, &acks, sums);
            drop(acks);
            let what = format!(
                "NAT reply (SNAT), IPv4: real servers' ACKs of {flows} established flows{partial}{synced}"
            );
            self.measure(
                &reply_name,
                "established",
                what,
                &mut Worker(&mut d),
                &mut clock,
                &replies,
                warm,
                live,
                worker_tally,
            );
        }
        let t = d.tally();
        assert_eq!(t.rx, t.tx, "{name}: dropped or passed frames: {t:?}");
    }

    /// Memory per connection: a table of exactly `flows` entries filled with `flows` live
    /// DR connections (SYNs, then a pass of ACKs makes them ESTABLISHED, both untimed on a
    /// virtual clock of [`FILL_STEP_NS`] a packet), the process's resident set read before
    /// the director was built and once the table is full (the SYN frames freed), then ACKs
    /// timed on the wall clock as in the other established cases.
    fn memory(&mut self, flows: usize, label: &str) {
        let name = format!("est_dr_v4_{label}");
        if !self.wants(&name) {
            return;
        }
        eprintln!("{name}: a table of {flows} entries, filling it with {flows} connections");
        let rss_before = rss_bytes();
        // FASTLB_BENCH_MEMORY_EXPIRE_BUDGET=N: sweep N slots per ms instead of the default
        // thousandth of the table (to separate the sweep's share of the time per packet).
        let settings = PipelineSettings {
            expire_budget: std::env::var("FASTLB_BENCH_MEMORY_EXPIRE_BUDGET")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(PipelineSettings::default().expire_budget),
            ..PipelineSettings::default()
        };
        let mut d = Director::with_capacity(settings, false, flows, None);
        let mut clock = Clock::stepped_ns(FILL_STEP_NS);
        prefill(&mut d, &mut clock, Svc::DrV4, flows, &mut self.bufs);
        let live = d.conns.len();
        assert_eq!(live, flows, "{name}: not every SYN created a connection");
        let memory = Memory {
            capacity: d.conns.capacity(),
            live,
            rss_before,
            rss_filled: rss_bytes(),
            table_bytes: d.conns.footprint(),
        };
        eprintln!(
            "  {name:<22} resident {:.0} MiB more for {live} connections: {:.1} bytes each (table allocated {:.1})",
            (memory.rss_filled - memory.rss_before) as f64 / (1 << 20) as f64,
            memory.bytes_per_conn(),
            memory.table_bytes as f64 / live as f64
        );
        let acks = client_pool(Svc::DrV4, flows, Tcp::Ack, 64, Checksums::Complete);
        let mut cursor = 0;
        drive(
            &mut d.pipeline,
            &mut clock,
            &acks,
            &mut cursor,
            &mut self.bufs,
            Duration::ZERO,
            flows as u64,
        );
        let mut clock = clock.then_real();
        let what = format!(
            "direct routing, IPv4: ACKs of {flows} established flows in random order, a table of {flows} entries (resident memory measured)"
        );
        let before = d.tally();
        self.measure(
            &name,
            "memory",
            what,
            &mut Worker(&mut d),
            &mut clock,
            &acks,
            1 << 16,
            live,
            worker_tally,
        );
        self.results.last_mut().expect("just measured").memory = Some(memory);
        let t = d.tally() - before;
        assert_eq!(t.rx, t.tx, "{name}: dropped or passed frames: {t:?}");
        assert_eq!(d.conns.len(), flows, "{name}: connections lost");
    }

    /// Every packet a SYN of a new flow; virtual time runs at [`NEW_STEP_MICROS`] per packet
    /// so connections expire between batches as fast as new ones arrive.
    fn new_conns(&mut self, svc: Svc, name: &str, what: &str, sync: bool) {
        let name = &if sync {
            format!("{name}_sync")
        } else {
            name.to_string()
        };
        let what = &if sync {
            format!("{what}, a sync master running")
        } else {
            what.to_string()
        };
        if !self.wants(name) {
            return;
        }
        eprintln!("{name}: building {NEW_FLOWS} SYNs");
        // Expiry is paced by the clock, and this clock runs ~100x faster than real time
        // (7.68 ms per batch): the default budget would sweep the table ~100 times more
        // often per packet than a director at this rate does. NEW_EXPIRE_BUDGET keeps the
        // sweep at 256 slots per batch, the effort these figures always had.
        let mut d = Director::with_sync(
            PipelineSettings {
                expire_budget: NEW_EXPIRE_BUDGET,
                ..PipelineSettings::default()
            },
            sync,
        );
        let mut clock = Clock::stepped_ns(NEW_STEP_MICROS * 1000);
        // Persistence: 65 536 clients each opening many connections, so templates are
        // found and the scheduler is skipped, as for the clients persistence is for.
        let per_client = if svc == Svc::PersistDrV4 {
            NEW_FLOWS / 65_536 + 1
        } else {
            64
        };
        let pool = client_pool(svc, NEW_FLOWS, Tcp::Syn, per_client, Checksums::Complete);
        let what = format!("{what}; steady state with expiry between batches");
        // The warm-up is one pass over the SYNs: 240 s of virtual time, so expiry has
        // reached its steady state before the first run.
        let warm = NEW_FLOWS as u64;
        let before = d.tally();
        let live_probe = Arc::clone(&d.conns);
        self.measure(
            name,
            "new_connection",
            what.clone(),
            &mut Worker(&mut d),
            &mut clock,
            &pool,
            warm,
            0,
            worker_tally,
        );
        let m = self.results.last_mut().expect("just measured");
        m.live_conns = live_probe.len();
        let t = d.tally() - before;
        assert_eq!(
            t.conns, t.rx,
            "{name}: a SYN did not create a connection: {t:?}"
        );
    }
}

fn tally_of(p: &Pipeline) -> Tally {
    let s = p.stats();
    Tally {
        rx: s.rx.get(),
        tx: s.tx.get(),
        passed: s.passed.get(),
        dropped: DropReason::ALL
            .iter()
            .map(|r| s.drops[*r as usize].get())
            .sum(),
        conns: s.dests.iter().map(|d| d.conns.get()).sum(),
    }
}

// ---- output ---------------------------------------------------------------------------------

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mhz = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cache = cpuinfo
        .lines()
        .find(|l| l.starts_with("cache size"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    json!({
        "cpu": cpu,
        "cpu_mhz": mhz,
        "cache": cache,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "kernel": command_line("uname", &["-r"]),
        "rustc": command_line(&rustc, &["--version"]),
        "date": command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
    })
}

/// Targets of the forwarding-core issue, in Mpps, and the cases they apply to.
const TARGETS: [(&str, f64); 5] = [
    ("est_dr_v4_1k", 20.0),
    ("est_dr_v4_1m", 20.0),
    ("est_nat_in_v4_1k", 12.0),
    ("est_nat_reply_v4_1k", 12.0),
    ("new_rr_dr_v4", 2.0),
];

fn report(results: &[Measured], s: &Settings, load_start: &str) -> (Value, String) {
    let ns_of = |name: &str| {
        results
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.median_ns())
    };
    let parse = ns_of("baseline_parse");
    let swap = ns_of("baseline_mac_swap");
    let mut cases = Vec::new();
    let mut md = String::new();
    let mut memory_md = String::new();
    let mut bytes_per_conn = None;
    md += "| case | what | Mpps | ns/pkt | runs (ns/pkt) | x mac-swap | x parse |\n";
    md += "|---|---|---:|---:|---|---:|---:|\n";
    for m in results {
        let ns = m.median_ns();
        let mpps = 1e3 / ns;
        let min = m.runs_ns.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = m.runs_ns.iter().cloned().fold(0.0, f64::max);
        let ratio = |b: Option<f64>| b.map(|b| ns / b);
        let target = TARGETS.iter().find(|(n, _)| *n == m.name).map(|(_, t)| *t);
        cases.push(json!({
            "name": m.name,
            "group": m.group,
            "what": m.what,
            "flows": m.flows,
            "live_conns": m.live_conns,
            "mpps": round(mpps, 3),
            "ns_per_packet": round(ns, 2),
            "runs_ns_per_packet": m.runs_ns.iter().map(|x| round(*x, 2)).collect::<Vec<_>>(),
            "packets": m.packets,
            "mac_swap_ns_ratio": ratio(swap).map(|r| round(r, 2)),
            "parse_ns_ratio": ratio(parse).map(|r| round(r, 2)),
            "mac_swap_mpps_ratio": swap.map(|b| round(b / ns, 4)),
            "transmitted": m.check.tx,
            "passed": m.check.passed,
            "dropped": m.check.dropped,
            "target_mpps": target,
            "meets_target": target.map(|t| mpps >= t),
        }));
        if let (Some(mem), Some(Value::Object(case))) = (m.memory, cases.last_mut()) {
            let per = mem.bytes_per_conn();
            case.insert("capacity".into(), json!(mem.capacity));
            case.insert("rss_before_bytes".into(), json!(mem.rss_before));
            case.insert("rss_filled_bytes".into(), json!(mem.rss_filled));
            case.insert("table_bytes".into(), json!(mem.table_bytes));
            case.insert(
                "table_bytes_per_conn".into(),
                json!(round(mem.table_bytes as f64 / mem.live as f64, 1)),
            );
            case.insert("bytes_per_conn".into(), json!(round(per, 1)));
            case.insert("target_bytes_per_conn".into(), json!(TARGET_BYTES_PER_CONN));
            memory_md += &format!(
                "| `{}` | {} | {} | {:.0} | {:.1} | {:.1} | {} |\n",
                m.name,
                mem.live,
                mem.capacity,
                (mem.rss_filled - mem.rss_before) as f64 / (1 << 20) as f64,
                per,
                mem.table_bytes as f64 / mem.live as f64,
                TARGET_BYTES_PER_CONN,
            );
            bytes_per_conn = Some(round(per, 1));
        }
        let fmt_ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.1}"));
        md += &format!(
            "| `{}` | {} | {:.2}{} | {:.1} | {:.1}-{:.1} | {} | {} |\n",
            m.name,
            m.what,
            mpps,
            target.map_or(String::new(), |t| format!(" (target {t})")),
            ns,
            min,
            max,
            fmt_ratio(ratio(swap)),
            fmt_ratio(ratio(parse)),
        );
    }
    let mach = machine();
    let load_end = loadavg();
    let json = json!({
        "benchmark": "fastlb pipeline, in process, one core",
        "machine": mach,
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "method": {
            "batch": BATCH,
            "runs": s.runs,
            "min_seconds_per_run": s.min_time.as_secs_f64(),
            "statistic": "median of the runs",
            "timed": "PacketProcessor::process_batch of 64 frames + between_batches (expiry paced by the clock: the default budget, capacity/1000 slots per ms); frames copied in untimed before each batch",
            "frames": "Ethernet + IPv4/IPv6 + TCP without payload, padded to 60 bytes (IPv6: 74)",
            "ratios": "*_ns_ratio = case ns/packet / baseline ns/packet; mac_swap_mpps_ratio = case Mpps / mac-swap Mpps",
        },
        "bytes_per_conn": bytes_per_conn,
        "bytes_per_conn_what": "resident memory the process gained for a table of N entries holding N live DR connections (index included), per connection, from the largest memory case; target 107 (10 M connections per GiB)",
        "cases": cases,
    });
    let mut text = String::from("# Pipeline benchmark (in process, one core)\n\n");
    text += &format!(
        "`cargo bench --bench pipeline`, {}; {}; {} ({} CPUs), {}. Median of {} runs of >= {} s each; \
         load average {} at start, {} at end (the machine is shared with other builds).\n\n",
        mach["date"].as_str().unwrap_or(""),
        mach["rustc"].as_str().unwrap_or(""),
        mach["cpu"].as_str().unwrap_or(""),
        mach["cpus"],
        mach["kernel"].as_str().unwrap_or(""),
        s.runs,
        s.min_time.as_secs_f64(),
        load_start,
        load_end,
    );
    text += &md;
    if !memory_md.is_empty() {
        text += "\n## Memory per connection\n\nResident memory (VmRSS) the process gained from just before the director was built to the moment its table of exactly N entries held N live connections (frame pools freed), and what the table allocated (`ConnTable::footprint`: entries and index).\n\n";
        text += "| case | live connections | table capacity | resident MiB | bytes/connection | table bytes/connection | target |\n";
        text += "|---|---:|---:|---:|---:|---:|---:|\n";
        text += &memory_md;
    }
    (json, text)
}

fn main() {
    // The main thread is worker 0 of every director measured here, and counts connections
    // in that worker's shard, as the live worker thread does.
    fastlb::service::count_as_worker(0);
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let runs = std::env::var("FASTLB_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let secs: f64 = std::env::var("FASTLB_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let settings = Settings {
        runs,
        min_time: Duration::from_secs_f64(secs),
        filter,
    };
    let load_start = loadavg();
    eprintln!("fastlb pipeline benchmark: {runs} runs of >= {secs} s per case, batches of {BATCH}; load {load_start}");
    let mut b = Bench {
        s: settings,
        bufs: Bufs::new(),
        results: Vec::new(),
    };

    b.baselines("");
    for (flows, label) in [(FLOWS_SMALL, "1k"), (FLOWS_LARGE, "1m")] {
        for svc in [Svc::DrV4, Svc::NatV4, Svc::TunV4, Svc::DrV6] {
            b.established(svc, flows, label, Checksums::Complete, false);
        }
        // The same flows with a sync master running: what sync costs the worker.
        for svc in [Svc::DrV4, Svc::NatV4] {
            b.established(svc, flows, label, Checksums::Complete, true);
        }
    }
    // Memory per connection, 10 M and 20 M live (about 2 and 4 GiB resident today).
    for (flows, label) in FLOWS_MEMORY {
        b.memory(flows, label);
    }
    // What completing a partial checksum costs (docs/decisions.md, "Partial checksums").
    for svc in [Svc::DrV4, Svc::NatV4, Svc::TunV4, Svc::DrV6] {
        b.established(svc, FLOWS_SMALL, "1k", Checksums::Partial, false);
    }
    for sync in [false, true] {
        b.new_conns(
            Svc::DrV4,
            "new_rr_dr_v4",
            "SYNs of new flows, rr over 8 DR real servers",
            sync,
        );
    }
    b.new_conns(
        Svc::WlcDrV4,
        "new_wlc_dr_v4",
        "SYNs of new flows, wlc over 8 DR real servers",
        false,
    );
    b.new_conns(
        Svc::NatV4,
        "new_rr_nat_v4",
        "SYNs of new flows, rr over 8 NAT real servers",
        false,
    );
    b.new_conns(
        Svc::PersistDrV4,
        "new_persist_dr_v4",
        "SYNs of new flows from 65 536 returning clients, persistent rr service (-p 300)",
        false,
    );
    b.sync_backup();
    b.baselines("_end");

    let (json, md) = report(&b.results, &b.s, &load_start);
    if b.s.filter.is_some() {
        println!("{md}");
        eprintln!("filtered run: results not written");
        return;
    }
    let dir = common::results_dir();
    std::fs::create_dir_all(&dir).expect("bench-results/");
    let text = serde_json::to_string_pretty(&json).expect("json") + "\n";
    std::fs::write(dir.join("pipeline.json"), text).expect("write pipeline.json");
    std::fs::write(dir.join("pipeline.md"), &md).expect("write pipeline.md");
    println!("{md}");
    eprintln!("wrote {}", dir.join("pipeline.json").display());
}
