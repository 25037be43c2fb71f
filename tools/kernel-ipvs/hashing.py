#!/usr/bin/env python3
"""The kernel's hashing schedulers, written again from the kernel's source: an oracle for fastlb.

An independent implementation (it shares no code with fastlb's Rust) of what Linux IPVS
computes for dh, sh and mh, taken from net/netfilter/ipvs/ip_vs_dh.c, ip_vs_sh.c, ip_vs_mh.c
and lib/siphash.c (the 64-bit hsiphash, which is SipHash-1-3) of the 6.1 kernel, and of
fastlb's twos (the kernel's ip_vs_twos.c rule over the generator fastlb documents in
src/sched/twos.rs, since the kernel's own draws are random).

    hashing.py vectors          print the known-answer vectors (tools/kernel-ipvs/vectors.txt)
    hashing.py answer < GROUPS  fill in the answers of groups in the vectors format
    hashing.py twos PROTO VADDR VPORT W1,W2,... N
                                fastlb's twos picks for N new connections in a row (each
                                one stays active), as letters in list order

Vectors format: a group line names the scheduler, its flags, the Maglev table size and the
real servers in *list order* (the kernel's list runs newest first), each LETTER:WEIGHT;
letter A is 10.90.0.11 (fd90::11 for IPv6), B .12, and so on, all on the service's port
(`first=ADDR` makes A another address; mh hashes the real servers' addresses).
Then one line per new connection: `CLIENT CPORT VADDR VPORT = LETTER` (`-` for none).

    [sh flags=sh-port size=- list=C:1,B:2,A:1,D:0]
    10.90.1.1 40000 10.90.100.1 80 = B
"""

import functools
import ipaddress
import sys

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1


# ---- lib/siphash.c, 64-bit build: hsiphash = SipHash-1-3, truncated to 32 bits -----------

def _rol(x, s):
    return ((x << s) | (x >> (64 - s))) & MASK64


def _sipround(v0, v1, v2, v3):
    v0 = (v0 + v1) & MASK64; v1 = _rol(v1, 13); v1 ^= v0; v0 = _rol(v0, 32)
    v2 = (v2 + v3) & MASK64; v3 = _rol(v3, 16); v3 ^= v2
    v0 = (v0 + v3) & MASK64; v3 = _rol(v3, 21); v3 ^= v0
    v2 = (v2 + v1) & MASK64; v1 = _rol(v1, 17); v1 ^= v2; v2 = _rol(v2, 32)
    return v0, v1, v2, v3


def hsiphash_u32(key, value):
    """hsiphash(&value, 4, key) for a u32 in memory (little-endian)."""
    k0, k1 = key
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1
    b = (4 << 56) | (value & MASK32)     # len 4: no full word, 4 bytes left over
    v3 ^= b
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return (v0 ^ v1 ^ v2 ^ v3) & MASK32


# ---- helpers shared by the three schedulers ----------------------------------------------

def addr_fold(addr):
    """ntohl(addr_fold): an IPv4 address as a number; IPv6 the XOR of its 4 words."""
    a = ipaddress.ip_address(addr)
    n = int(a)
    if a.version == 4:
        return n
    return (n >> 96 ^ n >> 64 ^ n >> 32 ^ n) & MASK32


def hash_32(val, bits):
    """include/linux/hash.h: val * GOLDEN_RATIO_32, top `bits` bits."""
    return ((val * 0x61C88647) & MASK32) >> (32 - bits)


def gcd(a, b):
    while b:
        a, b = b, a % b
    return a


# ---- ip_vs_dh.c ---------------------------------------------------------------------------
# (Older kernels multiplied by 2654435761 and kept the low 8 bits; 6.1 uses hash_32, as sh.)

@functools.lru_cache(maxsize=64)
def dh_table(weights):
    """256 buckets; bucket i gets list entry i mod n (weights play no part)."""
    n = len(weights)
    return [i % n if n else None for i in range(256)]


def dh_pick(weights, daddr):
    table = dh_table(weights)
    d = table[hash_32(addr_fold(daddr), 8)]
    if d is None or weights[d] <= 0:
        return None
    return d


# ---- ip_vs_sh.c ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def sh_table(weights):
    """256 buckets filled in list order, each entry taking `weight` buckets in a row (at
    least one: the count moves on when it reaches the weight, so weight 0 takes one)."""
    table, n = [], len(weights)
    if not n:
        return [None] * 256
    p, count = 0, 0
    for _ in range(256):
        table.append(p)
        count += 1
        if count >= weights[p]:
            p = (p + 1) % n
            count = 0
    return table


def sh_key(client, port, offset):
    return (offset + hash_32((port + addr_fold(client)) & MASK32, 8)) & 0xFF


def sh_pick(weights, client, cport, fallback, use_port):
    table = sh_table(weights)
    port = cport if use_port else 0
    ihash = sh_key(client, port, 0)
    d = table[ihash]
    if d is None:
        return None
    if weights[d] > 0:
        return d
    if not fallback:
        return None
    for offset in range(256):
        d = table[sh_key(client, port, (offset + ihash) % 256)]
        if d is None:
            return None
        if weights[d] > 0:
            return d
    return None


