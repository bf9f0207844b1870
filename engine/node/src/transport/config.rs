//! What the transport needs from the appliance's state, and how long each handshake step may
//! take: given by the driver, read by the handshake and the acceptor.

use std::sync::Arc;
use std::time::Duration;

use dyad_core::handshake::LocalHello;

use super::error::TransportError;
use super::identity::{CertFingerprint, Identity};
use super::keys::InterApplianceKey;

/// How long each handshake step may take. Together they bound how long a silent or slow peer
/// can hold an authenticating slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Resolving the peer address and opening TCP (client side).
    pub connect_timeout: Duration,
    /// From TCP established (or accepted) to TLS handshake complete.
    pub tls_handshake_timeout: Duration,
    /// Waiting for the peer's key proof.
    pub key_proof_timeout: Duration,
    /// Waiting for the peer's Hello.
    pub hello_timeout: Duration,
    /// Writing one handshake frame (a peer that does not read cannot stall us either).
    pub send_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            key_proof_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(5),
        }
    }
}

/// Default bound on connections an [`Acceptor`] authenticates at once. A pair needs one or two;
/// the rest of the room is for retries, not for strangers.
pub const DEFAULT_MAX_AUTHENTICATING: usize = 8;

/// Everything the transport needs from the appliance's state.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub identity: Arc<Identity>,
    pub psk: InterApplianceKey,
    /// The paired peer's certificate fingerprint, once the relationship is established.
    pub pinned_peer: Option<CertFingerprint>,
    pub local: LocalHello,
    /// The site's shared hostname, never accepted as a peer address.
    pub site_hostname: Option<String>,
    pub timeouts: Timeouts,
    /// Connections an [`Acceptor`] authenticates at once; more are dropped on arrival.
    pub max_authenticating: usize,
}

impl TransportConfig {
    pub fn new(identity: Arc<Identity>, psk: InterApplianceKey, local: LocalHello) -> Self {
        TransportConfig {
            identity,
            psk,
            pinned_peer: None,
            local,
            site_hostname: None,
            timeouts: Timeouts::default(),
            max_authenticating: DEFAULT_MAX_AUTHENTICATING,
        }
    }

    /// Refuses settings that would only fail later, on the wire.
    pub fn validate(&self) -> Result<(), TransportError> {
        let max = dyad_wire::limits::MAX_NODE_NAME_BYTES;
        if self.local.node_name.len() > max {
            return Err(TransportError::LocalConfig {
                text: format!(
                    "the node name is {} bytes long; the limit is {max}: choose a shorter name",
                    self.local.node_name.len()
                ),
            });
        }
        if self.local.protocol_min > self.local.protocol_max {
            return Err(TransportError::LocalConfig {
                text: format!(
                    "protocol range {}..={} is empty",
                    self.local.protocol_min, self.local.protocol_max
                ),
            });
        }
        if self.max_authenticating == 0 {
            return Err(TransportError::LocalConfig {
                text: "max_authenticating is 0, so no peer could ever connect".to_string(),
            });
        }
        Ok(())
    }
}
