#!/usr/bin/env bash
# Live benchmark of fastlb against its baselines, all in ONE run on one topology (needs root).
#
#   ns T (tester: pktgen, CPU 0)                    ns D (director, forwarding on CPU 1)
#   g0 10.71.1.1/24 ------------ veth ------------- d0 10.71.1.2/24
#   s0 10.71.2.1/24 (sink, RIP) - veth ------------ d1 10.71.2.2/24
#
# pktgen sends from g0 to the VIP 10.71.9.1 (dst MAC = d0's) and sinks everything s0 gets
# (the xdp_sink program takes every frame, IPIP included), in one process on CPU 0, so the
# generator's CLOCK_MONOTONIC stamps and the sink's clock are the same clock. The director
# forwards on CPU 1 in every configuration:
#   xdp-fwd    bare AF_XDP forwarder (fastlb's own I/O), taskset -c 1      = the ceiling
#   kernel     ip_forward + nftables DNAT VIP -> RIP; RPS steers d0's receive to CPU 1
#              (the generator's transmit would otherwise run the whole stack on CPU 0)
#   dpdk       dpdk-testpmd, af_xdp PMD on d0/d1, mac forwarding, forwarding lcore on CPU 1
#   fastlb     `fastlb --iface d0 --iface d1 --config F` in dr/nat/tun mode, 1k and 1M flows,
#              one worker (taskset -c 1) and two (two queues, taskset -c 0,1)
#   syn        fastlb with a TCP SYN flood: every packet a new connection
# and again at half of the ceiling's rate for the latency comparison (p99 at half load).
# The veth receive softirq of d0 runs on CPU 0 (the sender's CPU), away from the forwarder;
# the sink's receive softirq runs on CPU 1 (the forwarder's transmit), the same in every
# configuration.
#
# Usage: tools/bench/harness.sh [--duration SECS] [--size BYTES] [--repeat N] [--only REGEX]
#                               [--fastlb BINARY] [--out DIR] [--xsk-compare BINARY]
# Results: bench-results/live/{results.json,summary.md,*.svg,raw/}, or DIR with --out.
# --fastlb runs another fastlb build (a baseline kept aside) in the fastlb cases, so a
# change is compared against the build before it on the same machine in the same hour.
# --xsk-compare runs only the bare forwarder on fastlb's own ring layer (xdp-fwd) against
# the same forwarder on the xsk-rs crate (BINARY, tools/xsk-bench), alternating run by run,
# at full rate and at half of xdp-fwd's rate (tools/xsk-bench/run.sh drives it).
set -euo pipefail

if [[ $(id -u) != 0 ]]; then
    echo "SKIP: the live benchmark needs root (network namespaces, XDP)"
    exit 0
fi

# The machine is shared, and the kernel groups CPU time by session (sched_autogroup): a
# nice value counts only inside its own session, so a forwarder at nice -20 still got half
# of CPU 1 against one compiler in another session, and a forwarder that sleeps in poll()
# lost most of it (the first run's xdp-fwd "ceiling" got 0.8 s of a 3 s window on CPU 1
# and dropped at its rx ring). Run the benchmark in a session of its own and raise that
# session's weight; every forwarder, the generator and the kernel path get the same
# treatment. The contention left is measured per case (CPU pressure, forwarder run delay).
if [[ -z ${FLBB_SESSION:-} && -e /proc/self/autogroup ]]; then
    export FLBB_SESSION=1
    exec setsid -w "$0" "$@"
fi
echo -20 >/proc/self/autogroup 2>/dev/null || true

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/bench-results/live
FASTLB=$ROOT/target/release/fastlb
DUR=5
SIZE=64
REPEAT=2
ONLY=.
XSKFWD=
while [[ $# -gt 0 ]]; do
    case $1 in
        --duration) DUR=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --fastlb) FASTLB=$(realpath "$2"); shift 2 ;;
        --out) OUT=$(realpath -m "$2"); shift 2 ;;
        --xsk-compare) XSKFWD=$(realpath "$2"); shift 2 ;;
        *) echo "unknown argument $1"; exit 2 ;;
    esac
done
RAW=$OUT/raw

GEN_CPU=0
FWD_CPU=1
P=flbb$$
T=${P}t D=${P}d
VIP=10.71.9.1
RIP=10.71.2.1
WORK=$(mktemp -d)
FWD_PID=

log() { echo "harness: $*" >&2; }

stop_fwd() {
    if [[ -n $FWD_PID ]]; then
        kill -INT "$FWD_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$FWD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$FWD_PID" 2>/dev/null || true
        wait "$FWD_PID" 2>/dev/null || true
        FWD_PID=
    fi
}

