//! The memtable's ordered index: a skiplist whose nodes live in an arena, after LevelDB's
//! `SkipList` and RocksDB's `InlineSkipList`. One writer at a time (a mutex inside), any
//! number of readers that never lock; nothing is ever removed, and all memory is freed at
//! once when the list drops.
//!
//! Why not a general concurrent map: a put inserts into a memtable of ~10^5 entries at a
//! random place, so an insert is a chain of dependent cache and TLB misses, one per node
//! visited. Here a node (header, links and key) is one bump allocation in an arena that
//! holds nothing else, so the nodes a search visits sit close together in few
//! pages, and what a search reads of a node — header, low links, first bytes of the key —
//! shares one cache line. Values live in a second arena: only reads and flushes touch
//! them. No node carries a reference count or a deferred free.
//!
//! Node layout (8-aligned, inside a node-arena chunk):
//!
//! ```text
//! trailer u64 | cf u32 | height u32 | key_len u32 | value_len u32 | value ptr | prev ptr
//!                                                                               (header)
//! next[0] .. next[height-1]   AtomicPtr<Node>, level 0 first
//! key bytes
//! ```
//!
//! Entries order by column family, then user key ascending, then trailer
//! (`(seq << 8) | kind`) descending: the internal-key order within each column family.
//! Towers grow with probability 1/2 per level (faster searches than with 1/4 here,
//! measured).
//!
//! Publication: the writer fills a node (and its value) completely, then links it
//! bottom-up, each link a release store; readers follow links with acquire loads, so a node
//! reached through a link is fully initialised. A reader may see a node at level 0 before it
//! is linked higher up, which only makes its search visit a few more nodes. A reader answers
//! with what its walk loaded and never loads a link it walked past again: a newer entry may
//! have been linked there since (a seek that did so returned versions newer than the
//! snapshot it served).
//!
//! The newest-entry index: every put first reads its key's newest version (etcd's
//! `version` and `create_revision`), a search of a dozen or more dependent cache misses. A
//! set-associative table by key hash ([`NewestIndex`], one cache line per bucket) points at
//! the newest entry of each key written lately, so such a read loads a bucket line and the
//! entry. The insert that follows a key's read uses the same entry: a new newest version
//! goes right before the previous one, and when its tower is one link tall its only
//! predecessor is the previous one's level-0 predecessor, which every node keeps (`prev`,
//! written and read by the writer only): no search at all. New versions of indexed keys get
//! a one-link tower 15 times in 16 (the keys' first versions keep random towers, so
//! searches stay logarithmic over keys, and a run of versions keeps a taller one about
//! every 16). Memtable point reads: `readrandom_memtable/pontoon` 870 ns -> 490-640 ns
//! (criterion, 200K keys); `overwrite/pontoon` 614K -> 990K keys/s with one-link towers for
//! 15 in 16 new versions instead of half.

use std::alloc::{self, Layout};
use std::cmp::Ordering;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Tallest tower: searches stay logarithmic up to ~1M entries (a 64 MiB memtable of
/// 64-byte entries) and degrade gently beyond.
const MAX_HEIGHT: usize = 20;

/// Fixed part of a node.
#[repr(C)]
struct Node {
    trailer: u64,
    cf: u32,
    height: u32,
    key_len: u32,
    value_len: u32,
    /// The value's bytes, in the list's value arena.
    value: *const u8,
    /// The node before this one on level 0 (the head for the first). Only the writer reads
    /// and writes it: an insert right before a key's newest entry (found in the index)
    /// needs no search when its tower is one link tall.
    prev: AtomicPtr<Node>,
}

const HEADER: usize = std::mem::size_of::<Node>();
const LINK: usize = std::mem::size_of::<AtomicPtr<Node>>();
const _: () = assert!(HEADER.is_multiple_of(8) && LINK == 8 && std::mem::align_of::<Node>() == 8);

/// Where a search probes: `(cf, user key, trailer)`, ordered like entries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe<'a> {
    pub(crate) cf: u32,
    pub(crate) key: &'a [u8],
    pub(crate) trailer: u64,
}

// Node accessors. Each takes a pointer to a node that is initialised (the head, a node being
// built by the writer after its header was written, or a node reached through a link); the
// list keeps every node alive until it drops.
impl Node {
    /// Writes `header` at `node` and `header.height` null links after it.
    ///
    /// # Safety
    /// `node` is 8-aligned, points at `HEADER + header.height * LINK` writable bytes, and no
    /// reader can reach it yet.
    unsafe fn init(node: *mut Node, header: Node) {
        let height = header.height as usize;
        // SAFETY: caller's contract: the header and the tower right after it are ours.
        unsafe {
            node.write(header);
            for i in 0..height {
                node.cast::<u8>()
                    .add(HEADER + i * LINK)
                    .cast::<AtomicPtr<Node>>()
                    .write(AtomicPtr::new(ptr::null_mut()));
            }
        }
    }

    /// Link `level` of `node`.
    ///
    /// # Safety
    /// `node` is initialised (at least its header and tower), `level < node.height`, and
    /// the node outlives `'a`.
    #[inline]
    unsafe fn link<'a>(node: *const Node, level: usize) -> &'a AtomicPtr<Node> {
        // SAFETY: the tower directly follows the 8-aligned header and has `height`
        // initialised links (caller's contract); atomics may be shared.
        unsafe {
            &*node
                .cast::<u8>()
                .add(HEADER + level * LINK)
                .cast::<AtomicPtr<Node>>()
        }
    }

    /// # Safety
    /// `node` is initialised and outlives `'a`.
    #[inline]
    unsafe fn key<'a>(node: *const Node) -> &'a [u8] {
        // SAFETY: the key follows the tower and was written before the node was published;
        // it is never written again.
        unsafe {
            let h = (*node).height as usize;
            std::slice::from_raw_parts(
                node.cast::<u8>().add(HEADER + h * LINK),
                (*node).key_len as usize,
            )
        }
    }

