//! The leveled compaction picker: a pure function of the shape of one column family's tree.
//!
//! No I/O happens here, so the policy can be unit-tested and simulated offline. L0 is
//! compacted by file count (all of L0 into L1 at once, since L0 files overlap); L1 and deeper
//! by size, each level's target being `max_bytes_for_level_base * multiplier^(level-1)`. A
//! level over its target gives up one file, picked round-robin after the level's compaction
//! pointer, merged with the overlapping files of the next level.

use std::collections::HashSet;

use crate::manifest::FileMeta;

/// The knobs the picker needs.
#[derive(Debug, Clone)]
pub struct PickerConfig {
    /// L0 file count that triggers compaction.
    pub l0_trigger: usize,
    /// Target size of L1 in bytes.
    pub base_bytes: u64,
    /// Growth factor per level.
    pub multiplier: u64,
    /// Number of levels including L0.
    pub num_levels: usize,
}

/// A compaction to run.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionTask {
    /// Column family.
    pub cf: u32,
    /// Level the inputs come from.
    pub level: usize,
    /// Level the outputs go to (`level + 1`).
    pub output_level: usize,
    /// File numbers taken from `level`.
    pub inputs: Vec<u64>,
    /// File numbers taken from `output_level` (the ones overlapping `inputs`).
    pub next_inputs: Vec<u64>,
    /// How far over its target the level is (>= 1.0).
    pub score: f64,
    /// True if the single input can move down by a manifest edit alone.
    pub trivial_move: bool,
    /// Largest user key of the inputs: the new compaction pointer of `level`.
    pub pointer: Vec<u8>,
}

/// Target size of `level` (>= 1).
pub fn level_target(cfg: &PickerConfig, level: usize) -> u64 {
    let mut t = cfg.base_bytes;
    for _ in 1..level {
        t = t.saturating_mul(cfg.multiplier);
    }
    t
}

/// Score of each level (index 0 = L0); the last level is never compacted and scores 0.
pub fn level_scores<T: AsRef<FileMeta>>(levels: &[Vec<T>], cfg: &PickerConfig) -> Vec<f64> {
    let mut scores = vec![0.0; levels.len()];
    for (level, files) in levels.iter().enumerate() {
        if level + 1 >= cfg.num_levels.min(levels.len()) {
            break;
        }
        scores[level] = if level == 0 {
            files.len() as f64 / cfg.l0_trigger.max(1) as f64
        } else {
            let bytes: u64 = files.iter().map(|f| f.as_ref().size).sum();
            bytes as f64 / level_target(cfg, level).max(1) as f64
        };
    }
    scores
}

fn key_range<'a, T: AsRef<FileMeta> + 'a>(
    files: impl Iterator<Item = &'a T>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut range: Option<(Vec<u8>, Vec<u8>)> = None;
    for f in files {
        let f = f.as_ref();
        range = Some(match range {
            None => (f.smallest.clone(), f.largest.clone()),
            Some((lo, hi)) => (lo.min(f.smallest.clone()), hi.max(f.largest.clone())),
        });
    }
    range
}

/// Picks the most urgent compaction of one column family, skipping files in `busy` (being
/// compacted by another thread). `levels[0]` is L0; `pointers[level]` is where round-robin
/// picking resumes.
pub fn pick<T: AsRef<FileMeta>>(
    cf: u32,
    levels: &[Vec<T>],
    pointers: &[Option<Vec<u8>>],
    cfg: &PickerConfig,
    busy: &HashSet<u64>,
) -> Option<CompactionTask> {
    let scores = level_scores(levels, cfg);
    let mut order: Vec<usize> = (0..scores.len()).filter(|l| scores[*l] >= 1.0).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    for level in order {
        if let Some(task) = pick_level(cf, levels, pointers, level, scores[level], busy) {
            return Some(task);
        }
    }
    None
}