teardown() {
    stop_fwd
    for ns in $T $D; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
}

cleanup() {
    teardown
    rm -rf "$WORK"
}
trap cleanup EXIT

cd "$ROOT"
log "building release binaries"
cargo build --release --bins >/dev/null 2>"$WORK/build.err" || { cat "$WORK/build.err"; exit 1; }
PKTGEN=$ROOT/target/release/pktgen
XDPFWD=$ROOT/target/release/xdp-fwd
# A partial run (--only) keeps the other cases' raw files, so the report covers them all.
[[ $ONLY == . ]] && rm -rf "$RAW"
mkdir -p "$RAW"

# Topology with Q queues per veth.
setup() {
    local q=$1
    teardown
    ip netns add "$T"
    ip netns add "$D"
    ip link add g0 netns "$T" numtxqueues "$q" numrxqueues "$q" type veth \
        peer name d0 netns "$D" numtxqueues "$q" numrxqueues "$q"
    ip link add s0 netns "$T" numtxqueues "$q" numrxqueues "$q" type veth \
        peer name d1 netns "$D" numtxqueues "$q" numrxqueues "$q"
    ip -n "$T" addr add 10.71.1.1/24 dev g0
    ip -n "$T" addr add $RIP/24 dev s0
    ip -n "$D" addr add 10.71.1.2/24 dev d0
    ip -n "$D" addr add 10.71.2.2/24 dev d1
    for l in "$T g0" "$T s0" "$D d0" "$D d1"; do
        set -- $l
        ip -n "$1" link set "$2" up
        # GSO frames would not fit a UMEM frame; checksum offload leaves partial sums.
        ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true
    done
    ip -n "$T" link set lo up
    ip -n "$D" link set lo up
    G0_MAC=$(ip netns exec "$T" cat /sys/class/net/g0/address)
    S0_MAC=$(ip netns exec "$T" cat /sys/class/net/s0/address)
    D0_MAC=$(ip netns exec "$D" cat /sys/class/net/d0/address)
    # Static neighbours: no ARP while the XDP programs own the interfaces.
    ip -n "$D" neigh replace $RIP lladdr "$S0_MAC" dev d1 nud permanent
    ip -n "$D" neigh replace 10.71.1.1 lladdr "$G0_MAC" dev d0 nud permanent
    ip -n "$D" route add 10.72.0.0/16 via 10.71.1.1
    ip -n "$D" route add $VIP/32 dev lo 2>/dev/null || true
    ip netns exec "$D" sysctl -qw net.ipv4.ip_forward=1
    for k in all.rp_filter default.rp_filter d0.rp_filter d1.rp_filter; do
        ip netns exec "$D" sysctl -qw net.ipv4.conf.$k=0
    done
    QUEUES=$q
}

# Microseconds some runnable task waited for a CPU (/proc/pressure/cpu, "some" total).
cpu_pressure() {
    sed -n 's/^some .*total=//p' /proc/pressure/cpu 2>/dev/null || echo 0
}

# Nanoseconds the threads of process $1 waited on a run queue (schedstat run_delay).
run_delay() {
    local s=0
    if [[ -n $1 ]]; then
        s=$(cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {printf "%.0f\n", s}' || true)
    fi
    echo "${s:-0}"
}

# /proc/stat busy jiffies (everything but idle and iowait) of one CPU.
cpu_busy() {
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 }' /proc/stat
}

