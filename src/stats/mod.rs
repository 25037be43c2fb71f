//! Counters: per worker, written by one thread without atomics' read-modify-write, summed by
//! readers.

mod drops;

pub use drops::DropReason;
