//! The public types: what callers look up with, get back and read.

use crate::conn::state::{TcpFlags, TcpState};
use crate::service::{DestId, ForwardMethod, Protocol};
use std::fmt;
use std::net::IpAddr;

/// A packet's 5-tuple as the table looks it up.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Source address.
    pub src: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
}

/// A flow's hash in the table's index, from [`ConnTable::prefetch_index`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FlowHash(pub(super) u64);

/// A handle on one entry: its slot and the generation it had. Stale handles (the entry
/// expired and the slot was reused) are detected and ignored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(super) slot: u32,
    pub(super) gen: u32,
}

impl ConnId {
    #[inline]
    pub(super) fn pack(self) -> u64 {
        u64::from(self.gen) << 32 | u64::from(self.slot)
    }
    /// The handle as one word, never 0 (for queues).
    #[inline]
    pub fn to_bits(self) -> u64 {
        self.pack()
    }

    /// A handle from [`ConnId::to_bits`]; `None` for 0.
    #[inline]
    pub fn from_bits(v: u64) -> Option<ConnId> {
        ConnId::unpack(v)
    }

    /// A handle for tests that need one but never use it on a table.
    #[cfg(test)]
    pub(crate) fn dummy() -> ConnId {
        ConnId { slot: 0, gen: 1 }
    }

    #[inline]
    pub(super) fn unpack(v: u64) -> Option<ConnId> {
        // A live generation is odd, so a packed live id is never 0.
        (v != 0).then_some(ConnId {
            slot: v as u32,
            gen: (v >> 32) as u32,
        })
    }
}

/// Which way a packet travels on its connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to virtual service (matched the `<caddr, cport, vaddr, vport>` key).
    Original,
    /// Real server to client (NAT only; matched `<daddr, dport, caddr, cport>`).
    Reply,
}

/// Everything the forwarding stage needs of a connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Client address.
    pub client: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// How packets reach the real server.
    pub method: ForwardMethod,
    /// The real server's counters.
    pub dest: DestId,
    /// TCP state (NONE for UDP) as of the lookup, before the current packet.
    pub state: TcpState,
}

impl ConnInfo {
    /// The state as `ipvsadm -L -c` names it (`UDP` for UDP connections).
    pub fn state_name(&self) -> &'static str {
        match self.protocol {
            Protocol::Tcp => self.state.name(),
            Protocol::Udp => "UDP",
        }
    }
}

/// A connection found or created.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Handle for [`ConnTable::on_packet`] and [`ConnTable::expire_now`].
    pub id: ConnId,
    /// Which key the packet matched.
    pub dir: Direction,
    /// The connection.
    pub info: ConnInfo,
}

/// A connection to create, from the first packet of a flow and the scheduler's choice.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NewConn {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Client address (the packet's source).
    pub client: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address (the packet's destination); same family as `client`.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// Forwarding method; NAT connections also get a reply key.
    pub method: ForwardMethod,
    /// The real server's counters.
    pub dest: DestId,
    /// TCP flags of the first packet (sets the initial state); `None` for UDP.
    pub flags: Option<TcpFlags>,
    /// The persistence template that chose the real server, if any.
    pub template: Option<ConnId>,
}

/// The worker's part of the table is full and nothing in the eviction window could go.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TableFull;

impl fmt::Display for TableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection table full")
    }
}

impl std::error::Error for TableFull {}

/// Table counters, summed over workers.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Inserts refused ([`TableFull`]).
    pub insert_failures: u64,
    /// Connections the `drop_entry` defence ended ([`ConnTable::drop_entries`]).
    pub dropped_entries: u64,
}

/// One live entry as `ipvsadm -L -c` lists it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConnEntry {
    /// IP protocol number: 6, 17, or 0 for a firewall-mark template.
    pub protocol: u8,
    /// A persistence template rather than a connection.
    pub template: bool,
    /// Client address (masked, for a template).
    pub client: IpAddr,
    /// Client port (0 for a template).
    pub cport: u16,
    /// Virtual address (for a fwmark template, the mark as an address).
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// Forwarding method.
    pub method: ForwardMethod,
    /// The real server's counters.
    pub dest: DestId,
    /// State name: a TCP state, `UDP`, or `NONE` for TCP/fwmark templates.
    pub state: &'static str,
    /// Milliseconds until the entry expires (0 when already due).
    pub expires_in_ms: u64,
    /// Connections a template controls.
    pub controlled: u32,
}

impl ConnEntry {
    /// Protocol as ipvsadm prints it: `TCP`, `UDP`, `IP` (fwmark template).
    pub fn protocol_name(&self) -> &'static str {
        match Protocol::from_number(self.protocol) {
            Some(p) => p.ipvsadm_name(),
            None => "IP",
        }
    }
}
