//! A hasher for maps keyed by numeric ids.

/// Hashes ids (region, stream, peer and store ids; well spread already) with one
/// multiplication instead of SipHash: the raft log looks streams up for every record, and a
/// store's loop looks peers up for every message and every tick.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Builds [`IdHasher`]s.
pub type IdBuild = std::hash::BuildHasherDefault<IdHasher>;
