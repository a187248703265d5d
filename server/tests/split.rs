//! Region splits and routing on an in-process 3-store cluster: a split on request, the
//! routing checks in TiKV's order (store, region, leader, key range, epoch) with their
//! errors, per-region revisions inherited by both halves, and regions that survive a crash
//! of every store.

#[path = "support/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::{
    error_of, get, put, range, split_request, status_request, submit_to_leader, Client, Cluster,
    ClusterConfig, Outcome,
};
use pontoon_client::proto::raft_cmdpb::{self, RaftCmdRequest, RaftCmdResponse, RaftRequestHeader};
use pontoon_client::proto::{errorpb, metapb, pontoonpb};

fn error(r: &RaftCmdResponse) -> Option<&errorpb::Error> {
    r.header.as_ref().and_then(|h| h.error.as_ref())
}

fn regions_of(c: &Cluster, store: u64) -> Vec<pontoonpb::RegionStatus> {
    let r = c.submit(store, status_request());
    r.admin_response.unwrap().status.unwrap().regions
}

/// Waits until every store lists `n` regions.
fn wait_regions(c: &Cluster, n: usize) -> Vec<pontoonpb::RegionStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all: Vec<_> = c.ids().iter().map(|&s| regions_of(c, s)).collect();
        if all.iter().all(|r| r.len() == n) {
            return all.into_iter().next().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "stores did not all reach {n} regions: {:?}",
            all.iter().map(|r| r.len()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The store leading `region` (as the leader itself says), waiting for one.
fn leader_of(c: &Cluster, region: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for s in c.ids() {
            let mine = regions_of(c, s).into_iter().any(|r| {
                r.region.as_ref().is_some_and(|g| g.id == region)
                    && r.leader.is_some_and(|l| l.store_id == s)
            });
            if mine {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "region {region} has no leader");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ok(out: Outcome) -> RaftCmdResponse {
    match out {
        Outcome::Ok(r) => {
            assert_eq!(error_of(&r), None);
            *r
        }
        Outcome::Unknown => panic!("no answer"),
    }
}

fn revision(r: &RaftCmdResponse) -> i64 {
    r.response_header.as_ref().unwrap().revision
}

#[test]
fn split_on_request_routes_and_keeps_revisions() {
    let c = Cluster::start(ClusterConfig::new(3));
    c.wait_leader(Duration::from_secs(20));
    let mut cli = Client::new(1);
    let t = Duration::from_secs(10);
    for k in ["a", "b", "m", "n", "z"] {
        ok(cli.call(&c, vec![put(k.as_bytes(), b"v1")], t));
    }
    // Revision 1 at start, one per put: 6.
    let before = revision(&ok(cli.call(&c, vec![get(b"a")], t)));
    assert_eq!(before, 6);

    let r = submit_to_leader(&c, split_request(b"m"));
    assert!(error(&r).is_none(), "{:?}", error(&r));
    let regions = r.admin_response.unwrap().splits.unwrap().regions;
    assert_eq!(regions.len(), 2);
    let (left, right) = (&regions[0], &regions[1]);
    assert_eq!(left.id, 1);
    assert_eq!(
        (left.start_key.as_slice(), left.end_key.as_slice()),
        (&b""[..], &b"m"[..])
    );
    assert_eq!(
        (right.start_key.as_slice(), right.end_key.as_slice()),
        (&b"m"[..], &b""[..])
    );
    assert_ne!(right.id, 1);
    let (le, re) = (left.region_epoch.unwrap(), right.region_epoch.unwrap());
    assert_eq!((le.version, re.version), (2, 2));
    assert_eq!(le.conf_ver, re.conf_ver);
    // Both halves have a peer on every store, with ids no other region uses.
    let mut stores: Vec<u64> = right.peers.iter().map(|p| p.store_id).collect();
    stores.sort();
    assert_eq!(stores, vec![1, 2, 3]);
    assert!(right.peers.iter().all(|p| p.id > 3 && p.id != right.id));
    let listed = wait_regions(&c, 2);
    assert_eq!(listed[0].region.as_ref().unwrap().id, 1);
    assert_eq!(listed[1].region.as_ref().unwrap().id, right.id);

    // Both halves start at the parent's revision; each moves on its own.
    let rr = revision(&ok(cli.call(&c, vec![put(b"q", b"v2")], t)));
    assert_eq!(rr, before + 1);
    let lr = revision(&ok(cli.call(&c, vec![get(b"a")], t)));
    assert_eq!(lr, before);
    let lr = revision(&ok(cli.call(&c, vec![put(b"c", b"v2")], t)));
    assert_eq!(lr, before + 1);
    // Keys keep their metadata across the split.
    let got = ok(cli.call(&c, vec![get(b"n")], t));
    let kv = got.responses[0].get.as_ref().unwrap().kv.clone().unwrap();
    assert_eq!((kv.create_revision, kv.version), (5, 1));

    // A range across the split is read region by region; all keys are there.
    let all = ok(cli.call(&c, vec![range(b"a", b"\0", false)], t));
    let keys: Vec<Vec<u8>> = all.responses[0]
        .range
        .as_ref()
        .unwrap()
        .kvs
        .iter()
        .map(|kv| kv.key.clone())
        .collect();
    let want: Vec<Vec<u8>> = ["a", "b", "c", "m", "n", "q", "z"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    assert_eq!(keys, want);

    // Routing errors, in TiKV's order.
    let leader_of_right = leader_of(&c, right.id);
    let with_header = |h: RaftRequestHeader, r: raft_cmdpb::Request| RaftCmdRequest {
        header: Some(h),
        requests: vec![r],
        ..Default::default()
    };
    // Store id.
    let r = c.submit(
        leader_of_right,
        with_header(
            RaftRequestHeader {
                region_id: right.id,
                peer: Some(metapb::Peer {
                    id: 1,
                    store_id: 99,
                    ..Default::default()
                }),
                ..Default::default()
            },
            get(b"q"),
        ),
    );
    let snm = error(&r).unwrap().store_not_match.unwrap();
    assert_eq!(
        (snm.request_store_id, snm.actual_store_id),
        (99, leader_of_right)
    );
    // Region exists.
    let r = c.submit(
        1,
        with_header(
            RaftRequestHeader {
                region_id: 12345,
                ..Default::default()
            },
            get(b"q"),
        ),
    );
    assert_eq!(
        error(&r).unwrap().region_not_found.unwrap().region_id,
        12345
    );
    // Leader (writes).
    let follower = (1..=3).find(|&s| s != leader_of_right).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let nl = loop {
        let r = c.submit(
            follower,
            with_header(
                RaftRequestHeader {
                    region_id: right.id,
                    ..Default::default()
                },
                put(b"q", b"x"),
            ),
        );
        let nl = error(&r).unwrap().not_leader.unwrap();
        // A follower names the leader once it has heard from it.
        if nl.leader.is_some() || Instant::now() > deadline {
            break nl;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(nl.region_id, right.id);
    assert_eq!(nl.leader.unwrap().store_id, leader_of_right);
    // Key in range.
    let r = c.submit(
        leader_of_right,
        with_header(
            RaftRequestHeader {
                region_id: right.id,
                ..Default::default()
            },
            put(b"b", b"x"),
        ),
    );
    let knr = error(&r).unwrap().key_not_in_region.clone().unwrap();
    assert_eq!(knr.region_id, right.id);
    assert_eq!(knr.start_key, b"m");
    // A range leaving the region is refused too (the client splits it).
    let r = c.submit(
        leader_of_right,
        with_header(
            RaftRequestHeader {
                region_id: right.id,
                ..Default::default()
            },
            range(b"n", b"zz", false),
        ),
    );
    assert!(error(&r).is_none(), "a range inside the region is fine");
    let r = c.submit(
        1,
        with_header(
            RaftRequestHeader {
                region_id: 1,
                ..Default::default()
            },
            range(b"a", b"n", true),
        ),
    );
    assert!(error(&r).unwrap().key_not_in_region.is_some());
    // Epoch: a client that still believes region 1 spans everything.
    let r = c.submit(
        1,
        with_header(
            RaftRequestHeader {
                region_id: 1,
                region_epoch: Some(metapb::RegionEpoch {
                    conf_ver: le.conf_ver,
                    version: 1,
                }),
                ..Default::default()
            },
            range(b"a", b"b", true),
        ),
    );
    let enm = error(&r).unwrap().epoch_not_match.clone().unwrap();
    let ids: Vec<u64> = enm.current_regions.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1, right.id], "the region and where the rest went");

    // Split keys outside or at the start of the region are refused.
    let mut bad = split_request(b"m");
    bad.header = Some(RaftRequestHeader {
        region_id: right.id,
        ..Default::default()
    });
    let r = submit_to_leader(&c, bad);
    assert!(
        error(&r).unwrap().message.contains("start of region"),
        "{:?}",
        error(&r)
    );

    // Store membership without a region id would change region 1 alone: refused.
    let r = submit_to_leader(&c, cluster::change_peer(false, 3));
    assert!(
        error(&r).unwrap().message.contains("holds 2 regions"),
        "{:?}",
        error(&r)
    );
}

#[test]
fn regions_survive_crashes_of_every_store() {
    let c = Cluster::start(ClusterConfig::new(3));
    c.wait_leader(Duration::from_secs(20));
    let mut cli = Client::new(2);
    let t = Duration::from_secs(10);
    for i in 0..40u32 {
        let k = format!("k{i:03}");
        ok(cli.call(&c, vec![put(k.as_bytes(), b"v")], t));
    }
    for key in ["k010", "k020", "k030"] {
        let r = submit_to_leader(&c, split_request(key.as_bytes()));
        assert!(error(&r).is_none(), "{:?}", error(&r));
    }
    wait_regions(&c, 4);
    for i in 40..60u32 {
        let k = format!("k{i:03}");
        ok(cli.call(
            &c,
            vec![put(format!("k{:03}", i % 40).as_bytes(), k.as_bytes())],
            t,
        ));
    }
    for id in c.ids() {
        c.crash_store(id);
    }
    for id in c.ids() {
        c.start_store(id);
    }
    let regions = wait_regions(&c, 4);
    let starts: Vec<&[u8]> = regions
        .iter()
        .map(|r| r.region.as_ref().unwrap().start_key.as_slice())
        .collect();
    assert_eq!(starts, vec![&b""[..], b"k010", b"k020", b"k030"]);
    let all = ok(cli.call(&c, vec![range(b"k", b"l", false)], Duration::from_secs(20)));
    let kvs = &all.responses[0].range.as_ref().unwrap().kvs;
    assert_eq!(kvs.len(), 40);
    for kv in kvs {
        let i: u32 = std::str::from_utf8(&kv.key[1..]).unwrap().parse().unwrap();
        if i < 20 {
            assert_eq!(kv.value, format!("k{:03}", i + 40).into_bytes());
        } else {
            assert_eq!(kv.value, b"v");
        }
    }
}

#[test]
fn regions_split_by_size() {
    let mut cfg = ClusterConfig::new(3);
    cfg.node.region_max_size = 16 << 10;
    cfg.node.split_check_ticks = 2;
    let c = Cluster::start(cfg);
    c.wait_leader(Duration::from_secs(20));
    let mut cli = Client::new(3);
    let value = vec![b'x'; 200];
    for i in 0..500u32 {
        let k = format!("key{i:05}");
        ok(cli.call(&c, vec![put(k.as_bytes(), &value)], Duration::from_secs(10)));
    }
    // ~100 KiB in 16 KiB regions: several splits, each near the middle of its region.
    let deadline = Instant::now() + Duration::from_secs(20);
    let regions = loop {
        let r = regions_of(&c, 1);
        if r.len() >= 4 {
            break r;
        }
        assert!(Instant::now() < deadline, "only {} regions", r.len());
        std::thread::sleep(Duration::from_millis(50));
    };
    for w in regions.windows(2) {
        let (a, b) = (w[0].region.as_ref().unwrap(), w[1].region.as_ref().unwrap());
        assert_eq!(a.end_key, b.start_key, "regions tile the key space");
    }
    let all = ok(cli.call(
        &c,
        vec![range(b"key", b"kez", false)],
        Duration::from_secs(20),
    ));
    assert_eq!(all.responses[0].range.as_ref().unwrap().kvs.len(), 500);
    assert_eq!(all.responses[0].range.as_ref().unwrap().count, 500);
}

#[test]
fn idle_regions_hibernate_and_wake() {
    let c = Cluster::start(ClusterConfig::new(3));
    c.wait_leader(Duration::from_secs(20));
    let mut cli = Client::new(4);
    let t = Duration::from_secs(10);
    let keys: Vec<String> = (1..20).map(|i| format!("r{i:02}")).collect();
    for k in &keys {
        let r = submit_to_leader(&c, split_request(k.as_bytes()));
        assert!(error(&r).is_none(), "{:?}", error(&r));
    }
    wait_regions(&c, 20);
    for k in &keys {
        ok(cli.call(&c, vec![put(k.as_bytes(), b"v")], t));
    }
    // Quiet now: every peer on every store stops ticking.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sleeping: Vec<u64> = c
            .ids()
            .iter()
            .map(|&s| {
                c.node(s)
                    .unwrap()
                    .status()
                    .hibernating
                    .load(std::sync::atomic::Ordering::Acquire)
            })
            .collect();
        if sleeping.iter().all(|&n| n == 20) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "regions did not all hibernate: {sleeping:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A write wakes its region; the others sleep on.
    ok(cli.call(&c, vec![put(b"r05x", b"w")], t));
    // The store leading a region dies: its sleeping followers notice the store went quiet,
    // wake, and elect a new leader; the region serves writes again.
    let victim = leader_of(&c, 1);
    c.crash_store(victim);
    for k in &keys {
        ok(cli.call(
            &c,
            vec![put(k.as_bytes(), b"after")],
            Duration::from_secs(30),
        ));
    }
    c.start_store(victim);
    let all = ok(cli.call(&c, vec![range(b"r", b"s", false)], Duration::from_secs(30)));
    let kvs = &all.responses[0].range.as_ref().unwrap().kvs;
    assert_eq!(kvs.len(), 20);
}
