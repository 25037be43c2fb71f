//! `pktgen`: an AF_XDP traffic generator and sink on fastlb's own socket code, for the live
//! benchmarks (`tools/bench/harness.sh`).
//!
//! The transmit side prebuilds one frame template in every UMEM frame and, per packet,
//! rewrites only what varies (source address and port, sequence number, timestamp, TCP
//! flags) and finishes both checksums from sums precomputed over the fixed bytes. The
//! receive side takes every frame of its interface (the `xdp_sink` program), finds the
//! generator's payload (through one IPIP header in tunnel mode), counts it and records the
//! one-way latency: both sides read the same `CLOCK_MONOTONIC` on one machine.
//!
//! ```text
//! pktgen --mode both --tx-iface g0 --rx-iface s0 --dst-mac 02:..:01 \
//!        --src-ip 10.1.0.0 --dst-ip 10.2.0.1 --dport 9 --flows 1000 --duration 5
//! ```
//!
//! Payload after the UDP header: magic `0xF1B6`, sequence number (u32), timestamp in ns
//! (u64), all big-endian. After the TCP header: magic, timestamp; the sequence number rides
//! in the TCP sequence field so that a 64-byte frame holds it all.

use std::net::Ipv4Addr;

/// Marks the generator's payload.
const MAGIC: u16 = 0xF1B6;
const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
const TCP_LEN: usize = 20;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_IPIP: u8 = 4;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Transport of the generated frames.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Proto {
    Udp,
    Tcp,
}

/// What the packets look like over time.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Pattern {
    /// A fixed set of flows, cycled (TCP: a SYN per flow on the first round, then ACKs).
    Established,
    /// Every packet a new connection: a TCP SYN from a source address/port never used
    /// before in the run.
    Syn,
    /// `--new-pct` percent new connections (SYN), the rest established traffic.
    Mix,
    /// Every flow a new connection of `--conn-packets` packets, sent back to back from a
    /// source never used before in the run (TCP: a SYN, then ACKs). With the default 3, a
    /// TCP connection reaches the packet at which a sync master with the kernel's default
    /// `sync_threshold` (3 50) sends it.
    Open,
}

/// What the generated frames are made of.
#[derive(Clone, Debug)]
struct Spec {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    dst_ip: Ipv4Addr,
    dport: u16,
    proto: Proto,
    size: usize,
}

impl Spec {
    fn l4_len(&self) -> usize {
        match self.proto {
            Proto::Udp => UDP_LEN,
            Proto::Tcp => TCP_LEN,
        }
    }

    /// Smallest frame that holds the headers and the payload fields.
    fn min_size(proto: Proto) -> usize {
        match proto {
            Proto::Udp => ETH_LEN + IPV4_LEN + UDP_LEN + 2 + 4 + 8,
            Proto::Tcp => ETH_LEN + IPV4_LEN + TCP_LEN + 2 + 8,
        }
    }
}

/// The fields that vary from packet to packet.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Fields {
    src: u32,
    sport: u16,
    seq: u32,
    ts: u64,
    /// TCP only.
    tcp_flags: u8,
}

/// Ones'-complement sum of big-endian 16-bit words (an odd last byte is padded with zero).
fn sum16(bytes: &[u8]) -> u32 {
    let mut s = 0u32;
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        s += u32::from(*b) << 8;
    }
    s
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A prebuilt frame and the checksum sums of its fixed bytes (varying fields zero).
#[derive(Clone, Debug)]
struct Template {
    bytes: Vec<u8>,
    proto: Proto,
    ip_base: u32,
    l4_base: u32,
}

const IP_OFF: usize = ETH_LEN;
const L4_OFF: usize = ETH_LEN + IPV4_LEN;

