//! Capture files: the replay backend's I/O.
//!
//! Reads classic pcap (the libpcap format tcpdump writes: microsecond and nanosecond, either
//! byte order) and pcapng (what Wireshark and dumpcap write by default: Section Header,
//! Interface Description, Enhanced, Simple and the obsolete Packet Blocks, either byte
//! order, several sections, `if_tsresol` and `if_tsoffset`; other blocks are skipped).
//! Writes microsecond, little-endian, `LINKTYPE_ETHERNET` classic pcap, which tcpdump,
//! tshark and Wireshark read. Why by hand and not a crate: `docs/decisions.md`.

use std::io::{self, Read, Write};

use thiserror::Error;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record fastlb accepts; bigger ones are corrupt captures.
const MAX_RECORD: u32 = 256 * 1024;

/// A capture that fastlb cannot read.
#[derive(Debug, Error)]
pub enum PcapError {
    /// Reading failed.
    #[error("reading capture: {0}")]
    Io(#[from] io::Error),
    /// Neither a classic pcap nor a pcapng file.
    #[error("not a pcap or pcapng file (magic {0:#010x})")]
    BadMagic(u32),
    /// The link type is not Ethernet.
    #[error("link type {0} is not Ethernet (1)")]
    LinkType(u32),
    /// A pcapng block is truncated or inconsistent.
    #[error("pcapng block at byte {offset}: {what}")]
    BadBlock {
        /// Where the block starts in the file.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// A record is truncated or absurd.
    #[error("record {index}: {what}")]
    BadRecord {
        /// 0-based record index.
        index: u64,
        /// What is wrong.
        what: &'static str,
    },
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Capture timestamp in microseconds since the Unix epoch.
    pub ts_micros: u64,
    /// The frame's bytes as captured.
    pub data: Vec<u8>,
    /// The frame's length on the wire (may exceed `data.len()` if the capture was cut).
    pub orig_len: u32,
}

/// Reads records from a capture: classic pcap or pcapng, told apart by the first four bytes.
#[derive(Debug)]
pub struct PcapReader<R> {
    inner: R,
    format: Format,
    index: u64,
}

#[derive(Debug)]
enum Format {
    Classic { swapped: bool, nanos: bool },
    Ng(NgState),
}

/// What a pcapng reader must remember: the section's byte order and its interfaces.
#[derive(Debug, Default)]
struct NgState {
    swapped: bool,
    interfaces: Vec<Interface>,
    /// Where the next block starts, for error messages.
    offset: u64,
    /// The last packet's time: a Simple Packet Block has none and takes this one.
    last_ts: u64,
}

/// An Interface Description Block's link type, snap length and clock.
#[derive(Copy, Clone, Debug)]
struct Interface {
    linktype: u16,
    snaplen: u32,
    /// Timestamp units per second (`if_tsresol`; 10^6 unless said otherwise).
    units_per_sec: u64,
    /// Seconds to add to every timestamp (`if_tsoffset`).
    offset_secs: i64,
}

/// pcapng block types.
const NG_SECTION_HEADER: u32 = 0x0a0d_0d0a;
const NG_INTERFACE: u32 = 1;
const NG_PACKET_OBSOLETE: u32 = 2;
const NG_SIMPLE_PACKET: u32 = 3;
const NG_ENHANCED_PACKET: u32 = 6;
/// The Section Header Block's byte-order magic, as written by the capturing machine.
const NG_BYTE_ORDER: u32 = 0x1a2b_3c4d;
/// Largest pcapng block fastlb reads: a largest record and generous options.
const NG_MAX_BLOCK: u32 = MAX_RECORD + 64 * 1024;

impl<R: Read> PcapReader<R> {
    /// Reads and checks the file header: a classic pcap global header (Ethernet link type),
    /// or a pcapng Section Header Block.
    pub fn new(mut inner: R) -> Result<PcapReader<R>, PcapError> {
        let mut magic = [0u8; 4];
        inner.read_exact(&mut magic)?;
        let magic = u32::from_le_bytes(magic);
        if magic == NG_SECTION_HEADER {
            let mut r = PcapReader {
                inner,
                format: Format::Ng(NgState::default()),
                index: 0,
            };
            let mut len_and_bom = [0u8; 8];
            if read_full(&mut r.inner, &mut len_and_bom)? != 8 {
                return Err(r.bad_block("truncated section header"));
            }
            r.ng_section(len_and_bom)?;
            return Ok(r);
        }
        let (swapped, nanos) = match magic {
            MAGIC_MICROS => (false, false),
            MAGIC_NANOS => (false, true),
            m if m.swap_bytes() == MAGIC_MICROS => (true, false),
            m if m.swap_bytes() == MAGIC_NANOS => (true, true),
            m => return Err(PcapError::BadMagic(m)),
        };
        let mut hdr = [0u8; 20];
        inner.read_exact(&mut hdr)?;
        let r = PcapReader {
            inner,
            format: Format::Classic { swapped, nanos },
            index: 0,
        };
        let linktype = r.u32(&hdr[16..20]);
        if linktype != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(linktype));
        }
        Ok(r)
    }

