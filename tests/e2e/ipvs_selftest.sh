#!/usr/bin/env bash
# Usage: ipvs_selftest.sh dr|nat|tun [4|6]. The layout of the Linux kernel's own IPVS
# selftest (tools/testing/selftests/net/netfilter/ipvs.sh), with fastlb as the director and
# programmed through `ipvsadm` commands: a link named ipvsadm to fastlb, on PATH for this
# script only. Written for fastlb, not copied.
#
#   client (bridge br0: 10.81.1.2)                   director                  real server
#   br0 = vc0 + vc1                vc0 --- veth --- dc  10.81.1.1
#                                                   ds  10.81.2.1 --- veth --- rs 10.81.2.2
#                                  vc1 --- veth ------------------------------- rc 10.81.1.3
#   (IPv6: fd81:1::2, fd81:1::1, fd81:2::1, fd81:2::2, fd81:1::3; VIP 10.81.100.1 / fd81:100::1)
#
# The client routes the VIP through the director; the real server has a leg on the
# client's segment (rc) for the direct answers of dr and tun, removed in nat, where its
# default route is the director. The VIP is on the director's lo (as in the kernel's test)
# and, in dr and tun, on the real server's lo. dr: arp_ignore=1/arp_announce=2 and
# rp_filter off on the real server; tun: the director does not forward (ip_forward=0), the
# real server strips the outer header with bpf/tun_decap.c (this kernel has no ipip
# device; the kernel's test uses tunl0). Everything else is the kernel's default:
# offloads, neighbour resolution (nothing resolved in advance).
#
# Checks: `ipvsadm -A`/`-a` through the link succeed; socat carries 32 random bytes from
# the client to VIP:8080 and the real server's copy is identical; the director counted the
# connection (`ipvsadm -L -n --stats`), so it went through fastlb.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: ipvs_selftest.sh dr|nat|tun [4|6]}
FAM=${2:-4}
[[ $MODE =~ ^(dr|nat|tun)$ && $FAM =~ ^[46]$ ]] || fail "usage: ipvs_selftest.sh dr|nat|tun [4|6]"
need socat cmp clang
lab_init "ipvs-$MODE$FAM"
NS0=${FLB_PREFIX}client NS1=${FLB_PREFIX}dir NS2=${FLB_PREFIX}rs1
mkdir -p "$FLB_LAB_STATE"

if [[ $FAM == 4 ]]; then
    V=10.81.100.1 CIP=10.81.1.2 GIP=10.81.1.1 DIP=10.81.2.1 RIP=10.81.2.2 SIP=10.81.1.3
    P4=24 HOST=32 IP="ip -4" SOCAT_L=TCP4-LISTEN SOCAT_C=TCP4 VADDR=$V
else
    V=fd81:100::1 CIP=fd81:1::2 GIP=fd81:1::1 DIP=fd81:2::1 RIP=fd81:2::2 SIP=fd81:1::3
    P4=64 HOST=128 IP="ip -6" SOCAT_L=TCP6-LISTEN SOCAT_C=TCP6 VADDR=[$V]
fi
# Adds an address; IPv6 ones without duplicate address detection (unique by construction).
add() {
    local ns=$1 a=$2 dev=$3
    if [[ $FAM == 6 ]]; then ip -n "$ns" -6 addr add "$a" dev "$dev" nodad
    else ip -n "$ns" addr add "$a" dev "$dev"; fi
}

# setup: the three namespaces and their links.
for ns in $NS0 $NS1 $NS2; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add vc0 netns "$NS0" type veth peer name dc netns "$NS1"
ip link add vc1 netns "$NS0" type veth peer name rc netns "$NS2"
ip link add ds netns "$NS1" type veth peer name rs netns "$NS2"
ip -n "$NS0" link add br0 type bridge
for dev in vc0 vc1; do ip -n "$NS0" link set "$dev" master br0 up; done
ip -n "$NS0" link set br0 up
add "$NS0" "$CIP/$P4" br0
add "$NS1" "$GIP/$P4" dc
add "$NS1" "$DIP/$P4" ds
add "$NS2" "$RIP/$P4" rs
add "$NS2" "$SIP/$P4" rc
for l in "$NS1 dc" "$NS1 ds" "$NS2 rs" "$NS2 rc"; do set -- $l; ip -n "$1" link set "$2" up; done
# Link-local addresses finish their duplicate address detection on their own.
for ns in $NS0 $NS1 $NS2; do
    wait_for 5 sh -c "[ -z \"\$(ip -n $ns -6 addr show tentative)\" ]" \
        || fail "IPv6 addresses in $ns still tentative"
