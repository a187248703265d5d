//! The store loop end to end without the network: commands through raft into the engine,
//! etcd metadata in the answers, and a restart that replays the raft log.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use pontoon_client::proto::{pontoonpb, raft_cmdpb};
use pontoon_engine::{Engine, Options};
use pontoon_raftlog::LogStore;
use pontoon_server::node::{Node, NodeConfig};
use pontoon_server::transport::NoTransport;
use raft_cmdpb::{CmdType, RaftCmdRequest, RaftCmdResponse, Request};

fn start(dir: &Path) -> Node {
    start_on(dir, Arc::new(pontoon_engine::io::RealFs))
}

fn start_on(dir: &Path, fs: Arc<dyn pontoon_engine::io::FileSystem>) -> Node {
    let engine =
        Arc::new(Engine::open_with_fs(dir.join("engine"), Options::default(), fs).unwrap());
    start_over(engine, open_log(dir))
}

fn open_log(dir: &Path) -> Arc<LogStore> {
    Arc::new(LogStore::open(dir.join("raftlog"), pontoon_raftlog::Config::default()).unwrap())
}

/// The node of store 1 of cluster 77 over `engine` and `log`.
fn start_over(engine: Arc<Engine>, log: Arc<LogStore>) -> Node {
    start_with(engine, log, NodeConfig::default())
}

/// [`start_over`] with the rest of the configuration from `cfg`.
fn start_with(engine: Arc<Engine>, log: Arc<LogStore>, cfg: NodeConfig) -> Node {
    let cfg = NodeConfig {
        cluster_id: 77,
        store_id: 1,
        ..cfg
    };
    Node::start(cfg, engine, log, Arc::new(NoTransport)).unwrap()
}

