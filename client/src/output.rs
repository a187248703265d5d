//! etcdctl 3.4's output formats (`-w simple|json|fields`, and `table` for some commands),
//! as pure functions returning the bytes to print. The exact shapes are pinned in `shared/ETCD_SEMANTICS.md` §3 and by the
//! tests below:
//!
//! - **json**: one line, no spaces, snake_case proto names, zero values omitted (Go's
//!   `omitempty`), 64-bit integers as JSON numbers, keys and values in standard base64.
//! - **simple**: `key\nvalue\n` per pair for `get`, `OK` for `put`, the count for `del`
//!   (raw bytes, as etcdctl prints them).
//! - **fields**: `"Name" : value` lines, integers as `%d`, bytes as Go `%q`.
//! - **table**: etcdctl's boxed tables (headers centred, cells right-aligned); etcdctl's
//!   ([`endpoint_status`], [`endpoint_health`], [`member_list`]) and Pontoon's
//!   ([`region_list`], [`region_split`], [`store_list`]) have one, the others print their
//!   simple format for it (pontoonctl refuses `-w table` for them, as etcdctl does).

use std::fmt::Write as _;
use std::str::FromStr;

use base64::Engine as _;

use crate::client::{
    DeleteResult, EndpointStatus, MemberChange, MemberList, PutResult, RangeResult,
};

mod region;
mod store;

use crate::proto::metapb::PeerRole;
use crate::proto::pontoonpb::{KeyValue, Member, ResponseHeader};
pub use region::{display_key, region_list, region_split};
pub use store::{state_name, store_list, store_state};

/// An output format (`-w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// etcdctl's default.
    #[default]
    Simple,
    /// One JSON object per line.
    Json,
    /// `"Name" : value` lines.
    Fields,
    /// A boxed table (some commands only; see the module documentation).
    Table,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "simple" => Ok(Format::Simple),
            "json" => Ok(Format::Json),
            "fields" => Ok(Format::Fields),
            "table" => Ok(Format::Table),
            other => Err(format!("{other} not supported as output format")),
        }
    }
}

/// Version string reported by `endpoint status` (the client's; stores do not report one).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Output of `put`.
pub fn put(format: Format, r: &PutResult) -> Vec<u8> {
    match format {
        Format::Simple | Format::Table => {
            let mut out = b"OK\n".to_vec();
            if let Some(kv) = &r.prev_kv {
                simple_kv(&mut out, kv);
            }
            out
        }
        Format::Json => {
            let mut s = String::from("{");
            json_header(&mut s, &r.header);
            if let Some(kv) = &r.prev_kv {
                s.push_str(",\"prev_kv\":");
                json_kv(&mut s, kv);
            }
            s.push_str("}\n");
            s.into_bytes()
        }
        Format::Fields => {
            let mut s = String::new();
            fields_header(&mut s, &r.header);
            if let Some(kv) = &r.prev_kv {
                fields_kv(&mut s, "Prev", kv);
            }
            s.into_bytes()
        }
    }
}

/// Output of `get`. With `count_only`, the simple format prints the count alone (etcdctl
/// 3.5 refuses `--count-only` outside `-w fields`; printing the count is more useful).
pub fn get(format: Format, r: &RangeResult, count_only: bool) -> Vec<u8> {
    match format {
        Format::Simple | Format::Table => {
            let mut out = Vec::new();
            if count_only {
                out.extend_from_slice(format!("{}\n", r.count).as_bytes());
            }
            for kv in &r.kvs {
                simple_kv(&mut out, kv);
            }
            out
        }
        Format::Json => {
            let mut s = String::from("{");
            json_header(&mut s, &r.header);
            if !r.kvs.is_empty() {
                s.push_str(",\"kvs\":[");
                for (i, kv) in r.kvs.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    json_kv(&mut s, kv);
                }
                s.push(']');
            }
            if r.more {
                s.push_str(",\"more\":true");
            }
            if r.count != 0 {
                let _ = write!(s, ",\"count\":{}", r.count);
            }
            s.push_str("}\n");
            s.into_bytes()
        }
        Format::Fields => {
            let mut s = String::new();
            fields_header(&mut s, &r.header);
            for kv in &r.kvs {
                fields_kv(&mut s, "", kv);
            }
            let _ = writeln!(s, "\"More\" : {}", r.more);
            let _ = writeln!(s, "\"Count\" : {}", r.count);
            s.into_bytes()
        }
    }
}

/// Output of `del`.
pub fn del(format: Format, r: &DeleteResult) -> Vec<u8> {
    match format {
        Format::Simple | Format::Table => {
            let mut out = format!("{}\n", r.deleted).into_bytes();
            for kv in &r.prev_kvs {
                simple_kv(&mut out, kv);
            }
            out
        }
        Format::Json => {
            let mut s = String::from("{");
            json_header(&mut s, &r.header);
            if r.deleted != 0 {
                let _ = write!(s, ",\"deleted\":{}", r.deleted);
            }
            if !r.prev_kvs.is_empty() {
                s.push_str(",\"prev_kvs\":[");
                for (i, kv) in r.prev_kvs.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    json_kv(&mut s, kv);
                }
                s.push(']');
            }
            s.push_str("}\n");
            s.into_bytes()
        }
        Format::Fields => {
            let mut s = String::new();
            fields_header(&mut s, &r.header);
            let _ = writeln!(s, "\"Deleted\" : {}", r.deleted);
            for kv in &r.prev_kvs {
                fields_kv(&mut s, "Prev", kv);
            }
            s.into_bytes()
        }
    }
}

