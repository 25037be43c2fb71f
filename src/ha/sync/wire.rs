//! Byte views of IPVS sync datagrams, as `net/netfilter/ipvs/ip_vs_sync.c` lays them out.
//!
//! ```text
//! Version 1 message header (8 bytes)            Version 0 message header (4 bytes)
//!  0        1        2        3                  0        1        2        3
//! +--------+--------+--------+--------+         +--------+--------+--------+--------+
//! |   0    | syncid |      size       |         |nr_conns| syncid |      size       |
//! +--------+--------+--------+--------+         +--------+--------+--------+--------+
//! |nr_conns| version|      spare      |
//! +--------+--------+--------+--------+
//!
//! Version 1 connection entry (36 bytes IPv4, 72 bytes IPv6), then optional parameters
//!  0        1        2        3
//! +--------+--------+--------+--------+
//! |  type  |protocol| ver(4)| size(12)|   type bit 0: IPv6; ver must be 0
//! +--------+--------+--------+--------+
//! |               flags               |   IP_VS_CONN_F_*
//! +--------+--------+--------+--------+
//! |      state      |      cport      |
//! +--------+--------+--------+--------+
//! |      vport      |      dport      |
//! +--------+--------+--------+--------+
//! |              fwmark               |
//! +--------+--------+--------+--------+
//! |          timeout (seconds)        |
//! +--------+--------+--------+--------+
//! |   caddr, vaddr, daddr (4 or 16 bytes each)
//! +--------+--------+--------+--------+
//! | ptype  |  plen  | data ...            optional parameters up to `size`
//!
//! Version 0 connection entry (24 bytes, 48 with sequence options)
//! +--------+--------+--------+--------+
//! |reserved|protocol|      cport      |
//! +--------+--------+--------+--------+
//! |      vport      |      dport      |
//! +--------+--------+--------+--------+
//! | caddr | vaddr | daddr (4 bytes each)
//! +--------+--------+--------+--------+
//! |   flags (16)    |   state (16)    |
//! +--------+--------+--------+--------+
//! ```
//!
//! Every multi-byte field is big-endian. Each view's `new_checked` checks the buffer holds
//! the fixed part, after which no accessor panics (smoltcp's convention, as in `crate::wire`).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use crate::wire::{read_u16, read_u32, write_u16, write_u32};

type Field = Range<usize>;

/// The buffer is shorter than the fixed part of what it should hold.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Truncated;

/// The protocol version a version-1 header carries (`SYNC_PROTO_VER`).
pub const PROTO_VERSION: u8 = 1;

/// Connection flags (`IP_VS_CONN_F_*`, `include/uapi/linux/ip_vs.h`). Bits 0..=15 travel.
pub mod flags {
    /// Mask of the forwarding method.
    pub const FWD_MASK: u32 = 0x0007;
    /// Masquerading (NAT).
    pub const MASQ: u32 = 0x0000;
    /// Local node.
    pub const LOCALNODE: u32 = 0x0001;
    /// IP-in-IP tunnel.
    pub const TUNNEL: u32 = 0x0002;
    /// Direct routing.
    pub const DROUTE: u32 = 0x0003;
    /// Cache bypass.
    pub const BYPASS: u32 = 0x0004;
    /// Created by sync (set by the receiver, never sent by fastlb).
    pub const SYNC: u32 = 0x0020;
    /// Hashed in the connection table (never sent).
    pub const HASHED: u32 = 0x0040;
    /// No output packets: the director sees only the client's half (DR, TUN).
    pub const NOOUTPUT: u32 = 0x0080;
    /// Not active (counts in InActConn).
    pub const INACTIVE: u32 = 0x0100;
    /// Output sequence adjustment.
    pub const OUT_SEQ: u32 = 0x0200;
    /// Input sequence adjustment.
    pub const IN_SEQ: u32 = 0x0400;
    /// Either sequence adjustment: sequence options follow the entry.
    pub const SEQ_MASK: u32 = 0x0600;
    /// No client port yet (ftp).
    pub const NO_CPORT: u32 = 0x0800;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u32 = 0x1000;
    /// One-packet scheduling.
    pub const ONE_PACKET: u32 = 0x2000;
    /// What a backup takes from a new entry (`IP_VS_CONN_F_BACKUP_MASK`).
    pub const BACKUP_MASK: u32 = FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE;
    /// What a backup updates on an existing entry (`IP_VS_CONN_F_BACKUP_UPD_MASK`).
    pub const BACKUP_UPD_MASK: u32 = INACTIVE | SEQ_MASK;
}

