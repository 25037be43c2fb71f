//! Fuzz target `config_toml`: see `fuzz/exercise/configs.rs`.
#![no_main]

#[path = "../exercise/configs.rs"]
#[allow(dead_code)] // each config target uses one of its functions
mod configs;

libfuzzer_sys::fuzz_target!(|data: &[u8]| configs::toml(data));