/// etcdctl 3.4's `endpoint status -w table` headers.
const ENDPOINT_STATUS_HEADERS: [&str; 10] = [
    "ENDPOINT",
    "ID",
    "VERSION",
    "DB SIZE",
    "IS LEADER",
    "IS LEARNER",
    "RAFT TERM",
    "RAFT INDEX",
    "RAFT APPLIED INDEX",
    "ERRORS",
];

/// Output of `endpoint status` (etcdctl 3.4's columns: endpoint, id in hex, version, db size
/// humanized, is leader, is learner, raft term, raft index, raft applied index, errors),
/// comma-separated per endpoint (simple) or as etcdctl's table.
/// The version is the client's: stores do not report one.
pub fn endpoint_status(format: Format, list: &[EndpointStatus]) -> Vec<u8> {
    let rows = || list.iter().map(endpoint_status_row).collect::<Vec<_>>();
    let mut s = String::new();
    match format {
        Format::Simple => return region::simple_rows(&rows()),
        Format::Table => return region::table(&ENDPOINT_STATUS_HEADERS, &rows()),
        Format::Json => {
            s.push('[');
            for (i, st) in list.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str("{\"Endpoint\":");
                json_string(&mut s, &st.endpoint);
                s.push_str(",\"Status\":{");
                json_header(&mut s, &st.header);
                s.push_str(",\"version\":");
                json_string(&mut s, VERSION);
                // etcd's StatusResponse field order, zero values omitted (Go omitempty).
                if st.db_size != 0 {
                    let _ = write!(s, ",\"dbSize\":{}", st.db_size);
                }
                if st.leader != 0 {
                    let _ = write!(s, ",\"leader\":{}", st.leader);
                }
                if st.raft_index != 0 {
                    let _ = write!(s, ",\"raftIndex\":{}", st.raft_index);
                }
                if st.raft_term != 0 {
                    let _ = write!(s, ",\"raftTerm\":{}", st.raft_term);
                }
                if st.raft_applied_index != 0 {
                    let _ = write!(s, ",\"raftAppliedIndex\":{}", st.raft_applied_index);
                }
                if st.is_learner {
                    s.push_str(",\"isLearner\":true");
                }
                // Pontoon's additions.
                if st.regions != 0 {
                    let _ = write!(s, ",\"regions\":{}", st.regions);
                }
                if st.hibernating_regions != 0 {
                    let _ = write!(s, ",\"hibernatingRegions\":{}", st.hibernating_regions);
                }
                s.push_str("}}");
            }
            s.push_str("]\n");
        }
        Format::Fields => {
            for st in list {
                fields_header(&mut s, &st.header);
                let _ = writeln!(s, "\"Version\" : {}", go_quote(VERSION.as_bytes()));
                let _ = writeln!(s, "\"DBSize\" : {}", st.db_size);
                let _ = writeln!(s, "\"Leader\" : {}", st.leader);
                let _ = writeln!(s, "\"IsLearner\" : {}", st.is_learner);
                let _ = writeln!(s, "\"RaftIndex\" : {}", st.raft_index);
                let _ = writeln!(s, "\"RaftTerm\" : {}", st.raft_term);
                let _ = writeln!(s, "\"RaftAppliedIndex\" : {}", st.raft_applied_index);
                let _ = writeln!(s, "\"Errors\" : []");
                let _ = writeln!(s, "\"Endpoint\" : {}", go_quote(st.endpoint.as_bytes()));
                s.push('\n');
            }
        }
    }
    s.into_bytes()
}

/// One endpoint's result of `endpoint health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    /// The endpoint as given (`host:port`).
    pub endpoint: String,
    /// The check succeeded.
    pub health: bool,
    /// How long the check took, in Go's `time.Duration` notation (see [`go_duration`]);
    /// empty when it never started (no connection).
    pub took: String,
    /// Why the endpoint is unhealthy (empty when healthy).
    pub error: String,
}

/// etcdctl 3.4's `endpoint health -w table` headers.
const ENDPOINT_HEALTH_HEADERS: [&str; 4] = ["ENDPOINT", "HEALTH", "TOOK", "ERROR"];

