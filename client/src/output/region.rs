//! Output of `region list` and `region split`.
//!
//! Ids (region, store) are in hex in the simple and table formats, as etcdctl prints
//! member ids, and decimal JSON numbers / `%d` in the json and fields formats. Boundary
//! keys follow [`display_key`] in simple and table, are base64 in json and Go-quoted in
//! fields (where the empty key is `""`). An unknown leader is `-`.

use std::fmt::Write as _;

use base64::Engine as _;

use super::{go_quote, humanize_bytes, Format};
use crate::client::RegionInfo;
use crate::proto::metapb::{self, PeerRole};

/// A region boundary key in simple and table output: a key of printable ASCII without
/// spaces, quotes, backslashes or commas as it is; the empty start key as `-inf` and the
/// empty end key as `+inf`; any other key (including one spelled `-inf` or `+inf`) in Go's
/// `%q` quoting, e.g. `"a b"` or `"\x00"`.
pub fn display_key(key: &[u8], is_end: bool) -> String {
    if key.is_empty() {
        return if is_end { "+inf" } else { "-inf" }.to_string();
    }
    let plain = key
        .iter()
        .all(|&b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b','))
        && key != b"-inf"
        && key != b"+inf";
    if plain {
        String::from_utf8_lossy(key).into_owned()
    } else {
        go_quote(key)
    }
}

/// The peers' store ids in hex, comma-separated; learners marked `(learner)`.
fn peer_list(peers: &[metapb::Peer]) -> String {
    peers
        .iter()
        .map(|p| {
            if p.role == PeerRole::Learner as i32 {
                format!("{:x}(learner)", p.store_id)
            } else {
                format!("{:x}", p.store_id)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The columns every region output has: ID, START, END, VERSION, CONF_VER, PEERS.
fn region_cells(r: &metapb::Region) -> Vec<String> {
    let (version, conf_ver) = r
        .region_epoch
        .as_ref()
        .map_or((0, 0), |e| (e.version, e.conf_ver));
    vec![
        format!("{:x}", r.id),
        display_key(&r.start_key, false),
        display_key(&r.end_key, true),
        version.to_string(),
        conf_ver.to_string(),
        peer_list(&r.peers),
    ]
}

const REGION_HEADERS: [&str; 6] = ["ID", "START", "END", "VERSION", "CONF_VER", "PEERS"];

fn info_cells(info: &RegionInfo) -> Vec<String> {
    let mut cells = region_cells(&info.region);
    cells.push(if info.leader_store_id == 0 {
        "-".to_string()
    } else {
        format!("{:x}", info.leader_store_id)
    });
    cells.push(humanize_bytes(
        i64::try_from(info.approximate_size).unwrap_or(i64::MAX),
    ));
    cells
}

/// Output of `region list`: one region per line (simple: `ID, START, END, VERSION,
/// CONF_VER, PEERS, LEADER, SIZE`), a table with those columns, `{"regions":[...]}` or
/// fields blocks.
pub fn region_list(format: Format, list: &[RegionInfo]) -> Vec<u8> {
    let rows: Vec<Vec<String>> = list.iter().map(info_cells).collect();
    match format {
        Format::Simple => simple_rows(&rows),
        Format::Table => {
            let mut headers = REGION_HEADERS.to_vec();
            headers.extend(["LEADER", "SIZE"]);
            table(&headers, &rows)
        }
        Format::Json => {
            let mut s = String::from("{\"regions\":[");
            for (i, info) in list.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                json_region(&mut s, &info.region, Some(info));
            }
            s.push_str("]}\n");
            s.into_bytes()
        }
        Format::Fields => {
            let mut s = String::new();
            for info in list {
                fields_region(&mut s, &info.region);
                let _ = writeln!(s, "\"Leader\" : {}", info.leader_store_id);
                let _ = writeln!(s, "\"ApproximateSize\" : {}", info.approximate_size);
                let _ = writeln!(s, "\"Revision\" : {}", info.revision);
                s.push('\n');
            }
            s.into_bytes()
        }
    }
}

/// Output of `region split`: the resulting regions, left then right, with the columns
/// `ID, START, END, VERSION, CONF_VER, PEERS` (simple, table), as `{"regions":[...]}`
/// (json) or fields blocks.
pub fn region_split(format: Format, regions: &[metapb::Region]) -> Vec<u8> {
    let rows: Vec<Vec<String>> = regions.iter().map(region_cells).collect();
    match format {
        Format::Simple => simple_rows(&rows),
        Format::Table => table(&REGION_HEADERS, &rows),
        Format::Json => {
            let mut s = String::from("{\"regions\":[");
            for (i, r) in regions.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                json_region(&mut s, r, None);
            }
            s.push_str("]}\n");
            s.into_bytes()
        }
        Format::Fields => {
            let mut s = String::new();
            for r in regions {
                fields_region(&mut s, r);
                s.push('\n');
            }
            s.into_bytes()
        }
    }
}

/// One line per row, cells separated by `, `.
pub(super) fn simple_rows(rows: &[Vec<String>]) -> Vec<u8> {
    let mut s = String::new();
    for row in rows {
        s.push_str(&row.join(", "));
        s.push('\n');
    }
    s.into_bytes()
}

/// etcdctl's table (olekukonko/tablewriter as etcdctl sets it up): a `+---+` rule, the
/// headers centred, a rule, the rows right-aligned, a rule.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> Vec<u8> {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(c, h)| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    let rule = |s: &mut String| {
        for w in &widths {
            s.push('+');
            s.push_str(&"-".repeat(w + 2));
        }
        s.push_str("+\n");
    };
    rule(&mut s);
    for (h, w) in headers.iter().zip(&widths) {
        let gap = w.saturating_sub(h.chars().count());
        let left = gap / 2;
        let _ = write!(s, "| {}{h}{} ", " ".repeat(left), " ".repeat(gap - left));
    }
    s.push_str("|\n");
    rule(&mut s);
    for row in rows {
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(s, "| {cell:>w$} ");
        }
        s.push_str("|\n");
    }
    rule(&mut s);
    s.into_bytes()
}

