//! End to end in network namespaces: the lab of `tools/lab/lab.sh` with real nginx, curl,
//! wrk, iperf3, socat and a UDP responder, fastlb on AF_XDP in the director, in IPv4 and
//! IPv6; the Linux kernel's own IPVS selftest layout driven through `ipvsadm`; the seed's
//! one-bridge DR lab and its health-check script.
//!
//! Each test runs one scenario script of `tests/e2e/` (see the comment at its top) and
//! asserts that it exits 0, printing its output. They need root: elsewhere, or when a
//! script exits 77 (`SKIP: why`, a tool it needs is missing), the test is recorded as
//! skipped (`tests/support`), which `tools/test.sh` counts as such and CI refuses. The
//! scripts share two CPUs with everything else, so one runs at a time (a static mutex),
//! each with its own namespaces (`flbt-[TAG-]<name>-*`), torn down by a trap whatever
//! happens.
//!
//! The director is the release build of fastlb: the same binary as this test when the
//! tests are built with `--release`, else `target/release/fastlb`, rebuilt first (a debug
//! build forwards too slowly for the load tests). Likewise `xdp-fwd`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

static SERIAL: Mutex<()> = Mutex::new(());

/// Exit status of a scenario that cannot run here (automake's convention); its last
/// `SKIP: ` line says why.
const SKIPPED: i32 = 77;

fn root_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The release binaries the scenarios run (fastlb, xdp-fwd), built once per test process.
fn release_bins() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        if !cfg!(debug_assertions) {
            return (
                PathBuf::from(env!("CARGO_BIN_EXE_fastlb")),
                PathBuf::from(env!("CARGO_BIN_EXE_xdp-fwd")),
            );
        }
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--bin", "fastlb", "--bin", "xdp-fwd"])
            .current_dir(root_dir())
            .status()
            .expect("running cargo build --release");
        assert!(status.success(), "cargo build --release failed");
        (
            root_dir().join("target/release/fastlb"),
            root_dir().join("target/release/xdp-fwd"),
        )
    })
}

/// Runs `tests/e2e/<script> <args>`: passes when it exits 0, is skipped when it exits 77,
/// fails otherwise.
fn scenario(script: &str, args: &[&str]) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !support::is_root() {
        support::skip("needs root (network namespaces, XDP, AF_XDP)");
        return;
    }
    let (fastlb, xdp_fwd) = release_bins();
    let path = root_dir().join("tests/e2e").join(script);
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .env("FASTLB_CMD", fastlb)
        .env("XDP_FWD", xdp_fwd)
        .env("PKTGEN", env!("CARGO_BIN_EXE_pktgen"))
        .current_dir(root_dir())
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "== {script} {} ({:.1} s)\n{stdout}",
        args.join(" "),
        started.elapsed().as_secs_f64(),
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    if out.status.code() == Some(SKIPPED) {
        let why = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("SKIP: "))
            .unwrap_or("the script gave no reason");
        support::skip(&format!("{script} {}: {why}", args.join(" ")));
        return;
    }
    assert!(
        out.status.success(),
        "{script} {} failed: {}",
        args.join(" "),
        out.status
    );
}

/// One test per forwarding method (`dr`, `nat`, `tun`), the script's further arguments
/// after the method.
macro_rules! per_mode {
    ($($name:ident => $script:literal $(, $extra:literal)*);* $(;)?) => {
        $(
            mod $name {
                #[test]
                fn dr() {
                    super::scenario($script, &["dr" $(, $extra)*]);
                }
                #[test]
                fn nat() {
                    super::scenario($script, &["nat" $(, $extra)*]);
                }
                #[test]
                fn tun() {
                    super::scenario($script, &["tun" $(, $extra)*]);
                }
            }
        )*
    };
}

