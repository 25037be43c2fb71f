//! The `fastlb` command: the appliance, replay, and the ipvsadm-style control client.
//! Started through a link named `ipvsadm`, it is that client alone (`fastlb ctl`).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use fastlb::conn::ConnTable;
use fastlb::control::appliance::{self, ApplianceOptions};
use fastlb::control::ctl::{
    ctl_main, invoked_as_ipvsadm, ipvsadm_main, take_socket_option, DEFAULT_SOCKET, SOCKET_ENV,
};
use fastlb::control::{top, Publisher};
use fastlb::datapath::pipeline::{Pipeline, PipelineSettings};
use fastlb::datapath::replay;
use fastlb::datapath::xdp::XdpMode;
use fastlb::forward::nexthop::NextHops;
use fastlb::service::{config, DestRegistry};
use fastlb::stats::WorkerStats;

/// fastlb: a layer-4 load balancer, Linux LVS/IPVS in user space on AF_XDP.
#[derive(Parser, Debug)]
#[command(
    name = "fastlb",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

/// Running the appliance: `fastlb --iface IF --config FILE`.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Interface to serve (repeat for several).
    #[arg(long = "iface", value_name = "IF")]
    ifaces: Vec<String>,
    /// Configuration: fastlb TOML, an `ipvsadm -S` rule file or a keepalived.conf.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// How to attach the XDP filter: auto (native, else generic), native or generic.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    xdp_mode: XdpMode,
    /// AF_XDP queues per interface (default: every rx queue).
    #[arg(long, value_name = "N")]
    queues: Option<u32>,
    /// Cores to pin workers to, comma separated (default: worker i on core i).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    cores: Vec<usize>,
    /// Spin on the rings instead of sleeping when idle.
    #[arg(long)]
    busy_poll: bool,
    /// Path of the ctl socket (`--socket` is the same option).
    #[arg(
        long,
        visible_alias = "socket",
        value_name = "PATH",
        env = SOCKET_ENV,
        default_value = DEFAULT_SOCKET
    )]
    ctl_socket: PathBuf,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9108).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Write the connection table here at exit and read it back at start, so a restart
    /// keeps established connections (default: `[director] state_file`, else the ctl
    /// socket's path with the extension `.state`; an empty path turns it off).
    #[arg(long, value_name = "PATH")]
    state_file: Option<PathBuf>,
    /// After SIGTERM with a state file written, keep the XDP program attached for this many
    /// seconds, dropping the services' traffic, until the next start takes it over (0: detach
    /// at once, as on SIGINT).
    #[arg(long, value_name = "SECS", default_value = "10")]
    restart_hold: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the pipeline over a pcap capture with the capture's clock.
    Replay(ReplayArgs),
    /// Talk to the running appliance in ipvsadm's language: `fastlb ctl -L -n`.
    Ctl(CtlArgs),
    /// A live view of the running appliance: services, real servers, rates, drops. Keys:
    /// s sort, r reverse, / filter, Esc clear the filter, q quit.
    Top(TopArgs),
    /// Print an ipvsadm rule file or a keepalived.conf as the equivalent fastlb TOML.
    Import {
        /// The file to convert.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Internal: holds a stopped run's XDP links for the next start (see --restart-hold).
    #[command(hide = true)]
    HoldHelper {
        /// The state file the hold is keyed by.
        #[arg(long, value_name = "PATH")]
        key: PathBuf,
        /// How long to hold.
        #[arg(long, value_name = "SECS")]
        seconds: u64,
    },
}

#[derive(clap::Args, Debug)]
struct CtlArgs {
    /// Path of the ctl socket (`--ctl-socket` is the same option; it may also come among
    /// the ipvsadm arguments).
    #[arg(
        long,
        visible_alias = "ctl-socket",
        value_name = "PATH",
        env = SOCKET_ENV,
        default_value = DEFAULT_SOCKET
    )]
    socket: PathBuf,
    /// ipvsadm arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IPVSADM-ARGS"
    )]
    args: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct TopArgs {
    /// Path of the ctl socket (`--ctl-socket` is the same option).
    #[arg(
        long,
        visible_alias = "ctl-socket",
        value_name = "PATH",
        env = SOCKET_ENV,
        default_value = DEFAULT_SOCKET
    )]
    socket: PathBuf,
    /// Seconds between refreshes.
    #[arg(long, short = 'd', value_name = "SECS", default_value = "1")]
    delay: f64,
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// Configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Input capture: classic pcap or pcapng, Ethernet.
    #[arg(long = "in", value_name = "IN.pcap")]
    input: PathBuf,
    /// Output capture: the frames the director transmits.
    #[arg(long = "out", value_name = "OUT.pcap")]
    output: PathBuf,
    /// Write a JSON report of counters here.
    #[arg(long, value_name = "R.json")]
    report: Option<PathBuf>,
    /// Routes, as `ip route show` prints them.
    #[arg(long, value_name = "FILE")]
    routes: Option<PathBuf>,
    /// Neighbours, as `ip neigh show` prints them.
    #[arg(long, value_name = "FILE")]
    neigh: Option<PathBuf>,
    /// The director's interfaces and their MAC addresses, as `ip link show` prints them:
    /// only frames sent to one of these MACs (or to the configuration's `accept_macs`, or
    /// broadcast/multicast) are the director's, and rewritten frames leave from them.
    #[arg(long, value_name = "FILE")]
    links: PathBuf,
}

