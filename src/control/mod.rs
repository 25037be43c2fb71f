//! The control thread: owns the configuration and hands snapshots to workers.
