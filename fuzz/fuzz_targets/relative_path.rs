//! Fuzzes `punchgate_fuzz::relative_path` (see fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| punchgate_fuzz::relative_path(data));
