//! One command to one region: the attempt loop behind [`Client::call`], the choice of
//! endpoint, the reaction to region errors, and the refresh of the region cache.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::{admin_command, admin_of, status_of, status_request, Client, Error};
use crate::proto::errorpb;
use crate::proto::framepb::FrameErrorCode;
use crate::proto::metapb;
use crate::proto::pontoonpb::{RegionStatus, StoreListRequest};
use crate::proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, CmdType, RaftCmdRequest, RaftCmdResponse,
};
use crate::region_cache::{CachedRegion, RegionCache};

/// The answer to one command and where it was executed.
#[derive(Debug)]
pub(super) struct Part {
    /// The store's answer (without region error).
    pub resp: RaftCmdResponse,
    /// The region the command was routed to; `None` when it was sent unrouted (explicit
    /// region id, no key, or no region known for the key).
    pub region: Option<Arc<CachedRegion>>,
    /// Store id of the store that answered (0: unknown).
    pub store_id: u64,
}

/// The region cache and its refresh bookkeeping.
#[derive(Debug, Default)]
pub(super) struct RegionState {
    pub cache: RegionCache,
    /// Bumped by every refresh, answered or not: a caller that saw generation `g` and
    /// wants a refresh skips it if the generation moved past `g` meanwhile.
    pub generation: u64,
    /// When the last refresh started.
    pub last_refresh: Option<Instant>,
    /// The last refresh was answered and no store listed any region (stores from before
    /// multi-raft): cache misses are routed unrouted without refreshing again.
    pub unregioned: bool,
}

/// What a command does when a store answers it with a region error that carries only a
/// message (no typed field the client could act on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnPlainError {
    /// The error is the command's answer: the store refused the command itself.
    Answer,
    /// That store cannot serve the command but another may (a store that learnt no
    /// cluster metadata yet, asked for `StoreList`): an unrouted command is sent to each
    /// other endpoint once, in order, and the last store's error is the answer if none can.
    AskOthers,
}

/// True if `e` carries no typed field, only (at most) a message.
fn is_plain(e: &errorpb::Error) -> bool {
    e.not_leader.is_none()
        && e.region_not_found.is_none()
        && e.key_not_in_region.is_none()
        && e.epoch_not_match.is_none()
        && e.server_is_busy.is_none()
        && e.stale_command.is_none()
        && e.store_not_match.is_none()
        && e.raft_entry_too_large.is_none()
}

/// True for the admin commands about the whole cluster (`StoreList`, `SetStoreState`):
/// they are never routed and always carry region 0, whatever
/// [`ClientOptions::region_id`](super::ClientOptions::region_id) says.
fn is_cluster_command(req: &RaftCmdRequest) -> bool {
    req.admin_request.as_ref().is_some_and(|a| {
        matches!(
            AdminCmdType::try_from(a.cmd_type),
            Ok(AdminCmdType::StoreList | AdminCmdType::SetStoreState)
        )
    })
}

/// True if `req` may change data or cluster state: it is not a read (`Get`, `Snap`,
/// `Range`) nor a store's local report (`Status`, `StoreList`).
fn mutates(req: &RaftCmdRequest) -> bool {
    if let Some(a) = &req.admin_request {
        return !matches!(
            AdminCmdType::try_from(a.cmd_type),
            Ok(AdminCmdType::Status | AdminCmdType::StoreList)
        );
    }
    req.requests.iter().any(|r| {
        !matches!(
            CmdType::try_from(r.cmd_type),
            Ok(CmdType::Get | CmdType::Snap | CmdType::Range | CmdType::Invalid)
        )
    })
}

/// True for an error with which a store refuses a connection without reading what was
/// sent on it any further (it closed an idle connection): nothing sent there was executed.
fn refused_unread(e: &Error) -> bool {
    matches!(
        e,
        Error::Server {
            code: FrameErrorCode::IdleTimeout,
            ..
        }
    )
}

/// What to do after a region error.
enum Retry {
    /// Retry at once (the cache or the preferred endpoint was updated).
    Now,
    /// Retry after a pause that grows up to
    /// [`ClientOptions::retry_backoff`](super::ClientOptions::retry_backoff).
    Later,
    /// Give up: the error is the answer.
    GiveUp,
}

