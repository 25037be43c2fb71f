//! The body of the `sync` fuzz target, shared with `tests/fuzz_corpus.rs`: an IPVS sync
//! datagram (version 0 or 1) as the backup receives it, decoded, bound to a service table
//! and installed in a connection table.
//!
//! Checked: no panic; every decoded connection, encoded again by fastlb's master, decodes
//! to the same connection; the backup's counters add up (each datagram is counted once as
//! refused or read, each entry at most once); installed connections expire to an empty
//! table with real-server counters back at zero.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fastlb::conn::ConnTable;
use fastlb::control::Publisher;
use fastlb::ha::sync::backup::Backup;
use fastlb::ha::sync::counters::DaemonCounters;
use fastlb::ha::sync::{Encoder, Message};
use fastlb::service::config;
use fastlb::service::DestRegistry;
use fastlb::time::Instant;

use crate::rules::RULES;

/// Decodes, re-encodes and installs `data`.
pub fn exercise(data: &[u8]) {
    // The decoder alone, and the master's encoder on whatever it read.
    if let Ok(msg) = Message::parse(data) {
        let conns: Vec<_> = msg.entries().filter_map(|e| e.ok()?.ok()).collect();
        let mut enc = Encoder::new(msg.syncid(), 1500);
        let mut sent = Vec::new();
        for c in &conns {
            // Mixed address families cannot be sent: the encoder says so and sends nothing.
            let _ = enc.push(c, |d| sent.push(d.to_vec()));
        }
        enc.flush(|d| sent.push(d.to_vec()));
        let mut again = Vec::new();
        for d in &sent {
            let m = Message::parse(d).expect("fastlb's own datagram reads back");
            for e in m.entries() {
                again.push(
                    e.expect("fastlb's own entry reads back")
                        .expect("and is usable"),
                );
            }
        }
        let sendable: Vec<_> = conns
            .iter()
            .filter(|c| c.encoded_len().is_some())
            .copied()
            .collect();
        if msg.version() == fastlb::ha::sync::Version::V1 {
            assert_eq!(
                again, sendable,
                "decode, encode, decode changes a connection"
            );
        } else {
            assert_eq!(
                again.len(),
                sendable.len(),
                "a version-0 connection was lost"
            );
        }
    }

    // The backup's whole path.
    let cfg = config::parse(RULES, Path::new("fuzz.rules")).expect("the fuzz rules parse");
    let registry = Arc::new(DestRegistry::new(64));
    let publisher = Publisher::new(cfg, Arc::clone(&registry)).expect("publishes");
    let table = publisher.table();
    let conns = ConnTable::new(256, 1, Arc::clone(&registry));
    let counters = DaemonCounters::default();
    let backup = Backup {
        syncid: 0,
        ifindex: 1,
    };
    let now = Instant::from_secs(10);
    let mut installs = 0u64;
    backup.handle(
        data,
        Some(1),
        &table,
        conns.timeouts(),
        &counters,
        &mut |s| {
            installs += 1;
            conns.install(0, now, s);
        },
    );
    let c = &counters;
    assert_eq!(c.received.get(), 1);
    let refused =
        c.too_short.get() + c.size_mismatch.get() + c.wrong_syncid.get() + c.wrong_interface.get();
    let read = c.messages_v0.get() + c.messages_v1.get();
    assert_eq!(refused + read, 1, "a datagram is counted once: {c:?}");
    assert_eq!(
        c.accepted.get(),
        installs,
        "every accepted entry is handed to install"
    );
    assert!(
        c.accepted.get() + c.no_destination.get() <= 255,
        "more entries than a message holds: {c:?}"
    );
    for step in 1..=3u64 {
        conns.expire(
            0,
            now + Duration::from_secs(86_400 * 32 * step),
            usize::MAX / 2,
        );
    }
    assert_eq!(
        conns.len(),
        0,
        "synced connections left after every timeout passed"
    );
    crate::settle::assert_counters_at_zero(&registry, "synced connection");
}
