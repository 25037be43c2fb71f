//! Fuzz target `state_file`: see `fuzz/exercise/state_file.rs`.
#![no_main]

#[path = "../exercise/rules.rs"]
mod rules;
#[path = "../exercise/settle.rs"]
mod settle;
#[path = "../exercise/state_file.rs"]
mod state_file;

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_file::exercise(data));
