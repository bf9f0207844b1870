//! The fixed-size frame header and the chunk header, and the message kinds they name.
//!
//! Both headers are encoded by hand, little-endian, field by field, so that their layout is
//! exactly what `docs/wire.md` says; the `#[repr(C)]` structs exist to pin their sizes at
//! compile time and to give the fields names.

use crate::error::Malformed;
use crate::limits::{MAX_CHUNK_BYTES, MAX_CONTROL_PAYLOAD_BYTES};

/// The first four bytes of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"DYAD";

/// Version of the frame layout itself (not of the protocol spoken inside frames). It changes
/// only if the header layout changes; see the versioning rule in `docs/wire.md`.
pub const FRAME_VERSION: u8 = 1;

/// Bytes in a [`FrameHeader`] on the wire.
pub const FRAME_HEADER_LEN: usize = 16;

/// Bytes in a [`ChunkHeader`] on the wire (at the start of a chunk frame's payload).
pub const CHUNK_HEADER_LEN: usize = 32;

/// The header in front of every frame.
///
/// | offset | size | field         |
/// |--------|------|---------------|
/// | 0      | 4    | magic `DYAD`  |
/// | 4      | 1    | frame version |
/// | 5      | 1    | message kind  |
/// | 6      | 2    | flags (0)     |
/// | 8      | 4    | payload length|
/// | 12     | 4    | reserved (0)  |
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub magic: [u8; 4],
    pub version: u8,
    pub kind: u8,
    pub flags: u16,
    pub payload_len: u32,
    pub reserved: u32,
}

const _: () = assert!(std::mem::size_of::<FrameHeader>() == FRAME_HEADER_LEN);

/// The fixed header at the start of a chunk frame's payload; the chunk's bytes follow it.
///
/// | offset | size | field                     |
/// |--------|------|---------------------------|
/// | 0      | 16   | origin node id            |
/// | 16     | 8    | origin sequence           |
/// | 24     | 4    | chunk index               |
/// | 28     | 4    | reserved (0)              |
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkHeader {
    pub origin: [u8; 16],
    pub origin_sequence: u64,
    pub chunk_index: u32,
    pub reserved: u32,
}

const _: () = assert!(std::mem::size_of::<ChunkHeader>() == CHUNK_HEADER_LEN);

/// What a frame carries. The numbers are part of the protocol and are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    /// Post-TLS handshake: versions, identity, role, epoch, clock.
    Hello = 1,
    /// A refusal or failure, with a machine-readable reason and operator text.
    Error = 2,
    /// Liveness probe on an idle connection.
    KeepAlive = 3,
    /// Proof of the inter-appliance key, bound to this TLS connection.
    KeyProof = 4,
    Establish = 5,
    EstablishReply = 6,
    Break = 7,
    SyncNow = 8,
    SyncDone = 9,
    ConfigPull = 10,
    ConfigUpdate = 11,
    CatalogQuery = 12,
    CatalogAnswer = 13,
    FetchSession = 14,
    SessionHeader = 15,
    FetchChunks = 17,
    SessionUnavailable = 18,
    RoleSwap = 19,
    RoleSwapReply = 20,
    PromotePeer = 21,
    StateReport = 22,
    /// A restored appliance names the node ids it succeeds (protocol 2).
    Successor = 23,
    /// A piece of a recording: [`ChunkHeader`] then raw bytes.
    Chunk = 16,
}

impl MessageKind {
    /// Every kind this build understands.
    pub const ALL: [MessageKind; 23] = [
        MessageKind::Hello,
        MessageKind::Error,
        MessageKind::KeepAlive,
        MessageKind::KeyProof,
        MessageKind::Establish,
        MessageKind::EstablishReply,
        MessageKind::Break,
        MessageKind::SyncNow,
        MessageKind::SyncDone,
        MessageKind::ConfigPull,
        MessageKind::ConfigUpdate,
        MessageKind::CatalogQuery,
        MessageKind::CatalogAnswer,
        MessageKind::FetchSession,
        MessageKind::SessionHeader,
        MessageKind::FetchChunks,
        MessageKind::SessionUnavailable,
        MessageKind::RoleSwap,
        MessageKind::RoleSwapReply,
        MessageKind::PromotePeer,
        MessageKind::StateReport,
        MessageKind::Successor,
        MessageKind::Chunk,
    ];

