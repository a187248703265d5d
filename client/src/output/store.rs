//! Output of `store list`, `store delete` and `store up`.
//!
//! Store ids are in hex in the simple and table formats and in the sentences of `store
//! delete` / `store up`, as member and region ids are; decimal JSON numbers / `%d` in the
//! json and fields formats. States are named (`Up`, `Offline`, `Tombstone`) everywhere but
//! in json, which has metapb's enum numbers with `Up` (0) omitted, as it has peer roles.
//! In simple and table, an empty peer address shows the client address (the store uses it
//! for both) and an unknown address is `-`; json has the fields as the store sent them.

use std::fmt::Write as _;

use super::region::{simple_rows, table};
use super::{fields_header, go_quote, json_header, json_string, Format};
use crate::client::StoreList;
use crate::proto::metapb::{self, StoreState};
use crate::proto::pontoonpb::StoreInfo;

/// A store state's name (`Up`, `Offline`, `Tombstone`); `Unknown(n)` for a number this
/// build does not know.
pub fn state_name(state: i32) -> String {
    match StoreState::try_from(state) {
        Ok(s) => s.as_str_name().to_string(),
        Err(_) => format!("Unknown({state})"),
    }
}

const STORE_HEADERS: [&str; 7] = [
    "ID",
    "ADDRESS",
    "PEER_ADDRESS",
    "STATE",
    "ALIVE",
    "REGIONS",
    "LEADERS",
];

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

fn store_cells(info: &StoreInfo) -> Vec<String> {
    let store = info.store.clone().unwrap_or_default();
    let peer_address = if store.peer_address.is_empty() {
        &store.address
    } else {
        &store.peer_address
    };
    vec![
        format!("{:x}", store.id),
        or_dash(&store.address),
        or_dash(peer_address),
        state_name(store.state),
        info.alive.to_string(),
        info.region_count.to_string(),
        info.leader_count.to_string(),
    ]
}

/// Output of `store list`: one store per line (simple: `ID, ADDRESS, PEER_ADDRESS, STATE,
/// ALIVE, REGIONS, LEADERS`), a table with those columns,
/// `{"header":{..},"cluster":{"id":..,"max_peer_count":..},"stores":[{"store":{..},
/// "region_count":..,"leader_count":..,"alive":true}]}` (zero values omitted) or the
/// header, `"MaxPeerCount"` and a fields block per store.
pub fn store_list(format: Format, r: &StoreList) -> Vec<u8> {
    let rows: Vec<Vec<String>> = r.stores.iter().map(store_cells).collect();
    match format {
        Format::Simple => simple_rows(&rows),
        Format::Table => table(&STORE_HEADERS, &rows),
        Format::Json => {
            let mut s = String::from("{");
            json_header(&mut s, &r.header);
            if r.cluster != metapb::Cluster::default() {
                let mut fields = Vec::new();
                if r.cluster.id != 0 {
                    fields.push(format!("\"id\":{}", r.cluster.id));
                }
                if r.cluster.max_peer_count != 0 {
                    fields.push(format!("\"max_peer_count\":{}", r.cluster.max_peer_count));
                }
                let _ = write!(s, ",\"cluster\":{{{}}}", fields.join(","));
            }
            if !r.stores.is_empty() {
                s.push_str(",\"stores\":[");
                for (i, info) in r.stores.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    json_store_info(&mut s, info);
                }
                s.push(']');
            }
            s.push_str("}\n");
            s.into_bytes()
        }
        Format::Fields => {
            let mut s = String::new();
            fields_header(&mut s, &r.header);
            let _ = writeln!(s, "\"MaxPeerCount\" : {}", r.cluster.max_peer_count);
            for info in &r.stores {
                fields_store(&mut s, &info.store.clone().unwrap_or_default());
                let _ = writeln!(s, "\"Alive\" : {}", info.alive);
                let _ = writeln!(s, "\"RegionCount\" : {}", info.region_count);
                let _ = writeln!(s, "\"LeaderCount\" : {}", info.leader_count);
                s.push('\n');
            }
            s.into_bytes()
        }
    }
}

