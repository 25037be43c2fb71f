//! The AF_XDP backend: the XDP filter, one UMEM and one worker thread per queue index,
//! one AF_XDP socket per (interface, queue).
//!
//! ```text
//!   iface A queue q --\                                   /--> tx on the egress socket
//!                      >-- worker q (pinned): UMEM q --- processor.process_batch(now, frames)
//!   iface B queue q --/    sockets A/q and B/q share it   \--> free (drop / pass)
//! ```
//!
//! Sockets of the same queue index on different interfaces share the queue's UMEM, so a
//! frame received on A can be sent out of B without a copy. Which interface a frame leaves
//! by is fixed per ingress interface ([`Egress`]) until `Verdict::Transmit` can name one.
//!
//! Frames are `frame_size` bytes; the kernel leaves 256 bytes (`XDP_PACKET_HEADROOM`,
//! equal to [`crate::datapath::HEADROOM`]) in front of every received packet, which the
//! processor may use to grow the frame (tunnel encapsulation).

mod filter;
mod forwarders;
pub mod hold;
mod idle;
mod kernel;
pub mod netlink;
mod ring;
mod socket;
mod umem;
mod worker;
mod xsk;

pub use filter::{
    ifindex, interface_mac, Attached, FilterCounters, FilterError, SyncReport, XdpFilter, XdpMode,
    MAX_CLASSIFIERS, MAX_IFACES, SLOTS_PER_IFACE,
};
pub use forwarders::{parse_mac, Bounce, Counted, FixedMac};
pub use worker::MAX_BATCH;
pub use xsk::{SinkProgram, Xsk, XskConfig, XskCounters, SINK_MAX_QUEUES};

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::datapath::{PacketProcessor, HEADROOM};
use crate::stats::{WorkerCounters, WorkerStats};
use crate::time::Instant;
use idle::{IdlePolicy, Next};
use socket::{BindFlags, RingSizes};
use umem::Umem;
use worker::Worker;

/// The kernel's `XDP_PACKET_HEADROOM`: bytes left in front of a received packet.
const XDP_PACKET_HEADROOM: usize = 256;
const _: () = assert!(XDP_PACKET_HEADROOM >= HEADROOM);

/// Where frames received on an interface are transmitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Egress {
    /// Out of the interface they came in on.
    #[default]
    SameInterface,
    /// Out of `map[i]` for frames received on the i-th interface of
    /// [`XdpOptions::ifaces`].
    Map(Vec<usize>),
}

/// Default [`XdpOptions::idle_spin_us`]: longer than the gap between packets at a few
/// ten thousand packets per second, short enough that an idle worker sleeps almost always.
pub const DEFAULT_IDLE_SPIN_US: u32 = 50;

/// Configuration of the AF_XDP datapath.
#[derive(Clone, Debug)]
pub struct XdpOptions {
    /// Interfaces to serve (`--iface`), at most [`MAX_IFACES`].
    pub ifaces: Vec<String>,
    /// Queues per interface; `None` = every rx queue the interface has.
    pub queues: Option<u32>,
    /// How to attach the XDP filter.
    pub mode: XdpMode,
    /// Spin instead of sleeping in `poll` when idle, with `SO_BUSY_POLL`.
    pub busy_poll: bool,
    /// Without `busy_poll`: how long a worker keeps polling its rings after the last
    /// received frame before it sleeps in `poll` (0 = sleep at the first empty pass).
    pub idle_spin_us: u32,
    /// Frames taken from an rx ring per pass, 1..=[`MAX_BATCH`].
    pub batch: usize,
    /// UMEM frame size: 2048 or 4096.
    pub frame_size: u32,
    /// Size of every ring (rx, tx, fill, completion), a power of two.
    pub ring_size: u32,
    /// Ask for zero-copy (veth supports copy mode only).
    pub zero_copy: bool,
    /// Use the need_wakeup flags (kick only when the kernel asks). On by default.
    pub need_wakeup: bool,
    /// Core of each worker (worker i on `cores[i % len]`); empty = worker i on the i-th
    /// core the process may use.
    pub cores: Vec<usize>,
    /// Where transmitted frames go.
    pub egress: Egress,
    /// The state file a stopped run held the interfaces under (`hold`): its links are
    /// adopted, and [`XdpFilter::take_over`] swaps the new program in. `None`: attach anew.
    pub hold_key: Option<std::path::PathBuf>,
}

