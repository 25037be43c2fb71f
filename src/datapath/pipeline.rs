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
//! One [`Pipeline`] per worker. It owns its schedulers (so their cursors need no lock) and
//! shares the connection table, the real-server counters and the next-hop tables with the
//! other workers. Nothing on the per-packet path allocates, locks, makes a syscall or reads
//! a clock; every drop is counted under a [`DropReason`]. Allocation happens only when a new
//! snapshot is installed, between batches.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::{Frame, PacketProcessor, Verdict};
use crate::conn::persist::PersistError;
use crate::conn::{self, ConnInfo, ConnTable, Direction, FlowKey, Hit, NewConn, TcpState};
use crate::forward::nexthop::{MacAddr, NextHop, NextHops};
use crate::forward::tun::{self, MtuVerdict};
use crate::forward::{icmp, mac, nat, partial};
use crate::ha::sync::SyncHook;
use crate::sched::{self, RoundRobin, SchedInput, Scheduler};
use crate::service::{DestId, DestRegistry, ForwardMethod, Protocol, ServiceId, ServiceTable};
use crate::stats::{DropReason, WorkerStats};
use crate::time::Instant;
use crate::wire::{self, IpInfo, IpVersion, L4Info, Parsed, WireError};

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
    /// Next hop toward each real server (by `DestId`) with the address it was resolved
    /// for, as IPVS keeps `dest_dst` in the destination: resolved on first use, forgotten
    /// when the next-hop tables change. Failures are not kept (they are reported anew).
    dest_hops: Box<[Option<(IpAddr, NextHop)>]>,
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
    /// Connection sync: what to send while a master runs, what a backup received.
    sync: Option<SyncHook>,
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
        let dest_hops = vec![None; conns.registry().capacity()].into_boxed_slice();
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
            sync: None,
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

    fn next_ip_id(&mut self) -> u16 {
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ip_id
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
        match ip.l4 {
            L4Info::Tcp {
                src_port,
                dst_port,
                flags,
            } => self.flow(
                now,
                frame,
                p,
                ip,
                Protocol::Tcp,
                src_port,
                dst_port,
                Some(flags),
            ),
            L4Info::Udp { src_port, dst_port } => {
                self.flow(now, frame, p, ip, Protocol::Udp, src_port, dst_port, None)
            }
            L4Info::Icmp(icmp) if icmp.quotes && icmp.relayed_by_ipvs(ip.version) => {
                self.icmp_error(frame, p, ip)
            }
            _ if ip.fragment && self.table.is_virtual_addr(ip.dst) => {
                Verdict::Drop(DropReason::Fragment)
            }
            _ => Verdict::Pass,
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn flow(
        &mut self,
        now: Instant,
        frame: &mut Frame<'_>,
        p: &Parsed,
        ip: &IpInfo,
        protocol: Protocol,
        sport: u16,
        dport: u16,
        flags: Option<conn::TcpFlags>,
    ) -> Verdict {
        let key = FlowKey {
            protocol,
            src: ip.src,
            sport,
            dst: ip.dst,
            dport,
        };
        if let Some(hit) = self.conns.lookup_live(&key, now) {
            let syn = hit.dir == Direction::Original && flags.is_some_and(|f| f.syn());
            if !self.table.dest_is_live(hit.info.dest) {
                // The real server was removed: expire the entry now (expire_nodest_conn);
                // a SYN is then scheduled afresh, anything else is dropped.
                self.conns.expire_now(hit.id);
                self.reclaim_due = true;
                if !syn {
                    return Verdict::Drop(DropReason::DestinationRemoved);
                }
            } else if syn && matches!(hit.info.state, TcpState::TimeWait | TcpState::Close) {
                // A new connection reusing the ports of one that has closed: IPVS
                // (conn_reuse_mode 1) expires the old entry and schedules the SYN anew.
                self.conns.expire_now(hit.id);
                self.reclaim_due = true;
            } else {
                if ip.fragment {
                    return Verdict::Drop(DropReason::Fragment);
                }
                self.conns.on_packet(hit.id, hit.dir, flags, now);
                if hit.dir == Direction::Original {
                    self.synced(hit.id, now);
                }
                return self.forward(frame, p, ip, &hit.info, hit.dir);
            }
        }
        let Some(sid) = self.table.find(protocol, ip.dst, dport) else {
            // Not ours: the kernel's IP output sends the bytes as they are (a NAT real
            // server answering a client that reached it directly), so a checksum its
            // sender left partial is finished here, as for a forwarded packet.
            partial::complete(frame.data_mut(), p, ip);
            return Verdict::Pass;
        };
        if ip.fragment {
            return Verdict::Drop(DropReason::Fragment);
        }
        if flags.is_some_and(|f| f.rst() || !(f.syn() || self.table.sloppy_tcp)) {
            // Only a SYN opens a TCP connection, or with sloppy_tcp any packet but a RST
            // (tcp_conn_schedule); UDP always may.
            return Verdict::Drop(DropReason::NoConnection);
        }
        let hit = match self.schedule(now, sid, ip, protocol, sport, dport, flags) {
            Ok(hit) => hit,
            Err(reason) => return Verdict::Drop(reason),
        };
        self.stats.dest(hit.info.dest).conns.add(1);
        self.synced(hit.id, now);
        self.forward(frame, p, ip, &hit.info, Direction::Original)
    }

    /// A packet from the client of connection `id` went through the table: the sync hook
    /// decides whether the connection is to be sent (`ip_vs_in` calling `ip_vs_sync_conn`).
    #[inline]
    fn synced(&mut self, id: conn::ConnId, now: Instant) {
        if let Some(s) = &mut self.sync {
            s.after_client_packet(&self.conns, id, now);
        }
    }

    /// Picks a real server for a new connection (persistence template first, then the
    /// scheduler) and records the connection.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn schedule(
        &mut self,
        now: Instant,
        sid: ServiceId,
        ip: &IpInfo,
        protocol: Protocol,
        sport: u16,
        dport: u16,
        flags: Option<conn::TcpFlags>,
    ) -> Result<Hit, DropReason> {
        let table = &self.table;
        let svc = table.service(sid);
        let sched = self.scheds[sid.0 as usize].as_mut();
        let registry: &DestRegistry = self.conns.registry();
        let input = SchedInput {
            client: ip.src,
            client_port: sport,
            vaddr: ip.dst,
            vport: dport,
            now,
        };
        let (index, template) = if svc.config.persistence.is_some() {
            let live = |d| table.dest_is_live(d);
            match conn::persist::schedule_persistent(
                &self.conns,
                self.worker,
                now,
                svc,
                sched,
                registry,
                live,
                &input,
                protocol,
            ) {
                Ok(p) => (p.dest_index, Some(p.template)),
                Err(PersistError::NoDestination) => return Err(DropReason::NoDestination),
                Err(PersistError::TableFull) => return Err(DropReason::TableFull),
            }
        } else {
            (
                sched
                    .schedule(&svc.dests, registry, &input)
                    .ok_or(DropReason::NoDestination)?,
                None,
            )
        };
        let dest = &svc.dests[index];
        let new = NewConn {
            protocol,
            client: ip.src,
            cport: sport,
            vaddr: ip.dst,
            vport: dport,
            daddr: dest.server.addr,
            dport: conn::persist::conn_dest_port(&svc.config, &dest.server, dport),
            method: dest.server.method,
            dest: dest.id,
            flags,
            template,
        };
        self.conns
            .insert(self.worker, now, new)
            .map_err(|_| DropReason::TableFull)
    }

    /// Rewrites a packet of a known connection for its forwarding method and addresses it
    /// to the next hop. (Always inlined into `flow`'s two calls: measured, 15 instructions a
    /// packet fewer than LLVM's own choice since the checksum step was added.)
    #[inline(always)]
    fn forward(
        &mut self,
        frame: &mut Frame<'_>,
        p: &Parsed,
        ip: &IpInfo,
        info: &ConnInfo,
        dir: Direction,
    ) -> Verdict {
        // A checksum a sender on this host left for the NIC to finish is finished here,
        // before any rewrite updates it (an update of a partial sum goes the wrong way)
        // and before a tunnel hides it.
        partial::complete(frame.data_mut(), p, ip);
        let counters = self.stats.dest(info.dest);
        let bytes = ip.len as u64;
        let result = match (dir, info.method) {
            (Direction::Reply, _) => {
                counters.out_pkts.add(1);
                counters.out_bytes.add(bytes);
                let hop = self.resolve(info.client);
                nat::snat(frame.data_mut(), p, info.vaddr, info.vport)
                    .and_then(|()| self.address_or_kernel(frame, hop))
            }
            (Direction::Original, method) => {
                counters.in_pkts.add(1);
                counters.in_bytes.add(bytes);
                self.send_to_real_server(frame, p, ip, info, method, false)
            }
        };
        sent(result)
    }

    /// Sends a client's packet (or an ICMP error about its connection, `relay`) to the
    /// connection's real server.
    #[inline]
    fn send_to_real_server(
        &mut self,
        frame: &mut Frame<'_>,
        p: &Parsed,
        ip: &IpInfo,
        info: &ConnInfo,
        method: ForwardMethod,
        relay: bool,
    ) -> Result<Sent, DropReason> {
        let hop = self.resolve_dest(info.dest, info.daddr);
        if method == ForwardMethod::Masquerade && hop == Err(DropReason::NoNeighbour) {
            // The rewritten packet is addressed to the real server: the kernel can route it
            // and resolve the neighbour meanwhile.
            if relay {
                icmp::nat_to_real_server(frame.data_mut(), p, info.daddr, info.dport)?;
            } else {
                nat::dnat(frame.data_mut(), p, info.daddr, info.dport)?;
            }
            return Ok(Sent::Kernel);
        }
        let nh = hop?;
        let overhead = match (method, ip.version) {
            (ForwardMethod::Tunnel, IpVersion::V4) => tun::IPV4_OVERHEAD,
            (ForwardMethod::Tunnel, IpVersion::V6) => tun::IPV6_OVERHEAD,
            _ => 0,
        };
        match tun::check_mtu(p, nh.mtu, overhead) {
            MtuVerdict::Fits => {}
            MtuVerdict::TooBig { mtu } => {
                return self.answer_too_big(frame, p, mtu).map(|()| Sent::Wire)
            }
            MtuVerdict::DropSilently => return Err(DropReason::TooBig),
        }
        match method {
            ForwardMethod::Masquerade => {
                if relay {
                    icmp::nat_to_real_server(frame.data_mut(), p, info.daddr, info.dport)?;
                } else {
                    nat::dnat(frame.data_mut(), p, info.daddr, info.dport)?;
                }
                address(frame, &nh);
            }
            ForwardMethod::DirectRouting => {
                mac::direct_route(frame.data_mut(), p, nh.src_mac.0, nh.mac.0)?;
                frame.set_egress(nh.dev);
            }
            ForwardMethod::Tunnel => {
                let src = self
                    .tunnel_source(info.daddr, &nh)
                    .ok_or(DropReason::NoRoute)?;
                let id = self.next_ip_id();
                let (buf, head, len) = frame.parts_mut();
                let (head, len) = tun::encapsulate(buf, head, len, p, src, info.daddr, id)?;
                frame.set_bounds(head, len);
                address(frame, &nh);
            }
        }
        Ok(Sent::Wire)
    }

    /// Answers the client that its packet does not fit the path (the frame becomes the
    /// ICMP error); the verdict is still Transmit.
    #[inline(never)]
    #[cold]
    fn answer_too_big(
        &mut self,
        frame: &mut Frame<'_>,
        p: &Parsed,
        mtu: u32,
    ) -> Result<(), DropReason> {
        let id = self.next_ip_id();
        let (buf, head, len) = frame.parts_mut();
        let (head, len) = tun::too_big_reply(buf, head, len, p, mtu, id)?;
        frame.set_bounds(head, len);
        // The answer leaves by the interface the packet came in on, from its own MAC.
        // Replay names no interface: its first (a one-armed director's only one).
        if let Some(own) = self.nexthops.device_mac(frame.ingress().unwrap_or(0)) {
            mac::set_macs(frame.data_mut(), own.0, p.src_mac);
        }
        Ok(())
    }

    fn tunnel_source(&self, daddr: IpAddr, nh: &NextHop) -> Option<IpAddr> {
        let configured = match daddr {
            IpAddr::V4(_) => self.settings.tunnel_source_v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.settings.tunnel_source_v6.map(IpAddr::V6),
        };
        configured.or(nh.src)
    }

    #[inline]
    fn resolve(&self, addr: IpAddr) -> Result<NextHop, DropReason> {
        let r = self.nexthops.resolve(addr);
        if r == Err(DropReason::NoNeighbour) {
            self.report_missing(addr);
        }
        r
    }

    /// [`Pipeline::resolve`] for real server `dest` at `addr`, through `dest_hops`.
    #[inline]
    fn resolve_dest(&mut self, dest: DestId, addr: IpAddr) -> Result<NextHop, DropReason> {
        if let Some(Some((cached, nh))) = self.dest_hops.get(dest.0 as usize) {
            if *cached == addr {
                return Ok(*nh);
            }
        }
        let nh = self.resolve(addr)?;
        if let Some(slot) = self.dest_hops.get_mut(dest.0 as usize) {
            *slot = Some((addr, nh));
        }
        Ok(nh)
    }

    #[inline(never)]
    #[cold]
    fn report_missing(&self, addr: IpAddr) {
        self.stats.unresolved.add(1);
        if let Some(tx) = &self.missing {
            let _ = tx.try_send(addr);
        }
    }

    /// An ICMP error: find the connection the quoted packet belongs to and relay the error
    /// along it, as `ip_vs_in_icmp` (toward the real server) and `ip_vs_out_icmp` (NAT,
    /// toward the client) do.
    #[inline(never)]
    fn icmp_error(&mut self, frame: &mut Frame<'_>, p: &Parsed, ip: &IpInfo) -> Verdict {
        let Some(q) = p.quoted(frame.data()) else {
            return Verdict::Pass;
        };
        let (Some(protocol), Some((qsport, qdport))) = (Protocol::from_number(q.protocol), q.ports)
        else {
            return self.not_ours(ip);
        };
        // The quoted packet went one way; the connection is keyed by the other end's packets.
        let key = FlowKey {
            protocol,
            src: q.dst,
            sport: qdport,
            dst: q.src,
            dport: qsport,
        };
        let Some(hit) = self.conns.lookup(&key) else {
            return self.not_ours(ip);
        };
        if !self.table.dest_is_live(hit.info.dest) {
            return Verdict::Drop(DropReason::DestinationRemoved);
        }
        let info = hit.info;
        let counters = self.stats.dest(info.dest);
        let result = match hit.dir {
            Direction::Original => {
                counters.in_pkts.add(1);
                counters.in_bytes.add(ip.len as u64);
                self.send_to_real_server(frame, p, ip, &info, info.method, true)
            }
            Direction::Reply => {
                counters.out_pkts.add(1);
                counters.out_bytes.add(ip.len as u64);
                let hop = self.resolve(info.client);
                icmp::nat_to_client(frame.data_mut(), p, info.vaddr, info.vport)
                    .and_then(|()| self.address_or_kernel(frame, hop))
            }
        };
        sent(result)
    }

    /// Addresses a rewritten frame to its next hop, or, when the next hop's MAC is not
    /// known yet, leaves the packet to the kernel, which routes it and resolves the
    /// neighbour meanwhile (the control thread has been told to have it resolved).
    #[inline]
    fn address_or_kernel(
        &self,
        frame: &mut Frame<'_>,
        hop: Result<NextHop, DropReason>,
    ) -> Result<Sent, DropReason> {
        match hop {
            Ok(nh) => {
                address(frame, &nh);
                Ok(Sent::Wire)
            }
            Err(DropReason::NoNeighbour) => Ok(Sent::Kernel),
            Err(reason) => Err(reason),
        }
    }

    /// An ICMP error about no connection of ours: dropped if it was addressed to a virtual
    /// address (nothing behind it can use it), else the kernel's.
    fn not_ours(&self, ip: &IpInfo) -> Verdict {
        if self.table.is_virtual_addr(ip.dst) {
            Verdict::Drop(DropReason::IcmpNoConnection)
        } else {
            Verdict::Pass
        }
    }
}

