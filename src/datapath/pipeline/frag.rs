//! IP fragments of TCP and UDP: the first fragment is scheduled by its ports like any
//! packet; the later ones follow it to the same real server by (source, destination,
//! protocol, IP ID), through a small fixed table of the datagrams in flight.
//!
//! IPVS lets the kernel's defragmentation reassemble a datagram before it schedules it
//! (`ip_vs_gather_frags` for IPv4; for IPv6 it follows the first fragment by conntrack).
//! fastlb has no reassembly in front of it and keeps no fragment data: it forwards each
//! fragment as it comes (rewritten for NAT: the address in every fragment, the port and the
//! checksum, which covers the whole datagram, in the first one only) and the real server
//! reassembles. Why, and what differs, in `docs/decisions.md` ("Fragments").
//!
//! - The table ([`FragTable`]) has [`FRAG_SLOTS`] entries per worker, allocated once; an
//!   entry is found within [`FRAG_PROBE`] slots of its hash. An entry is freed when its
//!   datagram is complete (the bytes seen reach the length the last fragment gives) and
//!   otherwise lives [`FRAG_TIMEOUT`] from its first fragment, as the kernel's
//!   `ipfrag_time` bounds a reassembly queue; an entry that expires incomplete is counted
//!   (`fragment_timeouts`) when its slot is looked at again.
//! - A first fragment that finds no free slot is dropped (`fragment_table_full`): sent
//!   alone, its datagram could never complete. The kernel likewise drops fragments while its
//!   reassembly memory is over `ipfrag_high_thresh`.
//! - A later fragment to a virtual address that arrives before its first one (reordered)
//!   is copied into a small pool ([`hold`]) and sent as soon as its first fragment has
//!   gone out, the same way and with the same rewrite, after the frames of that batch
//!   ([`Pipeline::emit_held`], which the backend calls through
//!   `PacketProcessor::emit`). One whose first fragment never comes (lost or refused) is
//!   dropped after [`hold::HOLD_TIMEOUT`] (`fragment_no_first`), and so is one the pool has
//!   no room for. A later fragment to another address with no entry (a NAT real server's
//!   reply, reordered) goes to the kernel.
//! - A first fragment too short to hold its ports, an IPv6 fragment whose Fragment header
//!   cannot be found, and a TCP fragment at offset 8 (RFC 1858: it can only be there to
//!   overwrite the TCP header) are dropped as `fragment`.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::time::Duration;

mod hold;

pub(super) use hold::HoldPool;

use super::flow::flow_key;
use super::Pipeline;
use crate::conn::FlowKey;
use crate::datapath::{Frame, Verdict, HEADROOM};
use crate::service::Protocol;
use crate::stats::DropReason;
use crate::time::Instant;
use crate::wire::{self, ip_proto, ipv6, IpInfo, IpVersion, Parsed};

/// Datagrams in flight one worker follows at a time.
pub const FRAG_SLOTS: usize = 4096;
/// Slots from a datagram's hash where its entry may sit.
pub const FRAG_PROBE: usize = 8;
/// How long an entry lives after its first fragment unless its datagram completes first.
/// The kernel's `ipfrag_time` is 30 s, but it keeps the data and waits for slow links; this
/// table only remembers where a datagram went, and the fragments of one datagram leave
/// their sender back to back.
pub const FRAG_TIMEOUT: Duration = Duration::from_secs(5);

/// What identifies the fragments of one datagram (RFC 791; RFC 8200 for IPv6's 32-bit ID).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
struct FragKey {
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    protocol: u8,
    v6: bool,
}

impl FragKey {
    fn of(ip: &IpInfo, id: u32) -> FragKey {
        FragKey {
            src: bytes(ip.src),
            dst: bytes(ip.dst),
            id,
            protocol: ip.protocol,
            v6: ip.version == IpVersion::V6,
        }
    }
}

fn bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// One datagram in flight: where its first fragment went, and how much of it has passed.
#[derive(Copy, Clone, Debug, Default)]
struct Slot {
    key: FragKey,
    sport: u16,
    dport: u16,
    /// Microseconds of the clock when the entry expires; 0 for a free slot.
    expires: u64,
    /// Payload bytes (after the IP header and any Fragment header) forwarded so far.
    seen: u32,
    /// The datagram's payload length, once its last fragment has passed; 0 before.
    total: u32,
}

