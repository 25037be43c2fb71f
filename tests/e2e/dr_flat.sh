#!/usr/bin/env bash
# Usage: dr_flat.sh. The seed's DR lab as a user first builds it (lab.sh --mode dr-flat):
# client, director and two real servers on one bridge, the director with a single
# interface holding the VIPs, the VIPs on the real servers' lo with arp_ignore=1 and
# arp_announce=2, the kernel's default offloads everywhere, no neighbour resolved in
# advance. Per address family:
#   - 20 of 20 requests answered, balanced as wrr 3:1 says (rs1 15, rs2 5, plus at most
#     one per worker), and the director counted what the client saw;
#   - the client reached the VIP at the director's MAC: the real servers never answered
#     ARP or neighbour discovery for it;
#   - a UDP request to VIP:53 is answered from the VIP.
source "$(dirname "$0")/lib.sh"
need socat
lab_up dr-flat dr-flat
DIR_MAC=$(dx cat /sys/class/net/d0/address)
W=${WORKERS:-1}
for fam in 4 6; do
    if [[ $fam == 4 ]]; then V=$VIP URL=http://$VIP/ R1=$RS1 R2=$RS2 UDP=UDP4:$VIP:53
    else V=$VIP6 URL=http://[$VIP6]/ R1=$RS1_6 R2=$RS2_6 UDP=UDP6:[$VIP6]:53; fi
    T=$(curl_tally 20 "$URL"); echo "$T"
    A=$(count "served by rs1" "$T") B=$(count "served by rs2" "$T")
    (( A + B == 20 )) || fail "IPv$fam: $(( 20 - A - B )) of 20 requests unanswered"
    (( A >= 15 && A <= 15 + W )) || fail "IPv$fam: rs1 $A, rs2 $B: not wrr 3:1"
    pass "IPv$fam: 20 of 20 answered, rs1 $A, rs2 $B"
    C1=$(real_field tcp 80 "$R1" conns) C2=$(real_field tcp 80 "$R2" conns)
    [[ $C1 == "$A" && $C2 == "$B" ]] || fail "IPv$fam: the director counted $C1 + $C2 connections, the client saw $A + $B"
    MAC=$(cx ip -"$fam" neigh show "$V" dev c0 | awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i+1)}')
    [[ $MAC == "$DIR_MAC" ]] || fail "IPv$fam: the client has the VIP at ${MAC:-no MAC}, not the director's $DIR_MAC"
    pass "IPv$fam: the VIP resolves to the director ($DIR_MAC) only"
    ANSWER=$(printf 'flat' | cx timeout 5 socat -t 2 - "$UDP") || true
    [[ $ANSWER == "rs"[12]" flat" ]] || fail "IPv$fam: UDP to the VIP got '$ANSWER'"
    pass "IPv$fam: UDP answered ($ANSWER)"
done