impl Template {
    fn new(spec: &Spec) -> Template {
        let mut b = vec![0u8; spec.size];
        b[0..6].copy_from_slice(&spec.dst_mac);
        b[6..12].copy_from_slice(&spec.src_mac);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = (spec.size - ETH_LEN) as u16;
        let proto = match spec.proto {
            Proto::Udp => PROTO_UDP,
            Proto::Tcp => PROTO_TCP,
        };
        {
            let ip = &mut b[IP_OFF..IP_OFF + IPV4_LEN];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
            // Don't-fragment: these frames are never fragmented on the way.
            ip[6] = 0x40;
            ip[8] = 64;
            ip[9] = proto;
            ip[16..20].copy_from_slice(&spec.dst_ip.octets());
        }
        let l4_len = spec.size - L4_OFF;
        let pay = L4_OFF + spec.l4_len();
        match spec.proto {
            Proto::Udp => {
                let u = &mut b[L4_OFF..];
                u[2..4].copy_from_slice(&spec.dport.to_be_bytes());
                u[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            }
            Proto::Tcp => {
                let t = &mut b[L4_OFF..];
                t[2..4].copy_from_slice(&spec.dport.to_be_bytes());
                // Acknowledgment number 1 on every packet: a SYN ignores it, an ACK needs one.
                t[8..12].copy_from_slice(&1u32.to_be_bytes());
                t[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
            }
        }
        b[pay..pay + 2].copy_from_slice(&MAGIC.to_be_bytes());
        let ip_base = sum16(&b[IP_OFF..L4_OFF]);
        let mut pseudo = [0u8; 12];
        pseudo[4..8].copy_from_slice(&spec.dst_ip.octets());
        pseudo[9] = proto;
        pseudo[10..12].copy_from_slice(&(l4_len as u16).to_be_bytes());
        let l4_base = sum16(&pseudo) + sum16(&b[L4_OFF..]);
        Template {
            bytes: b,
            proto: spec.proto,
            ip_base,
            l4_base,
        }
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Offsets in the frame of the sequence number and the timestamp.
    fn seq_ts_offsets(&self) -> (usize, usize) {
        match self.proto {
            Proto::Udp => {
                let pay = L4_OFF + UDP_LEN;
                (pay + 2, pay + 6)
            }
            Proto::Tcp => (L4_OFF + 4, L4_OFF + TCP_LEN + 2),
        }
    }

    /// Copies the whole template into a frame (once, when the UMEM is set up).
    fn stamp(&self, frame: &mut [u8]) {
        frame[..self.bytes.len()].copy_from_slice(&self.bytes);
    }

    /// Writes the varying fields into a stamped frame and completes both checksums from
    /// the precomputed sums: a dozen additions per packet instead of a pass over it.
    #[inline]
    fn write(&self, f: &mut [u8], v: &Fields) {
        let src = v.src.to_be_bytes();
        f[IP_OFF + 12..IP_OFF + 16].copy_from_slice(&src);
        let src_words = (v.src >> 16) + (v.src & 0xffff);
        let ip_csum = !fold(u64::from(self.ip_base) + u64::from(src_words));
        f[IP_OFF + 10..IP_OFF + 12].copy_from_slice(&ip_csum.to_be_bytes());

        f[L4_OFF..L4_OFF + 2].copy_from_slice(&v.sport.to_be_bytes());
        let (seq_off, ts_off) = self.seq_ts_offsets();
        f[seq_off..seq_off + 4].copy_from_slice(&v.seq.to_be_bytes());
        f[ts_off..ts_off + 8].copy_from_slice(&v.ts.to_be_bytes());
        let mut s = u64::from(self.l4_base)
            + u64::from(src_words)
            + u64::from(v.sport)
            + u64::from(v.seq >> 16)
            + u64::from(v.seq & 0xffff)
            + (v.ts >> 48)
            + ((v.ts >> 32) & 0xffff)
            + ((v.ts >> 16) & 0xffff)
            + (v.ts & 0xffff);
        match self.proto {
            Proto::Udp => {
                let c = !fold(s);
                // Zero means "no checksum" in UDP over IPv4; its ones'-complement twin
                // stands in.
                let c = if c == 0 { 0xffff } else { c };
                f[L4_OFF + 6..L4_OFF + 8].copy_from_slice(&c.to_be_bytes());
            }
            Proto::Tcp => {
                let word = (5u16 << 12) | u16::from(v.tcp_flags);
                f[L4_OFF + 12..L4_OFF + 14].copy_from_slice(&word.to_be_bytes());
                s += u64::from(word);
                f[L4_OFF + 16..L4_OFF + 18].copy_from_slice(&(!fold(s)).to_be_bytes());
            }
        }
    }
}

/// Which source address and port a flow index stands for.
#[derive(Copy, Clone, Debug)]
struct FlowSpace {
    src_base: u32,
    sport_min: u16,
    nports: u32,
}

impl FlowSpace {
    /// Flow `i`: ports vary fastest, then addresses (wrapping within 2^24 addresses).
    #[inline]
    fn tuple(&self, i: u64) -> (u32, u16) {
        let port = self.sport_min as u64 + i % u64::from(self.nports);
        let addr = (i / u64::from(self.nports)) & 0xff_ffff;
        (self.src_base.wrapping_add(addr as u32), port as u16)
    }
}

/// Decides each packet's flow and TCP flags from its per-lane packet counter.
#[derive(Copy, Clone, Debug)]
struct Traffic {
    proto: Proto,
    pattern: Pattern,
    /// Size of the fixed flow set.
    flows: u64,
    new_pct: u64,
    /// Packets of each connection in the open pattern.
    conn_packets: u64,
    /// Flows `[flows, ...)` of the space are the new connections, so they never collide
    /// with the fixed set.
    space: FlowSpace,
}

impl Traffic {
    /// Packet `k` of lane `lane` out of `lanes`: its source and TCP flags. `fresh` counts
    /// the lane's new connections so far and is advanced when this packet opens one.
    #[inline]
    fn packet(&self, k: u64, lane: u64, lanes: u64, fresh: &mut u64) -> (u32, u16, u8) {
        if self.pattern == Pattern::Open {
            // The lane's connection k / n, its packet k % n.
            let n = self.conn_packets;
            let first = k % n == 0;
            if first {
                *fresh += 1;
            }
            let (a, p) = self.space.tuple(self.flows + k / n * lanes + lane);
            return (a, p, if first { TCP_SYN } else { TCP_ACK });
        }
        let new_conn = match self.pattern {
            Pattern::Established => false,
            Pattern::Syn => true,
            Pattern::Mix => k % 100 < self.new_pct,
            Pattern::Open => unreachable!("handled above"),
        };
        if new_conn {
            let i = self.flows + *fresh * lanes + lane;
            *fresh += 1;
            let (a, p) = self.space.tuple(i);
            return (a, p, TCP_SYN);
        }
        // Lanes take interleaved flows so that with the whole set cycled, every flow is
        // sent by exactly one lane (when lanes divides flows).
        let n = k * lanes + lane;
        let i = n % self.flows;
        let (a, p) = self.space.tuple(i);
        let flags = match (self.proto, self.pattern) {
            // The first round opens each flow; without a SYN a director has no connection
            // to match the ACKs against.
            (Proto::Tcp, Pattern::Established) if n < self.flows => TCP_SYN,
            _ => TCP_ACK,
        };
        (a, p, flags)
    }
}

/// What the sink found in a frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Probe {
    seq: u32,
    ts: u64,
}

/// Finds the generator's payload in a received frame: Ethernet, an optional VLAN tag,
/// IPv4, at most one IPIP header, then UDP or TCP. `None` for anything else.
#[inline]
fn parse_probe(f: &[u8]) -> Option<Probe> {
    let mut off = ETH_LEN;
    let mut ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        ethertype = u16::from_be_bytes([*f.get(16)?, *f.get(17)?]);
        off += 4;
    }
    if ethertype != 0x0800 {
        return None;
    }
    let mut depth = 0;
    loop {
        let ip = f.get(off..off + IPV4_LEN)?;
        if ip[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let proto = ip[9];
        off += ihl;
        match proto {
            PROTO_IPIP if depth == 0 => depth += 1,
            PROTO_UDP => {
                let p = f.get(off + UDP_LEN..off + UDP_LEN + 14)?;
                if u16::from_be_bytes([p[0], p[1]]) != MAGIC {
                    return None;
                }
                return Some(Probe {
                    seq: u32::from_be_bytes(p[2..6].try_into().ok()?),
                    ts: u64::from_be_bytes(p[6..14].try_into().ok()?),
                });
            }
            PROTO_TCP => {
                let t = f.get(off..off + TCP_LEN)?;
                let seq = u32::from_be_bytes(t[4..8].try_into().ok()?);
                let doff = usize::from(t[12] >> 4) * 4;
                let p = f.get(off + doff..off + doff + 10)?;
                if u16::from_be_bytes([p[0], p[1]]) != MAGIC {
                    return None;
                }
                return Some(Probe {
                    seq,
                    ts: u64::from_be_bytes(p[2..10].try_into().ok()?),
                });
            }
            _ => return None,
        }
    }
}

/// A token bucket refilled from a nanosecond clock; `rate` 0 means unlimited.
#[derive(Copy, Clone, Debug)]
struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Tokens scaled by 1e9 (token-nanoseconds) so refills stay integral.
    scaled: u128,
    last_ns: u64,
}

impl TokenBucket {
    fn new(rate: u64, burst: u64, now_ns: u64) -> TokenBucket {
        TokenBucket {
            rate,
            burst: burst.max(1),
            scaled: 0,
            last_ns: now_ns,
        }
    }

