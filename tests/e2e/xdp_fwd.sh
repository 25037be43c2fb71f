#!/usr/bin/env bash
# Usage: xdp_fwd.sh [native|generic|auto]. The bare AF_XDP forwarder xdp-fwd (the ceiling
# of the live benchmarks, src/bin/xdp-fwd.rs) on its own:
#
#   A (sender)                   D (xdp-fwd on d0 and d1)                 B (receiver)
#   a0 10.77.1.1/24 ---- veth ---- d0 10.77.1.2/24   d1 10.77.2.2/24 ---- veth ---- b0 10.77.2.1/24
#
# A routes 10.77.2.0/24 through D. D's XDP filter redirects UDP to 10.77.2.1:9 into AF_XDP;
# xdp-fwd writes b0's MAC as destination and transmits on d1 (received on one socket,
# sent on another: the two-interface path). D's kernel forwards everything else.
#   - 200 UDP datagrams to B:9 arrive, each intact, and xdp-fwd counted them (rx and tx);
#   - a datagram to B:10 (not xdp-fwd's) arrives too, through D's kernel, which xdp-fwd
#     left alone (it counted nothing more);
#   - ping from A to D works while xdp-fwd runs.
# xdp-fwd forwards frames as they are, checksums included, like the benchmark generator's
# frames it is made for: the datagrams are built whole by a raw socket (a kernel UDP
# socket would leave its checksum to the offload, which a bare forwarder does not finish).
source "$(dirname "$0")/lib.sh"
XDP_MODE=${1:-auto}
XDP_FWD=${XDP_FWD:-$E2E_ROOT/target/release/xdp-fwd}
[[ -x $XDP_FWD ]] || fail "no $XDP_FWD (cargo build --release --bin xdp-fwd)"
lab_init xdpfwd
A=${FLB_PREFIX}client D=${FLB_PREFIX}dir B=${FLB_PREFIX}rs1
mkdir -p "$FLB_LAB_STATE"
for ns in $A $D $B; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add a0 netns "$A" type veth peer name d0 netns "$D"
ip link add b0 netns "$B" type veth peer name d1 netns "$D"
ip -n "$A" addr add 10.77.1.1/24 dev a0
ip -n "$D" addr add 10.77.1.2/24 dev d0
ip -n "$D" addr add 10.77.2.2/24 dev d1
ip -n "$B" addr add 10.77.2.1/24 dev b0
for l in "$A a0" "$D d0" "$D d1" "$B b0"; do set -- $l; ip -n "$1" link set "$2" up; done
ip -n "$A" route add 10.77.2.0/24 via 10.77.1.2
ip -n "$B" route add 10.77.1.0/24 via 10.77.2.2
ip netns exec "$D" sysctl -qw net.ipv4.ip_forward=1
# D must know B's MAC for its own forwarding; A learns D's by its own ARP.
B_MAC=$(ip netns exec "$B" cat /sys/class/net/b0/address)

# The receiver: counts intact datagrams per port for 8 s (or until 201 arrived).
ip netns exec "$B" python3 - >"$E2E_TMP/got" <<'PY' &
import select, socket, time
socks = []
for port in (9, 10):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.77.2.1", port))
    socks.append(s)
got = {9: set(), 10: set()}
end = time.time() + 8
while time.time() < end and len(got[9]) + len(got[10]) < 201:
    for s in select.select(socks, [], [], 0.2)[0]:
        d, a = s.recvfrom(2048)
        port = s.getsockname()[1]
        if d.startswith(b"xdp-fwd %d " % port) and len(d) == 100:
            got[port].add(int(d.split()[2]))
print(len(got[9]), len(got[10]))
PY
RECEIVER=$!
wait_for 5 ip netns exec "$B" sh -c "ss -lunH 'sport = :9' | grep -q ." || fail "receiver did not start"

ip netns exec "$D" "$XDP_FWD" --iface d0 --iface d1 --cross --mode "$XDP_MODE" \
    --service udp:10.77.2.1:9 --dst-mac "$B_MAC" >"$FLB_LAB_STATE/fwd.out" 2>"$FLB_LAB_STATE/director.log" &
FWD=$!
E2E_CLEANUP+=("kill -INT $FWD")
wait_for 10 grep -q running "$FLB_LAB_STATE/director.log" || fail "xdp-fwd did not start"
cat "$FLB_LAB_STATE/director.log"

ip netns exec "$A" ping -c1 -W2 10.77.1.2 >/dev/null || fail "ping from A to D"
pass "ping A -> D while xdp-fwd runs"

ip netns exec "$A" python3 - <<'PY'
import socket, struct, time
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s >> 16) + (s & 0xffff)
    return (~s) & 0xffff
src, dst = socket.inet_aton("10.77.1.1"), socket.inet_aton("10.77.2.1")
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
def send(port, seq):
    payload = (b"xdp-fwd %d %d " % (port, seq)).ljust(100, b".")
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 17, len(udp))
    udp = udp[:6] + struct.pack("!H", csum(pseudo + udp) or 0xffff) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    raw.sendto(ip + udp, ("10.77.2.1", 0))
for seq in range(200):
    send(9, seq)
    if seq % 20 == 19:
        time.sleep(0.01)
send(10, 0)
PY
wait "$RECEIVER" || true
read -r GOT9 GOT10 < "$E2E_TMP/got"
log "B received $GOT9 of 200 datagrams to :9 (xdp-fwd) and $GOT10 of 1 to :10 (D's kernel)"
kill -INT "$FWD"; wait "$FWD" || fail "xdp-fwd exited with an error"
cat "$FLB_LAB_STATE/fwd.out"
RX=$(sed -n 's/.* rx \([0-9]*\) tx.*/\1/p' "$FLB_LAB_STATE/fwd.out")
TX=$(sed -n 's/.* tx \([0-9]*\) .*/\1/p' "$FLB_LAB_STATE/fwd.out")
(( GOT9 == 200 )) || fail "$(( 200 - GOT9 )) datagrams through xdp-fwd were lost or damaged"
(( GOT10 == 1 )) || fail "the datagram for D's kernel did not arrive"
(( ${RX:-0} == 200 && ${TX:-0} == 200 )) || fail "xdp-fwd counted rx ${RX:-?} tx ${TX:-?}, not 200 each"
pass "200 datagrams through xdp-fwd intact, counted; other traffic left to the kernel"