impl Default for XdpOptions {
    fn default() -> XdpOptions {
        XdpOptions {
            ifaces: Vec::new(),
            queues: None,
            mode: XdpMode::Auto,
            busy_poll: false,
            idle_spin_us: DEFAULT_IDLE_SPIN_US,
            batch: 64,
            frame_size: 4096,
            ring_size: 2048,
            zero_copy: false,
            need_wakeup: true,
            cores: Vec::new(),
            egress: Egress::SameInterface,
            hold_key: None,
        }
    }
}

/// Errors of starting the datapath.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The options are inconsistent.
    #[error("AF_XDP options: {0}")]
    Options(String),
    /// The XDP filter failed.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// A socket or its UMEM could not be set up.
    #[error("AF_XDP socket on {iface} queue {queue}: {source}")]
    Socket {
        /// Interface.
        iface: String,
        /// Queue.
        queue: u32,
        /// The system error.
        source: io::Error,
    },
    /// A worker thread could not be started.
    #[error("starting worker thread: {0}")]
    Spawn(io::Error),
    /// A worker thread panicked.
    #[error("worker {0} panicked")]
    WorkerPanicked(usize),
}

/// The running datapath: the filter (for the control thread's `sync`) and the workers.
#[derive(Debug)]
pub struct Datapath {
    // Workers first: they are joined (sockets closed) before the filter detaches.
    workers: Vec<JoinHandle<()>>,
    stats: Vec<Arc<WorkerStats>>,
    filter: XdpFilter,
}

impl Datapath {
    /// The XDP filter, to [`XdpFilter::sync`] its maps with a new service table.
    pub fn filter(&mut self) -> &mut XdpFilter {
        &mut self.filter
    }

    /// All workers' counters summed.
    pub fn counters(&self) -> WorkerCounters {
        let mut total = WorkerCounters::default();
        for s in &self.stats {
            total += s.counters();
        }
        total
    }

    /// Waits for the workers to stop (after the caller set the stop flag), then detaches
    /// the filter.
    pub fn join(self) -> Result<WorkerCounters, XdpError> {
        self.join_holding().map(|(total, _links)| total)
    }

    /// As [`Datapath::join`], but the filter's links are returned instead of closed: its
    /// program stays attached while they are open (set [`XdpFilter::hold`] first).
    pub fn join_holding(mut self) -> Result<(WorkerCounters, Vec<hold::HeldLink>), XdpError> {
        let mut panicked = None;
        for (i, h) in std::mem::take(&mut self.workers).into_iter().enumerate() {
            if h.join().is_err() {
                panicked.get_or_insert(i);
            }
        }
        let total = self.counters();
        let links = self.filter.take_links();
        drop(self);
        match panicked {
            Some(i) => Err(XdpError::WorkerPanicked(i)),
            None => Ok((total, links)),
        }
    }
}

/// Starts the datapath and runs it until `stop` is set; returns the summed counters.
pub fn run<P, F>(
    opts: &XdpOptions,
    stats: &[Arc<WorkerStats>],
    make_processor: F,
    stop: Arc<AtomicBool>,
) -> Result<WorkerCounters, XdpError>
where
    P: PacketProcessor + Send + 'static,
    F: Fn(usize) -> P,
{
    start(opts, stats, make_processor, stop)?.join()
}