    /// Packets that may go now, at most `want`; they are taken from the bucket.
    fn take(&mut self, now_ns: u64, want: u64) -> u64 {
        if self.rate == 0 {
            return want;
        }
        let dt = now_ns.saturating_sub(self.last_ns);
        self.last_ns = now_ns;
        let cap = u128::from(self.burst) * 1_000_000_000;
        self.scaled = (self.scaled + u128::from(dt) * u128::from(self.rate)).min(cap);
        let n = ((self.scaled / 1_000_000_000) as u64).min(want);
        self.scaled -= u128::from(n) * 1_000_000_000;
        n
    }
}

#[cfg(target_os = "linux")]
mod app {
    use super::*;

    use std::sync::atomic::{AtomicBool, Ordering};

    use anyhow::{bail, Context, Result};
    use clap::Parser;
    use fastlb::datapath::xdp::{parse_mac, SinkProgram, XdpMode, Xsk, XskConfig};
    use hdrhistogram::Histogram;
    use serde::Serialize;

    #[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
    enum Mode {
        Tx,
        Rx,
        Both,
    }

    #[derive(Parser, Debug)]
    #[command(about = "AF_XDP traffic generator and sink")]
    struct Args {
        /// tx (generate), rx (sink) or both in one thread.
        #[arg(long, value_enum, default_value = "both")]
        mode: Mode,
        /// Interface to transmit on.
        #[arg(long)]
        tx_iface: Option<String>,
        /// Interface to receive on (the sink program is attached to it).
        #[arg(long)]
        rx_iface: Option<String>,
        /// Transmit queues: one socket per queue, flows split between them.
        #[arg(long, default_value_t = 1)]
        queues: u32,
        /// Receive queues (default: as many as --queues). A forwarder may send on any
        /// queue of its egress device, so the sink listens on all of them.
        #[arg(long)]
        rx_queues: Option<u32>,
        /// Destination MAC of generated frames (the next hop: the director).
        #[arg(long)]
        dst_mac: Option<String>,
        /// Source MAC (default: the transmit interface's).
        #[arg(long)]
        src_mac: Option<String>,
        /// First source address.
        #[arg(long, default_value = "10.1.0.1")]
        src_ip: Ipv4Addr,
        /// Source ports used: the lowest.
        #[arg(long, default_value_t = 1024)]
        sport_min: u16,
        /// Source ports used: the highest.
        #[arg(long, default_value_t = 65535)]
        sport_max: u16,
        /// Destination address (the VIP).
        #[arg(long, default_value = "10.2.0.1")]
        dst_ip: Ipv4Addr,
        /// Destination port.
        #[arg(long, default_value_t = 9)]
        dport: u16,
        /// Transport.
        #[arg(long, value_enum, default_value = "udp")]
        proto: Proto,
        /// Traffic pattern (syn and mix imply TCP; open takes --proto).
        #[arg(long, value_enum, default_value = "established")]
        pattern: Pattern,
        /// Flows in the established set.
        #[arg(long, default_value_t = 1000)]
        flows: u64,
        /// Percent of new connections in the mix pattern.
        #[arg(long, default_value_t = 10)]
        new_pct: u64,
        /// Packets of each connection in the open pattern.
        #[arg(long, default_value_t = 3)]
        conn_packets: u64,
        /// Frame size in bytes, without the FCS.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Target rate in packets per second over all queues (0 = flat out).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Milliseconds of tokens the rate limiter may hold: a generator that loses the CPU
        /// for longer than this falls behind its rate (on a busy shared machine, raise it to
        /// hold the rate on average, at the cost of bursts that long).
        #[arg(long, default_value_t = 2)]
        burst_ms: u64,
        /// Seconds to transmit (rx mode: to listen; default until SIGINT/SIGTERM).
        #[arg(long)]
        duration: Option<f64>,
        /// Milliseconds the sink keeps listening after the generator stopped.
        #[arg(long, default_value_t = 300)]
        drain_ms: u64,
        /// Frames per ring pass.
        #[arg(long, default_value_t = 64)]
        batch: u32,
        /// Most frames waiting on a tx ring for the kernel (they carry their send time).
        #[arg(long, default_value_t = 64)]
        tx_depth: u32,
        /// UMEM frames per socket.
        #[arg(long, default_value_t = 4096)]
        frames: u32,
        /// Ring size.
        #[arg(long, default_value_t = 2048)]
        ring_size: u32,
        /// How to attach the sink program: auto, native, generic.
        #[arg(long, default_value = "auto")]
        xdp_mode: XdpMode,
        /// Core to pin the thread to.
        #[arg(long)]
        core: Option<usize>,
        /// Seconds between progress lines on stderr (0 = none).
        #[arg(long, default_value_t = 1.0)]
        progress: f64,
        /// Write the final JSON here instead of stdout.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    }

