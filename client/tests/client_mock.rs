//! The async client against an in-process single-region store from before multi-raft
//! (`support/single.rs`): pipelining, out-of-order answers, NotLeader redirection, dead
//! endpoints, timeouts, and the blocking wrapper. Such a store lists no region in its
//! `Status`, so a client asks it once (on its first keyed command) and then sends every
//! command unrouted, as before regions.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pontoon_client::client::{Client, ClientOptions, Error, RangeOptions};
use support::single::{MockConfig, MockServer};

async fn mock(cfg: MockConfig) -> MockServer {
    MockServer::start("127.0.0.1:0", cfg)
        .await
        .expect("mock server binds 127.0.0.1:0")
}

fn opts() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

/// An address nothing listens on.
async fn dead_addr() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

#[tokio::test]
async fn put_get_delete_with_etcd_metadata() {
    let m = mock(MockConfig::default()).await;
    let c = Client::connect(&[m.addr.to_string()], opts())
        .await
        .unwrap();
    assert_eq!(c.cluster_id(), 7);
    let p = c.put(b"foo", b"bar", false).await.unwrap();
    assert_eq!(p.header.revision, 2);
    assert_eq!(p.header.member_id, 1);
    assert!(p.prev_kv.is_none());
    let p = c.put(b"foo", b"bar2", true).await.unwrap();
    assert_eq!(p.header.revision, 3);
    assert_eq!(p.prev_kv.unwrap().value, b"bar");
    let g = c.get(b"foo").await.unwrap();
    assert_eq!(g.count, 1);
    assert_eq!(g.kvs[0].value, b"bar2");
    assert_eq!(
        (
            g.kvs[0].create_revision,
            g.kvs[0].mod_revision,
            g.kvs[0].version
        ),
        (2, 3, 2)
    );
    assert!(c.get(b"nope").await.unwrap().kvs.is_empty());
    c.put(b"fop", b"x", false).await.unwrap();
    let r = c
        .range(
            b"fo",
            RangeOptions {
                range_end: pontoon_client::client::prefix_end(b"fo"),
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (1, true, 2));
    let d = c.delete(b"foo", b"", true).await.unwrap();
    assert_eq!(d.deleted, 1);
    assert_eq!(d.prev_kvs[0].key, b"foo");
    assert_eq!(c.delete(b"foo", b"", false).await.unwrap().deleted, 0);
    let st = c.status().await.unwrap();
    assert_eq!(st.leader, 1);
    assert_eq!(st.header.member_id, 1);
    assert!(c.ping().await.unwrap() < Duration::from_secs(1));
}

#[tokio::test]
async fn pipelines_100_concurrent_requests_on_one_connection() {
    let m = mock(MockConfig::default()).await;
    let c = Client::connect(&[m.addr.to_string()], opts())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            // Varying delays: answers come back in a different order than requests left.
            let key = format!("sleep/{}/k{i}", (i * 37) % 50);
            c.put(key.as_bytes(), format!("v{i}").as_bytes(), false)
                .await
                .unwrap();
            let got = c.get(key.as_bytes()).await.unwrap();
            assert_eq!(got.kvs[0].key, key.as_bytes());
            assert_eq!(got.kvs[0].value, format!("v{i}").as_bytes());
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    // 100 round trips of up to 2 x 49 ms each, done concurrently.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // 200 data commands, and one Status shared by the 100 cold callers.
    assert_eq!(m.status_calls(), 1);
    assert_eq!(m.commands.load(Ordering::Relaxed), 201);
    let all = c
        .range(
            b"sleep/",
            RangeOptions {
                range_end: pontoon_client::client::prefix_end(b"sleep/"),
                count_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.count, 100);
    assert_eq!(all.header.revision, 101);
}

#[tokio::test]
async fn out_of_order_responses_are_matched_by_request_id() {
    let m = mock(MockConfig::default()).await;
    let c = Client::connect(&[m.addr.to_string()], opts())
        .await
        .unwrap();
    let slow = {
        let c = c.clone();
        tokio::spawn(async move {
            let r = c.put(b"sleep/400/slow", b"s", false).await.unwrap();
            (Instant::now(), r)
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fast = c.put(b"fast", b"f", false).await.unwrap();
    let fast_done = Instant::now();
    let (slow_done, slow) = slow.await.unwrap();
    assert!(
        fast_done < slow_done,
        "the later request was answered first"
    );
    // Both executed at once by the mock (the delay is on the answer only).
    assert_eq!(slow.header.revision, 2);
    assert_eq!(fast.header.revision, 3);
    assert_eq!(c.get(b"sleep/400/slow").await.unwrap().kvs[0].value, b"s");
}

#[tokio::test]
async fn not_leader_redirects_to_the_hinted_leader() {
    let leader = mock(MockConfig {
        store_id: 2,
        ..Default::default()
    })
    .await;
    let follower = mock(MockConfig {
        store_id: 1,
        not_leader: Some(2),
        ..Default::default()
    })
    .await;
    let c = Client::connect(
        &[follower.addr.to_string(), leader.addr.to_string()],
        opts(),
    )
    .await
    .unwrap();
    let p = c.put(b"k", b"v", false).await.unwrap();
    assert_eq!(p.header.member_id, 2);
    // One Status (the client looks for regions once; these stores list none), one put.
    assert_eq!(follower.status_calls(), 1);
    assert_eq!(follower.commands.load(Ordering::Relaxed), 2);
    // The client now prefers the leader.
    c.put(b"k", b"v2", false).await.unwrap();
    assert_eq!(follower.commands.load(Ordering::Relaxed), 2);
    assert_eq!(leader.commands.load(Ordering::Relaxed), 3);
    // endpoint status of the follower reports the hinted leader.
    let st = c.endpoint_status(0).await.unwrap();
    assert_eq!((st.header.member_id, st.leader), (1, 2));
}

#[tokio::test]
async fn not_leader_without_hint_tries_the_next_endpoint() {
    let leader = mock(MockConfig {
        store_id: 3,
        ..Default::default()
    })
    .await;
    let follower = mock(MockConfig {
        store_id: 1,
        not_leader: Some(0),
        ..Default::default()
    })
    .await;
    let c = Client::new(
        &[follower.addr.to_string(), leader.addr.to_string()],
        opts(),
    )
    .unwrap();
    assert_eq!(c.put(b"k", b"v", false).await.unwrap().header.member_id, 3);
}

#[tokio::test]
async fn only_followers_gives_not_leader_after_bounded_retries() {
    let f = mock(MockConfig {
        not_leader: Some(0),
        ..Default::default()
    })
    .await;
    let o = ClientOptions {
        max_attempts: 3,
        retry_backoff: Duration::from_millis(10),
        ..opts()
    };
    let c = Client::new(&[f.addr.to_string()], o).unwrap();
    match c.put(b"k", b"v", false).await {
        Err(Error::Region(e)) => assert!(e.not_leader.is_some()),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    // Three attempts, and the one Status of the cold cache.
    assert_eq!(
        f.commands.load(Ordering::Relaxed) - f.status_calls() as u64,
        3
    );
}

#[tokio::test]
async fn dead_endpoint_is_skipped() {
    let live = mock(MockConfig::default()).await;
    let dead = dead_addr().await;
    let c = Client::connect(&[dead.clone(), live.addr.to_string()], opts())
        .await
        .unwrap();
    c.put(b"a", b"1", false).await.unwrap();
    // Lazy client starting on the dead endpoint: the first call fails over.
    let c = Client::new(&[dead.clone(), live.addr.to_string()], opts()).unwrap();
    let start = Instant::now();
    for _ in 0..10 {
        c.get(b"a").await.unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    // Nothing reachable at all: the connection error (not "timed out") once the call's
    // time is up.
    let c = Client::new(&[dead], opts()).unwrap();
    match c.get(b"a").await {
        Err(Error::Io { .. }) => {}
        other => panic!("expected Io, got {other:?}"),
    }
}

#[tokio::test]
async fn silent_store_times_out() {
    let m = mock(MockConfig {
        silent: true,
        ..Default::default()
    })
    .await;
    let o = ClientOptions {
        request_timeout: Duration::from_millis(300),
        // Unrouted: the commands themselves go out at once (no region lookup first).
        region_id: 1,
        ..opts()
    };
    let c = Client::connect(&[m.addr.to_string()], o).await.unwrap();
    let start = Instant::now();
    match c.get(b"k").await {
        Err(Error::Timeout) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // A put that was sent and never answered may have been applied: said so, not hidden
    // behind a plain timeout.
    match c.put(b"k", b"v", false).await {
        Err(Error::Indeterminate(e)) if matches!(*e, Error::Timeout) => {}
        other => panic!("expected Indeterminate(Timeout), got {other:?}"),
    }
}

/// A read that times out on one endpoint is retried on another; a put is not (it may have
/// been applied where it timed out, and a retry could apply it twice): the caller learns
/// that its outcome is unknown.
#[tokio::test]
async fn timed_out_endpoint_fails_over_for_reads_and_for_writes_only_when_asked() {
    let silent = mock(MockConfig {
        silent: true,
        ..Default::default()
    })
    .await;
    let live = mock(MockConfig {
        store_id: 2,
        ..Default::default()
    })
    .await;
    let o = ClientOptions {
        attempt_timeout: Duration::from_millis(200),
        // Unrouted: every command goes to the first endpoint not marked down.
        region_id: 1,
        ..opts()
    };
    let endpoints = [silent.addr.to_string(), live.addr.to_string()];
    let c = Client::connect(&endpoints, o.clone()).await.unwrap();
    let r = c.get(b"k").await.unwrap();
    assert_eq!(r.header.member_id, 2);
    assert_eq!(silent.commands.load(Ordering::SeqCst), 1);

    // A fresh client (the first one skips the silent endpoint for a while) puts.
    let c = Client::connect(&endpoints, o.clone()).await.unwrap();
    let live_before = live.commands.load(Ordering::SeqCst);
    match c.put(b"k", b"v", false).await {
        Err(Error::Indeterminate(e)) if matches!(*e, Error::Timeout) => {}
        other => panic!("expected Indeterminate(Timeout), got {other:?}"),
    }
    assert_eq!(
        silent.commands.load(Ordering::SeqCst),
        2,
        "the put reached the silent store once"
    );
    assert_eq!(
        live.commands.load(Ordering::SeqCst),
        live_before,
        "the put was not retried elsewhere"
    );

    // Asked to, the client retries it there (at the risk of applying it twice).
    let o = ClientOptions {
        retry_sent_writes: true,
        ..o
    };
    let c = Client::connect(&endpoints, o).await.unwrap();
    let p = c.put(b"k", b"v", false).await.unwrap();
    assert_eq!(p.header.member_id, 2);
    assert_eq!(silent.commands.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn reconnects_after_the_store_restarts() {
    let m = mock(MockConfig::default()).await;
    let addr = m.addr;
    let c = Client::connect(&[addr.to_string()], opts()).await.unwrap();
    c.put(b"a", b"1", false).await.unwrap();
    drop(m);
    // Give the client's reader a moment to see the close, then restart on the same port.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _m2 = MockServer::start(&addr.to_string(), MockConfig::default())
        .await
        .expect("rebind the same port");
    let o = c.options().endpoint_backoff;
    assert!(o <= Duration::from_secs(1));
    c.put(b"a", b"2", false).await.unwrap();
}

#[test]
fn blocking_client_works() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let m = rt.block_on(mock(MockConfig::default()));
    let c = pontoon_client::blocking::Client::connect(&[m.addr.to_string()], opts()).unwrap();
    c.put(b"x", b"y", false).unwrap();
    assert_eq!(c.get(b"x").unwrap().kvs[0].value, b"y");
    assert_eq!(c.delete(b"x", b"", false).unwrap().deleted, 1);
    drop(c);
    drop(m);
}

#[tokio::test]
async fn a_call_waits_for_a_restarting_store() {
    let m = mock(MockConfig::default()).await;
    let addr = m.addr.to_string();
    let c = Client::connect(std::slice::from_ref(&addr), opts())
        .await
        .unwrap();
    drop(m);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let restart = {
        let addr = addr.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            MockServer::start(&addr, MockConfig::default())
                .await
                .expect("rebind the same port")
        })
    };
    // Fails to connect a few times, then succeeds within the call's deadline.
    c.put(b"a", b"1", false).await.unwrap();
    drop(restart.await.unwrap());
}

/// Runs `pontoonctl` with `args`; returns (exit success, stdout, stderr).
async fn ctl(args: Vec<String>) -> (bool, String, String) {
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

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn endpoint_status_uses_the_status_admin_command() {
    use pontoon_client::proto::raft_cmdpb::AdminCmdType;
    let m = mock(MockConfig::default()).await;
    let c = Client::new(&[m.addr.to_string()], opts()).unwrap();
    c.put(b"k", b"v", false).await.unwrap();
    let st = c.endpoint_status(0).await.unwrap();
    assert_eq!(
        (
            st.header.member_id,
            st.leader,
            st.raft_term,
            st.raft_index,
            st.raft_applied_index,
            st.raft_committed_index,
            st.db_size,
            st.is_learner,
            st.conf_ver,
        ),
        (1, 1, 2, 12, 11, 12, 20480, false, 1)
    );
    assert_eq!(st.header.cluster_id, 7);
    assert_eq!(st.members.len(), 1);
    // The put looked for regions first (one Status), then endpoint status asked again.
    let sent = m.admin.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|a| a.cmd_type == AdminCmdType::Status as i32 && a.status.is_some()));

    let ep = m.addr.to_string();
    let (ok, out, _) = ctl(args(&["--endpoints", &ep, "endpoint", "status"])).await;
    assert!(ok);
    assert_eq!(
        out,
        format!(
            "{ep}, 1, {}, 20 kB, true, false, 2, 12, 11, \n",
            pontoon_client::output::VERSION
        )
    );
    let (ok, out, _) = ctl(args(&[
        "--endpoints",
        &ep,
        "-w",
        "json",
        "endpoint",
        "status",
    ]))
    .await;
    assert!(ok);
    assert_eq!(
        out,
        format!(
            "[{{\"Endpoint\":\"{ep}\",\"Status\":{{\"header\":{{\"cluster_id\":7,\"member_id\":1,\"revision\":2,\"raft_term\":2}},\"version\":\"{}\",\"dbSize\":20480,\"leader\":1,\"raftIndex\":12,\"raftTerm\":2,\"raftAppliedIndex\":11}}}}]\n",
            pontoon_client::output::VERSION
        )
    );
}

#[tokio::test]
async fn put_reads_its_value_from_stdin_when_not_given() {
    let m = mock(MockConfig::default()).await;
    let ep = m.addr.to_string();
    let run = |stdin: &'static [u8]| {
        let ep = ep.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pontoonctl"))
                .args(["--endpoints", &ep, "put", "k"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("pontoonctl runs");
            child.stdin.take().unwrap().write_all(stdin).unwrap();
            let out = child.wait_with_output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let (ok, out, err) = run(b"bar\n\x00\xff").await.unwrap();
    assert!(ok, "{err}");
    assert_eq!(out, "OK\n");
    // As etcdctl: all of it, trailing newline and any bytes included.
    let c = Client::new(std::slice::from_ref(&ep), opts()).unwrap();
    assert_eq!(c.get(b"k").await.unwrap().kvs[0].value, b"bar\n\x00\xff");
    let (ok, _, err) = run(b"").await.unwrap();
    assert!(!ok);
    assert_eq!(
        err,
        "Error: put command needs 1 argument and input from stdin or 2 arguments\n"
    );
}

#[tokio::test]
async fn endpoint_status_and_member_list_have_etcdctls_tables() {
    // The cells of a table line, trimmed.
    fn cells(line: &str) -> Vec<String> {
        line.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    }
    let m = mock(MockConfig::default()).await;
    let ep = m.addr.to_string();
    let (ok, out, err) = ctl(args(&[
        "--endpoints",
        &ep,
        "-w",
        "table",
        "endpoint",
        "status",
    ]))
    .await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(
        cells(lines[1]),
        [
            "ENDPOINT",
            "ID",
            "VERSION",
            "DB SIZE",
            "IS LEADER",
            "IS LEARNER",
            "RAFT TERM",
            "RAFT INDEX",
            "RAFT APPLIED INDEX",
            "ERRORS"
        ]
    );
    assert_eq!(
        cells(lines[3]),
        [
            ep.as_str(),
            "1",
            pontoon_client::output::VERSION,
            "20 kB",
            "true",
            "false",
            "2",
            "11",
            "10",
            ""
        ]
    );
    let (ok, out, err) = ctl(args(&["--endpoints", &ep, "-w", "table", "member", "list"])).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(
        cells(lines[1]),
        [
            "ID",
            "STATUS",
            "NAME",
            "PEER ADDRS",
            "CLIENT ADDRS",
            "IS LEARNER"
        ]
    );
    assert_eq!(cells(lines[3])[..3], ["1", "started", "1"]);
}

#[tokio::test]
async fn endpoint_health_reads_health_linearizably_from_each_store_itself() {
    use pontoon_client::proto::raft_cmdpb::CmdType;
    let good = mock(MockConfig::default()).await;
    // Answers NotLeader with a hint: the check must not follow it to another store.
    let refusing = mock(MockConfig {
        store_id: 2,
        not_leader: Some(1),
        ..Default::default()
    })
    .await;
    let silent = mock(MockConfig {
        store_id: 3,
        silent: true,
        ..Default::default()
    })
    .await;
    let dead = dead_addr().await;
    let good_ep = good.addr.to_string();

    let (ok, out, err) = ctl(args(&["--endpoints", &good_ep, "endpoint", "health"])).await;
    assert!(ok, "{err}");
    // etcdctl 3.4 writes the verdicts to stderr.
    assert_eq!(out, "");
    let prefix = format!("{good_ep} is healthy: successfully committed proposal: took = ");
    assert!(err.starts_with(&prefix) && err.ends_with("s\n"), "{err}");
    assert_eq!(err.lines().count(), 1);
    let sent = good.requests.lock().unwrap().clone();
    let read = sent
        .iter()
        .flat_map(|c| c.requests.iter())
        .find(|r| r.cmd_type == CmdType::Range as i32)
        .and_then(|r| r.range.clone())
        .expect("a range request reached the store");
    assert_eq!(read.key, b"health");
    assert!(!read.serializable, "the check must go through raft");

    let eps = format!("{good_ep},{},{},{dead}", refusing.addr, silent.addr);
    let (ok, out, err) = ctl(args(&[
        "--endpoints",
        &eps,
        "--command-timeout",
        "1s",
        "-w",
        "json",
        "endpoint",
        "health",
    ]))
    .await;
    assert!(!ok);
    assert_eq!(err, "Error: unhealthy cluster\n");
    // One object per endpoint, in the order given; the healthy one without "error".
    assert!(
        out.starts_with(&format!(
            "[{{\"endpoint\":\"{good_ep}\",\"health\":true,\"took\":\""
        )),
        "{out}"
    );
    assert!(out.ends_with("}]\n"), "{out}");
    assert_eq!(out.matches("\"health\":false").count(), 3, "{out}");
    assert_eq!(out.matches("\"error\":\"").count(), 3, "{out}");
    let at: Vec<usize> = eps
        .split(',')
        .map(|ep| out.find(&format!("\"endpoint\":\"{ep}\"")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{out}");
    // The refusing store was asked itself (its NotLeader is the verdict, not a redirect).
    assert!(refusing.commands.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    let (ok, out, _) = ctl(args(&[
        "--endpoints",
        &good_ep,
        "-w",
        "table",
        "endpoint",
        "health",
    ]))
    .await;
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[1].contains("ENDPOINT") && lines[1].contains("TOOK"),
        "{out}"
    );
    assert!(
        lines[3].starts_with(&format!("| {good_ep} |   true |")),
        "{out}"
    );
}

#[tokio::test]
async fn member_add_follows_not_leader_and_encodes_the_change() {
    use pontoon_client::proto::raft_cmdpb::{AdminCmdType, ConfChangeType};
    let leader = mock(MockConfig {
        store_id: 2,
        ..Default::default()
    })
    .await;
    let follower = mock(MockConfig {
        store_id: 1,
        not_leader: Some(2),
        ..Default::default()
    })
    .await;
    // The follower comes first: the add must be redirected to the leader.
    let c = Client::connect(
        &[follower.addr.to_string(), leader.addr.to_string()],
        opts(),
    )
    .await
    .unwrap();
    let r = c.member_add(4, "10.0.0.4:2380", true).await.unwrap();
    assert_eq!(r.header.member_id, 2);
    assert_eq!(r.conf_ver, 2);
    assert_eq!(
        r.peers.iter().map(|p| p.store_id).collect::<Vec<_>>(),
        vec![2, 4]
    );
    let on_follower = follower.admin.lock().unwrap().clone();
    let on_leader = leader.admin.lock().unwrap().clone();
    assert_eq!((on_follower.len(), on_leader.len()), (1, 1));
    let a = &on_leader[0];
    assert_eq!(a.cmd_type, AdminCmdType::ChangePeer as i32);
    let cp = a.change_peer.clone().unwrap();
    assert_eq!(cp.change_type, ConfChangeType::AddLearnerNode as i32);
    assert_eq!(cp.peer_addr, "10.0.0.4:2380");
    let peer = cp.peer.unwrap();
    assert_eq!((peer.id, peer.store_id), (4, 4));

    let list = c.member_list().await.unwrap();
    assert_eq!(list.members.len(), 2);
    assert!(list.members[1].is_learner);

    // Through pontoonctl, again starting at the follower; the id is given in hex.
    let eps = format!("{},{}", follower.addr, leader.addr);
    let (ok, out, err) = ctl(args(&[
        "--endpoints",
        &eps,
        "member",
        "add",
        "0x1a",
        "--peer-urls",
        "http://10.0.0.26:2380",
    ]))
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "Member               1a added to cluster                7\n"
    );
    let last = leader.admin.lock().unwrap().last().cloned().unwrap();
    let cp = last.change_peer.unwrap();
    assert_eq!(cp.change_type, ConfChangeType::AddNode as i32);
    assert_eq!(cp.peer_addr, "10.0.0.26:2380");
    assert_eq!(cp.peer.unwrap().store_id, 26);

    let lep = leader.addr.to_string();
    let (ok, out, _) = ctl(args(&["--endpoints", &lep, "member", "list"])).await;
    assert!(ok);
    assert_eq!(
        out,
        "2, started, 2, 127.0.0.1:2382, , false\n4, started, 4, 10.0.0.4:2380, , true\n1a, started, 26, 10.0.0.26:2380, , false\n"
    );
}

#[tokio::test]
async fn member_remove_and_move_leader() {
    use pontoon_client::proto::raft_cmdpb::{AdminCmdType, ConfChangeType};
    let m = mock(MockConfig::default()).await;
    let ep = m.addr.to_string();
    let c = Client::new(std::slice::from_ref(&ep), opts()).unwrap();
    c.member_add(3, "h:3", false).await.unwrap();

    // Removing the leader is refused; the store's message is the error.
    let e = c.member_remove(1).await.unwrap_err();
    assert!(e.to_string().contains("move the leader first"), "{e}");
    let (ok, out, err) = ctl(args(&["--endpoints", &ep, "member", "remove", "1"])).await;
    assert!(!ok);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "Error: cannot remove the leader 1: move the leader first\n"
    );

    let (ok, out, err) = ctl(args(&["--endpoints", &ep, "move-leader", "3"])).await;
    assert!(ok, "{err}");
    assert_eq!(out, "Leadership transferred from 1 to 3\n");
    let last = m.admin.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.cmd_type, AdminCmdType::TransferLeader as i32);
    let p = last.transfer_leader.unwrap().peer.unwrap();
    assert_eq!((p.id, p.store_id), (3, 3));
    assert_eq!(c.member_list().await.unwrap().leader, 3);

    let (ok, out, err) = ctl(args(&["--endpoints", &ep, "member", "remove", "1"])).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "Member                1 removed from cluster                7\n"
    );
    let last = m.admin.lock().unwrap().last().cloned().unwrap();
    let cp = last.change_peer.unwrap();
    assert_eq!(cp.change_type, ConfChangeType::RemoveNode as i32);
    assert_eq!(cp.peer_addr, "");
    assert_eq!(cp.peer.unwrap().store_id, 1);

    let (ok, _, err) = ctl(args(&["--endpoints", &ep, "move-leader", "9"])).await;
    assert!(!ok);
    assert_eq!(err, "Error: peer 9 is not a voter\n");
}

/// Bad command lines fail like any other error (etcdctl's way): one `Error: ...` line on
/// stderr, exit code 1; help still prints and succeeds.
#[test]
fn bad_command_lines_are_one_error_line_and_exit_code_1() {
    let run = |list: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pontoonctl"))
            .args(list)
            .output()
            .expect("pontoonctl runs")
    };
    let out = run(&["get"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err,
        "Error: the following required arguments were not provided: <KEY>\n"
    );
    assert!(out.stdout.is_empty());
    let out = run(&["put", "k", "v", "--bogus"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: unexpected argument '--bogus' found\n"
    );
    let out = run(&["get", "k", "-w", "yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Error: ") && err.lines().count() == 1,
        "{err}"
    );
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
}

#[test]
fn blocking_member_calls() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let m = rt.block_on(mock(MockConfig::default()));
    let c = pontoon_client::blocking::Client::connect(&[m.addr.to_string()], opts()).unwrap();
    assert_eq!(c.member_add(2, "h:2", false).unwrap().conf_ver, 2);
    assert_eq!(c.member_list().unwrap().members.len(), 2);
    c.move_leader(2).unwrap();
    assert_eq!(c.endpoint_status(0).unwrap().leader, 2);
    assert_eq!(c.member_remove(1).unwrap().peers.len(), 1);
}
