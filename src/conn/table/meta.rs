//! The meta word: cport | vport << 16 | dport << 32 | proto << 48 | flags << 56, written
//! once when an entry is created.

use crate::service::ForwardMethod;
use crate::service::Protocol;

pub(super) const F_V6: u64 = 1;
pub(super) const F_DV6: u64 = 2;
pub(super) const F_TEMPLATE: u64 = 4;
/// The entry's addresses are in its side entry (`slot::Side`), not in the slot.
pub(super) const F_SIDE: u64 = 8;
pub(super) const METHOD_SHIFT: u32 = 4;

#[derive(Copy, Clone)]
pub(super) struct Meta(pub(super) u64);

impl Meta {
    #[inline]
    pub(super) fn cport(self) -> u16 {
        self.0 as u16
    }
    #[inline]
    pub(super) fn vport(self) -> u16 {
        (self.0 >> 16) as u16
    }
    #[inline]
    pub(super) fn dport(self) -> u16 {
        (self.0 >> 32) as u16
    }
    #[inline]
    pub(super) fn proto(self) -> u8 {
        (self.0 >> 48) as u8
    }
    #[inline]
    pub(super) fn flags(self) -> u64 {
        self.0 >> 56
    }
    #[inline]
    pub(super) fn template(self) -> bool {
        self.flags() & F_TEMPLATE != 0
    }
    #[inline]
    pub(super) fn method(self) -> ForwardMethod {
        match (self.flags() >> METHOD_SHIFT) & 3 {
            0 => ForwardMethod::Masquerade,
            1 => ForwardMethod::DirectRouting,
            _ => ForwardMethod::Tunnel,
        }
    }
    #[inline]
    pub(super) fn is_tcp(self) -> bool {
        self.proto() == Protocol::Tcp.number()
    }
}

pub(super) fn method_bits(m: ForwardMethod) -> u64 {
    match m {
        ForwardMethod::Masquerade => 0,
        ForwardMethod::DirectRouting => 1,
        ForwardMethod::Tunnel => 2,
    }
}
