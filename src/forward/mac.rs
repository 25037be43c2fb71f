//! Direct routing: only the MAC addresses change (and the TTL, as IPVS's `ip_vs_dr_xmit`
//! decrements it). Also used after NAT and TUN rewrites to address the next hop.

use super::decrement_ttl;
use crate::stats::DropReason;
use crate::wire::ethernet::EthernetFrame;
use crate::wire::Parsed;

/// Sets the source and destination MAC addresses. An 802.1Q tag stays as it is.
///
/// # Panics
/// If the frame is shorter than an Ethernet header (never for a frame `parse_frame` took).
#[inline]
pub fn set_macs(frame: &mut [u8], src: [u8; 6], dst: [u8; 6]) {
    let mut eth = EthernetFrame::new_unchecked(frame);
    eth.set_src_addr(src);
    eth.set_dst_addr(dst);
}

/// LVS-DR: decrements the TTL and readdresses the frame to the real server's MAC, the IP
/// packet otherwise untouched (the real server owns the VIP on a non-ARPing interface).
#[inline]
pub fn direct_route(
    frame: &mut [u8],
    p: &Parsed,
    src: [u8; 6],
    dst: [u8; 6],
) -> Result<(), DropReason> {
    decrement_ttl(frame, p)?;
    set_macs(frame, src, dst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_frame;
    use crate::wire::testkit::{assert_checksums, Spec};

    #[test]
    fn dr_keeps_vlan_and_ip_and_decrements_ttl() {
        let mut s = Spec::tcp("198.51.100.7", "192.0.2.10", 40000, 80);
        s.vlan = Some(42);
        let mut f = s.frame();
        let p = parse_frame(&f).unwrap();
        direct_route(&mut f, &p, [0xaa; 6], [0xbb; 6]).unwrap();
        let q = parse_frame(&f).unwrap();
        assert_eq!(
            (q.src_mac, q.dst_mac, q.vlan),
            ([0xaa; 6], [0xbb; 6], Some(42))
        );
        let (a, b) = (p.ip.unwrap(), q.ip.unwrap());
        assert_eq!((b.src, b.dst, b.ports()), (a.src, a.dst, a.ports()));
        assert_eq!(b.ttl, a.ttl - 1);
        assert_checksums(&f);
    }
}
