//! The state file: round trip through a real table, every damaged byte refused, stale and
//! future files refused, entries without a home skipped and counted.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::conn::{ConnEntry, Synced};
use crate::control::Publisher;
use crate::service::{config, DestId, DestRegistry};

const RULES: &str = r#"
[[service]]
protocol = "tcp"
address = "192.0.2.10"
port = 80
scheduler = "rr"
[[service.real]]
address = "10.0.0.11"
method = "dr"
[[service.real]]
address = "10.0.0.12"
method = "dr"

[[service]]
protocol = "udp"
address = "192.0.2.20"
port = 53
scheduler = "rr"
[[service.real]]
address = "10.0.0.11"
port = 5353
method = "nat"

[[service]]
protocol = "tcp"
address = "192.0.2.30"
port = 443
scheduler = "rr"
persistence = 600
[[service.real]]
address = "10.0.0.12"
method = "dr"

[[service]]
protocol = "tcp"
address = "2001:db8::10"
port = 80
scheduler = "rr"
[[service.real]]
address = "2001:db8:1::11"
method = "dr"
"#;

struct Side {
    conns: ConnTable,
    table: Arc<ServiceTable>,
}

fn side(rules: &str) -> Side {
    let config = config::parse(rules, Path::new("t.toml")).unwrap();
    let registry = Arc::new(DestRegistry::default());
    let publisher = Publisher::new(config, Arc::clone(&registry)).unwrap();
    Side {
        conns: ConnTable::with_seed(1024, 2, registry, 7),
        table: publisher.table(),
    }
}

fn dest(table: &ServiceTable, addr: &str, port: u16) -> DestId {
    let addr: IpAddr = addr.parse().unwrap();
    table
        .services
        .iter()
        .flat_map(|s| &s.dests)
        .find(|d| d.server.addr == addr && d.server.port == port)
        .unwrap()
        .id
}

#[allow(clippy::too_many_arguments)]
fn synced(
    s: &Side,
    protocol: u8,
    template: bool,
    client: &str,
    cport: u16,
    vaddr: &str,
    vport: u16,
    daddr: &str,
    dport: u16,
    method: ForwardMethod,
    state: u8,
    timeout_s: u32,
) -> Synced {
    Synced {
        protocol,
        template,
        client: client.parse().unwrap(),
        cport,
        vaddr: vaddr.parse().unwrap(),
        vport,
        daddr: daddr.parse().unwrap(),
        dport,
        method,
        dest: dest(&s.table, daddr, dport),
        state,
        timeout_s,
        inactive: false,
        in_pkts: 0,
    }
}

/// Five entries of every kind: TCP ESTABLISHED and FIN_WAIT (DR), UDP (NAT), a persistence
/// template and its connection, IPv6.
fn fill(s: &Side, now: Instant) {
    use ForwardMethod::*;
    let est = TcpState::Established as u8;
    let entries = [
        synced(
            s,
            6,
            false,
            "198.51.100.7",
            40001,
            "192.0.2.10",
            80,
            "10.0.0.11",
            80,
            DirectRouting,
            est,
            900,
        ),
        synced(
            s,
            6,
            false,
            "198.51.100.8",
            40002,
            "192.0.2.10",
            80,
            "10.0.0.12",
            80,
            DirectRouting,
            TcpState::FinWait as u8,
            120,
        ),
        synced(
            s,
            17,
            false,
            "198.51.100.7",
            5000,
            "192.0.2.20",
            53,
            "10.0.0.11",
            5353,
            Masquerade,
            0,
            300,
        ),
        synced(
            s,
            6,
            true,
            "198.51.100.9",
            0,
            "192.0.2.30",
            443,
            "10.0.0.12",
            443,
            DirectRouting,
            0,
            600,
        ),
        synced(
            s,
            6,
            false,
            "198.51.100.9",
            40003,
            "192.0.2.30",
            443,
            "10.0.0.12",
            443,
            DirectRouting,
            est,
            900,
        ),
        synced(
            s,
            6,
            false,
            "2001:db8::7",
            40004,
            "2001:db8::10",
            80,
            "2001:db8:1::11",
            80,
            DirectRouting,
            est,
            900,
        ),
    ];
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(s.conns.install(i % 2, now, e), Installed::Created);
    }
}

