//! Replays the committed fuzz corpora (`fuzz/corpus/<target>`) through the fuzz targets'
//! bodies as ordinary tests, so the seeds (and whatever the fuzzers found and were fixed
//! for) keep passing without cargo-fuzz or libFuzzer. `tools/fuzz.sh` runs the fuzzers.

use std::path::{Path, PathBuf};

#[path = "../fuzz/exercise/configs.rs"]
mod configs;
#[path = "../fuzz/exercise/ctl.rs"]
mod ctl;
#[path = "../fuzz/exercise/frames.rs"]
mod frames;
#[path = "../fuzz/exercise/pipeline.rs"]
mod pipeline;
#[path = "../fuzz/exercise/rules.rs"]
mod rules;
#[path = "../fuzz/exercise/settle.rs"]
mod settle;
#[path = "../fuzz/exercise/state_file.rs"]
mod state_file;
#[path = "../fuzz/exercise/sync.rs"]
mod sync;

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 5,
        "{target}: the corpus has {} seeds",
        out.len()
    );
    out
}

/// Runs `f` on every seed of `target` and, when `cuts`, on every prefix of each seed too
/// (the cheapest way to reach the error paths).
fn replay(target: &str, cuts: bool, f: impl Fn(&[u8])) {
    for (path, data) in seeds(target) {
        eprintln!("{target}: {}", path.display());
        f(&data);
        if cuts {
            for cut in 0..data.len() {
                f(&data[..cut]);
            }
        }
    }
}

#[test]
fn parse_rewrite_corpus() {
    for (path, data) in seeds("parse_rewrite") {
        let parsed = fastlb::wire::parse_frame(&data);
        assert!(
            parsed.is_ok(),
            "seed {} does not parse: {parsed:?}",
            path.display()
        );
    }
    replay("parse_rewrite", true, frames::exercise);
}

#[test]
fn pipeline_corpus() {
    replay("pipeline", true, pipeline::exercise);
}

#[test]
fn config_toml_corpus() {
    replay("config_toml", true, configs::toml);
}

#[test]
fn config_ipvsadm_corpus() {
    replay("config_ipvsadm", true, configs::ipvsadm_rules);
}

#[test]
fn config_keepalived_corpus() {
    replay("config_keepalived", true, configs::keepalived);
}

#[test]
fn ctl_corpus() {
    replay("ctl", false, ctl::exercise);
}

#[test]
fn sync_corpus() {
    replay("sync", true, sync::exercise);
}

#[test]
fn state_file_corpus() {
    let restorable = seeds("state_file")
        .iter()
        .filter(|(_, data)| {
            fastlb::ha::state_file::StateFile::parse(data, state_file::NOW_MS)
                .is_ok_and(|f| !f.records.is_empty())
        })
        .count();
    assert!(
        restorable >= 4,
        "{restorable} seeds with entries read whole"
    );
    replay("state_file", true, state_file::exercise);
}
