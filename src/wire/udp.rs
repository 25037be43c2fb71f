//! UDP headers (RFC 768).

use super::{read_u16, write_u16, Field, WireError};

/// Byte ranges of the header's fields, for rewrites elsewhere in the crate.
pub(crate) mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// Offset of the checksum field in the header.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;
/// Header length.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram. The length field is reported, not enforced: fastlb forwards
/// what it receives and lets the receiver judge it.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    ///
    /// # Panics
    /// Accessors panic if the buffer is shorter than 8 bytes.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking it holds the header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }
    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }
    /// Length field (header plus data).
    #[inline]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }
    /// Whether the length field says there is no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= HEADER_LEN
    }
    /// Checksum field (0 over IPv4: no checksum).
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port (the checksum is not updated).
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }
    /// Sets the destination port (the checksum is not updated).
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }
    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, v);
    }
    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_setters() {
        let mut b = [0x00, 0x35, 0x04, 0xd2, 0x00, 0x0c, 0x00, 0x00, 1, 2, 3, 4];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.len(), p.checksum()),
            (53, 1234, 12, 0)
        );
        assert!(!p.is_empty());
        p.set_dst_port(99);
        p.set_checksum(0xffff);
        assert_eq!(&b[2..4], &[0, 99]);
        assert_eq!(&b[6..8], &[0xff, 0xff]);
        assert!(Packet::new_checked(&b[..7]).is_err());
    }
}