# Starts the forwarder of a case in the director namespace; sets FWD_PID. Returns 1 (with
# the reason in $WORK/skip) when it does not come up.
start_fwd() {
    local kind=$1 cpus=$2 conf=${3:-}
    : >"$WORK/fwd.out"
    : >"$WORK/fwd.err"
    case $kind in
        xdp-fwd)
            ip netns exec "$D" taskset -c "$cpus" "$XDPFWD" --iface d0 --iface d1 --cross \
                --queues "$QUEUES" $(printf -- '--core %s ' ${cpus//,/ }) --service udp:$VIP:9 --service tcp:$VIP:80 \
                --dst-mac "$S0_MAC" >"$WORK/fwd.out" 2>"$WORK/fwd.err" &
            FWD_PID=$!
            ;;
        xsk-fwd)
            # The same forwarder and command line on xsk-rs's sockets, rings and UMEM.
            ip netns exec "$D" taskset -c "$cpus" "$XSKFWD" --iface d0 --iface d1 --cross \
                --queues "$QUEUES" --service udp:$VIP:9 --service tcp:$VIP:80 \
                --dst-mac "$S0_MAC" >"$WORK/fwd.out" 2>"$WORK/fwd.err" &
            FWD_PID=$!
            ;;
        dpdk)
            if ! command -v dpdk-testpmd >/dev/null; then
                echo "dpdk-testpmd not installed (apt-get install dpdk-dev librte-net-af-xdp23)" >"$WORK/skip"
                return 1
            fi
            ip netns exec "$D" dpdk-testpmd --lcores "0@$GEN_CPU,1@$cpus" --no-huge -m 256 --no-pci \
                --no-shconf --log-level=*:error \
                --vdev net_af_xdp0,iface=d0,start_queue=0,queue_count=1 \
                --vdev net_af_xdp1,iface=d1,start_queue=0,queue_count=1 \
                -- --forward-mode=mac --eth-peer=1,"$S0_MAC" --nb-cores=1 \
                --total-num-mbufs=16384 --stats-period 1 >"$WORK/fwd.out" 2>"$WORK/fwd.err" &
            FWD_PID=$!
            ;;
        kernel)
            ip netns exec "$D" nft -f - <<EOF
table ip flbb {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr $VIP udp dport 9 dnat to $RIP:9
        ip daddr $VIP tcp dport 80 dnat to $RIP:80
    }
}
EOF
            # The generator's transmit runs d0's receive on CPU 0; RPS moves the stack's
            # work (forwarding, conntrack, DNAT) to the forwarding CPU.
            local mask=0
            for c in ${cpus//,/ }; do mask=$((mask | (1 << c))); done
            for q in $(seq 0 $((QUEUES - 1))); do
                ip netns exec "$D" sh -c "printf %x $mask > /sys/class/net/d0/queues/rx-$q/rps_cpus"
            done
            FWD_PID=
            return 0
            ;;
        fastlb)
            if [[ ! -x $FASTLB ]]; then
                echo "target/release/fastlb missing" >"$WORK/skip"
                return 1
            fi
            ip netns exec "$D" taskset -c "$cpus" "$FASTLB" --iface d0 --iface d1 \
                --config "$conf" --queues "$QUEUES" --cores "$cpus" \
                --ctl-socket "$WORK/ctl.sock" >"$WORK/fwd.out" 2>"$WORK/fwd.err" &
            FWD_PID=$!
            ;;
    esac
    # Up when the forwarder has attached XDP to d0 (every kind here does) and still runs.
    for _ in $(seq 80); do
        if ! kill -0 "$FWD_PID" 2>/dev/null; then
            wait "$FWD_PID" 2>/dev/null || true
            FWD_PID=
            { echo "$kind exited at start:"; tail -3 "$WORK/fwd.err"; } | tr '\n' ' ' >"$WORK/skip"
            return 1
        fi
        if ip -n "$D" link show d0 | grep -q xdp; then
            sleep 1
            return 0
        fi
        sleep 0.1
    done
    echo "$kind did not attach to d0 within 8 s" >"$WORK/skip"
    stop_fwd
    return 1
}

stop_case() {
    local kind=$1
    stop_fwd
    if [[ $kind == kernel ]]; then
        ip netns exec "$D" nft delete table ip flbb 2>/dev/null || true
        for q in $(seq 0 $((QUEUES - 1))); do
            ip netns exec "$D" sh -c "echo 0 > /sys/class/net/d0/queues/rx-$q/rps_cpus" || true
        done
    fi
}

# run_case NAME GROUP KIND FWD_CPUS CONF -- PKTGEN_ARGS...: REPEAT runs, NAME~1, NAME~2, ...
# (the forwarder restarted each time); report.py keeps the best. With two CPUs shared by
# generator, sink and forwarder, single runs are bimodal (softirq work moving to ksoftirqd
# on one CPU or the other), so one run alone can land on the bad mode.
run_case() {
    local name=$1
    if ! [[ $name =~ $ONLY ]]; then return 0; fi
    local r
    for r in $(seq "$REPEAT"); do
        run_once "$name~$r" "${@:2}"
    done
}

