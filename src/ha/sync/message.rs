//! Sync messages as connections: [`Message::parse`] reads a datagram the way a kernel
//! backup does (`ip_vs_process_message`, `ip_vs_proc_sync_conn`), [`Encoder`] writes
//! version-1 messages the way a kernel master does (`ip_vs_sync_conn`), split at
//! `sync_maxlen`.
//!
//! Reading follows the kernel's three levels of trouble:
//!
//! - the datagram is refused whole ([`MessageError`]): shorter than a header, or its
//!   `size` field is not its length;
//! - the rest of the message is dropped ([`EntryError`]): an entry that overruns the
//!   datagram, an unknown entry version or type, a malformed optional parameter. Entries
//!   before it stand, as in the kernel, which has already applied them;
//! - one entry is skipped ([`Skip`]): a mandatory parameter fastlb does not know, a
//!   protocol it does not balance, a state out of range, persistence-engine data (fastlb
//!   has no persistence engines, like a kernel without the `ip_vs_pe_sip` module).
//!
//! Sequence-adjustment data (ftp NAT) is read and dropped: fastlb does not rewrite
//! sequence numbers. Nothing here allocates or panics on any input.

use std::net::IpAddr;

use super::wire::{flags, opt, Entry, EntryAddrs, EntryV0, Header, HeaderV0};

/// IP protocol numbers the sync protocol carries that fastlb balances.
const TCP: u8 = 6;
const UDP: u8 = 17;
/// Connection states of each protocol (`pp->num_states`): TCP `IP_VS_TCP_S_LAST`, UDP
/// `IP_VS_UDP_S_LAST`.
const TCP_STATES: u16 = 11;
const UDP_STATES: u16 = 1;

/// Most entries in one message: `nr_conns` is one byte. (The kernel does not check, so a
/// `sync_maxlen` above 9 KiB would wrap its count; fastlb closes the message instead.)
pub const MAX_CONNS_PER_MESSAGE: usize = 255;

/// One connection or persistence template, as an entry describes it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyncConn {
    /// IP protocol number (0 for a firewall-mark template).
    pub protocol: u8,
    /// `IP_VS_CONN_F_*` as sent (version 0: 16 bits).
    pub flags: u32,
    /// State (`IP_VS_TCP_S_*` for TCP, 0 for UDP and templates).
    pub state: u16,
    /// Client port (0 for a template).
    pub cport: u16,
    /// Virtual port.
    pub vport: u16,
    /// Real server port.
    pub dport: u16,
    /// Firewall mark (0 for address services; always 0 in version 0).
    pub fwmark: u32,
    /// Timeout in seconds (0 in version 0: the receiver uses its own).
    pub timeout: u32,
    /// Client address (masked, for a template).
    pub caddr: IpAddr,
    /// Virtual address (for a firewall-mark template, the mark in its first 32 bits).
    pub vaddr: IpAddr,
    /// Real server address.
    pub daddr: IpAddr,
}

impl SyncConn {
    /// Whether it is a persistence template.
    pub fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }

    /// The entry's addresses, if all three are of one family.
    fn addrs(&self) -> Option<EntryAddrs> {
        match (self.caddr, self.vaddr, self.daddr) {
            (IpAddr::V4(c), IpAddr::V4(v), IpAddr::V4(d)) => Some(EntryAddrs::V4([c, v, d])),
            (IpAddr::V6(c), IpAddr::V6(v), IpAddr::V6(d)) => Some(EntryAddrs::V6([c, v, d])),
            _ => None,
        }
    }

    /// Length of its version-1 entry (fastlb sends no optional parameters), `None` for
    /// addresses of mixed families, which the protocol cannot carry.
    pub fn encoded_len(&self) -> Option<usize> {
        Some(match self.addrs()? {
            EntryAddrs::V4(_) => Entry::<&[u8]>::V4_LEN,
            EntryAddrs::V6(_) => Entry::<&[u8]>::V6_LEN,
        })
    }
}

/// Protocol version of a message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Version {
    /// The original format (IPv4 only, no timeout, no fwmark).
    V0,
    /// The current format.
    V1,
}

