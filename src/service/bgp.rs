//! `[bgp]`: how a director announces its virtual addresses to a router (the settings; the
//! decision and the BIRD driver live in [`crate::ha::bgp`]).

use std::net::IpAddr;
use std::path::PathBuf;

/// Where fastlb keeps BIRD's generated configuration, control socket and pid file unless
/// `[bgp] state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/run/fastlb/bird";

/// The BGP session to the router, with BFD, and what to announce on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpSettings {
    /// This director's autonomous system.
    pub local_as: u32,
    /// The router's address (the BGP neighbour).
    pub neighbor: IpAddr,
    /// The router's autonomous system (equal to `local_as` for iBGP).
    pub neighbor_as: u32,
    /// The local address of the session; BIRD picks one when unset.
    pub source: Option<IpAddr>,
    /// BIRD's router id; BIRD picks the highest IPv4 address when unset.
    pub router_id: Option<std::net::Ipv4Addr>,
    /// The next hop announced for every VIP; the session's local address when unset.
    pub next_hop: Option<IpAddr>,
    /// BGP hold time, seconds (0, or 3 and more, as RFC 4271 allows).
    pub hold_time: u16,
    /// BFD on the session.
    pub bfd: bool,
    /// BFD transmit and receive interval, milliseconds.
    pub bfd_interval_ms: u32,
    /// BFD detection multiplier: missed intervals before the session is down.
    pub bfd_multiplier: u8,
    /// The VIPs to announce; empty means every address of a `<protocol, address, port>`
    /// service.
    pub vips: Vec<IpAddr>,
    /// How long a stopping director keeps serving after its withdrawal, milliseconds, so
    /// that the router has moved the flows away before it goes.
    pub shutdown_grace_ms: u32,
    /// The BIRD daemon to run.
    pub bird: PathBuf,
    /// BIRD's client, to reconfigure it.
    pub birdc: PathBuf,
    /// Directory for BIRD's generated configuration, control socket and pid file.
    pub state_dir: PathBuf,
}

impl BgpSettings {
    /// Settings with every optional key at its default.
    pub fn new(local_as: u32, neighbor: IpAddr, neighbor_as: u32) -> BgpSettings {
        BgpSettings {
            local_as,
            neighbor,
            neighbor_as,
            source: None,
            router_id: None,
            next_hop: None,
            hold_time: 9,
            bfd: true,
            bfd_interval_ms: 100,
            bfd_multiplier: 3,
            vips: Vec::new(),
            shutdown_grace_ms: 1000,
            bird: PathBuf::from("bird"),
            birdc: PathBuf::from("birdc"),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}