    /// # Safety
    /// As for [`Node::key`].
    #[inline]
    unsafe fn value<'a>(node: *const Node) -> &'a [u8] {
        // SAFETY: the value was written once before publication, in an arena chunk
        // that lives as long as the node.
        unsafe { std::slice::from_raw_parts((*node).value, (*node).value_len as usize) }
    }

    /// How `node` orders against `p`.
    ///
    /// # Safety
    /// `node` is initialised and not the head.
    #[inline]
    unsafe fn cmp(node: *const Node, p: &Probe<'_>) -> Ordering {
        // SAFETY: caller's contract.
        unsafe {
            (*node)
                .cf
                .cmp(&p.cf)
                .then_with(|| cmp_keys(Node::key(node), p.key))
                .then_with(|| p.trailer.cmp(&(*node).trailer))
        }
    }
}

/// Bytewise order of two keys, 8 bytes at a time as big-endian words while both have 8 more
/// (inline: most comparisons of a search end in the first word, without a call to `memcmp`).
#[inline]
fn cmp_keys(mut a: &[u8], mut b: &[u8]) -> Ordering {
    while let (Some((ah, at)), Some((bh, bt))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        let (x, y) = (u64::from_be_bytes(*ah), u64::from_be_bytes(*bh));
        if x != y {
            return x.cmp(&y);
        }
        (a, b) = (at, bt);
    }
    a.cmp(b)
}

/// A cursor position: one entry of a list, valid while the list is borrowed.
#[derive(Clone, Copy)]
pub(crate) struct Entry<'a> {
    node: NonNull<Node>,
    _list: PhantomData<&'a SkipList>,
}

impl<'a> Entry<'a> {
    fn new(node: *mut Node) -> Option<Entry<'a>> {
        NonNull::new(node).map(|node| Entry {
            node,
            _list: PhantomData,
        })
    }

    pub(crate) fn cf(&self) -> u32 {
        // SAFETY: entries are only made of published nodes of a borrowed list.
        unsafe { (*self.node.as_ptr()).cf }
    }

    pub(crate) fn trailer(&self) -> u64 {
        // SAFETY: as in `cf`.
        unsafe { (*self.node.as_ptr()).trailer }
    }

    pub(crate) fn user_key(&self) -> &'a [u8] {
        // SAFETY: as in `cf`; the list outlives 'a.
        unsafe { Node::key(self.node.as_ptr()) }
    }

    pub(crate) fn value(&self) -> &'a [u8] {
        // SAFETY: as in `user_key`.
        unsafe { Node::value(self.node.as_ptr()) }
    }

    /// True if this entry is exactly at `p`.
    pub(crate) fn is_at(&self, p: &Probe<'_>) -> bool {
        // SAFETY: as in `cf`; an entry is never the head.
        unsafe { Node::cmp(self.node.as_ptr(), p) == Ordering::Equal }
    }

    /// The next entry in order.
    pub(crate) fn next(&self) -> Option<Entry<'a>> {
        // SAFETY: every node has level 0.
        Entry::new(unsafe { Node::link(self.node.as_ptr(), 0) }.load(AtomicOrdering::Acquire))
    }
}

/// Bump allocator of chunks that double from 16 KiB to 2 MiB, on ordinary pages. Only the
/// writer touches it. Its 2 MiB chunks come from the engine's [`ChunkPool`] when it has
/// some, and go back there when the list drops.
///
/// Transparent huge pages were tried and are not used. The store binary's allocator
/// (mimalloc, built with `no_thp`) turns them off for the whole process
/// (`prctl(PR_SET_THP_DISABLE)`), so advice on chunks it hands out is ignored there: a store
/// showed 0-2 MiB of `AnonHugePages` after 100K puts. With THP allowed again and 2 MiB chunks
/// mapped and advised by the arena itself (32 MiB of `AnonHugePages` per store), each first
/// touch of a chunk faults in and zeroes 2 MiB inside a put: three stores, 64 regions, 256
/// clients went from p99 4.3-4.8 ms to 11-19 ms, no faster. In the engine benchmarks (glibc
/// malloc, where the advice took effect) `fillrandom`, `readrandom_memtable` and
/// `readrandom_memtable_miss` showed no difference between huge and small pages beyond
/// their run-to-run noise: on this VM TLB misses of a 64 MiB memtable's searches cost
/// little next to their cache misses.
struct Arena {
    chunks: Vec<(NonNull<u8>, Layout)>,
    /// Where full-size chunks come from first and go back to.
    pool: Option<Arc<ChunkPool>>,
    /// Current chunk, bytes used of it, and its size.
    cur: *mut u8,
    used: usize,
    cap: usize,
    /// Size of the next chunk (doubles up to `MAX_CHUNK`).
    next_chunk: usize,
}

const FIRST_CHUNK: usize = 16 << 10;
const MAX_CHUNK: usize = 2 << 20;
const LINE: usize = 64;

/// Full-size (`MAX_CHUNK`) arena chunks that dropped memtables leave to the next ones, up
/// to a bound. A fresh chunk costs a page fault per 4 KiB page at its first touch, inside
/// a put (profiled at 0.7 µs of store CPU per put in a three-store cluster with 64
/// regions); a memtable that fills one of these writes into pages already mapped. The
/// engine sizes the pool to one memtable's worth, memory it held anyway while the last
/// memtable was being flushed.
pub(crate) struct ChunkPool {
    free: Mutex<Vec<PooledChunk>>,
    /// Chunks held at most.
    max: usize,
}

/// The layout of a full-size chunk, the only one pooled.
const FULL_CHUNK: Layout = match Layout::from_size_align(MAX_CHUNK, LINE) {
    Ok(l) => l,
    Err(_) => panic!("MAX_CHUNK and LINE make a valid layout"),
};

/// A chunk in the pool: memory nothing else refers to.
struct PooledChunk(NonNull<u8>);

// SAFETY: a pooled chunk is plain memory that only the pool refers to; whoever takes it
// owns it alone.
unsafe impl Send for PooledChunk {}

