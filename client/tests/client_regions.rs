//! Region routing against a mock cluster (`support/cluster.rs`): three stores, regions
//! `["", "g")`, `["g", "p")`, `["p", "")` led by stores 1, 2 and 3, every store holding a
//! peer of each. The stores check requests as the multi-raft server does (store id,
//! region, leader, epoch, keys in range) and never clip a range.

mod support;

use std::time::Duration;

use pontoon_client::client::{prefix_end, Client, ClientOptions, Error, RangeOptions};
use pontoon_client::proto::errorpb;
use pontoon_client::proto::metapb;
use pontoon_client::proto::pontoonpb::RegionStatus;
use pontoon_client::proto::raft_cmdpb::{AdminCmdType, RaftCmdRequest};
use support::cluster::{Logged, MockCluster, RegionSpec};

async fn three_regions() -> MockCluster {
    let all = &[1, 2, 3];
    MockCluster::start(
        all,
        &[
            RegionSpec {
                start: b"",
                end: b"g",
                stores: all,
                leader: 1,
            },
            RegionSpec {
                start: b"g",
                end: b"p",
                stores: all,
                leader: 2,
            },
            RegionSpec {
                start: b"p",
                end: b"",
                stores: all,
                leader: 3,
            },
        ],
    )
    .await
}

fn opts() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(5),
        retry_backoff: Duration::from_millis(20),
        region_refresh_min_interval: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

fn client(m: &MockCluster) -> Client {
    Client::new(&m.endpoints(), opts()).unwrap()
}

/// `(store, region id, key, range_end, limit, count_only)` of the Range commands logged.
fn ranges(log: &[Logged]) -> Vec<(u64, u64, String, String, i64, bool)> {
    log.iter()
        .filter(|l| l.error.is_none())
        .filter_map(|l| {
            let g = l.req.requests.first()?.range.as_ref()?;
            Some((
                l.store,
                l.region_id(),
                String::from_utf8_lossy(&g.key).into_owned(),
                String::from_utf8_lossy(&g.range_end).into_owned(),
                g.limit,
                g.count_only,
            ))
        })
        .collect()
}

fn keys(kvs: &[pontoon_client::proto::pontoonpb::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

async fn fill(c: &Client, list: &[&str]) {
    for k in list {
        c.put(k.as_bytes(), format!("v-{k}").as_bytes(), false)
            .await
            .unwrap();
    }
}

fn errors(log: &[Logged]) -> Vec<&'static str> {
    log.iter()
        .filter_map(|l| l.error.as_ref())
        .map(|e| {
            if e.not_leader.is_some() {
                "not_leader"
            } else if e.epoch_not_match.is_some() {
                "epoch_not_match"
            } else if e.key_not_in_region.is_some() {
                "key_not_in_region"
            } else if e.region_not_found.is_some() {
                "region_not_found"
            } else if e.store_not_match.is_some() {
                "store_not_match"
            } else if e.server_is_busy.is_some() {
                "server_is_busy"
            } else {
                "other"
            }
        })
        .collect()
}

#[tokio::test]
async fn commands_go_to_the_leader_of_their_region_with_its_epoch_and_peer() {
    let m = three_regions().await;
    let c = client(&m);
    for (key, leader) in [("a", 1), ("h", 2), ("x", 3), ("", 1), ("g", 2), ("p", 3)] {
        let p = c.put(key.as_bytes(), b"v", false).await.unwrap();
        assert_eq!(p.header.member_id, leader, "put {key:?}");
        let g = c.get(key.as_bytes()).await.unwrap();
        assert_eq!((g.header.member_id, g.count), (leader, 1), "get {key:?}");
    }
    let log = m.log();
    assert!(errors(&log).is_empty(), "{:?}", errors(&log));
    // One refresh, asking every store once.
    for s in [1, 2, 3] {
        assert_eq!(m.status_calls(s), 1);
    }
    let put_x = log
        .iter()
        .find(|l| {
            l.req
                .requests
                .first()
                .and_then(|r| r.put.as_ref())
                .is_some_and(|p| p.key == b"x")
        })
        .unwrap();
    let h = put_x.req.header.clone().unwrap();
    assert_eq!(put_x.store, 3);
    assert_eq!(h.region_id, 3);
    assert_eq!(
        h.region_epoch,
        Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1
        })
    );
    assert_eq!(h.peer.map(|p| (p.id, p.store_id)), Some((33, 3)));
}

