//! Operations over stores: the store list and store state changes (decommissioning).
//!
//! Both are admin commands without a key, sent unrouted with region 0. `StoreList` is
//! answered locally by any store from the cluster metadata it knows; `SetStoreState` is
//! proposed to region 1, which keeps that metadata, so it goes to region 1's leader
//! (`NotLeader` answers are followed as for membership changes).

use std::time::Instant;

use super::routing::OnPlainError;
use super::{admin_command, admin_of, Client, Error, StoreList};
use crate::proto::metapb::{self, StoreState};
use crate::proto::pontoonpb::{SetStoreStateRequest, StoreListRequest};
use crate::proto::raft_cmdpb::{AdminCmdType, AdminRequest};

impl Client {
    /// The cluster's stores as one store knows them (admin command `StoreList`, answered
    /// locally without going through raft, so possibly a little behind region 1's leader).
    ///
    /// Sent to the preferred endpoint and retried on others if it is down. A store that
    /// cannot answer (it learnt no cluster metadata yet) answers with an error carrying
    /// only a message: each other endpoint is then asked once, in order, and if none can
    /// answer the last one's error is returned as [`Error::Region`].
    ///
    /// The stores are sorted by id, whatever order the store sent them in.
    pub async fn store_list(&self) -> Result<StoreList, Error> {
        let deadline = Instant::now() + self.inner.opts.request_timeout;
        let req = admin_command(AdminRequest {
            cmd_type: AdminCmdType::StoreList as i32,
            store_list: Some(StoreListRequest {}),
            ..Default::default()
        });
        let mut part = self
            .call_part_with(None, deadline, OnPlainError::AskOthers, |_| req.clone())
            .await?;
        let list = admin_of(&mut part.resp, AdminCmdType::StoreList)?
            .store_list
            .ok_or_else(|| Error::UnexpectedResponse("StoreList answer without list".into()))?;
        let mut stores = list.stores;
        stores.sort_by_key(|s| s.store.as_ref().map_or(0, |st| st.id));
        Ok(StoreList {
            header: part.resp.response_header.unwrap_or_default(),
            cluster: list.cluster.unwrap_or_default(),
            stores,
        })
    }

    /// Starts decommissioning store `id`: sets it `Offline`. The cluster then moves its
    /// region peers to other `Up` stores, and sets it `Tombstone` once it holds none.
    /// Returns the store as the cluster metadata records it after the change.
    ///
    /// Sent to the leader of region 1 (`NotLeader` answers are followed). The refusals
    /// (unknown store, a `Tombstone` store, fewer `Up` stores left than each region needs
    /// peers) are returned as [`Error::Region`] with the store's message. Like other
    /// writes, a change retried after a lost answer may be proposed twice.
    pub async fn store_delete(&self, id: u64) -> Result<metapb::Store, Error> {
        self.set_store_state(id, StoreState::Offline).await
    }

    /// Cancels the decommission of store `id`: sets an `Offline` store `Up` again (its
    /// remaining peers stay where they are). A `Tombstone` store cannot come back: the
    /// refusal is returned as [`Error::Region`]. Routed and retried as
    /// [`Client::store_delete`]; returns the store after the change.
    pub async fn store_set_up(&self, id: u64) -> Result<metapb::Store, Error> {
        self.set_store_state(id, StoreState::Up).await
    }

    /// Admin command `SetStoreState` for store `id`.
    async fn set_store_state(&self, id: u64, state: StoreState) -> Result<metapb::Store, Error> {
        let req = admin_command(AdminRequest {
            cmd_type: AdminCmdType::SetStoreState as i32,
            set_store_state: Some(SetStoreStateRequest {
                store_id: id,
                state: state as i32,
            }),
            ..Default::default()
        });
        let mut resp = self.call(req).await?;
        admin_of(&mut resp, AdminCmdType::SetStoreState)?
            .set_store_state
            .and_then(|r| r.store)
            .ok_or_else(|| Error::UnexpectedResponse("SetStoreState answer without store".into()))
    }
}
