# Shared by the ECMP scenarios (ecmp.sh, ecmp_kernel.sh); source it after lib.sh.
# ecmp_init NAME [HOOK]: the names of an ECMP lab of tools/lab/ecmp.sh (prefix
# flbt-[TAG-]NAME-, state /tmp/<prefix>e-lab, the router namespace NS_RT), a scratch
# directory E2E_TMP, and the trap that prints the directors' and the router's logs on
# failure (then runs HOOK, a function printing more) and takes the lab down whatever happens.
# Skips when the kernel has no net.ipv4.fib_multipath_hash_seed.
ecmp_init() {
    [[ $(cat /proc/sys/net/ipv4/fib_multipath_hash_seed 2>/dev/null) ]] \
        || skip "this kernel has no net.ipv4.fib_multipath_hash_seed (6.11 and later)"
    export FLB_PREFIX=flbt-${FLBT_TAG:+$FLBT_TAG-}$1-
    export FLB_LAB_STATE=/tmp/${FLB_PREFIX}e-lab
    ECMP=$E2E_ROOT/tools/lab/ecmp.sh
    NS_RT=${FLB_PREFIX}e-rt
    ECMP_HOOK=${2:-}
    E2E_TMP=$(mktemp -d "/tmp/${FLB_PREFIX}XXXXXX")
    trap ecmp_finish EXIT
}

ecmp_finish() {
    local rc=$? n
    if [[ $rc != 0 && $rc != "$E2E_SKIPPED" ]]; then
        for n in 1 2 3; do
            echo "---- director $n log (last 15 lines)"
            tail -15 "$FLB_LAB_STATE/d$n/director.log" 2>/dev/null || true
        done
        echo "---- router BIRD log (last 20 lines)"
        tail -20 "$FLB_LAB_STATE/router/bird.log" 2>/dev/null || true
        [[ -z $ECMP_HOOK ]] || "$ECMP_HOOK" || true
    fi
    [[ -n ${CLIENTS:-} ]] && kill "$CLIENTS" 2>/dev/null
    "$ECMP" down >/dev/null 2>&1 || true
    rm -rf "$E2E_TMP"
    case $rc in
        0) echo "RESULT: passed" ;;
        "$E2E_SKIPPED") echo "RESULT: skipped" ;;
        *) echo "RESULT: failed (exit $rc)" ;;
    esac
}

# Milliseconds of CLOCK_BOOTTIME, finer than /proc/uptime's 10 ms.
clock_ms() { python3 -c 'import time; print(int(time.clock_gettime(time.CLOCK_BOOTTIME) * 1000))'; }
hops() { "$ECMP" route | wc -l; }
# wait_hops N: polls the router's route until it has N next hops; prints the milliseconds.
wait_hops() {
    local want=$1 t0 t
    t0=$(date +%s%N)
    for _ in $(seq 2000); do
        if [[ $(hops) == "$want" ]]; then
            t=$(date +%s%N)
            echo $(( (t - t0) / 1000000 ))
            return
        fi
        sleep 0.005
    done
    return 1
}
# new_seed: a new fib_multipath_hash_seed on the router (flows move between next hops).
new_seed() { ip netns exec "$NS_RT" sysctl -qw net.ipv4.fib_multipath_hash_seed=$(( RANDOM + 1 )); }
