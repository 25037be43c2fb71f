//! The per-packet pipeline: parse, classify, find or create the connection, rewrite, address
//! the next hop.
//!
//! ```text
//! frame -> parse_frame -+-> TCP/UDP --> conn lookup --hit--> state, timer --> rewrite --> Transmit
//!                       |                    \--miss--> service? SYN? --> persistence | scheduler
//!                       |                                                  --> new conn --> rewrite
//!                       +-> ICMP error --> quoted tuple --> conn lookup --> relay (NAT: translate)
//!                       \-> anything else (ARP, ping to the director, ...) --> Pass
//! ```
//!
//! One [`Pipeline`] per worker, one file per step of the path, each opening `impl Pipeline`
//! for its part:
//! - `mod.rs`: the pipeline's state; snapshots and next hops taken between batches; parse
//!   and dispatch; the batch with its prefetch.
//! - `flow.rs`: TCP and UDP: the flow key, connection lookup, scheduling a new connection.
//! - `egress.rs`: a packet of a connection leaving: rewrite by forwarding method, path MTU,
//!   next hop, MAC addressing.
//! - `icmp.rs`: ICMP errors about a connection, and packets that are not ours.
//! - `expiry.rs`: the paced expiry sweep.
//! - `frag.rs`: IP fragments of TCP and UDP: the first scheduled by its ports, the later
//!   ones following it (a small fixed table per worker); later ones that come first wait
//!   in a small pool (`frag/hold.rs`) and are sent through `PacketProcessor::emit`.
//!
//! The pipeline owns its schedulers (so their cursors need no lock) and
//! shares the connection table, the real-server counters and the next-hop tables with the
//! other workers. Nothing on the per-packet path allocates, locks, makes a syscall or reads
//! a clock; every drop is counted under a [`DropReason`]. Allocation happens only when a new
//! snapshot is installed, between batches.

mod egress;
mod expiry;
mod flow;
mod frag;
mod icmp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::{Frame, PacketProcessor, Verdict};
use crate::conn::defence::DropCounter;
use crate::conn::ConnTable;
use crate::forward::nexthop::{MacAddr, NextHops};
use crate::ha::sync::SyncHook;
use crate::sched::{self, RoundRobin, Scheduler};
use crate::service::{ServiceId, ServiceTable};
use crate::stats::{DropReason, WorkerStats};
use crate::time::Instant;
use crate::wire::{self, ip_proto, L4Info, Parsed, WireError};
use flow::flow_key;

/// Settings of a pipeline that do not change with the service table.
#[derive(Copy, Clone, Debug)]
pub struct PipelineSettings {
    /// Outer source of IPv4 tunnel packets; the route's preferred source when `None`.
    pub tunnel_source_v4: Option<Ipv4Addr>,
    /// Outer source of IPv6 tunnel packets; the route's preferred source when `None`.
    pub tunnel_source_v6: Option<Ipv6Addr>,
    /// Connection-table slots the expiry sweep examines per millisecond of the clock;
    /// [`EXPIRE_BUDGET_AUTO`] (the default) takes a thousandth of the worker's slots, at
    /// least [`MIN_EXPIRE_BUDGET`], so the sweep covers them about once a second. A budget
    /// of the table's capacity (what replay uses) looks at every slot each millisecond.
    pub expire_budget: usize,
}

/// [`PipelineSettings::expire_budget`] derived from the worker's share of the table.
pub const EXPIRE_BUDGET_AUTO: usize = 0;
/// Least number of slots a derived expiry budget examines per millisecond.
pub const MIN_EXPIRE_BUDGET: usize = 64;

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            tunnel_source_v4: None,
            tunnel_source_v6: None,
            expire_budget: EXPIRE_BUDGET_AUTO,
        }
    }
}