impl ChunkPool {
    /// A pool keeping at most `max_bytes` of chunks.
    pub(crate) fn new(max_bytes: usize) -> Arc<ChunkPool> {
        Arc::new(ChunkPool {
            free: Mutex::new(Vec::new()),
            max: max_bytes / MAX_CHUNK,
        })
    }

    fn take(&self) -> Option<NonNull<u8>> {
        self.free.lock().pop().map(|c| c.0)
    }

    /// Keeps `chunk` (allocated with [`FULL_CHUNK`]) if there is room; false: the caller
    /// frees it.
    fn give(&self, chunk: NonNull<u8>) -> bool {
        let mut free = self.free.lock();
        if free.len() < self.max {
            free.push(PooledChunk(chunk));
            true
        } else {
            false
        }
    }

    /// Chunks held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.free.lock().len()
    }
}

impl Drop for ChunkPool {
    fn drop(&mut self) {
        for c in self.free.get_mut().drain(..) {
            // SAFETY: allocated with this layout by an arena, owned by the pool alone.
            unsafe { alloc::dealloc(c.0.as_ptr(), FULL_CHUNK) }
        }
    }
}

impl Arena {
    fn new(pool: Option<Arc<ChunkPool>>) -> Arena {
        Arena {
            chunks: Vec::new(),
            pool,
            cur: ptr::null_mut(),
            used: 0,
            cap: 0,
            next_chunk: FIRST_CHUNK,
        }
    }

    fn chunk(&mut self, size: usize) -> *mut u8 {
        let layout = match Layout::from_size_align(size, LINE) {
            Ok(l) => l,
            // Only for sizes near isize::MAX, which no batch can carry.
            Err(_) => panic!("memtable entry of {size} bytes"),
        };
        if layout == FULL_CHUNK {
            if let Some(p) = self.pool.as_ref().and_then(|pool| pool.take()) {
                self.chunks.push((p, layout));
                return p.as_ptr();
            }
        }
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc(layout) };
        let Some(p) = NonNull::new(p) else {
            alloc::handle_alloc_error(layout)
        };
        self.chunks.push((p, layout));
        p.as_ptr()
    }

    /// `size` bytes (a multiple of 8), 8-aligned; the first `hot` of them (at most a line)
    /// within one cache line.
    fn alloc(&mut self, size: usize, hot: usize) -> *mut u8 {
        debug_assert!(size.is_multiple_of(8) && hot <= LINE);
        let pad = |used: usize| {
            let off = used % LINE;
            if off + hot > LINE {
                LINE - off
            } else {
                0
            }
        };
        if self.cur.is_null() || self.used + pad(self.used) + size > self.cap {
            if size > MAX_CHUNK / 4 {
                // A large entry gets a chunk of its own; the current one stays in use.
                return self.chunk(size);
            }
            // Big enough for this allocation and its padding whatever the doubling says.
            let cap = self.next_chunk.max(size + LINE);
            self.next_chunk = (self.next_chunk * 2).min(MAX_CHUNK);
            self.cur = self.chunk(cap);
            self.used = 0;
            self.cap = cap;
        }
        self.used += pad(self.used);
        // SAFETY: `used + size <= cap`, inside the current chunk.
        let p = unsafe { self.cur.add(self.used) };
        self.used += size;
        p
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for (p, layout) in self.chunks.drain(..) {
            let pooled =
                layout == FULL_CHUNK && self.pool.as_ref().is_some_and(|pool| pool.give(p));
            if !pooled {
                // SAFETY: allocated by `chunk` with this layout, freed once.
                unsafe { alloc::dealloc(p.as_ptr(), layout) }
            }
        }
    }
}

struct Writer {
    /// Nodes (headers, links, keys), kept dense so that searches touch few pages.
    arena: Arena,
    /// Values, read only by point reads and scans.
    values: Arena,
    /// xorshift state for tower heights.
    rng: u64,
}

impl Writer {
    /// 1 plus the number of trailing zero bits of a random word: level `i + 1` with
    /// probability 1/2 once at level `i`.
    fn random_height(&mut self) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng.trailing_zeros() as usize + 1).min(MAX_HEIGHT)
    }

    /// True once in eight calls, at random.
    fn one_in_eight(&mut self) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng >> 61 == 0
    }
}

/// Asks the CPU to load the cache line at `p` (any address, null included: a prefetch never
/// faults).
#[inline(always)]
fn prefetch(p: *const Node) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch hint reads nothing architecturally and cannot fault; SSE is part
    // of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// An ordered, insert-only map from `(cf, user key, trailer)` to a value.
pub(crate) struct SkipList {
    head: NonNull<Node>,
    /// Height of the tallest tower linked (1 when empty).
    height: AtomicUsize,
    /// The newest entry of recently written keys (see [`SkipList::newest`]).
    index: NewestIndex,
    /// Entries linked (tests check scans against it).
    #[cfg(test)]
    len: AtomicUsize,
    /// Inserts that took their place from the index instead of a search.
    #[cfg(test)]
    pub(crate) placed_by_index: AtomicUsize,
    writer: Mutex<Writer>,
}

// SAFETY: the list owns its arena; nodes are immutable after publication apart from their
// links, which are atomics; the arena is touched only under the writer mutex.
unsafe impl Send for SkipList {}
// SAFETY: as above.
unsafe impl Sync for SkipList {}
// SAFETY: the arena's chunks are plain memory owned by it.
unsafe impl Send for Arena {}

/// Entries per index bucket: one cache line.
const WAYS: usize = 8;

/// One cache line of index entries: `tag << 48 | node address` (0: empty), `tag` 16 bits of
/// the key's hash that did not choose the bucket.
#[repr(align(64))]
struct Bucket([AtomicU64; WAYS]);

/// Node addresses fit in 48 bits on the platforms we run on; a node above that is simply
/// not indexed.
const ADDR_BITS: u32 = 48;
const ADDR_MASK: u64 = (1 << ADDR_BITS) - 1;

