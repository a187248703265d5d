//! Cluster metadata and the embedded placement on an in-process cluster: a joining store is
//! recorded, a decommissioned store hands its replicas to another Up store under load and
//! ends a Tombstone whose messages are refused (so does a dead one; none while a region
//! still lists it, and a store down for good does not hold that up), and the replicas of a
//! store that stays down are replaced.

#[path = "support/cluster.rs"]
mod cluster;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::{
    error_of, get, put, split_request, status_request, submit_to_leader, Client, Cluster,
    ClusterConfig, Filter, Outcome, Verdict,
};
use pontoon_client::proto::metapb::{self, StoreState};
use pontoon_client::proto::pontoonpb::{self, SetStoreStateRequest, StoreInfo};
use pontoon_client::proto::raft_cmdpb::{
    AdminCmdType, AdminRequest, RaftCmdRequest, RaftRequestHeader, TransferLeaderRequest,
};
use raft::eraftpb::MessageType;

fn admin(cmd: AdminCmdType, f: impl FnOnce(&mut AdminRequest)) -> RaftCmdRequest {
    let mut a = AdminRequest {
        cmd_type: cmd as i32,
        ..Default::default()
    };
    f(&mut a);
    RaftCmdRequest {
        admin_request: Some(a),
        ..Default::default()
    }
}

fn set_state(store: u64, state: StoreState) -> RaftCmdRequest {
    admin(AdminCmdType::SetStoreState, |a| {
        a.set_store_state = Some(SetStoreStateRequest {
            store_id: store,
            state: state as i32,
        })
    })
}

fn store_list(c: &Cluster, from: u64) -> Vec<StoreInfo> {
    let r = c.submit(
        from,
        admin(AdminCmdType::StoreList, |a| {
            a.store_list = Some(pontoonpb::StoreListRequest {})
        }),
    );
    r.admin_response
        .and_then(|a| a.store_list)
        .map(|l| l.stores)
        .unwrap_or_default()
}

fn state(list: &[StoreInfo], id: u64) -> Option<StoreState> {
    list.iter()
        .find(|s| s.store.as_ref().is_some_and(|s| s.id == id))
        .and_then(|s| StoreState::try_from(s.store.as_ref()?.state).ok())
}

/// Regions as (id, stores of its peers).
type Regions = Vec<(u64, Vec<u64>)>;

