//! ICMP errors about a connection, relayed along it as `ip_vs_in_icmp` (toward the real
//! server) and `ip_vs_out_icmp` (NAT, toward the client) do; and what is not ours.

use super::egress::sent;
use super::Pipeline;
use crate::conn::{Direction, FlowKey};
use crate::datapath::{Frame, Verdict};
use crate::forward::icmp;
use crate::service::Protocol;
use crate::stats::DropReason;
use crate::wire::{IpInfo, Parsed};

impl Pipeline {
    /// An ICMP error: find the connection the quoted packet belongs to and relay the error
    /// along it, as `ip_vs_in_icmp` (toward the real server) and `ip_vs_out_icmp` (NAT,
    /// toward the client) do.
    #[inline(never)]
    pub(super) fn icmp_error(&mut self, frame: &mut Frame<'_>, p: &Parsed, ip: &IpInfo) -> Verdict {
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