/// The key a command is routed by: its first request's key, or its first split key; `None`
/// for keyless commands and for commands whose header already names a region.
pub(super) fn routing_key(req: &RaftCmdRequest) -> Option<Vec<u8>> {
    if req.header.as_ref().is_some_and(|h| h.region_id != 0) {
        return None;
    }
    if let Some(admin) = &req.admin_request {
        #[allow(deprecated)]
        let key = match AdminCmdType::try_from(admin.cmd_type) {
            Ok(AdminCmdType::BatchSplit) => admin
                .splits
                .as_ref()
                .and_then(|s| s.requests.first())
                .map(|s| s.split_key.clone()),
            Ok(AdminCmdType::Split) => admin.split.as_ref().map(|s| s.split_key.clone()),
            _ => None,
        };
        return key;
    }
    let r = req.requests.first()?;
    match CmdType::try_from(r.cmd_type).ok()? {
        CmdType::Get => r.get.as_ref().map(|g| g.key.clone()),
        CmdType::Put => r.put.as_ref().map(|p| p.key.clone()),
        CmdType::Delete => r.delete.as_ref().map(|d| d.key.clone()),
        CmdType::DeleteRange => r.delete_range.as_ref().map(|d| d.start_key.clone()),
        CmdType::Range => r.range.as_ref().map(|g| g.key.clone()),
        CmdType::Snap | CmdType::Invalid => None,
    }
}

impl Client {
    pub(super) fn region_state(&self) -> std::sync::MutexGuard<'_, RegionState> {
        // A poisoned lock only means a panic elsewhere; the cache itself is consistent.
        self.inner.regions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the command `build` makes for the region holding `key` (`None`: unrouted) and
    /// returns the answer, retrying until `deadline` and at most
    /// [`ClientOptions::max_attempts`](super::ClientOptions::max_attempts) times. `build`
    /// is called for every attempt with the region the attempt is routed to, so that a
    /// range can be cut to it; the header's `region_id`, `region_epoch` and `peer` are set
    /// afterwards.
    pub(super) async fn call_part<F>(
        &self,
        key: Option<&[u8]>,
        deadline: Instant,
        build: F,
    ) -> Result<Part, Error>
    where
        F: Fn(Option<&metapb::Region>) -> RaftCmdRequest,
    {
        self.call_part_with(key, deadline, OnPlainError::Answer, build)
            .await
    }

