//! TinyKV's generic raftstore workload, rebuilt: clients append their own sequences of
//! values under their own keys while scanning them back, and also read and write a few
//! shared keys, while the network drops messages, partitions change, stores crash and the
//! log is compacted often enough to force snapshots. After every round each client's
//! values are present, exactly once, in order; every scan saw exactly the acknowledged
//! prefix (or the prefix plus writes whose outcome was unknown); and the whole history is
//! checked for linearizability per key.
//!
//! Each variant runs a few bounded rounds in CI; `PONTOON_SOAK_SECS=600 cargo test
//! --release -p pontoon-server --test fault_workloads -- --ignored` runs longer ones.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/linearizability.rs"]
mod linearizability;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::{
    admin, change_peer, error_of, get, members, put, range, Client, Cluster, ClusterConfig, Delay,
    DropRate, Outcome, Rng,
};
use linearizability::{check, CheckResult, Input, Operation, Output};

#[derive(Clone, Copy, Default)]
struct Faults {
    unreliable: bool,
    partitions: bool,
    crashes: bool,
    /// Remove a follower, wipe it, and add it back as a new member, during the load.
    membership: bool,
    compact_log: Option<u64>,
    /// Split regions once they hold this many bytes (tiny: splits all the time).
    split: Option<u64>,
    /// Three replicas per region over more stores, and stores taken Offline and back Up
    /// during the load: the placement moves replicas around all the time.
    placement: bool,
}

