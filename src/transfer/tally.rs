//! How many files of a download are whole: chunks still missing per file,
//! counted down as chunks are verified, so progress can count files as well
//! as bytes. Plain state.

use std::collections::BTreeSet;

use super::manifest::Layout;

pub struct FileTally {
    /// Chunks each file still lacks.
    missing: Vec<u32>,
    /// Which file each chunk belongs to is found through the layout.
    done: u64,
}

impl FileTally {
    /// The files of `layout`, with the chunks in `have` already verified.
    pub fn new(layout: &Layout, have: &BTreeSet<u64>) -> Self {
        let missing: Vec<u32> = (0..layout.manifest.files.len())
            .map(|file| {
                let chunks = layout.chunks_of(file);
                chunks.filter(|chunk| !have.contains(chunk)).count() as u32
            })
            .collect();
        let done = missing.iter().filter(|m| **m == 0).count() as u64;
        Self { missing, done }
    }

    /// Chunk `index`, of `file`, was verified for the first time.
    pub fn chunk_verified(&mut self, file: usize) {
        if let Some(missing) = self.missing.get_mut(file) {
            if *missing > 0 {
                *missing -= 1;
                if *missing == 0 {
                    self.done += 1;
                }
            }
        }
    }

    /// Files whose every chunk is verified (empty files from the start).
    pub fn files_done(&self) -> u64 {
        self.done
    }

    pub fn files(&self) -> u64 {
        self.missing.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::manifest::{build, MIN_CHUNK_SIZE};

    #[test]
    fn files_are_whole_when_their_last_chunk_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("big"), vec![1u8; 3 * MIN_CHUNK_SIZE as usize]).unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        std::fs::write(root.join("small"), b"x").unwrap();
        let layout = build(&[root], MIN_CHUNK_SIZE).unwrap().layout;
        let big = (0..layout.manifest.files.len())
            .find(|f| layout.chunks_of(*f).count() == 3)
            .unwrap();
        let small = (0..layout.manifest.files.len())
            .find(|f| layout.chunks_of(*f).count() == 1)
            .unwrap();
        // Resumed with one chunk of the big file kept: the empty file is
        // whole from the start.
        let kept: BTreeSet<u64> = [layout.chunks_of(big).start].into();
        let mut tally = FileTally::new(&layout, &kept);
        assert_eq!((tally.files_done(), tally.files()), (1, 3));
        tally.chunk_verified(big);
        assert_eq!(tally.files_done(), 1);
        tally.chunk_verified(small);
        assert_eq!(tally.files_done(), 2);
        tally.chunk_verified(big);
        assert_eq!(tally.files_done(), 3);
        // Repeats and nonsense change nothing.
        tally.chunk_verified(big);
        tally.chunk_verified(99);
        assert_eq!(tally.files_done(), 3);
    }
}