/// Why a datagram was refused whole.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// Shorter than a version-0 header (4 bytes).
    TooShort,
    /// The header's `size` is not the datagram's length.
    SizeMismatch,
}

/// Why the rest of a message was dropped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EntryError {
    /// An entry (or its announced size, or its addresses) runs past the datagram.
    Overrun,
    /// An entry's format version is not 0.
    UnknownVersion,
    /// An entry's type is neither IPv4 nor IPv6.
    UnknownType,
    /// An optional parameter is cut short, empty, of the wrong length or given twice.
    BadParameter,
}

/// Why one entry was skipped while the rest of its message was read.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// An optional parameter of a type fastlb does not know, not marked skippable.
    UnknownParameter,
    /// A protocol fastlb does not balance (SCTP, AH, ESP...).
    UnsupportedProtocol,
    /// A state the protocol does not have.
    InvalidState,
    /// Persistence-engine data: fastlb has no persistence engines.
    PersistenceEngine,
}

impl MessageError {
    /// A short name for counters.
    pub fn name(self) -> &'static str {
        match self {
            MessageError::TooShort => "too_short",
            MessageError::SizeMismatch => "size_mismatch",
        }
    }
}

impl EntryError {
    /// A short name for counters.
    pub fn name(self) -> &'static str {
        match self {
            EntryError::Overrun => "entry_overrun",
            EntryError::UnknownVersion => "entry_version",
            EntryError::UnknownType => "entry_type",
            EntryError::BadParameter => "bad_parameter",
        }
    }
}

impl Skip {
    /// A short name for counters.
    pub fn name(self) -> &'static str {
        match self {
            Skip::UnknownParameter => "unknown_parameter",
            Skip::UnsupportedProtocol => "unsupported_protocol",
            Skip::InvalidState => "invalid_state",
            Skip::PersistenceEngine => "persistence_engine",
        }
    }
}

/// A datagram whose header has been checked.
#[derive(Copy, Clone, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    version: Version,
    syncid: u8,
    nr_conns: u8,
}

impl<'a> Message<'a> {
    /// Checks the header of `buf` as `ip_vs_process_message` does (before the syncid
    /// check, which is the receiver's).
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, MessageError> {
        let v0 = HeaderV0::new_checked(buf).map_err(|_| MessageError::TooShort)?;
        if usize::from(v0.size()) != buf.len() {
            return Err(MessageError::SizeMismatch);
        }
        let v1 = Header::new_checked(buf).ok().filter(|h| h.is_v1());
        Ok(match v1 {
            Some(h) => Message {
                buf,
                version: Version::V1,
                syncid: h.syncid(),
                nr_conns: h.nr_conns(),
            },
            None => Message {
                buf,
                version: Version::V0,
                syncid: v0.syncid(),
                nr_conns: v0.nr_conns(),
            },
        })
    }

    /// The message's format.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The sync group it was sent to.
    pub fn syncid(&self) -> u8 {
        self.syncid
    }

    /// Entries the header announces.
    pub fn nr_conns(&self) -> u8 {
        self.nr_conns
    }

    /// The entries, in order. After an [`EntryError`] the iterator ends.
    pub fn entries(&self) -> Entries<'a> {
        Entries {
            buf: self.buf,
            version: self.version,
            left: self.nr_conns,
            at: match self.version {
                Version::V0 => HeaderV0::<&[u8]>::LEN,
                Version::V1 => Header::<&[u8]>::LEN,
            },
        }
    }
}

/// What one entry held.
pub type EntryResult = Result<SyncConn, Skip>;

/// The entries of a [`Message`].
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    buf: &'a [u8],
    version: Version,
    left: u8,
    at: usize,
}

impl Iterator for Entries<'_> {
    type Item = Result<EntryResult, EntryError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = match self.version {
            Version::V1 => self.next_v1(),
            Version::V0 => self.next_v0(),
        };
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }
}