run_once() {
    local name=$1 group=$2 kind=$3 cpus=$4 conf=$5
    shift 6
    log "case $name ($kind, forwarding on CPU $cpus, $QUEUES queue(s))"
    rm -f "$WORK/skip"
    if ! start_fwd "$kind" "$cpus" "$conf"; then
        local why
        why=$(cat "$WORK/skip")
        log "  SKIP $name: $why"
        python3 -c 'import json,sys; print(json.dumps({"name":sys.argv[1],"group":sys.argv[2],"kind":sys.argv[3],"skipped":sys.argv[4]}))' \
            "$name" "$group" "$kind" "$why" >"$RAW/$name.meta.json"
        return 0
    fi
    local lanes=1
    [[ $group == *2w* ]] && lanes=$QUEUES
    ip netns exec "$T" taskset -c $GEN_CPU "$PKTGEN" --mode both --tx-iface g0 --rx-iface s0 \
        --queues "$lanes" --rx-queues "$QUEUES" --dst-mac "$D0_MAC" --src-ip 10.72.0.1 \
        --dst-ip $VIP --size "$SIZE" --duration "$DUR" --json "$RAW/$name.json" "$@" \
        2>"$RAW/$name.pktgen.log" &
    local gen=$!
    # Measure the middle of the window: after start-up, before the drain.
    sleep 1
    local win=$((DUR - 2))
    ((win < 1)) && win=1
    local b0 b1 perf_target=() p0 p1 d0 d1 g0 g1 load
    b0=$(cpu_busy $FWD_CPU)
    p0=$(cpu_pressure)
    d0=$(run_delay "$FWD_PID")
    g0=$(run_delay "$gen")
    [[ -n $FWD_PID ]] && perf_target=(-p "$FWD_PID")
    if ((${#perf_target[@]})) && command -v perf >/dev/null; then
        perf stat -x, -e cycles,instructions,task-clock "${perf_target[@]}" -o "$RAW/$name.perf" \
            -- sleep "$win" 2>/dev/null || sleep "$win"
    else
        sleep "$win"
    fi
    b1=$(cpu_busy $FWD_CPU)
    p1=$(cpu_pressure)
    d1=$(run_delay "$FWD_PID")
    g1=$(run_delay "$gen")
    load=$(cut -d' ' -f1 /proc/loadavg)
    wait "$gen" || log "  pktgen failed: $(tail -2 "$RAW/$name.pktgen.log")"
    tail -1 "$RAW/$name.pktgen.log" >&2
    stop_case "$kind"
    cp "$WORK/fwd.out" "$RAW/$name.fwd.out" 2>/dev/null || true
    cp "$WORK/fwd.err" "$RAW/$name.fwd.err" 2>/dev/null || true
    python3 - "$name" "$group" "$kind" "$cpus" "$QUEUES" "$win" "$((b1 - b0))" \
        "$(getconf CLK_TCK)" "$RAW/$name.perf" "$((p1 - p0))" "$((d1 - d0))" "$((g1 - g0))" \
        "$load" >"$RAW/$name.meta.json" <<'EOF'
import json, sys
name, group, kind, cpus, queues, win, busy, hz, perf, stall, fdelay, gdelay, load = sys.argv[1:14]
meta = {"name": name, "group": group, "kind": kind, "fwd_cpus": cpus,
        "queues": int(queues), "window_s": float(win),
        "fwd_cpu_busy_s": int(busy) / int(hz),
        # Share of the window in which some task on the machine waited for a CPU, and how
        # long the forwarder's and the generator's threads waited: the contention the
        # shared machine added to this case.
        "cpu_pressure_pct": round(int(stall) / 1e4 / float(win), 1),
        "fwd_run_delay_ms": round(int(fdelay) / 1e6, 1),
        "pktgen_run_delay_ms": round(int(gdelay) / 1e6, 1),
        "loadavg_1m": float(load)}
try:
    for line in open(perf):
        f = line.strip().split(",")
        if len(f) > 3 and f[2] in ("cycles", "instructions", "task-clock"):
            v = f[0]
            meta["perf_" + f[2].replace("-", "_")] = None if v.startswith("<") else float(v)
except OSError:
    pass
print(json.dumps(meta))
EOF
}

# fastlb configuration for a forwarding method; the 1 M-flow table needs room.
fastlb_conf() {
    local method=$1 proto=${2:-udp} port=${3:-9}
    cat >"$WORK/fastlb-$method-$proto.toml" <<EOF
[director]
conn_capacity = 2097152
tunnel_source_v4 = "10.71.2.2"

[[service]]
protocol = "$proto"
address = "$VIP"
port = $port
scheduler = "rr"

[[service.real]]
address = "$RIP"
port = $port
weight = 1
method = "$method"
EOF
    echo "$WORK/fastlb-$method-$proto.toml"
}

describe_machine() {
    python3 - "$OUT/machine.json" <<'EOF'
import json, os, platform, subprocess, sys
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""
m = {
    "cpu": sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor(),
    "cpus": os.cpu_count(),
    "kernel": platform.release(),
    "memory": sh("free -h | awk '/^Mem:/ {print $2}'"),
    "virtualization": sh("lscpu | sed -n 's/^Hypervisor vendor: *//p'"),
    "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
    "rustc": sh("rustc --version"),
    "dpdk": sh("dpkg-query -W -f '${Version}' dpdk 2>/dev/null"),
    "perf_cycles": "cycles" if "not supported" not in sh("perf stat -e cycles -- true 2>&1") else "not supported (no PMU in this VM)",
}
json.dump(m, open(sys.argv[1], "w"), indent=1)
EOF
}

describe_machine
log "fastlb probe: $("$FASTLB" --iface none --config /dev/null 2>&1 | head -1 || true)"

# ---- --xsk-compare: own ring layer against xsk-rs, runs alternating -------------------------
if [[ -n $XSKFWD ]]; then
    setup 1
    for r in $(seq "$REPEAT"); do
        run_once "xdp-fwd~$r" baseline xdp-fwd $FWD_CPU "" -- --flows 1000
        run_once "xsk-fwd~$r" baseline xsk-fwd $FWD_CPU "" -- --flows 1000
    done
    CEIL=$(python3 -c 'import json,sys; print(int(max(json.load(open(f))["rx_pps"] for f in sys.argv[1:])))' "$RAW"/xdp-fwd~[0-9]*.json 2>/dev/null || echo 400000)
    HALF=$((CEIL / 2))
    log "xdp-fwd's best $CEIL pps; half load $HALF pps"
    for r in $(seq "$REPEAT"); do
        run_once "half-xdp-fwd~$r" half xdp-fwd $FWD_CPU "" -- --flows 1000 --rate $HALF
        run_once "half-xsk-fwd~$r" half xsk-fwd $FWD_CPU "" -- --flows 1000 --rate $HALF
    done
    teardown
    log "writing results"
    python3 "$ROOT/tools/bench/report.py" "$OUT" "$DUR" "$SIZE"
    log "done: $OUT/summary.md"
    exit 0
fi

# ---- one queue: ceiling, kernel, DPDK, fastlb with one worker, SYN rate -------------------
setup 1
run_case xdp-fwd baseline xdp-fwd $FWD_CPU "" -- --flows 1000
CEIL=$(python3 -c 'import json,sys; print(int(max(json.load(open(f))["rx_pps"] for f in sys.argv[1:])))' "$RAW"/xdp-fwd~[0-9].json 2>/dev/null || echo 400000)
HALF=$((CEIL / 2))
log "ceiling $CEIL pps; half load $HALF pps"
run_case kernel-nat baseline kernel $FWD_CPU "" -- --flows 1000
run_case dpdk baseline dpdk $FWD_CPU "" -- --flows 1000
for method in dr nat tun; do
    conf=$(fastlb_conf "$method")
    run_case "fastlb-$method-1k-1w" "fastlb-1w" fastlb $FWD_CPU "$conf" -- --flows 1000
    run_case "fastlb-$method-1m-1w" "fastlb-1w" fastlb $FWD_CPU "$conf" -- --flows 1000000
done
conf=$(fastlb_conf dr tcp 80)
run_case fastlb-syn-dr-1w syn fastlb $FWD_CPU "$conf" -- --pattern syn --dport 80
run_case kernel-syn-nat syn kernel $FWD_CPU "" -- --pattern syn --dport 80
# Latency at half of the ceiling's rate: every forwarder under the same offered load.
run_case half-xdp-fwd half xdp-fwd $FWD_CPU "" -- --flows 1000 --rate $HALF
run_case half-kernel-nat half kernel $FWD_CPU "" -- --flows 1000 --rate $HALF
run_case half-dpdk half dpdk $FWD_CPU "" -- --flows 1000 --rate $HALF
run_case half-fastlb-dr half fastlb $FWD_CPU "$(fastlb_conf dr)" -- --flows 1000 --rate $HALF

# ---- two queues: fastlb with two workers (the machine has two CPUs) -----------------------
setup 2
for method in dr nat tun; do
    conf=$(fastlb_conf "$method")
    run_case "fastlb-$method-1k-2w" "fastlb-2w" fastlb "0,1" "$conf" -- --flows 1000
    run_case "fastlb-$method-1m-2w" "fastlb-2w" fastlb "0,1" "$conf" -- --flows 1000000
done
teardown

log "writing results"
python3 "$ROOT/tools/bench/report.py" "$OUT" "$DUR" "$SIZE"
log "done: $OUT/summary.md"
