//! The connection state a director writes when it stops and reads back when it starts, so
//! that a restart or an upgrade of fastlb loses no established connection.
//!
//! ```text
//!  offset  size  field (big-endian, as the sync protocol)
//!       0     8  magic "FLBCONNS"
//!       8     2  format version, 1
//!      10     2  header length, 48
//!      12     4  records
//!      16     8  written at, milliseconds since the Unix epoch (the wall clock)
//!      24     4  longest timeout in force, seconds: the file is stale once older
//!      28     4  reserved, 0
//!      32     8  identity of the rules it was written under (services and real servers)
//!      40     8  body length
//!      48     …  records, each:
//!                  8  milliseconds the entry had left when written
//!                  …  an IPVS sync message, version 1, holding that one entry
//!                     (`ip_vs_sync.c`'s layout: state, flags, timeout, addresses, ports)
//!     end     4  CRC-32 (IEEE 802.3, zlib's) of every byte before it
//! ```
//!
//! Entries are sync messages so that one encoder and one decoder, the ones tested against
//! the kernel and tshark, describe a connection wherever it travels; what the protocol
//! lacks (how long the entry has left, rather than its whole timeout) sits beside it.
//!
//! Reading is all or nothing: [`StateFile::parse`] checks the length, the checksum, the
//! version and every record before anything is installed, and refuses a file older than
//! its longest timeout (nothing in it could still be alive), a longest timeout above the
//! 31 days a configuration or a synced entry may have, and a record with more time left
//! than that longest timeout. [`StateFile::restore`] then
//! binds each entry to this run's rules as a sync backup does (`ip_vs_find_dest`); an entry
//! whose service or real server is gone, or whose time ran out while the director was
//! down, is skipped and counted.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::sync::backup::{bind, worker_for};
use super::sync::master::entry_for;
use super::sync::{Encoder, Message, SyncConn, Version};
use crate::conn::{ConnTable, Installed, TcpState};
use crate::service::config::error::MAX_TIMEOUT_SECS;
use crate::service::{ForwardMethod, ServiceKey, ServiceTable};
use crate::time::Instant;

/// The file's first eight bytes.
pub const MAGIC: [u8; 8] = *b"FLBCONNS";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Length of the header.
pub const HEADER_LEN: usize = 48;
/// Length of the trailing checksum.
const TRAILER_LEN: usize = 4;
/// A write time this far ahead of the clock is taken as a clock that moved back.
const FUTURE_SLACK_MS: u64 = 1_000;

/// Why a state file was refused whole.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StateError {
    /// Shorter than a header and checksum, or shorter or longer than its header says.
    #[error("truncated or padded: {len} bytes where the header says {expected}")]
    Length {
        /// The file's length.
        len: usize,
        /// The length its header announces (0 when the header itself is cut).
        expected: u64,
    },
    /// Does not start with [`MAGIC`].
    #[error("not a fastlb state file (no FLBCONNS magic)")]
    Magic,
    /// Another format version.
    #[error("format version {0}, this fastlb reads version {VERSION}")]
    Version(u16),
    /// The checksum does not match the contents.
    #[error(
        "checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is damaged"
    )]
    Checksum {
        /// The CRC-32 the file carries.
        stored: u32,
        /// The CRC-32 of its contents.
        computed: u32,
    },
    /// A header field or record is malformed (a writer's bug: the checksum matched).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Older than the longest timeout in force when it was written.
    #[error("stale: written {age_s} s ago, longer than the longest timeout ({longest_s} s)")]
    Stale {
        /// Its age, seconds.
        age_s: u64,
        /// The longest timeout it was written with, seconds.
        longest_s: u32,
    },
    /// Written after now: the clock moved back, and how long entries have left is unknown.
    #[error("written {ahead_ms} ms in the future (the clock moved back?)")]
    Future {
        /// How far ahead.
        ahead_ms: u64,
    },
}

