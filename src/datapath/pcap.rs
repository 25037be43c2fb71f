//! Capture files: the replay backend's I/O, through the `pcap-file` crate.
//!
//! Reads classic pcap (the libpcap format tcpdump writes: microsecond and nanosecond, either
//! byte order) and pcapng (what Wireshark and dumpcap write by default: Section Header,
//! Interface Description, Enhanced, Simple and the obsolete Packet Blocks, either byte
//! order, several sections, `if_tsresol` and `if_tsoffset`; other blocks are skipped).
//! Writes microsecond, little-endian, `LINKTYPE_ETHERNET` classic pcap, which tcpdump,
//! tshark and Wireshark read.
//!
//! The crate splits the file into records and blocks and checks their lengths; this module
//! gives them their meaning where pcap-file 2.0 gets it wrong or leaves it to the caller
//! (`docs/decisions.md`, "pcap and pcapng through pcap-file"): an Enhanced Packet Block's
//! timestamp is in the interface's `if_tsresol` units, not always nanoseconds; an obsolete
//! Packet Block's timestamp is two 32-bit halves, high first; a classic record may be cut
//! below its original length by the snap length; a Simple Packet Block's data is cut to the
//! interface's snap length and carries no timestamp.

use std::io::{self, Chain, Cursor, Read, Write};
use std::time::Duration;

use byteorder_slice::{BigEndian, LittleEndian};
use pcap_file::pcap::{PcapHeader, PcapPacket};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::{
    Block, ENHANCED_PACKET_BLOCK, INTERFACE_DESCRIPTION_BLOCK, PACKET_BLOCK, SECTION_HEADER_BLOCK,
    SIMPLE_PACKET_BLOCK,
};
use pcap_file::pcapng::PcapNgReader;
use pcap_file::{DataLink, Endianness, TsResolution};
use thiserror::Error;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record fastlb accepts; bigger ones are corrupt captures.
const MAX_RECORD: u32 = 256 * 1024;
/// The Section Header Block's byte-order magic, as written by the capturing machine.
const NG_BYTE_ORDER: u32 = 0x1a2b_3c4d;
/// Largest pcapng block fastlb reads: a largest record and generous options.
const NG_MAX_BLOCK: u32 = MAX_RECORD + 64 * 1024;

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

/// What the crate reads from: the bytes fastlb already read to tell the formats apart, then
/// the rest of the stream.
type Source<R> = Chain<Cursor<Vec<u8>>, R>;

/// Reads records from a capture: classic pcap or pcapng, told apart by the first four bytes.
pub struct PcapReader<R: Read> {
    format: Format<R>,
    /// Records returned so far, for error messages.
    index: u64,
}

enum Format<R: Read> {
    Classic {
        reader: pcap_file::pcap::PcapReader<Source<R>>,
        nanos: bool,
    },
    Ng(Box<NgState<R>>),
}

/// What a pcapng reader must remember besides the crate's state: the section's interfaces
/// as fastlb reads them, where the next block starts, and the last packet's time.
struct NgState<R: Read> {
    reader: PcapNgReader<Source<R>>,
    interfaces: Vec<Interface>,
    /// Where the next block starts, for error messages.
    offset: u64,
    /// The last packet's time: a Simple Packet Block has none and takes this one.
    last_ts: u64,
}

/// An Interface Description Block's link type, snap length and clock.
#[derive(Copy, Clone, Debug)]
struct Interface {
    linktype: u32,
    snaplen: u32,
    /// Timestamp units per second (`if_tsresol`; 10^6 unless said otherwise).
    units_per_sec: u64,
    /// Seconds to add to every timestamp (`if_tsoffset`).
    offset_secs: i64,
}