/// Where a rewritten frame goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Sent {
    /// Out of an interface, addressed to its next hop.
    Wire,
    /// To the kernel's IP output ([`Verdict::Pass`]): its next hop is not resolved yet.
    Kernel,
}

#[inline]
fn sent(result: Result<Sent, DropReason>) -> Verdict {
    match result {
        Ok(Sent::Wire) => Verdict::Transmit,
        Ok(Sent::Kernel) => Verdict::Pass,
        Err(reason) => Verdict::Drop(reason),
    }
}

impl Pipeline {
    /// Expires connections at most once per millisecond of the clock, looking at
    /// `expire_per_ms` slots for each millisecond that passed (the whole range after a
    /// jump of a second or more), so the sweep's cost follows time, not the packet rate.
    ///
    /// Timers are in milliseconds and every timeout is at least a second, so a sweep at
    /// the first batch of a millisecond finds everything a sweep at each batch would: with
    /// a budget of the whole range (replay) expiry is exactly as prompt as before. Between
    /// sweeps, `lookup_live` expires an overdue entry at the packet that finds it.
    fn sweep(&mut self, now: Instant) {
        let now_ms = now.as_micros() / 1000;
        let elapsed_ms = match self.swept_ms {
            Some(last) if last == now_ms && !self.reclaim_due => return,
            // A clock that went back (captures need not be in order) gets a full pass.
            Some(last) if last > now_ms => u64::MAX,
            Some(last) => (now_ms - last).max(1),
            None => 1,
        };
        let budget = usize::try_from(elapsed_ms)
            .unwrap_or(usize::MAX)
            .saturating_mul(self.expire_per_ms);
        self.conns.expire(self.worker, now, budget);
        self.swept_ms = Some(now_ms);
        self.reclaim_due = false;
    }
}

