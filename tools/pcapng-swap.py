#!/usr/bin/env python3
"""Rewrites a little-endian pcapng file in big-endian byte order (as a big-endian machine's
dumpcap would write it): pcap-fixtures/pcapng/*.be.pcapng come from this, and tshark reads
them as it reads the original. Handles the blocks editcap writes: Section Header, Interface
Description, Enhanced Packet (their options swapped field by field), others unchanged apart
from the block header.

Usage: tools/pcapng-swap.py IN.pcapng OUT.pcapng
"""
import struct
import sys

SHB, IDB, EPB = 0x0A0D0D0A, 1, 6


def swap_options(data, u64_codes):
    out = b""
    while len(data) >= 4:
        code, length = struct.unpack("<HH", data[:4])
        padded = (length + 3) // 4 * 4
        value = data[4:4 + padded]
        if length == 8 and code in u64_codes:
            value = struct.pack(">Q", struct.unpack("<Q", value[:8])[0])
        out += struct.pack(">HH", code, length) + value
        data = data[4 + padded:]
        if code == 0:
            break
    return out + data


def main(src, dst):
    data = open(src, "rb").read()
    out = b""
    while data:
        kind, length = struct.unpack("<II", data[:8])
        body = data[8:length - 4]
        if kind == SHB:
            magic, major, minor, section_len = struct.unpack("<IHHq", body[:16])
            assert magic == 0x1A2B3C4D, "input must be little-endian"
            body = struct.pack(">IHHq", magic, major, minor, section_len) + swap_options(body[16:], ())
        elif kind == IDB:
            linktype, reserved, snaplen = struct.unpack("<HHI", body[:8])
            # if_tsoffset (14) is the one 8-byte number among the options editcap writes.
            body = struct.pack(">HHI", linktype, reserved, snaplen) + swap_options(body[8:], (14,))
        elif kind == EPB:
            iface, hi, lo, caplen, orig = struct.unpack("<IIIII", body[:20])
            padded = (caplen + 3) // 4 * 4
            body = (struct.pack(">IIIII", iface, hi, lo, caplen, orig) + body[20:20 + padded]
                    + swap_options(body[20 + padded:], ()))
        else:
            sys.exit("block type %d: not handled" % kind)
        out += struct.pack(">II", kind, length) + body + struct.pack(">I", length)
        data = data[length:]
    open(dst, "wb").write(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
