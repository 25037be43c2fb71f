//! Ethernet II frames with at most one 802.1Q VLAN tag.
//!
//! ```text
//! 0      6      12          14        16          18
//! | dst  | src  | 0x8100    | TCI     | ethertype | payload   (tagged)
//! | dst  | src  | ethertype | payload                         (untagged)
//! ```

use super::{read_u16, write_u16, Field, WireError};
use std::fmt;
use std::str::FromStr;

/// EtherType values fastlb looks at.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// An 802.1Q VLAN tag follows.
    pub const VLAN: u16 = 0x8100;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

mod field {
    use super::Field;
    pub const DST: Field = 0..6;
    pub const SRC: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const VLAN_TCI: Field = 14..16;
    pub const VLAN_ETHERTYPE: Field = 16..18;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of an Ethernet header with one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = 18;

/// An Ethernet address: the one MAC address type of the crate (the header views and
/// [`crate::wire::Parsed`] carry the raw bytes, `MacAddr.0`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<MacAddr, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts
                .next()
                .ok_or_else(|| format!("bad MAC address '{s}'"))?;
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC address '{s}'"))?;
        }
        if parts.next().is_some() {
            return Err(format!("bad MAC address '{s}'"));
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A view of an Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking it.
    ///
    /// # Panics
    /// Accessors panic if the buffer is shorter than the header.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer after checking it holds the whole header (tag included).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks the buffer holds the whole header.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN
            || (read_u16(b, field::ETHERTYPE) == ethertype::VLAN && b.len() < VLAN_HEADER_LEN)
        {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        self.buffer.as_ref()[field::DST]
            .try_into()
            .unwrap_or_default()
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        self.buffer.as_ref()[field::SRC]
            .try_into()
            .unwrap_or_default()
    }

    /// The VLAN tag control information (PCP, DEI, VID), if the frame carries a tag.
    #[inline]
    pub fn vlan_tci(&self) -> Option<u16> {
        let b = self.buffer.as_ref();
        (read_u16(b, field::ETHERTYPE) == ethertype::VLAN).then(|| read_u16(b, field::VLAN_TCI))
    }

    /// The EtherType of the payload (behind the tag, if any).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = self.buffer.as_ref();
        match read_u16(b, field::ETHERTYPE) {
            ethertype::VLAN => read_u16(b, field::VLAN_ETHERTYPE),
            t => t,
        }
    }

    /// Header length: 14, or 18 with a tag.
    #[inline]
    pub fn header_len(&self) -> usize {
        if read_u16(self.buffer.as_ref(), field::ETHERTYPE) == ethertype::VLAN {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The payload (including any trailing padding).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
    }

    /// Sets the payload's EtherType (behind the tag, if any).
    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        let f = if self.vlan_tci().is_some() {
            field::VLAN_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        write_u16(self.buffer.as_mut(), f, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TAGGED: [u8; 20] = [
        1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16, 0x81, 0x00, 0x20, 0x64, 0x86, 0xdd, 0xaa, 0xbb,
    ];

    #[test]
    fn tagged_frame() {
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.dst_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src_addr(), [11, 12, 13, 14, 15, 16]);
        assert_eq!(f.vlan_tci(), Some(0x2064));
        assert_eq!(f.ethertype(), ethertype::IPV6);
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn truncated_tag_is_rejected() {
        assert_eq!(
            EthernetFrame::new_checked(&TAGGED[..16]).unwrap_err(),
            WireError::Truncated
        );
        assert!(EthernetFrame::new_checked(&TAGGED[..13]).is_err());
    }

    #[test]
    fn setters_keep_the_tag() {
        let mut b = TAGGED;
        let mut f = EthernetFrame::new_checked(&mut b[..]).unwrap();
        f.set_dst_addr([9; 6]);
        f.set_src_addr([8; 6]);
        f.set_ethertype(ethertype::IPV4);
        assert_eq!(f.vlan_tci(), Some(0x2064));
        assert_eq!(&b[..6], &[9; 6]);
        assert_eq!(&b[16..18], &[0x08, 0x00]);
    }
}