fn main() -> std::process::ExitCode {
    let mut argv = std::env::args_os();
    if argv.next().is_some_and(|a| invoked_as_ipvsadm(&a)) {
        std::process::exit(ipvsadm_main(argv));
    }
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fastlb: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Replay(args)) => run_replay(&args),
        Some(Command::Ctl(mut args)) => {
            // `--socket` among the ipvsadm arguments (`fastlb ctl -L -n --socket P`) too.
            let socket = match take_socket_option(&mut args.args) {
                Ok(s) => s.unwrap_or(args.socket),
                Err(e) => {
                    eprintln!("fastlb ctl: {e}");
                    std::process::exit(2)
                }
            };
            let code = ctl_main(&socket, &args.args, std::io::stdin().lock());
            std::process::exit(code)
        }
        Some(Command::Top(args)) => {
            if !(0.1..=3600.0).contains(&args.delay) {
                anyhow::bail!("--delay: between 0.1 and 3600 seconds");
            }
            top::run(&args.socket, std::time::Duration::from_secs_f64(args.delay))
                .map_err(|e| anyhow::anyhow!("top: {e}"))
        }
        Some(Command::Import { file }) => {
            let config = config::load(&file)?;
            print!("{}", config::render::to_toml(&config));
            Ok(())
        }
        Some(Command::HoldHelper { key, seconds }) => {
            fastlb::datapath::xdp::hold::helper_main(&key, seconds)
                .map_err(|e| anyhow::anyhow!("hold helper: {e}"))
        }
        None => run_appliance(cli.run),
    }
}

fn run_appliance(args: RunArgs) -> Result<()> {
    let Some(config) = args.config else {
        anyhow::bail!("--config FILE is required (see fastlb --help)");
    };
    if args.ifaces.is_empty() {
        anyhow::bail!("at least one --iface IF is required (see fastlb --help)");
    }
    let opts = ApplianceOptions {
        ifaces: args.ifaces,
        config,
        xdp_mode: args.xdp_mode,
        queues: args.queues,
        cores: args.cores,
        busy_poll: args.busy_poll,
        ctl_socket: args.ctl_socket,
        metrics: args.metrics,
        state_file: args.state_file,
        restart_hold: std::time::Duration::from_secs(args.restart_hold),
    };
    appliance::run(&opts)?;
    Ok(())
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn load_nexthops(links: &Path, routes: Option<&Path>, neigh: Option<&Path>) -> Result<NextHops> {
    let links = NextHops::parse_links(&read_text(links)?, &links.display().to_string())?;
    if links.is_empty() {
        anyhow::bail!("no Ethernet interface (`link/ether`) in the --links file");
    }
    let routes = match routes {
        Some(p) => NextHops::parse_routes(&read_text(p)?, &p.display().to_string())?,
        None => Vec::new(),
    };
    let neigh = match neigh {
        Some(p) => NextHops::parse_neighbours(&read_text(p)?, &p.display().to_string())?,
        None => Vec::new(),
    };
    Ok(NextHops::with_links(&links, routes, neigh))
}

fn run_replay(args: &ReplayArgs) -> Result<()> {
    let config = config::load(&args.config)?;
    let registry = Arc::new(DestRegistry::default());
    let publisher = Publisher::new(config.clone(), Arc::clone(&registry))?;
    let capacity = if config.conn_capacity == 0 {
        1 << 16
    } else {
        config.conn_capacity
    };
    let conns = Arc::new(ConnTable::configured(
        capacity,
        &config,
        1,
        Arc::clone(&registry),
    ));
    conns.timeouts().apply(&config.timeouts);
    let mut nexthops = load_nexthops(&args.links, args.routes.as_deref(), args.neigh.as_deref())?;
    nexthops.set_extra_macs(&config.accept_macs);
    let nexthops = Arc::new(nexthops);
    let stats = Arc::new(WorkerStats::new(registry.capacity()));
    let settings = PipelineSettings {
        tunnel_source_v4: config.tunnel_source_v4,
        tunnel_source_v6: config.tunnel_source_v6,
        // Examine the whole table between frames: every timer fires on time.
        expire_budget: capacity,
    };
    let mut pipeline = Pipeline::new(
        0,
        publisher.table(),
        Arc::clone(&conns),
        nexthops,
        Arc::clone(&stats),
        settings,
    );
    let input = BufReader::new(
        File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?,
    );
    let output = BufWriter::new(
        File::create(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))?,
    );
    let outcome = replay::replay(&mut pipeline, input, output)?;
    if let Some(path) = &args.report {
        let report = fastlb::datapath::report::ReplayReport::new(
            &outcome,
            &publisher.table(),
            &registry,
            &[stats],
            conns.len(),
        );
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "replay: {} frames in, {} out, {} passed, {} dropped",
        outcome.frames_in, outcome.frames_out, outcome.passed, outcome.dropped
    );
    Ok(())
}
