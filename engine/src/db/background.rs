//! Background work: flushing immutable memtables and running compactions.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Inner;
use crate::compaction::{Gc, OutputWriter};
use crate::error::Result;
use crate::iterator::{MergingIter, Source, Start, TableSource};
use crate::manifest::{FileMeta, VersionEdit};
use crate::picker::{self, CompactionTask, PickerConfig};
use crate::range_del::RangeTombstone;
use crate::version::TableFile;

impl Inner {
    pub(crate) fn snapshot_list(&self) -> Vec<u64> {
        self.snapshots.lock().keys().copied().collect()
    }

    fn alloc_file_number(&self) -> u64 {
        let mut s = self.state.lock();
        let n = s.next_file_number;
        s.next_file_number += 1;
        n
    }

    // ---- flush ----------------------------------------------------------------------------

    /// Runs `job` until shutdown: again at once while it finds work, otherwise after the next
    /// event (or a short timeout). An error poisons the engine and parks the loop.
    pub(crate) fn background_loop(self: Arc<Self>, job: fn(&Inner) -> Result<bool>) {
        loop {
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            if !self.poisoned.load(Ordering::Acquire) {
                match job(&self) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => self.poison(&e),
                }
            }
            self.wait_event();
        }
    }

    /// Opens freshly written tables and records them in `edit` at `level` of `cf`.
    fn open_outputs(
        &self,
        cf: u32,
        level: u32,
        metas: Vec<FileMeta>,
        edit: &mut VersionEdit,
        opened: &mut HashMap<u64, Arc<TableFile>>,
    ) -> Result<()> {
        for meta in metas {
            let handle = TableFile::open(&self.fs, &self.dir, meta.clone())?;
            opened.insert(meta.number, Arc::new(handle));
            edit.new_files.push((cf, level, meta));
        }
        Ok(())
    }

    /// Flushes the oldest immutable memtable. Returns false if there was none.
    pub(crate) fn flush_one(&self) -> Result<bool> {
        let (imm, version) = {
            let sv = self.sv.read();
            match sv.imms.last() {
                Some(m) => (m.clone(), sv.version.clone()),
                None => return Ok(false),
            }
        };
        let snapshots = self.snapshot_list();
        let mut edit = VersionEdit::default();
        let mut opened = HashMap::new();
        let mut bytes = 0;
        let mut alloc = || self.alloc_file_number();
        for cf in imm.column_families() {
            if !version.cfs.contains_key(&cf) {
                continue; // dropped since the write
            }
            let tombstones = imm.range_tombstones(cf);
            let mut gc = Gc::new(snapshots.clone(), false, &tombstones);
            let mut out = OutputWriter::new(&self.fs, &self.dir, self.opts.table_options(), None);
            let mut result = Ok(());
            imm.for_each_in_cf(cf, |ikey, value| {
                result = match gc.keep(ikey) {
                    Ok(true) => out.add(ikey, value, &mut alloc),
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                };
                result.is_ok()
            });
            result?;
            let (metas, written) = out.finish(tombstones, &mut alloc)?;
            bytes += written;
            self.open_outputs(cf, 0, metas, &mut edit, &mut opened)?;
        }
        self.fs.sync_dir(&self.dir)?;
        let flushed = imm.last_seq();
        edit.flushed_seq = Some(flushed);
        {
            let mut state = self.state.lock();
            self.log_and_apply(&mut state, edit, opened, Some(&imm))?;
        }
        self.flushed_seq.fetch_max(flushed, Ordering::AcqRel);
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_flushed
            .fetch_add(bytes, Ordering::Relaxed);
        self.notify();
        Ok(true)
    }

    // ---- compaction -----------------------------------------------------------------------

    fn picker_config(&self) -> PickerConfig {
        PickerConfig {
            l0_trigger: self.opts.l0_compaction_trigger,
            base_bytes: self.opts.max_bytes_for_level_base,
            multiplier: self.opts.level_multiplier,
            num_levels: self.opts.num_levels,
        }
    }

    /// Picks and runs one compaction. Returns false if none is due.
    pub(crate) fn compact_once(&self) -> Result<bool> {
        let task = {
            let mut state = self.state.lock();
            if state.manual_compaction {
                return Ok(false);
            }
            let version = self.sv.read().version.clone();
            let cfg = self.picker_config();
            let mut best: Option<CompactionTask> = None;
            for (id, tree) in &version.cfs {
                if let Some(t) =
                    picker::pick(*id, &tree.levels, &tree.compact_pointers, &cfg, &state.busy)
                {
                    if best.as_ref().is_none_or(|b| t.score > b.score) {
                        best = Some(t);
                    }
                }
            }
            let Some(task) = best else {
                return Ok(false);
            };
            state
                .busy
                .extend(task.inputs.iter().chain(task.next_inputs.iter()));
            state.running_compactions += 1;
            task
        };
        let r = self.run_compaction(&task);
        {
            let mut state = self.state.lock();
            for n in task.inputs.iter().chain(task.next_inputs.iter()) {
                state.busy.remove(n);
            }
            state.running_compactions -= 1;
        }
        self.notify();
        r.map(|_| true)
    }

    fn run_compaction(&self, task: &CompactionTask) -> Result<()> {
        let version = self.sv.read().version.clone();
        let Some(tree) = version.cfs.get(&task.cf) else {
            return Ok(()); // dropped meanwhile
        };
        let pick = |level: usize, numbers: &[u64]| -> Vec<Arc<TableFile>> {
            tree.levels[level]
                .iter()
                .filter(|f| numbers.contains(&f.meta.number))
                .cloned()
                .collect()
        };
        let inputs = pick(task.level, &task.inputs);
        let next_inputs = pick(task.output_level, &task.next_inputs);
        let mut edit = VersionEdit::default();
        for f in &inputs {
            edit.deleted_files
                .push((task.cf, task.level as u32, f.meta.number));
        }
        for f in &next_inputs {
            edit.deleted_files
                .push((task.cf, task.output_level as u32, f.meta.number));
        }
        edit.compact_pointers
            .push((task.cf, task.level as u32, task.pointer.clone()));

        if task.trivial_move {
            let mut opened = HashMap::new();
            for f in &inputs {
                edit.new_files
                    .push((task.cf, task.output_level as u32, f.meta.clone()));
                opened.insert(f.meta.number, f.clone());
            }
            let mut state = self.state.lock();
            self.log_and_apply(&mut state, edit, opened, None)?;
            self.counters.compactions.fetch_add(1, Ordering::Relaxed);
            self.counters.trivial_moves.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }

        let all: Vec<&Arc<TableFile>> = inputs.iter().chain(next_inputs.iter()).collect();
        let lo = all
            .iter()
            .map(|f| f.meta.smallest.clone())
            .min()
            .unwrap_or_default();
        let hi = all
            .iter()
            .map(|f| f.meta.largest.clone())
            .max()
            .unwrap_or_default();
        let bottommost = tree.levels[task.output_level + 1..]
            .iter()
            .flatten()
            .all(|f| !f.meta.overlaps(&lo, &hi));
        let tombstones: Vec<RangeTombstone> = all
            .iter()
            .flat_map(|f| f.table.range_tombstones().iter().cloned())
            .collect();
        let mut gc = Gc::new(self.snapshot_list(), bottommost, &tombstones);
        let kept: Vec<RangeTombstone> = tombstones
            .iter()
            .filter(|t| gc.keep_tombstone(t))
            .cloned()
            .collect();
        // Range tombstones can span any split point, so a compaction that keeps some writes a
        // single file (they are rare: region deletion).
        let target = kept.is_empty().then_some(self.opts.target_file_size);
        let start = Start {
            reverse: false,
            lower: None,
            upper: None,
        };
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        for f in &all {
            sources.push(Box::new(TableSource::new(f, &start)?));
        }
        let mut merged = MergingIter::new(sources, false);
        let mut out = OutputWriter::new(&self.fs, &self.dir, self.opts.table_options(), target);
        let mut alloc = || self.alloc_file_number();
        while merged.valid() {
            if self.shutdown.load(Ordering::Acquire) {
                return Ok(()); // outputs become orphans, removed at next open
            }
            if gc.keep(merged.key())? {
                out.add(merged.key(), merged.value(), &mut alloc)?;
            }
            merged.advance()?;
        }
        let (metas, written) = out.finish(kept, &mut alloc)?;
        let mut opened = HashMap::new();
        self.open_outputs(
            task.cf,
            task.output_level as u32,
            metas,
            &mut edit,
            &mut opened,
        )?;
        self.fs.sync_dir(&self.dir)?;
        {
            let mut state = self.state.lock();
            self.log_and_apply(&mut state, edit, opened, None)?;
        }
        for f in all {
            f.mark_obsolete();
        }
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_compacted
            .fetch_add(written, Ordering::Relaxed);
        Ok(())
    }

    /// Pushes every column family's data to the last level, level by level.
    pub(crate) fn compact_all(&self) -> Result<()> {
        // Stop automatic compactions and wait for running ones.
        loop {
            let mut s = self.state.lock();
            if !s.manual_compaction && s.running_compactions == 0 {
                s.manual_compaction = true;
                s.running_compactions += 1;
                break;
            }
            drop(s);
            self.wait_event();
        }
        let r = (|| {
            let last = self.opts.num_levels - 1;
            for level in 0..last {
                let version = self.sv.read().version.clone();
                for (id, tree) in &version.cfs {
                    let files = &tree.levels[level];
                    if files.is_empty() {
                        continue;
                    }
                    let inputs: Vec<u64> = files.iter().map(|f| f.meta.number).collect();
                    let lo = files
                        .iter()
                        .map(|f| f.meta.smallest.clone())
                        .min()
                        .unwrap_or_default();
                    let hi = files
                        .iter()
                        .map(|f| f.meta.largest.clone())
                        .max()
                        .unwrap_or_default();
                    let next_inputs: Vec<u64> = tree.levels[level + 1]
                        .iter()
                        .filter(|f| f.meta.overlaps(&lo, &hi))
                        .map(|f| f.meta.number)
                        .collect();
                    let task = CompactionTask {
                        cf: *id,
                        level,
                        output_level: level + 1,
                        trivial_move: false,
                        inputs,
                        next_inputs,
                        score: 0.0,
                        pointer: hi,
                    };
                    self.run_compaction(&task)?;
                }
            }
            Ok(())
        })();
        {
            let mut s = self.state.lock();
            s.manual_compaction = false;
            s.running_compactions -= 1;
        }
        self.notify();
        if let Err(e) = &r {
            self.poison(e);
        }
        r
    }
}
