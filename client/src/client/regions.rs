//! Operations over regions: ranges and deletes cut at region boundaries and stitched back
//! together, the region list, and splits.

use std::time::Instant;

use super::routing::Part;
use super::{
    admin_command, admin_of, command, range_request, single, Client, DeleteResult, Error,
    RangeOptions, RangeResult, RegionInfo,
};
use crate::key_span::{clip, next_start, KeySpan, SpanEnd};
use crate::proto::metapb;
use crate::proto::pontoonpb::RangeResponse;
use crate::proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, BatchSplitRequest, CmdType, DeleteRangeRequest,
    DeleteRangeResponse, RaftCmdRequest, Request, SplitRequest,
};
use crate::region_cache::{CachedRegion, RegionCache};

/// The `(key, range_end)` of the part of `[pos, end)` that `region` holds; unrouted, the
/// rest of the span as it was asked (`original_end`).
fn part_of(
    pos: &[u8],
    end: &SpanEnd,
    original_end: &[u8],
    region: Option<&metapb::Region>,
) -> (Vec<u8>, Vec<u8>) {
    match region {
        Some(r) => clip(pos, end, r),
        None => (pos.to_vec(), original_end.to_vec()),
    }
}

fn delete_range_command(key: Vec<u8>, range_end: Vec<u8>, prev_kv: bool) -> RaftCmdRequest {
    command(Request {
        cmd_type: CmdType::DeleteRange as i32,
        delete_range: Some(DeleteRangeRequest {
            cf: String::new(),
            start_key: key,
            end_key: range_end,
            prev_kv,
        }),
        ..Default::default()
    })
}

fn range_answer(part: &mut Part) -> Result<RangeResponse, Error> {
    Ok(single(&mut part.resp, CmdType::Range)?
        .range
        .unwrap_or_default())
}

fn delete_answer(part: &mut Part) -> Result<DeleteRangeResponse, Error> {
    Ok(single(&mut part.resp, CmdType::DeleteRange)?
        .delete_range
        .unwrap_or_default())
}

impl Client {
    /// [`Client::range`]: one command per region of the span, answers stitched.
    pub(super) async fn range_by_region(
        &self,
        key: &[u8],
        opts: &RangeOptions,
    ) -> Result<RangeResult, Error> {
        let deadline = Instant::now() + self.inner.opts.request_timeout;
        let end = match KeySpan::of(key, &opts.range_end) {
            KeySpan::Range(end) => end,
            // One key, or none: one region answers.
            KeySpan::Single | KeySpan::Empty => {
                let req = command(range_request(key, opts));
                let mut part = self.call_part(Some(key), deadline, |_| req.clone()).await?;
                let r = range_answer(&mut part)?;
                return Ok(RangeResult {
                    header: part.resp.response_header.unwrap_or_default(),
                    kvs: r.kvs,
                    more: r.more,
                    count: r.count,
                });
            }
        };
        let mut out = RangeResult::default();
        let mut pos = key.to_vec();
        let mut first = true;
        let mut cut_short = false;
        loop {
            let taken = i64::try_from(out.kvs.len()).unwrap_or(i64::MAX);
            let full = opts.limit > 0 && taken >= opts.limit;
            let part_opts = RangeOptions {
                range_end: Vec::new(),
                // At most what is still missing; once full, only the count.
                limit: if opts.limit > 0 && !full {
                    opts.limit - taken
                } else {
                    0
                },
                count_only: opts.count_only || full,
                ..opts.clone()
            };
            let mut part = self
                .call_part(Some(&pos), deadline, |region| {
                    let (start, range_end) = part_of(&pos, &end, &opts.range_end, region);
                    command(range_request(
                        &start,
                        &RangeOptions {
                            range_end,
                            ..part_opts.clone()
                        },
                    ))
                })
                .await?;
            let r = range_answer(&mut part)?;
            if first {
                out.header = part.resp.response_header.take().unwrap_or_default();
                first = false;
            }
            out.count = out.count.saturating_add(r.count);
            cut_short |= r.more;
            out.kvs.extend(r.kvs);
            match part
                .region
                .as_ref()
                .and_then(|r| next_start(&r.region, &end))
            {
                Some(next) => pos = next,
                None => break,
            }
        }
        if opts.limit > 0 {
            // A store answering more than asked must not break the limit.
            out.kvs
                .truncate(usize::try_from(opts.limit).unwrap_or(usize::MAX));
        }
        let returned = i64::try_from(out.kvs.len()).unwrap_or(i64::MAX);
        out.more = !opts.count_only && (cut_short || out.count > returned);
        Ok(out)
    }

