//! `xsk-fwd`: the bare AF_XDP forwarder of `src/bin/xdp-fwd.rs` with its sockets, rings and
//! UMEM taken from the `xsk-rs` crate (libxdp underneath) instead of fastlb's own layer
//! (`src/datapath/xdp/{socket,ring,umem,worker}.rs`), so the two can be measured against
//! each other in one run (`tools/bench/harness.sh --xsk-compare`).
//!
//! Everything else is xdp-fwd's: fastlb's XDP filter (loaded, attached and filled with the
//! services by the fastlb crate, libxdp's own program is not loaded), the same processor
//! (`FixedMac`: destination MAC to `--dst-mac`, source MAC to the egress interface's own),
//! the same sizes (4096-byte frames, rings of 2048, a UMEM of 2 x 2048 frames per socket
//! shared by the two interfaces' sockets), the same bind flags (copy mode, need_wakeup), the
//! same batch (64), and the same pass: recycle completions, top up the fill rings, take a
//! batch, rewrite, queue on the egress tx ring, kick while the ring asks for it and each kick
//! makes progress (at most 16), spin 50 us after the last frame, then sleep in `poll` (1 ms
//! while frames wait on a tx ring, else 10 ms).
//!
//! ```text
//! xsk-fwd --iface d0 --iface d1 --cross --service udp:10.71.9.1:9 --dst-mac 02:..:01
//! ```
//! One queue (queue 0 of each interface), driven by the main thread; pin it with `taskset`.

use std::error::Error as _;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant as StdInstant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use fastlb::datapath::xdp::{monotonic_now, parse_mac, FixedMac, XdpFilter, XdpMode};
use fastlb::datapath::{Frame, PacketProcessor, Verdict};
use fastlb::service::{
    Protocol, SchedFlags, SchedulerKind, ServiceEntry, ServiceKey, ServiceTable, VirtualService,
    DEFAULT_MH_TABLE_SIZE,
};
use fastlb::time::Instant;
use xsk_rs::config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// Rx batch per pass, as xdp-fwd's default.
const BATCH: usize = 64;
/// Size of every ring, as fastlb's default `ring_size`.
const RING: u32 = 2048;
/// UMEM frame size, as xdp-fwd's default.
const FRAME_SIZE: u32 = 4096;
/// Most tx kicks per socket per pass (fastlb's worker: `MAX_KICKS`).
const MAX_KICKS: usize = 16;
/// Spin after the last received frame before sleeping (fastlb's `DEFAULT_IDLE_SPIN_US`).
const IDLE_SPIN: Duration = Duration::from_micros(50);
/// `poll` timeouts of an idle pass, as fastlb's `idle.rs`.
const IDLE_POLL_MS: i32 = 10;
const TX_PENDING_POLL_MS: i32 = 1;

#[derive(Parser, Debug)]
#[command(about = "Bare AF_XDP forwarder on xsk-rs: rewrite MACs and send out the other interface")]
struct Args {
    /// Interface to serve (exactly two, with --cross).
    #[arg(long = "iface", required = true)]
    ifaces: Vec<String>,
    /// Traffic to take: PROTO:ADDR:PORT, e.g. udp:10.0.0.1:9.
    #[arg(long = "service", required = true)]
    services: Vec<String>,
    /// Destination MAC written into every frame.
    #[arg(long, required = true)]
    dst_mac: String,
    /// Frames received on one interface leave by the other (the only mode).
    #[arg(long)]
    cross: bool,
    /// Queues per interface: 1 (accepted for the harness's command line).
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// Accepted for the harness's command line; pin with taskset.
    #[arg(long = "core")]
    cores: Vec<usize>,
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::Relaxed);
}

fn iface_mac(iface: &str) -> Result<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .with_context(|| format!("reading the MAC address of {iface}"))?;
    parse_mac(s.trim()).with_context(|| format!("bad MAC address of {iface}: {s}"))
}

fn parse_service(s: &str) -> Result<ServiceKey> {
    let (proto, rest) = s.split_once(':').context("PROTO:ADDR:PORT")?;
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => bail!("protocol '{proto}' (tcp or udp)"),
    };
    let (addr, port) = rest.rsplit_once(':').context("PROTO:ADDR:PORT")?;
    let addr: IpAddr = addr.trim_matches(['[', ']']).parse().context("address")?;
    Ok(ServiceKey::Tuple {
        protocol,
        addr,
        port: port.parse().context("port")?,
    })
}

/// A table with the services and no real servers: all the filter needs (as xdp-fwd's).
fn table(keys: &[ServiceKey]) -> ServiceTable {
    let mut t = ServiceTable::default();
    for key in keys {
        t.services.push(ServiceEntry {
            config: VirtualService {
                key: *key,
                scheduler: SchedulerKind::Rr,
                flags: SchedFlags::default(),
                mh_table_size: DEFAULT_MH_TABLE_SIZE,
                persistence: None,
                reals: Vec::new(),
            },
            dests: Vec::new(),
        });
    }
    t
}

