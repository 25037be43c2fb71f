//! TCP and UDP: the flow key, the connection lookup, and scheduling a new connection
//! (persistence template first, then the service's scheduler), as `ip_vs_in` and
//! `ip_vs_schedule` do.

use super::Pipeline;
use crate::conn::persist::{self, PersistError};
use crate::conn::{ConnId, Direction, FlowKey, Hit, NewConn, TcpFlags, TcpState};
use crate::datapath::{Frame, Verdict};
use crate::forward::partial;
use crate::sched::SchedInput;
use crate::service::{DestRegistry, Protocol, ServiceId};
use crate::stats::DropReason;
use crate::time::Instant;
use crate::wire::{IpInfo, L4Info, Parsed};

/// The connection-table key of a TCP or UDP packet, with the TCP flags; `None` for any
/// other protocol. Built here only, for the lookup and for the batch's prefetch.
#[inline]
pub(super) fn flow_key(ip: &IpInfo) -> Option<(FlowKey, Option<TcpFlags>)> {
    let (protocol, sport, dport, flags) = match ip.l4 {
        L4Info::Tcp {
            src_port,
            dst_port,
            flags,
        } => (Protocol::Tcp, src_port, dst_port, Some(flags)),
        L4Info::Udp { src_port, dst_port } => (Protocol::Udp, src_port, dst_port, None),
        _ => return None,
    };
    let key = FlowKey {
        protocol,
        src: ip.src,
        sport,
        dst: ip.dst,
        dport,
    };
    Some((key, flags))
}

impl Pipeline {
    /// A TCP or UDP packet of flow `key`: a packet of a known connection is forwarded
    /// along it; one that may open a connection to a service is scheduled; anything else
    /// is the kernel's, or dropped. A fragment comes here only as a first fragment, from
    /// `frag.rs`, which records where it went for the fragments after it.
    #[inline]
    pub(super) fn flow(
        &mut self,
        now: Instant,
        frame: &mut Frame<'_>,
        p: &Parsed,
        ip: &IpInfo,
        key: &FlowKey,
        flags: Option<TcpFlags>,
    ) -> Verdict {
        if let Some(hit) = self.conns.lookup_live(key, now) {
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
                self.conns.on_packet(hit.id, hit.dir, flags, now);
                if hit.dir == Direction::Original {
                    self.synced(hit.id, now);
                }
                return self.forward(frame, p, ip, &hit.info, hit.dir);
            }
        }
        let Some(sid) = self.table.find(key.protocol, key.dst, key.dport) else {
            // Not ours: the kernel's IP output sends the bytes as they are (a NAT real
            // server answering a client that reached it directly), so a checksum its
            // sender left partial is finished here, as for a forwarded packet.
            partial::complete(frame.data_mut(), p, ip);
            return Verdict::Pass;
        };
        if flags.is_some_and(|f| f.rst() || !(f.syn() || self.table.sloppy_tcp)) {
            // Only a SYN opens a TCP connection, or with sloppy_tcp any packet but a RST
            // (tcp_conn_schedule); UDP always may.
            return Verdict::Drop(DropReason::NoConnection);
        }
        // drop_packet: while the table is nearly full, one new connection in the rate the
        // control thread set is refused before it is scheduled (`ip_vs_todrop` in the
        // protocols' conn_schedule).
        if self
            .drop_counter
            .refuse(self.conns.defence().load().drop_rate)
        {
            return Verdict::Drop(DropReason::DefenceDropPacket);
        }
        let hit = match self.schedule(now, sid, key, flags) {
            Ok(hit) => hit,
            Err(reason) => return Verdict::Drop(reason),
        };
        self.stats.dest(hit.info.dest).conns.add(1);
        self.synced(hit.id, now);
        self.forward(frame, p, ip, &hit.info, Direction::Original)
    }

    /// A packet from the client of connection `id` went through the table: the sync hook
    /// decides whether the connection is to be sent (`ip_vs_in` calling `ip_vs_sync_conn`),
    /// counting the packet in the entry's `in_pkts`; while no sync master counts, the
    /// packet is counted here if the `drop_entry` defence is set (as read between
    /// batches), for its walk to judge the entry by. Always inlined: the hook's fast path is a few loads and an add, less
    /// than a call and the registers it saves (`bench-results/sync.md`).
    #[inline(always)]
    fn synced(&mut self, id: ConnId, now: Instant) {
        if let Some(s) = &mut self.sync {
            if s.counts_packets() {
                s.after_client_packet(&self.conns, id, now);
                return;
            }
        }
        if self.count_in_pkts {
            self.conns.count_in_packet(id);
        }
    }

    /// Picks a real server for a new connection (persistence template first, then the
    /// scheduler) and records the connection.
    #[inline(never)]
    fn schedule(
        &mut self,
        now: Instant,
        sid: ServiceId,
        key: &FlowKey,
        flags: Option<TcpFlags>,
    ) -> Result<Hit, DropReason> {
        let table = &self.table;
        let svc = table.service(sid);
        let sched = self.scheds[sid.0 as usize].as_mut();
        let registry: &DestRegistry = self.conns.registry();
        let input = SchedInput {
            client: key.src,
            client_port: key.sport,
            vaddr: key.dst,
            vport: key.dport,
            now,
        };
        let (index, template) = if svc.config.persistence.is_some() {
            let live = |d| table.dest_is_live(d);
            match persist::schedule_persistent(
                &self.conns,
                self.worker,
                now,
                svc,
                sched,
                registry,
                live,
                &input,
                key.protocol,
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
            protocol: key.protocol,
            client: key.src,
            cport: key.sport,
            vaddr: key.dst,
            vport: key.dport,
            daddr: dest.server.addr,
            dport: persist::conn_dest_port(&svc.config, &dest.server, key.dport),
            method: dest.server.method,
            dest: dest.id,
            flags,
            template,
        };
        self.conns
            .insert(self.worker, now, new)
            .map_err(|_| DropReason::TableFull)
    }
}
