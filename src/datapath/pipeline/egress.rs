//! A packet of a connection leaves: rewritten for its forwarding method (NAT, DR, tunnel),
//! checked against the path MTU, addressed to the next hop.

use std::net::IpAddr;

use super::Pipeline;
use crate::conn::{ConnInfo, Direction};
use crate::datapath::{Frame, Verdict};
use crate::forward::nexthop::{MacAddr, NextHop};
use crate::forward::tun::{self, MtuVerdict};
use crate::forward::{icmp, mac, nat, partial};
use crate::service::{DestId, ForwardMethod};
use crate::stats::DropReason;
use crate::wire::{IpInfo, IpVersion, Parsed};

impl Pipeline {
    fn next_ip_id(&mut self) -> u16 {
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ip_id
    }

    /// Rewrites a packet of a known connection for its forwarding method and addresses it
    /// to the next hop. (Always inlined into `flow`'s two calls: measured, 15 instructions a
    /// packet fewer than LLVM's own choice since the checksum step was added.)
    #[inline(always)]
    pub(super) fn forward(
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
    pub(super) fn send_to_real_server(
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
        // The next hop is read where it is kept, not copied out (a copy and a `Result` of
        // it cost ~30 instructions a packet on `est_dr_v4_1k`).
        let at = hop?;
        let overhead = match (method, ip.version) {
            (ForwardMethod::Tunnel, IpVersion::V4) => tun::IPV4_OVERHEAD,
            (ForwardMethod::Tunnel, IpVersion::V6) => tun::IPV6_OVERHEAD,
            _ => 0,
        };
        match tun::check_mtu(p, self.dest_hops[at].hop.mtu, overhead) {
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
                address(frame, &self.dest_hops[at].hop);
            }
            ForwardMethod::DirectRouting => {
                let nh = &self.dest_hops[at].hop;
                mac::direct_route(frame.data_mut(), p, nh.src_mac.0, nh.mac.0)?;
                frame.set_egress(nh.dev);
            }
            ForwardMethod::Tunnel => {
                let src = self
                    .tunnel_source(info.daddr, &self.dest_hops[at].hop)
                    .ok_or(DropReason::NoRoute)?;
                let id = self.next_ip_id();
                tun::encapsulate(frame, p, src, info.daddr, id)?;
                address(frame, &self.dest_hops[at].hop);
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
        tun::too_big_reply(frame, p, mtu, id)?;
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
    pub(super) fn resolve(&self, addr: IpAddr) -> Result<NextHop, DropReason> {
        let r = self.nexthops.resolve(addr);
        if r == Err(DropReason::NoNeighbour) {
            self.report_missing(addr);
        }
        r
    }

    /// [`Pipeline::resolve`] for real server `dest` at `addr`, through `dest_hops`: the
    /// index in `dest_hops` where the next hop now is. An id outside the registry (never
    /// handed out) uses the spare last entry, so it is resolved every time.
    #[inline]
    fn resolve_dest(&mut self, dest: DestId, addr: IpAddr) -> Result<usize, DropReason> {
        let at = (dest.0 as usize).min(self.dest_hops.len() - 1);
        let cached = &self.dest_hops[at];
        if cached.valid && cached.addr == addr {
            return Ok(at);
        }
        let hop = self.resolve(addr)?;
        self.dest_hops[at] = DestHop {
            valid: true,
            addr,
            hop,
        };
        Ok(at)
    }

    #[inline(never)]
    #[cold]
    fn report_missing(&self, addr: IpAddr) {
        self.stats.unresolved.add(1);
        if let Some(tx) = &self.missing {
            let _ = tx.try_send(addr);
        }
    }

    /// Addresses a rewritten frame to its next hop, or, when the next hop's MAC is not
    /// known yet, leaves the packet to the kernel, which routes it and resolves the
    /// neighbour meanwhile (the control thread has been told to have it resolved).
    #[inline]
    pub(super) fn address_or_kernel(
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
}

/// The next hop toward one real server, with the address it was resolved for, as IPVS
/// keeps `dest_dst` in the destination.
#[derive(Copy, Clone, Debug)]
pub(super) struct DestHop {
    /// Whether `hop` holds a resolution (failures are not kept: they are reported anew).
    pub(super) valid: bool,
    /// The real server's address `hop` was resolved for.
    pub(super) addr: IpAddr,
    /// Where frames to `addr` go.
    pub(super) hop: NextHop,
}

impl DestHop {
    /// No resolution yet.
    pub(super) const EMPTY: DestHop = DestHop {
        valid: false,
        addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        hop: NextHop {
            mac: MacAddr([0; 6]),
            src_mac: MacAddr([0; 6]),
            dev: 0,
            src: None,
            mtu: 0,
        },
    };
}

/// Where a rewritten frame goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Sent {
    /// Out of an interface, addressed to its next hop.
    Wire,
    /// To the kernel's IP output ([`Verdict::Pass`]): its next hop is not resolved yet.
    Kernel,
}

#[inline]
pub(super) fn sent(result: Result<Sent, DropReason>) -> Verdict {
    match result {
        Ok(Sent::Wire) => Verdict::Transmit,
        Ok(Sent::Kernel) => Verdict::Pass,
        Err(reason) => Verdict::Drop(reason),
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
