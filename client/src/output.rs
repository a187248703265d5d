//! etcdctl 3.4's output formats (`-w simple|json|fields`), as pure functions returning the
//! bytes to print. The exact shapes are pinned in `shared/ETCD_SEMANTICS.md` §3 and by the
//! tests below:
//!
//! - **json**: one line, no spaces, snake_case proto names, zero values omitted (Go's
//!   `omitempty`), 64-bit integers as JSON numbers, keys and values in standard base64.
//! - **simple**: `key\nvalue\n` per pair for `get`, `OK` for `put`, the count for `del`
//!   (raw bytes, as etcdctl prints them).
//! - **fields**: `"Name" : value` lines, integers as `%d`, bytes as Go `%q`.

use std::fmt::Write as _;
use std::str::FromStr;

use base64::Engine as _;

use crate::client::{DeleteResult, EndpointStatus, PutResult, RangeResult};
use crate::proto::pontoonpb::{KeyValue, ResponseHeader};

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
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "simple" => Ok(Format::Simple),
            "json" => Ok(Format::Json),
            "fields" => Ok(Format::Fields),
            other => Err(format!("{other} not supported as output format")),
        }
    }
}

/// Version string reported by `endpoint status` (the client's; stores do not report one).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Output of `put`.
pub fn put(format: Format, r: &PutResult) -> Vec<u8> {
    match format {
        Format::Simple => {
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
        Format::Simple => {
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
        Format::Simple => {
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

/// Output of `endpoint status`. Fields a store does not report (db size, raft index,
/// learner, errors) print as etcd prints their zero values; the version is the client's.
pub fn endpoint_status(format: Format, list: &[EndpointStatus]) -> Vec<u8> {
    let mut s = String::new();
    match format {
        Format::Simple => {
            for st in list {
                let _ = writeln!(
                    s,
                    "{}, {:x}, {}, 0 B, {}, false, {}, 0, 0, ",
                    st.endpoint,
                    st.header.member_id,
                    VERSION,
                    st.leader != 0 && st.leader == st.header.member_id,
                    st.raft_term,
                );
            }
        }
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
                if st.leader != 0 {
                    let _ = write!(s, ",\"leader\":{}", st.leader);
                }
                if st.raft_term != 0 {
                    let _ = write!(s, ",\"raftTerm\":{}", st.raft_term);
                }
                s.push_str("}}");
            }
            s.push_str("]\n");
        }
        Format::Fields => {
            for st in list {
                fields_header(&mut s, &st.header);
                let _ = writeln!(s, "\"Version\" : {}", go_quote(VERSION.as_bytes()));
                let _ = writeln!(s, "\"DBSize\" : 0");
                let _ = writeln!(s, "\"Leader\" : {}", st.leader);
                let _ = writeln!(s, "\"IsLearner\" : false");
                let _ = writeln!(s, "\"RaftIndex\" : 0");
                let _ = writeln!(s, "\"RaftTerm\" : {}", st.raft_term);
                let _ = writeln!(s, "\"RaftAppliedIndex\" : 0");
                let _ = writeln!(s, "\"Errors\" : []");
                let _ = writeln!(s, "\"Endpoint\" : {}", go_quote(st.endpoint.as_bytes()));
                s.push('\n');
            }
        }
    }
    s.into_bytes()
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
            ack: Default::default(),
        };
        assert_eq!(
            text(endpoint_status(Format::Simple, std::slice::from_ref(&st))),
            format!("127.0.0.1:2479, af5a181653f21cbf, {VERSION}, 0 B, true, false, 2, 0, 0, \n")
        );
        assert_eq!(
            text(endpoint_status(Format::Json, std::slice::from_ref(&st))),
            format!("[{{\"Endpoint\":\"127.0.0.1:2479\",\"Status\":{{\"header\":{{\"cluster_id\":9381072944785922719,\"member_id\":12635438188718070975,\"revision\":9,\"raft_term\":2}},\"version\":\"{VERSION}\",\"leader\":12635438188718070975,\"raftTerm\":2}}}}]\n")
        );
        let f = text(endpoint_status(Format::Fields, &[st]));
        assert!(f.contains("\"Leader\" : 12635438188718070975\n\"IsLearner\" : false\n"));
        assert!(f.ends_with("\"Endpoint\" : \"127.0.0.1:2479\"\n\n"));
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
        assert_eq!(
            "table".parse::<Format>(),
            Err("table not supported as output format".to_string())
        );
    }
}