/// One record: an entry and how long it had left when written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The connection or template, as a sync message carries it.
    pub conn: SyncConn,
    /// Milliseconds it had left when the file was written.
    pub expires_in_ms: u64,
}

/// A state file checked whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateFile {
    /// When it was written, milliseconds since the Unix epoch.
    pub written_ms: u64,
    /// The longest timeout in force, seconds.
    pub longest_s: u32,
    /// [`rules_identity`] of the rules it was written under.
    pub rules: u64,
    /// The entries.
    pub records: Vec<Record>,
}

/// What writing a state file held.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Connections written.
    pub conns: usize,
    /// Persistence templates written.
    pub templates: usize,
    /// Entries left out: already expired, or addresses of two families (which a sync
    /// message cannot carry).
    pub left_out: usize,
    /// Bytes.
    pub bytes: usize,
}

/// What reading one back did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Connections installed.
    pub conns: usize,
    /// Persistence templates installed.
    pub templates: usize,
    /// Skipped: their time ran out while the director was down.
    pub expired: usize,
    /// Skipped: their service or real server is not in this run's rules.
    pub no_destination: usize,
    /// Skipped: no room in the table, or the table could not hold them.
    pub not_installed: usize,
    /// The rules differ from those the file was written under (entries are then matched
    /// one by one, as always).
    pub rules_changed: bool,
}

impl fmt::Display for Restored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connection(s) and {} template(s) restored; skipped {} expired, {} without \
             their service or real server, {} not installed",
            self.conns, self.templates, self.expired, self.no_destination, self.not_installed
        )?;
        if self.rules_changed {
            f.write_str(" (the rules changed since it was written)")?;
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch, the clock the file's write time is on.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fingerprint of what entries bind to: every service's key and its real servers'
/// addresses, ports and forwarding methods, in order (FNV-1a, 64 bits).
pub fn rules_identity(table: &ServiceTable) -> u64 {
    let mut h = Fnv::default();
    for svc in &table.services {
        match svc.config.key {
            ServiceKey::Tuple {
                protocol,
                addr,
                port,
            } => {
                h.bytes(&[1, protocol.number()]);
                h.addr(addr);
                h.bytes(&port.to_be_bytes());
            }
            ServiceKey::Fwmark { mark, ipv6 } => {
                h.bytes(&[2, u8::from(ipv6)]);
                h.bytes(&mark.to_be_bytes());
            }
        }
        for d in &svc.dests {
            h.addr(d.server.addr);
            h.bytes(&d.server.port.to_be_bytes());
            h.bytes(&[match d.server.method {
                ForwardMethod::Masquerade => 0,
                ForwardMethod::DirectRouting => 1,
                ForwardMethod::Tunnel => 2,
            }]);
        }
    }
    h.0
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn addr(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(a) => self.bytes(&a.octets()),
            IpAddr::V6(a) => self.bytes(&a.octets()),
        }
    }
}

/// CRC-32 as zlib computes it (reflected, polynomial 0xedb88320).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The longest timeout in force: every TCP state's, UDP's and every service's
/// persistence timeout, seconds.
fn longest_timeout(conns: &ConnTable, table: &ServiceTable) -> u32 {
    let t = conns.timeouts();
    let states = (0..16).filter_map(TcpState::from_index).map(|s| t.tcp(s));
    let persistence = table
        .services
        .iter()
        .filter_map(|s| s.config.persistence.map(|p| p.timeout_secs));
    states
        .chain(persistence)
        .chain([t.udp()])
        .max()
        .unwrap_or(0)
}

