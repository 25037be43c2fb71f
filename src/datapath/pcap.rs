//! Classic pcap files (the libpcap format tcpdump writes): the replay backend's I/O.
//!
//! Reads microsecond and nanosecond captures in either byte order; writes microsecond,
//! little-endian, `LINKTYPE_ETHERNET` captures, which tcpdump, tshark and Wireshark read.

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
    /// Not a classic pcap file (pcapng is not supported: convert it with `editcap -F pcap`).
    #[error("not a pcap file (magic {0:#010x}); pcapng is not supported, convert with `editcap -F pcap`")]
    BadMagic(u32),
    /// The link type is not Ethernet.
    #[error("link type {0} is not Ethernet (1)")]
    LinkType(u32),
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

/// Reads records from a classic pcap stream.
#[derive(Debug)]
pub struct PcapReader<R> {
    inner: R,
    swapped: bool,
    nanos: bool,
    index: u64,
}

impl<R: Read> PcapReader<R> {
    /// Reads and checks the global header.
    pub fn new(mut inner: R) -> Result<PcapReader<R>, PcapError> {
        let mut hdr = [0u8; 24];
        inner.read_exact(&mut hdr)?;
        let magic = u32::from_le_bytes(hdr[0..4].try_into().expect("4 bytes"));
        let (swapped, nanos) = match magic {
            MAGIC_MICROS => (false, false),
            MAGIC_NANOS => (false, true),
            m if m.swap_bytes() == MAGIC_MICROS => (true, false),
            m if m.swap_bytes() == MAGIC_NANOS => (true, true),
            m => return Err(PcapError::BadMagic(m)),
        };
        let r = PcapReader {
            inner,
            swapped,
            nanos,
            index: 0,
        };
        let linktype = r.u32(&hdr[20..24]);
        if linktype != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(linktype));
        }
        Ok(r)
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let v = u32::from_le_bytes(b.try_into().expect("4 bytes"));
        if self.swapped {
            v.swap_bytes()
        } else {
            v
        }
    }

    /// The next record, or `None` at the end of the capture.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
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
        let sub = if self.nanos { frac / 1000 } else { frac };
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
    fn rejects_pcapng_and_truncation() {
        let ng = [
            0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(matches!(
            PcapReader::new(&ng[..]),
            Err(PcapError::BadMagic(_))
        ));
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(0, &[1, 2, 3, 4]).unwrap();
        let mut bytes = w.finish().unwrap();
        bytes.pop();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::BadRecord { .. })));
    }
}