/// Takes a random store Offline, or brings an Offline one back Up (the placement moves
/// replicas accordingly). Refusals (too few Up stores left) are fine. A store that became a
/// Tombstone meanwhile (its replicas all moved away) is gone for good: it is stopped and a
/// new store (id `next_store`) joins in its place, as an operator would replace a machine,
/// so that the placement keeps moving replicas for the whole run.
fn toggle_store(c: &Cluster, rng: &Rng, offline: &mut Option<u64>, next_store: &mut u64) {
    use pontoon_client::proto::metapb::StoreState;
    use pontoon_client::proto::pontoonpb::SetStoreStateRequest;
    use pontoon_client::proto::raft_cmdpb::{AdminCmdType, AdminRequest, RaftCmdRequest};
    let (store, state) = match offline.take() {
        Some(s) => (s, StoreState::Up),
        None => {
            let ids = c.running_ids();
            let s = ids[rng.below(ids.len() as u64) as usize];
            *offline = Some(s);
            (s, StoreState::Offline)
        }
    };
    let req = RaftCmdRequest {
        admin_request: Some(AdminRequest {
            cmd_type: AdminCmdType::SetStoreState as i32,
            set_store_state: Some(SetStoreStateRequest {
                store_id: store,
                state: state as i32,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = admin(c, req, Duration::from_secs(10));
    if let Some(e) = error_of(&r) {
        eprintln!("store {store} -> {state:?} refused: {e}");
        if state == StoreState::Offline {
            *offline = None;
        }
        if e.contains("tombstone") {
            c.crash_store(store);
            eprintln!("store {store} replaced by a new store {next_store}");
            c.join_store(*next_store);
            *next_store += 1;
        }
    }
}

const SHARED_KEYS: u64 = 4;
const SCAN_WINDOW: u64 = 64;

fn client_key(cli: u64, j: u64) -> Vec<u8> {
    format!("c{cli:02} {j:08}").into_bytes()
}

fn client_value(cli: u64, j: u64) -> Vec<u8> {
    format!("x {cli} {j} y").into_bytes()
}

fn shared_key(k: u64) -> Vec<u8> {
    format!("s{k}").into_bytes()
}

struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn push(&self, op: Operation) {
        self.ops.lock().unwrap().push(op);
    }
}

/// One client's loop for one round. Returns the number of its own values acknowledged.
fn run_client(c: &Cluster, cli: u64, mut next: u64, done: &AtomicBool, rec: &Recorder) -> u64 {
    let mut client = Client::new(cli * 7919 + next);
    client.attempt_timeout = Duration::from_millis(800);
    let rng = Rng::new(cli * 31 + next * 17 + 1);
    while !done.load(Ordering::Acquire) {
        let dice = rng.below(100);
        if dice < 45 {
            let (k, v) = (client_key(cli, next), client_value(cli, next));
            let call = rec.now();
            // A put of its own key is idempotent: retry it until it is acknowledged, so the
            // sequence has no holes (TinyKV's clients do the same).
            let mut acked = false;
            while !acked && !done.load(Ordering::Acquire) {
                match client.call(c, vec![put(&k, &v)], Duration::from_secs(3)) {
                    Outcome::Ok(r) if error_of(&r).is_none() => acked = true,
                    Outcome::Ok(r) => panic!("put failed: {:?}", error_of(&r)),
                    Outcome::Unknown => {}
                }
            }
            let ret = rec.now();
            rec.push(Operation {
                client: cli,
                key: k,
                input: Input::Put(v),
                output: if acked { Output::Ok } else { Output::Unknown },
                call,
                ret,
            });
            if !acked {
                break;
            }
            next += 1;
        } else if dice < 70 {
            // Scan our own prefix: exactly the acknowledged values, in order. The newest
            // SCAN_WINDOW of them (each round's final check scans everything), so that a
            // scan costs the same in a long soak as in a short run.
            let call = rec.now();
            let from = next.saturating_sub(SCAN_WINDOW);
            let start = client_key(cli, from);
            let end = client_key(cli, next + 1);
            let Outcome::Ok(r) =
                client.call(c, vec![range(&start, &end, false)], Duration::from_secs(3))
            else {
                continue;
            };
            let ret = rec.now();
            if error_of(&r).is_some() {
                continue;
            }
            let kvs = &r.responses[0].range.as_ref().unwrap().kvs;
            let got: Vec<Vec<u8>> = kvs.iter().map(|kv| kv.value.clone()).collect();
            let want: Vec<Vec<u8>> = (from..next).map(|j| client_value(cli, j)).collect();
            let ok = got == want;
            assert!(
                ok,
                "client {cli}: scan saw {} values, {} acknowledged (first difference at {:?})",
                got.len(),
                want.len(),
                got.iter().zip(&want).position(|(a, b)| a != b)
            );
            // Every key was checked above; the history keeps the newest few per scan (the
            // ones a lost or early write would show on).
            for j in next.saturating_sub(2)..=next {
                let key = client_key(cli, j);
                let value = kvs
                    .iter()
                    .find(|kv| kv.key == key)
                    .map(|kv| kv.value.clone());
                rec.push(Operation {
                    client: cli,
                    key,
                    input: Input::Get,
                    output: Output::Value(value),
                    call,
                    ret,
                });
            }
        } else if dice < 85 {
            let k = shared_key(rng.below(SHARED_KEYS));
            let v = format!("{cli}-{}", rng.next()).into_bytes();
            let call = rec.now();
            let out = client.call_with(c, vec![put(&k, &v)], Duration::from_secs(3), false);
            let ret = rec.now();
            let output = match out {
                Outcome::Ok(r) if error_of(&r).is_none() => Output::Ok,
                _ => Output::Unknown,
            };
            rec.push(Operation {
                client: cli,
                key: k,
                input: Input::Put(v),
                output,
                call,
                ret,
            });
        } else {
            let k = shared_key(rng.below(SHARED_KEYS));
            let call = rec.now();
            if let Outcome::Ok(r) = client.call(c, vec![get(&k)], Duration::from_secs(3)) {
                let ret = rec.now();
                if error_of(&r).is_none() {
                    let g = r.responses[0].get.as_ref().unwrap();
                    let value = g.kv.as_ref().map(|_| g.value.clone());
                    rec.push(Operation {
                        client: cli,
                        key: k,
                        input: Input::Get,
                        output: Output::Value(value),
                        call,
                        ret,
                    });
                }
            }
        }
    }
    next
}

fn run(name: &str, stores: u64, clients: u64, rounds: u32, round_len: Duration, f: Faults) {
    let mut cfg = ClusterConfig::new(stores);
    if let Some(n) = f.compact_log {
        cfg.node.compact_log_count = n;
        cfg.node.compact_check_ticks = 2;
    }
    if let Some(n) = f.split {
        cfg.node.region_max_size = n;
        cfg.node.split_check_ticks = 2;
    }
    if f.placement {
        cfg.node.placement = true;
        cfg.node.max_peer_count = 3;
        cfg.node.schedule_ticks = 2;
    }
    let mut offline: Option<u64> = None;
    let mut next_store = stores + 1;
    let c = Arc::new(Cluster::start(cfg));
    c.wait_leader(Duration::from_secs(20));
    let rec = Arc::new(Recorder {
        start: Instant::now(),
        ops: Mutex::new(Vec::new()),
    });
    let mut next = vec![0u64; clients as usize];
    let nemesis_rng = Rng::new(0x5eed ^ stores);
    let mut membership_changes = 0u32;
    for round in 0..rounds {
        let done = Arc::new(AtomicBool::new(false));
        if f.unreliable {
            c.add_filter(Box::new(DropRate {
                rate: 0.1,
                rng: Rng::new(u64::from(round) + 11),
            }));
            c.add_filter(Box::new(Delay {
                rate: 0.1,
                max: Duration::from_millis(30),
                rng: Rng::new(u64::from(round) + 12),
            }));
        }
        let handles: Vec<_> = (0..clients)
            .map(|cli| {
                let (c, done, rec) = (c.clone(), done.clone(), rec.clone());
                let start = next[cli as usize];
                std::thread::spawn(move || run_client(&c, cli, start, &done, &rec))
            })
            .collect();
        let end = Instant::now() + round_len;
        while Instant::now() < end {
            if f.partitions {
                // A random split of the running stores: a minority and a majority, or
                // everyone apart.
                let mut ids = c.running_ids();
                let cut = nemesis_rng.below(ids.len() as u64) as usize;
                for i in (1..ids.len()).rev() {
                    ids.swap(i, nemesis_rng.below(i as u64 + 1) as usize);
                }
                let (a, b) = ids.split_at(cut);
                c.partition(vec![a.to_vec(), b.to_vec()]);
            }
            if f.membership && nemesis_rng.below(2) == 0 {
                // A membership change needs a quorum; the next partition comes after it.
                c.heal();
                if let Some(leader) = c.leader() {
                    let ids: Vec<u64> = c.ids().into_iter().filter(|&i| i != leader).collect();
                    let victim = ids[nemesis_rng.below(ids.len() as u64) as usize];
                    // Retried under faults, the removal may be applied twice (the second
                    // one refused); what counts is whether the victim is gone.
                    let _ = admin(&c, change_peer(false, victim), Duration::from_secs(20));
                    if members(&c).is_some_and(|m| !m.contains(&victim)) {
                        // Gone from the region: the machine is wiped and joins again.
                        std::thread::sleep(Duration::from_millis(100));
                        c.wipe_store(victim);
                        c.join_store(victim);
                        let deadline = Instant::now() + Duration::from_secs(30);
                        while !members(&c).is_some_and(|m| m.contains(&victim)) {
                            assert!(
                                Instant::now() < deadline,
                                "{name}: store {victim} could not be added back"
                            );
                            let _ = admin(&c, change_peer(true, victim), Duration::from_secs(10));
                        }
                        membership_changes += 2;
                    }
                }
            }
            if f.placement && nemesis_rng.below(2) == 0 {
                // A store state change needs region 1's quorum; the next partition comes
                // after it.
                c.heal();
                toggle_store(&c, &nemesis_rng, &mut offline, &mut next_store);
            }
            if f.crashes && nemesis_rng.below(3) == 0 {
                let ids = c.running_ids();
                let victim = ids[nemesis_rng.below(ids.len() as u64) as usize];
                c.crash_store(victim);
                std::thread::sleep(Duration::from_millis(100 + nemesis_rng.below(300)));
                c.start_store(victim);
            }
            std::thread::sleep(Duration::from_millis(400 + nemesis_rng.below(600)));
        }
        c.clear_filters();
        if offline.is_some() {
            // Everyone back Up before the round's checks.
            toggle_store(&c, &nemesis_rng, &mut offline, &mut next_store);
        }
        done.store(true, Ordering::Release);
        for (cli, h) in handles.into_iter().enumerate() {
            next[cli] = h.join().expect("a client failed");
        }
        if f.crashes {
            let ids = c.running_ids();
            for &id in &ids {
                c.crash_store(id);
            }
            for id in ids {
                c.start_store(id);
            }
        }
        // Every client's sequence is there, exactly once, in order.
        let mut client = Client::new(99 + u64::from(round));
        for cli in 0..clients {
            let start = client_key(cli, 0);
            let end = client_key(cli, u64::MAX / 2);
            let r = match client.call(
                &c,
                vec![range(&start, &end, false)],
                Duration::from_secs(30),
            ) {
                Outcome::Ok(r) => r,
                Outcome::Unknown => {
                    panic!("{name}: the cluster did not answer after round {round}")
                }
            };
            assert_eq!(error_of(&r), None);
            let got: Vec<Vec<u8>> = r.responses[0]
                .range
                .as_ref()
                .unwrap()
                .kvs
                .iter()
                .map(|kv| kv.value.clone())
                .collect();
            let n = next[cli as usize];
            let want: Vec<Vec<u8>> = (0..n).map(|j| client_value(cli, j)).collect();
            assert!(
                got == want || (got.len() == want.len() + 1 && got[..want.len()] == want[..]),
                "{name}: after round {round}, client {cli} has {} values, {} acknowledged",
                got.len(),
                n
            );
        }
    }
    let ops = std::mem::take(&mut *rec.ops.lock().unwrap());
    let total: u64 = next.iter().sum();
    eprintln!(
        "{name}: {} operations recorded, {total} sequence puts acknowledged, {} messages dropped of {}",
        ops.len(),
        c.router.dropped.load(Ordering::Relaxed),
        c.router.sent.load(Ordering::Relaxed)
    );
    assert!(total > 0, "{name}: no progress at all");
    if f.split.is_some() {
        let regions: Vec<u64> = c
            .running_ids()
            .iter()
            .filter_map(|&id| c.node(id))
            .map(|n| n.status().regions.load(Ordering::Acquire))
            .collect();
        eprintln!("{name}: regions per store at the end: {regions:?}");
        assert!(regions.iter().any(|&n| n > 1), "{name}: no region split");
    }
    if f.membership {
        assert!(
            membership_changes > 0,
            "{name}: no membership change happened"
        );
    }
    match check(&ops, Duration::from_secs(60)) {
        CheckResult::Ok => {}
        CheckResult::Illegal { key, detail } => panic!(
            "{name}: history not linearizable on key {:?}: {detail}",
            String::from_utf8_lossy(&key)
        ),
        CheckResult::Timeout { key, detail } => eprintln!(
            "{name}: linearizability check of key {:?} timed out (inconclusive): {detail}",
            String::from_utf8_lossy(&key)
        ),
    }
}

fn soak() -> Option<Duration> {
    std::env::var("PONTOON_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
}

/// A soak: 5 stores, 8 clients, 5-second rounds for `PONTOON_SOAK_SECS` (default 120).
fn run_soak(name: &str, f: Faults) {
    let secs = soak().unwrap_or(Duration::from_secs(120));
    let rounds = (secs.as_secs() / 5).max(1) as u32;
    run(name, 5, 8, rounds, Duration::from_secs(5), f);
}

fn round_len() -> Duration {
    Duration::from_millis(2500)
}

#[test]
fn basic_3_stores() {
    run("basic", 3, 4, 2, round_len(), Faults::default());
}

#[test]
fn unreliable_network() {
    let f = Faults {
        unreliable: true,
        ..Faults::default()
    };
    run("unreliable", 3, 4, 2, round_len(), f);
}

#[test]
fn changing_partitions() {
    let f = Faults {
        partitions: true,
        ..Faults::default()
    };
    run("partitions", 5, 4, 2, round_len(), f);
}

#[test]
fn crashes_and_restarts() {
    let f = Faults {
        crashes: true,
        ..Faults::default()
    };
    run("crashes", 3, 4, 2, round_len(), f);
}

#[test]
fn snapshots_under_partitions_and_crashes() {
    let f = Faults {
        unreliable: true,
        partitions: true,
        crashes: true,
        compact_log: Some(50),
        ..Faults::default()
    };
    run("snapshots", 5, 4, 3, round_len(), f);
}

#[test]
fn membership_changes_under_load() {
    let f = Faults {
        membership: true,
        compact_log: Some(100),
        ..Faults::default()
    };
    run("membership", 5, 4, 2, round_len(), f);
}

#[test]
#[ignore = "soak: run on demand with PONTOON_SOAK_SECS"]
fn soak_everything() {
    run_soak(
        "soak",
        Faults {
            unreliable: true,
            partitions: true,
            crashes: true,
            membership: true,
            compact_log: Some(100),
            split: None,
            placement: false,
        },
    );
}

/// The multi-raft soak: regions split all the time and the placement moves replicas while
/// stores go Offline and back, the network drops and partitions, stores crash and the log
/// is compacted (membership changes by hand are the placement's here, so they are left to
/// `soak_everything`).
#[test]
#[ignore = "soak: run on demand with PONTOON_SOAK_SECS"]
fn soak_multi_raft() {
    run_soak(
        "soak-multi-raft",
        Faults {
            unreliable: true,
            partitions: true,
            crashes: true,
            membership: false,
            compact_log: Some(100),
            split: Some(4096),
            placement: true,
        },
    );
}

// TinyKV's split workloads: the same clients and checks while regions split all the time
// (a region splits once it holds 4 KiB), alone and with each fault.

fn split_faults() -> Faults {
    Faults {
        split: Some(4096),
        ..Faults::default()
    }
}

#[test]
fn split_basic() {
    run("split", 3, 4, 2, round_len(), split_faults());
}

#[test]
fn split_unreliable_network() {
    let f = Faults {
        unreliable: true,
        ..split_faults()
    };
    run("split-unreliable", 3, 4, 2, round_len(), f);
}

#[test]
fn split_with_crashes_and_restarts() {
    let f = Faults {
        crashes: true,
        ..split_faults()
    };
    run("split-crashes", 3, 4, 2, round_len(), f);
}

#[test]
fn split_with_snapshots_partitions_and_crashes() {
    let f = Faults {
        unreliable: true,
        partitions: true,
        crashes: true,
        compact_log: Some(50),
        ..split_faults()
    };
    run("split-snapshots", 5, 4, 3, round_len(), f);
}

#[test]
fn split_with_placement_changes_and_partitions() {
    let f = Faults {
        partitions: true,
        placement: true,
        ..split_faults()
    };
    run("split-placement", 5, 4, 3, round_len(), f);
}