/// A fixed, per-worker table of the datagrams whose first fragment was forwarded.
pub(super) struct FragTable {
    slots: Box<[Slot]>,
    /// Seeded per table, so that nobody can aim datagrams at one probe window.
    hasher: RandomState,
}

/// Why a first fragment found no slot.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Full;

impl FragTable {
    pub(super) fn new() -> FragTable {
        FragTable {
            slots: vec![Slot::default(); FRAG_SLOTS].into_boxed_slice(),
            hasher: RandomState::new(),
        }
    }

    fn window(&self, key: &FragKey) -> impl Iterator<Item = usize> {
        let start = self.hasher.hash_one(key) as usize;
        (0..FRAG_PROBE).map(move |i| (start + i) % FRAG_SLOTS)
    }

    /// Frees `i` if it has expired; true if it had (an incomplete datagram: a complete one
    /// frees its slot at once).
    fn reap(&mut self, i: usize, now: u64) -> bool {
        let s = &mut self.slots[i];
        if s.expires != 0 && s.expires <= now {
            s.expires = 0;
            return true;
        }
        false
    }

    /// The live entry of `key`; expired entries in the window are freed and counted in
    /// `expired`.
    fn find(&mut self, key: &FragKey, now: u64, expired: &mut u64) -> Option<usize> {
        let mut found = None;
        for i in self.window(key) {
            if self.reap(i, now) {
                *expired += 1;
            } else if self.slots[i].expires != 0 && self.slots[i].key == *key {
                found = Some(i);
            }
        }
        found
    }

    /// A slot for a new first fragment of `key`: its own entry if it has one (a repeated
    /// first fragment, or an ID used again), else a free one.
    fn claim(&mut self, key: &FragKey, now: u64, expired: &mut u64) -> Result<usize, Full> {
        if let Some(i) = self.find(key, now, expired) {
            return Ok(i);
        }
        self.window(key)
            .find(|&i| self.slots[i].expires == 0)
            .ok_or(Full)
    }

    fn fill(&mut self, i: usize, key: FragKey, ports: (u16, u16), expires: u64) {
        self.slots[i] = Slot {
            key,
            sport: ports.0,
            dport: ports.1,
            expires,
            seen: 0,
            total: 0,
        };
    }

    /// Counts a fragment of entry `i` that was forwarded; frees the entry when the datagram
    /// is complete. Duplicates make it look complete early: the rest of that datagram is
    /// then dropped, which a duplicate-free path never sees.
    fn account(&mut self, i: usize, f: &FragInfo) {
        let s = &mut self.slots[i];
        s.seen = s.seen.saturating_add(f.data_len);
        if !f.more {
            s.total = f.offset.saturating_add(f.data_len);
        }
        if s.total != 0 && s.seen >= s.total {
            s.expires = 0;
        }
    }

    /// Live entries (for tests).
    #[cfg(test)]
    pub(super) fn live(&self, now: Instant) -> usize {
        let now = now.as_micros();
        self.slots
            .iter()
            .filter(|s| s.expires != 0 && s.expires > now)
            .count()
    }
}

/// A fragment's place in its datagram.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct FragInfo {
    id: u32,
    /// Byte offset of this fragment's data in the datagram's payload.
    offset: u32,
    /// More fragments follow (MF / M).
    more: bool,
    /// Bytes of the datagram's payload this fragment carries.
    data_len: u32,
}