/// Encodes every live entry of `conns` (call it when no worker runs), bound to `table`'s
/// rules; `now` is the pipeline clock, `written_ms` the wall clock.
pub fn encode(
    conns: &ConnTable,
    table: &ServiceTable,
    now: Instant,
    written_ms: u64,
) -> (Vec<u8>, Written) {
    let mut out = vec![0u8; HEADER_LEN];
    let mut written = Written::default();
    let mut longest_ms = u64::from(longest_timeout(conns, table)) * 1000;
    let mut encoder = Encoder::new(0, 0);
    let mut records = 0u32;
    conns.for_each_described(now, |d, left_ms| {
        let conn = entry_for(d, table);
        if left_ms == 0 || encoder.push(&conn, |_| {}).is_err() {
            written.left_out += 1;
            return;
        }
        // One entry per message: the flush hands it over at once.
        encoder.flush(|m| {
            out.extend_from_slice(&left_ms.to_be_bytes());
            out.extend_from_slice(m);
        });
        records += 1;
        longest_ms = longest_ms.max(left_ms);
        if d.template {
            written.templates += 1;
        } else {
            written.conns += 1;
        }
    });
    let body_len = (out.len() - HEADER_LEN) as u64;
    let h = &mut out[..HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_be_bytes());
    h[10..12].copy_from_slice(&(HEADER_LEN as u16).to_be_bytes());
    h[12..16].copy_from_slice(&records.to_be_bytes());
    h[16..24].copy_from_slice(&written_ms.to_be_bytes());
    let longest_s = u32::try_from(longest_ms.div_ceil(1000)).unwrap_or(u32::MAX);
    h[24..28].copy_from_slice(&longest_s.to_be_bytes());
    h[32..40].copy_from_slice(&rules_identity(table).to_be_bytes());
    h[40..48].copy_from_slice(&body_len.to_be_bytes());
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    written.bytes = out.len();
    (out, written)
}