impl<R: Read> std::fmt::Debug for PcapReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapReader")
            .field("pcapng", &self.is_pcapng())
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl<R: Read> PcapReader<R> {
    /// Reads and checks the file header: a classic pcap global header (Ethernet link type),
    /// or a pcapng Section Header Block.
    pub fn new(mut inner: R) -> Result<PcapReader<R>, PcapError> {
        let mut magic = [0u8; 4];
        inner.read_exact(&mut magic)?;
        let m = u32::from_le_bytes(magic);
        if m == SECTION_HEADER_BLOCK {
            // The block length and byte-order magic, read here to know the block's length
            // (the crate does not say it) and to name a bad magic clearly.
            let mut len_and_bom = [0u8; 8];
            let section_error = |what| PcapError::BadBlock { offset: 0, what };
            if read_full(&mut inner, &mut len_and_bom)? != 8 {
                return Err(section_error("truncated section header"));
            }
            let bom = u32::from_le_bytes(len_and_bom[4..8].try_into().expect("4 bytes"));
            let len = u32::from_le_bytes(len_and_bom[0..4].try_into().expect("4 bytes"));
            let len = match bom {
                NG_BYTE_ORDER => len,
                b if b.swap_bytes() == NG_BYTE_ORDER => len.swap_bytes(),
                _ => return Err(section_error("section header with a bad byte-order magic")),
            };
            let mut seen = magic.to_vec();
            seen.extend_from_slice(&len_and_bom);
            let reader =
                PcapNgReader::new(Cursor::new(seen).chain(inner)).map_err(|e| ng_error(0, e))?;
            return Ok(PcapReader {
                format: Format::Ng(Box::new(NgState {
                    reader,
                    interfaces: Vec::new(),
                    offset: u64::from(len),
                    last_ts: 0,
                })),
                index: 0,
            });
        }
        if ![MAGIC_MICROS, MAGIC_NANOS].contains(&m)
            && ![MAGIC_MICROS, MAGIC_NANOS].contains(&m.swap_bytes())
        {
            return Err(PcapError::BadMagic(m));
        }
        let reader = pcap_file::pcap::PcapReader::new(Cursor::new(magic.to_vec()).chain(inner))
            .map_err(|e| match e {
                pcap_file::PcapError::IoError(e) => PcapError::Io(e),
                _ => PcapError::BadMagic(m),
            })?;
        let header = reader.header();
        let linktype = u32::from(header.datalink);
        if linktype != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(linktype));
        }
        Ok(PcapReader {
            format: Format::Classic {
                reader,
                nanos: header.ts_resolution == TsResolution::NanoSecond,
            },
            index: 0,
        })
    }

    /// Whether the capture is pcapng.
    pub fn is_pcapng(&self) -> bool {
        matches!(self.format, Format::Ng(_))
    }

    /// The next record, or `None` at the end of the capture.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
        let index = self.index;
        let rec = match &mut self.format {
            Format::Classic { reader, nanos } => classic_record(reader, *nanos, index)?,
            Format::Ng(ng) => ng.next_record(index)?,
        };
        if rec.is_some() {
            self.index += 1;
        }
        Ok(rec)
    }
}

/// The next classic record. The crate's own conversion (`next_packet`) refuses a record
/// whose original length exceeds the snap length, which is every frame of a capture taken
/// with `tcpdump -s`: the raw record is read and converted here instead.
fn classic_record<R: Read>(
    reader: &mut pcap_file::pcap::PcapReader<Source<R>>,
    nanos: bool,
    index: u64,
) -> Result<Option<Record>, PcapError> {
    let bad = |what| PcapError::BadRecord { index, what };
    let raw = match reader.next_raw_packet() {
        None => return Ok(None),
        Some(Ok(raw)) => raw,
        Some(Err(pcap_file::PcapError::IoError(e))) => {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                bad("truncated record")
            } else {
                PcapError::Io(e)
            })
        }
        Some(Err(pcap_file::PcapError::InvalidField(what))) => return Err(bad(what)),
        Some(Err(_)) => return Err(bad("malformed record")),
    };
    if raw.incl_len > MAX_RECORD {
        return Err(bad("record longer than 256 KiB"));
    }
    let frac = u64::from(raw.ts_frac);
    let sub = if nanos { frac / 1000 } else { frac };
    Ok(Some(Record {
        ts_micros: u64::from(raw.ts_sec) * 1_000_000 + sub,
        data: raw.data.into_owned(),
        orig_len: raw.orig_len,
    }))
}

/// A crate error while reading the pcapng block at `offset`, in fastlb's words.
fn ng_error(offset: u64, e: pcap_file::PcapError) -> PcapError {
    let what = match e {
        pcap_file::PcapError::IoError(e) if e.kind() != io::ErrorKind::UnexpectedEof => {
            return PcapError::Io(e)
        }
        pcap_file::PcapError::IoError(_) => "truncated block",
        pcap_file::PcapError::InvalidField(what) => match what {
            "Block: initial_length != trailer_length" => {
                "trailing block length differs from the leading one"
            }
            "Block: (initial_len % 4) != 0" => "block length not a multiple of 4",
            "Block: initial_len < 12" => "block shorter than 12 bytes",
            "SectionHeaderBlock: invalid magic number" => {
                "section header with a bad byte-order magic"
            }
            "EnhancedPacketBlock: captured_len + padding > block length" => {
                "captured length runs past its block"
            }
            other => other,
        },
        pcap_file::PcapError::Utf8Error(_) | pcap_file::PcapError::FromUtf8Error(_) => {
            "an option's text is not UTF-8"
        }
        pcap_file::PcapError::IncompleteBuffer | pcap_file::PcapError::InvalidInterfaceId(_) => {
            "malformed block"
        }
    };
    PcapError::BadBlock { offset, what }
}