per_mode! {
    wrr_ratio => "wrr.sh";
    wrr_ratio_v6 => "wrr.sh", "6";
    multiqueue_two_workers => "multiqueue.sh";
    wrk_no_errors => "wrk.sh";
    iperf3_stream => "iperf.sh";
    iperf3_stream_v6 => "iperf.sh", "6";
    udp_request_response => "udp.sh";
    udp_request_response_v6 => "udp.sh", "6";
    persistence => "persist.sh";
    kernel_traffic_passes => "kernel.sh";
    sigint_exits_cleanly => "sigint.sh";
    new_client_first_answer => "new_client.sh";
    kernel_selftest_v4 => "ipvs_selftest.sh", "4";
    kernel_selftest_v6 => "ipvs_selftest.sh", "6";
}

/// UDP datagrams of 4000 bytes through the director with the kernel's default MTU 1500: the
/// client sends each in three fragments and every datagram arrives whole at a real server
/// (its length and SHA-256 answered back); the director's fragment counters moved
/// (tests/e2e/frag.sh). DR and NAT; TUN would need the outer packet fragmented, which fastlb
/// does not do (docs/decisions.md, "Fragments").
mod udp_fragments {
    #[test]
    fn dr() {
        super::scenario("frag.sh", &["dr"]);
    }
    #[test]
    fn nat() {
        super::scenario("frag.sh", &["nat"]);
    }
    #[test]
    fn dr_v6() {
        super::scenario("frag.sh", &["dr", "6"]);
    }
    #[test]
    fn nat_v6() {
        super::scenario("frag.sh", &["nat", "6"]);
    }
}

/// Three directors behind a router's ECMP, announced by BGP through BIRD: 200 long-lived mh
/// connections survive a drain, an undrain, a new hash seed and a killed director; rr beside
/// them breaks (tools/lab/ecmp.sh, docs/bgp.md).
#[test]
fn ecmp_dr() {
    scenario("ecmp.sh", &["dr"]);
}

/// [`ecmp_dr`] with the directors tunnelling (IPIP) to the real servers.
#[test]
fn ecmp_tun() {
    scenario("ecmp.sh", &["tun"]);
}

/// A kernel IPVS director (Debian's 6.1 in qemu, its own BIRD) in the ECMP group beside three
/// fastlb directors with `dest_order = "kernel"`: 200 long-lived mh connections keep their
/// real servers while flows move to and from it (new hash seeds, its withdrawal and return);
/// the migration path from kernel LVS (tests/e2e/ecmp_kernel.sh). Skips without qemu.
#[test]
fn ecmp_kernel_director_dr() {
    scenario("ecmp_kernel.sh", &["dr"]);
}

/// [`ecmp_kernel_director_dr`] with every director tunnelling (IPIP) to the real servers.
#[test]
fn ecmp_kernel_director_tun() {
    scenario("ecmp_kernel.sh", &["tun"]);
}

/// The seed's DR lab (one bridge, a one-legged director): every request answered, balanced.
#[test]
fn seed_dr_lab() {
    scenario("dr_flat.sh", &[]);
}

/// The seed's health-check script, unchanged, drives fastlb through `ipvsadm`.
#[test]
fn seed_health_script() {
    scenario("seed_health.sh", &[]);
}

#[test]
fn health_checks() {
    scenario("health.sh", &["nat"]);
}

#[test]
fn ctl_live() {
    scenario("ctl.sh", &["nat"]);
}

/// `fastlb top` in a tmux pane against the lab under wrk load: the screen shows the VIP,
/// the real servers with health and rates; s, r, / and q work; q and SIGTERM restore the
/// terminal.
#[test]
fn top_in_tmux() {
    scenario("top.sh", &["nat"]);
}

/// A real Prometheus scrapes the lab's director (`lab.sh up --prometheus`): its HTTP API
/// shows rs1's packets rising, drops by reason, health; every query of the Grafana
/// dashboard (tools/grafana/fastlb.json) returns data.
#[test]
fn prometheus_scrapes_the_lab() {
    scenario("prometheus.sh", &["nat"]);
}

/// IPVS connection sync between two fastlb appliances: the backup holds the master's
/// connections with the same real servers and states; tshark decodes the datagrams.
#[test]
fn sync_master_backup_nat() {
    scenario("sync.sh", &["nat"]);
}

#[test]
fn sync_master_backup_dr() {
    scenario("sync.sh", &["dr"]);
}

