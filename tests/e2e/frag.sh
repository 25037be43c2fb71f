#!/usr/bin/env bash
# Usage: frag.sh dr|nat [4|6]. UDP datagrams larger than the MTU through the director: the
# client (kernel-default MTU 1500 on every link) sends 20 datagrams of 4000 bytes to
# VIP:53, each from its own socket (a new source port, so rr spreads them over both real
# servers); its kernel sends each in three fragments. The real servers' responder
# (tools/lab/udp_echo.py) answers a large datagram with its length and SHA-256, so:
#   - every datagram arrived whole at a real server (length and digest match what was sent;
#     a datagram missing a fragment is never delivered by the server's reassembly);
#   - both real servers received some;
#   - NAT (the replies pass the director too): the request asks for itself back ("ECHO "),
#     so each answer is as large and leaves the real server in three fragments, which the
#     director must translate (the XDP filter redirects a NAT real server's fragments by
#     its address alone): the answer's data must come back whole and intact;
#   - the director's fastlb_fragments_total{event="forwarded"} grew by at least the three
#     fragments of each datagram (NAT: and of each answer), and it dropped no fragment
#     (fastlb_drops_total for fragment, fragment_no_first, fragment_table_full).
# A datagram that goes unanswered is sent again once (a new socket) and counted; more than
# two such retries fail the test.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: frag.sh dr|nat [4|6]}
FAM=${2:-4}
need curl
lab_up "$MODE-frag$FAM" "$MODE"
TARGET=$VIP
[[ $FAM == 6 ]] && TARGET=$VIP6

# metric NAME LABELS: a value from the director's Prometheus endpoint (0 when absent).
metric() {
    dx curl -s --max-time 5 "http://127.0.0.1:9108/metrics" \
        | awk -v m="$1{$2}" '$1 == m {print $2; f=1} END {if (!f) print 0}'
}
frag_drops() {
    echo $(( $(metric fastlb_drops_total 'reason="fragment"') \
        + $(metric fastlb_drops_total 'reason="fragment_no_first"') \
        + $(metric fastlb_drops_total 'reason="fragment_table_full"') ))
}
FWD0=$(metric fastlb_fragments_total 'event="forwarded"') DROP0=$(frag_drops)

N=20 SIZE=4000
# Both directions where the mode has both: a NAT real server's answers pass the director.
ECHO=0 DIRS=1
[[ $MODE == nat ]] && ECHO=1 DIRS=2
OUT=$(cx timeout 120 python3 - "$TARGET" "$N" "$SIZE" "$ECHO" <<'PY'
import hashlib, os, socket, sys
target, n, size, echo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
fam = socket.AF_INET6 if ":" in target else socket.AF_INET
retries = 0
for i in range(n):
    data = (b"ECHO " if echo else b"") + os.urandom(size - 5 if echo else size)
    want = "%d %s" % (size, hashlib.sha256(data).hexdigest())
    for attempt in range(2):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.connect((target, 53))
        s.send(data)
        try:
            answer = s.recv(65535)
            if echo:
                # "NAME LENGTH SHA256 " then the datagram itself, intact.
                who, length, digest, back = answer.split(b" ", 3)
                got = "%s %s" % (length.decode(), digest.decode())
                if back != data:
                    got += " (answer's data damaged: %d bytes)" % len(back)
                who = who.decode()
            else:
                who, got = answer.decode().split(" ", 1)
        except OSError as e:
            print("datagram %d attempt %d: no answer (%s)" % (i, attempt, e), file=sys.stderr)
            retries += 1
            continue
        finally:
            s.close()
        if got != want:
            print("MISMATCH %d %s: %s" % (i, who, got))
        else:
            print("OK %d %s" % (i, who))
        break
    else:
        print("LOST %d" % i)
print("RETRIES %d" % retries)
PY
) || fail "client: $OUT"
OK=$(grep -c '^OK ' <<<"$OUT" || true)
RETRIES=$(sed -n 's/^RETRIES //p' <<<"$OUT")
BY1=$(grep -c '^OK .* rs1$' <<<"$OUT" || true) BY2=$(grep -c '^OK .* rs2$' <<<"$OUT" || true)
log "answers: $OK of $N whole (rs1 $BY1, rs2 $BY2), $RETRIES resent"
grep -E '^(MISMATCH|LOST)' <<<"$OUT" && fail "datagrams damaged or lost"
(( OK == N )) || fail "$OK of $N datagrams answered"
(( RETRIES <= 2 )) || fail "$RETRIES datagrams needed a second try"
(( BY1 > 0 && BY2 > 0 )) || fail "one real server received none"
pass "$N datagrams of $SIZE bytes over IPv$FAM arrived whole at the real servers"
(( ECHO == 0 )) || pass "and their $N answers of $SIZE bytes came back whole through the director"

FWD=$(( $(metric fastlb_fragments_total 'event="forwarded"') - FWD0 ))
DROPS=$(( $(frag_drops) - DROP0 ))
log "director: $FWD fragments forwarded, $DROPS fragments dropped"
(( FWD >= 3 * N * DIRS )) || fail "fastlb_fragments_total{event=\"forwarded\"} grew by $FWD, expected >= $(( 3 * N * DIRS ))"
(( DROPS == 0 )) || fail "the director dropped $DROPS fragments"
pass "the director followed every fragment"
