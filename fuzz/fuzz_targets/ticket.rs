//! Fuzzes `punchgate_fuzz::ticket` (see fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| punchgate_fuzz::ticket(data));