/// Optional parameter types of a version-1 entry (`IPVS_OPT_*`).
pub mod opt {
    /// Sequence adjustment data (24 bytes: in_seq, out_seq).
    pub const SEQ_DATA: u8 = 1;
    /// Persistence-engine data (at most 255 bytes).
    pub const PE_DATA: u8 = 2;
    /// Persistence-engine name (at most 16 bytes).
    pub const PE_NAME: u8 = 3;
    /// Set in a type whose parameter a receiver may skip when it does not know it.
    pub const F_PARAM: u8 = 1 << (7 - 1);
    /// Length of the sequence data (`struct ip_vs_sync_conn_options`).
    pub const SEQ_DATA_LEN: usize = 24;
    /// Longest persistence-engine data (`IP_VS_PEDATA_MAXLEN`).
    pub const PE_DATA_MAXLEN: usize = 255;
    /// Longest persistence-engine name (`IP_VS_PENAME_MAXLEN`).
    pub const PE_NAME_MAXLEN: usize = 16;
}

/// The version-1 message header.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

mod header {
    use super::Field;
    pub const RESERVED: usize = 0;
    pub const SYNCID: usize = 1;
    pub const SIZE: Field = 2..4;
    pub const NR_CONNS: usize = 4;
    pub const VERSION: usize = 5;
    pub const SPARE: Field = 6..8;
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Length of the header.
    pub const LEN: usize = 8;

    /// Wraps a buffer without checking it.
    ///
    /// # Panics
    /// Accessors panic if the buffer is shorter than [`Header::LEN`].
    pub fn new_unchecked(buffer: T) -> Self {
        Header { buffer }
    }

    /// Wraps a buffer after checking it holds the header.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < Self::LEN {
            return Err(Truncated);
        }
        Ok(Header { buffer })
    }

    /// The first byte: 0 in a version-1 message (a version-0 receiver reads it as a count
    /// of 0 and drops the message).
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[header::RESERVED]
    }
    /// The sync group.
    pub fn syncid(&self) -> u8 {
        self.buffer.as_ref()[header::SYNCID]
    }
    /// Length of the whole message, header included.
    pub fn size(&self) -> u16 {
        read_u16(self.buffer.as_ref(), header::SIZE)
    }
    /// Connection entries that follow.
    pub fn nr_conns(&self) -> u8 {
        self.buffer.as_ref()[header::NR_CONNS]
    }
    /// Protocol version.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[header::VERSION]
    }
    /// Must be zero.
    pub fn spare(&self) -> u16 {
        read_u16(self.buffer.as_ref(), header::SPARE)
    }
    /// Whether a receiver takes the message as version 1 (`ip_vs_process_message`); any
    /// other message is read as version 0.
    pub fn is_v1(&self) -> bool {
        self.version() == PROTO_VERSION && self.reserved() == 0 && self.spare() == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Writes a version-1 header.
    pub fn emit(&mut self, syncid: u8, size: u16, nr_conns: u8) {
        let b = self.buffer.as_mut();
        b[header::RESERVED] = 0;
        b[header::SYNCID] = syncid;
        write_u16(b, header::SIZE, size);
        b[header::NR_CONNS] = nr_conns;
        b[header::VERSION] = PROTO_VERSION;
        write_u16(b, header::SPARE, 0);
    }
    /// Sets the message length.
    pub fn set_size(&mut self, size: u16) {
        write_u16(self.buffer.as_mut(), header::SIZE, size);
    }
    /// Sets the entry count.
    pub fn set_nr_conns(&mut self, n: u8) {
        self.buffer.as_mut()[header::NR_CONNS] = n;
    }
}

/// The version-0 message header.
#[derive(Debug, Clone, Copy)]
pub struct HeaderV0<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HeaderV0<T> {
    /// Length of the header.
    pub const LEN: usize = 4;