/// How many workers [`start`] runs for `opts`: one per queue index, up to the largest
/// queue count of the interfaces.
pub fn worker_count(opts: &XdpOptions) -> usize {
    opts.ifaces
        .iter()
        .map(|i| {
            opts.queues
                .unwrap_or_else(|| rx_queues(i))
                .min(SLOTS_PER_IFACE)
        })
        .max()
        .unwrap_or(0) as usize
}

/// Number of rx queues of `iface`, from sysfs (1 when sysfs says nothing).
fn rx_queues(iface: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(0)
        .max(1)
}

/// `CLOCK_MONOTONIC` as the pipeline's clock.
pub fn monotonic_now() -> Instant {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Instant::from_micros(ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000)
}

fn check_options(opts: &XdpOptions) -> Result<(), XdpError> {
    let bad = |m: String| Err(XdpError::Options(m));
    if opts.ifaces.is_empty() {
        return bad("no interface".into());
    }
    if opts.ifaces.len() > MAX_IFACES {
        return bad(format!("at most {MAX_IFACES} interfaces"));
    }
    if opts.frame_size != 2048 && opts.frame_size != 4096 {
        return bad(format!("frame size {} (2048 or 4096)", opts.frame_size));
    }
    if !opts.ring_size.is_power_of_two() || opts.ring_size < 64 {
        return bad(format!(
            "ring size {} (a power of two >= 64)",
            opts.ring_size
        ));
    }
    if !(1..=MAX_BATCH).contains(&opts.batch) {
        return bad(format!("batch {} (1..={MAX_BATCH})", opts.batch));
    }
    if let Egress::Map(m) = &opts.egress {
        if m.len() != opts.ifaces.len() || m.iter().any(|e| *e >= opts.ifaces.len()) {
            return bad("egress map needs one valid interface index per interface".into());
        }
    }
    Ok(())
}

