//! Fuzzes `punchgate_fuzz::port_mapping` (see fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| punchgate_fuzz::port_mapping(data));
