//! Replication on an in-process cluster with a simulated network: election, log
//! replication, crash and restart, partitions, log compaction and snapshots, membership.

#[path = "support/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::{
    admin, change_peer, error_of, get, local_range, put, range, Client, Cluster, ClusterConfig,
    Outcome,
};
use pontoon_client::proto::raft_cmdpb::{RaftCmdRequest, RaftCmdResponse};

const LIMIT: Duration = Duration::from_secs(20);

fn ok(o: Outcome) -> RaftCmdResponse {
    match o {
        Outcome::Ok(r) => {
            assert_eq!(error_of(&r), None, "{r:?}");
            *r
        }
        Outcome::Unknown => panic!("no answer in time"),
    }
}

/// The region a successful `ChangePeer` answer carries.
fn changed_region(r: RaftCmdResponse) -> pontoon_client::proto::metapb::Region {
    r.admin_response
        .and_then(|a| a.change_peer)
        .and_then(|c| c.region)
        .expect("a ChangePeer answer carries the region")
}

/// Waits until every running store holds exactly `want` under `[key, end)`.
fn converge(c: &Cluster, key: &[u8], end: &[u8], want: &[(Vec<u8>, Vec<u8>)]) {
    let deadline = Instant::now() + LIMIT;
    for id in c.ids() {
        if !c.is_up(id) {
            continue;
        }
        loop {
            let got = local_range(c, id, key, end);
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "store {id} holds {} keys, want {}",
                got.len(),
                want.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The data may land a moment before the counter moves: wait for it.
fn wait_snapshot_applied(c: &Cluster, id: u64, why: &str) {
    let deadline = Instant::now() + LIMIT;
    let node = c.node(id).unwrap();
    while node
        .status()
        .snapshots_applied
        .load(std::sync::atomic::Ordering::Acquire)
        == 0
    {
        assert!(Instant::now() < deadline, "{why}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until store `id` names `leader` as its region's leader.
fn wait_knows_leader(c: &Cluster, id: u64, leader: u64) {
    let deadline = Instant::now() + LIMIT;
    while c
        .node(id)
        .unwrap()
        .status()
        .leader
        .load(std::sync::atomic::Ordering::Acquire)
        != leader
    {
        assert!(
            Instant::now() < deadline,
            "store {id} never learned the leader"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kv(i: usize) -> (Vec<u8>, Vec<u8>) {
    (
        format!("k{i:04}").into_bytes(),
        format!("v{i}").into_bytes(),
    )
}

#[test]
fn three_stores_elect_one_leader_and_replicate() {
    let c = Cluster::start(ClusterConfig::new(3));
    let leader = c.wait_leader(LIMIT);
    let mut cl = Client::new(1);
    let mut want = Vec::new();
    for i in 0..100 {
        let (k, v) = kv(i);
        ok(cl.call(&c, vec![put(&k, &v)], LIMIT));
        want.push((k, v));
    }
    converge(&c, b"k", b"l", &want);
    // Every store agrees on the revision: one per put, from 1.
    let deadline = Instant::now() + LIMIT;
    for id in c.ids() {
        let node = c.node(id).unwrap();
        while node
            .status()
            .revision
            .load(std::sync::atomic::Ordering::Acquire)
            != 101
        {
            assert!(
                Instant::now() < deadline,
                "store {id} did not reach revision 101"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Still one leader, whom everyone knows.
    assert_eq!(c.leader(), Some(leader));
}

#[test]
fn a_follower_answers_not_leader_naming_the_leader() {
    let c = Cluster::start(ClusterConfig::new(3));
    let leader = c.wait_leader(LIMIT);
    let mut cl = Client::new(2);
    ok(cl.call(&c, vec![put(b"a", b"1")], LIMIT));
    let follower = c.ids().into_iter().find(|&i| i != leader).unwrap();
    // The follower learns the leader from its heartbeats.
    let deadline = Instant::now() + LIMIT;
    loop {
        let r = c.request(follower, put(b"a", b"2"));
        let e = r
            .header
            .unwrap()
            .error
            .expect("a follower must refuse writes");
        let nl = e.not_leader.expect("NotLeader");
        if let Some(p) = nl.leader {
            assert_eq!(p.store_id, leader);
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Serializable reads are served locally by a follower.
    let deadline = Instant::now() + LIMIT;
    loop {
        let r = c.request(follower, range(b"a", b"", true));
        assert_eq!(error_of(&r), None);
        if r.responses[0].range.as_ref().unwrap().count == 1 {
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_crashed_leader_is_replaced_and_catches_up_after_restart() {
    let c = Cluster::start(ClusterConfig::new(3));
    let old = c.wait_leader(LIMIT);
    let mut cl = Client::new(3);
    let mut want = Vec::new();
    for i in 0..50 {
        let (k, v) = kv(i);
        ok(cl.call(&c, vec![put(&k, &v)], LIMIT));
        want.push((k, v));
    }
    c.crash_store(old);
    let new = c.wait_leader(LIMIT);
    assert_ne!(new, old);
    for i in 50..100 {
        let (k, v) = kv(i);
        ok(cl.call(&c, vec![put(&k, &v)], LIMIT));
        want.push((k, v));
    }
    c.start_store(old);
    converge(&c, b"k", b"l", &want);
}

#[test]
fn every_store_crashing_at_once_loses_no_acknowledged_write() {
    let c = Cluster::start(ClusterConfig::new(3));
    c.wait_leader(LIMIT);
    let mut cl = Client::new(4);
    let mut want = Vec::new();
    for i in 0..60 {
        let (k, v) = kv(i);
        ok(cl.call(&c, vec![put(&k, &v)], LIMIT));
        want.push((k, v));
    }
    for id in c.ids() {
        c.crash_store(id);
    }
    for id in c.ids() {
        c.start_store(id);
    }
    c.wait_leader(LIMIT);
    let r = ok(cl.call(&c, vec![range(b"k", b"l", false)], LIMIT));
    assert_eq!(r.responses[0].range.as_ref().unwrap().count, 60);
    converge(&c, b"k", b"l", &want);
}

#[test]
fn a_leader_cut_off_by_a_partition_serves_no_stale_linearizable_read() {
    let c = Cluster::start(ClusterConfig::new(5));
    let old = c.wait_leader(LIMIT);
    let mut cl = Client::new(5);
    ok(cl.call(&c, vec![put(b"x", b"old")], LIMIT));
    let rest: Vec<u64> = c.ids().into_iter().filter(|&i| i != old).collect();
    c.partition(vec![vec![old], rest.clone()]);
    // The majority elects a new leader and takes a new value.
    let deadline = Instant::now() + LIMIT;
    let new = loop {
        if let Some(l) = rest.iter().copied().find(|&i| {
            let s = c.node(i).unwrap();
            s.status().leader.load(std::sync::atomic::Ordering::Acquire) == i
        }) {
            break l;
        }
        assert!(Instant::now() < deadline, "the majority elected nobody");
        std::thread::sleep(Duration::from_millis(10));
    };
    let r = c.request(new, put(b"x", b"new"));
    assert_eq!(error_of(&r), None);
    // The old leader, still believing it leads or not, must not answer a linearizable read
    // with the old value: it either refuses or never answers.
    let stale = c.node(old).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    stale.submit(
        RaftCmdRequest {
            requests: vec![get(b"x")],
            ..Default::default()
        },
        tx,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    match rt.block_on(async { tokio::time::timeout(Duration::from_secs(3), rx).await }) {
        Err(_) => {} // no answer: fine
        Ok(Err(_)) => {}
        Ok(Ok(r)) => {
            let e = error_of(&r);
            assert!(
                e.is_some(),
                "the cut-off leader served a linearizable read: {r:?}"
            );
        }
    }
    // Healed, everyone converges on the new value.
    c.clear_filters();
    converge(&c, b"x", b"", &[(b"x".to_vec(), b"new".to_vec())]);
}

/// A leader cut off with proposals in flight steps down; its successor's log ends before
/// them, so they can never commit. Once healed, the old leader must answer them as soon as
/// it applies its successor's first entry (`StaleCommand`), not when (if ever) the region
/// takes enough new writes to reach their indexes: the region stays idle here.
#[test]
fn a_deposed_leader_answers_its_lost_proposals_promptly() {
    deposed_leader_answers(false);
}

/// The same, when the deposed leader catches up by a snapshot: proposals the snapshot covers
/// may have been committed, so their answer says the outcome is unknown (a `StaleCommand`
/// would make the client write again).
#[test]
fn a_deposed_leader_answers_its_proposals_when_a_snapshot_replaces_its_log() {
    deposed_leader_answers(true);
}

fn deposed_leader_answers(snapshot: bool) {
    let c = Cluster::start(if snapshot {
        compacting(3)
    } else {
        ClusterConfig::new(3)
    });
    let old = c.wait_leader(LIMIT);
    let mut cl = Client::new(7);
    ok(cl.call(&c, vec![put(b"x", b"before")], LIMIT));
    let rest: Vec<u64> = c.ids().into_iter().filter(|&i| i != old).collect();
    c.partition(vec![vec![old], rest.clone()]);
    // Proposed by the cut-off leader at once (it has not noticed yet): never replicated.
    // More of them than the new leader's first entries (its empty entry, region 1's store
    // records) cover, so most of their indexes stay beyond its log.
    let node = c.node(old).unwrap();
    let mut answers = Vec::new();
    for i in 0..20 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(node.submit(
            RaftCmdRequest {
                requests: vec![put(format!("lost{i}").as_bytes(), b"v")],
                ..Default::default()
            },
            tx,
        ));
        answers.push(rx);
    }
    let deadline = Instant::now() + LIMIT;
    while !rest.iter().any(|&i| {
        c.node(i)
            .unwrap()
            .status()
            .leader
            .load(std::sync::atomic::Ordering::Acquire)
            == i
    }) {
        assert!(Instant::now() < deadline, "the majority elected nobody");
        std::thread::sleep(Duration::from_millis(10));
    }
    if snapshot {
        for i in 0..300 {
            let (k, v) = kv(i);
            ok(cl.call(&c, vec![put(&k, &v)], LIMIT));
        }
        wait_compacted_past(&c, 100, old);
    }
    c.clear_filters();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    for (i, rx) in answers.into_iter().enumerate() {
        let r = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), rx).await })
            .unwrap_or_else(|_| panic!("proposal {i} of the deposed leader is still unanswered"))
            .unwrap();
        let e = r
            .header
            .clone()
            .unwrap_or_default()
            .error
            .unwrap_or_default();
        if snapshot {
            assert!(
                e.message.contains("outcome is unknown") && e.stale_command.is_none(),
                "proposal {i}: want an unknown outcome, got {r:?}"
            );
        } else {
            assert!(
                e.stale_command.is_some(),
                "proposal {i}: want StaleCommand, got {r:?}"
            );
        }
    }
    if snapshot {
        wait_snapshot_applied(&c, old, "the deposed leader caught up without a snapshot");
    }
    // None of them was written anywhere.
    converge(&c, b"lost", b"losu", &[]);
}

fn compacting(stores: u64) -> ClusterConfig {
    let mut cfg = ClusterConfig::new(stores);
    cfg.node.compact_log_count = 40;
    cfg.node.compact_check_ticks = 1;
    cfg
}

/// Waits until every running store but `except` has compacted its raft log past `index`
/// (so whoever leads next must send `except` a snapshot).
fn wait_compacted_past(c: &Cluster, index: u64, except: u64) {
    let deadline = Instant::now() + LIMIT;
    for id in c.ids() {
        if id == except || !c.is_up(id) {
            continue;
        }
        loop {
            let first = c.log(id).unwrap().first_index(1).unwrap_or(0);
            if first > index {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "store {id}: the log was never compacted past {index}"
            );
            // Compaction drops only what the engine has flushed.
            c.engine(id).unwrap().flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A region whose applied log is over the compaction limit but whose writes are still in
/// the memtable (the truncation waits for a flush) goes quiet once the writes stop: one
/// CompactLog, not one per compaction check for as long as nothing flushes.
#[test]
fn an_idle_region_with_unflushed_writes_stops_proposing_compactions() {
    let c = Cluster::start(compacting(3));
    let leader = c.wait_leader(LIMIT);
    for i in 0..100 {
        let (k, v) = kv(i);
        assert_eq!(error_of(&c.request(leader, put(&k, &v))), None);
    }
    // Compaction checks run every tick, and each saw new writes applied: some CompactLogs
    // are among the entries already.
    let log = c.log(leader).unwrap();
    let after_writes = log.last_index(1).unwrap();
    let deadline = Instant::now() + LIMIT;
    let mut last = after_writes;
    let mut still_since = Instant::now();
    // Quiet: the last index stays put for 50 ticks (20 ms each), with nothing flushed.
    while still_since.elapsed() < Duration::from_secs(1) {
        assert!(
            Instant::now() < deadline,
            "the leader kept appending to an idle region: last index {last}"
        );
        std::thread::sleep(Duration::from_millis(20));
        let now = log.last_index(1).unwrap();
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    // At most a CompactLog or two covering the last writes came after them.
    assert!(
        last <= after_writes + 3,
        "last index {last}, {after_writes} when the writes were done"
    );
}

#[test]
fn a_follower_cut_off_past_log_compaction_catches_up_by_snapshot() {
    let c = Cluster::start(compacting(3));
    let leader = c.wait_leader(LIMIT);
    let lagger = c.ids().into_iter().find(|&i| i != leader).unwrap();
    let others: Vec<u64> = c.ids().into_iter().filter(|&i| i != lagger).collect();
    c.partition(vec![others, vec![lagger]]);
    let mut cl = Client::new(6);
    let mut want = Vec::new();
    for i in 0..300 {
        let (k, v) = kv(i);
        ok(cl.call(&c, vec![put(&k, &v)], LIMIT));
        want.push((k, v));
    }
    wait_compacted_past(&c, 100, lagger);
    c.clear_filters();
    converge(&c, b"k", b"l", &want);
    wait_snapshot_applied(&c, lagger, "the lagging store caught up without a snapshot");
}

#[test]
fn a_removed_store_deletes_its_data_and_rejoins_wiped_from_a_snapshot() {
    let c = Cluster::start(compacting(3));
    let leader = c.wait_leader(LIMIT);
    let mut cl = Client::new(7);
    let mut want = Vec::new();
    for i in 0..200 {
        let (k, v) = kv(i);
        ok(cl.call(&c, vec![put(&k, &v)], LIMIT));
        want.push((k, v));
    }
    let victim = c.ids().into_iter().find(|&i| i != leader).unwrap();
    let r = admin(&c, change_peer(false, victim), LIMIT);
    assert_eq!(error_of(&r), None);
    let region = changed_region(r);
    assert_eq!(region.peers.len(), 2);
    assert_eq!(region.region_epoch.unwrap().conf_ver, 2);
    // The removed store deletes its data.
    let deadline = Instant::now() + LIMIT;
    while !local_range(&c, victim, b"k", b"l").is_empty() {
        assert!(Instant::now() < deadline, "the removed store kept its data");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The cluster goes on with two members, and compacts its log.
    for i in 200..260 {
        let (k, v) = kv(i);
        ok(cl.call(&c, vec![put(&k, &v)], LIMIT));
        want.push((k, v));
    }
    wait_compacted_past(&c, 50, victim);
    // The machine is wiped and comes back as a new member.
    c.wipe_store(victim);
    c.join_store(victim);
    let r = admin(&c, change_peer(true, victim), LIMIT);
    assert_eq!(error_of(&r), None);
    for i in 260..300 {
        let (k, v) = kv(i);
        ok(cl.call(&c, vec![put(&k, &v)], LIMIT));
        want.push((k, v));
    }
    converge(&c, b"k", b"l", &want);
    wait_snapshot_applied(&c, victim, "the new member caught up without a snapshot");
    let rev = |id: u64| {
        c.node(id)
            .unwrap()
            .status()
            .revision
            .load(std::sync::atomic::Ordering::Acquire)
    };
    let deadline = Instant::now() + LIMIT;
    while rev(victim) != rev(c.leader().unwrap()) {
        assert!(Instant::now() < deadline, "revisions differ");
        std::thread::sleep(Duration::from_millis(10));
    }
    // It survives a crash right after: the snapshot was flushed before the log was reset.
    c.crash_store(victim);
    c.start_store(victim);
    converge(&c, b"k", b"l", &want);
    // A crash with no leader change loses nothing either; the new member can vote: with
    // the old leader down the other two elect one.
    c.crash_store(leader);
    c.wait_leader(LIMIT);
    ok(cl.call(&c, vec![put(b"k9999", b"last")], LIMIT));
}

#[test]
fn every_member_reports_its_status() {
    let c = Cluster::start(ClusterConfig::new(3));
    let leader = c.wait_leader(LIMIT);
    let mut cl = Client::new(8);
    for i in 0..20 {
        let (k, v) = kv(i);
        ok(cl.call(&c, vec![put(&k, &v)], LIMIT));
    }
    let deadline = Instant::now() + LIMIT;
    for id in c.ids() {
        loop {
            let r = c.submit(id, cluster::status_request());
            assert_eq!(error_of(&r), None);
            let s = r.admin_response.unwrap().status.unwrap();
            assert_eq!(s.member_id, id);
            assert_eq!(s.members.len(), 3);
            assert!(s.raft_applied_index <= s.raft_committed_index);
            assert!(s.raft_committed_index <= s.raft_index);
            // Followers learn the commit index with the next append or heartbeat.
            let revision = r.response_header.unwrap().revision;
            if s.leader == leader && revision == 21 {
                // 20 puts after the bootstrap index 5 and the leader's empty entry.
                assert!(s.raft_applied_index >= 26, "{s:?}");
                break;
            }
            assert!(Instant::now() < deadline, "store {id} status: {s:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn a_new_store_joins_from_a_snapshot_even_with_the_whole_log_available() {
    // The initial membership is not in the log: a joining store must not replay the log
    // into an empty configuration, so it starts from a snapshot.
    let c = Cluster::start(ClusterConfig::new(3));
    c.wait_leader(LIMIT);
    let mut cl = Client::new(9);
    let mut want = Vec::new();
    for i in 0..30 {
        let (k, v) = kv(i);
        ok(cl.call(&c, vec![put(&k, &v)], LIMIT));
        want.push((k, v));
    }
    c.join_store(4);
    let r = admin(&c, change_peer(true, 4), LIMIT);
    assert_eq!(error_of(&r), None);
    wait_snapshot_applied(&c, 4, "the new store never got a snapshot");
    let deadline = Instant::now() + LIMIT;
    loop {
        let s = c
            .submit(4, cluster::status_request())
            .admin_response
            .unwrap()
            .status
            .unwrap();
        let mut ids: Vec<u64> = s.members.iter().map(|m| m.id).collect();
        ids.sort();
        if ids == [1, 2, 3, 4] && local_range(&c, 4, b"k", b"l") == want {
            assert_eq!(s.conf_ver, 2);
            break;
        }
        assert!(Instant::now() < deadline, "store 4 sees members {ids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_follower_serves_linearizable_reads_that_see_every_acknowledged_write() {
    let c = Cluster::start(ClusterConfig::new(3));
    let leader = c.wait_leader(LIMIT);
    let follower = c.ids().into_iter().find(|&i| i != leader).unwrap();
    wait_knows_leader(&c, follower, leader);
    for i in 0..50u32 {
        let v = format!("v{i}");
        let r = c.request(leader, put(b"x", v.as_bytes()));
        assert_eq!(error_of(&r), None);
        // Right after the leader acknowledged, the follower's linearizable read sees it.
        let r = c.request(follower, get(b"x"));
        assert_eq!(error_of(&r), None, "{r:?}");
        assert_eq!(r.responses[0].get.as_ref().unwrap().value, v.as_bytes());
    }
}

/// Linearizable reads handed to every replica of a region at once each get their own read
/// index. The leader keys pending read-index requests by their context; contexts that were
/// only unique per replica (every replica counting from 1) collided there, and raft-rs
/// drops a request whose context is already pending, so all but one of the simultaneous
/// reads waited out the read-index timeout ("read index timed out; retry").
#[test]
fn simultaneous_linearizable_reads_on_every_replica_all_get_answered() {
    let c = Cluster::start(ClusterConfig::new(3));
    let leader = c.wait_leader(LIMIT);
    // Every replica knows the leader (followers forward their read index requests to it).
    for id in c.ids() {
        wait_knows_leader(&c, id, leader);
    }
    assert_eq!(error_of(&c.request(leader, put(b"x", b"1"))), None);
    for round in 0..20 {
        // All three submitted before any answer comes back.
        let waiting: Vec<_> = c
            .ids()
            .into_iter()
            .map(|id| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let req = RaftCmdRequest {
                    requests: vec![get(b"x")],
                    ..Default::default()
                };
                assert!(c.node(id).unwrap().submit(req, tx));
                (id, rx)
            })
            .collect();
        for (id, rx) in waiting {
            let r = rx.blocking_recv().unwrap();
            assert_eq!(error_of(&r), None, "round {round}, store {id}: {r:?}");
            assert_eq!(r.responses[0].get.as_ref().unwrap().value, b"1");
        }
    }
}

/// With an inbound budget of one byte, a store loop takes a raft message only while none
/// waits: every other one arriving meanwhile is dropped. Raft resends, so the cluster still
/// elects, replicates and answers, and every store ends up with every write.
#[test]
fn raft_messages_over_the_inbound_budget_are_dropped_and_the_cluster_goes_on() {
    let mut cfg = ClusterConfig::new(3);
    cfg.node.raft_inbound_limit_bytes = 1;
    let c = Cluster::start(cfg);
    c.wait_leader(LIMIT);
    let mut cli = Client::new(11);
    let mut want = Vec::new();
    for i in 0..100u32 {
        let key = format!("ib{i:03}").into_bytes();
        ok(cli.call(&c, vec![put(&key, b"v")], LIMIT));
        want.push((key, b"v".to_vec()));
    }
    converge(&c, b"ib", b"ic", &want);
    let dropped: u64 = c
        .ids()
        .iter()
        .filter_map(|id| c.node(*id))
        .map(|n| {
            n.status()
                .raft_messages_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    eprintln!("raft messages dropped over the budget: {dropped}");
}

/// A store that missed its removal learns of it from another replica (a tombstone message,
/// with the newer configuration) and deletes its peer; a late message of that newer
/// configuration to the old peer (a heartbeat the leader sent before it applied the
/// removal) must not create the peer again. (It did: the store remembered only its own,
/// older configuration as the one it left.)
#[test]
fn a_peer_removed_behind_its_back_is_not_created_again_by_a_late_message() {
    use pontoon_client::proto::metapb;
    use pontoon_client::proto::raft_serverpb::RaftMessage;
    use protobuf::Message as _;
    use std::sync::atomic::Ordering;

    let c = Cluster::start(ClusterConfig::new(3));
    let leader = c.wait_leader(LIMIT);
    let mut cl = Client::new(9);
    for i in 0..20 {
        let (k, v) = kv(i);
        ok(cl.call(&c, vec![put(&k, &v)], LIMIT));
    }
    let victim = c.ids().into_iter().find(|&i| i != leader).unwrap();
    let others: Vec<u64> = c.ids().into_iter().filter(|&i| i != victim).collect();
    c.partition(vec![vec![victim], others]);
    let r = admin(&c, change_peer(false, victim), LIMIT);
    assert_eq!(error_of(&r), None);
    let region = changed_region(r);
    let epoch = region.region_epoch.unwrap();
    c.heal();
    // Its next election asks the others, who tell it it is gone.
    let peers = |id: u64| c.node(id).unwrap().status().peers.load(Ordering::Acquire);
    let deadline = Instant::now() + LIMIT;
    while peers(victim) != 0 {
        assert!(Instant::now() < deadline, "the removed peer is still there");
        std::thread::sleep(Duration::from_millis(20));
    }
    let leader = c.wait_leader(LIMIT);
    let mut hb = raft::eraftpb::Message::default();
    hb.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    hb.from = leader;
    hb.to = victim;
    hb.term = c
        .node(leader)
        .unwrap()
        .status()
        .term
        .load(Ordering::Acquire);
    let late = RaftMessage {
        region_id: region.id,
        from_peer: Some(metapb::Peer {
            id: leader,
            store_id: leader,
            ..Default::default()
        }),
        to_peer: Some(metapb::Peer {
            id: victim,
            store_id: victim,
            ..Default::default()
        }),
        region_epoch: Some(epoch),
        message: hb.write_to_bytes().unwrap().into(),
        ..Default::default()
    };
    assert!(c.node(victim).unwrap().step(late));
    // A command queued after the message is answered after it was handled.
    c.submit(victim, cluster::status_request());
    assert_eq!(
        peers(victim),
        0,
        "a late message created the removed peer again"
    );
}