#[tokio::test]
async fn a_cold_cache_is_loaded_once_by_concurrent_callers() {
    let m = three_regions().await;
    let c = client(&m);
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let key = format!("{}{i}", ["a", "h", "x"][i % 3]);
                c.put(key.as_bytes(), b"v", false).await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for s in [1, 2, 3] {
        assert_eq!(m.status_calls(s), 1, "store {s}");
    }
    assert!(errors(&m.log()).is_empty());
}

#[tokio::test]
async fn ranges_are_cut_at_regions_and_stitched_with_limit_count_and_more() {
    let m = three_regions().await;
    let c = client(&m);
    fill(&c, &["a", "b", "h", "i", "j", "x", "y"]).await;
    let range = |key: &'static str, end: &[u8], limit: i64| {
        let c = c.clone();
        let opts = RangeOptions {
            range_end: end.to_vec(),
            limit,
            ..Default::default()
        };
        async move { c.range(key.as_bytes(), opts).await.unwrap() }
    };

    m.clear_log();
    let all = range("a", b"z", 0).await;
    assert_eq!(keys(&all.kvs), ["a", "b", "h", "i", "j", "x", "y"]);
    assert_eq!((all.count, all.more), (7, false));
    // The header is the first region's.
    assert_eq!(all.header.member_id, 1);
    assert_eq!(
        ranges(&m.log()),
        vec![
            (1, 1, "a".into(), "g".into(), 0, false),
            (2, 2, "g".into(), "p".into(), 0, false),
            (3, 3, "p".into(), "z".into(), 0, false),
        ]
    );

    // The limit runs out in the second region: the third is asked for its count only.
    m.clear_log();
    let r = range("a", b"z", 3).await;
    assert_eq!(keys(&r.kvs), ["a", "b", "h"]);
    assert_eq!((r.count, r.more), (7, true));
    assert_eq!(
        ranges(&m.log()),
        vec![
            (1, 1, "a".into(), "g".into(), 3, false),
            (2, 2, "g".into(), "p".into(), 1, false),
            (3, 3, "p".into(), "z".into(), 0, true),
        ]
    );
    // The limit runs out exactly at a region's end: `more` still comes from the counts.
    let r = range("a", b"z", 2).await;
    assert_eq!(keys(&r.kvs), ["a", "b"]);
    assert_eq!((r.count, r.more), (7, true));
    // A limit larger than the range.
    let r = range("a", b"z", 10).await;
    assert_eq!((r.kvs.len(), r.count, r.more), (7, 7, false));

    // From a key on ("\0"): the last region is asked up to "\0" too.
    m.clear_log();
    let r = range("c", b"\0", 0).await;
    assert_eq!(keys(&r.kvs), ["h", "i", "j", "x", "y"]);
    assert_eq!(r.header.member_id, 1);
    assert_eq!(
        ranges(&m.log()),
        vec![
            (1, 1, "c".into(), "g".into(), 0, false),
            (2, 2, "g".into(), "p".into(), 0, false),
            (3, 3, "p".into(), "\0".into(), 0, false),
        ]
    );

    // Inside one region, across two, a range ending at a region boundary, an empty one.
    assert_eq!(keys(&range("h", &prefix_end(b"h"), 0).await.kvs), ["h"]);
    assert_eq!(keys(&range("i", b"y", 0).await.kvs), ["i", "j", "x"]);
    m.clear_log();
    assert_eq!(keys(&range("b", b"p", 0).await.kvs), ["b", "h", "i", "j"]);
    assert_eq!(ranges(&m.log()).len(), 2);
    assert!(range("y", b"b", 0).await.kvs.is_empty());

    // count_only and keys_only keep etcd's meanings across regions.
    let counted = c
        .range(
            b"a",
            RangeOptions {
                range_end: vec![0],
                count_only: true,
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (counted.kvs.len(), counted.count, counted.more),
        (0, 7, false)
    );
    let keys_only = c
        .range(
            b"b",
            RangeOptions {
                range_end: b"x\0".to_vec(),
                keys_only: true,
                limit: 4,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys(&keys_only.kvs), ["b", "h", "i", "j"]);
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!((keys_only.count, keys_only.more), (5, true));
    assert!(errors(&m.log()).is_empty());
}

#[tokio::test]
async fn deletes_are_cut_at_regions_and_summed() {
    let m = three_regions().await;
    let c = client(&m);
    fill(&c, &["a", "b", "h", "i", "j", "x", "y"]).await;
    m.clear_log();
    let d = c.delete(b"b", b"y", true).await.unwrap();
    assert_eq!(d.deleted, 5);
    assert_eq!(keys(&d.prev_kvs), ["b", "h", "i", "j", "x"]);
    assert_eq!(d.prev_kvs[0].value, b"v-b");
    assert_eq!(d.header.member_id, 1);
    let parts: Vec<(u64, String, String)> = m
        .log()
        .iter()
        .filter_map(|l| {
            let d = l.req.requests.first()?.delete_range.as_ref()?;
            Some((
                l.store,
                String::from_utf8_lossy(&d.start_key).into_owned(),
                String::from_utf8_lossy(&d.end_key).into_owned(),
            ))
        })
        .collect();
    assert_eq!(
        parts,
        vec![
            (1, "b".into(), "g".into()),
            (2, "g".into(), "p".into()),
            (3, "p".into(), "y".into()),
        ]
    );
    let left = c
        .range(
            b"a",
            RangeOptions {
                range_end: vec![0],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys(&left.kvs), ["a", "y"]);
    // Everything from a key on, and a single key.
    assert_eq!(c.delete(b"a", b"\0", false).await.unwrap().deleted, 2);
    c.put(b"k", b"1", false).await.unwrap();
    let one = c.delete(b"k", b"", false).await.unwrap();
    assert_eq!((one.deleted, one.header.member_id), (1, 2));
    assert!(errors(&m.log()).is_empty());
}

#[tokio::test]
async fn a_stale_cache_after_a_split_still_reaches_the_right_region() {
    let m = three_regions().await;
    let c = client(&m);
    fill(&c, &["h", "m"]).await;
    // The middle region splits behind the client's back; the new right half is led by 3.
    let new_id = m.with(|s| {
        let halves = s.split(2, b"k").unwrap();
        s.set_leader(halves[1].id, 3);
        halves[1].id
    });
    m.clear_log();
    let p = c.put(b"m", b"v2", false).await.unwrap();
    assert_eq!(p.header.member_id, 3);
    // Store 2 refused the old epoch and listed the current regions; the client guessed
    // store 2 leads the new one too, was told otherwise, and went to store 3. No refresh.
    assert_eq!(errors(&m.log()), ["epoch_not_match", "not_leader"]);
    assert_eq!((1..=3).map(|s| m.status_calls(s)).sum::<usize>(), 0);
    let last = m.log().pop().unwrap();
    assert_eq!((last.store, last.region_id()), (3, new_id));
    let epoch = last.req.header.unwrap().region_epoch.unwrap();
    assert_eq!((epoch.version, epoch.conf_ver), (2, 1));
    // The left half is known with its new epoch too.
    c.put(b"i", b"v", false).await.unwrap();
    assert_eq!(errors(&m.log()).len(), 2);
}

#[tokio::test]
async fn a_range_walk_resumes_where_it_was_when_regions_change() {
    let m = three_regions().await;
    let c = client(&m);
    fill(&c, &["a", "h", "i", "k", "l", "o", "x"]).await;
    m.with(|s| {
        let halves = s.split(2, b"k").unwrap();
        s.set_leader(halves[1].id, 1);
    });
    m.clear_log();
    let r = c
        .range(
            b"a",
            RangeOptions {
                range_end: vec![0],
                limit: 5,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys(&r.kvs), ["a", "h", "i", "k", "l"]);
    assert_eq!((r.count, r.more), (7, true));
    assert_eq!(errors(&m.log()), ["epoch_not_match", "not_leader"]);
    let served: Vec<(u64, String, String, i64)> = ranges(&m.log())
        .into_iter()
        .map(|(s, _, k, e, limit, _)| (s, k, e, limit))
        .collect();
    assert_eq!(
        served,
        vec![
            (1, "a".into(), "g".into(), 5),
            (2, "g".into(), "k".into(), 4),
            (1, "k".into(), "p".into(), 2),
            (3, "p".into(), "\0".into(), 0),
        ]
    );
}

#[tokio::test]
async fn not_leader_updates_the_cached_leader() {
    let m = three_regions().await;
    let c = client(&m);
    c.put(b"a", b"1", false).await.unwrap();
    m.with(|s| s.set_leader(1, 3));
    m.clear_log();
    assert_eq!(c.put(b"a", b"2", false).await.unwrap().header.member_id, 3);
    assert_eq!(errors(&m.log()), ["not_leader"]);
    let cached = c.region_cache();
    assert_eq!(cached.locate(b"a").unwrap().leader_store_id(), 3);
    // Later commands go straight to the new leader.
    m.clear_log();
    c.put(b"b", b"1", false).await.unwrap();
    assert!(errors(&m.log()).is_empty());

    // No leader at all for a while: the client backs off and tries the other peers.
    m.with(|s| s.set_leader(1, 0));
    let state = std::sync::Arc::clone(&m.state);
    let elect = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(60)).await;
        state.lock().unwrap().set_leader(1, 2);
    });
    m.clear_log();
    let p = c.put(b"c", b"1", false).await.unwrap();
    assert_eq!(p.header.member_id, 2);
    elect.await.unwrap();
    let log = m.log();
    let tried: std::collections::BTreeSet<u64> = log
        .iter()
        .filter(|l| l.error.is_some())
        .map(|l| l.store)
        .collect();
    assert!(tried.len() >= 2, "asked only {tried:?}");
    assert!(errors(&log).iter().all(|e| *e == "not_leader"));
}

