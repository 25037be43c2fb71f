//! parse_frame and every rewrite over arbitrary frames.
#![no_main]

#[path = "../exercise/frames.rs"]
mod exercise;

libfuzzer_sys::fuzz_target!(|data: &[u8]| exercise::exercise(data));
