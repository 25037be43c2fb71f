//! The body of the `state_file` fuzz target, shared with `tests/fuzz_corpus.rs`: a
//! connection state file (`src/ha/state_file.rs`) as a starting director reads it.
//!
//! The input is read twice: as it is (the length, checksum, magic and version checks), and
//! with its body length and CRC-32 made to fit the bytes (so that the fuzzer gets past the
//! checksum to the header fields and the records behind it, which only a writer's bug
//! could otherwise reach). The clock reads [`NOW_MS`]; the committed seeds were written
//! 5 s before it, so a mutated write time reaches the stale and future refusals.
//!
//! Checked: no panic; a refusal says something; an accepted file has as many records as
//! its header announces, and restoring it accounts for every record once (installed,
//! expired, without a destination or not installed); the table it restores writes a file
//! that reads back with one record per entry and restores into a fresh table to the same
//! entries; every restored entry expires to an empty table with real-server counters back
//! at zero.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fastlb::conn::ConnTable;
use fastlb::control::Publisher;
use fastlb::ha::state_file::{crc32, encode, StateFile, HEADER_LEN};
use fastlb::service::config;
use fastlb::service::{DestRegistry, ServiceTable};
use fastlb::time::Instant;

use crate::rules::RULES;

/// The wall clock as the fuzzed reader sees it, milliseconds since the Unix epoch.
pub const NOW_MS: u64 = 1_750_000_000_000;

/// A fresh connection table and the service table of the shared [`RULES`] (the `sync`
/// target's, so that its seeds make state files whose entries find their real servers).
pub fn director() -> (ConnTable, Arc<ServiceTable>, Arc<DestRegistry>) {
    let cfg = config::parse(RULES, Path::new("fuzz.rules")).expect("the fuzz rules parse");
    let registry = Arc::new(DestRegistry::new(64));
    let publisher = Publisher::new(cfg, Arc::clone(&registry)).expect("publishes");
    let table = publisher.table();
    let conns = ConnTable::new(256, 2, Arc::clone(&registry));
    (conns, table, registry)
}

/// Reads `data` as it is, then with its length and checksum made to fit.
pub fn exercise(data: &[u8]) {
    read(data);
    let trailer = 4;
    if data.len() >= HEADER_LEN + trailer {
        let mut fixed = data.to_vec();
        let body = (data.len() - HEADER_LEN - trailer) as u64;
        fixed[40..48].copy_from_slice(&body.to_be_bytes());
        let end = fixed.len() - trailer;
        let crc = crc32(&fixed[..end]);
        fixed[end..].copy_from_slice(&crc.to_be_bytes());
        read(&fixed);
    }
}

fn read(data: &[u8]) {
    let file = match StateFile::parse(data, NOW_MS) {
        Ok(f) => f,
        Err(e) => {
            assert!(!e.to_string().trim().is_empty(), "a silent refusal: {e:?}");
            return;
        }
    };
    let announced = u32::from_be_bytes(data[12..16].try_into().unwrap()) as usize;
    assert_eq!(file.records.len(), announced, "records against the header");

    let (conns, table, registry) = director();
    let now = Instant::from_secs(100);
    let done = file.restore(NOW_MS, &conns, &table, 2, now, 3);
    // A record that replaces an earlier one (the same connection to another real server)
    // ends that entry; its worker frees the slot at its next expiry pass, as the workers
    // of a starting director do before the table is counted or written again.
    reclaim(&conns, now);
    assert_eq!(
        done.conns + done.templates + done.expired + done.no_destination + done.not_installed,
        file.records.len(),
        "every record is accounted for once: {done:?}"
    );
    assert!(
        conns.len() <= done.conns + done.templates,
        "more entries than were installed: {} after {done:?}",
        conns.len()
    );

    // What was restored writes a file that reads back and restores to the same entries.
    let (bytes, written) = encode(&conns, &table, now, NOW_MS);
    assert_eq!(written.bytes, bytes.len());
    let again = StateFile::parse(&bytes, NOW_MS)
        .unwrap_or_else(|e| panic!("fastlb's own state file is refused: {e}"));
    assert_eq!(
        again.records.len(),
        written.conns + written.templates,
        "a written entry is missing: {written:?}"
    );
    assert_eq!(
        written.conns + written.templates + written.left_out,
        conns.len(),
        "an entry neither written nor left out: {written:?}"
    );
    let (conns2, table2, registry2) = director();
    let done2 = again.restore(NOW_MS, &conns2, &table2, 2, now, 3);
    reclaim(&conns2, now);
    assert!(!done2.rules_changed, "the same rules read as changed");
    assert_eq!(
        (
            done2.conns,
            done2.templates,
            done2.expired,
            done2.no_destination
        ),
        (written.conns, written.templates, 0, 0),
        "a re-read file restores differently"
    );
    assert_eq!(
        conns2.len(),
        conns.len(),
        "a re-read file fills the table differently"
    );

    for (c, r) in [(&conns, &registry), (&conns2, &registry2)] {
        for step in 1..=3u64 {
            for worker in 0..2 {
                c.expire(
                    worker,
                    now + Duration::from_secs(86_400 * 32 * step),
                    usize::MAX / 2,
                );
            }
        }
        assert_eq!(
            c.len(),
            0,
            "restored entries left after every timeout passed"
        );
        crate::settle::assert_counters_at_zero(r, "restored entry");
    }
}

/// Both workers' expiry pass at `now`: frees the slots of entries already ended (none of
/// the restored entries has run out at `now`).
fn reclaim(conns: &ConnTable, now: Instant) {
    for worker in 0..2 {
        conns.expire(worker, now, usize::MAX / 2);
    }
}
