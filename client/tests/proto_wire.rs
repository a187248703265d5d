//! Protobuf round trips of the commands, and wire bytes that pin kvproto's field numbers
//! (a renumbered field would silently break compatibility with TiKV's numbering).

use pontoon_client::proto::errorpb::{self, EpochNotMatch};
use pontoon_client::proto::metapb::{Peer, Region, RegionEpoch};
use pontoon_client::proto::pontoonpb::{KeyValue, RangeRequest, RangeResponse, ResponseHeader};
use pontoon_client::proto::raft_cmdpb::*;
use pontoon_client::proto::raft_serverpb::{RaftApplyState, RaftMessage};
use prost::Message;

fn header() -> RaftRequestHeader {
    RaftRequestHeader {
        region_id: 12,
        peer: Some(Peer {
            id: 13,
            store_id: 2,
            role: 0,
        }),
        read_quorum: true,
        uuid: vec![0xAB; 16],
        region_epoch: Some(RegionEpoch {
            conf_ver: 3,
            version: 9,
        }),
        term: 5,
    }
}

fn request(cmd_type: CmdType) -> Request {
    let mut r = Request {
        cmd_type: cmd_type as i32,
        ..Default::default()
    };
    match cmd_type {
        CmdType::Get => {
            r.get = Some(GetRequest {
                cf: "default".into(),
                key: b"k".to_vec(),
            })
        }
        CmdType::Put => {
            r.put = Some(PutRequest {
                cf: "write".into(),
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                prev_kv: true,
            })
        }
        CmdType::Delete => {
            r.delete = Some(DeleteRequest {
                cf: "lock".into(),
                key: b"k".to_vec(),
                prev_kv: false,
            })
        }
        CmdType::Snap => r.snap = Some(SnapRequest {}),
        CmdType::DeleteRange => {
            r.delete_range = Some(DeleteRangeRequest {
                cf: String::new(),
                start_key: b"a".to_vec(),
                end_key: vec![0],
                prev_kv: true,
            })
        }
        CmdType::Range => {
            r.range = Some(RangeRequest {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                limit: 10,
                serializable: true,
                keys_only: false,
                count_only: false,
                cf: "default".into(),
            })
        }
        CmdType::Invalid => {}
    }
    r
}

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let bytes = m.encode_to_vec();
    assert_eq!(&M::decode(bytes.as_slice()).unwrap(), m);
}

#[test]
fn raft_cmd_request_round_trips_with_each_request_type() {
    for t in [
        CmdType::Get,
        CmdType::Put,
        CmdType::Delete,
        CmdType::Snap,
        CmdType::DeleteRange,
        CmdType::Range,
    ] {
        let cmd = RaftCmdRequest {
            header: Some(header()),
            requests: vec![request(t)],
            admin_request: None,
        };
        round_trip(&cmd);
        let decoded = RaftCmdRequest::decode(cmd.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.requests[0].cmd_type(), t);
    }
    let all = RaftCmdRequest {
        header: Some(header()),
        requests: [CmdType::Get, CmdType::Put, CmdType::Delete, CmdType::Range]
            .map(request)
            .to_vec(),
        admin_request: None,
    };
    round_trip(&all);
}

#[test]
fn admin_requests_round_trip() {
    let admins = [
        AdminRequest {
            cmd_type: AdminCmdType::ChangePeer as i32,
            change_peer: Some(ChangePeerRequest {
                change_type: ConfChangeType::AddLearnerNode as i32,
                peer: Some(Peer {
                    id: 20,
                    store_id: 4,
                    role: 1,
                }),
                peer_addr: "10.0.0.4:2380".into(),
            }),
            ..Default::default()
        },
        AdminRequest {
            cmd_type: AdminCmdType::Status as i32,
            status: Some(pontoon_client::proto::pontoonpb::StatusRequest {}),
            ..Default::default()
        },
        AdminRequest {
            cmd_type: AdminCmdType::CompactLog as i32,
            compact_log: Some(CompactLogRequest {
                compact_index: 100,
                compact_term: 6,
            }),
            ..Default::default()
        },
        AdminRequest {
            cmd_type: AdminCmdType::TransferLeader as i32,
            transfer_leader: Some(TransferLeaderRequest {
                peer: Some(Peer {
                    id: 2,
                    store_id: 2,
                    role: 0,
                }),
            }),
            ..Default::default()
        },
        AdminRequest {
            cmd_type: AdminCmdType::BatchSplit as i32,
            splits: Some(BatchSplitRequest {
                requests: vec![SplitRequest {
                    split_key: b"m".to_vec(),
                    new_region_id: 30,
                    new_peer_ids: vec![31, 32, 33],
                    ..Default::default()
                }],
                right_derive: true,
            }),
            ..Default::default()
        },
    ];
    for admin in admins {
        round_trip(&RaftCmdRequest {
            header: Some(header()),
            requests: vec![],
            admin_request: Some(admin),
        });
    }
}