/// One socket's queues. The fill and completion queues belong to the (interface, queue)
/// context of the shared UMEM; libxdp hands a new pair to each interface's first socket.
struct Port {
    rx: RxQueue,
    tx: TxQueue,
    fill: FillQueue,
    comp: CompQueue,
    /// Port index frames received here leave by.
    egress: usize,
    /// Tx descriptors queued in this pass.
    queued: Vec<FrameDesc>,
}

/// Counters, as xdp-fwd prints them.
#[derive(Default, Debug)]
struct Counters {
    rx: u64,
    tx: u64,
    batches: u64,
    kicks: u64,
    tx_ring_full: u64,
    dropped: u64,
}

struct Fwd {
    // Field order: the ports (sockets) go before the UMEM.
    ports: Vec<Port>,
    umem: Umem,
    /// Frames owned by user space and idle.
    free: Vec<FrameDesc>,
    processor: FixedMac,
    c: Counters,
    /// Scratch for the rx and completion rings.
    descs: Vec<FrameDesc>,
}

impl Fwd {
    /// One pass over both ports; returns the frames received.
    fn step(&mut self, now: Instant) -> usize {
        self.recycle();
        let mut received = 0;
        for i in 0..self.ports.len() {
            // SAFETY: the descriptors are filled in from this UMEM's rx ring.
            let n = unsafe { self.ports[i].rx.consume(&mut self.descs[..BATCH]) };
            let egress = self.ports[i].egress;
            for d in &mut self.descs[..n] {
                let len = d.lengths().data();
                let verdict = {
                    // SAFETY: the kernel handed this frame over on the rx ring; it is in no
                    // ring until it goes on a tx or fill ring below, after this view ends.
                    let mut data = unsafe { self.umem.data_mut(d) };
                    let mut frame = Frame::new(data.contents_mut(), 0, len);
                    let v = self.processor.process(now, &mut frame);
                    // The bare forwarder rewrites in place: head and length stay.
                    debug_assert!(frame.head() == 0 && frame.len() == len);
                    v
                };
                match verdict {
                    Verdict::Transmit => self.ports[egress].queued.push(*d),
                    _ => {
                        self.c.dropped += 1;
                        self.free.push(*d);
                    }
                }
            }
            received += n;
        }
        if received > 0 {
            self.c.rx += received as u64;
            self.c.batches += 1;
        }
        self.flush();
        received
    }

    /// Completed transmissions back to the free stack; the fill rings topped up from it.
    fn recycle(&mut self) {
        for p in &mut self.ports {
            loop {
                let want = self.descs.len();
                // SAFETY: the descriptors are filled in from this UMEM's completion ring.
                let n = unsafe { p.comp.consume(&mut self.descs[..want]) };
                self.free.extend_from_slice(&self.descs[..n]);
                if n < want {
                    break;
                }
            }
        }
        for p in &mut self.ports {
            let have = self.free.len() as u32;
            let n = p.fill.nb_free(have).min(have) as usize;
            if n > 0 {
                let from = self.free.len() - n;
                // SAFETY: frames on the free stack are in no ring and no view of them is
                // alive; libxdp's reserve takes all n (counted free above) or none.
                let put = unsafe { p.fill.produce(&self.free[from..]) };
                if put == n {
                    self.free.truncate(from);
                }
            }
        }
    }

    /// Publishes each port's queued frames on its tx ring (what does not fit is counted
    /// and freed) and kicks while the ring asks for it and each kick makes progress.
    fn flush(&mut self) {
        for p in &mut self.ports {
            let q = p.queued.len();
            if q > 0 {
                let room = p.tx.nb_free(q as u32).min(q as u32) as usize;
                let put = if room > 0 {
                    // SAFETY: the queued frames came off this UMEM's rx ring and no view of
                    // them is alive; libxdp's reserve takes all `room` (counted free above)
                    // or none.
                    unsafe { p.tx.produce(&p.queued[..room]) }
                } else {
                    0
                };
                self.c.tx += put as u64;
                self.c.tx_ring_full += (q - put) as u64;
                self.free.extend_from_slice(&p.queued[put..]);
                p.queued.clear();
            }
            let mut left = RING - p.tx.nb_free_exact();
            for _ in 0..MAX_KICKS {
                if left == 0 || !p.tx.needs_wakeup() {
                    break;
                }
                if let Err(e) = p.tx.wakeup() {
                    eprintln!("xsk-fwd: sendto on AF_XDP socket: {e}");
                }
                self.c.kicks += 1;
                let now_left = RING - p.tx.nb_free_exact();
                if now_left >= left {
                    break;
                }
                left = now_left;
            }
        }
    }