#[tokio::test]
async fn routing_errors_refresh_the_cache() {
    let m = three_regions().await;
    let c = client(&m);
    c.put(b"x", b"1", false).await.unwrap();

    // Store 3 loses its peer of region 3, which store 1 now leads.
    m.with(|s| {
        s.remove_peer(3, 3);
        s.set_leader(3, 1);
    });
    m.clear_log();
    assert_eq!(c.put(b"x", b"2", false).await.unwrap().header.member_id, 1);
    assert_eq!(errors(&m.log()), ["region_not_found"]);
    // Stores 1 and 2 answered the refresh (store 3 too: it still answers Status).
    assert_eq!(m.status_calls(1), 1);

    for (name, err) in [
        (
            "key_not_in_region",
            errorpb::Error {
                key_not_in_region: Some(errorpb::KeyNotInRegion::default()),
                ..Default::default()
            },
        ),
        (
            "store_not_match",
            errorpb::Error {
                store_not_match: Some(errorpb::StoreNotMatch::default()),
                ..Default::default()
            },
        ),
        (
            "server_is_busy",
            errorpb::Error {
                server_is_busy: Some(errorpb::ServerIsBusy::default()),
                ..Default::default()
            },
        ),
    ] {
        m.with(|s| s.inject.push((2, err)));
        m.clear_log();
        assert_eq!(c.put(b"h", b"v", false).await.unwrap().header.member_id, 2);
        assert_eq!(errors(&m.log()), [name]);
        let refreshed = name != "server_is_busy";
        assert_eq!(m.status_calls(2), usize::from(refreshed), "{name}");
    }

    // An error retrying cannot fix is the answer, after one attempt.
    m.with(|s| {
        s.inject
            .push((2, support::message_error("etcdserver: boom")))
    });
    m.clear_log();
    match c.put(b"h", b"v", false).await {
        Err(e @ Error::Region(_)) => assert_eq!(e.to_string(), "etcdserver: boom"),
        other => panic!("expected a region error, got {other:?}"),
    }
    assert_eq!(m.log().len(), 1);
}

