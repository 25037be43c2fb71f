# The Debian 12 packages fastlb's build, lab and tests need: the one list that .ci/run,
# tools/lab/lab.sh and tools/test.sh share. Source it, then `ensure_packages GROUP...`.
#
#   build  compiling fastlb: CA certificates (cargo fetches crates over HTTPS), a C
#          toolchain for the linker and build scripts, clang and libbpf for the XDP
#          programs (bpf/*.c), what xsk-rs's vendored libxdp needs
#   lab    the namespace lab (tools/lab/lab.sh): iproute2, ping, ps/sysctl, python3 (the
#          UDP responder), nginx, curl, iperf3, socat, keepalived (mode ha's VRRP), bird2
#          (the ecmp mode's router and fastlb's [bgp])
#   test   the tests on top of the lab: wrk, tshark and tcpdump (reading captures),
#          scapy (tools/gen-fixtures.py), nftables, keepalived (its config check), tmux
#          (fastlb top as a user sees it), prometheus (scraping the lab's director)
#   kernel the real kernel's IPVS in qemu (tools/kernel-ipvs): qemu, a static busybox
#          and ipvsadm for the VM's initramfs, kmod and cpio to build it
#
# ensure_packages installs what is missing (as root: `apt-get update` first, quiet, one
# line naming the packages) and fails with the `apt-get install` line to type otherwise.

FASTLB_PACKAGES_BUILD="ca-certificates gcc g++ libc6-dev clang llvm m4 make pkg-config libelf-dev zlib1g-dev libbpf-dev"
FASTLB_PACKAGES_LAB="iproute2 iputils-ping procps python3 nginx-light curl iperf3 socat keepalived bird2"
FASTLB_PACKAGES_TEST="wrk tshark tcpdump python3-scapy nftables keepalived ethtool tmux prometheus"
FASTLB_PACKAGES_KERNEL="qemu-system-x86 busybox-static ipvsadm kmod cpio"

# fastlb_packages GROUP...: the packages of the groups, one per line.
fastlb_packages() {
    local group
    for group; do
        case $group in
            build) printf '%s\n' $FASTLB_PACKAGES_BUILD ;;
            lab) printf '%s\n' $FASTLB_PACKAGES_LAB ;;
            test) printf '%s\n' $FASTLB_PACKAGES_TEST ;;
            kernel) printf '%s\n' $FASTLB_PACKAGES_KERNEL ;;
            *) echo "packages: unknown group $group" >&2; return 2 ;;
        esac
    done
}

# missing_packages GROUP...: those of the groups that dpkg does not list as installed.
missing_packages() {
    local pkgs p
    pkgs=$(fastlb_packages "$@") || return
    for p in $pkgs; do
        [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || echo "$p"
    done
}

# ensure_packages GROUP...: installs the missing packages of the groups (needs root).
ensure_packages() {
    local who=${FASTLB_PACKAGES_WHO:-$(basename "$0")} missing out
    if ! command -v dpkg-query >/dev/null; then
        echo "$who: not a Debian system: make sure these are installed: $(fastlb_packages "$@" | tr '\n' ' ')" >&2
        return 0
    fi
    missing=$(missing_packages "$@" | tr '\n' ' ') || return
    missing=${missing% }
    [[ -n $missing ]] || return 0
    if [[ $(id -u) != 0 ]]; then
        echo "$who: missing Debian packages; as root: apt-get install --no-install-recommends $missing" >&2
        return 1
    fi
    echo "$who: installing Debian packages: $missing" >&2
    out=$(mktemp)
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing; } \
        >"$out" 2>&1; then
        tail -20 "$out" >&2
        rm -f "$out"
        echo "$who: installing $missing failed" >&2
        return 1
    fi
    rm -f "$out"
}

# need_cargo: fails with what to type when cargo is not on PATH. Debian's sudo resets PATH
# (secure_path), so a toolchain that rustup installed in a user's home is not found under
# `sudo`: the caller keeps it with `sudo env PATH=... RUSTUP_HOME=... CARGO_HOME=...`.
need_cargo() {
    local who=${FASTLB_PACKAGES_WHO:-$(basename "$0")}
    command -v cargo >/dev/null && return 0
    echo "$who: cargo is not on PATH${SUDO_USER:+ (sudo resets PATH)}: install Rust for this user, or run" \
        "sudo env PATH=\"\$PATH\" RUSTUP_HOME=\"\$HOME/.rustup\" CARGO_HOME=\"\$HOME/.cargo\" $0 ..." >&2
    return 1
}
