//! TCP headers (RFC 9293): the fields a load balancer reads or rewrites.

use super::{read_u16, read_u32, write_u16, Field, WireError};

/// Byte ranges of the header's fields, for rewrites elsewhere in the crate.
pub(crate) mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ: Field = 4..8;
    pub const ACK: Field = 8..12;
    pub const OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
}

/// Offset of the checksum field in the header.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;
/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// A view of a TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    ///
    /// # Panics
    /// Accessors panic if the buffer is shorter than the header.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking the data offset and that the header (options
    /// included) fits.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if p.header_len() < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if b.len() < p.header_len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
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
    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ)
    }
    /// Acknowledgement number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK)
    }
    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF] >> 4) * 4
    }
    /// The flag byte (CWR ECE URG ACK PSH RST SYN FIN).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// Window size.
    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }
    /// Checksum field.
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
    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SYN: [u8; 24] = [
        0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0x12, 0x34, 0, 0,
        2, 4, 5, 0xb4,
    ];

    #[test]
    fn fields() {
        let p = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (12345, 80));
        assert_eq!((p.seq_number(), p.ack_number()), (1, 0));
        assert_eq!(
            (p.header_len(), p.flags(), p.window_len()),
            (24, 0x02, 0xffff)
        );
        assert_eq!(p.checksum(), 0x1234);
    }

    #[test]
    fn bad_offsets() {
        assert_eq!(
            Packet::new_checked(&SYN[..22]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = SYN;
        b[12] = 0x40;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
    }

    #[test]
    fn setters() {
        let mut b = SYN;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_checksum(3);
        assert_eq!((p.src_port(), p.dst_port(), p.checksum()), (1, 2, 3));
    }
}