/// Appends one region as a JSON object: metapb's snake_case names, zero values omitted,
/// keys in base64; with `info`, the leader's store id, size and revision too.
fn json_region(s: &mut String, r: &metapb::Region, info: Option<&RegionInfo>) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut fields = Vec::new();
    if r.id != 0 {
        fields.push(format!("\"id\":{}", r.id));
    }
    if !r.start_key.is_empty() {
        fields.push(format!("\"start_key\":\"{}\"", b64.encode(&r.start_key)));
    }
    if !r.end_key.is_empty() {
        fields.push(format!("\"end_key\":\"{}\"", b64.encode(&r.end_key)));
    }
    if let Some(e) = &r.region_epoch {
        let mut epoch = Vec::new();
        if e.conf_ver != 0 {
            epoch.push(format!("\"conf_ver\":{}", e.conf_ver));
        }
        if e.version != 0 {
            epoch.push(format!("\"version\":{}", e.version));
        }
        fields.push(format!("\"region_epoch\":{{{}}}", epoch.join(",")));
    }
    if !r.peers.is_empty() {
        let peers: Vec<String> = r
            .peers
            .iter()
            .map(|p| {
                let mut f = Vec::new();
                if p.id != 0 {
                    f.push(format!("\"id\":{}", p.id));
                }
                if p.store_id != 0 {
                    f.push(format!("\"store_id\":{}", p.store_id));
                }
                if p.role != 0 {
                    f.push(format!("\"role\":{}", p.role));
                }
                format!("{{{}}}", f.join(","))
            })
            .collect();
        fields.push(format!("\"peers\":[{}]", peers.join(",")));
    }
    if let Some(info) = info {
        if info.leader_store_id != 0 {
            fields.push(format!("\"leader_store_id\":{}", info.leader_store_id));
        }
        if info.approximate_size != 0 {
            fields.push(format!("\"approximate_size\":{}", info.approximate_size));
        }
        if info.revision != 0 {
            fields.push(format!("\"revision\":{}", info.revision));
        }
    }
    s.push('{');
    s.push_str(&fields.join(","));
    s.push('}');
}