/// One worker's pipeline.
pub struct Pipeline {
    worker: usize,
    table: Arc<ServiceTable>,
    scheds: Vec<Box<dyn Scheduler>>,
    updates: Option<Receiver<Arc<ServiceTable>>>,
    nexthop_updates: Option<Receiver<Arc<NextHops>>>,
    /// Where next hops with no neighbour entry are reported, for the control thread to
    /// have the kernel resolve them.
    missing: Option<Sender<IpAddr>>,
    conns: Arc<ConnTable>,
    nexthops: Arc<NextHops>,
    /// Next hop toward each real server (by `DestId`, one spare entry last) with the
    /// address it was resolved for, as IPVS keeps `dest_dst` in the destination: resolved
    /// on first use, forgotten when the next-hop tables change. Failures are not kept
    /// (they are reported anew).
    dest_hops: Box<[egress::DestHop]>,
    stats: Arc<WorkerStats>,
    settings: PipelineSettings,
    /// Slots one expiry sweep examines per millisecond.
    expire_per_ms: usize,
    /// Millisecond of the clock of the last expiry sweep; `None` before the first.
    swept_ms: Option<u64>,
    /// An entry was retired (`expire_now`) since the last sweep: sweep at the next batch
    /// even within the same millisecond, so its slot is reclaimed as promptly as before.
    reclaim_due: bool,
    /// Live connections from which `process_batch` prefetches ([`PREFETCH_MIN_LIVE`]).
    prefetch_min_live: usize,
    /// IPv4 identification for packets this worker originates (tunnel headers, ICMP).
    ip_id: u16,
    /// Set by the control thread while this director is a pair's standby.
    standby_flag: Option<Arc<AtomicBool>>,
    /// `standby_flag` as read between batches: while set, every frame is dropped.
    standby: bool,
    /// Whether the `drop_entry` defence wants client packets counted into the entries'
    /// `in_pkts`, as read between batches (the defence level changes once a second at
    /// most; one load a batch instead of one a packet: 2.9 instructions a packet fewer on
    /// `est_dr_v4_1k`, callgrind).
    count_in_pkts: bool,
    /// Connection sync: what to send while a master runs, what a backup received.
    sync: Option<SyncHook>,
    /// Datagrams whose first fragment was forwarded, for their later fragments to follow.
    frags: frag::FragTable,
    /// Later fragments that came before their first one, until it comes.
    held: frag::HoldPool,
    /// The `drop_packet` defence strategy's countdown (`crate::conn::defence`).
    drop_counter: DropCounter,
}

impl Pipeline {
    /// A pipeline for `worker` starting on snapshot `table`.
    pub fn new(
        worker: usize,
        table: Arc<ServiceTable>,
        conns: Arc<ConnTable>,
        nexthops: Arc<NextHops>,
        stats: Arc<WorkerStats>,
        settings: PipelineSettings,
    ) -> Pipeline {
        let scheds = table.services.iter().map(sched::for_service).collect();
        let expire_per_ms = match settings.expire_budget {
            EXPIRE_BUDGET_AUTO => (conns.worker_slots(worker) / 1000).max(MIN_EXPIRE_BUDGET),
            n => n,
        };
        let dest_hops =
            vec![egress::DestHop::EMPTY; conns.registry().capacity() + 1].into_boxed_slice();
        Pipeline {
            worker,
            table,
            scheds,
            updates: None,
            nexthop_updates: None,
            missing: None,
            dest_hops,
            conns,
            nexthops,
            stats,
            settings,
            expire_per_ms,
            swept_ms: None,
            reclaim_due: false,
            prefetch_min_live: PREFETCH_MIN_LIVE,
            ip_id: 0,
            standby_flag: None,
            standby: false,
            count_in_pkts: false,
            sync: None,
            frags: frag::FragTable::new(),
            held: frag::HoldPool::new(),
            drop_counter: DropCounter::default(),
        }
    }

    /// Drops every frame (as [`DropReason::Standby`]) from the batch after `flag` is set
    /// until the batch after it is cleared: the standby of a director pair forwards nothing.
    pub fn with_standby(mut self, flag: Arc<AtomicBool>) -> Pipeline {
        self.standby = flag.load(Ordering::Relaxed);
        self.standby_flag = Some(flag);
        self
    }

    /// Takes part in connection sync through `hook` (see `ha::sync`).
    pub fn with_sync(mut self, hook: SyncHook) -> Pipeline {
        self.sync = Some(hook);
        self
    }

    /// Takes new snapshots from `rx` between batches.
    pub fn with_updates(mut self, rx: Receiver<Arc<ServiceTable>>) -> Pipeline {
        self.updates = Some(rx);
        self
    }

    /// Takes new next-hop tables from `rx` between batches.
    pub fn with_nexthop_updates(mut self, rx: Receiver<Arc<NextHops>>) -> Pipeline {
        self.nexthop_updates = Some(rx);
        self
    }

    /// Reports next hops without a neighbour entry on `tx` (never blocking: a full channel
    /// loses the report, the drop is still counted).
    pub fn with_missing_neighbours(mut self, tx: Sender<IpAddr>) -> Pipeline {
        self.missing = Some(tx);
        self
    }

    /// This worker's counters.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// The snapshot in use.
    pub fn table(&self) -> &Arc<ServiceTable> {
        &self.table
    }

    /// Switches to a new snapshot. Schedulers of services that remain are updated
    /// ([`Scheduler::update`]: they keep what the kernel's keep across the same change);
    /// new services get new ones.
    fn install(&mut self, table: Arc<ServiceTable>) {
        let mut old = std::mem::take(&mut self.scheds);
        self.scheds = table
            .services
            .iter()
            .map(|svc| match self.table.by_key(&svc.config.key) {
                Some(ServiceId(i)) => {
                    let prev = std::mem::replace(&mut old[i as usize], Box::new(RoundRobin::new()));
                    prev.update(svc)
                }
                None => sched::for_service(svc),
            })
            .collect();
        self.table = table;
    }

    fn handle(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
        let parsed = wire::parse_frame(frame.data());
        self.handle_parsed(now, frame, &parsed)
    }

