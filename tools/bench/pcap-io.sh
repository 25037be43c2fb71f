#!/usr/bin/env bash
# Replay's capture reading and writing, two fastlb binaries compared in one run (callgrind
# instruction counts, the stable measure on a shared machine, and user CPU seconds, 3
# rounds interleaved). Captures: pcap-fixtures/nat-v4-rr's 16 frames repeated with 1 us
# steps (500 k and 50 k frames, and 4 k under callgrind), classic and as editcap's pcapng.
# "pass" replays them against a service on another VIP (every frame passes: the reader
# alone), "nat" against the fixture's own service (read, NAT, write). Outputs must match.
# Usage: tools/bench/pcap-io.sh OLD_FASTLB NEW_FASTLB > bench-results/pcap-io.txt
set -euo pipefail
old=$(realpath "$1") new=$(realpath "$2")
root=$(cd "$(dirname "$0")/../.." && pwd)
F=$root/pcap-fixtures
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for n in 31250 3125 250; do
    python3 - "$F/nat-v4-rr/in.pcap" "$n" "$tmp/c$n.pcap" <<'PY'
import struct, sys
d = open(sys.argv[1], 'rb').read()
recs, o = [], 24
while o < len(d):
    s, us, incl, orig = struct.unpack('<IIII', d[o:o + 16])
    recs.append((d[o + 16:o + 16 + incl], orig))
    o += 16 + incl
t = struct.unpack('<I', d[24:28])[0] * 1000000
out = bytearray(d[:24])
for _ in range(int(sys.argv[2])):
    for data, orig in recs:
        t += 1
        out += struct.pack('<IIII', t // 1000000, t % 1000000, len(data), orig) + data
open(sys.argv[3], 'wb').write(out)
PY
    editcap -F pcapng "$tmp/c$n.pcap" "$tmp/c$n.pcapng"
done
sed 's/192.0.2.100/192.0.2.200/' "$F/nat-v4-rr/fastlb.toml" > "$tmp/pass.toml"
cfg() { if [ "$1" = pass ]; then echo "$tmp/pass.toml"; else echo "$F/nat-v4-rr/fastlb.toml"; fi; }
replay() { # binary config input output [wrapper...]
    local bin=$1 config=$2 input=$3 output=$4
    shift 4
    "$@" "$bin" replay --config "$config" --in "$input" --out "$output" --report "$tmp/r.json" \
        --routes "$F/routes.txt" --neigh "$F/neigh.txt" --links "$F/links.txt"
}
echo "# callgrind instructions, whole replay (startup included)"
for c in "pass c3125" "nat c250"; do
    set -- $c
    for ext in pcap pcapng; do
        for side in old new; do
            bin=$old; [ $side = new ] && bin=$new
            ir=$(replay "$bin" "$(cfg "$1")" "$tmp/$2.$ext" "$tmp/$side.out" \
                valgrind --tool=callgrind --callgrind-out-file=/dev/null 2>&1 |
                grep -o 'Collected : [0-9]*' | grep -o '[0-9]*')
            echo "$1 $2.$ext $side Ir $ir"
        done
        cmp "$tmp/old.out" "$tmp/new.out"
    done
done
echo "# user CPU seconds"
for round in 1 2 3; do
    for c in "pass c31250" "nat c3125"; do
        set -- $c
        for ext in pcap pcapng; do
            for side in old new; do
                bin=$old; [ $side = new ] && bin=$new
                replay "$bin" "$(cfg "$1")" "$tmp/$2.$ext" "$tmp/$side.out" \
                    /usr/bin/time -f %U -o "$tmp/t" >/dev/null 2>&1
                echo "round $round $1 $2.$ext $side user_s $(cat "$tmp/t")"
            done
            cmp "$tmp/old.out" "$tmp/new.out"
        done
    done
done
