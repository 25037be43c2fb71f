//! `cluster-sim`: a cluster of fastlb directors behind a router's ECMP, larger than one
//! machine can run, simulated on fastlb's own scheduler code.
//!
//! Flows (client address and port) reach a director by the router's multipath choice
//! (Linux hash-threshold, or modulo-N); on each director the real server comes from
//! `fastlb::sched` exactly as a worker schedules a new connection. Then a director or a
//! real server joins or leaves, and the tool counts the flows whose real server changes.
//! docs/cluster-sim.md describes the model and the findings.
//!
//! ```text
//! cluster-sim --out bench-results/cluster-sim          # the committed run (4-5 min, 2 cores)
//! cluster-sim --quick --out /tmp/sim                   # seconds
//! tools/cluster-sim/plot.py bench-results/cluster-sim  # PNG plots and summary.md
//! ```

mod experiments;
mod model;
mod progress;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;

use experiments::{
    Balance, DirectorChange, DirectorSettings, OrderMismatch, RealServerChange, RealServerSettings,
    Resilience, ResilienceSettings,
};
use fastlb::sched::MH_TABLE_SIZES;
use progress::Progress;

/// Simulates flows over N fastlb directors behind ECMP and counts the flows whose real
/// server changes when a director or a real server joins or leaves.
#[derive(Parser, Debug)]
#[command(name = "cluster-sim")]
struct Args {
    /// Directory for results.json (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Small sizes for a run of seconds (tests, a first look).
    #[arg(long)]
    quick: bool,
    /// Flows (client address/port pairs); default 1,000,000 (20,000 with --quick).
    #[arg(long)]
    flows: Option<usize>,
    /// Distinct client addresses the flows come from; default flows / 10.
    #[arg(long)]
    clients: Option<usize>,
    /// Seed of every random choice (flows, router hash key, servers removed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Real servers behind the directors in the director experiment.
    #[arg(long, default_value_t = 100)]
    director_reals: usize,
    /// Threads for the director experiment; default: the machine's CPUs.
    #[arg(long)]
    threads: Option<usize>,
    /// Recorded in results.json: the fastlb commit the run is from.
    #[arg(long)]
    commit: Option<String>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

/// Everything one run produced, as results.json holds it.
#[derive(Serialize)]
struct Results {
    tool: &'static str,
    commit: Option<String>,
    quick: bool,
    flows: usize,
    clients: usize,
    seed: u64,
    elapsed_s: f64,
    director_settings: DirectorSettings,
    director_changes: Vec<DirectorChange>,
    real_server_settings: RealServerSettings,
    real_server_changes: Vec<RealServerChange>,
    balance: Vec<Balance>,
    order: Vec<OrderMismatch>,
    resilience_settings: ResilienceSettings,
    resilience: Vec<Resilience>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let n_flows = args
        .flows
        .unwrap_or(if args.quick { 20_000 } else { 1_000_000 });
    let clients = args.clients.unwrap_or((n_flows / 10).max(1));
    if n_flows == 0 {
        bail!("--flows must be at least 1");
    }
    if args.director_reals == 0 {
        bail!("--director-reals must be at least 1");
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let started = std::time::Instant::now();
    let progress = Progress::new(!args.quiet);
    let flows = model::flows(n_flows, clients, args.seed);

    let director_settings = DirectorSettings {
        directors: if args.quick {
            vec![2, 3, 8]
        } else {
            vec![2, 3, 4, 8, 16, 32, 64]
        },
        reals: args.director_reals,
        table_size: fastlb::service::DEFAULT_MH_TABLE_SIZE,
        max_positions: if args.quick { 3 } else { 8 },
    };
    let real_server_settings = RealServerSettings {
        table_sizes: if args.quick {
            vec![251, 4093, 65521]
        } else {
            MH_TABLE_SIZES.to_vec()
        },
        reals: if args.quick {
            vec![10, 100]
        } else {
            vec![10, 100, 1000]
        },
        trials: if args.quick { 2 } else { 4 },
        seed: args.seed,
    };
    let resilience_settings = ResilienceSettings {
        table_sizes: if args.quick {
            vec![4093, 65521]
        } else {
            MH_TABLE_SIZES[4..].to_vec()
        },
        reals: if args.quick { 100 } else { 1000 },
        removed_pct: if args.quick {
            vec![1, 5, 10]
        } else {
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20]
        },
        seed: args.seed,
    };

    let director_changes =
        experiments::director_changes(&flows, &director_settings, threads, &progress);
    let (real_server_changes, balance, order) =
        experiments::real_server_changes(&flows, &real_server_settings, &progress);
    let resilience = experiments::resilience(&flows, &resilience_settings, &progress);

    let results = Results {
        tool: "cluster-sim",
        commit: args.commit,
        quick: args.quick,
        flows: n_flows,
        clients,
        seed: args.seed,
        elapsed_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        director_settings,
        director_changes,
        real_server_settings,
        real_server_changes,
        balance,
        order,
        resilience_settings,
        resilience,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let path = args.out.join("results.json");
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    if !args.quiet {
        eprintln!(
            "cluster-sim: {} flows, {:.1} s, wrote {}",
            n_flows,
            results.elapsed_s,
            path.display()
        );
    }
    Ok(())
}