#[tokio::test]
async fn a_stopped_leader_store_is_routed_around() {
    let mut m = three_regions().await;
    let c = client(&m);
    c.put(b"x", b"1", false).await.unwrap();
    // Store 3 stops; store 2 wins region 3's election.
    m.stop(3);
    m.with(|s| s.set_leader(3, 2));
    tokio::time::sleep(Duration::from_millis(50)).await;
    m.clear_log();
    let p = c.put(b"x", b"2", false).await.unwrap();
    assert_eq!(p.header.member_id, 2);
    // The other stores still list every region.
    let list = c.region_list().await.unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[2].leader_store_id, 2);
    let g = c.get(b"x").await.unwrap();
    assert_eq!(
        (g.kvs[0].value.as_slice(), g.header.member_id),
        (&b"2"[..], 2)
    );
}

/// A new client whose first command meets a dead leader: the other peers still name it
/// (they have not noticed yet), and the client never connected to its store, so it does
/// not know which endpoint that was. It must wait for the election rather than spend its
/// attempts on the followers at once.
#[tokio::test]
async fn a_new_client_waits_out_the_election_after_its_leader_died() {
    let mut m = three_regions().await;
    m.stop(3);
    m.clear_log();
    let state = std::sync::Arc::clone(&m.state);
    let elect = tokio::spawn(async move {
        // Within the client's attempts only if it backs off (`opts`: up to 20 ms a pause).
        tokio::time::sleep(Duration::from_millis(150)).await;
        state.lock().unwrap().set_leader(3, 2);
    });
    let c = client(&m);
    let p = c.put(b"x", b"1", false).await.unwrap();
    assert_eq!(p.header.member_id, 2);
    elect.await.unwrap();
    let log = m.log();
    // The followers were asked, and answered NotLeader naming store 3, until the election.
    assert!(errors(&log).iter().all(|e| *e == "not_leader"), "{log:?}");
    assert!(!errors(&log).is_empty());
}