/// Reads the fragment fields of a packet `parse_frame` marked as a fragment; `None` for an
/// IPv6 packet whose Fragment header is not among its first extension headers.
fn frag_info(frame: &[u8], p: &Parsed, ip: &IpInfo) -> Option<FragInfo> {
    let l3 = p.l3_offset;
    let end = l3 + ip.len;
    match ip.version {
        IpVersion::V4 => {
            let h = frame.get(l3..l3 + 8)?;
            let flags_offset = u16::from_be_bytes([h[6], h[7]]);
            Some(FragInfo {
                id: u32::from(u16::from_be_bytes([h[4], h[5]])),
                offset: u32::from(flags_offset & 0x1fff) * 8,
                more: flags_offset & 0x2000 != 0,
                data_len: end.checked_sub(l3 + ip.header_len)? as u32,
            })
        }
        IpVersion::V6 => {
            let mut next = *frame.get(l3 + 6)?;
            let mut at = l3 + ipv6::HEADER_LEN;
            for _ in 0..ipv6::MAX_EXTENSION_HEADERS {
                let h = frame.get(at..at + 8)?;
                match next {
                    ip_proto::IPV6_FRAGMENT => {
                        let off = u16::from_be_bytes([h[2], h[3]]);
                        return Some(FragInfo {
                            id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                            offset: u32::from(off & 0xfff8),
                            more: off & 1 != 0,
                            data_len: end.checked_sub(at + 8)? as u32,
                        });
                    }
                    ip_proto::HOP_BY_HOP | ip_proto::IPV6_ROUTING | ip_proto::IPV6_DEST_OPTS => {
                        next = h[0];
                        at += (usize::from(h[1]) + 1) * 8;
                    }
                    _ => return None,
                }
            }
            None
        }
    }
}

impl Pipeline {
    /// A TCP or UDP fragment (`ip.fragment`): the first is scheduled by its ports and
    /// recorded; a later one follows the first one's connection. Called from one place,
    /// `handle_parsed`.
    #[inline(never)]
    pub(super) fn fragment(
        &mut self,
        now: Instant,
        frame: &mut Frame<'_>,
        p: &Parsed,
        ip: &IpInfo,
    ) -> Verdict {
        let ours = self.table.is_virtual_addr(ip.dst);
        let not_followed = |reason| {
            if ours {
                Verdict::Drop(reason)
            } else {
                Verdict::Pass
            }
        };
        let Some(f) = frag_info(frame.data(), p, ip) else {
            return not_followed(DropReason::Fragment);
        };
        let key = FragKey::of(ip, f.id);
        let now_us = now.as_micros();
        let mut expired = 0;
        let verdict = if f.offset == 0 {
            self.first_fragment(now, frame, p, ip, key, &f, &mut expired)
        } else if ip.protocol == ip_proto::TCP && f.offset == 8 {
            not_followed(DropReason::Fragment)
        } else {
            match self.frags.find(&key, now_us, &mut expired) {
                Some(i) => {
                    let s = self.frags.slots[i];
                    self.frags.account(i, &f);
                    self.later_fragment(now, frame, p, ip, (s.sport, s.dport), ours)
                }
                None if ours => self.hold(now, frame, key),
                None => Verdict::Pass,
            }
        };
        if expired != 0 {
            self.stats.fragment_timeouts.add(expired);
        }
        if !matches!(verdict, Verdict::Drop(_) | Verdict::Held) {
            self.stats.fragments.add(1);
        }
        verdict
    }

    /// A later fragment to a virtual address whose first fragment has not gone out yet:
    /// kept in the hold pool for [`hold::HOLD_TIMEOUT`], or dropped if there is no room.
    #[cold]
    #[inline(never)]
    fn hold(&mut self, now: Instant, frame: &Frame<'_>, key: FragKey) -> Verdict {
        let expires = (now + hold::HOLD_TIMEOUT).as_micros();
        match self.held.hold(key, frame.data(), frame.ingress(), expires) {
            Ok(()) => {
                self.stats.fragments_held.add(1);
                Verdict::Held
            }
            Err(hold::NoRoom) => {
                self.stats.fragment_hold_full.add(1);
                Verdict::Drop(DropReason::FragmentNoFirst)
            }
        }
    }

    /// Drops the held fragments whose first fragment did not come in time (between
    /// batches).
    pub(super) fn expire_held(&mut self, now: Instant) {
        let n = self.held.expire(now.as_micros());
        if n != 0 {
            self.stats.fragment_hold_expired.add(n);
            self.stats.drops[DropReason::FragmentNoFirst as usize].add(n);
        }
    }

    /// Whether a held fragment has been released and waits to be sent.
    #[inline]
    pub(super) fn held_ready(&self) -> bool {
        self.held.has_ready()
    }