fn pick_level<T: AsRef<FileMeta>>(
    cf: u32,
    levels: &[Vec<T>],
    pointers: &[Option<Vec<u8>>],
    level: usize,
    score: f64,
    busy: &HashSet<u64>,
) -> Option<CompactionTask> {
    let next = levels.get(level + 1)?;
    let files = &levels[level];
    let candidates: Vec<&T> = if level == 0 {
        if files.iter().any(|f| busy.contains(&f.as_ref().number)) {
            return None;
        }
        files.iter().collect()
    } else {
        // Round robin: files after the pointer first, then wrap around.
        let ptr = pointers.get(level).and_then(|p| p.as_deref());
        let start = ptr.map_or(0, |p| {
            files.partition_point(|f| f.as_ref().largest.as_slice() <= p)
        });
        let n = files.len();
        let mut pickable = None;
        for i in 0..n {
            let f = &files[(start + i) % n];
            if busy.contains(&f.as_ref().number) {
                continue;
            }
            let (lo, hi) = (&f.as_ref().smallest, &f.as_ref().largest);
            let overlapping_busy = next
                .iter()
                .any(|g| g.as_ref().overlaps(lo, hi) && busy.contains(&g.as_ref().number));
            if !overlapping_busy {
                pickable = Some(f);
                break;
            }
        }
        vec![pickable?]
    };
    let (lo, hi) = key_range(candidates.iter().copied())?;
    let next_inputs: Vec<u64> = next
        .iter()
        .filter(|g| g.as_ref().overlaps(&lo, &hi))
        .map(|g| g.as_ref().number)
        .collect();
    if next_inputs.iter().any(|n| busy.contains(n)) {
        return None;
    }
    let inputs: Vec<u64> = candidates.iter().map(|f| f.as_ref().number).collect();
    Some(CompactionTask {
        cf,
        level,
        output_level: level + 1,
        trivial_move: inputs.len() == 1 && next_inputs.is_empty(),
        inputs,
        next_inputs,
        score,
        pointer: hi,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn f(number: u64, lo: &str, hi: &str, size: u64) -> FileMeta {
        FileMeta {
            number,
            size,
            smallest: lo.as_bytes().to_vec(),
            largest: hi.as_bytes().to_vec(),
            ..FileMeta::default()
        }
    }

    fn cfg() -> PickerConfig {
        PickerConfig {
            l0_trigger: 4,
            base_bytes: 100,
            multiplier: 10,
            num_levels: 4,
        }
    }

    #[test]
    fn quiet_tree_needs_nothing() {
        let levels = vec![
            vec![f(1, "a", "c", 10)],
            vec![f(2, "a", "z", 50)],
            vec![],
            vec![],
        ];
        assert_eq!(pick(0, &levels, &[], &cfg(), &HashSet::new()), None);
    }

    #[test]
    fn l0_by_count_takes_all_l0_and_overlapping_l1() {
        let levels = vec![
            vec![
                f(5, "c", "d", 1),
                f(6, "a", "b", 1),
                f(7, "b", "e", 1),
                f(8, "d", "d", 1),
            ],
            vec![f(1, "a", "a", 10), f(2, "f", "g", 10)],
            vec![],
            vec![],
        ];
        let t = pick(0, &levels, &[], &cfg(), &HashSet::new()).unwrap();
        assert_eq!((t.level, t.output_level), (0, 1));
        assert_eq!(t.inputs, vec![5, 6, 7, 8]);
        assert_eq!(t.next_inputs, vec![1]);
        assert!(!t.trivial_move);
        // Busy L0 files block the L0 compaction.
        assert_eq!(
            pick(0, &levels, &[], &cfg(), &[6].into_iter().collect()),
            None
        );
    }

    #[test]
    fn size_levels_round_robin_and_trivial_move() {
        let levels = vec![
            vec![],
            vec![f(1, "a", "b", 60), f(2, "c", "d", 60), f(3, "e", "f", 60)],
            vec![f(4, "c", "c", 10)],
            vec![],
        ];
        let t = pick(0, &levels, &[], &cfg(), &HashSet::new()).unwrap();
        assert_eq!((t.inputs.clone(), t.trivial_move), (vec![1], true));
        let ptrs = vec![None, Some(t.pointer.clone())];
        let t2 = pick(0, &levels, &ptrs, &cfg(), &HashSet::new()).unwrap();
        assert_eq!(t2.inputs, vec![2]);
        assert_eq!(t2.next_inputs, vec![4]);
        assert!(!t2.trivial_move);
        // Pointer past the last file wraps around.
        let ptrs = vec![None, Some(b"z".to_vec())];
        assert_eq!(
            pick(0, &levels, &ptrs, &cfg(), &HashSet::new())
                .unwrap()
                .inputs,
            vec![1]
        );
    }

    #[test]
    fn most_urgent_level_wins_and_last_level_is_never_picked() {
        let levels = vec![
            vec![f(9, "a", "a", 1); 4],
            vec![f(1, "a", "b", 1000)],
            vec![],
            vec![f(3, "a", "z", 1 << 40)],
        ];
        let t = pick(0, &levels, &[], &cfg(), &HashSet::new()).unwrap();
        assert_eq!(t.level, 1, "L1 at 10x its target beats L0 at 1x");
        let scores = level_scores(&levels, &cfg());
        assert_eq!(scores[3], 0.0);
    }
}
