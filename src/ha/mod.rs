//! Past one director: what lets a second director take over without losing connections,
//! and several active directors share the traffic behind a router's ECMP.
//!
//! - [`sync`]: IPVS connection synchronisation (`ip_vs_sync.c`): the protocol, the master
//!   and backup daemons, and the hook the workers call.
//! - [`bgp`]: which virtual addresses to announce to the router, and BIRD's configuration;
//!   [`bird`]: the real BIRD, run as fastlb's child.
//!
//! The VRRP side (keepalived moving the virtual addresses, and the sync daemon's role
//! following it) sits beside this module.

pub mod bgp;
pub mod bird;
pub mod sync;
