//! End to end in network namespaces: the lab of `tools/lab/lab.sh` with real nginx, curl,
//! wrk, iperf3 and a UDP responder, fastlb on AF_XDP in the director.
//!
//! Each test runs one scenario script of `tests/e2e/` (see the comment at its top) and
//! asserts that it exits 0, printing its output. They need root; elsewhere each prints
//! `SKIP: needs root` and passes. The scripts share two CPUs with everything else, so one
//! runs at a time (a static mutex), each with its own namespaces (`flbt-<name>-*`), torn
//! down by a trap whatever happens.
//!
//! The director is the release build of fastlb: the same binary as this test when the
//! tests are built with `--release`, else `target/release/fastlb`, rebuilt first (a debug
//! build forwards too slowly for the load tests).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

static SERIAL: Mutex<()> = Mutex::new(());

fn root_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The fastlb binary the lab runs, built once per test process.
fn fastlb() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if !cfg!(debug_assertions) {
            return PathBuf::from(env!("CARGO_BIN_EXE_fastlb"));
        }
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--bin", "fastlb"])
            .current_dir(root_dir())
            .status()
            .expect("running cargo build --release");
        assert!(
            status.success(),
            "cargo build --release --bin fastlb failed"
        );
        root_dir().join("target/release/fastlb")
    })
}

/// Runs `tests/e2e/<script> <args>` and fails the test unless it exits 0.
fn scenario(script: &str, args: &[&str]) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        println!("SKIP: needs root (network namespaces, XDP, AF_XDP): {script}");
        return;
    }
    let path = root_dir().join("tests/e2e").join(script);
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .env("FASTLB_CMD", fastlb())
        .current_dir(root_dir())
        .output()
        .expect("running bash");
    println!(
        "== {script} {} ({:.1} s)\n{}",
        args.join(" "),
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{script} {} failed: {}",
        args.join(" "),
        out.status
    );
}

/// One test per scenario and forwarding method.
macro_rules! per_mode {
    ($($name:ident => $script:literal),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn dr() {
                    super::scenario($script, &["dr"]);
                }
                #[test]
                fn nat() {
                    super::scenario($script, &["nat"]);
                }
                #[test]
                fn tun() {
                    super::scenario($script, &["tun"]);
                }
            }
        )*
    };
}

per_mode! {
    wrr_ratio => "wrr.sh",
    wrk_no_errors => "wrk.sh",
    iperf3_stream => "iperf.sh",
    udp_request_response => "udp.sh",
    persistence => "persist.sh",
    kernel_traffic_passes => "kernel.sh",
    sigint_detaches_xdp => "sigint.sh",
}

#[test]
fn health_checks() {
    scenario("health.sh", &["nat"]);
}

#[test]
fn ctl_live() {
    scenario("ctl.sh", &["nat"]);
}

/// A SYN reusing the ports of a closed connection (CLOSE or TIME_WAIT) is scheduled as a new
/// connection, as IPVS does with conn_reuse_mode 1.
#[test]
fn port_reuse_reschedules() {
    scenario("port_reuse.sh", &["nat"]);
}

/// The first answer to a client whose MAC the director does not know yet is not lost: the
/// kernel routes it and resolves the neighbour meanwhile.
#[test]
fn new_client_first_answer() {
    scenario("new_client.sh", &["nat"]);
}

/// In nat mode, traffic from a real server's service port that belongs to no fastlb
/// connection (a client talking to the real server directly) is routed by the kernel.
#[test]
fn direct_real_server_access() {
    scenario("direct_real.sh", &["nat"]);
}

/// Two directors on one bridge that floods unknown unicast: only the director a SYN is
/// addressed to balances it, and the bridge never learns its MAC on the other's port.
#[test]
fn foreign_mac_frames_are_not_balanced() {
    scenario("foreign_mac.sh", &[]);
}