    /// [`Client::delete`]: one DeleteRange per region of the span, answers summed.
    pub(super) async fn delete_by_region(
        &self,
        key: &[u8],
        range_end: &[u8],
        prev_kv: bool,
    ) -> Result<DeleteResult, Error> {
        let deadline = Instant::now() + self.inner.opts.request_timeout;
        let end = match KeySpan::of(key, range_end) {
            KeySpan::Range(end) => end,
            KeySpan::Single | KeySpan::Empty => {
                let req = delete_range_command(key.to_vec(), range_end.to_vec(), prev_kv);
                let mut part = self.call_part(Some(key), deadline, |_| req.clone()).await?;
                let d = delete_answer(&mut part)?;
                return Ok(DeleteResult {
                    header: part.resp.response_header.unwrap_or_default(),
                    deleted: d.deleted,
                    prev_kvs: d.prev_kvs,
                });
            }
        };
        let mut out = DeleteResult::default();
        let mut pos = key.to_vec();
        let mut first = true;
        loop {
            let mut part = self
                .call_part(Some(&pos), deadline, |region| {
                    let (start, end_key) = part_of(&pos, &end, range_end, region);
                    delete_range_command(start, end_key, prev_kv)
                })
                .await?;
            let d = delete_answer(&mut part)?;
            if first {
                out.header = part.resp.response_header.take().unwrap_or_default();
                first = false;
            }
            out.deleted = out.deleted.saturating_add(d.deleted);
            out.prev_kvs.extend(d.prev_kvs);
            match part
                .region
                .as_ref()
                .and_then(|r| next_start(&r.region, &end))
            {
                Some(next) => pos = next,
                None => break,
            }
        }
        Ok(out)
    }

    /// Every region the reachable stores hold, asked now (admin command `Status` to every
    /// endpoint not marked down, at once), sorted by start key. Where stores disagree, the
    /// newer epoch wins (higher `version`, then higher `conf_ver`); the leader is the one
    /// reported for the highest raft term; size and revision are the highest reported.
    /// The answers also refresh the client's region cache.
    ///
    /// Empty if the stores list no region (stores from before multi-raft). Fails with the
    /// last store's error if no store answers.
    pub async fn region_list(&self) -> Result<Vec<RegionInfo>, Error> {
        let deadline = Instant::now() + self.inner.opts.request_timeout;
        let until = tokio::time::Instant::from_std(deadline);
        let _refreshing = tokio::time::timeout_at(until, self.inner.refreshing.lock())
            .await
            .map_err(|_| Error::Timeout)?;
        let fresh = self.load_regions(deadline).await?;
        Ok(fresh
            .regions()
            .map(|r| RegionInfo {
                region: r.region.clone(),
                leader_store_id: r.leader_store_id(),
                approximate_size: r.approximate_size,
                revision: r.revision,
            })
            .collect())
    }

    /// Splits the region holding `key` at `key` (admin command `BatchSplit` with one split
    /// key; the store picks the new region's and peers' ids). Routed like a write to that
    /// region's leader, with its epoch. Returns the resulting regions, left then right
    /// (the left one keeps the region's id), and puts them in the region cache.
    ///
    /// A `key` that is the region's start key (the empty key, for instance) cannot split
    /// it: the store's refusal is returned as [`Error::Region`]. A split retried after a
    /// lost answer may have been applied by the first attempt; the retry is then refused
    /// the same way.
    pub async fn region_split(&self, key: &[u8]) -> Result<Vec<metapb::Region>, Error> {
        let deadline = Instant::now() + self.inner.opts.request_timeout;
        let req = admin_command(AdminRequest {
            cmd_type: AdminCmdType::BatchSplit as i32,
            splits: Some(BatchSplitRequest {
                requests: vec![SplitRequest {
                    split_key: key.to_vec(),
                    new_region_id: 0,
                    new_peer_ids: Vec::new(),
                    ..Default::default()
                }],
                right_derive: false,
            }),
            ..Default::default()
        });
        let mut part = self.call_part(Some(key), deadline, |_| req.clone()).await?;
        let regions = admin_of(&mut part.resp, AdminCmdType::BatchSplit)?
            .splits
            .map(|s| s.regions)
            .unwrap_or_default();
        if regions.is_empty() {
            return Err(Error::UnexpectedResponse(
                "BatchSplit answer without regions".into(),
            ));
        }
        let mut st = self.region_state();
        for region in &regions {
            // The new regions start with their leader where the split was applied.
            let mut c = CachedRegion::new(region.clone());
            c.leader = c.peer_on(part.store_id).cloned();
            st.cache.insert(c);
        }
        Ok(regions)
    }

    /// A copy of the client's region cache, as routing sees it now (for diagnostics;
    /// [`Client::region_list`] asks the stores).
    pub fn region_cache(&self) -> RegionCache {
        self.region_state().cache.clone()
    }
}
