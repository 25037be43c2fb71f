//! `xdp-fwd`: the bare AF_XDP forwarder, the ceiling fastlb's pipeline is measured against.
//!
//! Frames addressed to the given `--service`s enter user space through fastlb's XDP filter,
//! get their destination MAC rewritten to `--dst-mac` and their source MAC to the egress
//! interface's own, and leave by the same interface, or with `--cross` and two interfaces,
//! by the other one. `--bounce` swaps the MACs instead.
//!
//! ```text
//! xdp-fwd --iface d0 --iface d1 --cross --service udp:10.77.2.1:9 --dst-mac 02:..:01
//! ```

#[cfg(target_os = "linux")]
mod app {
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant as StdInstant};

    use anyhow::{bail, Context, Result};
    use clap::Parser;
    use fastlb::datapath::xdp::{
        self, parse_mac, Bounce, Counted, Egress, FixedMac, XdpMode, XdpOptions,
    };
    use fastlb::datapath::{Frame, PacketProcessor, Verdict};
    use fastlb::service::{
        Protocol, SchedFlags, SchedulerKind, ServiceEntry, ServiceKey, ServiceTable,
        VirtualService, DEFAULT_MH_TABLE_SIZE,
    };
    use fastlb::stats::WorkerStats;
    use fastlb::time::Instant;

    #[derive(Parser, Debug)]
    #[command(about = "Bare AF_XDP forwarder: rewrite MACs and send back out")]
    struct Args {
        /// Interface to serve (repeat for two).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// Traffic to take: PROTO:ADDR:PORT (port 0 = every port), e.g. udp:10.0.0.1:9.
        #[arg(long = "service", required = true)]
        services: Vec<String>,
        /// Destination MAC written into every frame.
        #[arg(long)]
        dst_mac: Option<String>,
        /// Swap source and destination MAC instead (send frames back to their sender).
        #[arg(long, conflicts_with = "dst_mac")]
        bounce: bool,
        /// With two interfaces: frames received on one leave by the other.
        #[arg(long)]
        cross: bool,
        /// XDP attach mode: auto, native, generic.
        #[arg(long, default_value = "auto")]
        mode: XdpMode,
        /// Queues per interface (default: all).
        #[arg(long)]
        queues: Option<u32>,
        /// Rx batch size.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// UMEM frame size (2048 or 4096).
        #[arg(long, default_value_t = 4096)]
        frame_size: u32,
        /// Spin instead of sleeping when idle.
        #[arg(long)]
        busy_poll: bool,
        /// Microseconds a worker keeps polling after the last frame before it sleeps.
        #[arg(long, default_value_t = xdp::DEFAULT_IDLE_SPIN_US)]
        idle_spin_us: u32,
        /// Cores for the workers (repeat); default: worker i on core i.
        #[arg(long = "core")]
        cores: Vec<usize>,
        /// Stop after this many seconds (default: at SIGINT/SIGTERM).
        #[arg(long)]
        duration: Option<f64>,
        /// Print counters every this many seconds (0 = only at exit).
        #[arg(long, default_value_t = 0.0)]
        stats_interval: f64,
    }

    static SIGNALLED: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        SIGNALLED.store(true, Ordering::Relaxed);
    }

    fn install_signal_handlers() {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        }
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

    /// A table with the services and no real servers: all the filter needs.
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

    /// Either forwarder, chosen at start.
    enum Fwd {
        Bounce(Bounce),
        Fixed(FixedMac),
    }

    impl PacketProcessor for Fwd {
        #[inline]
        fn process(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
            match self {
                Fwd::Bounce(b) => b.process(now, frame),
                Fwd::Fixed(f) => f.process(now, frame),
            }
        }
    }

    pub fn main() -> Result<()> {
        let args = Args::parse();
        if args.cross && args.ifaces.len() != 2 {
            bail!("--cross needs exactly two --iface");
        }
        let keys = args
            .services
            .iter()
            .map(|s| parse_service(s).with_context(|| format!("--service {s}")))
            .collect::<Result<Vec<_>>>()?;
        let egress_iface = if args.cross {
            &args.ifaces[1]
        } else {
            &args.ifaces[0]
        };
        let fixed = match (&args.dst_mac, args.bounce) {
            (Some(m), _) => Some(FixedMac {
                dst: parse_mac(m).context("--dst-mac")?,
                src: iface_mac(egress_iface)?,
            }),
            (None, true) => None,
            (None, false) => bail!("give --dst-mac or --bounce"),
        };
        let opts = XdpOptions {
            ifaces: args.ifaces.clone(),
            queues: args.queues,
            mode: args.mode,
            busy_poll: args.busy_poll,
            idle_spin_us: args.idle_spin_us,
            batch: args.batch,
            frame_size: args.frame_size,
            cores: args.cores.clone(),
            egress: if args.cross {
                Egress::Map(vec![1, 0])
            } else {
                Egress::SameInterface
            },
            ..XdpOptions::default()
        };
        install_signal_handlers();
        let stop = Arc::new(AtomicBool::new(false));
        // No real servers: only the frame counters are used.
        let stats: Vec<Arc<WorkerStats>> = (0..xdp::worker_count(&opts))
            .map(|_| Arc::new(WorkerStats::new(0)))
            .collect();
        let mut dp = xdp::start(
            &opts,
            &stats,
            |w| {
                let fwd = match fixed {
                    Some(f) => Fwd::Fixed(f),
                    None => Fwd::Bounce(Bounce),
                };
                Counted::new(fwd, Arc::clone(&stats[w]))
            },
            stop.clone(),
        )?;
        let report = dp.filter().sync(&table(&keys))?;
        for a in dp.filter().attached() {
            eprintln!(
                "xdp-fwd: {} (ifindex {}) attached in {:?} mode",
                a.name, a.ifindex, a.mode
            );
        }
        eprintln!("xdp-fwd: {} filter entries; running", report.added);

        let started = StdInstant::now();
        let mut last_print = started;
        let mut last = dp.counters();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let elapsed = started.elapsed().as_secs_f64();
            if SIGNALLED.load(Ordering::Relaxed) || args.duration.is_some_and(|d| elapsed >= d) {
                break;
            }
            if args.stats_interval > 0.0
                && last_print.elapsed().as_secs_f64() >= args.stats_interval
            {
                let now = dp.counters();
                let secs = last_print.elapsed().as_secs_f64();
                println!(
                    "rx {:.0} pps  tx {:.0} pps  (total rx {} tx {} kicks {})",
                    (now.rx - last.rx) as f64 / secs,
                    (now.tx - last.tx) as f64 / secs,
                    now.rx,
                    now.tx,
                    now.kicks
                );
                last = now;
                last_print = StdInstant::now();
            }
        }
        stop.store(true, Ordering::Relaxed);
        let fc = dp.filter().counters()?;
        let total = dp.join()?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "xdp-fwd: rx {} tx {} batches {} kicks {} passed {} tx_ring_full {} dropped {} \
             in {:.1} s; filter redirected {} passed {}",
            total.rx,
            total.tx,
            total.batches,
            total.kicks,
            total.passed,
            total.tx_ring_full,
            total.drops.iter().sum::<u64>(),
            secs,
            fc.redirected,
            fc.passed
        );
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn main() -> anyhow::Result<()> {
    app::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("xdp-fwd: AF_XDP exists on Linux only");
    std::process::exit(1);
}