/// A set-associative table from keys to the newest entry of each in the list: a read of a
/// key written lately loads one line of it and the entry, instead of a search's dozen
/// cache misses. It holds at most one entry per key, and only ever the key's newest entry
/// (see [`Indexing`]); a key without one is unknown, not absent. Only the list's writer
/// stores to it.
struct NewestIndex {
    buckets: Box<[Bucket]>,
}

impl NewestIndex {
    /// An index of about `slots` entries (0: none).
    fn new(slots: usize) -> NewestIndex {
        let n = if slots == 0 {
            0
        } else {
            slots.div_ceil(WAYS).next_power_of_two()
        };
        NewestIndex {
            buckets: (0..n)
                .map(|_| Bucket(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    /// The bucket of a key and its tag. The memtable filter takes the hash's high half for
    /// its line; the bucket comes from the low bits, with the column family mixed in.
    #[inline]
    fn locate(&self, hash: u64, cf: u32) -> Option<(&Bucket, u64)> {
        if self.buckets.is_empty() {
            return None;
        }
        let h = hash ^ u64::from(cf).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let b = &self.buckets[(h as usize) & (self.buckets.len() - 1)];
        Some((b, (h >> ADDR_BITS) << ADDR_BITS))
    }

    /// The way of `bucket` that holds an entry of `(cf, key)`, and that entry's node.
    ///
    /// # Safety
    /// Every non-empty entry of `bucket` points at a published node that outlives the call.
    #[inline]
    unsafe fn find(bucket: &Bucket, tag: u64, cf: u32, key: &[u8]) -> Option<(usize, *mut Node)> {
        for (way, e) in bucket.0.iter().enumerate() {
            let v = e.load(AtomicOrdering::Acquire);
            if v == 0 || v & !ADDR_MASK != tag {
                continue;
            }
            let node = (v & ADDR_MASK) as usize as *mut Node;
            // SAFETY: caller's contract.
            if unsafe { (*node).cf == cf && cmp_keys(Node::key(node), key).is_eq() } {
                return Some((way, node));
            }
        }
        None
    }
}

/// How an insert maintains the index.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Indexing {
    /// Not at all (tests of the list alone).
    #[cfg(test)]
    None,
    /// The entry is the newest of its key (the engine's writes: every batch has sequence
    /// numbers above all that the memtable holds): its slot points at it.
    Newest(u64),
    /// The entry may be older than one already in the list (an in-place write settling at
    /// its earlier sequence): it takes its slot only from an older entry of its own key.
    IfNewer(u64),
}

impl SkipList {
    #[cfg(test)]
    pub(crate) fn new() -> SkipList {
        SkipList::with_index(0, None)
    }

    /// A list whose index has about `slots` entries (0: no index), taking its arenas'
    /// full-size chunks from `pool` first and leaving them there when it drops.
    pub(crate) fn with_index(slots: usize, pool: Option<Arc<ChunkPool>>) -> SkipList {
        let mut arena = Arena::new(pool.clone());
        let size = HEADER + MAX_HEIGHT * LINK;
        let head = arena.alloc(size, LINE).cast::<Node>();
        // SAFETY: a fresh allocation of `size` bytes, 8-aligned, not yet shared.
        unsafe {
            Node::init(
                head,
                Node {
                    trailer: 0,
                    cf: 0,
                    height: MAX_HEIGHT as u32,
                    key_len: 0,
                    value_len: 0,
                    value: ptr::NonNull::dangling().as_ptr(),
                    prev: AtomicPtr::new(ptr::null_mut()),
                },
            );
        }
        SkipList {
            // SAFETY: `alloc` never returns null.
            head: unsafe { NonNull::new_unchecked(head) },
            height: AtomicUsize::new(1),
            index: NewestIndex::new(slots),
            #[cfg(test)]
            len: AtomicUsize::new(0),
            #[cfg(test)]
            placed_by_index: AtomicUsize::new(0),
            writer: Mutex::new(Writer {
                arena,
                values: Arena::new(pool),
                rng: 0x9E37_79B9_7F4A_7C15,
            }),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len.load(AtomicOrdering::Acquire)
    }

    /// Walks down from the head towards `p` (`None`: past every entry). Returns the last node
    /// before `p` at level 0 (maybe the head) and the node after it that the walk saw there
    /// (null at the end), and records the last node before `p` on each level in `preds`.
    ///
    /// The pair is what one load saw: a reader must not load the predecessor's link again,
    /// for a writer may have linked a newer entry (one that orders before `p`) there since.
    fn find(
        &self,
        p: Option<&Probe<'_>>,
        preds: &mut [*mut Node; MAX_HEIGHT],
    ) -> (*mut Node, *mut Node) {
        let mut x = self.head.as_ptr();
        let mut level = self.height.load(AtomicOrdering::Relaxed) - 1;
        loop {
            // SAFETY: `x` is the head or a published node reached at `level`, so its tower
            // is at least `level + 1` tall.
            let next = unsafe { Node::link(x, level) }.load(AtomicOrdering::Acquire);
            if level > 0 {
                // Where the walk continues if `next` stops it on this level: fetch that node
                // while `next` is compared, so the two cache misses overlap instead of
                // following each other.
                // SAFETY: as above, `x` has a link on `level - 1`.
                prefetch(unsafe { Node::link(x, level - 1) }.load(AtomicOrdering::Relaxed));
            }
            // SAFETY: `next` is a published node (never the head).
            let before = !next.is_null() && p.is_none_or(|p| unsafe { Node::cmp(next, p) }.is_lt());
            if before {
                x = next;
                continue;
            }
            preds[level] = x;
            if level == 0 {
                return (x, next);
            }
            level -= 1;
        }
    }

    /// The first entry at or after `p`.
    pub(crate) fn seek(&self, p: &Probe<'_>) -> Option<Entry<'_>> {
        let mut preds = [ptr::null_mut(); MAX_HEIGHT];
        let (_, next) = self.find(Some(p), &mut preds);
        Entry::new(next)
    }

    /// The last entry before `p` (`None`: the last entry).
    pub(crate) fn seek_before(&self, p: Option<&Probe<'_>>) -> Option<Entry<'_>> {
        let mut preds = [ptr::null_mut(); MAX_HEIGHT];
        let (x, _) = self.find(p, &mut preds);
        if x == self.head.as_ptr() {
            None
        } else {
            Entry::new(x)
        }
    }

    /// The newest entry of `key` in `cf` (`hash` is the hash the writer gave with it) if the
    /// index knows it and its sequence is at most that of `trailer`; `None` means unknown
    /// (search the list), not absent.
    ///
    /// An index slot only ever points at the newest entry of its key that the list holds
    /// (see [`Indexing`]); a slot of another key, or of an entry newer than the read, says
    /// nothing. Why an entry found here is the read's answer: the writer points the slot at
    /// an entry after linking it, and the engine publishes a batch's sequence (release)
    /// after inserting it; a reader loaded the sequence it reads at (acquire) before this
    /// load, so every entry of the key at or below that sequence had its slot store
    /// happen-before, and the slot shows that entry or a later store (a newer entry of the
    /// key, which fails the sequence check, or another key's).
    pub(crate) fn newest(&self, cf: u32, key: &[u8], hash: u64, trailer: u64) -> Option<Entry<'_>> {
        let (bucket, tag) = self.index.locate(hash, cf)?;
        // SAFETY: index entries point at published nodes of this list, which live as long
        // as it.
        let (_, node) = unsafe { NewestIndex::find(bucket, tag, cf, key) }?;
        // SAFETY: as above.
        if unsafe { (*node).trailer } <= trailer {
            Entry::new(node)
        } else {
            None
        }
    }

    /// The first entry.
    pub(crate) fn first(&self) -> Option<Entry<'_>> {
        // SAFETY: the head is initialised with every level.
        Entry::new(unsafe { Node::link(self.head.as_ptr(), 0) }.load(AtomicOrdering::Acquire))
    }

    /// Inserts an entry. Entries are never equal in the engine (every operation has its own
    /// sequence number); an equal one would be placed before the existing one. `indexing`
    /// says whether the entry is its key's newest (see [`Indexing`]).
    ///
    /// # Panics
    /// If the key or the value is 4 GiB or longer (the engine rejects such writes).
    pub(crate) fn insert(
        &self,
        cf: u32,
        key: &[u8],
        trailer: u64,
        value: &[u8],
        indexing: Indexing,
    ) {
        let (Ok(key_len), Ok(value_len)) = (u32::try_from(key.len()), u32::try_from(value.len()))
        else {
            panic!(
                "memtable entry too long: key {} value {}",
                key.len(),
                value.len()
            );
        };
        let mut w = self.writer.lock();
        let newest = matches!(indexing, Indexing::Newest(_));
        let located = match indexing {
            #[cfg(test)]
            Indexing::None => None,
            Indexing::Newest(hash) | Indexing::IfNewer(hash) => self.index.locate(hash, cf),
        };
        // SAFETY: index entries point at published nodes of this list; only this writer
        // (holding the mutex) stores to the index.
        let found =
            located.and_then(|(bucket, tag)| unsafe { NewestIndex::find(bucket, tag, cf, key) });
        // A new newest version of a key the index knows is linked without a search when its
        // tower is one link tall, so such versions get one link 7 times in 8 (15 in 16 with
        // the random height's own half) instead of half the time. The keys' first versions
        // keep the random heights that make searches logarithmic; a key's run of versions
        // keeps a taller one about every 16, so a read of an old version still walks only a
        // few nodes past newer ones.
        let height = if newest && found.is_some() && !w.one_in_eight() {
            1
        } else {
            w.random_height()
        };
        let links = HEADER + height * LINK;
        let size = (links + key.len()).next_multiple_of(8);
        let node = w
            .arena
            .alloc(size, (links + key.len().min(16)).min(LINE))
            .cast::<Node>();
        let vptr = if value.is_empty() {
            ptr::NonNull::dangling().as_ptr()
        } else {
            w.values.alloc(value.len().next_multiple_of(8), 0)
        };
        // SAFETY: a fresh allocation of `size` bytes, 8-aligned, unreachable by readers until
        // linked below; the writer mutex is held.
        unsafe {
            Node::init(
                node,
                Node {
                    trailer,
                    cf,
                    height: height as u32,
                    key_len,
                    value_len,
                    value: vptr,
                    prev: AtomicPtr::new(ptr::null_mut()),
                },
            );
            ptr::copy_nonoverlapping(key.as_ptr(), node.cast::<u8>().add(links), key.len());
            ptr::copy_nonoverlapping(value.as_ptr(), vptr, value.len());
        }
        let mut preds = [self.head.as_ptr(); MAX_HEIGHT];
        // The newest entry of a key goes right before the key's previous newest one: with a
        // one-link tower, its only predecessor is that entry's.
        let before = match found {
            // SAFETY: `x` is a published node; its `prev` is maintained by this writer.
            Some((_, x)) if newest && height == 1 => {
                let p = unsafe { (*x).prev.load(AtomicOrdering::Relaxed) };
                // SAFETY: `p` is the head or a published node (set below for every link).
                (!p.is_null() && unsafe { Node::link(p, 0) }.load(AtomicOrdering::Relaxed) == x)
                    .then_some(p)
            }
            _ => None,
        };
        match before {
            Some(p) => {
                preds[0] = p;
                #[cfg(test)]
                self.placed_by_index.fetch_add(1, AtomicOrdering::Relaxed);
            }
            None => {
                let probe = Probe { cf, key, trailer };
                self.find(Some(&probe), &mut preds);
            }
        }
        // Levels above the list's height keep the head as their predecessor. Readers that
        // see the new height before the head links there find a null link and descend.
        if height > self.height.load(AtomicOrdering::Relaxed) {
            self.height.store(height, AtomicOrdering::Relaxed);
        }
        for (level, &pred) in preds.iter().enumerate().take(height) {
            // SAFETY: `pred` is the head or a published node at least `level + 1` tall;
            // `node` was built above with `height` links. Only this writer stores links.
            unsafe {
                let next = Node::link(pred, level).load(AtomicOrdering::Relaxed);
                Node::link(node, level).store(next, AtomicOrdering::Relaxed);
                if level == 0 {
                    (*node).prev.store(pred, AtomicOrdering::Relaxed);
                    if !next.is_null() {
                        (*next).prev.store(node, AtomicOrdering::Relaxed);
                    }
                }
                Node::link(pred, level).store(node, AtomicOrdering::Release);
            }
        }
        if let Some((bucket, tag)) = located {
            let addr = node as usize as u64;
            let entry = (addr & !ADDR_MASK == 0).then_some(tag | addr);
            let way = match found {
                // SAFETY: as above.
                Some((way, old)) if newest || unsafe { (*old).trailer } < trailer => Some(way),
                Some(_) => None,
                None if newest && entry.is_some() => {
                    // An empty way, else one chosen by the new node's tower height and
                    // address (no state to keep, spread enough).
                    let empty = bucket
                        .0
                        .iter()
                        .position(|e| e.load(AtomicOrdering::Relaxed) == 0);
                    Some(empty.unwrap_or((addr as usize >> 3).wrapping_add(height) % WAYS))
                }
                None => None,
            };
            if let Some(way) = way {
                // A node the index cannot address still replaces the key's older entry.
                bucket.0[way].store(entry.unwrap_or(0), AtomicOrdering::Release);
            }
        }
        // Release: whoever sees the new length sees the node linked.
        #[cfg(test)]
        self.len.fetch_add(1, AtomicOrdering::Release);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;

    type Key = (u32, Vec<u8>, std::cmp::Reverse<u64>);

    fn key_of(e: &Entry<'_>) -> Key {
        (
            e.cf(),
            e.user_key().to_vec(),
            std::cmp::Reverse(e.trailer()),
        )
    }

    fn probe(k: &Key) -> Probe<'_> {
        Probe {
            cf: k.0,
            key: &k.1,
            trailer: k.2 .0,
        }
    }

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn key_comparison_is_bytewise() {
        let mut seed = 3u64;
        let alphabet = [0u8, 1, 0x7f, 0x80, 0xff];
        for _ in 0..100_000 {
            let r = rng(&mut seed);
            let a: Vec<u8> = (0..(r % 25) as usize)
                .map(|j| alphabet[((r >> (j % 56)) % 5) as usize])
                .collect();
            // b: a itself, a cut short, a extended, or a's first bytes with a new tail, so
            // that long common prefixes and prefixes of each other are the usual case.
            let r2 = rng(&mut seed);
            let mut b = a.clone();
            let cut = (r2 >> 8) as usize % (a.len() + 1);
            let tail = (0..(r2 >> 16) % 12).map(|j| alphabet[((r2 >> (j * 3 + 20)) % 5) as usize]);
            match r2 % 4 {
                0 => {}
                1 => b.truncate(cut),
                2 => b.extend(tail),
                _ => {
                    b.truncate(cut);
                    b.extend(tail);
                }
            }
            assert_eq!(cmp_keys(&a, &b), a.cmp(&b), "{a:?} vs {b:?}");
            assert_eq!(cmp_keys(&b, &a), b.cmp(&a), "{b:?} vs {a:?}");
        }
    }

    #[test]
    fn an_empty_list_has_no_entries() {
        let l = SkipList::new();
        assert_eq!(l.len(), 0);
        assert!(l.first().is_none());
        assert!(l.seek_before(None).is_none());
        let p = Probe {
            cf: 0,
            key: b"a",
            trailer: 0,
        };
        assert!(l.seek(&p).is_none());
        assert!(l.seek_before(Some(&p)).is_none());
    }

    #[test]
    fn it_orders_and_finds_like_a_sorted_map() {
        let l = SkipList::new();
        let mut model: BTreeMap<Key, Vec<u8>> = BTreeMap::new();
        let mut seed = 7u64;
        for i in 0..20_000u64 {
            let r = rng(&mut seed);
            let cf = (r % 3) as u32;
            // Keys of 0..40 bytes, so some share a long prefix and some are empty.
            let klen = (r >> 8) as usize % 41;
            let key: Vec<u8> = (0..klen)
                .map(|j| b'a' + ((r >> (j % 50)) % 3) as u8)
                .collect();
            let trailer = (i << 8) | (r >> 60);
            // Values of 0..600 bytes, a few of them larger than a line.
            let value = vec![(i % 251) as u8; (r >> 20) as usize % 600];
            l.insert(cf, &key, trailer, &value, Indexing::None);
            model.insert((cf, key, std::cmp::Reverse(trailer)), value);
        }
        assert_eq!(l.len(), model.len());
        // Full scan in order, keys and values intact.
        assert_scan_matches(&l, &model, "random");
        // Seeks at, before and after stored keys agree with the model.
        let keys: Vec<&Key> = model.keys().collect();
        for (i, k) in keys.iter().enumerate().step_by(7) {
            let at = l.seek(&probe(k)).unwrap();
            assert!(at.is_at(&probe(k)));
            let before = l.seek_before(Some(&probe(k))).map(|e| key_of(&e));
            assert_eq!(before.as_ref(), i.checked_sub(1).map(|j| keys[j]));
            // Just after k (same cf and key, one lower trailer) is the next stored entry.
            if k.2 .0 > 0 {
                let after = (k.0, k.1.clone(), std::cmp::Reverse(k.2 .0 - 1));
                let got = l.seek(&probe(&after)).map(|e| key_of(&e));
                assert_eq!(got.as_ref(), keys.get(i + 1).copied());
            }
        }
        assert_eq!(
            l.seek_before(None).map(|e| key_of(&e)).as_ref(),
            keys.last().copied()
        );
        // Past the last column family: nothing at or after, the last entry before.
        let end = Probe {
            cf: 3,
            key: b"",
            trailer: u64::MAX,
        };
        assert!(l.seek(&end).is_none());
        assert_eq!(
            l.seek_before(Some(&end)).map(|e| key_of(&e)).as_ref(),
            keys.last().copied()
        );
    }

    /// Lists sharing a pool: a dropped list leaves its full-size chunks there (as many as
    /// the pool holds), and the next list writes into them, stale bytes and all, with every
    /// entry intact.
    #[test]
    fn pooled_chunks_are_reused_and_bounded() {
        let pool = ChunkPool::new(3 * MAX_CHUNK);
        let fill = |l: &SkipList, model: &mut BTreeMap<Key, Vec<u8>>, salt: u8| {
            let mut seed = 11 + u64::from(salt);
            // ~12 MiB of values: several full-size chunks of values, one or more of nodes.
            for i in 0..12_000u64 {
                let r = rng(&mut seed);
                let key = format!("k{:06}", r % 50_000).into_bytes();
                let value = vec![salt ^ (i as u8); 1000 + (r % 64) as usize];
                l.insert(0, &key, i << 8, &value, Indexing::None);
                model.insert((0, key, std::cmp::Reverse(i << 8)), value);
            }
        };
        let first = SkipList::with_index(0, Some(pool.clone()));
        let mut model = BTreeMap::new();
        fill(&first, &mut model, 0xA5);
        assert_scan_matches(&first, &model, "first list");
        assert_eq!(pool.len(), 0, "nothing pooled while the list lives");
        drop(first);
        assert_eq!(pool.len(), 3, "bounded by the pool's size");
        let second = SkipList::with_index(0, Some(pool.clone()));
        let mut model = BTreeMap::new();
        fill(&second, &mut model, 0x3C);
        assert_eq!(pool.len(), 0, "the next list took them");
        assert_scan_matches(&second, &model, "second list, on reused chunks");
        drop(second);
        assert_eq!(pool.len(), 3);
    }

    /// A full scan of `l` yields exactly `model`'s entries, in order, values intact.
    fn assert_scan_matches(l: &SkipList, model: &BTreeMap<Key, Vec<u8>>, what: &str) {
        let mut e = l.first();
        for (k, v) in model {
            let got = e.unwrap();
            assert_eq!(&key_of(&got), k, "{what}");
            assert_eq!(got.value(), &v[..], "{what}");
            e = got.next();
        }
        assert!(e.is_none(), "{what}");
    }

    /// Every level is a sorted chain, each a subsequence of the level below.
    fn check_levels(l: &SkipList) {
        let mut below: Option<Vec<*mut Node>> = None;
        for level in 0..MAX_HEIGHT {
            let mut chain = Vec::new();
            // SAFETY: the head has every level; no writer runs.
            let mut x = unsafe { Node::link(l.head.as_ptr(), level) }.load(AtomicOrdering::Acquire);
            while !x.is_null() {
                chain.push(x);
                // SAFETY: `x` was reached on `level`, so it is at least `level + 1` tall.
                x = unsafe { Node::link(x, level) }.load(AtomicOrdering::Acquire);
            }
            for w in chain.windows(2) {
                let e = Entry::new(w[1]).unwrap();
                let k = key_of(&e);
                assert!(
                    // SAFETY: a published node.
                    unsafe { Node::cmp(w[0], &probe(&k)) }.is_lt(),
                    "level {level} out of order"
                );
            }
            if let Some(below) = &below {
                let mut it = below.iter();
                for x in &chain {
                    assert!(it.any(|y| y == x), "level {level} node missing below");
                }
            }
            below = Some(chain);
        }
    }

    #[test]
    fn inserts_in_any_order_link_every_level_in_order() {
        let n = 5_000u64;
        let key = |i: u64| (i * 7).to_be_bytes().to_vec();
        let mut seed = 11u64;
        let jittered: Vec<u64> = {
            // Ascending with each window of 64 shuffled: concurrent clients' sequential keys.
            let mut v: Vec<u64> = (0..n).collect();
            for w in v.chunks_mut(64) {
                for i in (1..w.len()).rev() {
                    w.swap(i, (rng(&mut seed) % (i as u64 + 1)) as usize);
                }
            }
            v
        };
        let orders: Vec<(&str, Vec<(u32, u64)>)> = vec![
            ("ascending", (0..n).map(|i| (0, i)).collect()),
            ("descending", (0..n).rev().map(|i| (0, i)).collect()),
            ("jittered", jittered.iter().map(|&i| (0, i)).collect()),
            // Two ascending streams, and a key of another cf after every 30: a round's
            // puts and its apply state.
            (
                "interleaved",
                (0..n)
                    .map(|i| {
                        if i % 31 == 30 {
                            (1, i / 31)
                        } else {
                            (i as u32 % 2, i)
                        }
                    })
                    .collect(),
            ),
            (
                "random",
                (0..n).map(|_| (0, rng(&mut seed) % (n * 4))).collect(),
            ),
            // Between existing keys, after a first pass.
            (
                "gaps",
                (0..n)
                    .map(|i| (0, i * 2))
                    .chain((0..n).map(|i| (0, i * 2 + 1)))
                    .collect(),
            ),
        ];
        for (name, order) in orders {
            let l = SkipList::new();
            let mut model: BTreeMap<Key, Vec<u8>> = BTreeMap::new();
            for (seq, &(cf, i)) in order.iter().enumerate() {
                let trailer = (seq as u64) << 8;
                let value = i.to_le_bytes().to_vec();
                l.insert(cf, &key(i), trailer, &value, Indexing::None);
                model.insert((cf, key(i), std::cmp::Reverse(trailer)), value);
            }
            check_levels(&l);
            assert_scan_matches(&l, &model, name);
            for k in model.keys().step_by(13) {
                assert!(l.seek(&probe(k)).unwrap().is_at(&probe(k)), "{name}");
            }
        }
    }

    #[test]
    fn new_versions_of_indexed_keys_mostly_skip_the_search_and_stay_ordered() {
        // 500 keys, then 20 rounds of a new version of each (the engine's writes: every
        // insert is its key's newest). Most new versions get a one-link tower and are linked
        // through the index; the list stays a valid skiplist, and every version, old ones
        // included, is found by a seek.
        let l = SkipList::with_index(4096, None);
        let mut model: BTreeMap<Key, Vec<u8>> = BTreeMap::new();
        let key = |i: u64| format!("key{i:04}").into_bytes();
        let hash = |k: &[u8]| crate::sstable::hash64(k);
        let mut seq = 0u64;
        for round in 0..21u64 {
            for i in 0..500u64 {
                seq += 1;
                let (k, v) = (key(i), round.to_le_bytes().to_vec());
                l.insert(0, &k, seq << 8, &v, Indexing::Newest(hash(&k)));
                model.insert((0, k, std::cmp::Reverse(seq << 8)), v);
            }
        }
        let placed = l.placed_by_index.load(AtomicOrdering::Relaxed);
        // 10,000 new versions; a random tower is one link tall half of the time.
        assert!(
            placed > 8_000,
            "only {placed} of 10000 placed through the index"
        );
        check_levels(&l);
        assert_scan_matches(&l, &model, "versions");
        for k in model.keys().step_by(7) {
            assert!(l.seek(&probe(k)).unwrap().is_at(&probe(k)));
        }
    }

    #[test]
    fn large_entries_get_chunks_of_their_own() {
        let l = SkipList::new();
        let big = vec![9u8; MAX_CHUNK];
        l.insert(0, b"b", 1, b"small", Indexing::None);
        l.insert(0, b"a", 2, &big, Indexing::None);
        l.insert(0, b"c", 3, b"small too", Indexing::None);
        let a = l.first().unwrap();
        assert_eq!((a.user_key(), a.value().len()), (&b"a"[..], MAX_CHUNK));
        assert!(a.value().iter().all(|&b| b == 9));
        let b = a.next().unwrap();
        assert_eq!(b.value(), b"small");
        assert_eq!(b.next().unwrap().value(), b"small too");
    }

    #[test]
    fn an_entry_larger_than_the_next_chunk_gets_a_chunk_that_holds_it() {
        // Larger than the first chunks, smaller than what gets a chunk of its own.
        let l = SkipList::new();
        let mid = vec![5u8; 3 * FIRST_CHUNK];
        l.insert(0, b"m", 1, &mid, Indexing::None);
        l.insert(0, &[b'k'; 2 * FIRST_CHUNK], 2, b"long key", Indexing::None);
        l.insert(0, b"z", 3, b"after", Indexing::None);
        let e = l.first().unwrap();
        assert_eq!(e.user_key(), &[b'k'; 2 * FIRST_CHUNK][..]);
        let m = e.next().unwrap();
        assert_eq!((m.user_key(), m.value()), (&b"m"[..], &mid[..]));
        assert_eq!(m.next().unwrap().value(), b"after");
    }

    /// A seek for a key's newest version at a published sequence must return that version
    /// even while the writer links newer versions (which order before it) in front of it.
    #[test]
    fn a_seek_racing_inserts_of_newer_versions_finds_the_published_one() {
        use std::sync::atomic::AtomicU64;
        const VERSIONS: u64 = 5_000;
        for _ in 0..4 {
            let l = SkipList::new();
            let published = AtomicU64::new(0);
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut seed = 11u64;
                    for i in 1..=VERSIONS {
                        // Other keys around it, so that towers and links keep changing.
                        for _ in 0..3 {
                            l.insert(
                                0,
                                &rng(&mut seed).to_be_bytes(),
                                i << 8 | 1,
                                b"v",
                                Indexing::None,
                            );
                        }
                        l.insert(3, b"apply", i << 8 | 1, &i.to_le_bytes(), Indexing::None);
                        published.store(i, AtomicOrdering::Release);
                    }
                });
                loop {
                    let seq = published.load(AtomicOrdering::Acquire);
                    if seq == 0 {
                        continue;
                    }
                    let p = Probe {
                        cf: 3,
                        key: b"apply",
                        trailer: seq << 8 | 0xFF,
                    };
                    let got = l.seek(&p).map(|e| (e.cf(), e.user_key(), e.trailer() >> 8));
                    assert_eq!(got, Some((3, &b"apply"[..], seq)), "seek at {seq}");
                    if seq == VERSIONS {
                        break;
                    }
                }
            });
        }
    }