    static SIGNALLED: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        SIGNALLED.store(true, Ordering::Relaxed);
    }

    fn install_signal_handlers() {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        }
    }

    /// `CLOCK_MONOTONIC` in nanoseconds: the clock both ends of a run share.
    #[inline]
    fn now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    fn iface_mac(iface: &str) -> Result<[u8; 6]> {
        let s = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
            .with_context(|| format!("reading the MAC address of {iface}"))?;
        parse_mac(s.trim()).with_context(|| format!("bad MAC address of {iface}: {s}"))
    }

    /// One transmit socket and its packet counters.
    struct Lane {
        xsk: Xsk,
        k: u64,
        fresh: u64,
    }

    struct Tx {
        lanes: Vec<Lane>,
        template: Template,
        traffic: Traffic,
        bucket: TokenBucket,
        seq: u64,
        batch: u32,
        depth: u32,
        bytes: u64,
    }

    impl Tx {
        /// One pass: up to a batch per lane, as the bucket allows. Returns frames queued.
        fn pass(&mut self, now: u64) -> u64 {
            let nl = self.lanes.len() as u64;
            let mut allowed = self.bucket.take(now, u64::from(self.batch) * nl);
            let mut sent = 0;
            for (li, lane) in self.lanes.iter_mut().enumerate() {
                // Frames wait on the tx ring only up to `depth`: their timestamps are taken
                // now, so a deep ring would count its queueing as the director's latency.
                let room = self.depth.saturating_sub(lane.xsk.tx_pending());
                let want = allowed.min(u64::from(self.batch)).min(u64::from(room)) as u32;
                if want == 0 {
                    // Copy-mode `sendto` may stop short of the ring's end: frames left on
                    // the ring get another kick here, or they would wait for the next send.
                    lane.xsk.reclaim();
                    lane.xsk.kick_tx();
                    continue;
                }
                let (t, tr, seq) = (&self.template, &self.traffic, &mut self.seq);
                let (k, fresh) = (&mut lane.k, &mut lane.fresh);
                let n = lane.xsk.send(want, t.len() as u32, |f| {
                    let (src, sport, tcp_flags) = tr.packet(*k, li as u64, nl, fresh);
                    *k += 1;
                    let fields = Fields {
                        src,
                        sport,
                        seq: *seq as u32,
                        ts: now,
                        tcp_flags,
                    };
                    *seq += 1;
                    t.write(f, &fields);
                });
                allowed -= u64::from(n);
                sent += u64::from(n);
            }
            // Tokens for frames that found no free slot are given back.
            self.bucket.scaled += u128::from(allowed) * 1_000_000_000;
            self.bytes += sent * self.template.len() as u64;
            sent
        }

        fn sent(&self) -> u64 {
            self.seq
        }
    }

    struct Rx {
        xsks: Vec<Xsk>,
        _prog: SinkProgram,
        hist: Histogram<u64>,
        received: u64,
        bytes: u64,
        foreign: u64,
        reordered: u64,
        last_seq: Option<u32>,
        min_seq: u32,
        max_seq: u32,
        batch: u32,
    }

    impl Rx {
        fn pass(&mut self) -> u64 {
            let now = now_ns();
            let mut total = 0;
            for x in &mut self.xsks {
                let (hist, st) = (&mut self.hist, &mut self.received);
                let (bytes, foreign, reordered) =
                    (&mut self.bytes, &mut self.foreign, &mut self.reordered);
                let (last, lo, hi) = (&mut self.last_seq, &mut self.min_seq, &mut self.max_seq);
                let n = x.recv(self.batch, |f| {
                    let Some(p) = parse_probe(f) else {
                        *foreign += 1;
                        return;
                    };
                    *st += 1;
                    *bytes += f.len() as u64;
                    hist.saturating_record(now.saturating_sub(p.ts).max(1));
                    match *last {
                        Some(l) if p.seq < l => *reordered += 1,
                        _ => {}
                    }
                    *last = Some(p.seq);
                    *lo = (*lo).min(p.seq);
                    *hi = (*hi).max(p.seq);
                });
                total += u64::from(n);
            }
            total
        }
    }

