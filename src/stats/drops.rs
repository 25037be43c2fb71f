//! Why the pipeline dropped a packet. Every drop is counted under one of these.

use serde::Serialize;

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why a packet was dropped (or handed back). Used as a counter index.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[$doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter-index order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = DropReason::ALL.len();

            /// Stable snake_case name, used in reports and metrics.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// A header was truncated or inconsistent, or a checksum was wrong.
    Malformed => "malformed",
    /// Not IPv4/IPv6, or a protocol fastlb does not balance.
    Unsupported => "unsupported",
    /// No service and no connection matched (the XDP filter normally keeps these out).
    NotService => "not_service",
    /// TCP that matched no connection and may not open one: a RST, or without
    /// `sloppy_tcp` anything but a SYN.
    NoConnection => "no_connection",
    /// The scheduler found no available real server.
    NoDestination => "no_destination",
    /// The connection's real server was removed from the configuration.
    DestinationRemoved => "destination_removed",
    /// The connection table is full and nothing could be evicted.
    TableFull => "conn_table_full",
    /// A new connection refused by the `drop_packet` defence strategy (the table was
    /// nearly full; `crate::conn::defence`).
    DefenceDropPacket => "defence_drop_packet",
    /// No route to the next hop.
    NoRoute => "no_route",
    /// The next hop's MAC address is not known.
    NoNeighbour => "no_neighbour",
    /// An IP fragment fastlb cannot follow: of a protocol other than TCP and UDP, a first
    /// fragment too short to hold its ports, an IPv6 fragment whose Fragment header is not
    /// among its first extension headers, or a TCP fragment at offset 8 (RFC 1858).
    Fragment => "fragment",
    /// A later fragment whose first fragment has not been forwarded: it did not come
    /// within the hold time (lost or refused), or the hold pool had no room for it.
    FragmentNoFirst => "fragment_no_first",
    /// A first fragment found the worker's fragment table full (within its probe window).
    FragmentTableFull => "fragment_table_full",
    /// TTL or hop limit ran out.
    TtlExceeded => "ttl_exceeded",
    /// An ICMP error that quotes no tracked connection.
    IcmpNoConnection => "icmp_no_connection",
    /// The frame would not fit the buffer or the MTU.
    TooBig => "too_big",
    /// Addressed to another host's MAC (the kernel's `PACKET_OTHERHOST`): a switch
    /// flooded it, and only the host it was sent to may act on it.
    OtherHost => "other_host",
    /// The director is the standby of a pair: it forwards nothing (see
    /// `docs/decisions.md`, "The standby forwards nothing").
    Standby => "standby",
}
