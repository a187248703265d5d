//! Three real `pontoon` processes on loopback: `kill -9` one of them in the middle of a
//! write load, restart it, and every acknowledged write is on every store afterwards.

#![allow(clippy::unwrap_used)]

#[path = "support/proc.rs"]
mod proc;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pontoon_client::blocking::Client;
use pontoon_client::client::{ClientOptions, RangeOptions};
use proc::{free_addr, Proc};

struct Member {
    id: u64,
    client: SocketAddr,
    peer: SocketAddr,
}

fn spawn(dir: &Path, m: &Member, cluster: &str) -> Proc {
    spawn_with(dir, m, cluster, &[])
}

fn spawn_with(dir: &Path, m: &Member, cluster: &str, extra: &[String]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(extra)
        .arg("--data-dir")
        .arg(dir.join(format!("s{}", m.id)))
        .arg("--store-id")
        .arg(m.id.to_string())
        .arg("--client-addr")
        .arg(m.client.to_string())
        .arg("--peer-addr")
        .arg(m.peer.to_string())
        .arg("--initial-cluster")
        .arg(cluster)
        .env(
            "RUST_LOG",
            std::env::var("PONTOON_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .unwrap();
    Proc(child)
}

fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_secs(2),
        max_attempts: 50,
        ..ClientOptions::default()
    }
}

/// Every key under `key` on one store, read locally (serializable).
fn local_keys(addr: SocketAddr) -> Option<Vec<Vec<u8>>> {
    let c = Client::connect(&[addr.to_string()], options()).ok()?;
    let r = c
        .range(
            b"key",
            RangeOptions {
                range_end: b"kez".to_vec(),
                serializable: true,
                keys_only: true,
                ..RangeOptions::default()
            },
        )
        .ok()?;
    Some(r.kvs.into_iter().map(|kv| kv.key).collect())
}

/// Members 1..=n on free loopback ports.
fn members(n: u64) -> Vec<Member> {
    (1..=n)
        .map(|id| Member {
            id,
            client: free_addr(),
            peer: free_addr(),
        })
        .collect()
}

/// `--initial-cluster` naming `members`.
fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.id, m.peer))
        .collect::<Vec<_>>()
        .join(",")
}

/// Retries `f` until it returns `Some` or `limit` passes.
fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_9_of_one_member_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let members = members(3);
    let cluster = initial_cluster(&members);
    let mut procs: BTreeMap<u64, Proc> = members
        .iter()
        .map(|m| (m.id, spawn(dir.path(), m, &cluster)))
        .collect();
    let endpoints: Vec<String> = members.iter().map(|m| m.client.to_string()).collect();

    // Writers: each put is acknowledged or not; only acknowledged ones must survive.
    let acked = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (acked, stop, endpoints) = (acked.clone(), stop.clone(), endpoints.clone());
            std::thread::spawn(move || {
                let client = eventually("a client", Duration::from_secs(30), || {
                    Client::connect(&endpoints, options()).ok()
                });
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let key = format!("key{w}-{i:06}").into_bytes();
                    if client.put(&key, b"v", false).is_ok() {
                        acked.lock().unwrap().push(key);
                    }
                    i += 1;
                }
            })
        })
        .collect();

    // Let the load run, then kill -9 one member (the one with the most to lose is any of
    // them: followers and leader both hold acknowledged entries).
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "the cluster made no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(300);
    let victim = 1 + (std::process::id() as u64 % 3);
    drop(procs.remove(&victim)); // SIGKILL
    let before = acked.lock().unwrap().len();
    wait_for(before + 300);
    // Restart it on the same data directory and let the load go on a bit.
    let m = members.iter().find(|m| m.id == victim).unwrap();
    procs.insert(victim, spawn(dir.path(), m, &cluster));
    let before = acked.lock().unwrap().len();
    wait_for(before + 200);
    stop.store(true, Ordering::Release);
    for w in writers {
        w.join().unwrap();
    }
    let mut want = acked.lock().unwrap().clone();
    want.sort();

    // Every store, the restarted one included, holds every acknowledged key.
    for m in &members {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = local_keys(m.client).unwrap_or_default();
            let missing = want
                .iter()
                .filter(|k| got.binary_search(k).is_err())
                .count();
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "store {} misses {missing} of {} acknowledged keys",
                m.id,
                want.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(procs);
}

/// A store that joined after a client was made comes to lead the region: the client, given
/// only the first three stores, learns the new one's address from the cluster metadata
/// and reaches it (before, every attempt went to followers answering `NotLeader`).
#[test]
fn a_client_reaches_a_leader_on_a_store_it_was_not_given() {
    let dir = tempfile::tempdir().unwrap();
    let members = members(4);
    let cluster = initial_cluster(&members[..3]);
    // Membership by hand (the placement would own the replicas, and with one region it
    // has no reason to give the new store one).
    let config = dir.path().join("pontoon.toml");
    std::fs::write(&config, "placement = false\n").unwrap();
    let config_args = ["--config".to_string(), config.display().to_string()];
    let mut procs: Vec<Proc> = members[..3]
        .iter()
        .map(|m| spawn_with(dir.path(), m, &cluster, &config_args))
        .collect();
    let endpoints: Vec<String> = members[..3].iter().map(|m| m.client.to_string()).collect();
    let admin = eventually("a client", Duration::from_secs(30), || {
        Client::connect(&endpoints, options()).ok()
    });
    eventually("a first write", Duration::from_secs(30), || {
        admin.put(b"key-a", b"1", false).ok()
    });
    let cluster_id = admin.async_client().cluster_id();

    // Store 4 joins as a voter of the (only) region.
    let m4 = &members[3];
    admin
        .member_add(4, &m4.peer.to_string(), false)
        .expect("member add");
    procs.push(spawn_with(
        dir.path(),
        m4,
        &format!("{cluster},4={}", m4.peer),
        &[
            config_args[0].clone(),
            config_args[1].clone(),
            "--join".into(),
            "--cluster-id".into(),
            cluster_id.to_string(),
        ],
    ));
    let address = m4.client.to_string();
    eventually("store 4 in the metadata", Duration::from_secs(30), || {
        let list = admin.store_list().ok()?;
        list.stores
            .iter()
            .any(|s| {
                s.store
                    .as_ref()
                    .is_some_and(|s| s.id == 4 && s.address == address)
            })
            .then_some(())
    });
    eventually("store 4 leading", Duration::from_secs(30), || {
        let _ = admin.move_leader(4);
        let regions = admin.region_list().ok()?;
        regions.iter().all(|r| r.leader_store_id == 4).then_some(())
    });

    // A client that was never told about store 4.
    let client = Client::connect(&endpoints, options()).unwrap();
    let put = client
        .put(b"key-b", b"2", false)
        .expect("put through store 4");
    assert_eq!(put.header.member_id, 4, "the leader, store 4, answered");
    let got = client.get(b"key-a").expect("get through store 4");
    assert_eq!(got.kvs[0].value, b"1");
    assert_eq!(got.header.member_id, 4);
    assert_eq!(
        client.async_client().endpoints(),
        endpoints,
        "endpoints() lists the given ones"
    );
    drop(procs);
}
