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

    /// [`put`](Self::put) of a key and value the caller owns already: the batch keeps them
    /// instead of copies.
    pub fn put_owned(&mut self, cf: &str, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.push_owned(cf, key, value, false)
    }

    /// [`put_in_place`](Self::put_in_place) of a key and value the caller owns already.
    pub fn put_in_place_owned(&mut self, cf: &str, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.push_owned(cf, key, value, true)
    }

    fn push_put(&mut self, cf: &str, key: &[u8], value: &[u8], in_place: bool) -> &mut Self {
        self.push_owned(cf, key.to_vec(), value.to_vec(), in_place)
    }

    fn push_owned(&mut self, cf: &str, key: Vec<u8>, value: Vec<u8>, in_place: bool) -> &mut Self {
        self.approximate_bytes += key.len() + value.len() + 16;
        let cf = self.cf(cf);
        self.ops.push(if in_place {
            BatchOp::PutInPlace { cf, key, value }
        } else {
            BatchOp::Put { cf, key, value }
        });
        self
    }

    /// Deletes `key` from column family `cf`.
    pub fn delete(&mut self, cf: &str, key: &[u8]) -> &mut Self {
        self.delete_owned(cf, key.to_vec())
    }

    /// [`delete`](Self::delete) of a key the caller owns already.
    pub fn delete_owned(&mut self, cf: &str, key: Vec<u8>) -> &mut Self {
        self.approximate_bytes += key.len() + 16;
        let cf = self.cf(cf);
        self.ops.push(BatchOp::Delete { cf, key });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The owned variants make the same batch as the borrowing ones.
    #[test]
    fn owned_operations_equal_borrowed_ones() {
        let mut a = WriteBatch::new();
        a.put("default", b"k", b"v")
            .put_in_place("raft", b"apply", b"7")
            .delete("default", b"gone");
        let mut b = WriteBatch::new();
        b.put_owned("default", b"k".to_vec(), b"v".to_vec())
            .put_in_place_owned("raft", b"apply".to_vec(), b"7".to_vec())
            .delete_owned("default", b"gone".to_vec());
        assert_eq!(a.ops, b.ops);
        assert_eq!(a.approximate_bytes, b.approximate_bytes);
    }
}
