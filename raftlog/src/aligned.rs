//! A byte buffer whose storage starts on a [`DIRECT_BLOCK`] boundary, as `O_DIRECT`
//! writes need.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

use crate::fs::DIRECT_BLOCK;

/// A growable byte buffer aligned to [`DIRECT_BLOCK`].
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a `Vec<u8>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads the bytes.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer (no allocation until the first push).
    pub fn new() -> Self {
        AlignedBuf {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
        }
    }

    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        let mut b = AlignedBuf::new();
        b.resize(len);
        b
    }

    fn layout(cap: usize) -> Layout {
        match Layout::from_size_align(cap, DIRECT_BLOCK) {
            Ok(l) => l,
            // Only for capacities near isize::MAX, which no log write reaches.
            Err(_) => panic!("aligned buffer of {cap} bytes"),
        }
    }

    /// Makes room for `additional` more bytes.
    fn reserve(&mut self, additional: usize) {
        let need = self
            .len
            .checked_add(additional)
            .unwrap_or_else(|| panic!("aligned buffer overflow"));
        if need <= self.cap {
            return;
        }
        let cap = need
            .max(self.cap * 2)
            .max(DIRECT_BLOCK)
            .next_multiple_of(DIRECT_BLOCK);
        let new = Self::layout(cap);
        let ptr = if self.cap == 0 {
            // SAFETY: `new` has a non-zero size.
            unsafe { alloc::alloc(new) }
        } else {
            // SAFETY: `ptr` was allocated with `layout(self.cap)`; `cap` is non-zero and,
            // rounded to the alignment, does not overflow isize (checked by `layout`).
            unsafe { alloc::realloc(self.ptr.as_ptr(), Self::layout(self.cap), cap) }
        };
        self.ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(new));
        self.cap = cap;
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        // SAFETY: `reserve` made room for `bytes.len()` bytes after `len`; the source is
        // a distinct borrow, so the ranges cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len += bytes.len();
    }

    /// Grows (with zeros) or shrinks to `len` bytes.
    pub fn resize(&mut self, len: usize) {
        if len > self.len {
            self.reserve(len - self.len);
            // SAFETY: `reserve` made room up to `len`.
            unsafe {
                std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), 0, len - self.len);
            }
        }
        self.len = len;
    }

    /// Empties the buffer, keeping its allocation.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Default for AlignedBuf {
    fn default() -> Self {
        AlignedBuf::new()
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.cap == 0 {
            return &[];
        }
        // SAFETY: the first `len` bytes of the allocation are initialized.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        if self.cap == 0 {
            return &mut [];
        }
        // SAFETY: the first `len` bytes of the allocation are initialized, and `&mut self`
        // makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: allocated with exactly this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_aligned_and_keeps_bytes() {
        let mut b = AlignedBuf::new();
        assert!(b.is_empty());
        for i in 0..10_000u32 {
            b.extend_from_slice(&i.to_le_bytes());
            assert_eq!(b.as_ptr() as usize % DIRECT_BLOCK, 0);
        }
        assert_eq!(b.len(), 40_000);
        assert_eq!(&b[4..8], &1u32.to_le_bytes());
        b.resize(50_000);
        assert!(b[40_000..].iter().all(|&x| x == 0));
        b.clear();
        assert!(b.is_empty());
        assert!(AlignedBuf::zeroed(DIRECT_BLOCK).iter().all(|&x| x == 0));
    }
}