impl<R: Read> NgState<R> {
    fn next_record(&mut self, index: u64) -> Result<Option<Record>, PcapError> {
        loop {
            let offset = self.offset;
            // The section's byte order, for the packet blocks; a Section Header Block
            // changes it, and is not parsed here.
            let endianness = self.reader.section().endianness;
            let raw = match self.reader.next_raw_block() {
                None => return Ok(None),
                Some(Ok(raw)) => raw,
                Some(Err(e)) => return Err(ng_error(offset, e)),
            };
            if raw.initial_len > NG_MAX_BLOCK {
                return Err(PcapError::BadBlock {
                    offset,
                    what: "block longer than 320 KiB",
                });
            }
            self.offset += u64::from(raw.initial_len);
            match raw.type_ {
                SECTION_HEADER_BLOCK => {
                    self.interfaces.clear();
                    continue;
                }
                INTERFACE_DESCRIPTION_BLOCK => {
                    let idb = self.reader.interfaces().last().expect("the crate keeps it");
                    let iface =
                        interface(idb).map_err(|what| PcapError::BadBlock { offset, what })?;
                    self.interfaces.push(iface);
                    continue;
                }
                ENHANCED_PACKET_BLOCK | PACKET_BLOCK | SIMPLE_PACKET_BLOCK => {}
                _ => continue,
            }
            let block = match endianness {
                Endianness::Big => raw.try_into_block::<BigEndian>(),
                Endianness::Little => raw.try_into_block::<LittleEndian>(),
            }
            .map_err(|e| ng_error(offset, e))?;
            let bad = |what| PcapError::BadRecord { index, what };
            // (interface, timestamp in its units or None, data, original length)
            let (id, ts, data, orig_len) = match block {
                Block::EnhancedPacket(p) => {
                    // The crate stores the raw count as nanoseconds, whatever the
                    // interface's resolution: `as_nanos` gives it back exactly.
                    let ts = u64::try_from(p.timestamp.as_nanos()).expect("from a u64");
                    (p.interface_id, Some(ts), p.data, p.original_len)
                }
                Block::Packet(p) => {
                    // High half first in either byte order; the crate reads one 64-bit
                    // number, which in a little-endian file swaps the halves.
                    let ts = match endianness {
                        Endianness::Big => p.timestamp,
                        Endianness::Little => p.timestamp.rotate_left(32),
                    };
                    (u32::from(p.interface_id), Some(ts), p.data, p.original_len)
                }
                Block::SimplePacket(p) => (0, None, p.data, p.original_len),
                _ => unreachable!("only packet blocks are parsed"),
            };
            let iface = *self
                .interfaces
                .get(id as usize)
                .ok_or_else(|| bad("packet of an interface not described before it"))?;
            if iface.linktype != LINKTYPE_ETHERNET {
                return Err(PcapError::LinkType(iface.linktype));
            }
            let mut caplen = data.len();
            if ts.is_none() {
                // A Simple Packet Block: the original length cut to the snap length; the
                // rest of the block is padding.
                caplen = orig_len as usize;
                if iface.snaplen != 0 {
                    caplen = caplen.min(iface.snaplen as usize);
                }
                if caplen > data.len() {
                    return Err(bad("packet runs past its block"));
                }
            }
            if caplen > MAX_RECORD as usize {
                return Err(bad("record longer than 256 KiB"));
            }
            let ts_micros = match ts {
                Some(ts) => {
                    let micros = u128::from(ts) * 1_000_000 / u128::from(iface.units_per_sec);
                    let shift = i128::from(iface.offset_secs) * 1_000_000;
                    u64::try_from(micros as i128 + shift)
                        .map_err(|_| bad("timestamp before 1970 or beyond 2^64 µs"))?
                }
                None => self.last_ts,
            };
            self.last_ts = ts_micros;
            return Ok(Some(Record {
                ts_micros,
                data: data[..caplen].to_vec(),
                orig_len,
            }));
        }
    }
}