/// Output of `endpoint health` as `(stdout, stderr)`. Simple writes etcdctl 3.4's
/// sentences to stderr only (`127.0.0.1:2479 is healthy: successfully committed proposal:
/// took = 1.2ms`, `... is unhealthy: failed to commit proposal: ERROR`); json is
/// `[{"endpoint":..,"health":true,"took":".."}]` (`"error"` when there is one), fields a
/// block per endpoint, table the four columns.
pub fn endpoint_health(format: Format, list: &[EndpointHealth]) -> (Vec<u8>, Vec<u8>) {
    let mut s = String::new();
    match format {
        Format::Simple => {
            for h in list {
                if h.error.is_empty() {
                    let _ = writeln!(
                        s,
                        "{} is healthy: successfully committed proposal: took = {}",
                        h.endpoint, h.took
                    );
                } else {
                    let _ = writeln!(
                        s,
                        "{} is unhealthy: failed to commit proposal: {}",
                        h.endpoint, h.error
                    );
                }
            }
            return (Vec::new(), s.into_bytes());
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|h| {
                    vec![
                        h.endpoint.clone(),
                        h.health.to_string(),
                        h.took.clone(),
                        h.error.clone(),
                    ]
                })
                .collect();
            return (region::table(&ENDPOINT_HEALTH_HEADERS, &rows), Vec::new());
        }
        Format::Json => {
            s.push('[');
            for (i, h) in list.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str("{\"endpoint\":");
                json_string(&mut s, &h.endpoint);
                let _ = write!(s, ",\"health\":{},\"took\":", h.health);
                json_string(&mut s, &h.took);
                if !h.error.is_empty() {
                    s.push_str(",\"error\":");
                    json_string(&mut s, &h.error);
                }
                s.push('}');
            }
            s.push_str("]\n");
        }
        Format::Fields => {
            for h in list {
                let _ = writeln!(s, "\"Endpoint\" : {}", go_quote(h.endpoint.as_bytes()));
                let _ = writeln!(s, "\"Health\" : {}", h.health);
                let _ = writeln!(s, "\"Took\" : {}", h.took);
                let _ = writeln!(s, "\"Error\" : {}", h.error);
                s.push('\n');
            }
        }
    }
    (s.into_bytes(), Vec::new())
}

/// Go's `time.Duration.String()`: `0s`, `850ns`, `12.5µs`, `1.939123ms`, `2.5s`, `1m30s`,
/// `2h0m0.5s` (exact digits, trailing zeros dropped).
pub fn go_duration(d: std::time::Duration) -> String {
    let n = d.as_nanos();
    if n == 0 {
        return "0s".into();
    }
    // `whole.frac` of `n` in units of `unit` nanoseconds, `digits` fraction digits.
    let fixed = |n: u128, unit: u128, digits: usize| {
        let frac = format!("{:0digits$}", n % unit);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            format!("{}", n / unit)
        } else {
            format!("{}.{frac}", n / unit)
        }
    };
    if n < 1_000 {
        return format!("{n}ns");
    }
    if n < 1_000_000 {
        return format!("{}µs", fixed(n, 1_000, 3));
    }
    if n < 1_000_000_000 {
        return format!("{}ms", fixed(n, 1_000_000, 6));
    }
    let secs = fixed(n % 60_000_000_000, 1_000_000_000, 9);
    let mins = n / 60_000_000_000;
    match (mins / 60, mins % 60) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// One endpoint's cells of `endpoint status` (simple and table).
fn endpoint_status_row(st: &EndpointStatus) -> Vec<String> {
    vec![
        st.endpoint.clone(),
        format!("{:x}", st.header.member_id),
        VERSION.to_string(),
        humanize_bytes(st.db_size),
        is_leader(st).to_string(),
        st.is_learner.to_string(),
        st.raft_term.to_string(),
        st.raft_index.to_string(),
        st.raft_applied_index.to_string(),
        // Errors: a store that did not answer is reported on stderr instead.
        String::new(),
    ]
}

fn is_leader(st: &EndpointStatus) -> bool {
    st.leader != 0 && st.leader == st.header.member_id
}

