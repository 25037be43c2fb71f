#!/usr/bin/env python3
"""An independent Maglev table (Eisenbud et al., NSDI 2016, section 3.4), for a cross-check
of what cluster-sim measures on fastlb's mh.

The paper's population loop, written from the paper, with random offsets and skips instead
of the kernel's hsiphash of the server address: if fastlb's mh and this agree on how many
slots change when one real server leaves, the excess over the minimum is Maglev's, not a
bug in fastlb. Standard library only; about half a minute. 655,373 is the paper's larger
table, beyond the kernel's sizes.

Usage: tools/cluster-sim/maglev-reference.py
"""
import random


def populate(servers, m, prefs):
    """Each server in turn takes its next preferred free slot until the table is full."""
    nxt = {s: prefs[s][0] for s in servers}
    table = [None] * m
    filled = 0
    while True:
        for s in servers:
            c, skip = nxt[s], prefs[s][1]
            while table[c] is not None:
                c += skip
                if c >= m:
                    c -= m
            nxt[s] = c
            table[c] = s
            filled += 1
            if filled == m:
                return table


def main():
    rng = random.Random(5)
    print("R      M  slots changed  needless  minimum   (one server removed, mean of 3)")
    for r, m in [(10, 4093), (100, 4093), (100, 65521), (1000, 4093), (1000, 65521),
                 (1000, 655373)]:
        prefs = {s: (rng.randrange(m), rng.randrange(m - 1) + 1) for s in range(r)}
        before = populate(list(range(r)), m, prefs)
        changed = needless = 0.0
        for k in rng.sample(range(r), 3):
            after = populate([s for s in range(r) if s != k], m, prefs)
            changed += sum(a != b for a, b in zip(before, after)) / m / 3
            needless += sum(a != b and a != k for a, b in zip(before, after)) / m / 3
        print(f"{r:<5}{m:>6}  {changed * 100:12.2f} %  {needless * 100:6.2f} %"
              f"  {100 / r:6.2f} %")


if __name__ == "__main__":
    main()