impl Entries<'_> {
    fn next_v1(&mut self) -> Result<EntryResult, EntryError> {
        let rest = self.buf.get(self.at..).ok_or(EntryError::Overrun)?;
        let e = Entry::new_checked(rest).map_err(|_| EntryError::Overrun)?;
        let size = e.size();
        let entry = rest.get(..size).ok_or(EntryError::Overrun)?;
        if e.entry_version() != 0 {
            return Err(EntryError::UnknownVersion);
        }
        // The next entry starts on a 32-bit boundary.
        self.at += (size + 3) & !3;
        decode_v1(&e, entry)
    }

    fn next_v0(&mut self) -> Result<EntryResult, EntryError> {
        let rest = self.buf.get(self.at..).ok_or(EntryError::Overrun)?;
        let e = EntryV0::new_checked(rest).map_err(|_| EntryError::Overrun)?;
        let raw_flags = (u32::from(e.flags()) | flags::SYNC) & !flags::HASHED;
        let len = if raw_flags & flags::SEQ_MASK != 0 {
            EntryV0::<&[u8]>::FULL_LEN
        } else {
            EntryV0::<&[u8]>::LEN
        };
        if rest.len() < len {
            return Err(EntryError::Overrun);
        }
        self.at += len;
        let conn = SyncConn {
            protocol: e.protocol(),
            flags: u32::from(e.flags()),
            state: e.state(),
            cport: e.cport(),
            vport: e.vport(),
            dport: e.dport(),
            fwmark: 0,
            timeout: 0,
            caddr: IpAddr::V4(e.caddr()),
            vaddr: IpAddr::V4(e.vaddr()),
            daddr: IpAddr::V4(e.daddr()),
        };
        Ok(check_state(conn))
    }
}

/// The kernel's protocol and state checks (`ip_vs_proc_sync_conn`, and the same in
/// version 0): templates are not checked.
fn check_state(conn: SyncConn) -> EntryResult {
    if conn.is_template() {
        return Ok(conn);
    }
    let states = match conn.protocol {
        TCP => TCP_STATES,
        UDP => UDP_STATES,
        _ => return Err(Skip::UnsupportedProtocol),
    };
    if conn.state >= states {
        return Err(Skip::InvalidState);
    }
    Ok(conn)
}

/// One version-1 entry: `head` its checked fixed IPv4-sized part (the entry may announce
/// less), `entry` exactly its announced size.
fn decode_v1(head: &Entry<&[u8]>, entry: &[u8]) -> Result<EntryResult, EntryError> {
    // ip_vs_proc_sync_conn tests the IPv6 bit first, then requires type 0, then that the
    // announced size holds the addresses.
    if !head.is_v6() && head.kind() != 0 {
        return Err(EntryError::UnknownType);
    }
    let fixed = head.fixed_len();
    if entry.len() < fixed {
        return Err(EntryError::Overrun);
    }
    let e = Entry::new_unchecked(entry);
    let mut seen = 0u8;
    let mut pe_data = false;
    let mut p = fixed;
    while p < entry.len() {
        let (ptype, plen) = match entry.get(p..p + 2) {
            Some(&[t, l]) => (t, usize::from(l)),
            _ => return Err(EntryError::BadParameter),
        };
        p += 2;
        if plen == 0 || p + plen > entry.len() {
            return Err(EntryError::BadParameter);
        }
        let once = |seen: &mut u8, bit: u8| {
            if *seen & bit != 0 {
                return Err(EntryError::BadParameter);
            }
            *seen |= bit;
            Ok(())
        };
        match ptype & !opt::F_PARAM {
            opt::SEQ_DATA => {
                if plen != opt::SEQ_DATA_LEN {
                    return Err(EntryError::BadParameter);
                }
                once(&mut seen, 1)?;
            }
            opt::PE_DATA => {
                // A one-byte length never exceeds IP_VS_PEDATA_MAXLEN (255).
                once(&mut seen, 2)?;
                pe_data = true;
            }
            opt::PE_NAME => {
                if plen > opt::PE_NAME_MAXLEN {
                    return Err(EntryError::BadParameter);
                }
                once(&mut seen, 4)?;
            }
            // The kernel stops reading the entry at an unknown mandatory parameter and
            // drops just this entry; what follows in it is not looked at.
            _ if ptype & opt::F_PARAM == 0 => return Ok(Err(Skip::UnknownParameter)),
            _ => {}
        }
        p += plen;
    }
    let (caddr, vaddr, daddr) = if e.is_v6() {
        (
            IpAddr::V6(e.addr_v6(0)),
            IpAddr::V6(e.addr_v6(1)),
            IpAddr::V6(e.addr_v6(2)),
        )
    } else {
        (
            IpAddr::V4(e.addr_v4(0)),
            IpAddr::V4(e.addr_v4(1)),
            IpAddr::V4(e.addr_v4(2)),
        )
    };
    let conn = SyncConn {
        protocol: e.protocol(),
        flags: e.flags(),
        state: e.state(),
        cport: e.cport(),
        vport: e.vport(),
        dport: e.dport(),
        fwmark: e.fwmark(),
        timeout: e.timeout(),
        caddr,
        vaddr,
        daddr,
    };
    match check_state(conn) {
        Ok(_) if pe_data => Ok(Err(Skip::PersistenceEngine)),
        r => Ok(r),
    }
}

