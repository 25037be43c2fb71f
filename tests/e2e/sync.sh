#!/usr/bin/env bash
# Usage: sync.sh nat|dr. IPVS connection sync between two fastlb appliances.
#
# The lab's director is the master; a second fastlb, the backup, runs in its own namespace
# (flbt-...-sync-bak) with the same rules, joined to the director by a veth pair that
# carries the sync datagrams (the master's sym, the backup's syb: the backup's only
# interface, with its XDP program on it). Both daemons are started with `fastlb ctl
# --start-daemon`, as ipvsadm starts the kernel's.
#   1. ctl refuses what the kernel refuses (a second master, an unknown interface, a stop
#      of a daemon that does not run) with ipvsadm's words; `-L --daemon` lists both as
#      ipvsadm does.
#   2. 8 long-lived TCP connections through the master's VIP (each sends a header line
#      every 100 ms): the backup's `ctl -L -c -n` shows every one, with the same client,
#      virtual address, real server and state (ESTABLISHED) as the master's.
#   3. tshark, with its own IPVS dissector, decodes every captured datagram on the sync
#      link as "ipvs" version 1, nothing malformed, and the connections in them are the
#      master's.
#   4. --stop-daemon: `-L --daemon` lists nothing on either side.
source "$(dirname "$0")/lib.sh"
MODE=${1:-nat}
need python3 tshark tcpdump
lab_init "sync-$MODE"
CONFIG=$E2E_TMP/sync.toml
cat > "$CONFIG" <<TOML
[[service]]
protocol = "tcp"
address = "$VIP"
port = 80
scheduler = "rr"

[[service.real]]
address = "$RS1"
port = 80
method = "$MODE"

[[service.real]]
address = "$RS2"
port = 80
method = "$MODE"
TOML
lab_up "sync-$MODE" "$MODE" --config "$CONFIG"

backup_segment
bx "$FASTLB_CMD" --iface syb --config "$CONFIG" --ctl-socket "$BAK_SOCK" >"$E2E_TMP/backup.log" 2>&1 &
wait_for 20 grep -q serving "$E2E_TMP/backup.log" || { cat "$E2E_TMP/backup.log"; fail "the backup fastlb did not start"; }
log "backup fastlb serving on syb"

# 1. The verbs.
ctl --start-daemon master --mcast-interface sym --syncid 7 || fail "--start-daemon master"
OUT=$(ctl --start-daemon master --mcast-interface sym 2>&1) && fail "a second master was accepted"
[[ $OUT == "Daemon has already run" ]] || fail "second master: '$OUT'"
OUT=$(ctl --start-daemon backup --mcast-interface nosuch0 2>&1) && fail "an unknown interface was accepted"
[[ $OUT == "No such device" ]] || fail "unknown interface: '$OUT'"
OUT=$(ctl --stop-daemon backup 2>&1) && fail "stopping a backup that does not run succeeded"
[[ $OUT == "No daemon is running" ]] || fail "stop of nothing: '$OUT'"
OUT=$(ctl --start-daemon primary 2>&1) && fail "--start-daemon primary was accepted"
[[ $OUT == "illegal start-daemon parameter specified" ]] || fail "bad role: '$OUT'"
bctl --start-daemon backup --mcast-interface syb --syncid 7 || fail "--start-daemon backup"
WANT="master sync daemon (mcast=sym, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
[[ $(ctl -L --daemon) == "$WANT" ]] || fail "master -L --daemon: '$(ctl -L --daemon)'"
BWANT="backup sync daemon (mcast=syb, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
[[ $(bctl -L --daemon) == "$BWANT" ]] || fail "backup -L --daemon: '$(bctl -L --daemon)'"
pass "ctl: --start-daemon, refusals in ipvsadm's words, -L --daemon as ipvsadm prints it"

# 2. Long-lived connections through the master.
bx tcpdump -i syb -w "$E2E_TMP/sync.pcap" -U udp port 8848 >"$E2E_TMP/tcpdump.log" 2>&1 &
TCPDUMP=$!
E2E_CLEANUP+=("kill $TCPDUMP")
wait_for 5 grep -q listening "$E2E_TMP/tcpdump.log" || fail "tcpdump did not start"
cx python3 - "$VIP" 8 12 >"$E2E_TMP/clients.out" 2>&1 <<'EOF' &
import socket, sys, time
vip, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
socks = [socket.create_connection((vip, 80), timeout=3) for _ in range(n)]
for s in socks:
    s.sendall(b"GET / HTTP/1.1\r\nHost: sync\r\n")