/// Addresses a rewritten frame to its next hop: source MAC the output interface's own
/// (never the one the frame was sent to, which may be a VRRP virtual MAC or a group
/// address), destination the next hop's, out of the next hop's interface.
#[inline]
fn address(frame: &mut Frame<'_>, nh: &NextHop) {
    mac::set_macs(frame.data_mut(), nh.src_mac.0, nh.mac.0);
    frame.set_egress(nh.dev);
}

/// Frames `process_batch` parses and prefetches for before it handles the first of them.
const PREFETCH_BATCH: usize = 64;
/// Live connections from which `process_batch` prefetches: 8 MiB of entries, more than a
/// core's share of the caches. Below it the table stays cached and the extra pass over
/// the batch (~140 instructions a packet) would cost more than it saves.
const PREFETCH_MIN_LIVE: usize = 1 << 16;

/// The connection-table key of a TCP or UDP packet (what `flow` looks up).
#[inline]
fn flow_key(p: &Parsed) -> Option<FlowKey> {
    let ip = p.ip.as_ref()?;
    let (protocol, sport, dport) = match ip.l4 {
        L4Info::Tcp {
            src_port, dst_port, ..
        } => (Protocol::Tcp, src_port, dst_port),
        L4Info::Udp { src_port, dst_port } => (Protocol::Udp, src_port, dst_port),
        _ => return None,
    };
    Some(FlowKey {
        protocol,
        src: ip.src,
        sport,
        dst: ip.dst,
        dport,
    })
}

