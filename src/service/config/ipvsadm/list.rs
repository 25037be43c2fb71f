//! Listing options: what `-L`/`-l` was asked to show, and the order ipvsadm lists (and saves)
//! services and real servers in. The layouts themselves are `control::listing`'s.

use std::net::IpAddr;

use crate::service::{Protocol, ServiceKey};

/// Options of `-L`/`-l`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// List only this service.
    pub service: Option<ServiceKey>,
    /// `-n`.
    pub numeric: bool,
    /// `-c`: the connection table.
    pub connections: bool,
    /// `--timeout`: the protocol timeouts.
    pub timeout: bool,
    /// `--daemon`: the sync daemons.
    pub daemon: bool,
    /// `--stats`.
    pub stats: bool,
    /// `--rate`.
    pub rate: bool,
    /// `--thresholds`.
    pub thresholds: bool,
    /// `--persistent-conn`.
    pub persistent_conn: bool,
    /// `--exact`.
    pub exact: bool,
    /// `--nosort` (`--sort`, the default, is accepted and changes nothing).
    pub nosort: bool,
    /// `--tun-info`.
    pub tun_info: bool,
}

/// The sort key of libipvs's `ipvs_cmp_services`, the order of `-L` and `-S` (ipvsadm's
/// default `--sort`): fwmark (0 for address services), family (IPv4 first), protocol number,
/// address, port.
///
/// ipvsadm compares addresses by a signed 32-bit subtraction, which misorders addresses that
/// differ by 2^31 or more (say 10.0.0.1 against 200.0.0.1); fastlb sorts them numerically.
pub fn service_order(key: &ServiceKey) -> (u32, bool, u8, u128, u16) {
    match *key {
        ServiceKey::Tuple {
            protocol,
            addr,
            port,
        } => (0, addr.is_ipv6(), protocol.number(), addr_bits(addr), port),
        // ipvsadm sets TCP as the protocol of fwmark services.
        ServiceKey::Fwmark { mark, ipv6 } => (mark, ipv6, Protocol::Tcp.number(), 0, 0),
    }
}

/// The sort key of a service's real servers in `-L` and `-S`: family, address, port.
pub fn real_order(addr: IpAddr, port: u16) -> (bool, u128, u16) {
    (addr.is_ipv6(), addr_bits(addr), port)
}

fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}
