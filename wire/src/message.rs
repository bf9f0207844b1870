//! The messages two appliances exchange, and the small value types inside them.
//!
//! Control messages are plain Rust structs archived with rkyv. Each one declares its
//! [`MessageKind`] and its field limits through [`ControlMessage`], so the codec can check
//! lengths on the validated archive before it deserializes (allocates) anything.

use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};

use crate::control::{encodable_limit, field_limit, ControlMessage};
use crate::error::{EncodeError, Malformed};
use crate::frame::MessageKind;
use crate::ids::{Epoch, NodeId, Role, SessionId, SoftwareVersion};
use crate::limits::{MAX_NODE_NAME_BYTES, MAX_TEXT_BYTES};
use crate::replication::{
    Break, CatalogAnswer, CatalogQuery, ConfigPull, ConfigUpdate, Establish, EstablishReply,
    FetchChunks, FetchSession, PromotePeer, RoleSwap, RoleSwapReply, SessionHeader,
    SessionUnavailable, StateReport, Successor, SyncDone, SyncNow,
};

/// Oldest protocol version this build speaks. Version 2 carries the configuration chain in
/// every `ConfigVersion` and adds `Successor`; version 1's layouts are no longer spoken (paired
/// appliances run the same software, and `Hello`, unchanged, still carries the refusal).
pub const PROTOCOL_VERSION_MIN: u16 = 2;
/// Newest protocol version this build speaks.
pub const PROTOCOL_VERSION_MAX: u16 = 2;

/// The highest protocol version both ranges contain, if any.
pub fn negotiate_protocol(ours: (u16, u16), theirs: (u16, u16)) -> Option<u16> {
    let low = ours.0.max(theirs.0);
    let high = ours.1.min(theirs.1);
    (low <= high && ours.0 <= ours.1 && theirs.0 <= theirs.1).then_some(high)
}

/// The first message each side sends once the secure channel is up.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub protocol_min: u16,
    pub protocol_max: u16,
    pub software: SoftwareVersion,
    pub node_id: NodeId,
    pub node_name: String,
    pub role: Role,
    pub epoch: Epoch,
    /// The sender's wall clock when it sent this, in milliseconds since the Unix epoch; the
    /// receiver derives the clock offset shown in status.
    pub clock_unix_ms: u64,
}

/// Why a peer refused or failed something. Codes are part of the protocol and never reused;
/// a code this build does not know is kept as [`ReasonCode::Unknown`] and its text shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    /// The two appliances hold different inter-appliance keys.
    KeyMismatch,
    /// The installed software versions differ.
    VersionMismatch,
    /// The protocol version ranges do not overlap.
    NoCommonProtocol,
    /// The peer is not the appliance this one is paired with.
    UnexpectedPeer,
    /// The site's shared hostname was given as a peer address.
    SharedHostname,
    /// The peer sent bytes that are not a valid frame.
    Malformed,
    /// A step took longer than its timeout.
    Timeout,
    /// The receiver is busy (too many connections still authenticating).
    Busy,
    /// Something failed inside the sender; the text says what.
    Internal,
    /// The message belongs to an epoch older than the receiver's; the sender must step down.
    StaleEpoch,
    /// The request does not fit the receiver's relationship state (for example it is already
    /// the backup of another primary); the text says what to do.
    RelationshipState,
    /// The backup could not reach the primary over the reverse address it was given.
    ReverseAddressUnreachable,
    /// The sender is old hardware whose settings backup was restored onto a successor, which
    /// the receiver now pairs with instead; the text names the successor.
    Superseded,
    Unknown(u16),
}

impl ReasonCode {
    pub fn as_u16(self) -> u16 {
        match self {
            ReasonCode::KeyMismatch => 1,
            ReasonCode::VersionMismatch => 2,
            ReasonCode::NoCommonProtocol => 3,
            ReasonCode::UnexpectedPeer => 4,
            ReasonCode::SharedHostname => 5,
            ReasonCode::Malformed => 6,
            ReasonCode::Timeout => 7,
            ReasonCode::Busy => 8,
            ReasonCode::Internal => 9,
            ReasonCode::StaleEpoch => 10,
            ReasonCode::RelationshipState => 11,
            ReasonCode::ReverseAddressUnreachable => 12,
            ReasonCode::Superseded => 13,
            ReasonCode::Unknown(code) => code,
        }
    }

    pub fn from_u16(code: u16) -> ReasonCode {
        match code {
            1 => ReasonCode::KeyMismatch,
            2 => ReasonCode::VersionMismatch,
            3 => ReasonCode::NoCommonProtocol,
            4 => ReasonCode::UnexpectedPeer,
            5 => ReasonCode::SharedHostname,
            6 => ReasonCode::Malformed,
            7 => ReasonCode::Timeout,
            8 => ReasonCode::Busy,
            9 => ReasonCode::Internal,
            10 => ReasonCode::StaleEpoch,
            11 => ReasonCode::RelationshipState,
            12 => ReasonCode::ReverseAddressUnreachable,
            13 => ReasonCode::Superseded,
            other => ReasonCode::Unknown(other),
        }
    }
}

/// A refusal or failure: a machine-readable code and text for the operator.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorMessage {
    pub code: u16,
    pub text: String,
}