    #[derive(Serialize)]
    struct Latency {
        count: u64,
        min: u64,
        mean: f64,
        p50: u64,
        p90: u64,
        p99: u64,
        p999: u64,
        max: u64,
    }

    #[derive(Serialize)]
    struct Second {
        t: f64,
        tx_pps: f64,
        rx_pps: f64,
    }

    #[derive(Serialize)]
    struct Report {
        mode: String,
        proto: String,
        pattern: String,
        size: usize,
        flows: u64,
        queues: u32,
        rate_target: u64,
        duration_s: f64,
        sent: u64,
        received: u64,
        lost: u64,
        loss: f64,
        tx_pps: f64,
        rx_pps: f64,
        pps: f64,
        tx_bps: f64,
        bps: f64,
        gbps: f64,
        latency_ns: Option<Latency>,
        /// (latency ns, fraction of packets at or below it).
        latency_cdf: Vec<(u64, f64)>,
        foreign: u64,
        reordered: u64,
        tx_full: u64,
        kicks: u64,
        series: Vec<Second>,
    }

    pub fn main() -> Result<()> {
        let a = Args::parse();
        let do_tx = a.mode != Mode::Rx;
        let do_rx = a.mode != Mode::Tx;
        let proto = if matches!(a.pattern, Pattern::Established | Pattern::Open) {
            a.proto
        } else {
            Proto::Tcp
        };
        if a.queues == 0
            || a.batch == 0
            || a.flows == 0
            || a.conn_packets == 0
            || a.sport_max < a.sport_min
        {
            bail!(
                "--queues, --batch, --flows, --conn-packets must be positive and sport-min <= sport-max"
            );
        }
        if a.size < Spec::min_size(proto) || a.size > 2048 {
            bail!(
                "--size {} (from {} to 2048 for {proto:?})",
                a.size,
                Spec::min_size(proto)
            );
        }
        if let Some(c) = a.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                bail!("cannot pin to core {c}");
            }
        }
        install_signal_handlers();
        let xcfg = |iface: &str, q: u32| XskConfig {
            frames: a.frames,
            ring_size: a.ring_size,
            ..XskConfig::new(iface, q)
        };

        let mut tx = if do_tx {
            let iface = a.tx_iface.as_deref().context("--tx-iface")?;
            let dst_mac =
                parse_mac(a.dst_mac.as_deref().context("--dst-mac")?).context("--dst-mac")?;
            let src_mac = match &a.src_mac {
                Some(m) => parse_mac(m).context("--src-mac")?,
                None => iface_mac(iface)?,
            };
            let spec = Spec {
                src_mac,
                dst_mac,
                dst_ip: a.dst_ip,
                dport: a.dport,
                proto,
                size: a.size,
            };
            let template = Template::new(&spec);
            let mut lanes = Vec::new();
            for q in 0..a.queues {
                let mut xsk = Xsk::open(&xcfg(iface, q))
                    .with_context(|| format!("AF_XDP socket on {iface} queue {q}"))?;
                xsk.for_each_free_frame(|f| template.stamp(f));
                lanes.push(Lane {
                    xsk,
                    k: 0,
                    fresh: 0,
                });
            }
            let traffic = Traffic {
                proto,
                pattern: a.pattern,
                flows: a.flows,
                new_pct: a.new_pct.min(100),
                conn_packets: a.conn_packets,
                space: FlowSpace {
                    src_base: u32::from(a.src_ip),
                    sport_min: a.sport_min,
                    nports: u32::from(a.sport_max - a.sport_min) + 1,
                },
            };
            // Two milliseconds of tokens by default: a pass delayed by a softirq burst on
            // the shared CPU must not cost the run its offered rate.
            let burst = (u64::from(a.batch) * u64::from(a.queues))
                .max(a.rate.saturating_mul(a.burst_ms.max(1)) / 1000);
            Some(Tx {
                lanes,
                template,
                traffic,
                bucket: TokenBucket::new(a.rate, burst, now_ns()),
                seq: 0,
                batch: a.batch,
                depth: a.tx_depth.max(1),
                bytes: 0,
            })
        } else {
            None
        };

        let mut rx = if do_rx {
            let iface = a.rx_iface.as_deref().context("--rx-iface")?;
            let mut prog = SinkProgram::attach(iface, a.xdp_mode)?;
            let mut xsks = Vec::new();
            let rxq = a.rx_queues.unwrap_or(a.queues).max(1);
            for q in 0..rxq {
                let mut xsk = Xsk::open(&xcfg(iface, q))
                    .with_context(|| format!("AF_XDP socket on {iface} queue {q}"))?;
                xsk.fill_all();
                prog.register(&xsk)?;
                xsks.push(xsk);
            }
            eprintln!(
                "pktgen: sink on {iface} ({:?} mode, {} queues)",
                prog.mode(),
                rxq
            );
            Some(Rx {
                xsks,
                _prog: prog,
                hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                    .expect("valid histogram bounds"),
                received: 0,
                bytes: 0,
                foreign: 0,
                reordered: 0,
                last_seq: None,
                min_seq: u32::MAX,
                max_seq: 0,
                batch: a.batch,
            })
        } else {
            None
        };

        let start = now_ns();
        let duration_ns = a.duration.map(|d| (d * 1e9) as u64);
        let drain_ns = a.drain_ms * 1_000_000;
        let progress_ns = (a.progress * 1e9) as u64;
        let mut tx_end: Option<u64> = None;
        let mut next_print = start + progress_ns;
        let (mut last_tx, mut last_rx, mut last_t) = (0u64, 0u64, start);
        let mut series = Vec::new();
        loop {
            let now = now_ns();
            let stop = SIGNALLED.load(Ordering::Relaxed);
            let mut work = 0;
            if let Some(t) = tx.as_mut().filter(|_| tx_end.is_none()) {
                if stop || duration_ns.is_some_and(|d| now - start >= d) {
                    tx_end = Some(now);
                } else {
                    work += t.pass(now);
                }
            }
            if let Some(r) = rx.as_mut() {
                work += r.pass();
            }
            match (tx.is_some(), tx_end) {
                (true, Some(e)) if rx.is_none() || now - e >= drain_ns || stop => break,
                (false, _) if stop || duration_ns.is_some_and(|d| now - start >= d) => break,
                _ => {}
            }
            if let Some(t) = tx.as_mut().filter(|_| tx_end.is_some()) {
                // The generator is done; keep completing what is still in flight.
                for l in &mut t.lanes {
                    l.xsk.kick_tx();
                }
            }
            if work == 0 {
                match (&tx, &rx) {
                    (None, Some(r)) => r.xsks[0].wait_rx(10),
                    (Some(_), _) if tx_end.is_some() => {
                        if let Some(r) = &rx {
                            r.xsks[0].wait_rx(1);
                        }
                    }
                    _ => std::hint::spin_loop(),
                }
            }
            if progress_ns > 0 && now >= next_print {
                let sent = tx.as_ref().map_or(0, Tx::sent);
                let got = rx.as_ref().map_or(0, |r| r.received);
                let dt = (now - last_t) as f64 / 1e9;
                let s = Second {
                    t: (now - start) as f64 / 1e9,
                    tx_pps: (sent - last_tx) as f64 / dt,
                    rx_pps: (got - last_rx) as f64 / dt,
                };
                let p99 = rx
                    .as_ref()
                    .filter(|r| !r.hist.is_empty())
                    .map_or(0, |r| r.hist.value_at_quantile(0.99));
                eprintln!(
                    "pktgen: t={:.0}s tx {:.0} pps rx {:.0} pps total sent {sent} received {got} \
                     p99 {:.1} us",
                    s.t,
                    s.tx_pps,
                    s.rx_pps,
                    p99 as f64 / 1e3
                );
                series.push(s);
                (last_tx, last_rx, last_t) = (sent, got, now);
                next_print += progress_ns;
            }
        }
        let end = now_ns();

        let tx_secs = tx_end.map_or((end - start) as f64, |e| (e - start) as f64) / 1e9;
        let secs = if tx.is_some() {
            tx_secs
        } else {
            (end - start) as f64 / 1e9
        };
        let sent = tx.as_ref().map_or(0, Tx::sent);
        let (received, rbytes) = rx.as_ref().map_or((0, 0), |r| (r.received, r.bytes));
        // Without the generator in the process, the sequence numbers tell what was sent.
        let expected = match (&tx, &rx) {
            (Some(_), _) => sent,
            (None, Some(r)) if r.received > 0 => u64::from(r.max_seq - r.min_seq) + 1,
            _ => 0,
        };
        let lost = expected.saturating_sub(received);
        let (tx_full, kicks) = tx.as_ref().map_or((0, 0), |t| {
            t.lanes.iter().fold((0, 0), |(f, k), l| {
                let c = l.xsk.counters();
                (f + c.tx_full, k + c.kicks)
            })
        });
        let latency = rx.as_ref().filter(|r| !r.hist.is_empty()).map(|r| Latency {
            count: r.hist.len(),
            min: r.hist.min(),
            mean: r.hist.mean(),
            p50: r.hist.value_at_quantile(0.5),
            p90: r.hist.value_at_quantile(0.9),
            p99: r.hist.value_at_quantile(0.99),
            p999: r.hist.value_at_quantile(0.999),
            max: r.hist.max(),
        });
        let cdf = rx
            .as_ref()
            .filter(|r| !r.hist.is_empty())
            .map(|r| {
                let qs = [
                    0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99,
                    0.995, 0.999, 0.9999, 1.0,
                ];
                qs.iter()
                    .map(|&q| (r.hist.value_at_quantile(q), q))
                    .collect()
            })
            .unwrap_or_default();
        let rx_pps = received as f64 / secs;
        let bps = rbytes as f64 * 8.0 / secs;
        let report = Report {
            mode: format!("{:?}", a.mode).to_lowercase(),
            proto: format!("{proto:?}").to_lowercase(),
            pattern: format!("{:?}", a.pattern).to_lowercase(),
            size: a.size,
            flows: a.flows,
            queues: a.queues,
            rate_target: a.rate,
            duration_s: secs,
            sent,
            received,
            lost,
            loss: if expected > 0 {
                lost as f64 / expected as f64
            } else {
                0.0
            },
            tx_pps: sent as f64 / secs,
            rx_pps,
            pps: if rx.is_some() {
                rx_pps
            } else {
                sent as f64 / secs
            },
            tx_bps: tx.as_ref().map_or(0.0, |t| t.bytes as f64 * 8.0 / secs),
            bps,
            gbps: bps / 1e9,
            latency_ns: latency,
            latency_cdf: cdf,
            foreign: rx.as_ref().map_or(0, |r| r.foreign),
            reordered: rx.as_ref().map_or(0, |r| r.reordered),
            tx_full,
            kicks,
            series,
        };
        let text = serde_json::to_string_pretty(&report)? + "\n";
        match &a.json {
            Some(p) => {
                std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?
            }
            None => print!("{text}"),
        }
        eprintln!(
            "pktgen: sent {sent} received {received} loss {:.3}% in {secs:.2} s: {:.0} pps {:.3} Gbit/s",
            report.loss * 100.0,
            report.pps,
            report.gbps
        );
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn main() -> anyhow::Result<()> {
    app::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("pktgen: AF_XDP exists on Linux only");
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Ipv4Header, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    fn spec(proto: Proto, size: usize) -> Spec {
        Spec {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst_ip: Ipv4Addr::new(10, 2, 0, 1),
            dport: 9,
            proto,
            size,
        }
    }

    fn build(proto: Proto, size: usize, v: &Fields) -> Vec<u8> {
        let t = Template::new(&spec(proto, size));
        // A frame holding a different packet first: stamping must cover all of it.
        let mut f = vec![0xaa; size];
        t.stamp(&mut f);
        t.write(&mut f, v);
        f
    }

    /// Checks both checksums of a frame by full recomputation with etherparse.
    fn assert_checksums(f: &[u8]) {
        let p = SlicedPacket::from_ethernet(f).expect("etherparse reads the frame");
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
        let payload = ip.payload().payload;
        match p.transport.expect("a transport header") {
            TransportSlice::Udp(u) => {
                let want = u
                    .to_header()
                    .calc_checksum_ipv4(&h, u.payload())
                    .expect("fits");
                assert_eq!(u.checksum(), want, "UDP checksum");
                assert_eq!(usize::from(u.length()), payload.len());
            }
            TransportSlice::Tcp(t) => {
                let want = t
                    .to_header()
                    .calc_checksum_ipv4(&h, t.payload())
                    .expect("fits");
                assert_eq!(t.checksum(), want, "TCP checksum");
            }
            other => panic!("unexpected transport {other:?}"),
        }
    }

    fn proto() -> impl Strategy<Value = Proto> {
        prop_oneof![Just(Proto::Udp), Just(Proto::Tcp)]
    }

    proptest! {
        /// Checksums completed from the precomputed sums equal a full recompute, for any
        /// field values and frame size (odd sizes included), and the sink reads back what
        /// the generator wrote.
        #[test]
        fn precomputed_checksums_match_a_full_recompute(
            proto in proto(),
            extra in 0usize..200,
            src in any::<u32>(),
            sport in any::<u16>(),
            seq in any::<u32>(),
            ts in any::<u64>(),
            syn in any::<bool>(),
        ) {
            let size = Spec::min_size(proto) + extra;
            let v = Fields { src, sport, seq, ts, tcp_flags: if syn { TCP_SYN } else { TCP_ACK } };
            let f = build(proto, size, &v);
            prop_assert_eq!(f.len(), size);
            assert_checksums(&f);
            prop_assert_eq!(parse_probe(&f), Some(Probe { seq, ts }));
        }

        /// Rewriting a frame that carried an earlier packet (as UMEM frames are reused)
        /// gives the same bytes as writing a fresh one.
        #[test]
        fn rewriting_a_used_frame_leaves_no_trace(
            proto in proto(),
            a in (any::<u32>(), any::<u16>(), any::<u32>(), any::<u64>()),
            b in (any::<u32>(), any::<u16>(), any::<u32>(), any::<u64>()),
        ) {
            let t = Template::new(&spec(proto, 64 + 16));
            let fa = Fields { src: a.0, sport: a.1, seq: a.2, ts: a.3, tcp_flags: TCP_SYN };
            let fb = Fields { src: b.0, sport: b.1, seq: b.2, ts: b.3, tcp_flags: TCP_ACK };
            let mut reused = vec![0; t.len()];
            t.stamp(&mut reused);
            t.write(&mut reused, &fa);
            t.write(&mut reused, &fb);
            prop_assert_eq!(reused, build(proto, t.len(), &fb));
        }
    }

    #[test]
    fn sixty_four_byte_frames_hold_everything_for_udp_and_tcp() {
        assert!(Spec::min_size(Proto::Udp) <= 64);
        assert_eq!(Spec::min_size(Proto::Tcp), 64);
        let v = Fields {
            src: u32::from(Ipv4Addr::new(10, 1, 0, 7)),
            sport: 4321,
            seq: 77,
            ts: 123_456_789,
            tcp_flags: TCP_SYN,
        };
        let f = build(Proto::Tcp, 64, &v);
        let p = SlicedPacket::from_ethernet(&f).expect("parses");
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("TCP")
        };
        assert!(t.syn() && !t.ack());
        assert_eq!(t.source_port(), 4321);
        assert_eq!(t.destination_port(), 9);
        assert_eq!(t.sequence_number(), 77);
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("IPv4")
        };
        assert_eq!(ip.header().source(), [10, 1, 0, 7]);
        assert_eq!(ip.header().total_len(), 50);
    }

    #[test]
    fn sink_sees_through_one_ipip_header_and_a_vlan_tag() {
        let v = Fields {
            src: 1,
            sport: 2,
            seq: 3,
            ts: 4,
            tcp_flags: 0,
        };
        let inner = build(Proto::Udp, 80, &v);
        // Outer: Ethernet, VLAN tag, IPv4 protocol 4, then the inner IPv4 packet.
        let mut f = inner[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        let outer = Ipv4Header::new(
            (inner.len() - ETH_LEN) as u16,
            64,
            etherparse::IpNumber(PROTO_IPIP),
            [10, 0, 0, 1],
            [10, 0, 0, 2],
        )
        .expect("valid header");
        outer.write(&mut f).expect("writes");
        f.extend_from_slice(&inner[ETH_LEN..]);
        assert_eq!(parse_probe(&f), Some(Probe { seq: 3, ts: 4 }));
        // Two levels of encapsulation are not what any director sends: not a probe.
        let mut twice = f[..18].to_vec();
        outer.write(&mut twice).expect("writes");
        twice.extend_from_slice(&f[18..]);
        assert_eq!(parse_probe(&twice), None);
    }

    #[test]
    fn foreign_frames_are_not_probes() {
        let v = Fields::default();
        let mut f = build(Proto::Udp, 64, &v);
        assert!(parse_probe(&f).is_some());
        f[ETH_LEN + IPV4_LEN + UDP_LEN] ^= 1;
        assert_eq!(parse_probe(&f), None, "wrong magic");
        assert_eq!(parse_probe(&f[..40]), None, "truncated");
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse_probe(&arp), None);
    }

    fn traffic(pattern: Pattern, flows: u64) -> Traffic {
        Traffic {
            proto: Proto::Tcp,
            pattern,
            flows,
            new_pct: 25,
            conn_packets: 3,
            space: FlowSpace {
                src_base: u32::from(Ipv4Addr::new(10, 1, 0, 1)),
                sport_min: 1000,
                nports: 10,
            },
        }
    }

    #[test]
    fn flows_vary_ports_first_then_addresses() {
        let s = traffic(Pattern::Established, 1).space;
        assert_eq!(s.tuple(0), (0x0a01_0001, 1000));
        assert_eq!(s.tuple(9), (0x0a01_0001, 1009));
        assert_eq!(s.tuple(10), (0x0a01_0002, 1000));
        assert_eq!(s.tuple(25), (0x0a01_0003, 1005));
    }

    #[test]
    fn established_tcp_opens_each_flow_once_then_acks_over_the_set() {
        let t = traffic(Pattern::Established, 30);
        let mut fresh = 0;
        let mut seen = std::collections::HashMap::new();
        for k in 0..45 {
            for lane in 0..2 {
                let (a, p, flags) = t.packet(k, lane, 2, &mut fresh);
                let e = seen.entry((a, p)).or_insert((0, 0));
                if flags == TCP_SYN {
                    e.0 += 1;
                } else {
                    assert_eq!(flags, TCP_ACK);
                    assert_eq!(e.0, 1, "an ACK only after the flow's SYN");
                    e.1 += 1;
                }
            }
        }
        assert_eq!(seen.len(), 30, "exactly the fixed set");
        assert!(seen.values().all(|&(syn, ack)| syn == 1 && ack == 2));
        assert_eq!(fresh, 0);
    }

    #[test]
    fn syn_pattern_never_repeats_a_source_and_avoids_the_fixed_set() {
        let t = traffic(Pattern::Syn, 30);
        let fixed: std::collections::HashSet<_> = (0..30).map(|i| t.space.tuple(i)).collect();
        let mut fresh = [0u64; 2];
        let mut seen = std::collections::HashSet::new();
        for k in 0..500 {
            for lane in 0..2u64 {
                let (a, p, flags) = t.packet(k, lane, 2, &mut fresh[lane as usize]);
                assert_eq!(flags, TCP_SYN);
                assert!(!fixed.contains(&(a, p)));
                assert!(seen.insert((a, p)), "source {a:x}:{p} reused");
            }
        }
    }

    #[test]
    fn mix_pattern_opens_the_requested_share_of_new_connections() {
        let t = traffic(Pattern::Mix, 30);
        let mut fresh = 0;
        let syns = (0..1000)
            .filter(|&k| t.packet(k, 0, 1, &mut fresh).2 == TCP_SYN)
            .count();
        assert_eq!(syns, 250);
        assert_eq!(fresh, 250);
    }

    #[test]
    fn open_pattern_sends_each_new_connection_a_syn_then_acks_back_to_back() {
        let t = traffic(Pattern::Open, 30);
        let fixed: std::collections::HashSet<_> = (0..30).map(|i| t.space.tuple(i)).collect();
        let mut fresh = [0u64; 2];
        let mut conns = std::collections::HashMap::new();
        for k in 0..300 {
            for lane in 0..2u64 {
                let (a, p, flags) = t.packet(k, lane, 2, &mut fresh[lane as usize]);
                assert!(!fixed.contains(&(a, p)));
                let sent: &mut Vec<u8> = conns.entry((a, p)).or_default();
                assert_eq!(
                    sent.len() as u64,
                    k % 3,
                    "a connection's packets back to back"
                );
                sent.push(flags);
            }
        }
        assert_eq!(conns.len(), 200);
        assert!(conns.values().all(|f| f[..] == [TCP_SYN, TCP_ACK, TCP_ACK]));
        assert_eq!(fresh, [100, 100]);
    }

    #[test]
    fn token_bucket_paces_to_the_rate_and_caps_bursts() {
        let mut b = TokenBucket::new(1_000_000, 64, 0);
        assert_eq!(b.take(0, 64), 0, "starts empty");
        // 10 us at 1 Mpps: 10 packets.
        assert_eq!(b.take(10_000, 64), 10);
        // 1.5 us: one packet, half a token left over.
        assert_eq!(b.take(11_500, 64), 1);
        assert_eq!(b.take(12_000, 64), 1, "the half token is kept");
        // A long pause earns no more than the burst.
        assert_eq!(b.take(1_000_000_000, 1000), 64);
        // Over a second of small steps the count is exact.
        let mut b = TokenBucket::new(250_000, 64, 0);
        let total: u64 = (1..=100_000u64).map(|i| b.take(i * 10_000, 64)).sum();
        assert_eq!(total, 250_000);
        let mut free = TokenBucket::new(0, 64, 0);
        assert_eq!(free.take(0, 500), 500, "rate 0 is unlimited");
    }
}
