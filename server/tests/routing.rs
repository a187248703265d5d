//! The client library against three real servers over TCP: a client whose region cache
//! went stale (regions split and leaders moved behind its back) still reaches the right
//! region for every key, and ranges and deletes spanning regions are stitched exactly.

#[path = "support/proc.rs"]
mod proc;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pontoon_client::blocking::Client;
use pontoon_client::client::{ClientOptions, RangeOptions};
use pontoon_client::proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, RaftCmdRequest, RaftRequestHeader, TransferLeaderRequest,
};

fn key(i: u32) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

#[test]
fn stale_caches_reach_the_right_region_after_splits_and_leader_moves() {
    let _ = env_logger::builder().is_test(true).try_init();
    // The test moves the leaderships itself; the placement's leader balance (up to four
    // moves a second) would race its transfers and answer them NotLeader.
    let (_dirs, servers) = proc::three_servers_with(|c| c.node.placement = false);
    let endpoints: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    // Wait for a leader of region 1.
    let deadline = Instant::now() + Duration::from_secs(30);
    while servers
        .iter()
        .all(|s| s.node().status().leader.load(Ordering::Acquire) == 0)
    {
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(20));
    }
    let opts = ClientOptions {
        request_timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    };
    let a = Client::connect(&endpoints, opts.clone()).unwrap();
    let b = Client::connect(&endpoints, opts).unwrap();
    for i in 0..100 {
        a.put(&key(i), b"v1", false).unwrap();
    }
    assert_eq!(a.region_list().unwrap().len(), 1, "a caches one region");

    // Behind a's back: four splits, then every region's leadership moves one store on.
    for i in [80, 60, 40, 20] {
        b.region_split(&key(i)).unwrap();
    }
    let regions = b.region_list().unwrap();
    assert_eq!(regions.len(), 5);
    for r in &regions {
        let leader = r.leader_store_id;
        let target = r
            .region
            .peers
            .iter()
            .find(|p| p.store_id == leader % 3 + 1)
            .copied()
            .unwrap();
        let req = RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_id: r.region.id,
                ..Default::default()
            }),
            admin_request: Some(AdminRequest {
                cmd_type: AdminCmdType::TransferLeader as i32,
                transfer_leader: Some(TransferLeaderRequest { peer: Some(target) }),
                ..Default::default()
            }),
            ..Default::default()
        };
        b.call(req).unwrap();
    }

    // a's cache says one region led by the old store: every key still lands right.
    for i in 0..100 {
        let got = a.get(&key(i)).unwrap();
        assert_eq!(got.kvs.len(), 1, "key {i}");
        assert_eq!(got.kvs[0].value, b"v1");
        a.put(&key(i), b"v2", false).unwrap();
    }
    // Each region kept counting its own revisions: the key versions say 2 everywhere.
    let all = a
        .range(
            b"k",
            RangeOptions {
                range_end: b"l".to_vec(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(all.kvs.len(), 100);
    assert_eq!(all.count, 100);
    assert!(!all.more);
    assert!(all
        .kvs
        .iter()
        .all(|kv| kv.value == b"v2" && kv.version == 2));
    let keys: Vec<Vec<u8>> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, (0..100).map(key).collect::<Vec<_>>());
    // A limit across regions: the first 30 in order, and the count of all of them.
    let some = a
        .range(
            b"k015",
            RangeOptions {
                range_end: b"\0".to_vec(),
                limit: 30,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(some.kvs.len(), 30);
    assert_eq!(some.kvs[0].key, key(15));
    assert_eq!(some.kvs[29].key, key(44));
    assert_eq!(some.count, 85);
    assert!(some.more);
    // A delete across all five regions.
    let d = a.delete(b"k010", b"k090", false).unwrap();
    assert_eq!(d.deleted, 80);
    let left = a
        .range(
            b"k",
            RangeOptions {
                range_end: b"l".to_vec(),
                count_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(left.count, 20);
}

/// Over TCP, the region a split makes is led at once by the store that led its parent:
/// that store's new peer campaigns right away, and a follower whose peer answered the vote
/// before the split applied there (the split's peer then replaces it) still gets the answer
/// out. Lost, the new region had no leader for an election timeout (1-2 s without service
/// for its keys) and often ended up led elsewhere.
#[test]
fn split_regions_are_led_by_the_parents_leader() {
    let _ = env_logger::builder().is_test(true).try_init();
    // No placement: its leader balance would move leaderships away meanwhile.
    let (_dirs, servers) = proc::three_servers_with(|c| c.node.placement = false);
    let endpoints: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let opts = ClientOptions {
        request_timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    };
    let c = Client::connect(&endpoints, opts).unwrap();
    c.put(b"k", b"v", false).unwrap();
    let leader_of = |id: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let l = c
                .region_list()
                .unwrap()
                .into_iter()
                .find(|r| r.region.id == id)
                .map_or(0, |r| r.leader_store_id);
            if l != 0 {
                return l;
            }
            assert!(Instant::now() < deadline, "region {id} has no leader");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let parent = leader_of(1);
    // Highest key first: every split cuts region 1, whose leader stays put. Each split is
    // the last message for a while, as the split that lost its vote answer was.
    for i in (1..=24).rev() {
        let regions = c.region_split(&key(i * 4)).unwrap();
        let new = regions.iter().find(|r| r.id != 1).unwrap().id;
        assert_eq!(
            leader_of(new),
            parent,
            "region {new} (split at {i}) is not led by store {parent}, which leads region 1"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
