//! Atomic write batches.

use std::sync::Arc;

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Sets `key` to `value`.
    Put {
        /// Column family name.
        cf: Arc<str>,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Sets `key` to `value` through the memtable's in-place slot for the key (see
    /// [`WriteBatch::put_in_place`]).
    PutInPlace {
        /// Column family name.
        cf: Arc<str>,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Deletes `key`.
    Delete {
        /// Column family name.
        cf: Arc<str>,
        /// Key.
        key: Vec<u8>,
    },
    /// Deletes every key in `[start, end)`.
    DeleteRange {
        /// Column family name.
        cf: Arc<str>,
        /// First key deleted.
        start: Vec<u8>,
        /// First key kept.
        end: Vec<u8>,
    },
}

/// A set of writes over any column families, applied atomically by
/// [`Engine::write`](crate::Engine::write): a reader sees all of it or none of it, and after a
/// crash the engine holds all of it or none of it. Later operations on the same key win.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub(crate) ops: Vec<BatchOp>,
    pub(crate) approximate_bytes: usize,
    /// The last column family named, reused so consecutive operations on one column family
    /// do not allocate its name again.
    last_cf: Option<Arc<str>>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` in column family `cf`.
    pub fn put(&mut self, cf: &str, key: &[u8], value: &[u8]) -> &mut Self {
        self.push_put(cf, key, value, false)
    }

    /// Sets `key` to `value` in column family `cf`, like [`put`](Self::put) for every reader
    /// (reads, snapshots, iterators, flushes, recovery see the same thing), but the memtable
    /// keeps one slot per such key and each write replaces the previous value in it, instead
    /// of adding a version to the memtable's ordered list. The slot is moved into the list
    /// when a snapshot or an iterator over `cf` is taken, and when the memtable is switched.
    /// For a small key rewritten by nearly every batch (a raft region's applied index, with
    /// thousands of regions writing through one memtable); a snapshot or iterator over `cf`
    /// taken between two such writes costs a pass over the slots.
    pub fn put_in_place(&mut self, cf: &str, key: &[u8], value: &[u8]) -> &mut Self {
        self.push_put(cf, key, value, true)
    }

    fn push_put(&mut self, cf: &str, key: &[u8], value: &[u8], in_place: bool) -> &mut Self {
        self.approximate_bytes += key.len() + value.len() + 16;
        let cf = self.cf(cf);
        let (key, value) = (key.to_vec(), value.to_vec());
        self.ops.push(if in_place {
            BatchOp::PutInPlace { cf, key, value }
        } else {
            BatchOp::Put { cf, key, value }
        });
        self
    }

    /// Deletes `key` from column family `cf`.
    pub fn delete(&mut self, cf: &str, key: &[u8]) -> &mut Self {
        self.approximate_bytes += key.len() + 16;
        let cf = self.cf(cf);
        self.ops.push(BatchOp::Delete {
            cf,
            key: key.to_vec(),
        });
        self
    }

    /// Deletes every key in `[start, end)` of column family `cf`. An empty or inverted range
    /// deletes nothing.
    pub fn delete_range(&mut self, cf: &str, start: &[u8], end: &[u8]) -> &mut Self {
        self.approximate_bytes += start.len() + end.len() + 16;
        let cf = self.cf(cf);
        self.ops.push(BatchOp::DeleteRange {
            cf,
            start: start.to_vec(),
            end: end.to_vec(),
        });
        self
    }

    fn cf(&mut self, cf: &str) -> Arc<str> {
        match &self.last_cf {
            Some(last) if &**last == cf => last.clone(),
            _ => {
                let name: Arc<str> = Arc::from(cf);
                self.last_cf = Some(name.clone());
                name
            }
        }
    }

    /// Appends every operation of `other`, in order.
    pub fn extend_from(&mut self, other: &WriteBatch) -> &mut Self {
        self.ops.extend(other.ops.iter().cloned());
        self.approximate_bytes += other.approximate_bytes;
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Removes every operation.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.approximate_bytes = 0;
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }
}

impl PartialEq for WriteBatch {
    fn eq(&self, other: &Self) -> bool {
        self.ops == other.ops
    }
}

impl Eq for WriteBatch {}