print("ports", " ".join(str(s.getsockname()[1]) for s in socks), flush=True)
end = time.time() + secs
i = 0
while time.time() < end:
    for s in socks:
        s.sendall(b"X-Line-%d: x\r\n" % i)
    i += 1
    time.sleep(0.1)
for s in socks:
    s.sendall(b"\r\n")
print("done", flush=True)
EOF
CLIENTS=$!
wait_for 10 grep -q '^ports' "$E2E_TMP/clients.out" || { cat "$E2E_TMP/clients.out"; fail "the client could not connect"; }
PORTS=$(sed -n 's/^ports //p' "$E2E_TMP/clients.out")
log "client ports: $PORTS"

# "pro state source virtual destination" of the VIP's connections from our client ports.
conns() {
    awk -v vip="$VIP:80" -v ports=" $PORTS " '$1 == "TCP" && $5 == vip {
        split($4, a, ":"); if (index(ports, " " a[2] " ")) print $1, $3, $4, $5, $6 }' | sort
}
synced() {
    M=$(ctl -L -c -n | conns) B=$(bctl -L -c -n | conns)
    [[ $(wc -l <<<"$M") == 8 && $M == "$B" ]] && ! grep -qv ESTABLISHED <<<"$M"
}
if ! wait_for 10 synced; then
    echo "master:"; ctl -L -c -n; echo "backup:"; bctl -L -c -n
    fail "the backup does not hold the master's 8 connections"
fi
echo "$B"
pass "the backup holds the master's 8 connections: same clients, real servers and states"

# 3. tshark decodes the datagrams.
sleep 1
kill "$TCPDUMP"; wait "$TCPDUMP" 2>/dev/null || true
N=$(tshark -r "$E2E_TMP/sync.pcap" -Y ipvs 2>/dev/null | wc -l)
ALL=$(tshark -r "$E2E_TMP/sync.pcap" 2>/dev/null | wc -l)
BAD=$(tshark -r "$E2E_TMP/sync.pcap" -Y '_ws.malformed || _ws.expert.severity >= warning' 2>/dev/null | wc -l)
VERS=$(tshark -r "$E2E_TMP/sync.pcap" -Y ipvs -T fields -e ipvs.version 2>/dev/null | sort -u | tr '\n' ' ')
echo "---- the first datagram as tshark decodes it"
tshark -r "$E2E_TMP/sync.pcap" -V -c 1 -O ipvs 2>/dev/null | sed -n '/IP Virtual Services/,$p' | head -30 || true
if ! (( N > 0 && N == ALL && BAD == 0 )); then
    echo "---- every frame captured, and each one that is not ipvs or is malformed, as tshark reads it"
    tshark -r "$E2E_TMP/sync.pcap" 2>/dev/null || true
    tshark -r "$E2E_TMP/sync.pcap" -V -x -Y '!ipvs || _ws.malformed || _ws.expert.severity >= warning' 2>/dev/null | head -120 || true
    fail "tshark: $N of $ALL datagrams decoded as ipvs, $BAD malformed or warned"
fi
[[ $VERS == "1 " ]] || fail "tshark: protocol versions '$VERS', want 1"
# caddr and cport come as two comma-separated lists per datagram: pair them.
SEEN=$(tshark -r "$E2E_TMP/sync.pcap" -Y ipvs -T fields -E occurrence=a -E separator=";" \
    -e ipvs.caddr -e ipvs.cport 2>/dev/null | python3 -c '
import sys
for line in sys.stdin:
    a, p = line.strip().split(";")
    for x, y in zip(a.split(","), p.split(",")):
        print(f"{x}:{y}")' | sort -u)
for p in $PORTS; do
    grep -q ":$p\$" <<<"$SEEN" || fail "tshark: no sync entry for client port $p"
done
pass "tshark decodes all $N datagrams as ipvs v1, none malformed; every connection is in them"

# 4. Stop.
wait "$CLIENTS" || true
ctl --stop-daemon master || fail "--stop-daemon master"
bctl --stop-daemon backup || fail "--stop-daemon backup"
[[ -z $(ctl -L --daemon) && -z $(bctl -L --daemon) ]] || fail "daemons still listed after --stop-daemon"
pass "--stop-daemon: no daemon listed"
