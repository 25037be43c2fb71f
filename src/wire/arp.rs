//! ARP (RFC 826), as a read-only view: fastlb passes ARP to the kernel, but logs and tests
//! look at it.

use super::{read_u16, Field, WireError};

mod field {
    use super::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
}

/// Operation: request.
pub const OP_REQUEST: u16 = 1;
/// Operation: reply.
pub const OP_REPLY: u16 = 2;

/// A view of an ARP packet (any hardware/protocol address lengths).
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    ///
    /// # Panics
    /// Accessors panic if the buffer is shorter than the packet its length fields announce.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking it holds the fixed part and all four addresses.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        if b.len() < 8 || b.len() < 8 + 2 * (b[field::HLEN] as usize + b[field::PLEN] as usize) {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// Hardware type (1 = Ethernet).
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE)
    }
    /// Protocol type (0x0800 = IPv4).
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PTYPE)
    }
    /// Hardware address length.
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }
    /// Protocol address length.
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }
    /// Operation (request 1, reply 2).
    pub fn operation(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OPER)
    }
    fn addr(&self, index: usize) -> &[u8] {
        let (h, p) = (self.hardware_len() as usize, self.protocol_len() as usize);
        let start = 8 + [0, h, h + p, 2 * h + p][index];
        let len = if index % 2 == 0 { h } else { p };
        &self.buffer.as_ref()[start..start + len]
    }
    /// Sender hardware address.
    pub fn source_hardware_addr(&self) -> &[u8] {
        self.addr(0)
    }
    /// Sender protocol address.
    pub fn source_protocol_addr(&self) -> &[u8] {
        self.addr(1)
    }
    /// Target hardware address.
    pub fn target_hardware_addr(&self) -> &[u8] {
        self.addr(2)
    }
    /// Target protocol address.
    pub fn target_protocol_addr(&self) -> &[u8] {
        self.addr(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static REQUEST: [u8; 28] = [
        0, 1, 8, 0, 6, 4, 0, 1, 1, 2, 3, 4, 5, 6, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
    ];

    #[test]
    fn request() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!((p.hardware_type(), p.protocol_type()), (1, 0x0800));
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.source_hardware_addr(), &[1, 2, 3, 4, 5, 6]);
        assert_eq!(p.source_protocol_addr(), &[10, 0, 0, 1]);
        assert_eq!(p.target_hardware_addr(), &[0; 6]);
        assert_eq!(p.target_protocol_addr(), &[10, 0, 0, 2]);
    }

    #[test]
    fn truncated() {
        assert!(Packet::new_checked(&REQUEST[..27]).is_err());
        assert!(Packet::new_checked(&REQUEST[..5]).is_err());
    }
}