fn list(s: &Side, now: Instant) -> Vec<ConnEntry> {
    let mut v = Vec::new();
    s.conns.for_each(now, |e| v.push(*e));
    v.sort_by_key(|e| (e.template, e.client, e.cport, e.vaddr, e.vport));
    v
}

const WALL: u64 = 1_790_000_000_000;

fn at(s: u64) -> Instant {
    Instant::from_secs(1_000 + s)
}

fn written() -> (Side, Vec<u8>) {
    let a = side(RULES);
    fill(&a, at(0));
    // 100 s later, the file is written.
    let (bytes, w) = encode(&a.conns, &a.table, at(100), WALL);
    assert_eq!((w.conns, w.templates, w.left_out), (5, 1, 0));
    assert_eq!(w.bytes, bytes.len());
    (a, bytes)
}

#[test]
fn crc32_is_zlibs() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn a_table_comes_back_with_states_servers_and_the_time_it_had_left() {
    let (a, bytes) = written();
    assert_eq!(&bytes[..8], b"FLBCONNS");
    // Read back 7 s after it was written, by a director whose clock starts elsewhere.
    let file = StateFile::parse(&bytes, WALL + 7_000).unwrap();
    assert_eq!(file.records.len(), 6);
    assert_eq!(file.longest_s, 900);
    let b = side(RULES);
    let done = file.restore(WALL + 7_000, &b.conns, &b.table, 2, at(5_000), 3);
    assert_eq!(
        done,
        Restored {
            conns: 5,
            templates: 1,
            ..Restored::default()
        }
    );
    let (before, after) = (list(&a, at(100)), list(&b, at(5_000)));
    assert_eq!(before.len(), 6);
    for (x, y) in before.iter().zip(&after) {
        let key = |e: &ConnEntry| {
            (
                e.protocol, e.template, e.client, e.cport, e.vaddr, e.vport, e.daddr, e.dport,
                e.method, e.state,
            )
        };
        assert_eq!(key(x), key(y));
        // 7 s passed while the director was down; the restored timer rounds up to a second.
        let left = y.expires_in_ms as i64 - (x.expires_in_ms as i64 - 7_000);
        assert!((0..1_000).contains(&left), "{x:?} -> {y:?}");
    }
    // The counts at the real servers follow: 10.0.0.11 has its ESTABLISHED connection
    // active and its UDP one inactive, as before.
    let reg = b.conns.registry();
    let d11 = reg.get(dest(&b.table, "10.0.0.11", 80));
    assert_eq!(d11.active(), 1);
    // A template keeps its whole timeout for its next use.
    let t = after.iter().find(|e| e.template).unwrap();
    assert!(t.expires_in_ms <= 500_000 + 1_000, "{t:?}");
}

#[test]
fn every_damaged_byte_and_every_cut_is_refused() {
    let (_, bytes) = written();
    let now = WALL + 1_000;
    assert!(StateFile::parse(&bytes, now).is_ok());
    for i in 0..bytes.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[i] ^= flip;
            assert!(
                StateFile::parse(&bad, now).is_err(),
                "byte {i} ^ {flip:#x} accepted"
            );
        }
    }
    for len in 0..bytes.len() {
        assert!(
            StateFile::parse(&bytes[..len], now).is_err(),
            "cut at {len}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        StateFile::parse(&longer, now),
        Err(StateError::Length { .. })
    ));
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 20] ^= 4;
    assert!(matches!(
        StateFile::parse(&bad, now),
        Err(StateError::Checksum { .. })
    ));
    assert_eq!(
        StateFile::parse(b"# some other file\n", now),
        Err(StateError::Magic)
    );
}

#[test]
fn stale_and_future_files_are_refused() {
    let (_, bytes) = written();
    // The longest timeout is 900 s (ESTABLISHED): at 900 s it may still hold a live entry.
    assert!(StateFile::parse(&bytes, WALL + 900_000).is_ok());
    assert_eq!(
        StateFile::parse(&bytes, WALL + 900_001),
        Err(StateError::Stale {
            age_s: 900,
            longest_s: 900
        })
    );
    assert!(StateFile::parse(&bytes, WALL - 500).is_ok());
    assert_eq!(
        StateFile::parse(&bytes, WALL - 60_000),
        Err(StateError::Future { ahead_ms: 60_000 })
    );
}

