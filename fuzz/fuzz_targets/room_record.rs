//! Fuzzes `punchgate_fuzz::room_record` (see fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| punchgate_fuzz::room_record(data));