#[test]
fn raft_cmd_response_round_trips_with_metadata_and_errors() {
    let kv = KeyValue {
        key: b"k".to_vec(),
        create_revision: 2,
        mod_revision: 5,
        version: 3,
        value: b"v".to_vec(),
        lease: 0,
    };
    let ok = RaftCmdResponse {
        header: Some(RaftResponseHeader {
            error: None,
            uuid: vec![1; 16],
            current_term: 5,
        }),
        responses: vec![
            Response {
                cmd_type: CmdType::Get as i32,
                get: Some(GetResponse {
                    value: b"v".to_vec(),
                    kv: Some(KeyValue {
                        value: vec![],
                        ..kv.clone()
                    }),
                }),
                ..Default::default()
            },
            Response {
                cmd_type: CmdType::Range as i32,
                range: Some(RangeResponse {
                    kvs: vec![kv.clone(), kv.clone()],
                    more: true,
                    count: 7,
                }),
                ..Default::default()
            },
            Response {
                cmd_type: CmdType::Delete as i32,
                delete: Some(DeleteResponse {
                    deleted: 1,
                    prev_kv: Some(kv),
                }),
                ..Default::default()
            },
        ],
        admin_response: None,
        response_header: Some(ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 9,
            raft_term: 5,
        }),
    };
    round_trip(&ok);
    let stale = RaftCmdResponse {
        header: Some(RaftResponseHeader {
            error: Some(errorpb::Error {
                message: "epoch not match".into(),
                epoch_not_match: Some(EpochNotMatch {
                    current_regions: vec![Region::default()],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    round_trip(&stale);
}

#[test]
fn raft_request_header_region_epoch_is_field_5() {
    let h = RaftRequestHeader {
        region_epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 2,
        }),
        ..Default::default()
    };
    // tag (5 << 3 | 2) = 0x2A, length 4, conf_ver (field 1) = 1, version (field 2) = 2.
    assert_eq!(h.encode_to_vec(), [0x2A, 4, 0x08, 1, 0x10, 2]);
    let h = RaftRequestHeader {
        region_id: 7,
        term: 3,
        ..Default::default()
    };
    assert_eq!(h.encode_to_vec(), [0x08, 7, 0x30, 3]);
}

#[test]
fn kvproto_numbers_are_pinned() {
    let put = Request {
        cmd_type: CmdType::Put as i32,
        put: Some(PutRequest::default()),
        ..Default::default()
    };
    // cmd_type field 1 = Put (3); put is field 4.
    assert_eq!(put.encode_to_vec(), [0x08, 3, 0x22, 0]);
    let split = AdminRequest {
        cmd_type: AdminCmdType::BatchSplit as i32,
        splits: Some(BatchSplitRequest::default()),
        ..Default::default()
    };
    // BatchSplit = 10; splits is field 10: tag (10 << 3 | 2) = 0x52.
    assert_eq!(split.encode_to_vec(), [0x08, 10, 0x52, 0]);
    let cmd = RaftCmdRequest {
        admin_request: Some(AdminRequest::default()),
        ..Default::default()
    };
    assert_eq!(cmd.encode_to_vec(), [0x1A, 0]);
    let region = Region {
        peers: vec![Peer::default()],
        ..Default::default()
    };
    assert_eq!(region.encode_to_vec(), [0x2A, 0]);
    let err = errorpb::Error {
        epoch_not_match: Some(EpochNotMatch::default()),
        store_not_match: Some(errorpb::StoreNotMatch::default()),
        ..Default::default()
    };
    assert_eq!(err.encode_to_vec(), [0x2A, 0, 0x42, 0]);
    let msg = RaftMessage {
        message: vec![0x08, 1].into(),
        is_tombstone: true,
        ..Default::default()
    };
    // message is field 4, length-delimited, as kvproto's embedded eraftpb.Message.
    assert_eq!(msg.encode_to_vec(), [0x22, 2, 0x08, 1, 0x30, 1]);
}

#[test]
fn pontoon_additions_use_high_or_etcd_numbers() {
    let resp = RaftCmdResponse {
        response_header: Some(ResponseHeader::default()),
        ..Default::default()
    };
    // Field 100, wire type 2: varint 802 = 0xA2 0x06.
    assert_eq!(resp.encode_to_vec(), [0xA2, 0x06, 0]);
    assert_eq!(CmdType::Range as i32, 100);
    let kv = KeyValue {
        key: vec![1],
        create_revision: 2,
        mod_revision: 3,
        version: 4,
        value: vec![5],
        lease: 6,
    };
    // etcd mvccpb numbering: key=1, create_revision=2, mod_revision=3, version=4, value=5, lease=6.
    assert_eq!(
        kv.encode_to_vec(),
        [0x0A, 1, 1, 0x10, 2, 0x18, 3, 0x20, 4, 0x2A, 1, 5, 0x30, 6]
    );
    let apply = RaftApplyState {
        applied_index: 1,
        truncated_state: None,
        revision: 2,
    };
    assert_eq!(apply.encode_to_vec(), [0x08, 1, 0xA0, 0x06, 2]);
}

#[test]
fn status_and_peer_addr_numbers_on_the_wire() {
    use pontoon_client::prost::Message;
    // AdminRequest { cmd_type = 1: Status (100), status = 100: empty message }.
    let status = AdminRequest {
        cmd_type: AdminCmdType::Status as i32,
        status: Some(pontoon_client::proto::pontoonpb::StatusRequest {}),
        ..Default::default()
    };
    assert_eq!(status.encode_to_vec(), vec![0x08, 100, 0xa2, 0x06, 0x00]);
    // ChangePeerRequest.peer_addr = 100 (tag 100 << 3 | 2 = 0x322 as varint a2 06).
    let cp = ChangePeerRequest {
        change_type: 0,
        peer: None,
        peer_addr: "h:1".into(),
    };
    assert_eq!(cp.encode_to_vec(), vec![0xa2, 0x06, 3, b'h', b':', b'1']);
}