/// `bytes` with its header field or record rewritten by `edit` and its CRC made to fit.
fn recrc(mut bytes: Vec<u8>, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    edit(&mut bytes);
    let end = bytes.len() - 4;
    let crc = crc32(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// Found by the `state_file` fuzz target: a record with 273 days left installed a connection
/// that outlived every test of expiry. A file fastlb writes counts every entry's time left
/// into its longest timeout, and that is at most 31 days.
#[test]
fn more_time_left_than_any_timeout_is_refused() {
    let (_, bytes) = written();
    let longest = u32::from_be_bytes(bytes[24..28].try_into().unwrap());
    let first = 48..56;
    let long = recrc(bytes.clone(), |b| {
        b[first].copy_from_slice(&(u64::from(longest) * 1000 + 1).to_be_bytes())
    });
    assert_eq!(
        StateFile::parse(&long, WALL),
        Err(StateError::Malformed(
            "record (more time left than the longest timeout)"
        ))
    );
    // Found next: a body length of 2^64 - 1 overflowed the length check.
    let huge = recrc(bytes.clone(), |b| {
        b[40..48].copy_from_slice(&u64::MAX.to_be_bytes())
    });
    assert_eq!(
        StateFile::parse(&huge, WALL),
        Err(StateError::Length {
            len: huge.len(),
            expected: u64::MAX
        })
    );
    let header = recrc(bytes, |b| {
        b[24..28].copy_from_slice(&(MAX_TIMEOUT_SECS + 1).to_be_bytes())
    });
    assert!(matches!(
        StateFile::parse(&header, WALL),
        Err(StateError::Malformed(m)) if m.starts_with("header")
    ));
}

#[test]
fn entries_without_their_server_or_their_time_are_skipped_and_counted() {
    let (_, bytes) = written();
    // The next run has no UDP service, and 10.0.0.12 left the port-80 service.
    let rules = RULES
        .replace("protocol = \"udp\"", "protocol = \"tcp\"")
        .replacen(
            "[[service.real]]\naddress = \"10.0.0.12\"\nmethod = \"dr\"\n\n[[service]]\nprotocol = \"tcp\"\naddress = \"192.0.2.20\"",
            "[[service]]\nprotocol = \"tcp\"\naddress = \"192.0.2.20\"",
            1,
        );
    let b = side(&rules);
    // 150 s later: the FIN_WAIT connection (120 s, 20 s of it gone before the write) ran
    // out meanwhile.
    let file = StateFile::parse(&bytes, WALL + 150_000).unwrap();
    let done = file.restore(WALL + 150_000, &b.conns, &b.table, 2, at(0), 3);
    assert_eq!(
        done,
        Restored {
            conns: 3,
            templates: 1,
            expired: 1,
            no_destination: 1,
            not_installed: 0,
            rules_changed: true,
        }
    );
    assert_eq!(b.conns.len(), 4);
}

#[test]
fn an_empty_table_round_trips_and_the_file_is_replaced_whole() {
    let a = side(RULES);
    let (bytes, w) = encode(&a.conns, &a.table, at(0), WALL);
    assert_eq!(w.bytes, HEADER_LEN + 4);
    let file = StateFile::parse(&bytes, WALL).unwrap();
    assert!(file.records.is_empty());

    let dir = std::env::temp_dir().join(format!("flb-state-{}", std::process::id()));
    let path = dir.join("sub").join("conns.state");
    let (full, _) = written();
    let w = write(&path, &full.conns, &full.table, at(100)).unwrap();
    assert_eq!(w.conns + w.templates, 6);
    let w = write(&path, &a.conns, &a.table, at(200)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap().len(), w.bytes);
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["conns.state"], "no temporary file left");
    assert!(StateFile::load(&path, wall_ms()).unwrap().is_some());
    assert!(StateFile::load(&dir.join("none"), wall_ms())
        .unwrap()
        .is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