    /// Whether some tx ring holds frames the kernel has not taken yet.
    fn tx_pending(&mut self) -> bool {
        self.ports.iter_mut().any(|p| p.tx.nb_free(RING) < RING)
    }
}

fn open(args: &Args) -> Result<(Fwd, XdpFilter)> {
    if !args.cross || args.ifaces.len() != 2 {
        bail!("xsk-fwd forwards between two interfaces: --cross with two --iface");
    }
    if args.queues != 1 {
        bail!("xsk-fwd serves queue 0 only (--queues 1)");
    }
    let keys = args
        .services
        .iter()
        .map(|s| parse_service(s).with_context(|| format!("--service {s}")))
        .collect::<Result<Vec<_>>>()?;
    let processor = FixedMac {
        dst: parse_mac(&args.dst_mac).context("--dst-mac")?,
        src: iface_mac(&args.ifaces[1])?,
    };

    let mut filter = XdpFilter::load()?;
    let mut ifindexes = Vec::new();
    for iface in &args.ifaces {
        let a = filter.attach(iface, XdpMode::Auto)?;
        eprintln!(
            "xsk-fwd: {} (ifindex {}) attached in {:?} mode",
            a.name, a.ifindex, a.mode
        );
        ifindexes.push(a.ifindex);
    }

    let qs = |n: u32| QueueSize::new(n).map_err(|e| anyhow!("queue size {n}: {e:?}"));
    let umem_cfg = UmemConfig::builder()
        .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| anyhow!("frame size: {e:?}"))?)
        .fill_queue_size(qs(RING)?)
        .comp_queue_size(qs(RING)?)
        .frame_headroom(0)
        .build()
        .map_err(|e| anyhow!("UMEM config: {e}"))?;
    // Each socket needs its fill ring full and its tx ring's worth in flight (as fastlb).
    let frames = NonZeroU32::new(args.ifaces.len() as u32 * RING * 2).expect("non-zero");
    let (umem, free) = Umem::new(umem_cfg, frames, false).map_err(|e| anyhow!("UMEM: {e}"))?;
    let sock_cfg = SocketConfig::builder()
        .rx_queue_size(qs(RING)?)
        .tx_queue_size(qs(RING)?)
        // fastlb's filter is attached above; libxdp must not load its own program.
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
        .build();
    let mut ports = Vec::new();
    for (i, iface) in args.ifaces.iter().enumerate() {
        let name = iface.parse().context("interface name")?;
        // SAFETY: no other socket is bound to this interface and queue.
        let (tx, rx, fq_cq) = unsafe { Socket::new(sock_cfg, &umem, &name, 0) }
            .map_err(|e| anyhow!("AF_XDP socket on {iface}: {e} ({:?})", e.source()))?;
        let (fill, comp) =
            fq_cq.ok_or_else(|| anyhow!("{iface}: libxdp gave no fill/completion rings"))?;
        filter.register_socket(ifindexes[i], 0, rx.fd().as_raw_fd())?;
        ports.push(Port {
            rx,
            tx,
            fill,
            comp,
            egress: 1 - i,
            queued: Vec::with_capacity(BATCH),
        });
    }
    let report = filter.sync(&table(&keys))?;
    eprintln!("xsk-fwd: {} filter entries; running", report.added);
    let fwd = Fwd {
        ports,
        umem,
        free,
        processor,
        c: Counters::default(),
        descs: vec![FrameDesc::default(); BATCH],
    };
    Ok((fwd, filter))
}

fn main() -> Result<()> {
    let args = Args::parse();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let (mut fwd, filter) = open(&args)?;
    let mut pfds: Vec<libc::pollfd> = fwd
        .ports
        .iter()
        .map(|p| libc::pollfd {
            fd: p.rx.fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let started = StdInstant::now();
    let mut idle_since: Option<Instant> = None;
    while !SIGNALLED.load(Ordering::Relaxed) {
        let now = monotonic_now();
        let n = fwd.step(now);
        if n > 0 {
            idle_since = None;
            continue;
        }
        let since = *idle_since.get_or_insert(now);
        if now.saturating_since(since) < IDLE_SPIN {
            std::hint::spin_loop();
            continue;
        }
        idle_since = None;
        let ms = if fwd.tx_pending() {
            TX_PENDING_POLL_MS
        } else {
            IDLE_POLL_MS
        };
        // SAFETY: `pfds` is a valid array of pollfd for the call's duration.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    }
    let c = &fwd.c;
    let fc = filter.counters()?;
    println!(
        "xsk-fwd: rx {} tx {} batches {} kicks {} tx_ring_full {} dropped {} in {:.1} s; \
         filter redirected {} passed {}",
        c.rx,
        c.tx,
        c.batches,
        c.kicks,
        c.tx_ring_full,
        c.dropped,
        started.elapsed().as_secs_f64(),
        fc.redirected,
        fc.passed
    );
    // Sockets close before the filter detaches.
    drop(fwd);
    drop(filter);
    Ok(())
}