impl ErrorMessage {
    pub fn new(code: ReasonCode, text: impl Into<String>) -> ErrorMessage {
        ErrorMessage {
            code: code.as_u16(),
            text: text.into(),
        }
    }

    pub fn reason(&self) -> ReasonCode {
        ReasonCode::from_u16(self.code)
    }
}

/// Sent on an idle connection so that both sides notice a dead peer.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    pub sequence: u64,
}

/// Proves that the sender holds the inter-appliance key without revealing it: a keyed MAC over
/// this TLS connection's exporter value and the sender's side of the connection. How it is
/// computed is the transport's business (`docs/security.md`); the wire only carries it.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyProof {
    pub mac: [u8; 32],
}

/// A piece of a recording. `data` shares the read buffer it was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub session: SessionId,
    pub chunk_index: u32,
    pub data: Bytes,
}

/// Lists every control message once: the [`Message`] variant, its payload type. The enum,
/// its `kind()`, and the codec's encode and decode tables are all generated from this list,
/// so a new message cannot be half-added.
macro_rules! control_messages {
    ($callback:ident) => {
        $callback! {
            Hello(Hello),
            Error(ErrorMessage),
            KeepAlive(KeepAlive),
            KeyProof(KeyProof),
            Establish(Establish),
            EstablishReply(EstablishReply),
            Break(Break),
            SyncNow(SyncNow),
            SyncDone(SyncDone),
            ConfigPull(ConfigPull),
            ConfigUpdate(ConfigUpdate),
            CatalogQuery(CatalogQuery),
            CatalogAnswer(CatalogAnswer),
            FetchSession(FetchSession),
            SessionHeader(SessionHeader),
            FetchChunks(FetchChunks),
            SessionUnavailable(SessionUnavailable),
            RoleSwap(RoleSwap),
            RoleSwapReply(RoleSwapReply),
            PromotePeer(PromotePeer),
            StateReport(StateReport),
            Successor(Successor),
        }
    };
}
pub(crate) use control_messages;

macro_rules! define_message {
    ($($variant:ident($ty:ty),)*) => {
        /// Everything that can travel in a frame.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Message {
            $($variant($ty),)*
            Chunk(Chunk),
        }

        impl Message {
            pub fn kind(&self) -> MessageKind {
                match self {
                    $(Message::$variant(_) => MessageKind::$variant,)*
                    Message::Chunk(_) => MessageKind::Chunk,
                }
            }
        }
    };
}
control_messages!(define_message);

impl ControlMessage for Hello {
    const KIND: MessageKind = MessageKind::Hello;

    fn check_archived(archived: &ArchivedHello) -> Result<(), Malformed> {
        field_limit("node_name", archived.node_name.len(), MAX_NODE_NAME_BYTES)
    }

    fn check_encodable(&self) -> Result<(), EncodeError> {
        encodable_limit("node_name", self.node_name.len(), MAX_NODE_NAME_BYTES)
    }
}

impl ControlMessage for ErrorMessage {
    const KIND: MessageKind = MessageKind::Error;

    fn check_archived(archived: &ArchivedErrorMessage) -> Result<(), Malformed> {
        field_limit("text", archived.text.len(), MAX_TEXT_BYTES)
    }

    fn check_encodable(&self) -> Result<(), EncodeError> {
        encodable_limit("text", self.text.len(), MAX_TEXT_BYTES)
    }
}

impl ControlMessage for KeepAlive {
    const KIND: MessageKind = MessageKind::KeepAlive;

    fn check_archived(_: &ArchivedKeepAlive) -> Result<(), Malformed> {
        Ok(())
    }

    fn check_encodable(&self) -> Result<(), EncodeError> {
        Ok(())
    }
}

impl ControlMessage for KeyProof {
    const KIND: MessageKind = MessageKind::KeyProof;

    fn check_archived(_: &ArchivedKeyProof) -> Result<(), Malformed> {
        Ok(())
    }

    fn check_encodable(&self) -> Result<(), EncodeError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Version;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate_protocol((1, 3), (2, 5)), Some(3));
        assert_eq!(negotiate_protocol((1, 1), (1, 1)), Some(1));
        assert_eq!(negotiate_protocol((1, 2), (3, 4)), None);
        assert_eq!(
            negotiate_protocol((3, 1), (1, 3)),
            None,
            "an inverted range is no range"
        );
    }

    #[test]
    fn reason_codes_round_trip_and_unknown_codes_survive() {
        for code in 0..=20u16 {
            assert_eq!(ReasonCode::from_u16(code).as_u16(), code);
        }
        assert_eq!(ReasonCode::from_u16(999), ReasonCode::Unknown(999));
    }

    #[test]
    fn epochs_compare_counter_first_then_node() {
        let low_node = NodeId([1; 16]);
        let high_node = NodeId([2; 16]);
        let a = Epoch {
            counter: 2,
            node: low_node,
        };
        let b = Epoch {
            counter: 1,
            node: high_node,
        };
        assert!(a > b);
        assert!(
            Epoch {
                counter: 2,
                node: high_node
            } > a
        );
    }

    #[test]
    fn versions_print_for_operators() {
        let software = SoftwareVersion {
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
        };
        assert_eq!(software.to_string(), "7.3.0 (base 3.2.0)");
    }
}