/// Output of `store delete` and `store up`: the store after the change. Simple (and
/// table) is a sentence naming its state, e.g. `Store 4 is Offline: its replicas move to
/// other stores; it becomes Tombstone once it holds none` or `Store 4 is Up`, with the
/// id in hex (`id` when the answer has none); json is `{"store":{..}}`, fields a block.
pub fn store_state(format: Format, id: u64, store: &metapb::Store) -> Vec<u8> {
    let id = if store.id != 0 { store.id } else { id };
    match format {
        Format::Simple | Format::Table => {
            let state = state_name(store.state);
            let why = match StoreState::try_from(store.state) {
                Ok(StoreState::Offline) => {
                    ": its replicas move to other stores; it becomes Tombstone once it holds none"
                }
                Ok(StoreState::Tombstone) => ": it holds no replica and has left the cluster",
                Ok(StoreState::Up) | Err(_) => "",
            };
            format!("Store {id:x} is {state}{why}\n").into_bytes()
        }
        Format::Json => {
            let mut s = String::from("{\"store\":");
            json_store(&mut s, store);
            s.push_str("}\n");
            s.into_bytes()
        }
        Format::Fields => {
            let mut s = String::new();
            fields_store(&mut s, store);
            s.into_bytes()
        }
    }
}

/// Appends one `metapb.Store` object (proto field order, zero values omitted).
fn json_store(s: &mut String, st: &metapb::Store) {
    let mut first = true;
    let mut sep = |s: &mut String| {
        if !first {
            s.push(',');
        }
        first = false;
    };
    s.push('{');
    if st.id != 0 {
        sep(s);
        let _ = write!(s, "\"id\":{}", st.id);
    }
    if !st.address.is_empty() {
        sep(s);
        s.push_str("\"address\":");
        json_string(s, &st.address);
    }
    if st.state != 0 {
        sep(s);
        let _ = write!(s, "\"state\":{}", st.state);
    }
    if !st.version.is_empty() {
        sep(s);
        s.push_str("\"version\":");
        json_string(s, &st.version);
    }
    if !st.peer_address.is_empty() {
        sep(s);
        s.push_str("\"peer_address\":");
        json_string(s, &st.peer_address);
    }
    s.push('}');
}

/// Appends one `pontoonpb.StoreInfo` object (zero values omitted).
fn json_store_info(s: &mut String, info: &StoreInfo) {
    s.push_str("{\"store\":");
    json_store(s, &info.store.clone().unwrap_or_default());
    if info.region_count != 0 {
        let _ = write!(s, ",\"region_count\":{}", info.region_count);
    }
    if info.leader_count != 0 {
        let _ = write!(s, ",\"leader_count\":{}", info.leader_count);
    }
    if info.alive {
        s.push_str(",\"alive\":true");
    }
    s.push('}');
}