    /// `handle` with the frame already parsed.
    #[inline]
    fn handle_parsed(
        &mut self,
        now: Instant,
        frame: &mut Frame<'_>,
        parsed: &Result<Parsed, WireError>,
    ) -> Verdict {
        // Borrowed, not moved out of the Result: Parsed is a hundred bytes.
        let Ok(p) = parsed else {
            return Verdict::Drop(DropReason::Malformed);
        };
        // Another host's frame (a switch flooding unknown unicast): the kernel's IP never
        // sees PACKET_OTHERHOST, so neither do IPVS or fastlb. The XDP filter leaves such
        // frames to the kernel; this catches them on every other path.
        if !self.nexthops.accepts(MacAddr(p.dst_mac), frame.ingress()) {
            return Verdict::Drop(DropReason::OtherHost);
        }
        let Some(ip) = &p.ip else {
            return Verdict::Pass;
        };
        if ip.fragment && matches!(ip.protocol, ip_proto::TCP | ip_proto::UDP) {
            return self.fragment(now, frame, p, ip);
        }
        if let Some((key, flags)) = flow_key(ip) {
            return self.flow(now, frame, p, ip, &key, flags);
        }
        match ip.l4 {
            L4Info::Icmp(icmp) if icmp.quotes && icmp.relayed_by_ipvs(ip.version) => {
                self.icmp_error(frame, p, ip)
            }
            _ if ip.fragment && self.table.is_virtual_addr(ip.dst) => {
                Verdict::Drop(DropReason::Fragment)
            }
            _ => Verdict::Pass,
        }
    }
}

/// Frames `process_batch` parses and prefetches for before it handles the first of them.
const PREFETCH_BATCH: usize = 64;
/// Live connections from which `process_batch` prefetches: 8 MiB of entries, more than a
/// core's share of the caches. Below it the table stays cached and the extra pass over
/// the batch (~140 instructions a packet) would cost more than it saves.
const PREFETCH_MIN_LIVE: usize = 1 << 16;

impl PacketProcessor for Pipeline {
    #[inline]
    fn process(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
        let verdict = if self.standby {
            Verdict::Drop(DropReason::Standby)
        } else {
            self.handle(now, frame)
        };
        verdict.count(&self.stats);
        verdict
    }

    /// With a table much larger than the caches, a lookup is two dependent misses (index
    /// bucket, then entry): this parses the whole batch first and starts loading each
    /// flow's bucket, then each bucket's candidate entries, then handles the frames, so
    /// the misses overlap across the batch instead of being paid one frame after another.
    /// With a small table, frame by frame.
    fn process_batch(&mut self, now: Instant, frames: &mut [Frame<'_>], verdicts: &mut [Verdict]) {
        if self.standby || self.conns.len() < self.prefetch_min_live {
            for (frame, verdict) in frames.iter_mut().zip(verdicts.iter_mut()) {
                *verdict = self.process(now, frame);
            }
            return;
        }
        for (frames, verdicts) in frames
            .chunks_mut(PREFETCH_BATCH)
            .zip(verdicts.chunks_mut(PREFETCH_BATCH))
        {
            let mut parsed = [Err(WireError::Truncated); PREFETCH_BATCH];
            let mut hashes = [None; PREFETCH_BATCH];
            for ((frame, p), h) in frames.iter().zip(&mut parsed).zip(&mut hashes) {
                *p = wire::parse_frame(frame.data());
                if let Ok(p) = p {
                    *h =
                        p.ip.as_ref()
                            .and_then(flow_key)
                            .and_then(|(k, _)| self.conns.prefetch_index(&k));
                }
            }
            for h in hashes.iter().flatten() {
                self.conns.prefetch_entry(*h);
            }
            for ((frame, verdict), p) in frames.iter_mut().zip(verdicts.iter_mut()).zip(&parsed) {
                *verdict = self.handle_parsed(now, frame, p);
                verdict.count(&self.stats);
            }
        }
    }

    fn between_batches(&mut self, now: Instant) {
        if let Some(flag) = &self.standby_flag {
            self.standby = flag.load(Ordering::Relaxed);
        }
        self.count_in_pkts = self.conns.defence().count_in_pkts();
        if let Some(rx) = &self.updates {
            if let Some(newest) = rx.try_iter().last() {
                self.install(newest);
            }
        }
        if let Some(rx) = &self.nexthop_updates {
            if let Some(newest) = rx.try_iter().last() {
                self.nexthops = newest;
                self.dest_hops.fill(egress::DestHop::EMPTY);
            }
        }
        self.sweep(now);
        self.expire_held(now);
        for s in &mut self.scheds {
            s.housekeeping(now);
        }
        if let Some(s) = &mut self.sync {
            s.between_batches(&self.conns, now);
        }
    }

    #[inline]
    fn has_output(&self) -> bool {
        self.held_ready()
    }

    fn emit<'b>(&mut self, now: Instant, buf: &'b mut [u8]) -> Option<(Frame<'b>, Verdict)> {
        self.emit_held(now, buf)
    }
}

#[cfg(test)]
mod tests;
