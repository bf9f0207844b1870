//! Dyad's peer protocol, as bytes.
//!
//! Everything two appliances say to each other after TLS is a *frame*: a fixed 16-byte
//! [`FrameHeader`] followed by a payload. Control messages are rkyv archives that are
//! validated with bytecheck (and checked to be canonical) before any field is read; recording
//! chunks carry a small fixed [`ChunkHeader`] and then raw bytes, handed on as
//! [`bytes::Bytes`] that point into the read buffer without copying.
//!
//! This crate does no I/O. [`decode_frame`] takes a read buffer and either returns one
//! message, says how many more bytes it needs ([`DecodeError::Incomplete`]), or says why the
//! bytes are bad ([`DecodeError::Malformed`]); it never panics on any input. The byte layout,
//! the limits and the versioning rule are written down in `docs/wire.md`.
#![forbid(unsafe_code)]

mod codec;
mod control;
mod error;
mod frame;
pub mod hex;
mod ids;
pub mod limits;
mod message;
mod replication;

pub use codec::{decode_frame, encode_chunk_header, encode_frame};
pub use error::{DecodeError, EncodeError, Malformed};
pub use frame::{
    ChunkHeader, FrameHeader, MessageKind, CHUNK_HEADER_LEN, FRAME_HEADER_LEN, FRAME_MAGIC,
    FRAME_VERSION,
};
pub use ids::{Epoch, NodeId, ParseError, Role, SessionId, SoftwareVersion, Version};
pub use message::{
    negotiate_protocol, Chunk, ErrorMessage, Hello, KeepAlive, KeyProof, Message, ReasonCode,
    PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
pub use replication::{
    Break, CatalogAnswer, CatalogItem, CatalogQuery, CatalogRange, ConfigEntry, ConfigPull,
    ConfigUpdate, ConfigVersion, Establish, EstablishReply, FetchChunks, FetchSession,
    OriginSummary, PromotePeer, RangeAnswer, RangeSummary, RoleSwap, RoleSwapReply, SessionHeader,
    SessionMeta, SessionUnavailable, StateReport, Successor, SyncDone, SyncNow,
};
