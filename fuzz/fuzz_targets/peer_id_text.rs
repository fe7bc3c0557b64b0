//! Fuzzes `punchgate_fuzz::peer_id_text` (see fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| punchgate_fuzz::peer_id_text(data));