/// The same with a client that knows every store: once the followers have answered
/// NotLeader, the dead leader's endpoint is the only one left to try, and each refused
/// connection must pause as a NotLeader does, or the attempts run out long before the
/// election ends.
#[tokio::test]
async fn a_client_that_knows_the_dead_leader_waits_out_the_election() {
    let mut m = three_regions().await;
    let c = client(&m);
    for key in [&b"a"[..], b"h", b"x"] {
        c.put(key, b"0", false).await.unwrap();
    }
    m.stop(3);
    // Let the client see its connection to store 3 close.
    tokio::time::sleep(Duration::from_millis(50)).await;
    m.clear_log();
    let state = std::sync::Arc::clone(&m.state);
    let elect = tokio::spawn(async move {
        // Longer than 40 attempts last without pauses between the refused connections
        // (`opts`: pauses of up to 20 ms), well within the call's 5 s.
        tokio::time::sleep(Duration::from_millis(600)).await;
        state.lock().unwrap().set_leader(3, 2);
    });
    let p = c.put(b"x", b"1", false).await.unwrap();
    assert_eq!(p.header.member_id, 2);
    elect.await.unwrap();
    assert!(errors(&m.log()).iter().all(|e| *e == "not_leader"));
}

#[tokio::test]
async fn a_storm_of_routing_errors_makes_few_refreshes() {
    let m = three_regions().await;
    let c = client(&m);
    c.put(b"a", b"1", false).await.unwrap();
    let kinr = errorpb::Error {
        key_not_in_region: Some(errorpb::KeyNotInRegion::default()),
        ..Default::default()
    };
    m.with(|s| s.inject.extend((0..40).map(|_| (1, kinr.clone()))));
    m.clear_log();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.put(format!("a{i}").as_bytes(), b"v", false).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(errors(&m.log()).len(), 40);
    let refreshes = m.status_calls(1);
    assert!((1..=3).contains(&refreshes), "{refreshes} refreshes");
}

