//! Properties of the codec: round trips, truncation, corruption, split reads, zero copy, and
//! each refusal the decoder promises.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::frame::FRAME_MAGIC;
use crate::ids::{Epoch, Role, SoftwareVersion, Version};
use crate::limits::{MAX_NODE_NAME_BYTES, MAX_TEXT_BYTES};
use crate::message::ReasonCode;
use crate::replication::*;

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 16]>().prop_map(NodeId)
}

fn version() -> impl Strategy<Value = Version> {
    (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(major, minor, patch)| Version {
        major,
        minor,
        patch,
    })
}

fn message() -> impl Strategy<Value = Message> {
    let hello = (
        any::<(u16, u16)>(),
        version(),
        version(),
        node_id(),
        "[a-z0-9-]{0,40}",
        prop_oneof![
            Just(Role::Standalone),
            Just(Role::Primary),
            Just(Role::Backup)
        ],
        (any::<u64>(), node_id()),
        any::<u64>(),
    )
        .prop_map(|(range, app, base, node_id, name, role, epoch, clock)| {
            Message::Hello(Hello {
                protocol_min: range.0,
                protocol_max: range.1,
                software: SoftwareVersion { app, base },
                node_id,
                node_name: name,
                role,
                epoch: Epoch {
                    counter: epoch.0,
                    node: epoch.1,
                },
                clock_unix_ms: clock,
            })
        });
    let error = (any::<u16>(), ".{0,200}")
        .prop_map(|(code, text)| Message::Error(ErrorMessage { code, text }));
    let keep_alive = any::<u64>().prop_map(|sequence| Message::KeepAlive(KeepAlive { sequence }));
    let chunk = (
        node_id(),
        any::<u64>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..2048),
    )
        .prop_map(|(origin, sequence, chunk_index, data)| {
            Message::Chunk(Chunk {
                session: SessionId { origin, sequence },
                chunk_index,
                data: Bytes::from(data),
            })
        });
    let key_proof = any::<[u8; 32]>().prop_map(|mac| Message::KeyProof(KeyProof { mac }));
    prop_oneof![
        hello,
        error,
        keep_alive,
        key_proof,
        chunk,
        replication_message()
    ]
}

fn epoch() -> impl Strategy<Value = Epoch> {
    (any::<u64>(), node_id()).prop_map(|(counter, node)| Epoch { counter, node })
}

fn session_id() -> impl Strategy<Value = SessionId> {
    (node_id(), any::<u64>()).prop_map(|(origin, sequence)| SessionId { origin, sequence })
}

fn config_version() -> impl Strategy<Value = ConfigVersion> {
    (epoch(), any::<u64>(), any::<[u8; 32]>()).prop_map(|(epoch, sequence, chain)| ConfigVersion {
        epoch,
        sequence,
        chain,
    })
}

fn catalog_range() -> impl Strategy<Value = CatalogRange> {
    (node_id(), any::<u64>(), any::<u8>()).prop_map(|(origin, start, level)| CatalogRange {
        origin,
        start,
        level,
    })
}

