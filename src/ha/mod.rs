//! High availability: what lets a second director take over without losing connections.
//!
//! - [`sync`]: IPVS connection synchronisation (`ip_vs_sync.c`): the protocol, the master
//!   and backup daemons, and the hook the workers call.
//!
//! The VRRP side (keepalived moving the virtual addresses, and the sync daemon's role
//! following it) sits beside this module.

pub mod sync;