#[tokio::test]
async fn region_split_is_routed_and_updates_the_cache() {
    let m = three_regions().await;
    let c = client(&m);
    fill(&c, &["h", "m"]).await;
    m.clear_log();
    let regions = c.region_split(b"k").await.unwrap();
    let shape: Vec<(u64, String, String, u64)> = regions
        .iter()
        .map(|r| {
            (
                r.id,
                String::from_utf8_lossy(&r.start_key).into_owned(),
                String::from_utf8_lossy(&r.end_key).into_owned(),
                r.region_epoch.unwrap().version,
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (2, "g".into(), "k".into(), 2),
            (1000, "k".into(), "p".into(), 2)
        ]
    );
    let log = m.log();
    assert_eq!(log.len(), 1);
    let sent: &RaftCmdRequest = &log[0].req;
    assert_eq!(log[0].store, 2);
    let h = sent.header.clone().unwrap();
    assert_eq!(h.region_id, 2);
    assert_eq!(
        h.region_epoch,
        Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1
        })
    );
    assert_eq!(h.peer.map(|p| (p.id, p.store_id)), Some((22, 2)));
    assert!(sent.requests.is_empty());
    let admin = sent.admin_request.clone().unwrap();
    assert_eq!(admin.cmd_type, AdminCmdType::BatchSplit as i32);
    assert_eq!(admin.cmd_type, 10);
    let splits = admin.splits.unwrap();
    assert!(!splits.right_derive);
    assert_eq!(splits.requests.len(), 1);
    let one = &splits.requests[0];
    assert_eq!(
        (
            one.split_key.as_slice(),
            one.new_region_id,
            one.new_peer_ids.len()
        ),
        (&b"k"[..], 0, 0)
    );

    // The cache has both halves: the next command for the right half needs no retry.
    m.clear_log();
    let p = c.put(b"m", b"v2", false).await.unwrap();
    assert_eq!(p.header.member_id, 2);
    assert!(errors(&m.log()).is_empty());
    assert_eq!(m.log()[0].region_id(), 1000);

    // A split at a region's start is refused by the store: an Error::Region.
    for key in [&b"k"[..], b""] {
        match c.region_split(key).await {
            Err(e @ Error::Region(_)) => {
                assert!(e.to_string().contains("invalid split key"), "{e}")
            }
            other => panic!("expected a region error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn region_list_merges_every_stores_view() {
    let m = three_regions().await;
    let c = client(&m);
    fill(&c, &["a", "bb", "h"]).await;
    let list = c.region_list().await.unwrap();
    // id [start, end) leader size revision peers
    let seen: Vec<String> = list
        .iter()
        .map(|r| {
            format!(
                "{} [{:?}, {:?}) {} {} {} {:?}",
                r.region.id,
                String::from_utf8_lossy(&r.region.start_key),
                String::from_utf8_lossy(&r.region.end_key),
                r.leader_store_id,
                r.approximate_size,
                r.revision,
                r.region
                    .peers
                    .iter()
                    .map(|p| p.store_id)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            "1 [\"\", \"g\") 1 10 3 [1, 2, 3]",
            "2 [\"g\", \"p\") 2 4 2 [1, 2, 3]",
            "3 [\"p\", \"\") 3 0 1 [1, 2, 3]",
        ]
    );

    // Store 3 lags behind a split (its Status still shows region 2 whole): the newer
    // epoch wins whatever the order of the answers.
    m.with(|s| {
        let before: Vec<RegionStatus> = s
            .regions
            .iter()
            .map(|r| RegionStatus {
                region: Some(r.meta.clone()),
                ..Default::default()
            })
            .collect();
        s.split(2, b"k").unwrap();
        s.stale_status.insert(3, before);
    });
    let list = c.region_list().await.unwrap();
    let ranges: Vec<(u64, &[u8], &[u8], u64)> = list
        .iter()
        .map(|r| {
            (
                r.region.id,
                r.region.start_key.as_slice(),
                r.region.end_key.as_slice(),
                r.region.region_epoch.unwrap().version,
            )
        })
        .collect();
    assert_eq!(
        ranges,
        vec![
            (1, &b""[..], &b"g"[..], 1),
            (2, b"g", b"k", 2),
            (1000, b"k", b"p", 2),
            (3, b"p", b"", 1),
        ]
    );
    // The client's cache follows.
    assert_eq!(c.region_cache().locate(b"m").unwrap().id(), 1000);
}

#[tokio::test]
async fn an_explicit_region_id_turns_routing_off() {
    let m = three_regions().await;
    let c = Client::new(
        &m.endpoints(),
        ClientOptions {
            region_id: 2,
            ..opts()
        },
    )
    .unwrap();
    // Sent to the preferred endpoint (store 1), which points at region 2's leader.
    let p = c.put(b"h", b"v", false).await.unwrap();
    assert_eq!(p.header.member_id, 2);
    let r = c
        .range(
            b"h",
            RangeOptions {
                range_end: b"o".to_vec(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.count, 1);
    let log = m.log();
    assert_eq!(errors(&log), ["not_leader"]);
    assert!(log.iter().all(|l| !l.is_status()));
    let h = log.last().unwrap().req.header.clone().unwrap();
    assert_eq!(h.region_id, 2);
    assert!(h.region_epoch.is_none() && h.peer.is_none());
}

#[tokio::test]
async fn admin_commands_without_a_key_are_not_routed() {
    let m = three_regions().await;
    let c = client(&m);
    let st = c.status().await.unwrap();
    assert_eq!((st.header.member_id, st.leader), (1, 1));
    let log = m.log();
    assert_eq!(log.len(), 1);
    let h = log[0].req.header.clone().unwrap();
    assert_eq!((h.region_id, h.region_epoch, h.peer), (0, None, None));
}

#[test]
fn blocking_region_calls() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let m = rt.block_on(three_regions());
    let c = pontoon_client::blocking::Client::connect(&m.endpoints(), opts()).unwrap();
    assert_eq!(c.region_list().unwrap().len(), 3);
    let halves = c.region_split(b"t").unwrap();
    assert_eq!(halves[1].start_key, b"t");
    assert_eq!(c.region_list().unwrap().len(), 4);
    c.put(b"u", b"1", false).unwrap();
    drop(c);
    drop(m);
}

/// Runs `pontoonctl` with `args`; returns (exit success, stdout, stderr).
async fn ctl(args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pontoonctl"))
            .args(&args)
            .output()
            .expect("pontoonctl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn pontoonctl_region_list_and_split() {
    let m = three_regions().await;
    let c = client(&m);
    fill(&c, &["a", "bb", "h"]).await;
    m.with(|s| s.set_leader(3, 0));
    let eps = m.endpoints().join(",");

    let (ok, out, err) = ctl(&["--endpoints", &eps, "region", "list"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "1, -inf, g, 1, 1, 1,2,3, 1, 10 B\n2, g, p, 1, 1, 1,2,3, 2, 4 B\n3, p, +inf, 1, 1, 1,2,3, -, 0 B\n"
    );
    let (ok, out, err) = ctl(&["--endpoints", &eps, "-w", "table", "region", "list"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "\
+----+-------+------+---------+----------+-------+--------+------+
| ID | START | END  | VERSION | CONF_VER | PEERS | LEADER | SIZE |
+----+-------+------+---------+----------+-------+--------+------+
|  1 |  -inf |    g |       1 |        1 | 1,2,3 |      1 | 10 B |
|  2 |     g |    p |       1 |        1 | 1,2,3 |      2 |  4 B |
|  3 |     p | +inf |       1 |        1 | 1,2,3 |      - |  0 B |
+----+-------+------+---------+----------+-------+--------+------+
"
    );
    let (ok, out, _) = ctl(&["--endpoints", &eps, "-w", "json", "region", "list"]).await;
    assert!(ok);
    assert!(out.starts_with("{\"regions\":[{\"id\":1,\"end_key\":\"Zw==\",\"region_epoch\":{\"conf_ver\":1,\"version\":1},\"peers\":[{\"id\":11,\"store_id\":1},{\"id\":12,\"store_id\":2},{\"id\":13,\"store_id\":3}],\"leader_store_id\":1,\"approximate_size\":10,\"revision\":3},"), "{out}");

    let (ok, out, err) = ctl(&["--endpoints", &eps, "region", "split", "c d"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "1, -inf, \"c d\", 2, 1, 1,2,3\n3e8, \"c d\", g, 2, 1, 1,2,3\n"
    );
    let (ok, _, err) = ctl(&["--endpoints", &eps, "region", "split", "c d"]).await;
    assert!(!ok);
    assert!(err.starts_with("Error: invalid split key"), "{err}");

    let (ok, out, err) = ctl(&["--endpoints", &eps, "-w", "table", "get", "a"]).await;
    assert!(!ok);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "Error: table not supported as output format for this command (only endpoint status and health, member list, region and store list)\n"
    );
}
