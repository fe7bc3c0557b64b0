//! Every decoder of untrusted bytes, fed random bytes and damaged valid
//! encodings (bit flips, truncations, inserted bytes, length fields set
//! huge): none may panic, and none may hold much more memory than the bytes
//! it was given. The same targets as `cargo fuzz` (fuzz/src/lib.rs, included
//! here), for a bounded, seeded run in every `cargo test`; see the fuzzing
//! section of docs/SECURITY.md for the long runs.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Counts this thread's live heap bytes and their peak, so a test can
/// measure what one decode held at most.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        new
    }
}

fn grew(bytes: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(bytes);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().wrapping_sub(bytes)));
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most one decode may hold beyond what it held before: the codec's
/// smallest allocation budget (1 MiB), a frame reader's first buffer, and
/// a few times the input.
fn memory_bound(input_len: usize) -> usize {
    (2 << 20) + 16 * input_len
}

/// A seeded xorshift64* generator: the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A damaged copy of a valid input: a few of the ways bytes go wrong.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len());
        match rng.below(8) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.below(8),
            1 => out.truncate(at),
            2 => out.insert(at.min(out.len()), rng.next() as u8),
            3 if at < out.len() => {
                out.remove(at);
            }
            // A varint set to its widest forms (bincode's 251..=253 tags
            // announce a u16, u32 or u64 that follows): a huge length.
            4 if at < out.len() => {
                out[at] = 251 + rng.below(3) as u8;
                let tail: Vec<u8> = vec![0xff; 8];
                out.splice(at + 1..at + 1, tail);
            }
            // A frame length prefix (after the selector byte) set huge.
            5 if out.len() >= 5 => {
                let len = [u32::MAX, 0x7fff_ffff, 16 << 20, 1 << 20][rng.below(4)];
                let at = 1 + rng.below(out.len() - 4);
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
            6 if at < out.len() => out[at] = [0, 0xff, 0x80, 0x7f][rng.below(4)],
            _ => {
                let len = rng.below(16);
                let extra = rng.bytes(len);
                out.extend_from_slice(&extra);
            }
        }
    }
    out
}

/// Runs `target` on `input`; a panic fails the test with the input in hex
/// (reproduce with `cargo fuzz run NAME` on a file of those bytes).
fn feed(name: &str, target: fn(&[u8]), input: &[u8]) -> usize {
    let before = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    let outcome = catch_unwind(AssertUnwindSafe(|| target(input)));
    let held = PEAK.with(Cell::get).saturating_sub(before);
    if outcome.is_err() {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!("the {name} decoder panicked on input {hex}");
    }
    assert!(
        held <= memory_bound(input.len()),
        "the {name} decoder held {held} bytes for a {}-byte input",
        input.len()
    );
    held
}

/// Random inputs and damaged seeds for one target.
fn fuzz(name: &str, rounds: usize) {
    let (_, target) = harness::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .copied()
        .unwrap_or_else(|| panic!("no target {name}"));
    let seeds: Vec<Vec<u8>> = harness::seeds()
        .into_iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, input)| input)
        .collect();
    assert!(!seeds.is_empty(), "no seed for {name}");
    // The first call starts the reader's runtime; later ones measure decoding.
    for seed in &seeds {
        target(seed);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    for seed in &seeds {
        feed(name, target, seed);
    }
    for round in 0..rounds {
        let input = if round % 4 == 0 {
            let len = rng.below(256);
            rng.bytes(len)
        } else {
            let seed = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, seed)
        };
        feed(name, target, &input);
    }
}

#[test]
fn frame_streams_of_every_kind_survive_damage() {
    fuzz("stream", 4000);
}

#[test]
fn stream_headers_survive_damage() {
    fuzz("header", 2000);
}

#[test]
fn manifests_survive_damage() {
    fuzz("manifest", 3000);
}

#[test]
fn relative_paths_survive_damage() {
    fuzz("relative_path", 3000);
}

#[test]
fn tickets_survive_damage() {
    fuzz("ticket", 3000);
}

#[test]
fn probe_datagrams_survive_damage() {
    fuzz("probe", 3000);
}

#[test]
fn port_mapping_answers_survive_damage() {
    fuzz("port_mapping", 3000);
}

#[test]
fn peer_id_texts_survive_damage() {
    fuzz("peer_id_text", 3000);
}

#[test]
fn target_texts_survive_damage() {
    fuzz("target_text", 3000);
}

#[test]
fn stored_messages_survive_damage() {
    fuzz("stored_message", 3000);
}

#[test]
fn dht_records_survive_damage() {
    fuzz("dht_record", 3000);
}

#[test]
fn room_records_survive_damage() {
    fuzz("room_record", 3000);
}

/// The allocation bound can fail: a decoder that held what a length prefix
/// announced would trip it.
#[test]
fn the_memory_bound_sees_an_allocation_of_an_announced_length() {
    let greedy: fn(&[u8]) = |input| {
        let announced = input.len() << 20;
        std::hint::black_box(vec![0u8; announced]);
    };
    let outcome = catch_unwind(|| feed("greedy", greedy, &[0; 8]));
    assert!(outcome.is_err());
}

/// Writes the seeds as the fuzzers' starting corpus (fuzz/corpus/TARGET/,
/// which git ignores), so `cargo fuzz run` after any `cargo test` starts
/// from them.
#[test]
fn the_seeds_are_written_as_the_fuzzers_starting_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let seeds = harness::seeds();
    assert!(!seeds.is_empty());
    for (index, (name, input)) in seeds.into_iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("seed-{index}"));
        std::fs::write(&path, &input).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), input);
    }
}
