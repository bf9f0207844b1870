//! Wire codec throughput, each figure beside its baseline from the same run.
//!
//! - `control/*`: small control messages encoded and decoded per second.
//! - `chunk_stream/*`: a filled read buffer holding a stream of 1 MiB chunk frames decoded to
//!   `Bytes` payloads, beside a `memcpy` of the same bytes into an allocated buffer (the floor
//!   any copying decoder would pay).

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dyad_benches::synthetic_bytes;
use dyad_wire::{
    decode_frame, encode_frame, Chunk, Epoch, Hello, KeepAlive, Message, NodeId, Role, SessionId,
    SoftwareVersion, Version,
};
use std::hint::black_box;

const CHUNK_BYTES: usize = 1024 * 1024;
const CHUNKS_PER_STREAM: usize = 64;

fn hello() -> Message {
    Message::Hello(Hello {
        protocol_min: 1,
        protocol_max: 1,
        software: SoftwareVersion {
            app: Version {
                major: 7,
                minor: 3,
                patch: 0,
            },
            base: Version {
                major: 3,
                minor: 2,
                patch: 0,
            },
        },
        node_id: NodeId([7; 16]),
        node_name: "appliance-a".to_string(),
        role: Role::Primary,
        epoch: Epoch {
            counter: 12,
            node: NodeId([7; 16]),
        },
        clock_unix_ms: 1_795_000_000_000,
    })
}

fn control_messages(c: &mut Criterion) {
    let mut group = c.benchmark_group("control");
    for (name, message) in [
        ("hello", hello()),
        ("keep_alive", Message::KeepAlive(KeepAlive { sequence: 99 })),
    ] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}/encode"), |b| {
            let mut out = BytesMut::with_capacity(1024);
            b.iter(|| {
                out.clear();
                encode_frame(black_box(&message), &mut out).expect("a fixed valid message");
            })
        });
        let mut encoded = BytesMut::new();
        encode_frame(&message, &mut encoded).expect("a fixed valid message");
        let encoded = encoded.freeze();
        group.bench_function(format!("{name}/decode"), |b| {
            b.iter_batched(
                || BytesMut::from(&encoded[..]),
                |mut buf| decode_frame(black_box(&mut buf)).expect("bytes we just encoded"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn chunk_stream(c: &mut Criterion) {
    let data = Bytes::from(synthetic_bytes(CHUNK_BYTES, 42));
    let mut stream = BytesMut::new();
    for index in 0..CHUNKS_PER_STREAM {
        let chunk = Chunk {
            session: SessionId {
                origin: NodeId([1; 16]),
                sequence: 5,
            },
            chunk_index: index as u32,
            data: data.clone(),
        };
        encode_frame(&Message::Chunk(chunk), &mut stream).expect("a chunk within the limit");
    }
    let stream = stream.freeze();
    let mut group = c.benchmark_group("chunk_stream");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.sample_size(20);
    // The read buffer is filled outside the timed part, as the socket would have filled it;
    // what is timed is turning it into chunk payloads. The baseline copies the same bytes
    // into a buffer that is already allocated: the least a decoder that copied would pay.
    group.bench_function("decode_64x1MiB", |b| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| {
                let mut payload_bytes = 0usize;
                while let Ok(Message::Chunk(chunk)) = decode_frame(&mut buf) {
                    payload_bytes += chunk.data.len();
                }
                black_box(payload_bytes)
            },
            BatchSize::PerIteration,
        )
    });
    let mut target = vec![0u8; stream.len()];
    group.bench_function("baseline_memcpy_64x1MiB", |b| {
        b.iter(|| {
            target.copy_from_slice(black_box(&stream[..]));
            black_box(target.as_ptr());
        })
    });
    group.finish();
}

criterion_group!(benches, control_messages, chunk_stream);
criterion_main!(benches);
