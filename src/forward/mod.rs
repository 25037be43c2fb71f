//! Header rewrites for the three forwarding methods, ICMP relay and next hops.
pub mod nexthop;