/// Runs `body(node, thread, i)` for `i` in 0..50 on each of 8 threads, and waits for them.
fn eight_writers(node: &Arc<Node>, body: fn(&Node, usize, usize)) {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let node = node.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    body(&node, t, i);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn call(node: &Node, requests: Vec<Request>) -> RaftCmdResponse {
    let (tx, rx) = tokio::sync::oneshot::channel();
    assert!(node.submit(
        RaftCmdRequest {
            requests,
            ..Default::default()
        },
        tx
    ));
    rx.blocking_recv().unwrap()
}

fn put(key: &str, value: &str, prev_kv: bool) -> Request {
    Request {
        cmd_type: CmdType::Put as i32,
        put: Some(raft_cmdpb::PutRequest {
            cf: String::new(),
            key: key.into(),
            value: value.into(),
            prev_kv,
        }),
        ..Default::default()
    }
}

fn get(key: &str) -> Request {
    Request {
        cmd_type: CmdType::Get as i32,
        get: Some(raft_cmdpb::GetRequest {
            cf: String::new(),
            key: key.into(),
        }),
        ..Default::default()
    }
}

fn range(key: &str, end: &str, serializable: bool) -> Request {
    Request {
        cmd_type: CmdType::Range as i32,
        range: Some(pontoonpb::RangeRequest {
            key: key.into(),
            range_end: end.into(),
            serializable,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn del(key: &str) -> Request {
    Request {
        cmd_type: CmdType::Delete as i32,
        delete: Some(raft_cmdpb::DeleteRequest {
            cf: String::new(),
            key: key.into(),
            prev_kv: true,
        }),
        ..Default::default()
    }
}

fn ok(resp: &RaftCmdResponse) -> &pontoonpb::ResponseHeader {
    if let Some(e) = resp.header.as_ref().and_then(|h| h.error.as_ref()) {
        panic!("unexpected error: {e:?}");
    }
    resp.response_header.as_ref().unwrap()
}

fn wait_leader(node: &Node) {
    for _ in 0..300 {
        if node
            .status()
            .leader
            .load(std::sync::atomic::Ordering::Acquire)
            != 0
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no leader after 3 s");
}

#[test]
fn commands_follow_etcd_rules_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = start(dir.path());
        wait_leader(&node);
        let r = call(&node, vec![get("foo")]);
        let h = ok(&r);
        assert_eq!(
            (h.cluster_id, h.member_id, h.revision),
            (77, 1, 1),
            "empty store is at revision 1"
        );
        assert!(h.raft_term >= 1);
        assert!(r.responses[0].get.as_ref().unwrap().kv.is_none());

        assert_eq!(ok(&call(&node, vec![put("foo", "bar", false)])).revision, 2);
        let r = call(&node, vec![put("foo", "bar2", true)]);
        assert_eq!(ok(&r).revision, 3);
        let prev = r.responses[0]
            .put
            .as_ref()
            .unwrap()
            .prev_kv
            .as_ref()
            .unwrap();
        assert_eq!(
            (
                prev.create_revision,
                prev.mod_revision,
                prev.version,
                &prev.value[..]
            ),
            (2, 2, 1, &b"bar"[..])
        );
        let r = call(&node, vec![get("foo")]);
        let g = r.responses[0].get.as_ref().unwrap();
        assert_eq!(&g.value[..], b"bar2");
        let kv = g.kv.as_ref().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        let r = call(&node, vec![del("foo")]);
        assert_eq!(ok(&r).revision, 4);
        assert_eq!(r.responses[0].delete.as_ref().unwrap().deleted, 1);
        let r = call(&node, vec![del("foo")]);
        assert_eq!(ok(&r).revision, 4, "a no-op delete does not bump");
        assert_eq!(r.responses[0].delete.as_ref().unwrap().deleted, 0);
        for i in 0..50 {
            ok(&call(&node, vec![put(&format!("k{i:02}"), "v", false)]));
        }
        let r = call(&node, vec![range("k", "l", true)]);
        assert_eq!(r.responses[0].range.as_ref().unwrap().count, 50);
        assert_eq!(ok(&r).revision, 54);
        // Bad input answers with an error and changes nothing.
        let r = call(&node, vec![put("", "x", false)]);
        assert!(r.header.as_ref().unwrap().error.is_some());
        let mut bad_cf = put("x", "y", false);
        bad_cf.put.as_mut().unwrap().cf = "nope".into();
        assert!(call(&node, vec![bad_cf])
            .header
            .unwrap()
            .error
            .unwrap()
            .message
            .contains("column family"));
        let r = call(&node, vec![put("a", "1", false), get("a")]);
        assert!(
            r.header.unwrap().error.is_some(),
            "mixed commands are refused"
        );
        node.stop();
    }
    // The engine lost its memtable (no flush on this path is guaranteed); raft replays.
    let node = start(dir.path());
    wait_leader(&node);
    let r = call(&node, vec![range("k", "l", false)]);
    assert_eq!(ok(&r).revision, 54, "same revision after restart");
    assert_eq!(r.responses[0].range.as_ref().unwrap().count, 50);
    assert_eq!(
        ok(&call(&node, vec![put("foo", "again", false)])).revision,
        55
    );
    let r = call(&node, vec![get("foo")]);
    let kv = r.responses[0].get.as_ref().unwrap().kv.clone().unwrap();
    assert_eq!(
        (kv.create_revision, kv.version),
        (55, 1),
        "a new generation after the delete"
    );
}

#[test]
fn concurrent_writers_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(start(dir.path()));
    wait_leader(&node);
    eight_writers(&node, |node, t, i| {
        ok(&call(node, vec![put(&format!("t{t}-{i}"), "v", false)]));
    });
    let r = call(&node, vec![range("t", "u", false)]);
    assert_eq!(r.responses[0].range.as_ref().unwrap().count, 400);
    assert_eq!(ok(&r).revision, 401);
}

/// A store loop whose regions' only voter is its own leader waits for each raft-log write
/// instead of running ahead of it (`NodeConfig::lone_leader_wait_entries`: 0, the default,
/// waits always): the same answers, the same etcd metadata; a restart with waiting off
/// (every write in the background) replays the same state and goes on from it.
#[test]
fn a_lone_leader_that_waits_for_its_writes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path().join("engine"), Options::default()).unwrap());
    let node = Arc::new(start_with(
        engine,
        open_log(dir.path()),
        NodeConfig {
            tick_interval: std::time::Duration::from_millis(10),
            lone_leader_wait_entries: 0,
            ..NodeConfig::default()
        },
    ));
    wait_leader(&node);
    eight_writers(&node, |node, t, i| {
        ok(&call(
            node,
            vec![put(&format!("t{t}-{i:02}"), &format!("{i}"), false)],
        ));
        // Reads go on while writes are waited for.
        if i % 10 == 9 {
            let r = call(node, vec![get(&format!("t{t}-{i:02}"))]);
            let g = r.responses[0].get.as_ref().unwrap();
            assert_eq!(g.value, format!("{i}").into_bytes());
        }
    });
    let waited = node
        .status()
        .waited_writes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(waited > 0, "no write was waited for");
    let r = call(&node, vec![range("t", "u", false)]);
    assert_eq!(r.responses[0].range.as_ref().unwrap().count, 400);
    assert_eq!(ok(&r).revision, 401);
    // The writers are gone: this is the last reference, and dropping it stops the node.
    drop(Arc::try_unwrap(node).ok().unwrap());

    let engine = Arc::new(Engine::open(dir.path().join("engine"), Options::default()).unwrap());
    let node = Arc::new(start_with(
        engine,
        open_log(dir.path()),
        NodeConfig {
            lone_leader_wait_entries: u64::MAX,
            ..NodeConfig::default()
        },
    ));
    wait_leader(&node);
    let r = call(&node, vec![range("t", "u", false)]);
    let rr = r.responses[0].range.as_ref().unwrap();
    assert_eq!(rr.count, 400);
    assert_eq!(ok(&r).revision, 401);
    assert!(rr
        .kvs
        .iter()
        .all(|kv| kv.version == 1 && kv.create_revision == kv.mod_revision));
    let waited = |node: &Node| {
        node.status()
            .waited_writes
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = waited(&node);
    eight_writers(&node, |node, t, i| {
        ok(&call(
            node,
            vec![put(&format!("t{t}-{i:02}"), &format!("{i}!"), false)],
        ));
    });
    assert_eq!(waited(&node), before, "a write was waited for");
    let r = call(&node, vec![range("t", "u", false)]);
    let rr = r.responses[0].range.as_ref().unwrap();
    assert_eq!(rr.count, 400);
    assert_eq!(ok(&r).revision, 801);
    assert!(rr.kvs.iter().all(|kv| kv.version == 2));
}

/// The engine loses everything it had not flushed (it has no WAL); the raft log is the WAL,
/// so a restart replays every committed command from the engine's applied index.
#[test]
fn raft_log_replays_what_the_engine_lost() {
    let dir = tempfile::tempdir().unwrap();
    let fs = pontoon_engine::io::FaultFs::new();
    let node = start_on(dir.path(), Arc::new(fs.clone()));
    wait_leader(&node);
    for i in 0..100 {
        ok(&call(
            &node,
            vec![put(&format!("r{i:03}"), &format!("v{i}"), false)],
        ));
    }
    ok(&call(&node, vec![del("r050")]));
    node.stop();
    // Power loss for the engine: its memtable is gone, nothing was flushed.
    let after = fs.crash();
    drop(node);
    let node = start_on(dir.path(), Arc::new(after));
    wait_leader(&node);
    let r = call(&node, vec![range("r", "s", false)]);
    assert_eq!(ok(&r).revision, 102);
    let rr = r.responses[0].range.as_ref().unwrap();
    assert_eq!(rr.count, 99);
    let kv = rr.kvs.iter().find(|kv| kv.key == b"r042").unwrap();
    assert_eq!(
        (
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            &kv.value[..]
        ),
        (44, 44, 1, &b"v42"[..])
    );
}

/// A commit index alone is not written to the raft log (it rides with the next entries,
/// term or vote), so after the last command the persisted hard state lags the log; a
/// restart lifts the commit index to what the engine applied and replays the rest.
#[test]
fn a_lagging_persisted_commit_index_is_lifted_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path().join("engine"), Options::default()).unwrap());
    let log = open_log(dir.path());
    let node = start_over(engine.clone(), log.clone());
    wait_leader(&node);
    for i in 0..50 {
        ok(&call(&node, vec![put(&format!("c{i:02}"), "v", false)]));
    }
    node.stop();
    drop(node);
    // The engine keeps everything it applied; the log's hard state is behind it.
    engine.flush().unwrap();
    let ps = pontoon_server::PeerStorage::open(log.clone(), 1, &[]).unwrap();
    let last = raft::Storage::last_index(&ps).unwrap();
    let commit = ps.hard_state().commit;
    assert!(
        commit < last,
        "the persisted commit {commit} should lag the log's last index {last}"
    );
    drop((ps, engine, log));
    let node = start(dir.path());
    wait_leader(&node);
    let r = call(&node, vec![range("c", "d", false)]);
    assert_eq!(ok(&r).revision, 51);
    assert_eq!(r.responses[0].range.as_ref().unwrap().count, 50);
    let r = call(&node, vec![put("c50", "v", false)]);
    assert_eq!(ok(&r).revision, 52);
}