    /// Wraps a buffer after checking it holds the header.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < Self::LEN {
            return Err(Truncated);
        }
        Ok(HeaderV0 { buffer })
    }
    /// Connection entries that follow.
    pub fn nr_conns(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    /// The sync group.
    pub fn syncid(&self) -> u8 {
        self.buffer.as_ref()[1]
    }
    /// Length of the whole message, header included.
    pub fn size(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2..4)
    }
}

/// A version-1 connection entry: the fixed part (IPv4 or IPv6 addresses) and the optional
/// parameters up to its `size`.
#[derive(Debug, Clone, Copy)]
pub struct Entry<T: AsRef<[u8]>> {
    buffer: T,
}

mod entry {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const PROTOCOL: usize = 1;
    pub const VER_SIZE: Field = 2..4;
    pub const FLAGS: Field = 4..8;
    pub const STATE: Field = 8..10;
    pub const CPORT: Field = 10..12;
    pub const VPORT: Field = 12..14;
    pub const DPORT: Field = 14..16;
    pub const FWMARK: Field = 16..20;
    pub const TIMEOUT: Field = 20..24;
    pub const ADDRS: usize = 24;
}

/// Bit of the entry type: IPv6 addresses (`STYPE_F_INET6`).
pub const TYPE_F_INET6: u8 = 1;
const SVER_SHIFT: u32 = 12;
const SVER_MASK: u16 = 0x0fff;

impl<T: AsRef<[u8]>> Entry<T> {
    /// Length of an entry with IPv4 addresses and no options (`struct ip_vs_sync_v4`).
    pub const V4_LEN: usize = 36;
    /// Length of an entry with IPv6 addresses and no options (`struct ip_vs_sync_v6`).
    pub const V6_LEN: usize = 72;

