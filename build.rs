//! Compiles the XDP programs in `bpf/` with clang for the BPF target; the crate embeds the
//! objects with `include_bytes!`. Only on Linux, where the AF_XDP datapath exists.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["xdp_filter", "tun_decap", "xdp_sink"];

fn main() {
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-env-changed=CLANG");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // The uapi headers for the bpf target come from the host's multiarch include directory
    // (asm/types.h); without it clang cannot find them.
    let multiarch = format!(
        "/usr/include/{}-linux-gnu",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default()
    );
    for prog in PROGRAMS {
        let src = format!("bpf/{prog}.c");
        let obj = out.join(format!("{prog}.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg(format!("-I{multiarch}"))
            .args(["-c", &src, "-o"])
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("fastlb build: `{clang}` failed to compile {src} ({s})"),
            Err(e) => panic!(
                "fastlb build: cannot run `{clang}` to compile the XDP programs in bpf/ ({e}). \
                 Install clang and the BPF headers (Debian: apt-get install clang llvm \
                 libbpf-dev), or point the CLANG environment variable at a clang binary."
            ),
        }
    }
}
