//! Turning messages into frames and read buffers back into messages.
//!
//! Decoding reads a `BytesMut` read buffer in place: it parses and validates the header,
//! checks the payload length against the kind's limit before anything else, validates the
//! payload (bytecheck for archives, then field limits, then canonical form) and only then
//! consumes the frame. A chunk's data is split off the buffer and frozen, so it reaches the
//! store as `Bytes` pointing into the very memory the socket read into.

use bytes::{Buf, BufMut, BytesMut};
use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::control::ControlMessage;
use crate::error::{DecodeError, EncodeError, Malformed};
use crate::frame::{ChunkHeader, FrameHeader, MessageKind, CHUNK_HEADER_LEN, FRAME_HEADER_LEN};
use crate::ids::{NodeId, SessionId};
use crate::limits::{MAX_CHUNK_BYTES, MAX_CONTROL_PAYLOAD_BYTES};
use crate::message::{control_messages, Chunk, ErrorMessage, Hello, KeepAlive, KeyProof, Message};
use crate::replication::{
    Break, CatalogAnswer, CatalogQuery, ConfigPull, ConfigUpdate, Establish, EstablishReply,
    FetchChunks, FetchSession, PromotePeer, RoleSwap, RoleSwapReply, SessionHeader,
    SessionUnavailable, StateReport, Successor, SyncDone, SyncNow,
};

/// Appends `message` as one frame to `out`.
pub fn encode_frame(message: &Message, out: &mut BytesMut) -> Result<(), EncodeError> {
    macro_rules! encode_table {
        ($($variant:ident($ty:ty),)*) => {
            match message {
                $(Message::$variant(inner) => encode_control(inner, out),)*
                Message::Chunk(chunk) => {
                    encode_chunk_header(chunk.session, chunk.chunk_index, chunk.data.len(), out)?;
                    out.extend_from_slice(&chunk.data);
                    Ok(())
                }
            }
        };
    }
    control_messages!(encode_table)
}

/// Appends the frame header and chunk header of a chunk frame whose `data_len` bytes of data
/// the caller writes next (for example with a vectored write, so the data is never copied).
pub fn encode_chunk_header(
    session: SessionId,
    chunk_index: u32,
    data_len: usize,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if data_len > MAX_CHUNK_BYTES {
        return Err(EncodeError::PayloadTooLarge {
            len: data_len,
            max: MAX_CHUNK_BYTES,
        });
    }
    let payload_len = u32::try_from(CHUNK_HEADER_LEN + data_len)
        .expect("a chunk payload is below MAX_CHUNK_BYTES plus a small header, far below 4 GiB");
    let chunk_header = ChunkHeader {
        origin: session.origin.0,
        origin_sequence: session.sequence,
        chunk_index,
        reserved: 0,
    };
    out.reserve(FRAME_HEADER_LEN + CHUNK_HEADER_LEN + data_len);
    out.put_slice(&FrameHeader::new(MessageKind::Chunk, payload_len).to_bytes());
    out.put_slice(&chunk_header.to_bytes());
    Ok(())
}

fn encode_control<T>(message: &T, out: &mut BytesMut) -> Result<(), EncodeError>
where
    T: ControlMessage
        + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    message.check_encodable()?;
    let payload = rkyv::to_bytes::<rancor::Error>(message)
        .map_err(|error| EncodeError::Archive(error.to_string()))?;
    if payload.len() > MAX_CONTROL_PAYLOAD_BYTES {
        return Err(EncodeError::PayloadTooLarge {
            len: payload.len(),
            max: MAX_CONTROL_PAYLOAD_BYTES,
        });
    }
    let payload_len = u32::try_from(payload.len())
        .expect("payload length was checked against MAX_CONTROL_PAYLOAD_BYTES");
    out.reserve(FRAME_HEADER_LEN + payload.len());
    out.put_slice(&FrameHeader::new(T::KIND, payload_len).to_bytes());
    out.put_slice(&payload);
    Ok(())
}

/// Takes one whole frame off the front of `buf` and returns its message.
///
/// On [`DecodeError::Incomplete`] and [`DecodeError::Malformed`] the buffer is left as it was.
/// Never panics, whatever `buf` holds.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Message, DecodeError> {
    let Some(header_bytes) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(DecodeError::Incomplete {
            needed: FRAME_HEADER_LEN - buf.len(),
        });
    };
    let header = FrameHeader::from_bytes(header_bytes);
    let (kind, payload_len) = header.validate()?;
    let frame_len = FRAME_HEADER_LEN + payload_len;
    if buf.len() < frame_len {
        return Err(DecodeError::Incomplete {
            needed: frame_len - buf.len(),
        });
    }
    let payload = &buf[FRAME_HEADER_LEN..frame_len];
    macro_rules! decode_table {
        ($($variant:ident($ty:ty),)*) => {
            match kind {
                $(MessageKind::$variant => Some(Message::$variant(decode_control::<$ty>(payload)?)),)*
                MessageKind::Chunk => None,
            }
        };
    }
    let message = match control_messages!(decode_table) {
        Some(message) => message,
        None => {
            let chunk_header_bytes = payload
                .first_chunk::<CHUNK_HEADER_LEN>()
                .ok_or(Malformed::ChunkTooShort { len: payload_len })?;
            let chunk_header = ChunkHeader::from_bytes(chunk_header_bytes);
            if chunk_header.reserved != 0 {
                return Err(Malformed::ReservedNotZero.into());
            }
            let mut frame = buf.split_to(frame_len);
            frame.advance(FRAME_HEADER_LEN + CHUNK_HEADER_LEN);
            return Ok(Message::Chunk(Chunk {
                session: SessionId {
                    origin: NodeId(chunk_header.origin),
                    sequence: chunk_header.origin_sequence,
                },
                chunk_index: chunk_header.chunk_index,
                data: frame.freeze(),
            }));
        }
    };
    buf.advance(frame_len);
    Ok(message)
}

fn decode_control<T>(payload: &[u8]) -> Result<T, Malformed>
where
    T: ControlMessage
        + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let archived = rkyv::access::<T::Archived, rancor::Error>(payload)
        .map_err(|error| Malformed::InvalidArchive(error.to_string()))?;
    T::check_archived(archived)?;
    let value = rkyv::deserialize::<T, rancor::Error>(archived)
        .map_err(|error| Malformed::InvalidArchive(error.to_string()))?;
    // rkyv finds the root at the end of the buffer and never looks at bytes nothing points to,
    // so a peer could pad a message with junk. Requiring the one canonical encoding rejects
    // that (and any other slack) without a custom parser.
    let canonical = rkyv::to_bytes::<rancor::Error>(&value)
        .map_err(|error| Malformed::InvalidArchive(error.to_string()))?;
    if canonical.as_slice() != payload {
        return Err(Malformed::NonCanonical);
    }
    Ok(value)
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