impl Pipeline {
    #[inline]
    fn count(&self, verdict: Verdict) {
        match verdict {
            Verdict::Transmit => self.stats.tx.add(1),
            Verdict::Pass => self.stats.passed.add(1),
            Verdict::Drop(reason) => self.stats.count_drop(reason),
        }
    }
}

impl PacketProcessor for Pipeline {
    #[inline]
    fn process(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
        self.stats.rx.add(1);
        let verdict = if self.standby {
            Verdict::Drop(DropReason::Standby)
        } else {
            self.handle(now, frame)
        };
        self.count(verdict);
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
                    *h = flow_key(p).and_then(|k| self.conns.prefetch_index(&k));
                }
            }
            for h in hashes.iter().flatten() {
                self.conns.prefetch_entry(*h);
            }
            for ((frame, verdict), p) in frames.iter_mut().zip(verdicts.iter_mut()).zip(&parsed) {
                self.stats.rx.add(1);
                *verdict = self.handle_parsed(now, frame, p);
                self.count(*verdict);
            }
        }
    }

    fn between_batches(&mut self, now: Instant) {
        if let Some(flag) = &self.standby_flag {
            self.standby = flag.load(Ordering::Relaxed);
        }
        if let Some(rx) = &self.updates {
            if let Some(newest) = rx.try_iter().last() {
                self.install(newest);
            }
        }
        if let Some(rx) = &self.nexthop_updates {
            if let Some(newest) = rx.try_iter().last() {
                self.nexthops = newest;
                self.dest_hops.fill(None);
            }
        }
        self.sweep(now);
        for s in &mut self.scheds {
            s.housekeeping(now);
        }
        if let Some(s) = &mut self.sync {
            s.between_batches(&self.conns, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Publisher;
    use crate::service::config;
    use crate::wire::testkit::{self, Spec};
    use std::path::Path;

    const CONFIG: &str = "[director]\nconn_capacity = 1000\n\n[[service]]\nprotocol = \"udp\"\n\
        address = \"192.0.2.100\"\nport = 53\nscheduler = \"rr\"\n[[service.real]]\n\
        address = \"10.0.0.11\"\nport = 53\nweight = 1\nmethod = \"dr\"\n";

    fn pipeline(expire_budget: usize) -> (Pipeline, Arc<ConnTable>) {
        pipeline_of(CONFIG, expire_budget)
    }

    fn pipeline_of(text: &str, expire_budget: usize) -> (Pipeline, Arc<ConnTable>) {
        let config = config::parse(text, Path::new("t.toml")).unwrap();
        let registry = Arc::new(DestRegistry::default());
        let publisher = Publisher::new(config.clone(), Arc::clone(&registry)).unwrap();
        let conns = Arc::new(ConnTable::with_seed(1000, 1, Arc::clone(&registry), 7));
        let routes = NextHops::parse_routes(
            "10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.1\n",
            "t",
        )
        .unwrap();
        // 10.0.0.11-13 at 02:00:00:00:01:11-13.
        let neigh: Vec<_> = (11..=13u8)
            .map(|n| (IpAddr::from([10, 0, 0, n]), MacAddr([2, 0, 0, 0, 1, n + 6])))
            .collect();
        let links = [("eth0".to_string(), MacAddr(testkit::DIRECTOR_MAC))];
        let stats = Arc::new(WorkerStats::new(registry.capacity()));
        let settings = PipelineSettings {
            expire_budget,
            ..PipelineSettings::default()
        };
        let p = Pipeline::new(
            0,
            publisher.table(),
            Arc::clone(&conns),
            Arc::new(NextHops::with_links(&links, routes, neigh)),
            stats,
            settings,
        );
        (p, conns)
    }

    fn open_flows(p: &mut Pipeline, now: Instant, n: u16) {
        for i in 0..n {
            let mut f = Spec::udp("198.51.100.7", "192.0.2.100", 10_000 + i, 53).frame();
            let len = f.len();
            let mut frame = Frame::new(&mut f, 0, len);
            assert_eq!(p.process(now, &mut frame), Verdict::Transmit);
        }
    }

    const MS: u64 = 1000;

    /// A TCP mh service over three DR real servers, `sloppy_tcp` as given.
    fn mh_config(sloppy: bool) -> String {
        let mut t = format!(
            "[director]\nsloppy_tcp = {sloppy}\n\n[[service]]\nprotocol = \"tcp\"\n\
             address = \"192.0.2.100\"\nport = 80\nscheduler = \"mh\"\n"
        );
        for n in 11..=13 {
            t += &format!("[[service.real]]\naddress = \"10.0.0.{n}\"\nmethod = \"dr\"\n");
        }
        t
    }

    /// Sends one TCP segment from client 198.51.100.`c`, port `cport`; the real server's
    /// last MAC byte, or `None` when dropped for want of a connection.
    fn segment(p: &mut Pipeline, c: u8, cport: u16, syn: bool, ack: bool, rst: bool) -> Option<u8> {
        let client = format!("198.51.100.{c}");
        let mut spec = Spec::tcp(&client, "192.0.2.100", cport, 80);
        spec.l4 = crate::wire::testkit::L4::Tcp {
            sport: cport,
            dport: 80,
            syn,
            ack,
            fin: false,
            rst,
        };
        let mut f = spec.frame();
        let len = f.len();
        match p.process(Instant::from_secs(10), &mut Frame::new(&mut f, 0, len)) {
            Verdict::Transmit => Some(f[5]),
            Verdict::Drop(DropReason::NoConnection) => None,
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn sloppy_tcp_continues_a_flow_another_director_opened_on_the_same_server() {
        let (mut first, _) = pipeline_of(&mh_config(false), EXPIRE_BUDGET_AUTO);
        let (mut second, conns) = pipeline_of(&mh_config(true), EXPIRE_BUDGET_AUTO);
        let (mut strict, _) = pipeline_of(&mh_config(false), EXPIRE_BUDGET_AUTO);
        let mut seen = [false; 3];
        for c in 1..=64u8 {
            let cport = 40_000 + u16::from(c);
            let server = segment(&mut first, c, cport, true, false, false).unwrap();
            seen[usize::from(server - 0x11)] = true;
            // The flow moves: its next ACK reaches a director that never saw the SYN.
            assert_eq!(segment(&mut strict, c, cport, false, true, false), None);
            assert_eq!(
                segment(&mut second, c, cport, false, true, false),
                Some(server)
            );
            let key = FlowKey {
                protocol: Protocol::Tcp,
                src: IpAddr::from([198, 51, 100, c]),
                sport: cport,
                dst: "192.0.2.100".parse().unwrap(),
                dport: 80,
            };
            let hit = conns.lookup(&key).unwrap();
            assert_eq!(hit.info.state, TcpState::Established);
            assert_eq!(
                segment(&mut second, c, cport, false, true, false),
                Some(server)
            );
        }
        assert_eq!(seen, [true; 3], "the clients spread over every server");
        // A RST never opens a connection, sloppy or not.
        assert_eq!(segment(&mut second, 200, 50_000, false, true, true), None);
        assert_eq!(segment(&mut second, 201, 50_001, true, false, true), None);
    }

    #[test]
    fn a_standby_drops_everything_from_the_next_batch_until_it_forwards_again() {
        let (p, conns) = pipeline(EXPIRE_BUDGET_AUTO);
        let flag = Arc::new(AtomicBool::new(true));
        let mut p = p.with_standby(Arc::clone(&flag));
        let now = Instant::from_secs(1);
        let send = |p: &mut Pipeline, sport: u16| {
            let mut f = Spec::udp("198.51.100.7", "192.0.2.100", sport, 53).frame();
            let len = f.len();
            p.process(now, &mut Frame::new(&mut f, 0, len))
        };
        // A standby from its first packet: nothing is scheduled, nothing forwarded.
        assert_eq!(send(&mut p, 1000), Verdict::Drop(DropReason::Standby));
        assert_eq!(conns.len(), 0);
        // MASTER: the flag drops, the pipeline follows between batches.
        flag.store(false, Ordering::Relaxed);
        assert_eq!(send(&mut p, 1001), Verdict::Drop(DropReason::Standby));
        p.between_batches(now);
        assert_eq!(send(&mut p, 1001), Verdict::Transmit);
        // Standby again: even a packet of a known connection is dropped.
        flag.store(true, Ordering::Relaxed);
        p.between_batches(now);
        assert_eq!(send(&mut p, 1001), Verdict::Drop(DropReason::Standby));
        let mut f = Spec::udp("198.51.100.7", "192.0.2.100", 1002, 53).frame();
        let len = f.len();
        let mut frames = [Frame::new(&mut f, 0, len)];
        let mut verdicts = [Verdict::Pass];
        p.process_batch(now, &mut frames, &mut verdicts);
        assert_eq!(verdicts, [Verdict::Drop(DropReason::Standby)]);
        assert_eq!(p.stats().drops[DropReason::Standby as usize].get(), 4);
        assert_eq!(conns.len(), 1);
    }

    #[test]
    fn a_packet_for_the_kernel_leaves_with_its_partial_checksum_finished() {
        let (mut p, _) = pipeline(EXPIRE_BUDGET_AUTO);
        // A real server's answer to a client that reached it directly (no service): the
        // kernel's IP output sends it as it is, so the checksum must be whole.
        let whole = Spec::tcp("10.0.0.11", "198.51.100.7", 80, 40000).frame();
        let parsed = wire::parse_frame(&whole).unwrap();
        let ip = parsed.ip.unwrap();
        let field = ip.l4_offset + crate::wire::tcp::CHECKSUM_OFFSET;
        let length = (parsed.l3_offset + ip.len - ip.l4_offset) as u32;
        let pseudo = crate::wire::checksum::pseudo_header(&ip.src, &ip.dst, ip.protocol, length);
        let mut f = whole.clone();
        f[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
        assert_ne!(
            f, whole,
            "the test needs a partial field that differs from the whole one"
        );
        let len = f.len();
        let verdict = p.process(Instant::from_secs(1), &mut Frame::new(&mut f, 0, len));
        assert_eq!(verdict, Verdict::Pass);
        assert_eq!(f, whole);
    }

    #[test]
    fn a_batch_gives_what_frame_by_frame_gives() {
        let mut frames: Vec<Vec<u8>> = Vec::new();
        for i in 0..150u16 {
            // New flows, packets of flows already seen, a service-less port, a damaged
            // IPv4 header, a non-IP frame.
            let mut f = Spec::udp("198.51.100.7", "192.0.2.100", 10_000 + i % 40, 53).frame();
            match i % 10 {
                7 => f = Spec::udp("198.51.100.7", "192.0.2.100", 1, 54).frame(),
                8 => f[14 + 10] ^= 1,
                9 => f[12] = 0x88,
                _ => {}
            }
            frames.push(f);
        }
        let (mut one, _) = pipeline(EXPIRE_BUDGET_AUTO);
        let (mut batched, _) = pipeline(EXPIRE_BUDGET_AUTO);
        // Take the prefetching path, meant for large tables, with this small one.
        batched.prefetch_min_live = 0;
        let now = Instant::from_secs(100);
        let mut by_one = frames.clone();
        let expected: Vec<Verdict> = by_one
            .iter_mut()
            .map(|f| {
                let len = f.len();
                one.process(now, &mut Frame::new(f, 0, len))
            })
            .collect();
        let mut by_batch = frames.clone();
        let mut views: Vec<Frame<'_>> = by_batch
            .iter_mut()
            .map(|f| {
                let len = f.len();
                Frame::new(f, 0, len)
            })
            .collect();
        let mut verdicts = vec![Verdict::Pass; views.len()];
        batched.process_batch(now, &mut views, &mut verdicts);
        drop(views);
        assert_eq!(verdicts, expected);
        assert_eq!(by_batch, by_one);
        assert!(expected.contains(&Verdict::Transmit) && expected.contains(&Verdict::Pass));
        assert!(expected.contains(&Verdict::Drop(DropReason::Malformed)));
        assert_eq!(batched.stats().rx.get(), one.stats().rx.get());
        assert_eq!(batched.stats().tx.get(), one.stats().tx.get());
    }

    #[test]
    fn only_frames_for_the_director_are_balanced_and_leave_from_its_own_mac() {
        let (p, _conns) = pipeline(EXPIRE_BUDGET_AUTO);
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut p = p.with_nexthop_updates(rx);
        let now = Instant::from_secs(10);
        let send = |p: &mut Pipeline, dst: [u8; 6], ingress: Option<u16>, sport: u16| {
            let mut f = Spec::udp("198.51.100.7", "192.0.2.100", sport, 53).frame();
            f[..6].copy_from_slice(&dst);
            let len = f.len();
            let mut frame = Frame::new(&mut f, 0, len);
            if let Some(i) = ingress {
                frame.set_ingress(i);
            }
            let v = p.process(now, &mut frame);
            (v, <[u8; 6]>::try_from(&f[6..12]).unwrap())
        };
        let other = [2, 0, 0, 0, 0, 0x99];
        let vmac = [0, 0, 0x5e, 0, 1, 0x33];
        assert_eq!(
            send(&mut p, other, None, 1000).0,
            Verdict::Drop(DropReason::OtherHost)
        );
        assert_eq!(
            send(&mut p, vmac, Some(0), 1001).0,
            Verdict::Drop(DropReason::OtherHost)
        );
        assert_eq!(p.stats().drops[DropReason::OtherHost as usize].get(), 2);
        assert_eq!(
            send(&mut p, testkit::DIRECTOR_MAC, Some(0), 1002),
            (Verdict::Transmit, testkit::DIRECTOR_MAC)
        );
        // Broadcast is taken, and the frame leaves from eth0's MAC, not from ff:ff:...
        assert_eq!(
            send(&mut p, [0xff; 6], None, 1003),
            (Verdict::Transmit, testkit::DIRECTOR_MAC)
        );
        // A listed virtual MAC is taken too; the source is still the interface's own.
        let mut t = NextHops::clone(&p.nexthops);
        t.set_extra_macs(&[MacAddr(vmac)]);
        tx.send(Arc::new(t)).unwrap();
        p.between_batches(now);
        assert_eq!(
            send(&mut p, vmac, Some(0), 1004),
            (Verdict::Transmit, testkit::DIRECTOR_MAC)
        );
        assert_eq!(
            send(&mut p, other, Some(0), 1005).0,
            Verdict::Drop(DropReason::OtherHost)
        );
    }

    #[test]
    fn next_hops_of_real_servers_follow_table_updates() {
        let (p, _conns) = pipeline(EXPIRE_BUDGET_AUTO);
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut p = p.with_nexthop_updates(rx);
        let now = Instant::from_secs(10);
        let send = |p: &mut Pipeline| {
            let mut f = Spec::udp("198.51.100.7", "192.0.2.100", 10_000, 53).frame();
            let len = f.len();
            let mut frame = Frame::new(&mut f, 0, len);
            assert_eq!(p.process(now, &mut frame), Verdict::Transmit);
            <[u8; 6]>::try_from(&f[..6]).unwrap()
        };
        assert_eq!(send(&mut p), [2, 0, 0, 0, 1, 0x11]);
        assert_eq!(send(&mut p), [2, 0, 0, 0, 1, 0x11]);
        // The real server's MAC changes: the next batch uses the new tables, not the cache.
        let routes = NextHops::parse_routes(
            "10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.1\n",
            "t",
        )
        .unwrap();
        let neigh = vec![("10.0.0.11".parse().unwrap(), MacAddr([2, 0, 0, 0, 9, 9]))];
        let links = [("eth0".to_string(), MacAddr(testkit::DIRECTOR_MAC))];
        tx.send(Arc::new(NextHops::with_links(&links, routes, neigh)))
            .unwrap();
        p.between_batches(now);
        assert_eq!(send(&mut p), [2, 0, 0, 0, 9, 9]);
    }

    #[test]
    fn expiry_sweeps_once_per_millisecond_with_a_paced_budget() {
        // 1000 slots: the derived budget is the minimum, 64 slots per millisecond.
        let (mut p, conns) = pipeline(EXPIRE_BUDGET_AUTO);
        assert_eq!(p.expire_per_ms, MIN_EXPIRE_BUDGET);
        let t0 = 1_000_000 * MS;
        // The first sweep looks at slots 0..64 and leaves the hand at 64.
        p.between_batches(Instant::from_micros(t0));
        open_flows(&mut p, Instant::from_micros(t0), 200);
        assert_eq!(conns.len(), 200);
        // UDP lasts 300 s. A jump of more than a second is a full pass: nothing is due yet,
        // and a full pass leaves the hand where it was.
        let due = t0 + 300_000 * MS;
        p.between_batches(Instant::from_micros(due - MS));
        assert_eq!(conns.len(), 200);
        // One millisecond later: one millisecond's budget, slots 64..128.
        p.between_batches(Instant::from_micros(due));
        assert_eq!(conns.len(), 200 - 64);
        // Later batches in the same millisecond do not sweep.
        p.between_batches(Instant::from_micros(due + 999));
        assert_eq!(conns.len(), 200 - 64);
        // The next millisecond takes slots 128..192.
        p.between_batches(Instant::from_micros(due + MS));
        assert_eq!(conns.len(), 200 - 128);
        // Two seconds on, a full pass clears the rest.
        p.between_batches(Instant::from_micros(due + 2000 * MS));
        assert_eq!(conns.len(), 0);
    }

    #[test]
    fn a_budget_of_the_whole_table_expires_everything_on_time() {
        let (mut p, conns) = pipeline(1000);
        let t0 = 5_000 * MS;
        p.between_batches(Instant::from_micros(t0));
        open_flows(&mut p, Instant::from_micros(t0), 300);
        let due = t0 + 300_000 * MS;
        p.between_batches(Instant::from_micros(due - 1));
        assert_eq!(conns.len(), 300);
        p.between_batches(Instant::from_micros(due));
        assert_eq!(conns.len(), 0);
    }
}