/// Writes the state of `conns` to `path` atomically: a temporary file beside it, synced,
/// then renamed over it (a crash leaves the old file or the new one, never half of one).
pub fn write(
    path: &Path,
    conns: &ConnTable,
    table: &ServiceTable,
    now: Instant,
) -> std::io::Result<Written> {
    let (bytes, written) = encode(conns, table, now, wall_ms());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| written)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl StateFile {
    /// Checks `buf` whole as of wall-clock time `now_ms`; nothing in a refused file counts.
    pub fn parse(buf: &[u8], now_ms: u64) -> Result<StateFile, StateError> {
        if buf.len() >= MAGIC.len() && buf[..MAGIC.len()] != MAGIC {
            return Err(StateError::Magic);
        }
        if buf.len() < HEADER_LEN + TRAILER_LEN {
            return Err(StateError::Length {
                len: buf.len(),
                expected: 0,
            });
        }
        let version = be_u16(buf, 8);
        if version != VERSION {
            return Err(StateError::Version(version));
        }
        let body_len = be_u64(buf, 40);
        // Saturating: a body length near 2^64 is a length error, not an overflow.
        let expected = body_len.saturating_add((HEADER_LEN + TRAILER_LEN) as u64);
        if buf.len() as u64 != expected {
            return Err(StateError::Length {
                len: buf.len(),
                expected,
            });
        }
        let (content, trailer) = buf.split_at(buf.len() - TRAILER_LEN);
        let stored = be_u32(trailer, 0);
        let computed = crc32(content);
        if stored != computed {
            return Err(StateError::Checksum { stored, computed });
        }
        if usize::from(be_u16(buf, 10)) != HEADER_LEN {
            return Err(StateError::Malformed("header length"));
        }
        if be_u32(buf, 28) != 0 {
            return Err(StateError::Malformed("header (reserved bytes)"));
        }
        let count = be_u32(buf, 12) as usize;
        let written_ms = be_u64(buf, 16);
        let longest_s = be_u32(buf, 24);
        let rules = be_u64(buf, 32);
        if written_ms > now_ms.saturating_add(FUTURE_SLACK_MS) {
            return Err(StateError::Future {
                ahead_ms: written_ms - now_ms,
            });
        }
        let age_ms = now_ms.saturating_sub(written_ms);
        if age_ms > u64::from(longest_s) * 1000 {
            return Err(StateError::Stale {
                age_s: age_ms / 1000,
                longest_s,
            });
        }
        if longest_s > MAX_TIMEOUT_SECS {
            return Err(StateError::Malformed(
                "header (a longest timeout above 31 days, the most a configuration or a \
                 synced entry takes)",
            ));
        }
        let mut body = &content[HEADER_LEN..];
        let mut records = Vec::with_capacity(count.min(body.len() / 44));
        while !body.is_empty() {
            let (record, rest) = parse_record(body)?;
            // The writer counts every entry's time left into the longest timeout.
            if record.expires_in_ms > u64::from(longest_s) * 1000 {
                return Err(StateError::Malformed(
                    "record (more time left than the longest timeout)",
                ));
            }
            records.push(record);
            body = rest;
        }
        if records.len() != count {
            return Err(StateError::Malformed("record count"));
        }
        Ok(StateFile {
            written_ms,
            longest_s,
            rules,
            records,
        })
    }

    /// Reads and checks the file at `path`; `Ok(None)` if there is none.
    pub fn load(path: &Path, now_ms: u64) -> Result<Option<StateFile>, LoadError> {
        let buf = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LoadError::Io(e)),
        };
        StateFile::parse(&buf, now_ms)
            .map(Some)
            .map_err(LoadError::Refused)
    }

    /// Installs the entries into `conns` (before the workers start: any worker's slots
    /// may be used) bound to `table`, their timers running on from where they were,
    /// less the time since the file was written (`now_ms`, wall clock). Synced entries
    /// start their packet count at `in_pkts` (the sync threshold, as a backup does).
    pub fn restore(
        &self,
        now_ms: u64,
        conns: &ConnTable,
        table: &ServiceTable,
        workers: usize,
        now: Instant,
        in_pkts: u32,
    ) -> Restored {
        let age_ms = now_ms.saturating_sub(self.written_ms);
        let mut done = Restored {
            rules_changed: rules_identity(table) != self.rules,
            ..Restored::default()
        };
        for r in &self.records {
            let Some(left_ms) = r.expires_in_ms.checked_sub(age_ms).filter(|&l| l > 0) else {
                done.expired += 1;
                continue;
            };
            let Some(mut s) = bind(&r.conn, Version::V1, table, conns.timeouts()) else {
                done.no_destination += 1;
                continue;
            };
            s.in_pkts = in_pkts;
            let worker = worker_for(&s, workers);
            match conns.restore(worker, now, &s, left_ms) {
                Installed::Created | Installed::Updated | Installed::Replaced => {
                    if s.template {
                        done.templates += 1;
                    } else {
                        done.conns += 1;
                    }
                }
                Installed::Ignored | Installed::Unusable | Installed::TableFull => {
                    done.not_installed += 1
                }
            }
        }
        done
    }
}

/// A state file that could not be read, or was refused.
#[derive(Debug, Error)]
pub enum LoadError {
    /// It could not be read.
    #[error("{0}")]
    Io(std::io::Error),
    /// It was refused whole.
    #[error("{0}")]
    Refused(StateError),
}

/// One record at the start of `body`, and what follows it.
fn parse_record(body: &[u8]) -> Result<(Record, &[u8]), StateError> {
    const SHORT: StateError = StateError::Malformed("record (cut short)");
    let expires_in_ms = be_u64(body.get(..8).ok_or(SHORT)?, 0);
    let msg = body.get(8..).ok_or(SHORT)?;
    let size = usize::from(be_u16(msg.get(..4).ok_or(SHORT)?, 2));
    let msg_bytes = msg.get(..size).ok_or(SHORT)?;
    let m = Message::parse(msg_bytes).map_err(|_| StateError::Malformed("record (message)"))?;
    if m.version() != Version::V1 || m.nr_conns() != 1 {
        return Err(StateError::Malformed("record (not one version-1 entry)"));
    }
    let conn = match m.entries().next() {
        Some(Ok(Ok(c))) => c,
        _ => return Err(StateError::Malformed("record (entry)")),
    };
    Ok((
        Record {
            conn,
            expires_in_ms,
        },
        &msg[size..],
    ))
}

#[cfg(test)]
mod tests;