    /// Wraps a buffer after checking it holds the fixed IPv4 part (the kernel reads `type`
    /// and `ver_size` from that much before it knows the family).
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < Self::V4_LEN {
            return Err(Truncated);
        }
        Ok(Entry { buffer })
    }

    /// Wraps a buffer without checking it.
    ///
    /// # Panics
    /// Accessors panic if the buffer is shorter than [`Entry::V4_LEN`] (the addresses of an
    /// IPv6 entry, if it is shorter than [`Entry::V6_LEN`]).
    pub fn new_unchecked(buffer: T) -> Self {
        Entry { buffer }
    }

    /// Entry type (bit 0: IPv6).
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[entry::TYPE]
    }
    /// Whether the addresses are IPv6 (the kernel tests only this bit).
    pub fn is_v6(&self) -> bool {
        self.kind() & TYPE_F_INET6 != 0
    }
    /// Length of the fixed part this entry's type announces.
    pub fn fixed_len(&self) -> usize {
        if self.is_v6() {
            Self::V6_LEN
        } else {
            Self::V4_LEN
        }
    }
    /// IP protocol number.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[entry::PROTOCOL]
    }
    /// Entry format version (the top 4 bits of `ver_size`; must be 0).
    pub fn entry_version(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), entry::VER_SIZE) >> SVER_SHIFT) as u8
    }
    /// Length of the entry with its options (the low 12 bits of `ver_size`).
    pub fn size(&self) -> usize {
        usize::from(read_u16(self.buffer.as_ref(), entry::VER_SIZE) & SVER_MASK)
    }
    /// Connection flags.
    pub fn flags(&self) -> u32 {
        read_u32(self.buffer.as_ref(), entry::FLAGS)
    }
    /// Connection state (TCP: `IP_VS_TCP_S_*`).
    pub fn state(&self) -> u16 {
        read_u16(self.buffer.as_ref(), entry::STATE)
    }
    /// Client port.
    pub fn cport(&self) -> u16 {
        read_u16(self.buffer.as_ref(), entry::CPORT)
    }
    /// Virtual port.
    pub fn vport(&self) -> u16 {
        read_u16(self.buffer.as_ref(), entry::VPORT)
    }
    /// Real server port.
    pub fn dport(&self) -> u16 {
        read_u16(self.buffer.as_ref(), entry::DPORT)
    }
    /// Firewall mark the connection came with.
    pub fn fwmark(&self) -> u32 {
        read_u32(self.buffer.as_ref(), entry::FWMARK)
    }
    /// Timeout in seconds.
    pub fn timeout(&self) -> u32 {
        read_u32(self.buffer.as_ref(), entry::TIMEOUT)
    }
    /// Address `i` (0 client, 1 virtual, 2 real server) of an IPv4 entry.
    pub fn addr_v4(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::from(read_u32(
            self.buffer.as_ref(),
            entry::ADDRS + 4 * i..entry::ADDRS + 4 * i + 4,
        ))
    }
    /// Address `i` (0 client, 1 virtual, 2 real server) of an IPv6 entry.
    ///
    /// # Panics
    /// If the buffer is shorter than [`Entry::V6_LEN`].
    pub fn addr_v6(&self, i: usize) -> Ipv6Addr {
        let at = entry::ADDRS + 16 * i;
        let b: [u8; 16] = self.buffer.as_ref()[at..at + 16]
            .try_into()
            .expect("16 bytes");
        Ipv6Addr::from(b)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Entry<T> {
    /// Writes the fixed part: `type` from the family of `addrs`, `ver_size` version 0 and
    /// length `size`. Addresses are IPv4 (`V4`) or IPv6 (`V6`) as the caller sized the
    /// buffer.
    #[allow(clippy::too_many_arguments)]
    pub fn emit(
        &mut self,
        protocol: u8,
        size: u16,
        flags: u32,
        state: u16,
        ports: [u16; 3],
        fwmark: u32,
        timeout: u32,
        addrs: EntryAddrs,
    ) {
        let b = self.buffer.as_mut();
        b[entry::TYPE] = match addrs {
            EntryAddrs::V4(_) => 0,
            EntryAddrs::V6(_) => TYPE_F_INET6,
        };
        b[entry::PROTOCOL] = protocol;
        write_u16(b, entry::VER_SIZE, size & SVER_MASK);
        write_u32(b, entry::FLAGS, flags);
        write_u16(b, entry::STATE, state);
        write_u16(b, entry::CPORT, ports[0]);
        write_u16(b, entry::VPORT, ports[1]);
        write_u16(b, entry::DPORT, ports[2]);
        write_u32(b, entry::FWMARK, fwmark);
        write_u32(b, entry::TIMEOUT, timeout);
        match addrs {
            EntryAddrs::V4(a) => {
                for (i, x) in a.iter().enumerate() {
                    let at = entry::ADDRS + 4 * i;
                    b[at..at + 4].copy_from_slice(&x.octets());
                }
            }
            EntryAddrs::V6(a) => {
                for (i, x) in a.iter().enumerate() {
                    let at = entry::ADDRS + 16 * i;
                    b[at..at + 16].copy_from_slice(&x.octets());
                }
            }
        }
    }
}

/// The three addresses of an entry: client, virtual, real server.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EntryAddrs {
    /// An IPv4 connection.
    V4([Ipv4Addr; 3]),
    /// An IPv6 connection.
    V6([Ipv6Addr; 3]),
}

/// A version-0 connection entry.
#[derive(Debug, Clone, Copy)]
pub struct EntryV0<T: AsRef<[u8]>> {
    buffer: T,
}

mod entry_v0 {
    use super::Field;
    pub const PROTOCOL: usize = 1;
    pub const CPORT: Field = 2..4;
    pub const VPORT: Field = 4..6;
    pub const DPORT: Field = 6..8;
    pub const CADDR: Field = 8..12;
    pub const VADDR: Field = 12..16;
    pub const DADDR: Field = 16..20;
    pub const FLAGS: Field = 20..22;
    pub const STATE: Field = 22..24;
}

impl<T: AsRef<[u8]>> EntryV0<T> {
    /// Length of an entry (`SIMPLE_CONN_SIZE`).
    pub const LEN: usize = 24;
    /// Length of an entry followed by its sequence options (`FULL_CONN_SIZE`).
    pub const FULL_LEN: usize = 48;

