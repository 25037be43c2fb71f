//! The body of the `ctl` fuzz target, shared with `tests/fuzz_corpus.rs`: the ctl socket's
//! protocol over arbitrary bytes, against a real Director.
//!
//! The input is split at newlines into requests, answered in order by one Director (so a
//! sequence of edits reaches the states a session would), each followed by the reconcile
//! step that pushes the result to the data plane. Checked: no panic; every answer is one
//! JSON line that reads back as a response; a failure says what is wrong (a non-empty
//! standard error); a success leaves a configuration that validates and that `-S` output
//! restores to the same listing.

use std::path::Path;
use std::sync::Arc;

use fastlb::conn::ConnTable;
use fastlb::control::ctl::{answer, Response};
use fastlb::control::{DataPlane, Director};
use fastlb::forward::nexthop::NextHops;
use fastlb::service::config::{self, ipvsadm};
use fastlb::service::{Config, DestRegistry};
use fastlb::stats::WorkerStats;

/// Most requests one input sends (each may restore a whole rule set).
const MAX_REQUESTS: usize = 64;

fn director() -> Director {
    let registry = Arc::new(DestRegistry::new(256));
    let plane = DataPlane {
        conns: Arc::new(ConnTable::new(1024, 1, Arc::clone(&registry))),
        registry,
        workers: vec![Arc::new(WorkerStats::new(256))],
        nexthops: Arc::new(NextHops::default()),
        standby: Default::default(),
    };
    Director::new(Config::default(), plane).expect("an empty director starts")
}

/// Answers each line of `data` in turn.
pub fn exercise(data: &[u8]) {
    let mut d = director();
    for line in data.split_inclusive(|&b| b == b'\n').take(MAX_REQUESTS) {
        let out = answer(&mut d, line);
        assert_eq!(out.last(), Some(&b'\n'), "an answer ends its line");
        assert_eq!(
            out.iter().filter(|&&b| b == b'\n').count(),
            1,
            "an answer is one line"
        );
        let r: Response = serde_json::from_slice(&out).expect("an answer reads back");
        if r.code != 0 {
            assert!(!r.stderr.trim().is_empty(), "a failure says why: {r:?}");
        }
        d.reconcile();
        let c = d.config();
        config::validate(c).expect("the director's configuration stays valid");
        let saved = ipvsadm::save(c);
        let again = ipvsadm::parse_rules(&saved, Path::new("saved.rules"))
            .unwrap_or_else(|e| panic!("`-S` output is refused: {e}\n{saved}"));
        assert_eq!(
            ipvsadm::save(&again),
            saved,
            "`-S` then `-R` changes the rules"
        );
    }
}
