//! Micro-benchmarks of the wire protocol (`pontoon-client`): frame encode/decode and
//! `RaftCmdRequest` protobuf encode/decode.
//!
//! | group | workload |
//! |---|---|
//! | `frame_encode` | encode one frame: `put_request` (a small Put command), `payload_4k` (4 KiB of opaque bytes) |
//! | `frame_decode` | feed one encoded frame to a `FrameDecoder` and pop it, same two payloads |
//! | `raft_cmd_request` | `encode` / `decode` of the small Put command as protobuf |
//!
//! Throughput is in bytes of encoded frame (or message).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pontoon_client::frame::{encode_frame, encode_message};
use pontoon_client::prost::Message;
use pontoon_client::proto::metapb::{Peer, RegionEpoch};
use pontoon_client::proto::raft_cmdpb::{
    CmdType, PutRequest, RaftCmdRequest, RaftRequestHeader, Request,
};
use pontoon_client::{FrameDecoder, FrameType, Limits};

const MAX: u32 = Limits::DEFAULT_MAX_FRAME_SIZE_BYTES;

/// A Put of a 16-byte key and a 100-byte value, with a full request header.
fn put_request() -> RaftCmdRequest {
    RaftCmdRequest {
        header: Some(RaftRequestHeader {
            region_id: 42,
            peer: Some(Peer {
                id: 43,
                store_id: 1,
                role: 0,
            }),
            read_quorum: false,
            uuid: vec![7; 16],
            region_epoch: Some(RegionEpoch {
                conf_ver: 3,
                version: 5,
            }),
            term: 9,
        }),
        requests: vec![Request {
            cmd_type: CmdType::Put as i32,
            put: Some(PutRequest {
                cf: "default".into(),
                key: b"key0000000012345".to_vec(),
                value: vec![b'v'; 100],
                prev_kv: false,
            }),
            ..Default::default()
        }],
        admin_request: None,
    }
}

fn frame_encode(c: &mut Criterion) {
    let cmd = put_request();
    let payload_4k = vec![0xA5u8; 4096];
    let mut group = c.benchmark_group("frame_encode");
    let mut out = Vec::with_capacity(8192);

    group.throughput(Throughput::Bytes((24 + cmd.encoded_len()) as u64));
    group.bench_function("put_request", |b| {
        b.iter(|| {
            out.clear();
            encode_message(FrameType::Request, 1, black_box(&cmd), MAX, &mut out).expect("fits");
            black_box(out.len())
        })
    });
    group.throughput(Throughput::Bytes((24 + payload_4k.len()) as u64));
    group.bench_function("payload_4k", |b| {
        b.iter(|| {
            out.clear();
            encode_frame(
                FrameType::SnapshotChunk,
                1,
                black_box(&payload_4k),
                MAX,
                &mut out,
            )
            .expect("fits");
            black_box(out.len())
        })
    });
    group.finish();
}

fn frame_decode(c: &mut Criterion) {
    let mut put = Vec::new();
    encode_message(FrameType::Request, 1, &put_request(), MAX, &mut put).expect("fits");
    let mut big = Vec::new();
    encode_frame(FrameType::SnapshotChunk, 1, &[0xA5u8; 4096], MAX, &mut big).expect("fits");
    let mut group = c.benchmark_group("frame_decode");
    let mut decoder = FrameDecoder::with_max_frame_size(MAX);
    for (name, bytes) in [("put_request", &put), ("payload_4k", &big)] {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                decoder.feed(black_box(bytes));
                let frame = decoder.next_frame().expect("valid").expect("complete");
                black_box(frame.payload.len())
            })
        });
    }
    group.finish();
}

fn raft_cmd_request(c: &mut Criterion) {
    let cmd = put_request();
    let encoded = cmd.encode_to_vec();
    let mut group = c.benchmark_group("raft_cmd_request");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    let mut out = Vec::with_capacity(1024);
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            black_box(&cmd).encode(&mut out).expect("vec grows");
            black_box(out.len())
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| RaftCmdRequest::decode(black_box(encoded.as_slice())).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, frame_encode, frame_decode, raft_cmd_request);
criterion_main!(benches);
