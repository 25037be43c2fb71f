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
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::{Frame, PacketProcessor, Verdict};
use crate::conn::persist::PersistError;
use crate::conn::{self, ConnInfo, ConnTable, Direction, FlowKey, Hit, NewConn, TcpState};
use crate::forward::nexthop::{NextHop, NextHops};
use crate::forward::tun::{self, MtuVerdict};
use crate::forward::{icmp, mac, nat};
use crate::sched::{self, RoundRobin, SchedInput, Scheduler};
use crate::service::{DestRegistry, ForwardMethod, Protocol, ServiceId, ServiceTable};
use crate::stats::{DropReason, WorkerStats};
use crate::time::Instant;
use crate::wire::{self, IcmpInfo, IpInfo, IpVersion, L4Info, Parsed};

/// Settings of a pipeline that do not change with the service table.
#[derive(Copy, Clone, Debug)]
pub struct PipelineSettings {
    /// Outer source of IPv4 tunnel packets; the route's preferred source when `None`.
    pub tunnel_source_v4: Option<Ipv4Addr>,
    /// Outer source of IPv6 tunnel packets; the route's preferred source when `None`.
    pub tunnel_source_v6: Option<Ipv6Addr>,
    /// Connection-table slots `between_batches` examines for expiry each time.
    pub expire_budget: usize,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            tunnel_source_v4: None,
            tunnel_source_v6: None,
            expire_budget: 256,
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
    stats: Arc<WorkerStats>,
    settings: PipelineSettings,
    /// IPv4 identification for packets this worker originates (tunnel headers, ICMP).
    ip_id: u16,
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
        Pipeline {
            worker,
            table,
            scheds,
            updates: None,
            nexthop_updates: None,
            missing: None,
            conns,
            nexthops,
            stats,
            settings,
            ip_id: 0,
        }
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

    /// Switches to a new snapshot. Schedulers of services that remain are updated (lblc and
    /// lblcr keep their maps, the others start afresh as the kernel's do on any change).
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
        let p = match wire::parse_frame(frame.data()) {
            Ok(p) => p,
            Err(_) => return Verdict::Drop(DropReason::Malformed),
        };
        let Some(ip) = p.ip else { return Verdict::Pass };
        match ip.l4 {
            L4Info::Tcp {
                src_port,
                dst_port,
                flags,
            } => self.flow(
                now,
                frame,
                &p,
                &ip,
                Protocol::Tcp,
                src_port,
                dst_port,
                Some(flags),
            ),
            L4Info::Udp { src_port, dst_port } => {
                self.flow(now, frame, &p, &ip, Protocol::Udp, src_port, dst_port, None)
            }
            L4Info::Icmp(icmp) if icmp.quoted.is_some() && icmp.relayed_by_ipvs(ip.version) => {
                self.icmp_error(frame, &p, &ip, &icmp)
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
                if !syn {
                    return Verdict::Drop(DropReason::DestinationRemoved);
                }
            } else if syn && matches!(hit.info.state, TcpState::TimeWait | TcpState::Close) {
                // A new connection reusing the ports of one that has closed: IPVS
                // (conn_reuse_mode 1) expires the old entry and schedules the SYN anew.
                self.conns.expire_now(hit.id);
            } else {
                if ip.fragment {
                    return Verdict::Drop(DropReason::Fragment);
                }
                self.conns.on_packet(hit.id, hit.dir, flags, now);
                return self.forward(frame, p, ip, &hit.info, hit.dir);
            }
        }
        let Some(sid) = self.table.find(protocol, ip.dst, dport) else {
            return Verdict::Pass;
        };
        if ip.fragment {
            return Verdict::Drop(DropReason::Fragment);
        }
        if flags.is_some_and(|f| !f.syn()) {
            // sloppy_tcp off: only a SYN opens a TCP connection.
            return Verdict::Drop(DropReason::NoConnection);
        }
        let hit = match self.schedule(now, sid, ip, protocol, sport, dport, flags) {
            Ok(hit) => hit,
            Err(reason) => return Verdict::Drop(reason),
        };
        self.stats.dest(hit.info.dest).conns.add(1);
        self.forward(frame, p, ip, &hit.info, Direction::Original)
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
    /// to the next hop.
    #[inline]
    fn forward(
        &mut self,
        frame: &mut Frame<'_>,
        p: &Parsed,
        ip: &IpInfo,
        info: &ConnInfo,
        dir: Direction,
    ) -> Verdict {
        let counters = self.stats.dest(info.dest);
        let bytes = ip.len as u64;
        let result = match (dir, info.method) {
            (Direction::Reply, _) => {
                counters.out_pkts.add(1);
                counters.out_bytes.add(bytes);
                let hop = self.resolve(info.client);
                nat::snat(frame.data_mut(), p, info.vaddr, info.vport)
                    .and_then(|()| self.address_or_kernel(frame, p, hop))
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
        let hop = self.resolve(info.daddr);
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
                address(frame, p, &nh);
            }
            ForwardMethod::DirectRouting => {
                mac::direct_route(frame.data_mut(), p, p.dst_mac, nh.mac.0)?;
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
                address(frame, p, &nh);
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
    fn icmp_error(
        &mut self,
        frame: &mut Frame<'_>,
        p: &Parsed,
        ip: &IpInfo,
        icmp: &IcmpInfo,
    ) -> Verdict {
        let Some(q) = icmp.quoted else {
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
                    .and_then(|()| self.address_or_kernel(frame, p, hop))
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
        p: &Parsed,
        hop: Result<NextHop, DropReason>,
    ) -> Result<Sent, DropReason> {
        match hop {
            Ok(nh) => {
                address(frame, p, &nh);
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

/// Addresses a rewritten frame to its next hop: source MAC the one the frame was sent to
/// (the director's), destination the next hop's, out of the next hop's interface.
#[inline]
fn address(frame: &mut Frame<'_>, p: &Parsed, nh: &NextHop) {
    mac::set_macs(frame.data_mut(), p.dst_mac, nh.mac.0);
    frame.set_egress(nh.dev);
}

impl PacketProcessor for Pipeline {
    #[inline]
    fn process(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
        self.stats.rx.add(1);
        let verdict = self.handle(now, frame);
        match verdict {
            Verdict::Transmit => self.stats.tx.add(1),
            Verdict::Pass => self.stats.passed.add(1),
            Verdict::Drop(reason) => self.stats.count_drop(reason),
        }
        verdict
    }

    fn between_batches(&mut self, now: Instant) {
        if let Some(rx) = &self.updates {
            if let Some(newest) = rx.try_iter().last() {
                self.install(newest);
            }
        }
        if let Some(rx) = &self.nexthop_updates {
            if let Some(newest) = rx.try_iter().last() {
                self.nexthops = newest;
            }
        }
        self.conns
            .expire(self.worker, now, self.settings.expire_budget);
        for s in &mut self.scheds {
            s.housekeeping(now);
        }
    }
}