fn fields_region(s: &mut String, r: &metapb::Region) {
    let (version, conf_ver) = r
        .region_epoch
        .as_ref()
        .map_or((0, 0), |e| (e.version, e.conf_ver));
    let stores: Vec<String> = r.peers.iter().map(|p| p.store_id.to_string()).collect();
    let _ = writeln!(s, "\"ID\" : {}", r.id);
    let _ = writeln!(s, "\"StartKey\" : {}", go_quote(&r.start_key));
    let _ = writeln!(s, "\"EndKey\" : {}", go_quote(&r.end_key));
    let _ = writeln!(s, "\"Version\" : {version}");
    let _ = writeln!(s, "\"ConfVer\" : {conf_ver}");
    let _ = writeln!(s, "\"Peers\" : [{}]", stores.join(" "));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    fn region(id: u64, start: &[u8], end: &[u8], stores: &[u64]) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 3,
                version: 2,
            }),
            peers: stores
                .iter()
                .map(|&s| metapb::Peer {
                    id: 100 + s,
                    store_id: s,
                    role: if s == 26 { PeerRole::Learner as i32 } else { 0 },
                })
                .collect(),
        }
    }

    fn list() -> Vec<RegionInfo> {
        vec![
            RegionInfo {
                region: region(1, b"", b"g", &[1, 2, 3]),
                leader_store_id: 1,
                approximate_size: 24576,
                revision: 9,
            },
            RegionInfo {
                region: region(26, b"g", b"", &[1, 2, 26]),
                leader_store_id: 0,
                approximate_size: 0,
                revision: 0,
            },
        ]
    }

    #[test]
    fn keys_are_shown_plainly_when_unambiguous() {
        assert_eq!(display_key(b"", false), "-inf");
        assert_eq!(display_key(b"", true), "+inf");
        assert_eq!(display_key(b"user/42", false), "user/42");
        assert_eq!(display_key(b"a b", false), "\"a b\"");
        assert_eq!(display_key(b"a,b", false), "\"a,b\"");
        assert_eq!(display_key(b"\x00", true), "\"\\x00\"");
        assert_eq!(display_key(b"+inf", true), "\"+inf\"");
        assert_eq!(display_key("é".as_bytes(), true), "\"é\"");
    }

    #[test]
    fn region_list_outputs() {
        let l = list();
        assert_eq!(
            text(region_list(Format::Simple, &l)),
            "1, -inf, g, 2, 3, 1,2,3, 1, 25 kB\n1a, g, +inf, 2, 3, 1,2,1a(learner), -, 0 B\n"
        );
        assert_eq!(
            text(region_list(Format::Table, &l)),
            "\
+----+-------+------+---------+----------+-----------------+--------+-------+
| ID | START | END  | VERSION | CONF_VER |      PEERS      | LEADER | SIZE  |
+----+-------+------+---------+----------+-----------------+--------+-------+
|  1 |  -inf |    g |       2 |        3 |           1,2,3 |      1 | 25 kB |
| 1a |     g | +inf |       2 |        3 | 1,2,1a(learner) |      - |   0 B |
+----+-------+------+---------+----------+-----------------+--------+-------+
"
        );
        assert_eq!(
            text(region_list(Format::Json, &l)),
            "{\"regions\":[{\"id\":1,\"end_key\":\"Zw==\",\"region_epoch\":{\"conf_ver\":3,\"version\":2},\"peers\":[{\"id\":101,\"store_id\":1},{\"id\":102,\"store_id\":2},{\"id\":103,\"store_id\":3}],\"leader_store_id\":1,\"approximate_size\":24576,\"revision\":9},{\"id\":26,\"start_key\":\"Zw==\",\"region_epoch\":{\"conf_ver\":3,\"version\":2},\"peers\":[{\"id\":101,\"store_id\":1},{\"id\":102,\"store_id\":2},{\"id\":126,\"store_id\":26,\"role\":1}]}]}\n"
        );
        assert_eq!(text(region_list(Format::Json, &[])), "{\"regions\":[]}\n");
        let f = text(region_list(Format::Fields, &l));
        assert!(f.starts_with("\"ID\" : 1\n\"StartKey\" : \"\"\n\"EndKey\" : \"g\"\n\"Version\" : 2\n\"ConfVer\" : 3\n\"Peers\" : [1 2 3]\n\"Leader\" : 1\n\"ApproximateSize\" : 24576\n\"Revision\" : 9\n\n"), "{f}");
    }

    #[test]
    fn region_split_outputs() {
        let r = vec![region(1, b"", b"m", &[1]), region(7, b"m", b"", &[1])];
        assert_eq!(
            text(region_split(Format::Simple, &r)),
            "1, -inf, m, 2, 3, 1\n7, m, +inf, 2, 3, 1\n"
        );
        assert_eq!(
            text(region_split(Format::Table, &r)),
            "\
+----+-------+------+---------+----------+-------+
| ID | START | END  | VERSION | CONF_VER | PEERS |
+----+-------+------+---------+----------+-------+
|  1 |  -inf |    m |       2 |        3 |     1 |
|  7 |     m | +inf |       2 |        3 |     1 |
+----+-------+------+---------+----------+-------+
"
        );
        assert_eq!(
            text(region_split(Format::Json, &r[..1])),
            "{\"regions\":[{\"id\":1,\"end_key\":\"bQ==\",\"region_epoch\":{\"conf_ver\":3,\"version\":2},\"peers\":[{\"id\":101,\"store_id\":1}]}]}\n"
        );
    }
}