/// A restart of the active director (SIGTERM, start again) keeps every established
/// connection through its state file: 8 long-lived line connections and an iperf3 stream
/// survive it; a damaged state file is refused whole.
#[test]
fn restart_keeps_connections_dr() {
    scenario("restart.sh", &["dr"]);
}

/// NAT: the stopping run leaves its XDP program holding the interfaces (dropping the
/// services' traffic) until the next start takes it over, so no real server's reply reaches
/// the director's kernel, which would route it on unrewritten and have the client reset;
/// a hold nobody takes over ends and leaves the interfaces clean.
#[test]
fn restart_keeps_connections_nat() {
    scenario("restart.sh", &["nat"]);
}

/// Sync interop with a real Linux IPVS in qemu: kernel master to fastlb backup, fastlb
/// master to kernel backup (TCP, UDP, a persistence template). Skips without qemu.
#[test]
fn sync_kernel_interop() {
    scenario("sync_kernel.sh", &[]);
}

/// A mixed director pair: a kernel IPVS master in qemu and a fastlb standby whose backup
/// sync daemon follows its `[pair]`; the master dies, the VIP moves to fastlb, and the 4
/// long-lived connections go on through it.
#[test]
fn mixed_pair_kernel_master_dies() {
    scenario("mixed_pair.sh", &[]);
}

/// A SYN reusing the ports of a closed connection (CLOSE or TIME_WAIT) is scheduled as a new
/// connection, as IPVS does with conn_reuse_mode 1.
#[test]
fn port_reuse_reschedules() {
    scenario("port_reuse.sh", &["nat"]);
}

/// In nat mode, traffic from a real server's service port that belongs to no fastlb
/// connection (a client talking to the real server directly) is routed by the kernel.
#[test]
fn direct_real_server_access() {
    scenario("direct_real.sh", &["nat"]);
}

/// The lab's tunnel-mode real server alone: bpf/tun_decap.c strips IPv4 and IPv6 outer
/// headers.
#[test]
fn tun_decap_alone() {
    scenario("tun_decap.sh", &[]);
}

/// The benchmarks' bare AF_XDP forwarder forwards what it is given and leaves the rest.
#[test]
fn xdp_fwd_forwards() {
    scenario("xdp_fwd.sh", &[]);
}

/// A director pair with real keepalived and connection sync following it (lab mode ha):
/// the standby transmits nothing and knows every connection; when the master dies, comes
/// back and stops gracefully, the VIP moves and none of 8 long-lived connections and an
/// iperf3 stream breaks; the gaps are measured (docs/ha.md).
#[test]
fn ha_failover_dr() {
    scenario("ha_failover.sh", &["dr"]);
}

/// The same in NAT (lab mode ha-nat): the real servers' gateway is a second address of the
/// VRRP instance, on the inside.
#[test]
fn ha_failover_nat() {
    scenario("ha_failover.sh", &["nat"]);
}

/// A spoofed SYN flood at pktgen's full rate fills the connection table while 8 long-lived
/// connections and an iperf3 stream run through the director: none of them breaks, and the
/// flood reaches the table's bound (evictions counted). Stalls, throughput and the share of
/// new connections that succeed are printed (docs/bounds.md).
#[test]
fn syn_flood_breaks_no_established_connection() {
    scenario("syn_flood.sh", &[]);
}

/// The same flood, 3 s, with IPVS's `drop_entry` on (at 1, `amemthresh` a quarter of the
/// table): its walk ends some of the flood's half-open entries
/// (`fastlb_conn_table_dropped_entries_total` grows), and no established connection breaks.
#[test]
fn syn_flood_with_drop_entry_ends_half_open_entries() {
    scenario("syn_flood.sh", &["3", "", "drop_entry=1,amemthresh=4096"]);
}

/// Two directors on one bridge that floods unknown unicast: only the director a SYN is
/// addressed to balances it, and the bridge never learns its MAC on the other's port.
#[test]
fn foreign_mac_frames_are_not_balanced() {
    scenario("foreign_mac.sh", &[]);
}
