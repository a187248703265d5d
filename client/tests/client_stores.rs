//! Store commands against a mock cluster (`support/cluster.rs`): four stores started in
//! the order 4, 2, 3, 1 (the endpoints' order, and the metadata's: not sorted by id),
//! region `["", "m")` on stores 1, 2, 3 led by store 1 (it keeps the cluster metadata)
//! and region `["m", "")` on stores 2, 3, 4 led by store 4; `max_peer_count` 3.

mod support;

use std::time::Duration;

use pontoon_client::client::{Client, ClientOptions, Error};
use pontoon_client::proto::metapb::StoreState;
use pontoon_client::proto::raft_cmdpb::AdminCmdType;
use support::cluster::{Logged, MockCluster, RegionSpec};
use support::single::{MockConfig, MockServer};

async fn four_stores() -> MockCluster {
    MockCluster::start(
        &[4, 2, 3, 1],
        &[
            RegionSpec {
                start: b"",
                end: b"m",
                stores: &[1, 2, 3],
                leader: 1,
            },
            RegionSpec {
                start: b"m",
                end: b"",
                stores: &[2, 3, 4],
                leader: 4,
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

/// `(store, what it answered)` for the store commands logged.
fn store_commands(log: &[Logged]) -> Vec<(u64, &'static str)> {
    log.iter()
        .filter(|l| {
            matches!(
                l.admin_type(),
                Some(AdminCmdType::StoreList | AdminCmdType::SetStoreState)
            )
        })
        .map(|l| {
            let what = match &l.error {
                None => "ok",
                Some(e) if e.not_leader.is_some() => "not_leader",
                Some(e) if e.region_not_found.is_some() => "region_not_found",
                Some(_) => "other",
            };
            (l.store, what)
        })
        .collect()
}

fn state_of(m: &MockCluster, id: u64) -> i32 {
    m.with(|s| s.store_mut(id).state)
}

#[tokio::test]
async fn store_list_is_answered_by_the_preferred_store_and_sorted() {
    let mut m = four_stores().await;
    m.stop(3);
    let c = client(&m);
    let list = c.store_list().await.unwrap();
    assert_eq!(list.header.member_id, 4);
    assert_eq!(list.header.cluster_id, 7);
    assert_eq!((list.cluster.id, list.cluster.max_peer_count), (7, 3));
    // id address peer_address state regions leaders alive
    let seen: Vec<(u64, String, String, i32, u64, u64, bool)> = list
        .stores
        .iter()
        .map(|i| {
            let s = i.store.clone().unwrap();
            (
                s.id,
                s.address,
                s.peer_address,
                s.state,
                i.region_count,
                i.leader_count,
                i.alive,
            )
        })
        .collect();
    let addr = |id: u64| {
        m.stores
            .iter()
            .find(|(s, _)| *s == id)
            .unwrap()
            .1
            .to_string()
    };
    let peer = |id: u64| format!("10.0.0.{id}:2380");
    assert_eq!(
        seen,
        vec![
            (1, addr(1), peer(1), 0, 1, 1, true),
            (2, addr(2), peer(2), 0, 2, 0, true),
            (3, addr(3), peer(3), 0, 2, 0, false),
            (4, addr(4), peer(4), 0, 1, 1, true),
        ]
    );
    // One command, unrouted, to the first endpoint.
    let log = m.log();
    assert_eq!(store_commands(&log), [(4, "ok")]);
    let h = log[0].req.header.clone().unwrap();
    assert_eq!((h.region_id, h.region_epoch, h.peer), (0, None, None));
    assert!(log[0]
        .req
        .admin_request
        .as_ref()
        .unwrap()
        .store_list
        .is_some());
}

#[tokio::test]
async fn store_list_asks_each_store_once_while_they_know_no_metadata() {
    let m = four_stores().await;
    m.with(|s| s.no_meta.extend([4, 2]));
    let c = client(&m);
    let list = c.store_list().await.unwrap();
    assert_eq!(list.header.member_id, 3);
    assert_eq!(list.stores.len(), 4);
    assert_eq!(
        store_commands(&m.log()),
        [(4, "other"), (2, "other"), (3, "ok")]
    );

    // No store can answer: each is asked once and the last one's message is the error.
    m.clear_log();
    m.with(|s| s.no_meta.extend([1, 3]));
    match c.store_list().await {
        Err(e @ Error::Region(_)) => {
            assert!(
                e.to_string().contains("knows no cluster metadata yet"),
                "{e}"
            )
        }
        other => panic!("expected a region error, got {other:?}"),
    }
    let mut asked: Vec<u64> = store_commands(&m.log()).iter().map(|c| c.0).collect();
    asked.sort_unstable();
    assert_eq!(asked, [1, 2, 3, 4]);
}

#[tokio::test]
async fn store_list_of_a_store_without_store_commands_is_an_error() {
    // A store from before the cluster metadata refuses the command it does not know.
    let old = MockServer::start("127.0.0.1:0", MockConfig::default())
        .await
        .unwrap();
    let c = Client::new(&[old.addr.to_string()], opts()).unwrap();
    match c.store_list().await {
        Err(e @ Error::Region(_)) => assert_eq!(e.to_string(), "unsupported admin command"),
        other => panic!("expected a region error, got {other:?}"),
    }
    let sent = old.admin.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].cmd_type, AdminCmdType::StoreList as i32);
}

#[tokio::test]
async fn store_delete_and_up_go_to_region_1s_leader() {
    let m = four_stores().await;
    let c = client(&m);
    // Store 4 holds no peer of region 1, store 2 is a follower: on to store 1.
    let st = c.store_delete(3).await.unwrap();
    assert_eq!((st.id, st.state), (3, StoreState::Offline as i32));
    assert_eq!(st.peer_address, "10.0.0.3:2380");
    assert_eq!(state_of(&m, 3), StoreState::Offline as i32);
    let log = m.log();
    assert_eq!(
        store_commands(&log),
        [(4, "region_not_found"), (2, "not_leader"), (1, "ok")]
    );
    let sent = log
        .iter()
        .rfind(|l| l.admin_type() == Some(AdminCmdType::SetStoreState))
        .unwrap();
    assert_eq!(sent.region_id(), 0);
    let body = sent
        .req
        .admin_request
        .as_ref()
        .unwrap()
        .set_store_state
        .unwrap();
    assert_eq!((body.store_id, body.state), (3, StoreState::Offline as i32));

    // The leader's endpoint is known now: the next change goes straight there.
    m.clear_log();
    let st = c.store_set_up(3).await.unwrap();
    assert_eq!((st.id, st.state), (3, StoreState::Up as i32));
    assert_eq!(store_commands(&m.log()), [(1, "ok")]);
    let list = c.store_list().await.unwrap();
    assert!(list
        .stores
        .iter()
        .all(|i| i.store.as_ref().unwrap().state == StoreState::Up as i32));
}

#[tokio::test]
async fn store_state_refusals_are_region_errors() {
    let m = four_stores().await;
    let c = client(&m);
    let refused = |r: Result<_, Error>| match r {
        Err(e @ Error::Region(_)) => e.to_string(),
        other => panic!("expected a region error, got {other:?}"),
    };
    assert_eq!(refused(c.store_delete(9).await), "store 9 not found");
    c.store_delete(4).await.unwrap();
    // Three Up stores are left, as many as each region needs: none more can go.
    assert_eq!(
        refused(c.store_delete(2).await),
        "cannot take store 2 offline: 2 Up stores would remain, fewer than max_peer_count 3"
    );
    assert_eq!(state_of(&m, 2), StoreState::Up as i32);
    m.with(|s| s.store_mut(4).state = StoreState::Tombstone as i32);
    assert_eq!(refused(c.store_set_up(4).await), "store 4 is Tombstone");
    assert_eq!(refused(c.store_delete(4).await), "store 4 is Tombstone");
    // Each refusal was the leader's answer, given once (no retry).
    let log = m.log();
    let refusals = log
        .iter()
        .filter(|l| l.store == 1 && l.error.as_ref().is_some_and(|e| !e.message.is_empty()))
        .filter(|l| l.admin_type() == Some(AdminCmdType::SetStoreState))
        .count();
    assert_eq!(refusals, 4);
}

#[tokio::test]
async fn an_explicit_region_id_leaves_store_commands_at_region_0() {
    let m = four_stores().await;
    let c = Client::new(
        &m.endpoints(),
        ClientOptions {
            region_id: 2,
            ..opts()
        },
    )
    .unwrap();
    c.store_delete(1).await.unwrap();
    c.store_list().await.unwrap();
    let log = m.log();
    assert!(!log.is_empty());
    assert!(log.iter().all(|l| l.region_id() == 0), "{log:?}");
}

#[test]
fn blocking_store_calls() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let m = rt.block_on(four_stores());
    let c = pontoon_client::blocking::Client::connect(&m.endpoints(), opts()).unwrap();
    let ids: Vec<u64> = c
        .store_list()
        .unwrap()
        .stores
        .iter()
        .map(|i| i.store.as_ref().unwrap().id)
        .collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(c.store_delete(2).unwrap().state, StoreState::Offline as i32);
    assert_eq!(c.store_set_up(2).unwrap().state, StoreState::Up as i32);
    assert!(matches!(c.store_set_up(8), Err(Error::Region(_))));
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
async fn pontoonctl_store_list_delete_and_up() {
    let m = four_stores().await;
    let eps = m.endpoints().join(",");
    let addr = |id: u64| {
        m.stores
            .iter()
            .find(|(s, _)| *s == id)
            .unwrap()
            .1
            .to_string()
    };

    let (ok, out, err) = ctl(&["--endpoints", &eps, "store", "delete", "3"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "Store 3 is Offline: its replicas move to other stores; it becomes Tombstone once it holds none\n"
    );

    let (ok, out, err) = ctl(&["--endpoints", &eps, "store", "list"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!(
            "1, {}, 10.0.0.1:2380, Up, true, 1, 1\n\
             2, {}, 10.0.0.2:2380, Up, true, 2, 0\n\
             3, {}, 10.0.0.3:2380, Offline, true, 2, 0\n\
             4, {}, 10.0.0.4:2380, Up, true, 1, 1\n",
            addr(1),
            addr(2),
            addr(3),
            addr(4)
        )
    );

    let (ok, out, err) = ctl(&["--endpoints", &eps, "-w", "table", "store", "list"]).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    assert!(lines[1].starts_with("| ID |") && lines[1].ends_with("| LEADERS |"));
    assert!(
        lines[5].contains("| 10.0.0.3:2380 | Offline |  true |       2 |       0 |"),
        "{out}"
    );

    let (ok, out, err) = ctl(&["--endpoints", &eps, "-w", "json", "store", "list"]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("{{\"header\":{{\"cluster_id\":7,\"member_id\":4,\"revision\":1,\"raft_term\":2}},\"cluster\":{{\"id\":7,\"max_peer_count\":3}},\"stores\":[{{\"store\":{{\"id\":1,\"address\":\"{}\",\"peer_address\":\"10.0.0.1:2380\"}},\"region_count\":1,\"leader_count\":1,\"alive\":true}},", addr(1))), "{out}");
    assert!(out.contains("{\"store\":{\"id\":3,"));
    assert!(out.contains(",\"state\":1,\"peer_address\":\"10.0.0.3:2380\"},"));

    let (ok, out, err) = ctl(&["--endpoints", &eps, "-w", "fields", "store", "list"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("\"MaxPeerCount\" : 3\n\"ID\" : 1\n"), "{out}");
    assert!(out.contains("\"PeerAddress\" : \"10.0.0.3:2380\"\n\"State\" : Offline\n"));

    // Ids as member ids: hex with 0x or a hex letter.
    let (ok, out, err) = ctl(&["--endpoints", &eps, "store", "up", "0x3"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "Store 3 is Up\n");
    assert_eq!(state_of(&m, 3), StoreState::Up as i32);
    let (ok, out, err) = ctl(&["--endpoints", &eps, "-w", "json", "store", "up", "3"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!(
            "{{\"store\":{{\"id\":3,\"address\":\"{}\",\"peer_address\":\"10.0.0.3:2380\"}}}}\n",
            addr(3)
        )
    );

    let (ok, out, err) = ctl(&["--endpoints", &eps, "store", "delete", "9"]).await;
    assert!(!ok);
    assert_eq!(out, "");
    assert_eq!(err, "Error: store 9 not found\n");
    let (ok, _, err) = ctl(&["--endpoints", &eps, "store", "delete", "0"]).await;
    assert!(!ok);
    assert!(err.contains("0 is not a member id"), "{err}");
    let (ok, _, err) = ctl(&["--endpoints", &eps, "-w", "table", "store", "up", "3"]).await;
    assert!(!ok);
    assert_eq!(
        err,
        "Error: table not supported as output format for this command (only endpoint status and health, member list, region and store list)\n"
    );
}