/// Builds version-1 messages of at most `maxlen` bytes (`sync_maxlen`), as the kernel's
/// master fills its sync buffers: an entry that does not fit closes the message, and a
/// new message has room for at least one entry whatever `maxlen` says.
#[derive(Debug)]
pub struct Encoder {
    buf: Vec<u8>,
    syncid: u8,
    maxlen: usize,
    conns: usize,
}

/// The connection's addresses are of two families; the protocol cannot carry it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MixedFamilies;

impl Encoder {
    /// An encoder for group `syncid` and messages of at most `maxlen` bytes (the UDP
    /// payload; at least one entry per message).
    pub fn new(syncid: u8, maxlen: usize) -> Encoder {
        Encoder {
            buf: Vec::with_capacity(maxlen.max(Header::<&[u8]>::LEN + Entry::<&[u8]>::V6_LEN)),
            syncid,
            maxlen,
            conns: 0,
        }
    }

    /// Entries in the message being built.
    pub fn pending(&self) -> usize {
        self.conns
    }

    /// Adds `conn`. When it does not fit the message being built, that message is finished
    /// and handed to `send` first.
    pub fn push(&mut self, conn: &SyncConn, send: impl FnOnce(&[u8])) -> Result<(), MixedFamilies> {
        let addrs = conn.addrs().ok_or(MixedFamilies)?;
        let len = conn.encoded_len().ok_or(MixedFamilies)?;
        if self.conns > 0
            && (self.buf.len() + len > self.maxlen.max(Header::<&[u8]>::LEN + len)
                || self.conns == MAX_CONNS_PER_MESSAGE)
        {
            self.finish(send);
        }
        if self.conns == 0 {
            self.buf.clear();
            self.buf.resize(Header::<&[u8]>::LEN, 0);
        }
        let at = self.buf.len();
        self.buf.resize(at + len, 0);
        Entry::new_unchecked(&mut self.buf[at..]).emit(
            conn.protocol,
            len as u16,
            conn.flags,
            conn.state,
            [conn.cport, conn.vport, conn.dport],
            conn.fwmark,
            conn.timeout,
            addrs,
        );
        self.conns += 1;
        Ok(())
    }

    /// Finishes the message being built, if it holds an entry, and hands it to `send`.
    pub fn flush(&mut self, send: impl FnOnce(&[u8])) {
        if self.conns > 0 {
            self.finish(send);
        }
    }

