//! Scale past one director: announcing the virtual addresses to a router by BGP, so that
//! several active directors share the traffic behind its ECMP ([`bgp`]), through the real
//! BIRD ([`bird`]).

pub mod bgp;
pub mod bird;
