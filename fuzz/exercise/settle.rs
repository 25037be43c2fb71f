//! What every stateful exercise checks once all its entries have expired. The fuzz targets
//! and `tests/fuzz_corpus.rs` include it at their root (`#[path]`), beside the exercises,
//! which call it as `crate::settle`.

use fastlb::service::{ConnCount, DestId, DestRegistry};

/// Asserts that every real server's active, inactive and persistence counters are back at
/// zero (`what` names the entries that expired).
pub fn assert_counters_at_zero(registry: &DestRegistry, what: &str) {
    for i in 0..registry.capacity() {
        let d = registry.get(DestId(i as u32));
        assert_eq!(
            (
                d.net(ConnCount::Active),
                d.net(ConnCount::Inactive),
                d.net(ConnCount::Persistent)
            ),
            (0, 0, 0),
            "real server {i}: counters not back at zero once every {what} expired"
        );
    }
}