    fn finish(&mut self, send: impl FnOnce(&[u8])) {
        let size = self.buf.len() as u16;
        Header::new_unchecked(&mut self.buf[..]).emit(self.syncid, size, self.conns as u8);
        send(&self.buf);
        self.conns = 0;
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn tcp(client: u8, state: u16) -> SyncConn {
        SyncConn {
            protocol: TCP,
            flags: flags::NOOUTPUT | flags::DROUTE,
            state,
            cport: 40_000 + u16::from(client),
            vport: 80,
            dport: 80,
            fwmark: 0,
            timeout: 900,
            caddr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, client)),
            vaddr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            daddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11)),
        }
    }

    fn encode_all(maxlen: usize, conns: &[SyncConn]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut e = Encoder::new(9, maxlen);
        for c in conns {
            e.push(c, |m| out.push(m.to_vec())).unwrap();
        }
        e.flush(|m| out.push(m.to_vec()));
        out
    }

    fn decode_all(msg: &[u8]) -> Vec<Result<EntryResult, EntryError>> {
        Message::parse(msg).unwrap().entries().collect()
    }

    #[test]
    fn messages_split_at_maxlen_as_the_kernel_fills_its_buffers() {
        let conns: Vec<SyncConn> = (0..100).map(|i| tcp(i, 1)).collect();
        // The master's default: 1500 - 20 - 8 = 1472 bytes, 40 IPv4 entries.
        let msgs = encode_all(1472, &conns);
        assert_eq!(
            msgs.iter().map(Vec::len).collect::<Vec<_>>(),
            [8 + 40 * 36, 8 + 40 * 36, 8 + 20 * 36]
        );
        let back: Vec<SyncConn> = msgs
            .iter()
            .flat_map(|m| decode_all(m))
            .map(|r| r.unwrap().unwrap())
            .collect();
        assert_eq!(back, conns);
        // A maxlen below one entry still carries one entry per message.
        let msgs = encode_all(1, &conns[..3]);
        assert_eq!(msgs.len(), 3);
        assert!(msgs.iter().all(|m| m.len() == 44));
        // nr_conns is one byte: a large maxlen closes the message at 255 entries.
        let many: Vec<SyncConn> = (0..300).map(|i| tcp(i as u8, 1)).collect();
        let msgs = encode_all(65_507, &many);
        assert_eq!(msgs.len(), 2);
        assert_eq!(Message::parse(&msgs[0]).unwrap().nr_conns(), 255);
    }

    #[test]
    fn ipv6_and_templates() {
        let v6 = SyncConn {
            protocol: UDP,
            flags: flags::INACTIVE | flags::MASQ,
            state: 0,
            cport: 5353,
            vport: 53,
            dport: 5300,
            fwmark: 7,
            timeout: 300,
            caddr: IpAddr::V6("2001:db8::7".parse().unwrap()),
            vaddr: IpAddr::V6("2001:db8::100".parse().unwrap()),
            daddr: IpAddr::V6("2001:db8:1::11".parse().unwrap()),
        };
        let template = SyncConn {
            protocol: 0,
            flags: flags::TEMPLATE | flags::INACTIVE | flags::NOOUTPUT | flags::DROUTE,
            state: 0,
            cport: 0,
            vport: 0,
            dport: 0,
            fwmark: 7,
            timeout: 360,
            caddr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)),
            vaddr: IpAddr::V4(Ipv4Addr::from(7u32)),
            daddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11)),
        };
        let msgs = encode_all(1472, &[v6, template]);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].len(), 8 + 72 + 36);
        assert_eq!(msgs[0][8], 1, "IPv6 type bit");
        let back: Vec<_> = decode_all(&msgs[0]);
        assert_eq!(back, vec![Ok(Ok(v6)), Ok(Ok(template))]);
        // Mixed families cannot be sent.
        let mixed = SyncConn {
            daddr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            ..tcp(1, 1)
        };
        assert_eq!(
            Encoder::new(0, 1472).push(&mixed, |_| {}),
            Err(MixedFamilies)
        );
    }

    #[test]
    fn message_level_checks() {
        let msg = &encode_all(1472, &[tcp(1, 1)])[0];
        assert_eq!(
            Message::parse(&msg[..3]).err(),
            Some(MessageError::TooShort)
        );
        assert_eq!(
            Message::parse(&msg[..40]).err(),
            Some(MessageError::SizeMismatch)
        );
        let m = Message::parse(msg).unwrap();
        assert_eq!((m.version(), m.syncid(), m.nr_conns()), (Version::V1, 9, 1));
    }

    /// One entry with the given optional parameters appended (size and message size fixed
    /// up), then a second plain entry.
    fn with_params(params: &[u8]) -> Vec<u8> {
        let mut m = encode_all(1472, &[tcp(1, 1), tcp(2, 1)]).remove(0);
        let size = 36 + params.len();
        let mut first = m[8..44].to_vec();
        first.extend_from_slice(params);
        first[2..4].copy_from_slice(&(size as u16).to_be_bytes());
        while first.len() % 4 != 0 {
            first.push(0);
        }
        let mut out = m[..8].to_vec();
        out.extend_from_slice(&first);
        out.extend_from_slice(&m.split_off(44));
        let len = out.len() as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        out
    }

    #[test]
    fn optional_parameters_as_the_kernel_reads_them() {
        let ok2 = Ok(Ok(tcp(2, 1)));
        // Sequence data (24 bytes): read and dropped; the entry stands.
        let mut seq = vec![opt::SEQ_DATA, 24];
        seq.extend_from_slice(&[0xab; 24]);
        assert_eq!(decode_all(&with_params(&seq)), vec![Ok(Ok(tcp(1, 1))), ok2]);
        // Persistence-engine data: this entry is skipped, the next one read.
        assert_eq!(
            decode_all(&with_params(&[
                opt::PE_DATA,
                2,
                1,
                2,
                opt::PE_NAME,
                3,
                b's',
                b'i',
                b'p'
            ])),
            vec![Ok(Err(Skip::PersistenceEngine)), ok2]
        );
        // An unknown parameter: skippable with F_PARAM, else the entry is skipped.
        assert_eq!(
            decode_all(&with_params(&[opt::F_PARAM | 9, 1, 0])),
            vec![Ok(Ok(tcp(1, 1))), ok2]
        );
        assert_eq!(
            decode_all(&with_params(&[9, 1, 0])),
            vec![Ok(Err(Skip::UnknownParameter)), ok2]
        );
        // ... and what follows an unknown mandatory parameter is not read at all.
        assert_eq!(
            decode_all(&with_params(&[9, 1, 0, opt::SEQ_DATA, 4, 0, 0, 0, 0])),
            vec![Ok(Err(Skip::UnknownParameter)), ok2]
        );
        // Malformed parameters drop the rest of the message.
        for bad in [
            &[opt::SEQ_DATA, 4, 0, 0, 0, 0][..], // wrong length
            &[opt::F_PARAM | 9, 0],              // empty
            &[opt::F_PARAM | 9, 9, 0],           // runs past the entry
            &[
                opt::PE_NAME,
                17,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ],
        ] {
            assert_eq!(
                decode_all(&with_params(bad)),
                vec![Err(EntryError::BadParameter)],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn entry_level_checks() {
        let good = encode_all(1472, &[tcp(1, 1), tcp(2, 1)]).remove(0);
        let mut m = good.clone();
        m[8 + 2] |= 0x10; // entry version 1
        assert_eq!(decode_all(&m), vec![Err(EntryError::UnknownVersion)]);
        let mut m = good.clone();
        m[8] = 2; // type 2: not IPv6, not 0
        assert_eq!(decode_all(&m), vec![Err(EntryError::UnknownType)]);
        let mut m = good.clone();
        m[8 + 3] = 200; // size past the datagram
        assert_eq!(decode_all(&m), vec![Err(EntryError::Overrun)]);
        let mut m = good.clone();
        m[4] = 3; // three entries announced, two present
        assert_eq!(decode_all(&m).last(), Some(&Err(EntryError::Overrun)));
        let mut m = good.clone();
        m[8 + 9] = 11; // TCP state 11 does not exist
        assert_eq!(decode_all(&m)[0], Ok(Err(Skip::InvalidState)));
        let mut m = good;
        m[8 + 1] = 132; // SCTP
        assert_eq!(decode_all(&m)[0], Ok(Err(Skip::UnsupportedProtocol)));
    }

    #[test]
    fn version_zero_messages() {
        // Two v0 entries, the first with sequence options (flags IN_SEQ).
        let mut m = vec![2, 5, 0, 0];
        let entry = |m: &mut Vec<u8>, flags: u16, client: u8| {
            m.extend_from_slice(&[0, TCP]);
            m.extend_from_slice(&40_000u16.to_be_bytes());
            m.extend_from_slice(&80u16.to_be_bytes());
            m.extend_from_slice(&8080u16.to_be_bytes());
            m.extend_from_slice(&[198, 51, 100, client, 192, 0, 2, 10, 10, 0, 0, 11]);
            m.extend_from_slice(&flags.to_be_bytes());
            m.extend_from_slice(&1u16.to_be_bytes());
        };
        entry(&mut m, flags::IN_SEQ as u16, 1);
        m.extend_from_slice(&[0; 24]);
        entry(&mut m, 0, 2);
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        let msg = Message::parse(&m).unwrap();
        assert_eq!((msg.version(), msg.syncid()), (Version::V0, 5));
        let got: Vec<SyncConn> = msg.entries().map(|r| r.unwrap().unwrap()).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].caddr, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)));
        assert_eq!((got[1].dport, got[1].timeout, got[1].fwmark), (8080, 0, 0));
        // Cut short: the second entry overruns.
        m.truncate(m.len() - 1);
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        let r: Vec<_> = Message::parse(&m).unwrap().entries().collect();
        assert_eq!(r.last(), Some(&Err(EntryError::Overrun)));
    }

    fn arb_conn() -> impl Strategy<Value = SyncConn> {
        (
            any::<bool>(),
            (
                prop_oneof![Just(TCP), Just(UDP), Just(0), any::<u8>()],
                any::<u32>(),
                0u16..12,
            ),
            (any::<u16>(), any::<u16>(), any::<u16>()),
            (any::<u32>(), any::<u32>()),
            (any::<u128>(), any::<u128>(), any::<u128>()),
        )
            .prop_map(|(v6, (p, f, s), (cp, vp, dp), (m, t), (c, v, d))| {
                let a = |x: u128| {
                    if v6 {
                        IpAddr::V6(Ipv6Addr::from(x))
                    } else {
                        IpAddr::V4(Ipv4Addr::from(x as u32))
                    }
                };
                SyncConn {
                    protocol: p,
                    flags: f,
                    state: s,
                    cport: cp,
                    vport: vp,
                    dport: dp,
                    fwmark: m,
                    timeout: t,
                    caddr: a(c),
                    vaddr: a(v),
                    daddr: a(d),
                }
            })
    }

    proptest! {
        #[test]
        fn encode_then_decode_gives_every_connection_back(
            conns in proptest::collection::vec(arb_conn(), 1..120),
            maxlen in 1usize..3000,
        ) {
            let mut back = Vec::new();
            for m in encode_all(maxlen, &conns) {
                prop_assert!(m.len() <= maxlen.max(8 + 72));
                let msg = Message::parse(&m).unwrap();
                prop_assert_eq!(msg.version(), Version::V1);
                for r in msg.entries() {
                    // Entries the kernel would skip are skipped here too; the rest come
                    // back exactly.
                    match r.unwrap() {
                        Ok(c) => back.push(Ok(c)),
                        Err(s) => back.push(Err(s)),
                    }
                }
            }
            prop_assert_eq!(back.len(), conns.len());
            for (b, c) in back.iter().zip(&conns) {
                prop_assert_eq!(b, &check_state(*c));
            }
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(m) = Message::parse(&bytes) {
                for r in m.entries() {
                    let _ = r;
                }
            }
        }

        #[test]
        fn decoding_damaged_messages_never_panics(
            conns in proptest::collection::vec(arb_conn(), 1..20),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            for mut m in encode_all(1472, &conns) {
                for (at, x) in &flips {
                    let i = at % m.len();
                    m[i] ^= x;
                }
                if let Ok(msg) = Message::parse(&m) {
                    prop_assert!(msg.entries().count() <= 255);
                }
            }
        }
    }
}