/// Every region store `from` holds, with the stores of its peers.
fn regions(c: &Cluster, from: u64) -> Regions {
    let r = c.submit(from, status_request());
    r.admin_response
        .and_then(|a| a.status)
        .map(|s| s.regions)
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let g = r.region.unwrap_or_default();
            let mut stores: Vec<u64> = g.peers.iter().map(|p| p.store_id).collect();
            stores.sort();
            (g.id, stores)
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until store `from` lists store `id` as a Tombstone (at most a minute).
fn wait_tombstone(c: &Cluster, id: u64, from: u64) {
    wait_for(
        &format!("store {id} to become a tombstone"),
        Duration::from_secs(60),
        || state(&store_list(c, from), id) == Some(StoreState::Tombstone),
    );
}

/// Three stores with the placement on (a run every 2 ticks), three replicas a region,
/// split at `splits`; `tweak` adjusts the configuration first.
fn placement_cluster(splits: &[&str], tweak: impl FnOnce(&mut ClusterConfig)) -> Arc<Cluster> {
    let mut cfg = ClusterConfig::new(3);
    cfg.node.max_peer_count = 3;
    cfg.node.schedule_ticks = 2;
    cfg.node.placement = true;
    tweak(&mut cfg);
    let c = Arc::new(Cluster::start(cfg));
    c.wait_leader(Duration::from_secs(20));
    for k in splits {
        let r = submit_to_leader(&c, split_request(k.as_bytes()));
        assert_eq!(error_of(&r), None);
    }
    c
}

/// Store 4 joins; returns once region 1's leader recorded it (store 2's view).
fn join_store_4(c: &Cluster) {
    c.join_store(4);
    wait_for("store 4 in the metadata", Duration::from_secs(20), || {
        state(&store_list(c, 2), 4) == Some(StoreState::Up)
    });
}

/// Puts `value` under each key, each acknowledged.
fn put_each(cli: &mut Client, c: &Cluster, keys: &[&str], value: &[u8]) {
    for k in keys {
        let Outcome::Ok(r) = cli.call(c, vec![put(k.as_bytes(), value)], Duration::from_secs(10))
        else {
            panic!("no answer");
        };
        assert_eq!(error_of(&r), None);
    }
}

/// Reads each key back: `value`.
fn expect_each(cli: &mut Client, c: &Cluster, keys: &[&str], value: &[u8]) {
    for k in keys {
        let Outcome::Ok(r) = cli.call(c, vec![get(k.as_bytes())], Duration::from_secs(10)) else {
            panic!("no answer");
        };
        assert_eq!(r.responses[0].get.as_ref().unwrap().value, value);
    }
}

#[test]
fn decommissioned_store_hands_over_its_replicas_under_load() {
    let c = placement_cluster(&["g", "n", "t"], |_| {});
    // Three Up stores and three replicas a region: none may leave yet.
    let r = submit_to_leader(&c, set_state(1, StoreState::Offline));
    assert!(
        error_of(&r).unwrap().contains("add a store first"),
        "{:?}",
        error_of(&r)
    );

    // Store 4 joins: its heartbeats get it recorded, with its addresses.
    join_store_4(&c);
    // The metadata reaches every store in region 1's leader's store heartbeats.
    wait_for("store 4 known on store 3", Duration::from_secs(20), || {
        state(&store_list(&c, 3), 4) == Some(StoreState::Up)
    });
    let listed = store_list(&c, 3);
    let s4 = listed
        .iter()
        .find(|s| s.store.as_ref().is_some_and(|x| x.id == 4))
        .cloned();
    let s4 = s4.unwrap();
    assert_eq!(s4.store.as_ref().unwrap().peer_address, "sim-store-4");
    assert_eq!(s4.store.as_ref().unwrap().address, "sim-client-4");

    // Writers keep going while store 1 leaves.
    let done = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let (c, done, acked) = (c.clone(), done.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut cli = Client::new(w + 10);
                let mut i = 0u64;
                while !done.load(Ordering::Acquire) {
                    // Keys in every region.
                    let k = format!("{}{w}-{i:05}", ["a", "h", "p", "x"][(i % 4) as usize]);
                    let v = format!("v{i}");
                    if let Outcome::Ok(r) = cli.call(
                        &c,
                        vec![put(k.as_bytes(), v.as_bytes())],
                        Duration::from_secs(10),
                    ) {
                        if error_of(&r).is_none() {
                            acked.lock().unwrap().insert(k.into_bytes(), v.into_bytes());
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let r = submit_to_leader(&c, set_state(1, StoreState::Offline));
    assert_eq!(error_of(&r), None);
    let after = r
        .admin_response
        .unwrap()
        .set_store_state
        .unwrap()
        .store
        .unwrap();
    assert_eq!(after.state, StoreState::Offline as i32);

    // Every region moves its replica from store 1 to store 4; store 1 ends a Tombstone.
    wait_tombstone(&c, 1, 2);
    done.store(true, Ordering::Release);
    for w in writers {
        w.join().unwrap();
    }
    let held = regions(&c, 2);
    assert_eq!(held.len(), 4);
    for (id, stores) in &held {
        assert_eq!(stores, &vec![2, 3, 4], "region {id}");
    }
    wait_for(
        "store 1 to drop its regions",
        Duration::from_secs(20),
        || regions(&c, 1).is_empty(),
    );

    // Nothing acknowledged was lost.
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "the writers made progress: {}",
        acked.len()
    );
    let mut cli = Client::new(99);
    for (k, v) in &acked {
        let Outcome::Ok(r) = cli.call(&c, vec![get(k)], Duration::from_secs(10)) else {
            panic!("no answer for {k:?}");
        };
        let g = r.responses[0].get.as_ref().unwrap();
        assert_eq!(&g.value, v, "key {:?}", String::from_utf8_lossy(k));
    }
    // A tombstone stays one.
    let r = submit_to_leader(&c, set_state(1, StoreState::Up));
    assert!(
        error_of(&r).unwrap().contains("tombstone"),
        "{:?}",
        error_of(&r)
    );
}

#[test]
fn replicas_of_a_store_that_stays_down_are_replaced() {
    let c = placement_cluster(&["m"], |cfg| {
        cfg.node.max_store_down_time = Duration::from_secs(2);
    });
    join_store_4(&c);
    let mut cli = Client::new(5);
    put_each(&mut cli, &c, &["a", "z"], b"1");
    c.crash_store(3);
    // Down for longer than max_store_down_time: store 4 takes over its replicas.
    wait_for(
        "store 3's replicas replaced",
        Duration::from_secs(60),
        || {
            regions(&c, 1)
                .iter()
                .all(|(_, stores)| stores == &vec![1, 2, 4])
        },
    );
    expect_each(&mut cli, &c, &["a", "z"], b"1");
}

/// `store delete` of a store that is dead: its replicas move to the other Up stores, and
/// although it never reports that it holds nothing, it ends a Tombstone once every other
/// store reports no region with a peer on it.
#[test]
fn a_dead_store_that_is_deleted_ends_a_tombstone() {
    let c = placement_cluster(&["g", "t"], |_| {});
    join_store_4(&c);
    let mut cli = Client::new(5);
    put_each(&mut cli, &c, &["a", "m", "z"], b"1");
    c.crash_store(3);
    let r = submit_to_leader(&c, set_state(3, StoreState::Offline));
    assert_eq!(error_of(&r), None);
    wait_tombstone(&c, 3, 1);
    // By then no region has a replica there.
    for from in [1, 2, 4] {
        for (id, stores) in regions(&c, from) {
            assert!(
                !stores.contains(&3),
                "region {id} on store {from}: {stores:?}"
            );
        }
    }
    assert_eq!(regions(&c, 1).len(), 3);
    expect_each(&mut cli, &c, &["a", "m", "z"], b"1");
}

#[test]
fn a_new_store_receives_replicas_and_leaders_spread() {
    // Eight regions, all led from wherever region 1's leader was (a split's new region is
    // led by its parent's leader at first).
    let c = placement_cluster(&["b", "d", "f", "h", "j", "l", "n"], |_| {});
    c.join_store(4);
    // 8 regions x 3 replicas over 4 stores: 6 each when even; the balance gets within 2.
    wait_for(
        "store 4 to receive replicas",
        Duration::from_secs(60),
        || {
            let counts: Vec<u64> = store_list(&c, 1).iter().map(|s| s.region_count).collect();
            counts.len() == 4 && counts.iter().all(|&n| (4..=8).contains(&n))
        },
    );
    wait_for(
        "every store to lead a region",
        Duration::from_secs(60),
        || {
            let list = store_list(&c, 1);
            list.len() == 4 && list.iter().all(|s| s.leader_count >= 1)
        },
    );
    // Every region still has exactly three replicas, on distinct stores.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let views: Vec<(u64, Regions)> = (1..=4u64).map(|s| (s, regions(&c, s))).collect();
        if views
            .iter()
            .all(|(_, v)| v.iter().all(|(_, stores)| stores.len() == 3))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "regions without exactly three replicas: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cli = Client::new(7);
    for k in ["a", "c", "e", "g", "i", "k", "m", "o"] {
        let Outcome::Ok(r) = cli.call(&c, vec![put(k.as_bytes(), b"x")], Duration::from_secs(10))
        else {
            panic!("no answer");
        };
        assert_eq!(error_of(&r), None);
    }
}

/// Drops every raft message to one store (store heartbeats still pass): a peer added there
/// is never created.
struct NoRaftTo(u64);

impl Filter for NoRaftTo {
    fn check(&self, _: u64, to: u64, t: MessageType) -> Verdict {
        if to == self.0 && t != MessageType::MsgHup {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// Drops the appends one store sends (the regions it leads commit nothing).
struct DropAppendsFrom(u64);

impl Filter for DropAppendsFrom {
    fn check(&self, from: u64, _: u64, t: MessageType) -> Verdict {
        if from == self.0 && t == MessageType::MsgAppend {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }
}

/// The region starting at `start` as store `from` sees it, with the leader it knows.
fn region_at(c: &Cluster, from: u64, start: &[u8]) -> Option<(metapb::Region, metapb::Peer)> {
    let r = c.submit(from, status_request());
    r.admin_response?
        .status?
        .regions
        .into_iter()
        .find(|r| r.region.as_ref().is_some_and(|g| g.start_key == start))
        .map(|r| (r.region.unwrap_or_default(), r.leader.unwrap_or_default()))
}

fn with_region(region_id: u64, mut req: RaftCmdRequest) -> RaftCmdRequest {
    req.header = Some(RaftRequestHeader {
        region_id,
        ..Default::default()
    });
    req
}

/// An Offline store whose heartbeat says it holds no replica is not a Tombstone yet while
/// a region still lists a peer there: a peer just added whose store has not created it
/// (its snapshot still on the way, or lost as here) would be left a dead voter, and two
/// such voters leave a region without a quorum. The replica is removed first.
#[test]
fn an_offline_store_is_not_a_tombstone_while_a_region_lists_it() {
    let c = placement_cluster(&["m"], |_| {});
    join_store_4(&c);
    wait_for("store 4 known everywhere", Duration::from_secs(20), || {
        (1..=3).all(|s| state(&store_list(&c, s), 4) == Some(StoreState::Up))
    });
    // Store 1 leaves, and the placement gives each region a voter on store 4, a store that
    // never hears of it; store 1 comes back (its replicas stay: the ones on store 4 never
    // caught up), and each region has four voters, one of them never created.
    c.add_filter(Box::new(NoRaftTo(4)));
    let r = submit_to_leader(&c, set_state(1, StoreState::Offline));
    assert_eq!(error_of(&r), None);
    wait_for("replicas added on store 4", Duration::from_secs(30), || {
        let held = regions(&c, 2);
        held.len() == 2 && held.iter().all(|(_, s)| s == &vec![1, 2, 3, 4])
    });
    let r = submit_to_leader(&c, set_state(1, StoreState::Up));
    assert_eq!(error_of(&r), None);
    // Until store 1 itself knows it is Up again, it hands away any leadership it gets ("this
    // store is leaving"), a transfer to it below included.
    wait_for("store 1 Up everywhere", Duration::from_secs(20), || {
        (1..=3).all(|s| state(&store_list(&c, s), 1) == Some(StoreState::Up))
    });
    // Region ["m", ..) led from another store than region 1 (the metadata's keeper, which
    // decides on tombstones): the store removing the replica learns that store 4 is
    // Offline from the keeper's heartbeats, later than the keeper.
    let meta_leader = region_at(&c, 2, b"").expect("region 1").1.store_id;
    let (right, leader) = region_at(&c, 2, b"m").expect("region [m, ..)");
    if leader.store_id == meta_leader || leader.store_id == 0 {
        let to = *right
            .peers
            .iter()
            .find(|p| p.store_id != meta_leader && p.store_id != 4)
            .expect("a peer elsewhere");
        let req = admin(AdminCmdType::TransferLeader, |a| {
            a.transfer_leader = Some(TransferLeaderRequest { peer: Some(to) })
        });
        let r = submit_to_leader(&c, with_region(right.id, req));
        assert_eq!(error_of(&r), None);
        wait_for("the leadership to move", Duration::from_secs(20), || {
            region_at(&c, to.store_id, b"m").is_some_and(|(_, l)| l.store_id == to.store_id)
        });
    }
    let right_leader = region_at(&c, 2, b"m").expect("region [m, ..)").1.store_id;
    assert_ne!(right_leader, meta_leader);
    // Region ["m", ..) cannot commit anything for a while (its leader's appends are lost):
    // it keeps its replica on store 4, and store 4 stays Offline all that time.
    c.add_filter(Box::new(DropAppendsFrom(right_leader)));
    let r = submit_to_leader(&c, set_state(4, StoreState::Offline));
    assert_eq!(error_of(&r), None);
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(
            state(&store_list(&c, meta_leader), 4),
            Some(StoreState::Offline),
            "store 4 while region [m, ..) still lists it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.clear_filters();
    c.add_filter(Box::new(NoRaftTo(4)));
    // Store 4 ends a Tombstone; by then no store's view of a region lists it.
    wait_for(
        "store 4 to become a tombstone",
        Duration::from_secs(60),
        || {
            if state(&store_list(&c, 1), 4) != Some(StoreState::Tombstone) {
                return false;
            }
            for from in 1..=3 {
                for (id, stores) in regions(&c, from) {
                    assert!(
                        !stores.contains(&4),
                        "store 4 is a tombstone, region {id} on store {from} lists it: {stores:?}"
                    );
                }
            }
            true
        },
    );
    let mut cli = Client::new(3);
    put_each(&mut cli, &c, &["a", "z"], b"1");
    expect_each(&mut cli, &c, &["a", "z"], b"1");
}

/// A store down for good (longer than `max_store_down_time`, its replicas replaced) cannot
/// report on the regions it held; it does not keep a decommissioned store from ending a
/// Tombstone (a store only briefly silent would).
#[test]
fn a_store_down_for_good_does_not_hold_up_a_decommission() {
    let c = placement_cluster(&["m"], |cfg| {
        cfg.node.max_store_down_time = Duration::from_secs(2);
    });
    join_store_4(&c);
    c.join_store(5);
    wait_for("store 5 in the metadata", Duration::from_secs(20), || {
        state(&store_list(&c, 1), 5) == Some(StoreState::Up)
    });
    let mut cli = Client::new(11);
    put_each(&mut cli, &c, &["a", "z"], b"1");
    c.crash_store(3);
    wait_for(
        "store 3's replicas replaced",
        Duration::from_secs(60),
        || {
            let held = regions(&c, 1);
            held.len() == 2 && held.iter().all(|(_, s)| !s.contains(&3) && s.len() == 3)
        },
    );
    let r = submit_to_leader(&c, set_state(4, StoreState::Offline));
    assert_eq!(error_of(&r), None);
    wait_tombstone(&c, 4, 1);
    for from in [1, 2, 5] {
        for (id, stores) in regions(&c, from) {
            assert_eq!(stores, vec![1, 2, 5], "region {id} on store {from}");
        }
    }
    expect_each(&mut cli, &c, &["a", "z"], b"1");
}
