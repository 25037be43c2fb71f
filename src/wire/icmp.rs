//! The ICMP message header ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) share: type, code,
//! checksum and the four bytes after them; for the error types the payload quotes the
//! offending packet. `icmpv4` and `icmpv6` add their message types.
//!
//! ```text
//!  0       8       16              31
//! +-------+-------+---------------+
//! | type  | code  |   checksum    |
//! +-------+-------+---------------+
//! |        rest of header         |
//! +-------------------------------+
//! |  payload (the quoted packet)  |
//! ```

use super::{read_u16, read_u32, write_u16, write_u32, Field, WireError};

/// Byte ranges of the header's fields, for rewrites elsewhere in the crate.
pub(crate) mod field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const REST: Field = 4..8;
}

/// Length of the header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// A view of an ICMP message.
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

    /// Wraps a buffer after checking it holds the 8-byte header.
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

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }
    /// Message code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }
    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// The four bytes after the checksum (echo id/sequence, MTU, pointer, unused).
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST)
    }
    /// Everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }
    /// Sets the message code.
    #[inline]
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }
    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
    /// Sets the four bytes after the checksum.
    #[inline]
    pub fn set_rest_of_header(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::REST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_setters() {
        let mut b = [3, 4, 0xab, 0xcd, 0, 0, 0x05, 0xdc, 0x45];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!((p.msg_type(), p.code(), p.checksum()), (3, 4, 0xabcd));
        assert_eq!(p.rest_of_header(), 1500);
        assert_eq!(p.payload(), &[0x45]);
        p.set_msg_type(11);
        p.set_code(0);
        p.set_checksum(1);
        p.set_rest_of_header(0x0102_0304);
        assert_eq!(b[..8], [11, 0, 0, 1, 1, 2, 3, 4]);
        assert!(Packet::new_checked(&b[..7]).is_err());
    }
}