    /// Wraps a buffer after checking it holds the entry.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < Self::LEN {
            return Err(Truncated);
        }
        Ok(EntryV0 { buffer })
    }
    /// IP protocol number.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[entry_v0::PROTOCOL]
    }
    /// Client port.
    pub fn cport(&self) -> u16 {
        read_u16(self.buffer.as_ref(), entry_v0::CPORT)
    }
    /// Virtual port.
    pub fn vport(&self) -> u16 {
        read_u16(self.buffer.as_ref(), entry_v0::VPORT)
    }
    /// Real server port.
    pub fn dport(&self) -> u16 {
        read_u16(self.buffer.as_ref(), entry_v0::DPORT)
    }
    /// Client address.
    pub fn caddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_u32(self.buffer.as_ref(), entry_v0::CADDR))
    }
    /// Virtual address.
    pub fn vaddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_u32(self.buffer.as_ref(), entry_v0::VADDR))
    }
    /// Real server address.
    pub fn daddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_u32(self.buffer.as_ref(), entry_v0::DADDR))
    }
    /// Connection flags (16 bits in version 0).
    pub fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), entry_v0::FLAGS)
    }
    /// Connection state.
    pub fn state(&self) -> u16 {
        read_u16(self.buffer.as_ref(), entry_v0::STATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 message for one DR TCP connection in ESTABLISHED, laid out by hand from
    /// `ip_vs_sync_conn` (not taken from fastlb's encoder).
    const ONE_V4: [u8; 44] = [
        0x00, 0x07, 0x00, 0x2c, 0x01, 0x01, 0x00, 0x00, // header: syncid 7, size 44, 1 conn
        0x00, 0x06, 0x00, 0x24, 0x00, 0x00, 0x00, 0x83, // v4, TCP, size 36, NOOUTPUT|DROUTE
        0x00, 0x01, 0xc3, 0x50, 0x00, 0x50, 0x00, 0x50, // ESTABLISHED, 50000 -> 80 -> 80
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x84, // fwmark 0, timeout 900
        198, 51, 100, 7, 192, 0, 2, 10, 10, 0, 0, 11, // caddr vaddr daddr
    ];

    #[test]
    fn header_and_entry_fields() {
        let h = Header::new_checked(&ONE_V4[..]).unwrap();
        assert_eq!(
            (h.reserved(), h.syncid(), h.size(), h.nr_conns()),
            (0, 7, 44, 1)
        );
        assert!(h.is_v1());
        let e = Entry::new_checked(&ONE_V4[8..]).unwrap();
        assert!(!e.is_v6());
        assert_eq!((e.protocol(), e.entry_version(), e.size()), (6, 0, 36));
        assert_eq!(e.flags(), flags::NOOUTPUT | flags::DROUTE);
        assert_eq!(
            (e.state(), e.cport(), e.vport(), e.dport()),
            (1, 50000, 80, 80)
        );
        assert_eq!((e.fwmark(), e.timeout()), (0, 900));
        assert_eq!(e.addr_v4(0), Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(e.addr_v4(2), Ipv4Addr::new(10, 0, 0, 11));
        assert!(Entry::new_checked(&ONE_V4[9..]).is_err());
        assert!(Header::new_checked(&ONE_V4[..7]).is_err());
    }

    #[test]
    fn emit_writes_what_the_views_read() {
        let mut b = [0xffu8; 44];
        Header::new_unchecked(&mut b[..]).emit(7, 44, 1);
        Entry::new_unchecked(&mut b[8..]).emit(
            6,
            36,
            flags::NOOUTPUT | flags::DROUTE,
            1,
            [50000, 80, 80],
            0,
            900,
            EntryAddrs::V4([
                Ipv4Addr::new(198, 51, 100, 7),
                Ipv4Addr::new(192, 0, 2, 10),
                Ipv4Addr::new(10, 0, 0, 11),
            ]),
        );
        assert_eq!(b, ONE_V4);
    }

    #[test]
    fn version_zero_is_anything_not_version_one() {
        let mut b = ONE_V4;
        assert!(Header::new_unchecked(&b[..]).is_v1());
        b[0] = 1; // a version-0 count
        assert!(!Header::new_unchecked(&b[..]).is_v1());
        b[0] = 0;
        b[7] = 1; // spare
        assert!(!Header::new_unchecked(&b[..]).is_v1());
        let v0 = HeaderV0::new_checked(&b[..]).unwrap();
        assert_eq!((v0.nr_conns(), v0.syncid(), v0.size()), (0, 7, 44));
    }
}