    /// Whether the capture is pcapng.
    pub fn is_pcapng(&self) -> bool {
        matches!(self.format, Format::Ng(_))
    }

    fn swapped(&self) -> bool {
        match &self.format {
            Format::Classic { swapped, .. } => *swapped,
            Format::Ng(ng) => ng.swapped,
        }
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let v = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        if self.swapped() {
            v.swap_bytes()
        } else {
            v
        }
    }

    fn u16(&self, b: &[u8]) -> u16 {
        let v = u16::from_le_bytes(b[..2].try_into().expect("2 bytes"));
        if self.swapped() {
            v.swap_bytes()
        } else {
            v
        }
    }

    /// The next record, or `None` at the end of the capture.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
        let nanos = match self.format {
            Format::Classic { nanos, .. } => nanos,
            Format::Ng(_) => return self.next_ng_record(),
        };
        let mut hdr = [0u8; 16];
        match read_full(&mut self.inner, &mut hdr)? {
            0 => return Ok(None),
            16 => {}
            _ => return Err(self.bad("truncated record header")),
        }
        let secs = u64::from(self.u32(&hdr[0..4]));
        let frac = u64::from(self.u32(&hdr[4..8]));
        let incl = self.u32(&hdr[8..12]);
        let orig_len = self.u32(&hdr[12..16]);
        if incl > MAX_RECORD {
            return Err(self.bad("record longer than 256 KiB"));
        }
        let mut data = vec![0u8; incl as usize];
        if read_full(&mut self.inner, &mut data)? != data.len() {
            return Err(self.bad("truncated record data"));
        }
        let sub = if nanos { frac / 1000 } else { frac };
        self.index += 1;
        Ok(Some(Record {
            ts_micros: secs * 1_000_000 + sub,
            data,
            orig_len,
        }))
    }

    fn bad(&self, what: &'static str) -> PcapError {
        PcapError::BadRecord {
            index: self.index,
            what,
        }
    }

    fn ng(&mut self) -> &mut NgState {
        match &mut self.format {
            Format::Ng(ng) => ng,
            Format::Classic { .. } => unreachable!("pcapng state of a classic capture"),
        }
    }

    fn bad_block(&self, what: &'static str) -> PcapError {
        let offset = match &self.format {
            Format::Ng(ng) => ng.offset,
            Format::Classic { .. } => 0,
        };
        PcapError::BadBlock { offset, what }
    }

    /// Reads a block's body after its first `read` bytes, and checks the trailing length.
    fn ng_body(&mut self, len: u32, read: u32) -> Result<Vec<u8>, PcapError> {
        if len % 4 != 0 {
            return Err(self.bad_block("block length not a multiple of 4"));
        }
        if len > NG_MAX_BLOCK {
            return Err(self.bad_block("block longer than 320 KiB"));
        }
        let mut body = vec![0u8; (len - read) as usize];
        if read_full(&mut self.inner, &mut body)? != body.len() {
            return Err(self.bad_block("truncated block"));
        }
        let trailer = body.split_off(body.len() - 4);
        if self.u32(&trailer) != len {
            return Err(self.bad_block("trailing block length differs from the leading one"));
        }
        Ok(body)
    }

    fn next_ng_record(&mut self) -> Result<Option<Record>, PcapError> {
        loop {
            let mut hdr = [0u8; 8];
            match read_full(&mut self.inner, &mut hdr)? {
                0 => return Ok(None),
                8 => {}
                _ => return Err(self.bad_block("truncated block header")),
            }
            let kind = u32::from_le_bytes(hdr[0..4].try_into().expect("4 bytes"));
            if kind == NG_SECTION_HEADER {
                // A new section: its own byte order, read from its header.
                let mut len_and_bom = [0u8; 8];
                len_and_bom[..4].copy_from_slice(&hdr[4..8]);
                if read_full(&mut self.inner, &mut len_and_bom[4..])? != 4 {
                    return Err(self.bad_block("truncated section header"));
                }
                self.ng_section(len_and_bom)?;
                continue;
            }
            let kind = self.u32(&hdr[0..4]);
            let len = self.u32(&hdr[4..8]);
            if len < 12 {
                return Err(self.bad_block("block shorter than 12 bytes"));
            }
            let body = self.ng_body(len, 8)?;
            let record = match kind {
                NG_INTERFACE => {
                    self.ng_interface(&body)?;
                    None
                }
                NG_ENHANCED_PACKET => Some(self.ng_packet(&body, false)?),
                NG_PACKET_OBSOLETE => Some(self.ng_packet(&body, true)?),
                NG_SIMPLE_PACKET => Some(self.ng_simple(&body)?),
                // Name resolution, statistics, custom, decryption secrets...: not packets.
                _ => None,
            };
            self.ng().offset += u64::from(len);
            if let Some(r) = record {
                self.index += 1;
                return Ok(Some(r));
            }
        }
    }

    /// The rest of a Section Header Block whose type was just read; `bytes` are its length
    /// and byte-order magic. Its byte order holds for the blocks after it, and its
    /// interfaces start afresh.
    fn ng_section(&mut self, bytes: [u8; 8]) -> Result<(), PcapError> {
        let bom = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let swapped = match bom {
            NG_BYTE_ORDER => false,
            b if b.swap_bytes() == NG_BYTE_ORDER => true,
            _ => return Err(self.bad_block("section header with a bad byte-order magic")),
        };
        let ng = self.ng();
        ng.swapped = swapped;
        ng.interfaces.clear();
        let len = self.u32(&bytes[0..4]);
        // Type, length, byte order, version (4), section length (8), trailing length.
        if len < 28 {
            return Err(self.bad_block("section header shorter than 28 bytes"));
        }
        let body = self.ng_body(len, 12)?;
        if self.u16(&body[0..2]) != 1 {
            return Err(self.bad_block("pcapng major version is not 1"));
        }
        self.ng().offset += u64::from(len);
        Ok(())
    }

    fn ng_interface(&mut self, body: &[u8]) -> Result<(), PcapError> {
        if body.len() < 8 {
            return Err(self.bad_block("interface description shorter than 20 bytes"));
        }
        let mut iface = Interface {
            linktype: self.u16(&body[0..2]),
            snaplen: self.u32(&body[4..8]),
            units_per_sec: 1_000_000,
            offset_secs: 0,
        };
        // Options: code (2), length (2), value padded to 4; code 0 ends them.
        let mut opts = &body[8..];
        while opts.len() >= 4 {
            let code = self.u16(&opts[0..2]);
            let len = usize::from(self.u16(&opts[2..4]));
            let padded = len.div_ceil(4) * 4;
            if code == 0 {
                break;
            }
            if opts.len() < 4 + padded {
                return Err(self.bad_block("interface option runs past its block"));
            }
            let value = &opts[4..4 + len];
            match (code, len) {
                // if_tsresol: 10^-v seconds, or 2^-v with the top bit set.
                (9, 1) => {
                    let v = value[0];
                    iface.units_per_sec = if v & 0x80 == 0 {
                        10u64
                            .checked_pow(u32::from(v))
                            .ok_or_else(|| self.bad_block("if_tsresol beyond 10^-19 s"))?
                    } else {
                        1u64.checked_shl(u32::from(v & 0x7f))
                            .ok_or_else(|| self.bad_block("if_tsresol beyond 2^-63 s"))?
                    };
                }
                // if_tsoffset: seconds, a signed 64-bit number.
                (14, 8) => {
                    let raw = u64::from_le_bytes(value.try_into().expect("8 bytes"));
                    iface.offset_secs = (if self.swapped() {
                        raw.swap_bytes()
                    } else {
                        raw
                    }) as i64;
                }
                _ => {}
            }
            opts = &opts[4 + padded..];
        }
        self.ng().interfaces.push(iface);
        Ok(())
    }

    fn ng_iface(&self, id: u32) -> Result<Interface, PcapError> {
        let iface = match &self.format {
            Format::Ng(ng) => ng.interfaces.get(id as usize).copied(),
            Format::Classic { .. } => None,
        }
        .ok_or_else(|| self.bad("packet of an interface not described before it"))?;
        if u32::from(iface.linktype) != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(u32::from(iface.linktype)));
        }
        Ok(iface)
    }

    /// An Enhanced Packet Block, or with `obsolete` a Packet Block (16-bit interface id).
    fn ng_packet(&mut self, body: &[u8], obsolete: bool) -> Result<Record, PcapError> {
        if body.len() < 20 {
            return Err(self.bad("packet block shorter than 32 bytes"));
        }
        let id = if obsolete {
            u32::from(self.u16(&body[0..2]))
        } else {
            self.u32(&body[0..4])
        };
        let iface = self.ng_iface(id)?;
        let ts = (u64::from(self.u32(&body[4..8])) << 32) | u64::from(self.u32(&body[8..12]));
        let caplen = self.u32(&body[12..16]);
        let orig_len = self.u32(&body[16..20]);
        if caplen > MAX_RECORD {
            return Err(self.bad("record longer than 256 KiB"));
        }
        let data = body
            .get(20..20 + caplen as usize)
            .ok_or_else(|| self.bad("captured length runs past its block"))?
            .to_vec();
        let micros = u128::from(ts) * 1_000_000 / u128::from(iface.units_per_sec);
        let offset = i128::from(iface.offset_secs) * 1_000_000;
        let ts_micros = u64::try_from(micros as i128 + offset)
            .map_err(|_| self.bad("timestamp before 1970 or beyond 2^64 µs"))?;
        self.ng().last_ts = ts_micros;
        Ok(Record {
            ts_micros,
            data,
            orig_len,
        })
    }

    /// A Simple Packet Block: interface 0, no timestamp (the previous packet's is used),
    /// captured length the smaller of the original length and the interface's snap length.
    fn ng_simple(&mut self, body: &[u8]) -> Result<Record, PcapError> {
        if body.len() < 4 {
            return Err(self.bad("simple packet block shorter than 16 bytes"));
        }
        let iface = self.ng_iface(0)?;
        let orig_len = self.u32(&body[0..4]);
        let mut caplen = orig_len;
        if iface.snaplen != 0 {
            caplen = caplen.min(iface.snaplen);
        }
        if caplen > MAX_RECORD {
            return Err(self.bad("record longer than 256 KiB"));
        }
        let data = body
            .get(4..4 + caplen as usize)
            .ok_or_else(|| self.bad("packet runs past its block"))?
            .to_vec();
        let ts_micros = self.ng().last_ts;
        Ok(Record {
            ts_micros,
            data,
            orig_len,
        })
    }
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes a microsecond, little-endian, Ethernet pcap stream.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    inner: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header (snaplen 262144).
    pub fn new(mut inner: W) -> io::Result<PcapWriter<W>> {
        let mut hdr = Vec::with_capacity(24);
        hdr.extend_from_slice(&MAGIC_MICROS.to_le_bytes());
        hdr.extend_from_slice(&2u16.to_le_bytes());
        hdr.extend_from_slice(&4u16.to_le_bytes());
        hdr.extend_from_slice(&0i32.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        hdr.extend_from_slice(&262_144u32.to_le_bytes());
        hdr.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        inner.write_all(&hdr)?;
        Ok(PcapWriter { inner })
    }

    /// Appends one frame with timestamp `ts_micros`.
    pub fn write(&mut self, ts_micros: u64, data: &[u8]) -> io::Result<()> {
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&((ts_micros / 1_000_000) as u32).to_le_bytes());
        hdr[4..8].copy_from_slice(&((ts_micros % 1_000_000) as u32).to_le_bytes());
        hdr[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        hdr[12..16].copy_from_slice(&(data.len() as u32).to_le_bytes());
        self.inner.write_all(&hdr)?;
        self.inner.write_all(data)
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(1_500_000, &[1, 2, 3]).unwrap();
        w.write(2_000_001, &[4; 60]).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(
            (a.ts_micros, a.data.as_slice()),
            (1_500_000, &[1u8, 2, 3][..])
        );
        let b = r.next_record().unwrap().unwrap();
        assert_eq!((b.ts_micros, b.data.len(), b.orig_len), (2_000_001, 60, 60));
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn big_endian_nanosecond_capture() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC_NANOS.to_be_bytes());
        bytes.extend_from_slice(&[0, 2, 0, 4]);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&65535u32.to_be_bytes());
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(&5_000u32.to_be_bytes());
        bytes.extend_from_slice(&2u32.to_be_bytes());
        bytes.extend_from_slice(&2u32.to_be_bytes());
        bytes.extend_from_slice(&[9, 9]);
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!((rec.ts_micros, rec.data), (3_000_005, vec![9, 9]));
    }

    #[test]
    fn rejects_unknown_magic_and_truncation() {
        let junk = [0x7f, b'E', b'L', b'F', 0, 0, 0, 0];
        assert_eq!(
            PcapReader::new(&junk[..]).unwrap_err().to_string(),
            "not a pcap or pcapng file (magic 0x464c457f)"
        );
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(0, &[1, 2, 3, 4]).unwrap();
        let mut bytes = w.finish().unwrap();
        bytes.pop();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::BadRecord { .. })));
    }

    /// pcapng blocks, written in either byte order.
    struct Ng {
        big: bool,
        bytes: Vec<u8>,
    }

    impl Ng {
        fn u16(&self, v: u16) -> [u8; 2] {
            if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }
        fn u32(&self, v: u32) -> [u8; 4] {
            if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }
        fn block(&mut self, kind: u32, body: &[u8]) -> &mut Ng {
            let mut body = body.to_vec();
            while body.len() % 4 != 0 {
                body.push(0);
            }
            let len = body.len() as u32 + 12;
            let (k, l) = (self.u32(kind), self.u32(len));
            self.bytes.extend_from_slice(&k);
            self.bytes.extend_from_slice(&l);
            self.bytes.extend_from_slice(&body);
            self.bytes.extend_from_slice(&l);
            self
        }
        fn section(&mut self, big: bool) -> &mut Ng {
            self.big = big;
            let mut body = self.u32(NG_BYTE_ORDER).to_vec();
            body.extend_from_slice(&self.u16(1));
            body.extend_from_slice(&self.u16(0));
            body.extend_from_slice(&[0xff; 8]);
            self.block(NG_SECTION_HEADER, &body)
        }
        /// An Ethernet interface; `tsresol` as the option's byte, if any.
        fn interface(&mut self, snaplen: u32, tsresol: Option<u8>) -> &mut Ng {
            let mut body = self.u16(1).to_vec();
            body.extend_from_slice(&[0, 0]);
            body.extend_from_slice(&self.u32(snaplen));
            if let Some(r) = tsresol {
                body.extend_from_slice(&self.u16(9));
                body.extend_from_slice(&self.u16(1));
                body.extend_from_slice(&[r, 0, 0, 0]);
                body.extend_from_slice(&[0, 0, 0, 0]);
            }
            self.block(NG_INTERFACE, &body)
        }
        fn enhanced(&mut self, iface: u32, ts: u64, data: &[u8], orig: u32) -> &mut Ng {
            let mut body = self.u32(iface).to_vec();
            body.extend_from_slice(&self.u32((ts >> 32) as u32));
            body.extend_from_slice(&self.u32(ts as u32));
            body.extend_from_slice(&self.u32(data.len() as u32));
            body.extend_from_slice(&self.u32(orig));
            body.extend_from_slice(data);
            self.block(NG_ENHANCED_PACKET, &body)
        }
        fn simple(&mut self, data: &[u8]) -> &mut Ng {
            let mut body = self.u32(data.len() as u32).to_vec();
            body.extend_from_slice(data);
            self.block(NG_SIMPLE_PACKET, &body)
        }
    }

    fn records(bytes: &[u8]) -> Result<Vec<Record>, PcapError> {
        let mut r = PcapReader::new(bytes)?;
        assert!(r.is_pcapng());
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok(out)
    }

    #[test]
    fn pcapng_in_both_byte_orders_with_every_packet_block() {
        for big in [false, true] {
            let mut ng = Ng {
                big,
                bytes: Vec::new(),
            };
            ng.section(big)
                .interface(0, None)
                // Nanosecond clock on interface 1.
                .interface(0, Some(9))
                .enhanced(0, 1_500_000, &[1, 2, 3], 3)
                // A name resolution block: skipped.
                .block(4, &[0; 8])
                .enhanced(1, 2_000_000_123_456, &[4; 5], 60)
                .simple(&[7, 7]);
            let recs = records(&ng.bytes).unwrap();
            let got: Vec<_> = recs
                .iter()
                .map(|r| (r.ts_micros, r.data.clone(), r.orig_len))
                .collect();
            assert_eq!(
                got,
                [
                    (1_500_000, vec![1, 2, 3], 3),
                    (2_000_000_123, vec![4; 5], 60),
                    // No timestamp in a simple packet: the one before's.
                    (2_000_000_123, vec![7, 7], 2),
                ],
                "big endian: {big}"
            );
        }
    }

    #[test]
    fn pcapng_sections_change_byte_order_and_interfaces() {
        let mut ng = Ng {
            big: false,
            bytes: Vec::new(),
        };
        ng.section(false)
            .interface(0, Some(0x80 | 10))
            .enhanced(0, 1024 * 3, &[1], 1)
            .section(true)
            // The simple packet is cut to interface 0's snap length.
            .interface(2, None)
            .simple(&[5, 6, 7, 8]);
        let recs = records(&ng.bytes).unwrap();
        assert_eq!(
            (recs[0].ts_micros, recs[0].data.as_slice()),
            (3_000_000, &[1u8][..])
        );
        assert_eq!(
            (recs[1].data.as_slice(), recs[1].orig_len),
            (&[5u8, 6][..], 4)
        );
    }

    #[test]
    fn malformed_pcapng_is_refused_with_what_and_where() {
        let good = || {
            let mut ng = Ng {
                big: false,
                bytes: Vec::new(),
            };
            ng.section(false).interface(0, None);
            ng
        };
        let err = |bytes: &[u8]| records(bytes).unwrap_err().to_string();
        // A packet of an interface never described.
        let mut ng = good();
        ng.enhanced(3, 0, &[1], 1);
        assert_eq!(
            err(&ng.bytes),
            "record 0: packet of an interface not described before it"
        );
        // Trailing length differs.
        let mut ng = good();
        ng.enhanced(0, 0, &[1], 1);
        let n = ng.bytes.len();
        ng.bytes[n - 1] = 9;
        assert_eq!(
            err(&ng.bytes),
            "pcapng block at byte 48: trailing block length differs from the leading one"
        );
        // Truncated in the middle of a block.
        let mut ng = good();
        ng.enhanced(0, 0, &[1, 2, 3, 4, 5, 6, 7, 8], 8);
        ng.bytes.truncate(ng.bytes.len() - 6);
        assert_eq!(err(&ng.bytes), "pcapng block at byte 48: truncated block");
        // Captured length beyond the block.
        let mut ng = good();
        ng.enhanced(0, 0, &[1, 2, 3, 4], 4);
        ng.bytes[48 + 20] = 200;
        assert_eq!(
            err(&ng.bytes),
            "record 0: captured length runs past its block"
        );
        // A bad byte-order magic, a length not a multiple of 4, an absurd length.
        let mut ng = good();
        ng.bytes[8] = 0;
        assert_eq!(
            err(&ng.bytes),
            "pcapng block at byte 0: section header with a bad byte-order magic"
        );
        let mut ng = good();
        ng.bytes[28 + 4] = 22;
        assert_eq!(
            err(&ng.bytes),
            "pcapng block at byte 28: block length not a multiple of 4"
        );
        let mut ng = good();
        ng.bytes[28 + 7] = 0x40;
        assert_eq!(
            err(&ng.bytes),
            "pcapng block at byte 28: block longer than 320 KiB"
        );
        // Not Ethernet.
        let mut ng = good();
        ng.bytes[28 + 8] = 101;
        ng.enhanced(0, 0, &[1], 1);
        assert_eq!(err(&ng.bytes), "link type 101 is not Ethernet (1)");
    }
}
