//! ICMPv4 (RFC 792): the shared ICMP view and the message types fastlb looks at.

pub use super::icmp::{Packet, HEADER_LEN};

/// Message types fastlb looks at.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (code 4: fragmentation needed, MTU in bytes 6..8).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Source quench (deprecated, still relayed by IPVS).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;
    /// Destination unreachable code: fragmentation needed and DF set.
    pub const CODE_FRAG_NEEDED: u8 = 4;
}