/// Starts the datapath: loads and attaches the filter, opens the sockets, starts one pinned
/// worker per queue index ([`worker_count`]). `make_processor(i)` builds worker i's
/// processor and `stats[i]` holds worker i's counters: the processor counts its frames there
/// (the pipeline does; wrap a processor that does not in [`Counted`]), the worker adds its
/// I/O facts. The workers run until `stop` is set; then [`Datapath::join`] waits for them.
pub fn start<P, F>(
    opts: &XdpOptions,
    stats: &[Arc<WorkerStats>],
    make_processor: F,
    stop: Arc<AtomicBool>,
) -> Result<Datapath, XdpError>
where
    P: PacketProcessor + Send + 'static,
    F: Fn(usize) -> P,
{
    check_options(opts)?;
    if stats.len() < worker_count(opts) {
        return Err(XdpError::Options(format!(
            "{} workers but counters for {}",
            worker_count(opts),
            stats.len()
        )));
    }
    let mut filter = XdpFilter::load()?;
    if let Some(key) = &opts.hold_key {
        match hold::take_over(key) {
            Ok(held) => filter.adopt(held),
            Err(e) => crate::log::log(format_args!(
                "hold: asking for the interfaces a previous run held: {e}; attaching anew"
            )),
        }
    }
    for iface in &opts.ifaces {
        filter.attach(iface, opts.mode)?;
    }
    let attached: Vec<Attached> = filter.attached().to_vec();
    let queues: Vec<u32> = opts
        .ifaces
        .iter()
        .map(|i| {
            opts.queues
                .unwrap_or_else(|| rx_queues(i))
                .min(SLOTS_PER_IFACE)
        })
        .collect();
    let n_workers = *queues.iter().max().expect("at least one interface");
    let sizes = RingSizes {
        rx: opts.ring_size,
        tx: opts.ring_size,
        fill: opts.ring_size,
        comp: opts.ring_size,
    };
    let flags = BindFlags {
        zero_copy: opts.zero_copy,
        need_wakeup: opts.need_wakeup,
        busy_poll: opts.busy_poll.then_some((20, opts.batch as u32)),
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();

    let mut dp = Datapath {
        workers: Vec::new(),
        stats: Vec::new(),
        filter,
    };
    for q in 0..n_workers {
        // Interfaces that have this queue, and the port index each gets in the worker.
        let members: Vec<usize> = (0..opts.ifaces.len()).filter(|i| q < queues[*i]).collect();
        // Each socket needs its fill ring full and its tx ring's worth in flight.
        let frames = members.len() as u32 * opts.ring_size * 2;
        let sock_err = |i: usize, source: io::Error| XdpError::Socket {
            iface: opts.ifaces[i].clone(),
            queue: q,
            source,
        };
        let umem = Umem::map(frames, opts.frame_size).map_err(|e| sock_err(members[0], e))?;
        let mut ports = Vec::with_capacity(members.len());
        for &i in &members {
            let shared = ports.first().and_then(socket::Port::raw_fd);
            let p = socket::open(&umem, attached[i].ifindex, q, shared, sizes, flags)
                .map_err(|e| sock_err(i, e))?;
            ports.push(p);
        }
        let egress: Vec<Option<usize>> = members
            .iter()
            .map(|&i| {
                let out = match &opts.egress {
                    Egress::SameInterface => i,
                    Egress::Map(m) => m[i],
                };
                members.iter().position(|&m| m == out)
            })
            .collect();
        let stats = Arc::clone(&stats[q as usize]);
        let worker = Worker::new(
            umem,
            ports,
            egress,
            make_processor(q as usize),
            Arc::clone(&stats),
            opts.batch,
        )
        .with_iface_ports(
            (0..opts.ifaces.len())
                .map(|i| members.iter().position(|&m| m == i))
                .collect(),
        );
        for p in worker.ports() {
            let fd = p.raw_fd().expect("real sockets have fds");
            dp.filter.register_socket(p.ifindex, p.queue, fd)?;
        }
        let core = if opts.cores.is_empty() {
            cores.get(q as usize % cores.len().max(1)).copied()
        } else {
            Some(core_affinity::CoreId {
                id: opts.cores[q as usize % opts.cores.len()],
            })
        };
        let stop = stop.clone();
        let idle = IdlePolicy::new(
            Duration::from_micros(u64::from(opts.idle_spin_us)),
            opts.busy_poll,
        );
        let busy = opts.busy_poll;
        let h = std::thread::Builder::new()
            .name(format!("fastlb-xdp-{q}"))
            .spawn(move || {
                // Worker q counts connections in its own shard of the real servers'
                // counters (see `service::count_as_worker`).
                crate::service::count_as_worker(q as usize);
                worker_loop(worker, core, idle, busy, &stop)
            })
            .map_err(XdpError::Spawn)?;
        dp.workers.push(h);
        dp.stats.push(stats);
    }
    Ok(dp)
}

/// Passes made after the stop flag is seen, to drain what the rx rings hold.
const DRAIN_PASSES: usize = 16;

fn worker_loop<P: PacketProcessor>(
    mut w: Worker<P>,
    core: Option<core_affinity::CoreId>,
    mut idle: IdlePolicy,
    busy_poll: bool,
    stop: &AtomicBool,
) {
    if let Some(c) = core {
        core_affinity::set_for_current(c);
    }
    let mut pfds: Vec<libc::pollfd> = w
        .ports()
        .iter()
        .filter_map(|p| p.raw_fd())
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let now = monotonic_now();
        let n = w.step(now);
        w.between_batches(now);
        match idle.after_pass(now, n, w.tx_pending()) {
            Next::Pass => {
                if n == 0 {
                    if busy_poll {
                        w.kick_fill();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
            Next::Sleep(ms) => {
                // SAFETY: `pfds` is a valid array of pollfd for the call's duration.
                unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
            }
        }
    }
    for _ in 0..DRAIN_PASSES {
        let now = monotonic_now();
        if w.step(now) == 0 {
            break;
        }
    }
}