    /// [`Client::call_part`] with the reaction `on_plain` to region errors carrying only a
    /// message.
    pub(super) async fn call_part_with<F>(
        &self,
        key: Option<&[u8]>,
        deadline: Instant,
        on_plain: OnPlainError,
        build: F,
    ) -> Result<Part, Error>
    where
        F: Fn(Option<&metapb::Region>) -> RaftCmdRequest,
    {
        let opts = &self.inner.opts;
        let key = key.filter(|_| opts.region_id == 0);
        let mut last = Error::Timeout;
        let mut pause = false;
        // Pauses grow from a sixteenth of `retry_backoff` and double up to it: a leader
        // transfer is over in milliseconds, an election takes a second or two.
        let mut backoff = (opts.retry_backoff / 16).max(Duration::from_millis(1));
        // Endpoints that answered NotLeader for this command: tried last.
        let mut avoid: Vec<usize> = Vec::new();
        // Endpoints that could not serve this unrouted command (`OnPlainError::AskOthers`).
        let mut unable: Vec<usize> = Vec::new();
        for _ in 0..opts.max_attempts.max(1) {
            if pause {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.min(opts.retry_backoff).min(left)).await;
                backoff = backoff.saturating_mul(2);
            }
            if deadline.saturating_duration_since(Instant::now()).is_zero() {
                // The last attempt could not reach its store (a store down, or none up):
                // say so rather than "timed out".
                return Err(if last.is_connection_failure() {
                    last
                } else {
                    Error::Timeout
                });
            }
            let (route, generation) = match key {
                Some(k) => self.route(k, deadline).await,
                None => (None, self.region_state().generation),
            };
            let endpoints = self.eps().len();
            if avoid.len() >= endpoints {
                avoid.clear();
            }
            let i = match &route {
                Some(r) => self.target(r, &avoid),
                None => self.pick_except(&unable),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            // Whether a failure may leave a change applied: the command changes data and
            // reached the connection.
            let mut uncertain = false;
            let result = match tokio::time::timeout(left, self.connection(i)).await {
                Err(_) => Err(Error::Timeout),
                Ok(Err(e)) => Err(e),
                Ok(Ok(conn)) => {
                    let store_id = conn.ack.store_id;
                    let req =
                        self.with_route(build(route.as_ref().map(|r| &r.region)), &route, store_id);
                    let left = deadline.saturating_duration_since(Instant::now());
                    match conn.call_once(&req, left.min(opts.attempt_timeout)).await {
                        Ok(resp) => Ok((resp, store_id)),
                        Err(a) => {
                            uncertain = a.sent
                                && !opts.retry_sent_writes
                                && mutates(&req)
                                && !refused_unread(&a.error);
                            Err(a.error)
                        }
                    }
                }
            };
            let (err, store_id) = match result {
                Ok((mut resp, store_id)) => match resp.header.as_mut().and_then(|h| h.error.take())
                {
                    None => {
                        return Ok(Part {
                            resp,
                            region: route,
                            store_id,
                        })
                    }
                    Some(err) => (err, store_id),
                },
                Err(e) if e.is_connection_failure() => {
                    if let Some(ep) = self.eps().get(i) {
                        ep.mark_down(opts.endpoint_backoff);
                    }
                    self.advance_from(i);
                    if uncertain {
                        // A retry could apply the change twice. Later calls still go
                        // elsewhere while the endpoint is marked down.
                        return Err(Error::Indeterminate(Box::new(e)));
                    }
                    last = e;
                    // Tried last from now on, as a store that answered NotLeader: once every
                    // endpoint is in `avoid` the list starts over, so the followers of a dead
                    // leader are asked again (and name the new leader once it is elected)
                    // instead of every attempt going back to the dead one.
                    if !avoid.contains(&i) {
                        avoid.push(i);
                    }
                    // Another endpoint may answer at once; if none can (every one is down,
                    // or failed this command already), wait a little. Without the NotLeader
                    // ones, the followers of a dead leader sent each attempt back to its
                    // endpoint, and a command used up its attempts in milliseconds.
                    pause = self.nothing_usable(&avoid);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let retry = self
                .on_region_error(
                    &err,
                    route.as_deref(),
                    i,
                    store_id,
                    generation,
                    deadline,
                    &mut avoid,
                )
                .await;
            let ask_others = matches!(retry, Retry::GiveUp)
                && on_plain == OnPlainError::AskOthers
                && route.is_none()
                && is_plain(&err);
            last = Error::Region(Box::new(err));
            if ask_others {
                if !unable.contains(&i) {
                    unable.push(i);
                }
                if unable.len() >= endpoints {
                    return Err(last);
                }
                pause = false;
                continue;
            }
            match retry {
                Retry::Now => pause = false,
                Retry::Later => pause = true,
                Retry::GiveUp => return Err(last),
            }
        }
        Err(last)
    }

    /// `req` with its header set for `route`, sent to store `store_id`: the region's id and
    /// epoch and its peer on that store (none if it has none there); unrouted, the
    /// explicit [`ClientOptions::region_id`](super::ClientOptions::region_id) if any
    /// (never for the cluster-wide store commands).
    fn with_route(
        &self,
        mut req: RaftCmdRequest,
        route: &Option<Arc<CachedRegion>>,
        store_id: u64,
    ) -> RaftCmdRequest {
        let cluster_wide = is_cluster_command(&req);
        let header = req.header.get_or_insert_with(Default::default);
        match route {
            Some(r) => {
                header.region_id = r.id();
                header.region_epoch = r.region.region_epoch;
                header.peer = r.peer_on(store_id).cloned();
            }
            None if self.inner.opts.region_id != 0 && !cluster_wide => {
                header.region_id = self.inner.opts.region_id;
            }
            None => {}
        }
        req
    }

    /// The cached region holding `key` (refreshing the cache first on a miss, unless a
    /// refresh is too recent or the stores list no region), and the cache generation it
    /// was read at.
    async fn route(&self, key: &[u8], deadline: Instant) -> (Option<Arc<CachedRegion>>, u64) {
        let min_gap = self.inner.opts.region_refresh_min_interval;
        let (hit, generation, refresh) = {
            let st = self.region_state();
            let hit = st.cache.locate_shared(key).cloned();
            let refresh = hit.is_none()
                && match st.last_refresh {
                    None => true,
                    Some(t) => !st.unregioned && t.elapsed() >= min_gap,
                };
            (hit, st.generation, refresh)
        };
        if !refresh {
            return (hit, generation);
        }
        self.refresh_regions(generation, deadline).await;
        let st = self.region_state();
        (st.cache.locate_shared(key).cloned(), st.generation)
    }

    /// The endpoint to send a command for region `r` to: the leader's store, else another
    /// peer's store, else an endpoint whose store is not known yet, else any endpoint;
    /// skipping endpoints marked down and those in `avoid` while others remain.
    fn target(&self, r: &CachedRegion, avoid: &[usize]) -> usize {
        let eps = self.eps();
        let n = eps.len();
        let now = Instant::now();
        let store_of = |i: usize| eps.get(i).map_or(0, |e| e.store_id.load(Ordering::Relaxed));
        let endpoint_of = |store: u64| (0..n).find(|&i| store != 0 && store_of(i) == store);
        let usable = |i: &usize| !avoid.contains(i) && eps.get(*i).is_some_and(|e| !e.is_down(now));
        let leader = r.leader_store_id();
        let start = self.inner.preferred.load(Ordering::Relaxed);
        std::iter::once(leader)
            .chain(r.region.peers.iter().map(|p| p.store_id))
            .filter_map(endpoint_of)
            .chain((0..n).filter(|&i| store_of(i) == 0))
            .chain((0..n).map(|k| (start + k) % n.max(1)))
            .find(usable)
            .or_else(|| endpoint_of(leader))
            .unwrap_or_else(|| self.pick())
    }

    /// Updates the cache (or the preferred endpoint) after region error `err` from
    /// endpoint `i` (store `store_id`) and says whether and when to retry.
    #[allow(clippy::too_many_arguments)]
    async fn on_region_error(
        &self,
        err: &errorpb::Error,
        route: Option<&CachedRegion>,
        i: usize,
        store_id: u64,
        generation: u64,
        deadline: Instant,
        avoid: &mut Vec<usize>,
    ) -> Retry {
        if let Some(nl) = &err.not_leader {
            let hint = nl.leader.filter(|p| p.store_id != 0);
            let Some(r) = route else {
                let hint = hint.map_or(0, |p| p.store_id);
                self.learn_store(hint, i, deadline).await;
                return self.follow_unrouted_hint(hint, i);
            };
            if !avoid.contains(&i) {
                avoid.push(i);
            }
            // A leader on a store the client has no endpoint for: look its address up.
            if let Some(p) = hint {
                self.learn_store(p.store_id, i, deadline).await;
            }
            // A leader the client cannot reach (it may be losing its leadership): wait a
            // little rather than spend every attempt at once on the other peers, which
            // name it until they elect another. Unreachable: no endpoint that is up is its
            // store or may be (one whose store is unknown yet). A client that never
            // connected to the dead leader's store does not know which endpoint it was;
            // going by known endpoints alone, it retried at once and used up its attempts
            // on the followers within milliseconds of the leader's death.
            let leader_down = hint.is_some_and(|p| {
                let now = Instant::now();
                !self.eps().iter().any(|e| {
                    let s = e.store_id.load(Ordering::Relaxed);
                    (s == p.store_id || s == 0) && !e.is_down(now)
                })
            });
            let mut st = self.region_state();
            return match hint {
                Some(leader) => {
                    st.cache.set_leader(r.id(), leader);
                    if leader_down {
                        Retry::Later
                    } else {
                        Retry::Now
                    }
                }
                // No leader known (election under way): wait, then try another peer.
                None => {
                    st.cache.clear_leader(r.id());
                    Retry::Later
                }
            };
        }
        if let Some(e) = &err.epoch_not_match {
            if e.current_regions.is_empty() {
                self.refresh_regions(generation, deadline).await;
            } else {
                // The answering store led the requested region, so it most likely leads
                // the regions split from it too; a NotLeader will correct the guess.
                let mut st = self.region_state();
                for region in &e.current_regions {
                    let mut c = CachedRegion::new(region.clone());
                    c.leader = c.peer_on(store_id).cloned();
                    st.cache.insert(c);
                }
            }
            return Retry::Now;
        }
        if let Some(e) = &err.region_not_found {
            let id = route.map_or(e.region_id, CachedRegion::id);
            if id != 0 {
                self.region_state().cache.remove(id);
            }
            if route.is_none() {
                // Unrouted, the next attempt would go to the same store, which holds no
                // peer of the region (a decommissioned store, for instance): move on.
                self.advance_from(i);
            }
            self.refresh_regions(generation, deadline).await;
            return Retry::Now;
        }
        if err.key_not_in_region.is_some() || err.store_not_match.is_some() {
            self.refresh_regions(generation, deadline).await;
            return Retry::Now;
        }
        if err.server_is_busy.is_some() || err.stale_command.is_some() {
            return Retry::Later;
        }
        Retry::GiveUp
    }

    /// Unrouted `NotLeader` from endpoint `i` with leader store `hint` (0: none): prefer
    /// the leader's endpoint if known, else move on to the next endpoint.
    fn follow_unrouted_hint(&self, hint: u64, i: usize) -> Retry {
        let target = self
            .eps()
            .iter()
            .position(|e| hint != 0 && e.store_id.load(Ordering::Relaxed) == hint);
        match target {
            Some(t) if t != i => {
                self.inner.preferred.store(t, Ordering::Relaxed);
                Retry::Now
            }
            // The leader's endpoint is not known yet: try the next one at once.
            None if hint != 0 => {
                self.advance_from(i);
                Retry::Now
            }
            // No leader known (election under way): wait, then try elsewhere.
            _ => {
                self.advance_from(i);
                Retry::Later
            }
        }
    }

    /// Makes sure the client has an endpoint for store `store_id` (0: nothing to do): a
    /// store that joined the cluster after the client was made is not among the given
    /// endpoints, and without its address the client could never reach the regions it
    /// leads. Asks endpoint `i` (which just named the store) for the cluster's stores and
    /// adds an endpoint for each live store it does not know yet; not while an endpoint
    /// whose store is unknown (never connected) is still to be tried. At most one lookup per
    /// [`ClientOptions::region_refresh_min_interval`](super::ClientOptions::region_refresh_min_interval);
    /// failures are ignored (the retry goes to another peer, as before).
    pub(super) async fn learn_store(&self, store_id: u64, i: usize, deadline: Instant) {
        let known = |c: &Client| {
            c.eps()
                .iter()
                .any(|e| e.store_id.load(Ordering::Relaxed) == store_id)
        };
        if store_id == 0 || known(self) {
            return;
        }
        // An endpoint not connected yet (and not down) may be that store: it is tried
        // first, and its handshake tells.
        let now = Instant::now();
        if self
            .eps()
            .iter()
            .any(|e| e.store_id.load(Ordering::Relaxed) == 0 && !e.is_down(now))
        {
            return;
        }
        {
            let mut last = self
                .inner
                .last_store_lookup
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let min_gap = self.inner.opts.region_refresh_min_interval;
            if last.is_some_and(|t| t.elapsed() < min_gap) {
                return;
            }
            *last = Some(Instant::now());
        }
        let timeout = self
            .inner
            .opts
            .attempt_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let Ok(stores) = self.store_addresses(i, timeout).await else {
            return;
        };
        for s in stores {
            if s.state != metapb::StoreState::Tombstone as i32 && !s.address.is_empty() {
                self.add_endpoint(&s.address, s.id);
            }
        }
    }

    /// The stores of the cluster metadata, as endpoint `i` knows them (within `timeout`).
    async fn store_addresses(
        &self,
        i: usize,
        timeout: Duration,
    ) -> Result<Vec<metapb::Store>, Error> {
        let conn = tokio::time::timeout(timeout, self.connection(i))
            .await
            .map_err(|_| Error::Timeout)??;
        let req = admin_command(AdminRequest {
            cmd_type: AdminCmdType::StoreList as i32,
            store_list: Some(StoreListRequest {}),
            ..Default::default()
        });
        let mut resp = conn.call(&req, timeout).await?;
        if let Some(err) = resp.header.as_mut().and_then(|h| h.error.take()) {
            return Err(Error::Region(Box::new(err)));
        }
        let list = admin_of(&mut resp, AdminCmdType::StoreList)?
            .store_list
            .unwrap_or_default();
        Ok(list.stores.into_iter().filter_map(|s| s.store).collect())
    }

    /// Refreshes the region cache unless a refresh completed since generation `seen`. One
    /// refresh runs at a time; callers arriving meanwhile wait for it and then find the
    /// generation moved on. A refresh starts no sooner than
    /// [`ClientOptions::region_refresh_min_interval`](super::ClientOptions::region_refresh_min_interval)
    /// after the previous one. Gives up at `deadline`; errors leave the cache as it was.
    pub(super) async fn refresh_regions(&self, seen: u64, deadline: Instant) {
        let until = tokio::time::Instant::from_std(deadline);
        let Ok(_refreshing) = tokio::time::timeout_at(until, self.inner.refreshing.lock()).await
        else {
            return;
        };
        let wait = {
            let st = self.region_state();
            if st.generation != seen {
                return;
            }
            st.last_refresh.map_or(Default::default(), |t| {
                (t + self.inner.opts.region_refresh_min_interval)
                    .saturating_duration_since(Instant::now())
            })
        };
        if !wait.is_zero() {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(wait.min(left)).await;
        }
        let _ = self.load_regions(deadline).await;
    }

    /// Asks every endpoint not marked down (every endpoint if all are) for its regions, at
    /// once, and merges the answers into the cache. Returns the regions the answers list
    /// (merged among themselves), or the last error if no endpoint answered. The caller
    /// holds `refreshing`.
    pub(super) async fn load_regions(&self, deadline: Instant) -> Result<RegionCache, Error> {
        let started = Instant::now();
        let eps = self.eps();
        let mut asked: Vec<usize> = (0..eps.len())
            .filter(|&i| eps.get(i).is_some_and(|e| !e.is_down(started)))
            .collect();
        if asked.is_empty() {
            asked = (0..eps.len()).collect();
        }
        let timeout = self
            .inner
            .opts
            .attempt_timeout
            .min(deadline.saturating_duration_since(started));
        let mut tasks = JoinSet::new();
        for i in asked {
            let client = self.clone();
            tasks.spawn(async move { (i, client.region_statuses(i, timeout).await) });
        }
        let mut fresh = RegionCache::new();
        let mut answered = 0usize;
        let mut last = Error::Timeout;
        while let Some(joined) = tasks.join_next().await {
            let Ok((i, result)) = joined else {
                continue;
            };
            match result {
                Ok(statuses) => {
                    answered += 1;
                    fresh.merge_statuses(statuses);
                }
                Err(e) => {
                    if e.is_connection_failure() {
                        if let Some(ep) = eps.get(i) {
                            ep.mark_down(self.inner.opts.endpoint_backoff);
                        }
                    }
                    last = e;
                }
            }
        }
        let mut st = self.region_state();
        st.generation += 1;
        st.last_refresh = Some(started);
        if answered == 0 {
            return Err(last);
        }
        st.unregioned = fresh.is_empty();
        for r in fresh.regions() {
            st.cache.insert(r.clone());
        }
        Ok(fresh)
    }

    /// The regions endpoint `i` holds, from its `Status` answer (within `timeout`).
    async fn region_statuses(
        &self,
        i: usize,
        timeout: Duration,
    ) -> Result<Vec<RegionStatus>, Error> {
        let conn = tokio::time::timeout(timeout, self.connection(i))
            .await
            .map_err(|_| Error::Timeout)??;
        let mut resp = conn.call(&status_request(), timeout).await?;
        if let Some(err) = resp.header.as_mut().and_then(|h| h.error.take()) {
            return Err(Error::Region(Box::new(err)));
        }
        Ok(status_of(&mut resp)?.regions)
    }
}