fn fields_store(s: &mut String, st: &metapb::Store) {
    let _ = writeln!(s, "\"ID\" : {}", st.id);
    let _ = writeln!(s, "\"Address\" : {}", go_quote(st.address.as_bytes()));
    let _ = writeln!(
        s,
        "\"PeerAddress\" : {}",
        go_quote(st.peer_address.as_bytes())
    );
    let _ = writeln!(s, "\"State\" : {}", state_name(st.state));
    if !st.version.is_empty() {
        let _ = writeln!(s, "\"Version\" : {}", go_quote(st.version.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pontoonpb::ResponseHeader;

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    fn store(id: u64, state: StoreState, peer_address: &str) -> metapb::Store {
        metapb::Store {
            id,
            address: format!("10.0.0.{id}:2479"),
            state: state as i32,
            version: String::new(),
            peer_address: peer_address.to_string(),
        }
    }

    fn list() -> StoreList {
        StoreList {
            header: ResponseHeader {
                cluster_id: 7,
                member_id: 1,
                revision: 4,
                raft_term: 2,
            },
            cluster: metapb::Cluster {
                id: 7,
                max_peer_count: 3,
            },
            stores: vec![
                StoreInfo {
                    store: Some(store(1, StoreState::Up, "10.0.0.1:2380")),
                    region_count: 12,
                    leader_count: 5,
                    alive: true,
                },
                StoreInfo {
                    store: Some(store(26, StoreState::Offline, "")),
                    region_count: 3,
                    leader_count: 0,
                    alive: false,
                },
                StoreInfo {
                    store: Some(metapb::Store {
                        id: 27,
                        state: StoreState::Tombstone as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn store_list_outputs() {
        let l = list();
        assert_eq!(
            text(store_list(Format::Simple, &l)),
            "1, 10.0.0.1:2479, 10.0.0.1:2380, Up, true, 12, 5\n\
             1a, 10.0.0.26:2479, 10.0.0.26:2479, Offline, false, 3, 0\n\
             1b, -, -, Tombstone, false, 0, 0\n"
        );
        assert_eq!(
            text(store_list(Format::Table, &l)),
            "\
+----+----------------+----------------+-----------+-------+---------+---------+
| ID |    ADDRESS     |  PEER_ADDRESS  |   STATE   | ALIVE | REGIONS | LEADERS |
+----+----------------+----------------+-----------+-------+---------+---------+
|  1 |  10.0.0.1:2479 |  10.0.0.1:2380 |        Up |  true |      12 |       5 |
| 1a | 10.0.0.26:2479 | 10.0.0.26:2479 |   Offline | false |       3 |       0 |
| 1b |              - |              - | Tombstone | false |       0 |       0 |
+----+----------------+----------------+-----------+-------+---------+---------+
"
        );
        assert_eq!(
            text(store_list(Format::Json, &l)),
            "{\"header\":{\"cluster_id\":7,\"member_id\":1,\"revision\":4,\"raft_term\":2},\"cluster\":{\"id\":7,\"max_peer_count\":3},\"stores\":[{\"store\":{\"id\":1,\"address\":\"10.0.0.1:2479\",\"peer_address\":\"10.0.0.1:2380\"},\"region_count\":12,\"leader_count\":5,\"alive\":true},{\"store\":{\"id\":26,\"address\":\"10.0.0.26:2479\",\"state\":1},\"region_count\":3},{\"store\":{\"id\":27,\"state\":2}}]}\n"
        );
        let f = text(store_list(Format::Fields, &l));
        assert!(f.starts_with("\"ClusterID\" : 7\n\"MemberID\" : 1\n\"Revision\" : 4\n\"RaftTerm\" : 2\n\"MaxPeerCount\" : 3\n\"ID\" : 1\n\"Address\" : \"10.0.0.1:2479\"\n\"PeerAddress\" : \"10.0.0.1:2380\"\n\"State\" : Up\n\"Alive\" : true\n\"RegionCount\" : 12\n\"LeaderCount\" : 5\n\n\"ID\" : 26\n"), "{f}");
        assert!(f.ends_with("\"ID\" : 27\n\"Address\" : \"\"\n\"PeerAddress\" : \"\"\n\"State\" : Tombstone\n\"Alive\" : false\n\"RegionCount\" : 0\n\"LeaderCount\" : 0\n\n"), "{f}");
    }

    #[test]
    fn an_empty_store_list() {
        let empty = StoreList::default();
        assert_eq!(text(store_list(Format::Simple, &empty)), "");
        assert_eq!(text(store_list(Format::Json, &empty)), "{\"header\":{}}\n");
        assert_eq!(
            text(store_list(Format::Table, &empty)),
            "\
+----+---------+--------------+-------+-------+---------+---------+
| ID | ADDRESS | PEER_ADDRESS | STATE | ALIVE | REGIONS | LEADERS |
+----+---------+--------------+-------+-------+---------+---------+
+----+---------+--------------+-------+-------+---------+---------+
"
        );
    }

    #[test]
    fn store_state_outputs() {
        let offline = store(4, StoreState::Offline, "10.0.0.4:2380");
        assert_eq!(
            text(store_state(Format::Simple, 4, &offline)),
            "Store 4 is Offline: its replicas move to other stores; it becomes Tombstone once it holds none\n"
        );
        let up = store(26, StoreState::Up, "");
        assert_eq!(
            text(store_state(Format::Simple, 26, &up)),
            "Store 1a is Up\n"
        );
        let gone = metapb::Store {
            state: StoreState::Tombstone as i32,
            ..Default::default()
        };
        // Without an id in the answer, the one asked for is printed.
        assert_eq!(
            text(store_state(Format::Simple, 0xab, &gone)),
            "Store ab is Tombstone: it holds no replica and has left the cluster\n"
        );
        assert_eq!(
            text(store_state(Format::Json, 4, &offline)),
            "{\"store\":{\"id\":4,\"address\":\"10.0.0.4:2479\",\"state\":1,\"peer_address\":\"10.0.0.4:2380\"}}\n"
        );
        assert_eq!(
            text(store_state(Format::Json, 26, &up)),
            "{\"store\":{\"id\":26,\"address\":\"10.0.0.26:2479\"}}\n"
        );
        assert_eq!(
            text(store_state(Format::Fields, 4, &offline)),
            "\"ID\" : 4\n\"Address\" : \"10.0.0.4:2479\"\n\"PeerAddress\" : \"10.0.0.4:2380\"\n\"State\" : Offline\n"
        );
        assert_eq!(state_name(9), "Unknown(9)");
    }
}
