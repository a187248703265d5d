//! The table's bloom filter over user keys, and the stable 64-bit hash it uses.
//!
//! The filter is cache-line blocked: all probes of a key fall in one 64-byte line, so a
//! lookup touches one cache line. Block layout: `bits (64 * L bytes) | num_probes u32`. A key
//! with hash `h` uses line `(h >> 32) % L`; probe `i` tests bit
//! `(h + i * ((h >> 21) | 1)) mod 512` of that line (wrapping u64 arithmetic); bit `b` of a
//! line is bit `b % 8` of the line's byte `b / 8`. An empty filter block means "no filter":
//! every key may be present.

const P1: u64 = 0x9E37_79B9_7F4A_7C15;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;

#[inline]
fn mix(k: u64) -> u64 {
    k.wrapping_mul(P2).rotate_left(31).wrapping_mul(P1)
}

/// Pontoon's stable key hash (documented in `engine/FORMAT.md`; never change it, filters on
/// disk depend on it).
#[inline]
pub fn hash64(key: &[u8]) -> u64 {
    let mut h = (key.len() as u64).wrapping_mul(P1) ^ P3;
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        h ^= mix(u64::from_le_bytes(a));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P3);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut a = [0u8; 8];
        a[..rest.len()].copy_from_slice(rest);
        h ^= mix(u64::from_le_bytes(a));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P3);
    }
    // murmur3's fmix64 finalizer.
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^= h >> 33;
    h
}

/// Number of probes for `bits_per_key`: `round(bits_per_key * ln 2)` clamped to 1..=30.
pub(crate) fn num_probes(bits_per_key: u32) -> u32 {
    ((bits_per_key as f64 * std::f64::consts::LN_2).round() as u32).clamp(1, 30)
}

/// Bits per cache line.
const LINE_BITS: u64 = 512;

/// The line and the probe sequence of a hash: `(line, first bit, stride)`.
#[inline]
fn probes(h: u64, lines: u64) -> (u64, u64, u64) {
    ((h >> 32) % lines, h, (h >> 21) | 1)
}

/// Builds a filter block from the hashes of distinct user keys.
pub(crate) fn build(hashes: &[u64], bits_per_key: u32) -> Vec<u8> {
    if bits_per_key == 0 {
        return Vec::new();
    }
    let k = num_probes(bits_per_key);
    let nbits = (hashes.len() as u64)
        .saturating_mul(bits_per_key as u64)
        .max(LINE_BITS);
    let lines = nbits.div_ceil(LINE_BITS);
    let nbytes = (lines * LINE_BITS / 8) as usize;
    let mut out = vec![0u8; nbytes + 4];
    for &h in hashes {
        let (line, a, b) = probes(h, lines);
        let base = (line * LINE_BITS / 8) as usize;
        for i in 0..k as u64 {
            let bit = a.wrapping_add(i.wrapping_mul(b)) % LINE_BITS;
            out[base + (bit / 8) as usize] |= 1 << (bit % 8);
        }
    }
    out[nbytes..].copy_from_slice(&k.to_le_bytes());
    out
}

/// A decoded filter.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bloom {
    bits: Vec<u8>,
    k: u32,
}

impl Bloom {
    /// Decodes a filter block; `None` if malformed. An empty block yields a filter that
    /// matches everything.
    pub(crate) fn decode(b: &[u8]) -> Option<Bloom> {
        if b.is_empty() {
            return Some(Bloom::default());
        }
        let nbytes = b.len().checked_sub(4)?;
        let k = super::format::u32_at(b, nbytes)?;
        if nbytes == 0 || nbytes % 64 != 0 || !(1..=30).contains(&k) {
            return None;
        }
        Some(Bloom {
            bits: b[..nbytes].to_vec(),
            k,
        })
    }

    /// False only if the key with hash `h` is certainly absent.
    #[inline]
    pub(crate) fn may_contain_hash(&self, h: u64) -> bool {
        if self.bits.is_empty() {
            return true;
        }
        let lines = (self.bits.len() / 64) as u64;
        let (line, a, b) = probes(h, lines);
        let start = (line * LINE_BITS / 8) as usize;
        let Some(line) = self.bits.get(start..start + 64) else {
            return true;
        };
        (0..self.k as u64).all(|i| {
            let bit = a.wrapping_add(i.wrapping_mul(b)) % LINE_BITS;
            line[(bit / 8) as usize] & (1 << (bit % 8)) != 0
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bloom_false_positive_rate_below_two_percent() {
        let keys: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("user-key-{i}").into_bytes())
            .collect();
        let hashes: Vec<u64> = keys.iter().map(|k| hash64(k)).collect();
        let f = Bloom::decode(&build(&hashes, 10)).unwrap();
        assert_eq!(f.k, 7);
        for k in &keys {
            assert!(f.may_contain_hash(hash64(k)), "no false negatives");
        }
        let probes = 100_000u32;
        let fp = (0..probes)
            .filter(|i| f.may_contain_hash(hash64(format!("absent-{i}").as_bytes())))
            .count();
        let rate = fp as f64 / probes as f64;
        eprintln!("bloom false-positive rate at 10 bits/key: {rate}");
        assert!(rate < 0.02, "false-positive rate {rate}");
    }

    #[test]
    fn hash_is_stable() {
        // Pinned values: filters on disk depend on them.
        assert_eq!(hash64(b""), 0xf490_368a_ba8b_feac);
        assert_eq!(hash64(b"a"), 0x80fa_b60d_a747_dbb5);
        assert_eq!(hash64(b"pontoon"), 0x9fc6_067d_eb83_e2f5);
        assert_eq!(hash64(b"0123456789abcdef!"), 0xe0ba_ab8a_3416_ff73);
        assert_ne!(hash64(b"a"), hash64(b"a\0"));
        assert_ne!(hash64(b"abcdefgh"), hash64(b"abcdefgh\0"));
    }

    #[test]
    fn empty_filter_matches_everything() {
        let f = Bloom::decode(&[]).unwrap();
        assert!(f.may_contain_hash(42));
        assert!(Bloom::decode(&[1, 2, 3]).is_none());
        assert!(Bloom::decode(&[0, 0, 0, 0, 7, 0, 0, 0]).is_none());
    }
}
