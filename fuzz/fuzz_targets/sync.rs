//! Fuzz target `sync`: see `fuzz/exercise/sync.rs`.
#![no_main]

#[path = "../exercise/rules.rs"]
mod rules;
#[path = "../exercise/settle.rs"]
mod settle;
#[path = "../exercise/sync.rs"]
mod sync;

libfuzzer_sys::fuzz_target!(|data: &[u8]| sync::exercise(data));