    #[test]
    fn readers_see_a_consistent_list_while_one_writer_inserts() {
        let l = Arc::new(SkipList::new());
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (l, done) = (l.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut scans = 0;
                    while !done.load(AtomicOrdering::Acquire) || scans == 0 {
                        // Every scan is in strictly increasing order, every value matches
                        // its key, and a scan sees at least what was there when it began.
                        let before = l.len();
                        let mut n = 0;
                        let mut prev: Option<Key> = None;
                        let mut e = l.first();
                        while let Some(x) = e {
                            let k = key_of(&x);
                            assert_eq!(x.value(), &k.1[..], "value of {k:?}");
                            if let Some(p) = &prev {
                                assert!(p < &k, "{p:?} then {k:?}");
                            }
                            prev = Some(k);
                            n += 1;
                            e = x.next();
                        }
                        assert!(n >= before, "scan saw {n} of at least {before}");
                        scans += 1;
                    }
                    scans
                })
            })
            .collect();
        let mut seed = 99u64;
        for i in 0..50_000u64 {
            let key = rng(&mut seed).to_be_bytes();
            l.insert(1, &key, i << 8, &key, Indexing::None);
        }
        done.store(true, AtomicOrdering::Release);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        assert_eq!(l.len(), 50_000);
    }
}
