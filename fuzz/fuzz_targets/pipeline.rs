//! Fuzz target `pipeline`: see `fuzz/exercise/pipeline.rs`.
#![no_main]

#[path = "../exercise/settle.rs"]
mod settle;
#[path = "../exercise/pipeline.rs"]
mod pipeline;

libfuzzer_sys::fuzz_target!(|data: &[u8]| pipeline::exercise(data));
