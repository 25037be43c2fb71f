//! fastlb: a layer-4 load balancer in the spirit of Linux LVS/IPVS, run in user space.
//!
//! The crate reads like the packet's path through a director:
//!
//! ```text
//! wire      header views over frame bytes (Ethernet, VLAN, ARP, IPv4, IPv6, TCP, UDP, ICMP)
//! service   virtual services, real servers, classifier rules, health-check settings,
//!           snapshots; config/: the configuration languages (TOML, keepalived.conf, and
//!           ipvsadm's: argument parser, edits, -R/-S rule files, listing options)
//! sched     the IPVS schedulers, one file each
//! conn      connection table, TCP state machine, persistence templates
//! forward   NAT, DR and TUN rewrites, ICMP relay, next hops
//! stats     per-worker counters and their readers
//! health    the health checker, and what the workers run because of it
//! ha        high availability: IPVS connection sync (protocol, daemons, the workers' hook),
//!           the restart state file, the VIPs announced by BGP through BIRD
//! datapath  the per-packet pipeline and its I/O backends (pcap replay, AF_XDP)
//! control   the control plane: the director (one owner, one reconcile step), its sources
//!           (ctl socket, reload, health reports, next hops, VRRP addresses), listings,
//!           metrics, the appliance around it
//! time, log the pipeline's clock; log lines with their UTC timestamps
//! ```
//!
//! Stages depend downwards only: `wire` knows nothing above it, `datapath` and `control` sit on
//! top. Everything below `datapath` is sans-IO: plain functions over byte buffers, a clock
//! value handed in by the caller, and state.

pub mod conn;
pub mod control;
pub mod datapath;
pub mod forward;
pub mod ha;
pub mod health;
pub mod log;
pub mod sched;
pub mod service;
pub mod stats;
pub mod time;
pub mod wire;

/// Skips that count (`tests/support`), for the library's own tests.
#[cfg(test)]
#[path = "../tests/support/mod.rs"]
mod test_support;