/// go-humanize's `Bytes` (SI units, as etcdctl prints db sizes): `0 B`, `9 B`, `20 kB`,
/// `1.2 MB`; one decimal below 10 units, none above.
pub fn humanize_bytes(n: i64) -> String {
    const SIZES: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let n = n.max(0) as u64;
    if n < 10 {
        return format!("{n} B");
    }
    let f = n as f64;
    let e = (f.ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(SIZES.len() - 1);
    let suffix = SIZES.get(e).copied().unwrap_or("EB");
    let val = (f / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// etcdctl 3.4's `member list -w table` headers.
const MEMBER_LIST_HEADERS: [&str; 6] = [
    "ID",
    "STATUS",
    "NAME",
    "PEER ADDRS",
    "CLIENT ADDRS",
    "IS LEARNER",
];

/// Output of `member list` (simple: `ID, STATUS, NAME, PEER ADDRS, CLIENT ADDRS, IS LEARNER`
/// per member, or etcdctl's table with those columns). Pontoon members have no name and no
/// client address: the name column shows the store id in decimal and the client addresses
/// are left empty.
pub fn member_list(format: Format, r: &MemberList) -> Vec<u8> {
    let rows = || r.members.iter().map(member_row).collect::<Vec<_>>();
    let mut s = String::new();
    match format {
        Format::Simple => return region::simple_rows(&rows()),
        Format::Table => return region::table(&MEMBER_LIST_HEADERS, &rows()),
        Format::Json => {
            s.push('{');
            json_header(&mut s, &r.header);
            if !r.members.is_empty() {
                s.push_str(",\"members\":[");
                for (i, m) in r.members.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    json_member(&mut s, m);
                }
                s.push(']');
            }
            s.push_str("}\n");
        }
        Format::Fields => {
            fields_header(&mut s, &r.header);
            for m in &r.members {
                let _ = writeln!(s, "\"ID\" : {}", m.id);
                let _ = writeln!(s, "\"Name\" : \"{}\"", m.id);
                if !m.peer_addr.is_empty() {
                    let _ = writeln!(s, "\"PeerURL\" : {}", go_quote(m.peer_addr.as_bytes()));
                }
                let _ = writeln!(s, "\"IsLearner\" : {}", m.is_learner);
                s.push('\n');
            }
        }
    }
    s.into_bytes()
}

/// One member's cells of `member list` (simple and table).
fn member_row(m: &Member) -> Vec<String> {
    vec![
        format!("{:x}", m.id),
        "started".to_string(),
        m.id.to_string(),
        m.peer_addr.clone(),
        String::new(),
        m.is_learner.to_string(),
    ]
}

/// Appends etcd's `Member` JSON object (`ID`, `name`, `peerURLs`, `isLearner`).
fn json_member(s: &mut String, m: &Member) {
    let _ = write!(s, "{{\"ID\":{},\"name\":\"{}\"", m.id, m.id);
    if !m.peer_addr.is_empty() {
        s.push_str(",\"peerURLs\":[");
        json_string(s, &m.peer_addr);
        s.push(']');
    }
    if m.is_learner {
        s.push_str(",\"isLearner\":true");
    }
    s.push('}');
}

/// The cluster id to print: the response header's, else the one learnt at the handshake.
fn cluster_of(h: &ResponseHeader, fallback: u64) -> u64 {
    if h.cluster_id != 0 {
        h.cluster_id
    } else {
        fallback
    }
}

/// Output of `member add` (etcdctl's `%16x`, so small ids are space-padded). The
/// `ETCD_NAME=...` block etcdctl prints after it is left out: Pontoon stores are not
/// configured through those variables.
pub fn member_add(
    format: Format,
    id: u64,
    peer_addr: &str,
    learner: bool,
    cluster_id: u64,
    r: &MemberChange,
) -> Vec<u8> {
    let cluster = cluster_of(&r.header, cluster_id);
    match format {
        Format::Simple | Format::Table => {
            let as_learner = if learner { " as learner " } else { " " };
            format!("Member {id:16x} added{as_learner}to cluster {cluster:16x}\n").into_bytes()
        }
        Format::Json => {
            let mut s = String::from("{");
            json_header(&mut s, &r.header);
            s.push_str(",\"member\":");
            json_member(
                &mut s,
                &Member {
                    id,
                    peer_addr: peer_addr.to_string(),
                    is_learner: learner,
                },
            );
            json_peers(&mut s, r);
            s.push_str("}\n");
            s.into_bytes()
        }
        Format::Fields => {
            let mut s = String::new();
            fields_header(&mut s, &r.header);
            let _ = writeln!(s, "\"ID\" : {id}");
            let _ = writeln!(s, "\"PeerURL\" : {}", go_quote(peer_addr.as_bytes()));
            let _ = writeln!(s, "\"IsLearner\" : {learner}");
            s.into_bytes()
        }
    }
}

/// Output of `member remove`.
pub fn member_remove(format: Format, id: u64, cluster_id: u64, r: &MemberChange) -> Vec<u8> {
    let cluster = cluster_of(&r.header, cluster_id);
    match format {
        Format::Simple | Format::Table => {
            format!("Member {id:16x} removed from cluster {cluster:16x}\n").into_bytes()
        }
        Format::Json => {
            let mut s = String::from("{");
            json_header(&mut s, &r.header);
            json_peers(&mut s, r);
            s.push_str("}\n");
            s.into_bytes()
        }
        Format::Fields => {
            let mut s = String::new();
            fields_header(&mut s, &r.header);
            s.into_bytes()
        }
    }
}

/// Appends `,"members":[...]` from the region's peers after a change (ids and learner flags;
/// the change's answer carries no addresses).
fn json_peers(s: &mut String, r: &MemberChange) {
    if r.peers.is_empty() {
        return;
    }
    s.push_str(",\"members\":[");
    for (i, p) in r.peers.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        json_member(
            s,
            &Member {
                id: p.store_id,
                peer_addr: String::new(),
                is_learner: p.role == PeerRole::Learner as i32,
            },
        );
    }
    s.push(']');
}

/// Output of `move-leader` (etcdctl prints this line whatever the format).
pub fn move_leader(from: u64, to: u64) -> Vec<u8> {
    format!("Leadership transferred from {from:x} to {to:x}\n").into_bytes()
}

fn simple_kv(out: &mut Vec<u8>, kv: &KeyValue) {
    out.extend_from_slice(&kv.key);
    out.push(b'\n');
    out.extend_from_slice(&kv.value);
    out.push(b'\n');
}

/// Appends `"header":{...}` (zero fields omitted).
fn json_header(s: &mut String, h: &ResponseHeader) {
    s.push_str("\"header\":{");
    let mut fields = Vec::new();
    if h.cluster_id != 0 {
        fields.push(format!("\"cluster_id\":{}", h.cluster_id));
    }
    if h.member_id != 0 {
        fields.push(format!("\"member_id\":{}", h.member_id));
    }
    if h.revision != 0 {
        fields.push(format!("\"revision\":{}", h.revision));
    }
    if h.raft_term != 0 {
        fields.push(format!("\"raft_term\":{}", h.raft_term));
    }
    s.push_str(&fields.join(","));
    s.push('}');
}

/// Appends one `mvccpb.KeyValue` object (zero fields omitted, bytes in base64).
fn json_kv(s: &mut String, kv: &KeyValue) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut fields = Vec::new();
    if !kv.key.is_empty() {
        fields.push(format!("\"key\":\"{}\"", b64.encode(&kv.key)));
    }
    if kv.create_revision != 0 {
        fields.push(format!("\"create_revision\":{}", kv.create_revision));
    }
    if kv.mod_revision != 0 {
        fields.push(format!("\"mod_revision\":{}", kv.mod_revision));
    }
    if kv.version != 0 {
        fields.push(format!("\"version\":{}", kv.version));
    }
    if !kv.value.is_empty() {
        fields.push(format!("\"value\":\"{}\"", b64.encode(&kv.value)));
    }
    if kv.lease != 0 {
        fields.push(format!("\"lease\":{}", kv.lease));
    }
    s.push('{');
    s.push_str(&fields.join(","));
    s.push('}');
}

