//! Why a connection to the peer appliance failed, split by who is at fault.
//!
//! An operator looking at status needs to know whether to act here, on the other appliance, or
//! on the network: "they refused us" and "we refused them" are different variants even when the
//! reason is the same (a key mismatch is reported by both sides, each in its own words), and a
//! peer that broke the protocol is kept apart from one that disagreed with it.

use std::fmt;
use std::io;

pub use dyad_core::handshake::advice;
use dyad_core::handshake::{Refusal, SharedHostname};
use dyad_wire::ReasonCode;

/// A failed connect or accept.
#[derive(Debug)]
pub enum TransportError {
    /// The peer refused us and said why (it sent an Error frame).
    PeerRefused { reason: ReasonCode, text: String },
    /// We refused the peer: it is not compatible with this appliance or not the one we expect.
    Incompatible { reason: ReasonCode, text: String },
    /// The peer broke the protocol: garbage, an unexpected message, a step that timed out.
    PeerMisbehaved { reason: ReasonCode, text: String },
    /// The TLS handshake failed in a way that cannot be pinned on either side with certainty
    /// (the peer sent a TLS alert, or closed the connection mid-handshake).
    TlsHandshake { text: String },
    /// The network or the operating system failed (connection refused, reset, unreachable).
    Io { context: String, source: io::Error },
    /// This appliance's own configuration is unusable (identity, address, settings).
    LocalConfig { text: String },
    /// The operator gave the site's shared hostname as the peer address; refused before
    /// anything was resolved or dialled.
    SharedHostname(SharedHostname),
}

impl TransportError {
    /// The protocol reason, when there is one: the same for both sides of a refusal.
    pub fn reason(&self) -> Option<ReasonCode> {
        match self {
            TransportError::PeerRefused { reason, .. }
            | TransportError::Incompatible { reason, .. }
            | TransportError::PeerMisbehaved { reason, .. } => Some(*reason),
            TransportError::SharedHostname(_) => Some(ReasonCode::SharedHostname),
            TransportError::TlsHandshake { .. }
            | TransportError::Io { .. }
            | TransportError::LocalConfig { .. } => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> TransportError {
        TransportError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn misbehaved(reason: ReasonCode, text: impl Into<String>) -> TransportError {
        TransportError::PeerMisbehaved {
            reason,
            text: text.into(),
        }
    }

    pub(crate) fn incompatible(reason: ReasonCode, text: impl Into<String>) -> TransportError {
        TransportError::Incompatible {
            reason,
            text: text.into(),
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::PeerRefused { reason, text } => {
                f.write_str(&Refusal::new(*reason, text.clone()).as_told_by_the_peer())
            }
            TransportError::Incompatible { reason, text } => {
                f.write_str(&Refusal::new(*reason, text.clone()).as_refused_here())
            }
            TransportError::PeerMisbehaved { reason, text } => write!(
                f,
                "the peer broke the protocol ({reason:?}): {text}; {}",
                advice(*reason)
            ),
            TransportError::TlsHandshake { text } => write!(
                f,
                "the TLS handshake with the peer failed: {text}; check the peer appliance's log \
                 and that the address points at its failover port"
            ),
            TransportError::Io { context, source } => write!(
                f,
                "{context}: {source}; check the peer address, that the peer appliance is running \
                 and that the network between them allows the failover port"
            ),
            TransportError::LocalConfig { text } => {
                write!(f, "this appliance's failover settings are unusable: {text}")
            }
            TransportError::SharedHostname(refusal) => write!(f, "{refusal}"),
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransportError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