# ---- ip_vs_mh.c ---------------------------------------------------------------------------

MH_PRIMES = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071]
MH_KEY1 = (2654435761, 2654435761)
MH_KEY2 = (2654446892, 2654446892)


def mh_hashkey(addr, port, key, offset):
    return hsiphash_u32(key, (offset + port + addr_fold(addr)) & MASK32)


@functools.lru_cache(maxsize=64)
def mh_table(reals, last_weights, size):
    """The lookup table: reals are (address, port) in list order, weighted by their last
    non-zero weights."""
    index = MH_PRIMES.index(size)
    bits = (index + 8) // 2            # IP_VS_MH_TAB_BITS for CONFIG_IP_VS_MH_TAB_INDEX
    g = 0
    for w in last_weights:
        if w > 0:
            g = gcd(w, g) if g else w
    table = [None] * size
    if g < 1:
        return table
    mw = max(last_weights) // g
    shift = max(mw.bit_length() - bits, 0)
    setup = []
    for (addr, port), lw in zip(reals, last_weights):
        offset = mh_hashkey(addr, port, MH_KEY1, 0) % size
        skip = mh_hashkey(addr, port, MH_KEY2, 0) % (size - 1) + 1
        turns = ((lw // g) >> shift) or (1 if lw != 0 else 0)
        setup.append([offset, skip, turns])
    taken = [False] * size
    n = 0
    while n < size:
        for i, ds in enumerate(setup):
            if ds[2] < 1:
                continue
            for _ in range(ds[2]):
                c = ds[0]
                while taken[c]:
                    ds[0] += ds[1]
                    if ds[0] >= size:
                        ds[0] -= size
                    c = ds[0]
                taken[c] = True
                table[c] = i
                n += 1
                if n == size:
                    return table
    return table


def mh_pick(reals, weights, client, cport, fallback, use_port, size):
    table = mh_table(reals, weights, size)
    port = cport if use_port else 0
    ihash = mh_hashkey(client, port, MH_KEY1, 0) % size
    d = table[ihash]
    if d is None:
        return None
    if weights[d] > 0:
        return d
    if not fallback:
        return None
    for offset in range(size):
        roffset = (offset + ihash) % size
        d = table[mh_hashkey(client, port, MH_KEY1, roffset) % size]
        if d is None:
            return None
        if weights[d] > 0:
            return d
    return None


# ---- ip_vs_twos.c, over fastlb's documented generator -------------------------------------

TWOS_KEY = (0x74776F73, 0x666173746C62)


class Xorshift64Star:
    """xorshift64* (Vigna), 32 bits per draw from the high half, as src/sched/twos.rs says."""

    def __init__(self, seed):
        self.state = seed or 0x9E3779B97F4A7C15

    def next_u32(self):
        x = self.state
        x ^= x >> 12
        x ^= (x << 25) & MASK64
        x ^= x >> 27
        self.state = x
        return ((x * 0x2545F4914F6CDD1D) & MASK64) >> 32


def twos_seed(proto, vaddr, vport):
    """The seed fastlb derives from an address service's key: hsiphash of the folded
    address, then of port << 8 | protocol number, with fastlb's fixed key."""
    hi = hsiphash_u32(TWOS_KEY, addr_fold(vaddr))
    lo = hsiphash_u32(TWOS_KEY, (vport << 8 | proto) & MASK32)
    return hi << 32 | lo


def twos_sequence(weights, n, seed):
    """n picks of ip_vs_twos_schedule, each adding one active connection to its server."""
    rng = Xorshift64Star(seed)
    active = [0] * len(weights)
    picks = []
    for _ in range(n):
        live = [i for i, w in enumerate(weights) if w > 0]
        if not live:
            picks.append(None)
            continue
        total = sum(weights[i] for i in live) + 1
        r1, r2 = rng.next_u32() % total, rng.next_u32() % total
        c1 = c2 = None
        for i in live:
            r1 -= weights[i]
            r2 -= weights[i]
            if r1 <= 0 and c1 is None:
                c1 = i
            if r2 <= 0 and c2 is None:
                c2 = i
            if c1 is not None and c2 is not None:
                break
        overhead = lambda i: active[i] << 8
        pick = c2 if weights[c2] * overhead(c1) > weights[c1] * overhead(c2) else c1
        active[pick] += 1
        picks.append(pick)
    return picks


# ---- vectors ------------------------------------------------------------------------------

def real_addr(letter, v6, first=None):
    """Letter A is `first` (default 10.90.0.11 or fd90::11), B the next address, ..."""
    i = ord(letter) - ord("A")
    base = ipaddress.ip_address(first or ("fd90::11" if v6 else "10.90.0.11"))
    return str(base + i)


def parse_group(line):
    fields = dict(f.split("=", 1) for f in line.strip("[]").split()[1:])
    sched = line.strip("[]").split()[0]
    flags = [] if fields["flags"] == "-" else fields["flags"].split(",")
    size = None if fields["size"] == "-" else int(fields["size"])
    lst = [(x.split(":")[0], int(x.split(":")[1])) for x in fields["list"].split(",")]
    return sched, flags, size, lst, fields.get("first")


def answer(group, conn):
    sched, flags, size, lst, first = group
    client, cport, vaddr, vport = conn
    v6 = ":" in vaddr
    weights = tuple(w for _, w in lst)
    reals = tuple((real_addr(letter, v6, first), vport) for letter, _ in lst)
    if sched == "dh":
        i = dh_pick(weights, vaddr)
    elif sched == "sh":
        i = sh_pick(weights, client, cport, "sh-fallback" in flags, "sh-port" in flags)
    elif sched == "mh":
        i = mh_pick(reals, weights, client, cport, "mh-fallback" in flags,
                    "mh-port" in flags, size or 4093)
    else:
        raise SystemExit(f"unknown scheduler {sched}")
    return "-" if i is None else lst[i][0]


def fill(lines):
    out, group = [], None
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith("["):
            group = parse_group(line)
            out.append(line)
        elif line.strip() and not line.startswith("#"):
            left = line.split("=")[0].split()
            conn = (left[0], int(left[1]), left[2], int(left[3]))
            out.append(f"{' '.join(left)} = {answer(group, conn)}")
        else:
            out.append(line)
    return out


def vector_groups():
    """The committed vectors: weights, flags and orders chosen to exercise each rule."""
    groups = []

    def clients(n, v6, first=1, port=40000, step=1):
        for k in range(n):
            c = f"fd90::1:{first + k:x}" if v6 else f"10.90.{1 + (first + k) // 250}.{1 + (first + k) % 250}"
            yield c, port + k * step

    vip = iter(range(1, 1000))
    for sched, flags, size, lst, v6, n, cport_step in [
        ("sh", "-", "-", "C:1,B:1,A:1", False, 16, 1),
        ("sh", "-", "-", "D:0,C:1,B:1,A:2", False, 16, 1),
        ("sh", "sh-fallback", "-", "C:1,B:0,A:1", False, 16, 1),
        ("sh", "sh-port", "-", "C:1,B:3,A:1", False, 16, 97),
        ("sh", "sh-fallback,sh-port", "-", "C:2,B:0,A:1", True, 12, 13),
        ("sh", "-", "-", "B:1,A:1", True, 12, 1),
        ("mh", "-", "-", "C:1,B:1,A:1", False, 16, 1),
        ("mh", "-", "-", "D:0,C:2,B:1,A:3", False, 16, 1),
        ("mh", "mh-fallback", "-", "C:1,B:0,A:1", False, 16, 1),
        ("mh", "mh-port", "-", "C:1,B:1,A:1", False, 16, 97),
        ("mh", "mh-fallback,mh-port", "-", "C:5,B:0,A:10", True, 12, 13),
        ("mh", "-", "-", "B:1,A:1", True, 12, 1),
        ("mh", "-", "251", "C:1,B:2,A:1", False, 12, 1),
        ("mh", "mh-port", "65521", "E:1,D:1,C:1,B:1,A:1", False, 12, 7),
    ]:
        v = next(vip)
        vaddr = f"fd90::100:{v:x}" if v6 else f"10.90.100.{v}"
        conns = [(c, p, vaddr, 80) for c, p in clients(n, v6, first=10 * v, step=cport_step)]
        groups.append((f"[{sched} flags={flags} size={size} list={lst}]", conns))
    # dh keys on the destination: several virtual addresses, one client each.
    for lst, v6 in [("D:0,C:1,B:1,A:1", False), ("C:1,B:3,A:1", True)]:
        conns = []
        for k in range(12):
            v = next(vip)
            vaddr = f"fd90::100:{v:x}" if v6 else f"10.90.100.{v}"
            c, p = next(clients(1, v6, first=200 + k))
            conns.append((c, p, vaddr, 80))
        groups.append((f"[dh flags=- size=- list={lst}]", conns))
    return groups


def vectors():
    lines = [
        "# Known-answer vectors for the kernel's dh, sh and mh, computed by",
        "# tools/kernel-ipvs/hashing.py (an implementation written from the kernel's source).",
        "# Checked against fastlb (tests/hash_vectors.rs) and against Linux 6.1 in qemu",
        "# (tests/kernel_ipvs.rs; table sizes other than 4093 only against fastlb: the kernel's",
        "# is fixed at build time). Format: see hashing.py.",
    ]
    for head, conns in vector_groups():
        lines.append(head)
        lines.extend(f"{c} {p} {v} {vp}" for c, p, v, vp in conns)
    return fill(lines)


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "vectors":
        print("\n".join(vectors()))
    elif len(sys.argv) == 2 and sys.argv[1] == "answer":
        print("\n".join(fill(sys.stdin.readlines())))
    elif len(sys.argv) == 7 and sys.argv[1] == "twos":
        proto = {"tcp": 6, "udp": 17}[sys.argv[2]]
        weights = [int(w) for w in sys.argv[5].split(",")]
        seed = twos_seed(proto, sys.argv[3], int(sys.argv[4]))
        picks = twos_sequence(weights, int(sys.argv[6]), seed)
        print("".join("-" if p is None else chr(ord("A") + p) for p in picks))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