    pub fn from_u8(value: u8) -> Option<MessageKind> {
        Self::ALL.into_iter().find(|kind| *kind as u8 == value)
    }

    /// The largest payload a frame of this kind may carry.
    pub fn max_payload_bytes(self) -> usize {
        match self {
            MessageKind::Chunk => CHUNK_HEADER_LEN + MAX_CHUNK_BYTES,
            _ => MAX_CONTROL_PAYLOAD_BYTES,
        }
    }
}

impl FrameHeader {
    pub fn new(kind: MessageKind, payload_len: u32) -> FrameHeader {
        FrameHeader {
            magic: FRAME_MAGIC,
            version: FRAME_VERSION,
            kind: kind as u8,
            flags: 0,
            payload_len,
            reserved: 0,
        }
    }

    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut out = [0u8; FRAME_HEADER_LEN];
        out[0..4].copy_from_slice(&self.magic);
        out[4] = self.version;
        out[5] = self.kind;
        out[6..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.reserved.to_le_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8; FRAME_HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            magic: [bytes[0], bytes[1], bytes[2], bytes[3]],
            version: bytes[4],
            kind: bytes[5],
            flags: u16::from_le_bytes([bytes[6], bytes[7]]),
            payload_len: u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            reserved: u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
        }
    }

    /// Checks everything the header alone can tell, returning the kind and payload length.
    pub fn validate(&self) -> Result<(MessageKind, usize), Malformed> {
        if self.magic != FRAME_MAGIC {
            return Err(Malformed::BadMagic);
        }
        if self.version != FRAME_VERSION {
            return Err(Malformed::UnsupportedFrameVersion(self.version));
        }
        let kind = MessageKind::from_u8(self.kind).ok_or(Malformed::UnknownKind(self.kind))?;
        if self.flags != 0 {
            return Err(Malformed::UnknownFlags(self.flags));
        }
        if self.reserved != 0 {
            return Err(Malformed::ReservedNotZero);
        }
        let payload_len = self.payload_len as usize;
        if payload_len > kind.max_payload_bytes() {
            return Err(Malformed::PayloadTooLarge {
                kind: self.kind,
                len: payload_len,
                max: kind.max_payload_bytes(),
            });
        }
        Ok((kind, payload_len))
    }
}

impl ChunkHeader {
    pub fn to_bytes(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut out = [0u8; CHUNK_HEADER_LEN];
        out[0..16].copy_from_slice(&self.origin);
        out[16..24].copy_from_slice(&self.origin_sequence.to_le_bytes());
        out[24..28].copy_from_slice(&self.chunk_index.to_le_bytes());
        out[28..32].copy_from_slice(&self.reserved.to_le_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8; CHUNK_HEADER_LEN]) -> ChunkHeader {
        let mut origin = [0u8; 16];
        origin.copy_from_slice(&bytes[0..16]);
        let mut sequence = [0u8; 8];
        sequence.copy_from_slice(&bytes[16..24]);
        ChunkHeader {
            origin,
            origin_sequence: u64::from_le_bytes(sequence),
            chunk_index: u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]),
            reserved: u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_its_byte_layout() {
        let header = FrameHeader::new(MessageKind::KeepAlive, 0x0102_0304);
        let bytes = header.to_bytes();
        assert_eq!(&bytes[0..4], b"DYAD");
        assert_eq!(bytes[5], 3);
        assert_eq!(&bytes[8..12], &[4, 3, 2, 1]);
        assert_eq!(FrameHeader::from_bytes(&bytes), header);
    }

    #[test]
    fn kinds_round_trip_and_unknown_kinds_are_refused() {
        for kind in MessageKind::ALL {
            assert_eq!(MessageKind::from_u8(kind as u8), Some(kind));
        }
        assert_eq!(MessageKind::from_u8(0), None);
        assert_eq!(MessageKind::from_u8(200), None);
    }
}
