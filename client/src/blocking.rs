//! [`Client`]: a blocking wrapper around the async [`crate::client::Client`], owning a small
//! tokio runtime (one worker thread, which runs the connections' reader and writer tasks).
//!
//! Do not call it from inside an async runtime (tokio panics on nested `block_on`).

use std::time::Duration;

use crate::client::{
    self, ClientOptions, DeleteResult, EndpointStatus, Error, MemberChange, MemberList, MoveLeader,
    PutResult, RangeOptions, RangeResult, RegionInfo, StoreList,
};
use crate::proto::metapb;
use crate::proto::raft_cmdpb::{RaftCmdRequest, RaftCmdResponse};

/// A blocking client; see [`crate::client::Client`] for the semantics of each call.
#[derive(Debug)]
pub struct Client {
    inner: client::Client,
    rt: tokio::runtime::Runtime,
}

impl Client {
    /// Builds the runtime and connects to the first endpoint that answers.
    pub fn connect(endpoints: &[String], opts: ClientOptions) -> Result<Client, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pontoon-client")
            .enable_all()
            .build()
            .map_err(|e| Error::Io {
                endpoint: String::new(),
                message: format!("cannot start the client runtime: {e}"),
            })?;
        let inner = rt.block_on(client::Client::connect(endpoints, opts))?;
        Ok(Client { inner, rt })
    }

    /// The async client, to use from another runtime.
    pub fn async_client(&self) -> &client::Client {
        &self.inner
    }

    /// See [`crate::client::Client::put`].
    pub fn put(&self, key: &[u8], value: &[u8], prev_kv: bool) -> Result<PutResult, Error> {
        self.rt.block_on(self.inner.put(key, value, prev_kv))
    }

    /// See [`crate::client::Client::get`].
    pub fn get(&self, key: &[u8]) -> Result<RangeResult, Error> {
        self.rt.block_on(self.inner.get(key))
    }

    /// See [`crate::client::Client::range`].
    pub fn range(&self, key: &[u8], opts: RangeOptions) -> Result<RangeResult, Error> {
        self.rt.block_on(self.inner.range(key, opts))
    }

    /// See [`crate::client::Client::delete`].
    pub fn delete(
        &self,
        key: &[u8],
        range_end: &[u8],
        prev_kv: bool,
    ) -> Result<DeleteResult, Error> {
        self.rt.block_on(self.inner.delete(key, range_end, prev_kv))
    }

    /// See [`crate::client::Client::status`].
    pub fn status(&self) -> Result<EndpointStatus, Error> {
        self.rt.block_on(self.inner.status())
    }

    /// See [`crate::client::Client::endpoint_status`].
    pub fn endpoint_status(&self, i: usize) -> Result<EndpointStatus, Error> {
        self.rt.block_on(self.inner.endpoint_status(i))
    }

    /// See [`crate::client::Client::member_list`].
    pub fn member_list(&self) -> Result<MemberList, Error> {
        self.rt.block_on(self.inner.member_list())
    }

    /// See [`crate::client::Client::member_add`].
    pub fn member_add(
        &self,
        id: u64,
        peer_addr: &str,
        learner: bool,
    ) -> Result<MemberChange, Error> {
        self.rt
            .block_on(self.inner.member_add(id, peer_addr, learner))
    }

    /// See [`crate::client::Client::member_remove`].
    pub fn member_remove(&self, id: u64) -> Result<MemberChange, Error> {
        self.rt.block_on(self.inner.member_remove(id))
    }

    /// See [`crate::client::Client::move_leader`].
    pub fn move_leader(&self, target: u64) -> Result<MoveLeader, Error> {
        self.rt.block_on(self.inner.move_leader(target))
    }

    /// See [`crate::client::Client::region_list`].
    pub fn region_list(&self) -> Result<Vec<RegionInfo>, Error> {
        self.rt.block_on(self.inner.region_list())
    }

    /// See [`crate::client::Client::region_split`].
    pub fn region_split(&self, key: &[u8]) -> Result<Vec<metapb::Region>, Error> {
        self.rt.block_on(self.inner.region_split(key))
    }

    /// See [`crate::client::Client::store_list`].
    pub fn store_list(&self) -> Result<StoreList, Error> {
        self.rt.block_on(self.inner.store_list())
    }

    /// See [`crate::client::Client::store_delete`].
    pub fn store_delete(&self, id: u64) -> Result<metapb::Store, Error> {
        self.rt.block_on(self.inner.store_delete(id))
    }

    /// See [`crate::client::Client::store_set_up`].
    pub fn store_set_up(&self, id: u64) -> Result<metapb::Store, Error> {
        self.rt.block_on(self.inner.store_set_up(id))
    }

    /// See [`crate::client::Client::ping`].
    pub fn ping(&self) -> Result<Duration, Error> {
        self.rt.block_on(self.inner.ping())
    }

    /// See [`crate::client::Client::call`].
    pub fn call(&self, req: RaftCmdRequest) -> Result<RaftCmdResponse, Error> {
        self.rt.block_on(self.inner.call(req))
    }
}