fn session_meta() -> impl Strategy<Value = SessionMeta> {
    (
        session_id(),
        any::<(u64, u64, u64)>(),
        any::<[u8; 32]>(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(
            |(id, (started, ended, size), root, chunk, normal)| SessionMeta {
                id,
                started_unix_ms: started,
                ended_unix_ms: ended,
                size_bytes: size,
                root,
                chunk_size_bytes: chunk,
                ended_normally: normal,
            },
        )
}

fn replication_message() -> impl Strategy<Value = Message> {
    let text = ".{0,60}";
    let establish = (epoch(), text, text).prop_map(|(epoch, r, b)| {
        Message::Establish(Establish {
            epoch,
            reverse_address: r,
            backup_address: b,
        })
    });
    let reply = (epoch(), any::<u16>(), text).prop_map(|(epoch, refusal_code, text)| {
        Message::EstablishReply(EstablishReply {
            epoch,
            refusal_code,
            text,
        })
    });
    let brk = epoch().prop_map(|epoch| Message::Break(Break { epoch }));
    let sync_now = any::<u64>().prop_map(|request| Message::SyncNow(SyncNow { request }));
    let sync_done =
        (any::<(u64, u16, u64, u64)>(), text).prop_map(|((request, code, s, b), text)| {
            Message::SyncDone(SyncDone {
                request,
                refusal_code: code,
                text,
                sessions_pulled: s,
                bytes_pulled: b,
            })
        });
    let pull = (epoch(), config_version())
        .prop_map(|(epoch, since)| Message::ConfigPull(ConfigPull { epoch, since }));
    let entry = (
        "[a-z/]{0,20}",
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        config_version(),
    )
        .prop_map(|(key, value, version)| ConfigEntry {
            key,
            value,
            version,
        });
    let update = (
        epoch(),
        any::<(bool, bool)>(),
        config_version(),
        prop::collection::vec(entry, 0..6),
    )
        .prop_map(|(epoch, (full, last_page), snapshot_version, entries)| {
            Message::ConfigUpdate(ConfigUpdate {
                epoch,
                full,
                snapshot_version,
                entries,
                last_page,
            })
        });
    let query = (
        any::<(u64, u32, u32, bool)>(),
        prop::collection::vec(catalog_range(), 0..6),
    )
        .prop_map(|((query, part, parts, origins), ranges)| {
            Message::CatalogQuery(CatalogQuery {
                query,
                part,
                parts,
                origins,
                ranges,
            })
        });
    let summary =
        (any::<u64>(), any::<[u8; 32]>()).prop_map(|(count, hash)| RangeSummary { count, hash });
    let origin =
        (node_id(), any::<u64>(), summary.clone()).prop_map(|(origin, max_sequence, summary)| {
            OriginSummary {
                origin,
                max_sequence,
                summary,
            }
        });
    let item = (any::<u64>(), any::<[u8; 32]>())
        .prop_map(|(sequence, root)| CatalogItem { sequence, root });
    let range_answer = prop_oneof![
        prop::collection::vec(summary, 0..16).prop_map(RangeAnswer::Children),
        prop::collection::vec(item, 0..16).prop_map(RangeAnswer::Items),
    ];
    let answer = (
        any::<(u64, u32, u32)>(),
        prop::collection::vec(origin, 0..4),
        prop::collection::vec(range_answer, 0..4),
    )
        .prop_map(|((query, part, parts), origins, ranges)| {
            Message::CatalogAnswer(CatalogAnswer {
                query,
                part,
                parts,
                origins,
                ranges,
            })
        });
    let fetch = session_id().prop_map(|id| Message::FetchSession(FetchSession { id }));
    let header = (
        session_meta(),
        prop::collection::vec(any::<[u8; 32]>(), 0..5),
    )
        .prop_map(|(meta, chunk_chaining_values)| {
            Message::SessionHeader(SessionHeader {
                meta,
                chunk_chaining_values,
            })
        });
    let fetch_chunks = (session_id(), prop::collection::vec(any::<u32>(), 0..20))
        .prop_map(|(id, chunk_indexes)| Message::FetchChunks(FetchChunks { id, chunk_indexes }));
    let unavailable = (session_id(), text)
        .prop_map(|(id, text)| Message::SessionUnavailable(SessionUnavailable { id, text }));
    let successor = (
        any::<[u8; 16]>(),
        prop::collection::vec(any::<[u8; 16]>(), 0..=crate::limits::MAX_PREDECESSORS),
    )
        .prop_map(|(node, predecessors)| {
            Message::Successor(Successor {
                node_id: NodeId(node),
                predecessors: predecessors.into_iter().map(NodeId).collect(),
            })
        });
    prop_oneof![
        successor,
        establish,
        reply,
        brk,
        sync_now,
        sync_done,
        pull,
        update,
        query,
        answer,
        fetch,
        header,
        fetch_chunks,
        unavailable
    ]
}

fn encode_all(messages: &[Message]) -> (BytesMut, Vec<usize>) {
    let mut out = BytesMut::new();
    let mut ends = Vec::new();
    for message in messages {
        encode_frame(message, &mut out).expect("generated messages are within limits");
        ends.push(out.len());
    }
    (out, ends)
}

proptest! {
    #[test]
    fn every_message_round_trips(message in message()) {
        let (mut buf, _) = encode_all(std::slice::from_ref(&message));
        prop_assert_eq!(decode_frame(&mut buf), Ok(message));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_truncation_is_incomplete(messages in prop::collection::vec(message(), 1..5), cut in any::<prop::sample::Index>()) {
        let (stream, ends) = encode_all(&messages);
        let cut = cut.index(stream.len());
        let mut buf = BytesMut::from(&stream[..cut]);
        let whole_frames = ends.iter().filter(|end| **end <= cut).count();
        for expected in &messages[..whole_frames] {
            prop_assert_eq!(&decode_frame(&mut buf).expect("a whole frame"), expected);
        }
        let before = buf.clone();
        match decode_frame(&mut buf) {
            Err(DecodeError::Incomplete { needed }) => {
                prop_assert!(needed > 0);
                prop_assert_eq!(&buf, &before, "Incomplete must leave the buffer untouched");
            }
            other => prop_assert!(false, "expected Incomplete, got {:?}", other),
        }
    }

    #[test]
    fn random_corruption_never_panics(message in message(), flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8)) {
        let (mut buf, _) = encode_all(std::slice::from_ref(&message));
        for (index, mask) in flips {
            let at = index.index(buf.len());
            buf[at] ^= mask;
        }
        // Any outcome but a panic is acceptable; a clean decode must consume exactly one frame.
        let len_before = buf.len();
        if decode_frame(&mut buf).is_ok() {
            prop_assert!(buf.len() < len_before);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while decode_frame(&mut buf).is_ok() {}
    }

    #[test]
    fn a_stream_split_at_arbitrary_points_decodes_the_same(
        messages in prop::collection::vec(message(), 1..8),
        splits in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let (stream, _) = encode_all(&messages);
        let mut cuts: Vec<usize> = splits.iter().map(|s| s.index(stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut fed = 0;
        for cut in cuts {
            buf.extend_from_slice(&stream[fed..cut]);
            fed = cut;
            loop {
                match decode_frame(&mut buf) {
                    Ok(message) => decoded.push(message),
                    Err(DecodeError::Incomplete { .. }) => break,
                    Err(DecodeError::Malformed(why)) => prop_assert!(false, "malformed: {}", why),
                }
            }
        }
        prop_assert_eq!(decoded, messages);
        prop_assert!(buf.is_empty());
    }
}

#[test]
fn decoding_a_chunk_copies_no_payload_bytes() {
    let data = Bytes::from(vec![0xAB; 64 * 1024]);
    let chunk = Message::Chunk(Chunk {
        session: SessionId {
            origin: NodeId([3; 16]),
            sequence: 9,
        },
        chunk_index: 4,
        data,
    });
    let (mut buf, _) = encode_all(&[chunk]);
    let read_buffer = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Ok(Message::Chunk(decoded)) = decode_frame(&mut buf) else {
        panic!("expected a chunk");
    };
    let payload_start = decoded.data.as_ptr() as usize;
    assert!(
        read_buffer.contains(&payload_start)
            && read_buffer.contains(&(payload_start + decoded.data.len() - 1)),
        "the payload must point into the read buffer"
    );
    assert_eq!(
        payload_start,
        read_buffer.start + FRAME_HEADER_LEN + CHUNK_HEADER_LEN
    );
}

fn keep_alive_frame() -> BytesMut {
    encode_all(&[Message::KeepAlive(KeepAlive { sequence: 1 })]).0
}

fn malformed(buf: &mut BytesMut) -> Malformed {
    match decode_frame(buf) {
        Err(DecodeError::Malformed(why)) => why,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn refuses_a_bad_magic_an_unknown_kind_and_an_unsupported_version() {
    let mut buf = keep_alive_frame();
    buf[0] = b'X';
    assert_eq!(malformed(&mut buf), Malformed::BadMagic);

    let mut buf = keep_alive_frame();
    buf[5] = 77;
    assert_eq!(malformed(&mut buf), Malformed::UnknownKind(77));

    let mut buf = keep_alive_frame();
    buf[4] = 9;
    assert_eq!(malformed(&mut buf), Malformed::UnsupportedFrameVersion(9));

    let mut buf = keep_alive_frame();
    buf[6] = 1;
    assert_eq!(malformed(&mut buf), Malformed::UnknownFlags(1));

    let mut buf = keep_alive_frame();
    buf[12] = 1;
    assert_eq!(malformed(&mut buf), Malformed::ReservedNotZero);
}

#[test]
fn refuses_an_oversized_length_from_the_header_alone() {
    // Only the header is present: the decoder must refuse rather than ask for 4 GiB more.
    let header = FrameHeader::new(MessageKind::Hello, u32::MAX);
    let mut buf = BytesMut::from(&header.to_bytes()[..]);
    assert!(matches!(
        malformed(&mut buf),
        Malformed::PayloadTooLarge { .. }
    ));

    let header = FrameHeader::new(
        MessageKind::Chunk,
        (CHUNK_HEADER_LEN + MAX_CHUNK_BYTES + 1) as u32,
    );
    let mut buf = BytesMut::from(&header.to_bytes()[..]);
    assert!(matches!(
        malformed(&mut buf),
        Malformed::PayloadTooLarge { .. }
    ));
}

#[test]
fn refuses_trailing_bytes_inside_a_payload() {
    let mut payload = BytesMut::new();
    payload.extend_from_slice(&[0u8; 8]);
    let archive = rkyv::to_bytes::<rancor::Error>(&KeepAlive { sequence: 5 }).expect("encodes");
    payload.extend_from_slice(&archive);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(
        &FrameHeader::new(MessageKind::KeepAlive, payload.len() as u32).to_bytes(),
    );
    buf.extend_from_slice(&payload);
    assert_eq!(malformed(&mut buf), Malformed::NonCanonical);
}

#[test]
fn refuses_an_invalid_archive() {
    let mut buf = encode_all(&[Message::Error(ErrorMessage::new(
        ReasonCode::Busy,
        "too many connections are authenticating",
    ))])
    .0;
    // The relative pointer of the text now points outside the payload.
    let last = buf.len() - 1;
    buf[last] = 0x7f;
    assert!(matches!(malformed(&mut buf), Malformed::InvalidArchive(_)));

    let mut buf = BytesMut::new();
    buf.extend_from_slice(&FrameHeader::new(MessageKind::Hello, 3).to_bytes());
    buf.extend_from_slice(&[1, 2, 3]);
    assert!(matches!(malformed(&mut buf), Malformed::InvalidArchive(_)));
}

#[test]
fn refuses_fields_above_their_limits_both_ways() {
    let long_text = "x".repeat(MAX_TEXT_BYTES + 1);
    let error = ErrorMessage::new(ReasonCode::Internal, long_text.clone());
    let mut out = BytesMut::new();
    assert!(matches!(
        encode_frame(&Message::Error(error.clone()), &mut out),
        Err(EncodeError::FieldTooLarge { field: "text", .. })
    ));
    // A peer that bypasses the encoder's check is refused by the decoder.
    let archive = rkyv::to_bytes::<rancor::Error>(&error).expect("encodes");
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&FrameHeader::new(MessageKind::Error, archive.len() as u32).to_bytes());
    buf.extend_from_slice(&archive);
    assert!(matches!(
        malformed(&mut buf),
        Malformed::FieldTooLarge { field: "text", .. }
    ));

    let mut hello = match hello_message() {
        Message::Hello(hello) => hello,
        _ => unreachable!(),
    };
    hello.node_name = "n".repeat(MAX_NODE_NAME_BYTES + 1);
    assert!(encode_frame(&Message::Hello(hello), &mut out).is_err());

    let successor = Successor {
        node_id: NodeId([1; 16]),
        predecessors: vec![NodeId([2; 16]); crate::limits::MAX_PREDECESSORS + 1],
    };
    assert!(matches!(
        encode_frame(&Message::Successor(successor.clone()), &mut out),
        Err(EncodeError::FieldTooLarge {
            field: "predecessors",
            ..
        })
    ));
    let archive = rkyv::to_bytes::<rancor::Error>(&successor).expect("encodes");
    let mut buf = BytesMut::new();
    buf.extend_from_slice(
        &FrameHeader::new(MessageKind::Successor, archive.len() as u32).to_bytes(),
    );
    buf.extend_from_slice(&archive);
    assert!(matches!(
        malformed(&mut buf),
        Malformed::FieldTooLarge {
            field: "predecessors",
            ..
        }
    ));
}

#[test]
fn refuses_a_chunk_shorter_than_its_header_and_a_chunk_above_the_limit() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&FrameHeader::new(MessageKind::Chunk, 4).to_bytes());
    buf.extend_from_slice(&[0; 4]);
    assert_eq!(malformed(&mut buf), Malformed::ChunkTooShort { len: 4 });

    let mut out = BytesMut::new();
    let too_big = encode_chunk_header(
        SessionId {
            origin: NodeId([0; 16]),
            sequence: 0,
        },
        0,
        MAX_CHUNK_BYTES + 1,
        &mut out,
    );
    assert!(matches!(too_big, Err(EncodeError::PayloadTooLarge { .. })));
    assert!(out.is_empty(), "a refused encode writes nothing");
}

#[test]
fn the_empty_buffer_needs_a_header() {
    let mut buf = BytesMut::new();
    assert_eq!(
        decode_frame(&mut buf),
        Err(DecodeError::Incomplete {
            needed: FRAME_HEADER_LEN
        })
    );
    let mut buf = BytesMut::from(&FRAME_MAGIC[..]);
    assert_eq!(
        decode_frame(&mut buf),
        Err(DecodeError::Incomplete {
            needed: FRAME_HEADER_LEN - 4
        })
    );
}

fn hello_message() -> Message {
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
        node_id: NodeId([9; 16]),
        node_name: "a".into(),
        role: Role::Backup,
        epoch: Epoch {
            counter: 1,
            node: NodeId([9; 16]),
        },
        clock_unix_ms: 0,
    })
}

#[test]
fn refuses_a_fetch_for_more_chunks_than_the_limit() {
    let request = FetchChunks {
        id: SessionId {
            origin: NodeId([1; 16]),
            sequence: 1,
        },
        chunk_indexes: vec![0; crate::limits::MAX_CHUNKS_PER_FETCH + 1],
    };
    let mut out = BytesMut::new();
    assert!(matches!(
        encode_frame(&Message::FetchChunks(request.clone()), &mut out),
        Err(EncodeError::FieldTooLarge {
            field: "chunk_indexes",
            ..
        })
    ));
    let archive = rkyv::to_bytes::<rancor::Error>(&request).expect("encodes");
    let mut buf = BytesMut::new();
    buf.extend_from_slice(
        &FrameHeader::new(MessageKind::FetchChunks, archive.len() as u32).to_bytes(),
    );
    buf.extend_from_slice(&archive);
    assert!(matches!(
        malformed(&mut buf),
        Malformed::FieldTooLarge {
            field: "chunk_indexes",
            ..
        }
    ));
}
