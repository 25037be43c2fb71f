//! Replays the committed fuzz corpus (`fuzz/corpus/parse_rewrite`) as an ordinary test, so
//! the seeds keep passing without cargo-fuzz.

#[path = "../fuzz/fuzz_targets/exercise.rs"]
mod exercise;

#[test]
fn corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse_rewrite");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let parsed = fastlb::wire::parse_frame(&data);
        assert!(
            parsed.is_ok(),
            "seed {} does not parse: {parsed:?}",
            path.display()
        );
        exercise::exercise(&data);
        // Every truncation too: the cheapest way to reach the error paths.
        for cut in 0..data.len() {
            exercise::exercise(&data[..cut]);
        }
        n += 1;
    }
    assert!(n >= 5, "corpus has {n} seeds");
}