    /// Sends the next released fragment: copies it into `buf` (at [`HEADROOM`]) and
    /// forwards it along its first fragment's connection, as a later fragment that came in
    /// order would have been. Counted here: forwarded (or dropped), not received again.
    pub(super) fn emit_held<'b>(
        &mut self,
        now: Instant,
        buf: &'b mut [u8],
    ) -> Option<(Frame<'b>, Verdict)> {
        let r = self.held.next_ready()?;
        let (key, ingress, ports, len) = (r.key, r.ingress, r.ports, r.bytes.len());
        if buf.len() < HEADROOM + len {
            // Not with the backends' buffers (at least 2048 bytes, HOLD_FRAME_BYTES fits).
            let verdict = Verdict::Drop(DropReason::FragmentNoFirst);
            verdict.count_emitted(&self.stats);
            return Some((Frame::new(buf, 0, 0), verdict));
        }
        buf[HEADROOM..HEADROOM + len].copy_from_slice(r.bytes);
        let mut frame = Frame::new(buf, HEADROOM, len);
        if let Some(i) = ingress {
            frame.set_ingress(i);
        }
        let parsed = wire::parse_frame(frame.data());
        let verdict = match &parsed {
            Ok(p) => match &p.ip {
                Some(ip) => {
                    if let Some(f) = frag_info(frame.data(), p, ip) {
                        let mut expired = 0;
                        if let Some(i) = self.frags.find(&key, now.as_micros(), &mut expired) {
                            self.frags.account(i, &f);
                        }
                        if expired != 0 {
                            self.stats.fragment_timeouts.add(expired);
                        }
                    }
                    self.later_fragment(now, &mut frame, p, ip, ports, true)
                }
                None => Verdict::Drop(DropReason::Malformed),
            },
            Err(_) => Verdict::Drop(DropReason::Malformed),
        };
        if !matches!(verdict, Verdict::Drop(_)) {
            self.stats.fragments.add(1);
        }
        verdict.count_emitted(&self.stats);
        Some((frame, verdict))
    }

    /// A first fragment: scheduled (or matched to its connection) as any packet of its
    /// flow, and recorded for the later ones when it was forwarded.
    #[allow(clippy::too_many_arguments)]
    fn first_fragment(
        &mut self,
        now: Instant,
        frame: &mut Frame<'_>,
        p: &Parsed,
        ip: &IpInfo,
        key: FragKey,
        f: &FragInfo,
        expired: &mut u64,
    ) -> Verdict {
        let ours = self.table.is_virtual_addr(ip.dst);
        let Some((flow, flags)) = flow_key(ip) else {
            // Too short to hold the ports.
            return if ours {
                Verdict::Drop(DropReason::Fragment)
            } else {
                Verdict::Pass
            };
        };
        let slot = match self.frags.claim(&key, now.as_micros(), expired) {
            Ok(i) => i,
            Err(Full) if ours => return Verdict::Drop(DropReason::FragmentTableFull),
            Err(Full) => return Verdict::Pass,
        };
        let verdict = self.flow(now, frame, p, ip, &flow, flags);
        if !matches!(verdict, Verdict::Drop(_)) {
            let expires = (now + FRAG_TIMEOUT).as_micros().max(1);
            self.frags
                .fill(slot, key, (flow.sport, flow.dport), expires);
            self.frags.account(slot, f);
            let released = self.held.release(&key, (flow.sport, flow.dport));
            if released != 0 {
                self.stats.fragments_released.add(released);
            }
        }
        verdict
    }

    /// A later fragment of a datagram whose first fragment went along the connection of
    /// `ports`: it goes the same way, if that connection still exists. The connection's
    /// state and timer are not touched (the first fragment did that for the datagram).
    fn later_fragment(
        &mut self,
        now: Instant,
        frame: &mut Frame<'_>,
        p: &Parsed,
        ip: &IpInfo,
        ports: (u16, u16),
        ours: bool,
    ) -> Verdict {
        let protocol = if ip.protocol == ip_proto::TCP {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        let flow = FlowKey {
            protocol,
            src: ip.src,
            sport: ports.0,
            dst: ip.dst,
            dport: ports.1,
        };
        let Some(hit) = self.conns.lookup_live(&flow, now) else {
            return if ours {
                Verdict::Drop(DropReason::NoConnection)
            } else {
                Verdict::Pass
            };
        };
        if !self.table.dest_is_live(hit.info.dest) {
            return Verdict::Drop(DropReason::DestinationRemoved);
        }
        self.forward(frame, p, ip, &hit.info, hit.dir)
    }
}

#[cfg(test)]
mod tests;