/// Appends a JSON string literal (Go's encoding/json escaping of `<`, `>`, `&` included).
fn json_string(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

fn fields_header(s: &mut String, h: &ResponseHeader) {
    let _ = writeln!(s, "\"ClusterID\" : {}", h.cluster_id);
    let _ = writeln!(s, "\"MemberID\" : {}", h.member_id);
    let _ = writeln!(s, "\"Revision\" : {}", h.revision);
    let _ = writeln!(s, "\"RaftTerm\" : {}", h.raft_term);
}

fn fields_kv(s: &mut String, prefix: &str, kv: &KeyValue) {
    let _ = writeln!(s, "\"{prefix}Key\" : {}", go_quote(&kv.key));
    let _ = writeln!(s, "\"{prefix}CreateRevision\" : {}", kv.create_revision);
    let _ = writeln!(s, "\"{prefix}ModRevision\" : {}", kv.mod_revision);
    let _ = writeln!(s, "\"{prefix}Version\" : {}", kv.version);
    let _ = writeln!(s, "\"{prefix}Value\" : {}", go_quote(&kv.value));
    let _ = writeln!(s, "\"{prefix}Lease\" : {}", kv.lease);
}

/// Go's `%q` of `string(bytes)` (`strconv.Quote`): printable runes as they are, `\"` and
/// `\\`, the C escapes `\a \b \f \n \r \t \v`, other ASCII controls and invalid UTF-8 bytes
/// as `\xhh`, other non-printable runes as `\uhhhh` / `\Uhhhhhhhh`.
pub fn go_quote(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                '\u{7}' => s.push_str("\\a"),
                '\u{8}' => s.push_str("\\b"),
                '\u{c}' => s.push_str("\\f"),
                '\n' => s.push_str("\\n"),
                '\r' => s.push_str("\\r"),
                '\t' => s.push_str("\\t"),
                '\u{b}' => s.push_str("\\v"),
                c if go_is_print(c) => s.push(c),
                c if (c as u32) < 0x80 => {
                    let _ = write!(s, "\\x{:02x}", c as u32);
                }
                c if (c as u32) < 0x10000 => {
                    let _ = write!(s, "\\u{:04x}", c as u32);
                }
                c => {
                    let _ = write!(s, "\\U{:08x}", c as u32);
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s.push('"');
    s
}

/// Approximates Go's `unicode.IsPrint`: no controls, no spaces other than U+0020, no
/// format characters commonly met.
fn go_is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
        || ('\u{e000}'..='\u{f8ff}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: 9381072944785922719,
            member_id: 12635438188718070975,
            revision,
            raft_term: 2,
        }
    }

    fn kv(key: &[u8], value: &[u8], c: i64, m: i64, v: i64) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: c,
            mod_revision: m,
            version: v,
            value: value.to_vec(),
            lease: 0,
        }
    }

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn get_json_is_etcds_line() {
        let r = RangeResult {
            header: header(2),
            kvs: vec![kv(b"foo", b"bar", 2, 2, 1)],
            more: false,
            count: 1,
        };
        assert_eq!(
            text(get(Format::Json, &r, false)),
            "{\"header\":{\"cluster_id\":9381072944785922719,\"member_id\":12635438188718070975,\"revision\":2,\"raft_term\":2},\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":2,\"version\":1,\"value\":\"YmFy\"}],\"count\":1}\n"
        );
    }

    #[test]
    fn get_json_of_a_missing_key_is_the_header_alone() {
        let r = RangeResult {
            header: header(2),
            ..Default::default()
        };
        assert_eq!(
            text(get(Format::Json, &r, false)),
            "{\"header\":{\"cluster_id\":9381072944785922719,\"member_id\":12635438188718070975,\"revision\":2,\"raft_term\":2}}\n"
        );
        assert_eq!(text(get(Format::Simple, &r, false)), "");
    }

    #[test]
    fn json_omits_zero_values_and_pads_base64() {
        let r = RangeResult {
            header: ResponseHeader {
                revision: 5,
                ..Default::default()
            },
            kvs: vec![KeyValue {
                key: b"bar2".to_vec(),
                lease: 7,
                ..Default::default()
            }],
            more: true,
            count: 3,
        };
        assert_eq!(
            text(get(Format::Json, &r, false)),
            "{\"header\":{\"revision\":5},\"kvs\":[{\"key\":\"YmFyMg==\",\"lease\":7}],\"more\":true,\"count\":3}\n"
        );
    }

    #[test]
    fn put_outputs() {
        let plain = PutResult {
            header: header(3),
            prev_kv: None,
        };
        assert_eq!(text(put(Format::Simple, &plain)), "OK\n");
        assert_eq!(
            text(put(Format::Json, &plain)),
            "{\"header\":{\"cluster_id\":9381072944785922719,\"member_id\":12635438188718070975,\"revision\":3,\"raft_term\":2}}\n"
        );
        assert_eq!(
            text(put(Format::Fields, &plain)),
            "\"ClusterID\" : 9381072944785922719\n\"MemberID\" : 12635438188718070975\n\"Revision\" : 3\n\"RaftTerm\" : 2\n"
        );
        let prev = PutResult {
            header: header(4),
            prev_kv: Some(kv(b"foo", b"bar2", 2, 3, 2)),
        };
        assert_eq!(text(put(Format::Simple, &prev)), "OK\nfoo\nbar2\n");
        assert_eq!(
            text(put(Format::Json, &prev)),
            "{\"header\":{\"cluster_id\":9381072944785922719,\"member_id\":12635438188718070975,\"revision\":4,\"raft_term\":2},\"prev_kv\":{\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":3,\"version\":2,\"value\":\"YmFyMg==\"}}\n"
        );
        assert!(text(put(Format::Fields, &prev)).ends_with(
            "\"PrevKey\" : \"foo\"\n\"PrevCreateRevision\" : 2\n\"PrevModRevision\" : 3\n\"PrevVersion\" : 2\n\"PrevValue\" : \"bar2\"\n\"PrevLease\" : 0\n"
        ));
    }

    #[test]
    fn get_fields_is_etcds_block() {
        let r = RangeResult {
            header: header(13),
            kvs: vec![kv(b"foo", b"bar5", 8, 9, 2)],
            more: false,
            count: 1,
        };
        assert_eq!(
            text(get(Format::Fields, &r, false)),
            "\"ClusterID\" : 9381072944785922719\n\"MemberID\" : 12635438188718070975\n\"Revision\" : 13\n\"RaftTerm\" : 2\n\"Key\" : \"foo\"\n\"CreateRevision\" : 8\n\"ModRevision\" : 9\n\"Version\" : 2\n\"Value\" : \"bar5\"\n\"Lease\" : 0\n\"More\" : false\n\"Count\" : 1\n"
        );
    }

    #[test]
    fn get_simple_prints_pairs_and_keys_only_blank_values() {
        let r = RangeResult {
            header: header(3),
            kvs: vec![kv(b"a", b"1", 2, 2, 1), kv(b"b", b"", 3, 3, 1)],
            more: false,
            count: 2,
        };
        assert_eq!(text(get(Format::Simple, &r, false)), "a\n1\nb\n\n");
        let c = RangeResult {
            count: 2,
            ..Default::default()
        };
        assert_eq!(text(get(Format::Simple, &c, true)), "2\n");
    }

    #[test]
    fn del_outputs() {
        let r = DeleteResult {
            header: header(7),
            deleted: 1,
            prev_kvs: vec![kv(b"foo", b"bar4", 2, 6, 5)],
        };
        assert_eq!(text(del(Format::Simple, &r)), "1\nfoo\nbar4\n");
        assert_eq!(
            text(del(Format::Json, &r)),
            "{\"header\":{\"cluster_id\":9381072944785922719,\"member_id\":12635438188718070975,\"revision\":7,\"raft_term\":2},\"deleted\":1,\"prev_kvs\":[{\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":6,\"version\":5,\"value\":\"YmFyNA==\"}]}\n"
        );
        assert!(text(del(Format::Fields, &r))
            .contains("\"RaftTerm\" : 2\n\"Deleted\" : 1\n\"PrevKey\" : \"foo\"\n"));
        let none = DeleteResult {
            header: header(7),
            ..Default::default()
        };
        assert_eq!(text(del(Format::Simple, &none)), "0\n");
        assert_eq!(
            text(del(Format::Json, &none)),
            "{\"header\":{\"cluster_id\":9381072944785922719,\"member_id\":12635438188718070975,\"revision\":7,\"raft_term\":2}}\n"
        );
    }

    #[test]
    fn endpoint_status_outputs() {
        let st = EndpointStatus {
            endpoint: "127.0.0.1:2479".into(),
            header: header(9),
            leader: 12635438188718070975,
            raft_term: 2,
            raft_index: 39,
            raft_applied_index: 38,
            raft_committed_index: 39,
            db_size: 24576,
            ..Default::default()
        };
        assert_eq!(
            text(endpoint_status(Format::Simple, std::slice::from_ref(&st))),
            format!(
                "127.0.0.1:2479, af5a181653f21cbf, {VERSION}, 25 kB, true, false, 2, 39, 38, \n"
            )
        );
        assert_eq!(
            text(endpoint_status(Format::Json, std::slice::from_ref(&st))),
            format!("[{{\"Endpoint\":\"127.0.0.1:2479\",\"Status\":{{\"header\":{{\"cluster_id\":9381072944785922719,\"member_id\":12635438188718070975,\"revision\":9,\"raft_term\":2}},\"version\":\"{VERSION}\",\"dbSize\":24576,\"leader\":12635438188718070975,\"raftIndex\":39,\"raftTerm\":2,\"raftAppliedIndex\":38}}}}]\n")
        );
        let f = text(endpoint_status(Format::Fields, std::slice::from_ref(&st)));
        assert!(f.contains("\"DBSize\" : 24576\n\"Leader\" : 12635438188718070975\n\"IsLearner\" : false\n\"RaftIndex\" : 39\n\"RaftTerm\" : 2\n\"RaftAppliedIndex\" : 38\n"));
        assert!(f.ends_with("\"Endpoint\" : \"127.0.0.1:2479\"\n\n"));
        let learner = EndpointStatus {
            endpoint: "h:2".into(),
            header: ResponseHeader {
                member_id: 2,
                ..Default::default()
            },
            leader: 1,
            raft_term: 3,
            is_learner: true,
            ..Default::default()
        };
        assert_eq!(
            text(endpoint_status(
                Format::Simple,
                std::slice::from_ref(&learner)
            )),
            format!("h:2, 2, {VERSION}, 0 B, false, true, 3, 0, 0, \n")
        );
        assert_eq!(
            text(endpoint_status(Format::Table, &[st.clone(), learner.clone()])),
            format!(
                "+----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
|    ENDPOINT    |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |
+----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
| 127.0.0.1:2479 | af5a181653f21cbf | {VERSION:>7} |   25 kB |      true |      false |         2 |         39 |                 38 |        |
|            h:2 |                2 | {VERSION:>7} |     0 B |     false |       true |         3 |          0 |                  0 |        |
+----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
"
            )
        );
        assert_eq!(
            text(endpoint_status(Format::Json, &[learner])),
            format!("[{{\"Endpoint\":\"h:2\",\"Status\":{{\"header\":{{\"member_id\":2}},\"version\":\"{VERSION}\",\"leader\":1,\"raftTerm\":3,\"isLearner\":true}}}}]\n")
        );
    }

    #[test]
    fn go_duration_is_gos_duration_string() {
        use std::time::Duration;
        let cases: [(u64, &str); 10] = [
            (0, "0s"),
            (850, "850ns"),
            (1_000, "1µs"),
            (12_500, "12.5µs"),
            (1_939_123, "1.939123ms"),
            (2_000_000_000, "2s"),
            (2_500_000_000, "2.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (7_200_500_000_000, "2h0m0.5s"),
        ];
        for (n, want) in cases {
            assert_eq!(go_duration(Duration::from_nanos(n)), want, "{n} ns");
        }
    }

    #[test]
    fn endpoint_health_outputs() {
        let list = [
            EndpointHealth {
                endpoint: "a:1".into(),
                health: true,
                took: "1.5ms".into(),
                error: String::new(),
            },
            EndpointHealth {
                endpoint: "b:2".into(),
                health: false,
                took: "2s".into(),
                error: "read index timed out; retry".into(),
            },
        ];
        let (out, err) = endpoint_health(Format::Simple, &list);
        assert_eq!(text(out), "");
        assert_eq!(
            text(err),
            "a:1 is healthy: successfully committed proposal: took = 1.5ms\n\
             b:2 is unhealthy: failed to commit proposal: read index timed out; retry\n"
        );
        let (out, err) = endpoint_health(Format::Json, &list);
        assert_eq!(
            text(out),
            "[{\"endpoint\":\"a:1\",\"health\":true,\"took\":\"1.5ms\"},{\"endpoint\":\"b:2\",\"health\":false,\"took\":\"2s\",\"error\":\"read index timed out; retry\"}]\n"
        );
        assert!(err.is_empty());
        let (out, _) = endpoint_health(Format::Fields, &list[..1]);
        assert_eq!(
            text(out),
            "\"Endpoint\" : \"a:1\"\n\"Health\" : true\n\"Took\" : 1.5ms\n\"Error\" : \n\n"
        );
        let (out, _) = endpoint_health(Format::Table, &list);
        assert_eq!(
            text(out),
            "+----------+--------+-------+-----------------------------+
| ENDPOINT | HEALTH | TOOK  |            ERROR            |
+----------+--------+-------+-----------------------------+
|      a:1 |   true | 1.5ms |                             |
|      b:2 |  false |    2s | read index timed out; retry |
+----------+--------+-------+-----------------------------+
"
        );
    }

    #[test]
    fn humanize_bytes_is_go_humanizes() {
        assert_eq!(humanize_bytes(0), "0 B");
        assert_eq!(humanize_bytes(9), "9 B");
        assert_eq!(humanize_bytes(10), "10 B");
        assert_eq!(humanize_bytes(999), "999 B");
        assert_eq!(humanize_bytes(1000), "1.0 kB");
        assert_eq!(humanize_bytes(20480), "20 kB");
        assert_eq!(humanize_bytes(24576), "25 kB");
        assert_eq!(humanize_bytes(1_234_567), "1.2 MB");
        assert_eq!(humanize_bytes(-5), "0 B");
    }

    fn members() -> MemberList {
        MemberList {
            header: ResponseHeader {
                cluster_id: 7,
                member_id: 1,
                revision: 4,
                raft_term: 2,
            },
            members: vec![
                Member {
                    id: 1,
                    peer_addr: "10.0.0.1:2380".into(),
                    is_learner: false,
                },
                Member {
                    id: 26,
                    peer_addr: "10.0.0.2:2380".into(),
                    is_learner: true,
                },
            ],
            leader: 1,
            conf_ver: 3,
        }
    }

    #[test]
    fn member_list_outputs() {
        let r = members();
        assert_eq!(
            text(member_list(Format::Simple, &r)),
            "1, started, 1, 10.0.0.1:2380, , false\n1a, started, 26, 10.0.0.2:2380, , true\n"
        );
        assert_eq!(
            text(member_list(Format::Json, &r)),
            "{\"header\":{\"cluster_id\":7,\"member_id\":1,\"revision\":4,\"raft_term\":2},\"members\":[{\"ID\":1,\"name\":\"1\",\"peerURLs\":[\"10.0.0.1:2380\"]},{\"ID\":26,\"name\":\"26\",\"peerURLs\":[\"10.0.0.2:2380\"],\"isLearner\":true}]}\n"
        );
        assert_eq!(
            text(member_list(Format::Table, &r)),
            "+----+---------+------+---------------+--------------+------------+
| ID | STATUS  | NAME |  PEER ADDRS   | CLIENT ADDRS | IS LEARNER |
+----+---------+------+---------------+--------------+------------+
|  1 | started |    1 | 10.0.0.1:2380 |              |      false |
| 1a | started |   26 | 10.0.0.2:2380 |              |       true |
+----+---------+------+---------------+--------------+------------+
"
        );
        assert!(text(member_list(Format::Fields, &r)).ends_with(
            "\"ID\" : 26\n\"Name\" : \"26\"\n\"PeerURL\" : \"10.0.0.2:2380\"\n\"IsLearner\" : true\n\n"
        ));
    }

    #[test]
    fn member_change_outputs() {
        let r = MemberChange {
            header: ResponseHeader {
                cluster_id: 0x8c4281cc65c7b112,
                member_id: 1,
                revision: 4,
                raft_term: 2,
            },
            peers: vec![
                crate::proto::metapb::Peer {
                    id: 1,
                    store_id: 1,
                    role: 0,
                },
                crate::proto::metapb::Peer {
                    id: 4,
                    store_id: 4,
                    role: PeerRole::Learner as i32,
                },
            ],
            conf_ver: 5,
        };
        assert_eq!(
            text(member_add(Format::Simple, 4, "h:4", false, 0, &r)),
            "Member                4 added to cluster 8c4281cc65c7b112\n"
        );
        assert_eq!(
            text(member_add(
                Format::Simple,
                0xced000fda4d05edf,
                "h:4",
                true,
                0,
                &r
            )),
            "Member ced000fda4d05edf added as learner to cluster 8c4281cc65c7b112\n"
        );
        assert_eq!(
            text(member_add(Format::Json, 4, "h:4", true, 0, &r)),
            "{\"header\":{\"cluster_id\":10106783228653711634,\"member_id\":1,\"revision\":4,\"raft_term\":2},\"member\":{\"ID\":4,\"name\":\"4\",\"peerURLs\":[\"h:4\"],\"isLearner\":true},\"members\":[{\"ID\":1,\"name\":\"1\"},{\"ID\":4,\"name\":\"4\",\"isLearner\":true}]}\n"
        );
        // Without a cluster id in the header, the handshake's is printed.
        let bare = MemberChange::default();
        assert_eq!(
            text(member_remove(
                Format::Simple,
                0x2be1eb8f84b7f63e,
                0xef37ad9dc622a7c4,
                &bare
            )),
            "Member 2be1eb8f84b7f63e removed from cluster ef37ad9dc622a7c4\n"
        );
        assert_eq!(
            text(move_leader(0x45ddc0e800e20b93, 2)),
            "Leadership transferred from 45ddc0e800e20b93 to 2\n"
        );
    }

    #[test]
    fn go_quote_matches_strconv_quote() {
        assert_eq!(go_quote(b"foo"), "\"foo\"");
        assert_eq!(go_quote(b"a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(go_quote(b"\n\t\x07\x00\x7f"), "\"\\n\\t\\a\\x00\\x7f\"");
        assert_eq!(go_quote(b"\xff\xfe"), "\"\\xff\\xfe\"");
        assert_eq!(go_quote("héllo ☃".as_bytes()), "\"héllo ☃\"");
        assert_eq!(go_quote("\u{a0}\u{feff}".as_bytes()), "\"\\u00a0\\ufeff\"");
    }

    #[test]
    fn format_parses_etcd_names() {
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        assert_eq!("table".parse::<Format>(), Ok(Format::Table));
        assert_eq!(
            "yaml".parse::<Format>(),
            Err("yaml not supported as output format".to_string())
        );
    }
}