/// What fastlb needs of an Interface Description Block.
fn interface(idb: &InterfaceDescriptionBlock<'_>) -> Result<Interface, &'static str> {
    let mut iface = Interface {
        linktype: u32::from(idb.linktype),
        snaplen: idb.snaplen,
        units_per_sec: 1_000_000,
        offset_secs: 0,
    };
    for opt in &idb.options {
        match *opt {
            // if_tsresol: 10^-v seconds, or 2^-v with the top bit set.
            InterfaceDescriptionOption::IfTsResol(v) => {
                iface.units_per_sec = if v & 0x80 == 0 {
                    10u64
                        .checked_pow(u32::from(v))
                        .ok_or("if_tsresol beyond 10^-19 s")?
                } else {
                    1u64.checked_shl(u32::from(v & 0x7f))
                        .ok_or("if_tsresol beyond 2^-63 s")?
                };
            }
            // if_tsoffset: seconds, a signed 64-bit number (the crate reads it unsigned).
            InterfaceDescriptionOption::IfTsOffset(v) => iface.offset_secs = v as i64,
            _ => {}
        }
    }
    Ok(iface)
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
    inner: pcap_file::pcap::PcapWriter<W>,
}

/// A crate error while writing, as an I/O error.
fn write_error(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
    }
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header (snaplen 262144).
    pub fn new(inner: W) -> io::Result<PcapWriter<W>> {
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: 262_144,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
        };
        let inner = pcap_file::pcap::PcapWriter::with_header(inner, header).map_err(write_error)?;
        Ok(PcapWriter { inner })
    }

    /// Appends one frame with timestamp `ts_micros`.
    pub fn write(&mut self, ts_micros: u64, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame longer than 4 GiB"))?;
        let packet = PcapPacket::new(Duration::from_micros(ts_micros), len, data);
        self.inner.write_packet(&packet).map_err(write_error)?;
        Ok(())
    }

    /// Flushes and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        let mut inner = self.inner.into_writer();
        inner.flush()?;
        Ok(inner)
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
    fn classic_record_cut_by_the_snap_length() {
        // tcpdump -s 64: the original length exceeds the snap length.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC_MICROS.to_le_bytes());
        bytes.extend_from_slice(&[2, 0, 4, 0]);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&64u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        for (secs, micros) in [(7u32, 9u32), (8, 0)] {
            bytes.extend_from_slice(&secs.to_le_bytes());
            bytes.extend_from_slice(&micros.to_le_bytes());
            bytes.extend_from_slice(&64u32.to_le_bytes());
            bytes.extend_from_slice(&1514u32.to_le_bytes());
            bytes.extend_from_slice(&[5; 64]);
        }
        bytes.extend_from_slice(&[0; 3]);
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(
            (rec.ts_micros, rec.data.len(), rec.orig_len),
            (7_000_009, 64, 1514)
        );
        assert_eq!(r.next_record().unwrap().unwrap().ts_micros, 8_000_000);
        // The third record's header is cut short: named by its index.
        assert_eq!(
            r.next_record().unwrap_err().to_string(),
            "record 2: truncated record"
        );
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
            self.block(SECTION_HEADER_BLOCK, &body)
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
            self.block(INTERFACE_DESCRIPTION_BLOCK, &body)
        }
        fn enhanced(&mut self, iface: u32, ts: u64, data: &[u8], orig: u32) -> &mut Ng {
            let mut body = self.u32(iface).to_vec();
            body.extend_from_slice(&self.u32((ts >> 32) as u32));
            body.extend_from_slice(&self.u32(ts as u32));
            body.extend_from_slice(&self.u32(data.len() as u32));
            body.extend_from_slice(&self.u32(orig));
            body.extend_from_slice(data);
            self.block(ENHANCED_PACKET_BLOCK, &body)
        }
        /// An obsolete Packet Block: 16-bit interface id and drop count.
        fn obsolete(&mut self, iface: u16, ts: u64, data: &[u8]) -> &mut Ng {
            let mut body = self.u16(iface).to_vec();
            body.extend_from_slice(&self.u16(0));
            body.extend_from_slice(&self.u32((ts >> 32) as u32));
            body.extend_from_slice(&self.u32(ts as u32));
            body.extend_from_slice(&self.u32(data.len() as u32));
            body.extend_from_slice(&self.u32(data.len() as u32));
            body.extend_from_slice(data);
            self.block(PACKET_BLOCK, &body)
        }
        fn simple(&mut self, data: &[u8]) -> &mut Ng {
            let mut body = self.u32(data.len() as u32).to_vec();
            body.extend_from_slice(data);
            self.block(SIMPLE_PACKET_BLOCK, &body)
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
                .simple(&[7, 7])
                // High half first: 2^32 µs and 5 µs.
                .obsolete(0, (1 << 32) | 5, &[8; 3]);
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
                    ((1 << 32) + 5, vec![8; 3], 3),
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
            "pcapng block at byte 48: captured length runs past its block"
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
        // A length beyond the file is a truncated block (the crate reads up to 8 MB
        // before it knows); a block that is there but absurdly long is refused as such.
        let mut ng = good();
        ng.bytes[28 + 7] = 0x40;
        assert_eq!(err(&ng.bytes), "pcapng block at byte 28: truncated block");
        let mut ng = good();
        ng.enhanced(0, 0, &vec![0; 330 * 1024], 330 * 1024);
        assert_eq!(
            err(&ng.bytes),
            "pcapng block at byte 48: block longer than 320 KiB"
        );
        // Not Ethernet.
        let mut ng = good();
        ng.bytes[28 + 8] = 101;
        ng.enhanced(0, 0, &[1], 1);
        assert_eq!(err(&ng.bytes), "link type 101 is not Ethernet (1)");
    }
}
