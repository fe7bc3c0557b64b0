//! At most so many files open at once. A download may have more entries
//! than the process may hold open files (a folder of 100,000 photos against
//! a limit of 1,024 or 20,000), so its data files are opened when a chunk
//! needs one and kept in a small cache; the least recently used is closed
//! when the cache is full. [`Recency`] decides which to close (no I/O);
//! [`OpenFiles`] does the opening and closing.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};

/// Open data files a download keeps at most: far below any usual limit
/// (1,024 is a common default), enough for the sources writing at once.
pub const OPEN_FILES: usize = 256;

/// Which of at most `capacity` keys was used least recently.
#[derive(Debug)]
struct Recency<V> {
    capacity: usize,
    /// Each key's value and the tick of its last use.
    entries: HashMap<usize, (V, u64)>,
    tick: u64,
}

impl<V: Clone> Recency<V> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            tick: 0,
        }
    }

    /// The value of `key`, now the most recently used, if present.
    fn get(&mut self, key: usize) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(&key).map(|(value, used)| {
            *used = tick;
            value.clone()
        })
    }

    /// Adds `key` as the most recently used; returns the value it pushed
    /// out (the least recently used) if the cache was full.
    fn insert(&mut self, key: usize, value: V) -> Option<V> {
        self.tick += 1;
        let evicted = if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            // A scan of at most `capacity` entries: cheap next to the
            // `open` that made room necessary.
            self.entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(oldest, _)| *oldest)
                .and_then(|oldest| self.entries.remove(&oldest))
                .map(|(value, _)| value)
        } else {
            None
        };
        self.entries.insert(key, (value, self.tick));
        evicted
    }

    fn remove(&mut self, key: usize) -> Option<V> {
        self.entries.remove(&key).map(|(value, _)| value)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The files of a download, opened on demand: file `index` is opened with
/// the `open` function given to [`OpenFiles::get`], which must reach it the
/// same safe way every time (see `partial.rs`).
pub struct OpenFiles {
    cache: Mutex<Recency<Arc<File>>>,
}

impl OpenFiles {
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: Mutex::new(Recency::new(capacity)),
        }
    }

    /// File `index`, opened by `open` unless it is open already. The handle
    /// stays usable after the cache closes its own copy (the last `Arc`
    /// closes the file), so reads and writes happen outside the lock.
    pub fn get<E>(
        &self,
        index: usize,
        open: impl FnOnce() -> Result<File, E>,
    ) -> Result<Arc<File>, E> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = cache.get(index) {
            return Ok(file);
        }
        // Opened under the lock: one handle per file, never two racing.
        let file = Arc::new(open()?);
        // The file pushed out is closed here, or by whoever still holds it.
        drop(cache.insert(index, Arc::clone(&file)));
        Ok(file)
    }

    /// File `index` taken out of the cache (opened by `open` if it is not
    /// there): for its last use, after which it is not reopened.
    pub fn take<E>(
        &self,
        index: usize,
        open: impl FnOnce() -> Result<File, E>,
    ) -> Result<Arc<File>, E> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(index);
        match cached {
            Some(file) => Ok(file),
            None => open().map(Arc::new),
        }
    }

    /// How many files the cache holds open.
    pub fn open_count(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut recency = Recency::new(3);
        for key in [1, 2, 3] {
            assert_eq!(recency.insert(key, key * 10), None);
        }
        // 1 is used again, so 2 is now the oldest.
        assert_eq!(recency.get(1), Some(10));
        assert_eq!(recency.insert(4, 40), Some(20));
        assert_eq!(recency.get(2), None);
        assert_eq!(recency.insert(5, 50), Some(30));
        assert_eq!(recency.insert(6, 60), Some(10));
        assert_eq!(recency.len(), 3);
        // Inserting a key that is present replaces it and pushes nothing out.
        assert_eq!(recency.insert(6, 61), None);
        assert_eq!(recency.get(6), Some(61));
        assert_eq!(recency.remove(4), Some(40));
        assert_eq!(recency.insert(7, 70), None);
        assert_eq!(recency.len(), 3);
    }

    #[test]
    fn no_more_than_the_capacity_is_open_and_a_closed_file_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = |index: usize| dir.path().join(format!("{index}.data"));
        for index in 0..20 {
            std::fs::write(path(index), [index as u8]).unwrap();
        }
        let opens = std::cell::Cell::new(0);
        let open = |index: usize| {
            opens.set(opens.get() + 1);
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path(index))
        };
        let files = OpenFiles::new(4);
        let mut byte = [0u8];
        for round in 0..3 {
            for index in 0..20 {
                let file = files.get(index, || open(index)).unwrap();
                crate::transfer::partial::read_exact_at(&file, &mut byte, 0).unwrap();
                assert_eq!(byte[0], index as u8, "round {round}");
                assert!(files.open_count() <= 4);
            }
        }
        assert_eq!(opens.get(), 60, "each use after eviction reopened");
        assert_eq!(files.open_count(), 4);

        // A write through one handle is read back after a reopen.
        let file = files.get(0, || open(0)).unwrap();
        crate::transfer::partial::write_all_at(&file, b"z", 0).unwrap();
        drop(file);
        for index in 1..5 {
            files.get(index, || open(index)).unwrap();
        }
        let before = opens.get();
        let reopened = files.get(0, || open(0)).unwrap();
        assert_eq!(opens.get(), before + 1, "0 had been closed");
        crate::transfer::partial::read_exact_at(&reopened, &mut byte, 0).unwrap();
        assert_eq!(&byte, b"z");

        // A hit does not reopen; a taken file leaves the cache.
        let before = opens.get();
        files.get(0, || open(0)).unwrap();
        assert_eq!(opens.get(), before);
        files.take(0, || open(0)).unwrap();
        assert_eq!(opens.get(), before);
        assert_eq!(files.open_count(), 3);
    }

    #[test]
    fn a_failed_open_is_the_error_and_caches_nothing() {
        let files = OpenFiles::new(2);
        let missing = || Err::<File, _>(io::Error::from(io::ErrorKind::NotFound));
        let error = files.get(3, missing).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert_eq!(files.open_count(), 0);
        assert!(files.take(3, missing).is_err());
    }
}
