//! Fuzz target `ctl`: see `fuzz/exercise/ctl.rs`.
#![no_main]

#[path = "../exercise/ctl.rs"]
mod ctl;

libfuzzer_sys::fuzz_target!(|data: &[u8]| ctl::exercise(data));
