//! Why bytes could not become a message, split by who is at fault.
//!
//! [`DecodeError::Incomplete`] is not an error of the peer: the read buffer simply does not
//! hold a whole frame yet. [`DecodeError::Malformed`] means the peer sent bytes that no correct
//! Dyad sends; the connection must be closed. [`EncodeError`] is our own caller's fault: it
//! asked to send something larger than the protocol allows.

use std::fmt;

/// The result of a failed [`crate::decode_frame`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer holds the start of a valid frame; at least `needed` more bytes are required.
    /// The buffer was not modified.
    Incomplete { needed: usize },
    /// The bytes can never become a valid frame. The buffer was not modified, but the
    /// connection should be closed: there is no way to find the next frame boundary.
    Malformed(Malformed),
}

/// The reason a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Malformed {
    BadMagic,
    UnsupportedFrameVersion(u8),
    UnknownKind(u8),
    UnknownFlags(u16),
    ReservedNotZero,
    PayloadTooLarge {
        kind: u8,
        len: usize,
        max: usize,
    },
    /// The payload is not a valid archive of the message its kind names.
    InvalidArchive(String),
    /// The archive is valid but not the one canonical encoding of its value (for example it has
    /// extra bytes in front of the data it uses).
    NonCanonical,
    /// A text or list inside the message exceeds its named limit.
    FieldTooLarge {
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// A chunk frame shorter than its chunk header.
    ChunkTooShort {
        len: usize,
    },
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::BadMagic => write!(f, "frame does not start with the DYAD magic"),
            Malformed::UnsupportedFrameVersion(v) => write!(f, "unsupported frame version {v}"),
            Malformed::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            Malformed::UnknownFlags(flags) => write!(f, "unknown frame flags {flags:#06x}"),
            Malformed::ReservedNotZero => write!(f, "reserved header field is not zero"),
            Malformed::PayloadTooLarge { kind, len, max } => {
                write!(
                    f,
                    "payload of {len} bytes for kind {kind} exceeds the limit of {max}"
                )
            }
            Malformed::InvalidArchive(why) => write!(f, "invalid message archive: {why}"),
            Malformed::NonCanonical => write!(f, "message is not canonically encoded"),
            Malformed::FieldTooLarge { field, len, max } => {
                write!(
                    f,
                    "field {field} has length {len}, above the limit of {max}"
                )
            }
            Malformed::ChunkTooShort { len } => {
                write!(
                    f,
                    "chunk frame payload of {len} bytes is shorter than its header"
                )
            }
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete { needed } => write!(f, "need {needed} more bytes"),
            DecodeError::Malformed(why) => write!(f, "peer sent a malformed frame: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<Malformed> for DecodeError {
    fn from(why: Malformed) -> Self {
        DecodeError::Malformed(why)
    }
}

/// Our own caller asked to encode something the protocol cannot carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    FieldTooLarge {
        field: &'static str,
        len: usize,
        max: usize,
    },
    PayloadTooLarge {
        len: usize,
        max: usize,
    },
    Archive(String),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::FieldTooLarge { field, len, max } => {
                write!(f, "cannot send {field} of length {len}: the limit is {max}")
            }
            EncodeError::PayloadTooLarge { len, max } => {
                write!(
                    f,
                    "cannot send a payload of {len} bytes: the limit is {max}"
                )
            }
            EncodeError::Archive(why) => write!(f, "cannot encode message: {why}"),
        }
    }
}

impl std::error::Error for EncodeError {}