/// The raft log is compacted once the engine has flushed what it covers, never before:
/// after an engine power loss the restart still finds every entry it must replay.
#[test]
fn raft_log_is_compacted_behind_engine_flushes_only() {
    let dir = tempfile::tempdir().unwrap();
    let fs = pontoon_engine::io::FaultFs::new();
    let opts = Options {
        write_buffer_size: 64 << 10,
        ..Options::default()
    };
    let open = |fs: pontoon_engine::io::FaultFs| {
        let engine = Arc::new(
            Engine::open_with_fs(dir.path().join("engine"), opts.clone(), Arc::new(fs)).unwrap(),
        );
        let log = open_log(dir.path());
        let cfg = NodeConfig {
            compact_log_count: 100,
            compact_check_ticks: 1,
            ..NodeConfig::default()
        };
        (
            Node::start(cfg, engine, log.clone(), Arc::new(NoTransport)).unwrap(),
            log,
        )
    };
    let (node, log) = open(fs.clone());
    wait_leader(&node);
    for i in 0..3000u32 {
        ok(&call(
            &node,
            vec![put(&format!("g{:05}", i % 500), &format!("{i}"), false)],
        ));
    }
    let first = log.first_index(1).unwrap();
    assert!(
        first > 1000,
        "the log was not compacted: first index {first}"
    );
    node.stop();
    // Lose the engine's unflushed tail; the log still holds what replay needs.
    let after = fs.crash();
    drop(node);
    drop(log);
    let (node, _log) = open(after);
    wait_leader(&node);
    let r = call(&node, vec![range("g", "h", false)]);
    assert_eq!(ok(&r).revision, 3001);
    let rr = r.responses[0].range.as_ref().unwrap();
    assert_eq!(rr.count, 500);
    let last = rr.kvs.iter().find(|kv| kv.key == b"g00499").unwrap();
    assert_eq!(last.value, b"2999");
    assert_eq!(last.version, 6);
}