done
head -c 32 /dev/urandom > "$E2E_TMP/in"

# The director: fastlb on both legs with an empty table, programmed below by ipvsadm.
: > "$FLB_LAB_STATE/rules"
ip netns exec "$NS1" "$FASTLB_CMD" --iface dc --iface ds --config "$FLB_LAB_STATE/rules" \
    --ctl-socket "$FLB_LAB_STATE/ctl.sock" >"$FLB_LAB_STATE/director.log" 2>&1 &
echo $! > "$FLB_LAB_STATE/director.pid"
wait_for 10 grep -q serving "$FLB_LAB_STATE/director.log" || fail "fastlb did not start"
mkdir -p "$E2E_TMP/bin"
ln -s "$(realpath "$FASTLB_CMD")" "$E2E_TMP/bin/ipvsadm"
export PATH=$E2E_TMP/bin:$PATH FASTLB_CTL_SOCKET=$FLB_LAB_STATE/ctl.sock
[[ $(command -v ipvsadm) == "$E2E_TMP/bin/ipvsadm" ]] || fail "ipvsadm on PATH is not fastlb's link"
ipvsadm -v

ip netns exec "$NS0" $IP route add "$V" via "$GIP" dev br0
case $MODE in
    dr)
        ip netns exec "$NS1" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
        ip netns exec "$NS1" ipvsadm -A -t "$VADDR:8080" -s rr
        ip netns exec "$NS1" ipvsadm -a -t "$VADDR:8080" -r "$([[ $FAM == 6 ]] && echo "[$RIP]" || echo "$RIP"):8080"
        add "$NS1" "$V/$HOST" lo
        ip netns exec "$NS2" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
        ip netns exec "$NS2" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.rs.rp_filter=0
        add "$NS2" "$V/$HOST" lo ;;
    nat)
        ip netns exec "$NS1" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
        ip netns exec "$NS1" ipvsadm -A -t "$VADDR:8080" -s rr
        ip netns exec "$NS1" ipvsadm -a -m -t "$VADDR:8080" -r "$([[ $FAM == 6 ]] && echo "[$RIP]" || echo "$RIP"):8080"
        add "$NS1" "$V/$HOST" lo
        ip -n "$NS2" link del rc
        ip netns exec "$NS2" $IP route add default via "$DIP" dev rs ;;
    tun)
        clang -O2 -g -Wall -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
            -c "$E2E_ROOT/bpf/tun_decap.c" -o "$E2E_TMP/tun_decap.o"
        ip netns exec "$NS1" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 \
            net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0
        ip netns exec "$NS1" ipvsadm -A -t "$VADDR:8080" -s rr
        ip netns exec "$NS1" ipvsadm -a -i -t "$VADDR:8080" -r "$([[ $FAM == 6 ]] && echo "[$RIP]" || echo "$RIP"):8080"
        add "$NS1" "$V/$HOST" lo
        ip -n "$NS2" link set dev rs xdp obj "$E2E_TMP/tun_decap.o" sec xdp
        ip netns exec "$NS2" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
        ip netns exec "$NS2" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.rs.rp_filter=0 \
            net.ipv4.conf.lo.rp_filter=0
        add "$NS2" "$V/$HOST" lo ;;
esac
ipvsadm -L -n
pass "ipvsadm -A and -a through the link"

# test_service: the server listens, the client sends the 32 bytes, the copies must match.
ip netns exec "$NS2" timeout 10 socat -u "$SOCAT_L:8080,reuseaddr" STDOUT > "$E2E_TMP/out" &
SERVER=$!
wait_for 5 ip netns exec "$NS2" sh -c "ss -ltnH 'sport = :8080' | grep -q ." || fail "socat did not listen"
T0=$(now_ms)
ip netns exec "$NS0" timeout 5 socat -u STDIN "$SOCAT_C:$VADDR:8080" < "$E2E_TMP/in" \
    || fail "client: socat to $VADDR:8080 failed"
wait "$SERVER" || fail "server: socat failed"
log "32 bytes carried in $(( $(now_ms) - T0 )) ms"
cmp "$E2E_TMP/in" "$E2E_TMP/out" || fail "the real server's copy differs ($(wc -c <"$E2E_TMP/out") bytes)"
pass "$MODE IPv$FAM: 32 random bytes reached the real server intact"
STATS=$(ipvsadm -L -n --stats --exact)
echo "$STATS"
CONNS=$(awk -v r="$RIP" '$1 == "->" && index($2, r) {print $3}' <<<"$STATS")
[[ $CONNS == 1 ]] || fail "the director counted ${CONNS:-no} connection(s) to the real server, not 1"
pass "the connection went through fastlb (1 connection counted)"
