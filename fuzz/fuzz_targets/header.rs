//! Fuzzes `punchgate_fuzz::header` (see fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| punchgate_fuzz::header(data));
