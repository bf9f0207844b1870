//! The handshake's rules, apart from the sockets and TLS that carry it: what this appliance says
//! about itself in its Hello, which peer Hello it accepts, and which peer addresses it refuses
//! before dialling. The transport (a driver) runs them on real connections and the simulator on
//! simulated ones, so both decide alike.

use std::fmt;

use dyad_wire::{
    negotiate_protocol, Epoch, Hello, NodeId, ReasonCode, Role, SoftwareVersion,
    PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};

/// Above this, the peer's clock differs from ours enough to matter: download keys are
/// time-stamped and certificate checks elsewhere rely on the clock, so status warns.
pub const CLOCK_OFFSET_WARNING_MS: i64 = 30_000;

/// What this appliance says about itself in its Hello (the clock reading is added when sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalHello {
    /// The installed package: appliance state set at init and changed only by an upgrade.
    pub software: SoftwareVersion,
    pub node_id: NodeId,
    pub node_name: String,
    pub role: Role,
    pub epoch: Epoch,
    pub protocol_min: u16,
    pub protocol_max: u16,
}

impl LocalHello {
    /// A Hello speaking every protocol version this build knows.
    pub fn new(
        software: SoftwareVersion,
        node_id: NodeId,
        node_name: impl Into<String>,
        role: Role,
        epoch: Epoch,
    ) -> LocalHello {
        LocalHello {
            software,
            node_id,
            node_name: node_name.into(),
            role,
            epoch,
            protocol_min: PROTOCOL_VERSION_MIN,
            protocol_max: PROTOCOL_VERSION_MAX,
        }
    }
}

/// Whether `peer` may be this appliance's partner: the same installed software, a common
/// protocol version and not this very appliance. Returns the protocol version to speak.
///
/// The texts name both appliances instead of saying "this appliance": a refusal is also sent
/// to the peer and shown to its operator, for whom "this appliance" would be the other one.
pub fn check_peer_hello(local: &LocalHello, peer: &Hello) -> Result<u16, (ReasonCode, String)> {
    if peer.software != local.software {
        return Err((
            ReasonCode::VersionMismatch,
            format!(
                "{:?} runs {} and {:?} runs {}: appliances in a failover \
                 relationship must have the same installed package",
                peer.node_name, peer.software, local.node_name, local.software
            ),
        ));
    }
    let Some(version) = negotiate_protocol(
        (local.protocol_min, local.protocol_max),
        (peer.protocol_min, peer.protocol_max),
    ) else {
        return Err((
            ReasonCode::NoCommonProtocol,
            format!(
                "{:?} speaks protocol versions {}..={}, {:?} {}..={}: there is no \
                 version both understand",
                peer.node_name,
                peer.protocol_min,
                peer.protocol_max,
                local.node_name,
                local.protocol_min,
                local.protocol_max
            ),
        ));
    };
    if peer.node_id == local.node_id {
        return Err((
            ReasonCode::UnexpectedPeer,
            format!(
                "the peer has this appliance's own node id {}: the peer address leads back to \
                 this appliance, or the appliance was cloned",
                peer.node_id
            ),
        ));
    }
    Ok(version)
}

/// What an operator should do about a reason, whichever side reported it.
pub fn advice(reason: ReasonCode) -> &'static str {
    match reason {
        ReasonCode::KeyMismatch => {
            "compare `dyad key show` on both appliances and set the same key on both with \
             `dyad key set`"
        }
        ReasonCode::VersionMismatch => {
            "install the same software package on both appliances (break the relationship to \
             upgrade one at a time)"
        }
        ReasonCode::NoCommonProtocol => "install the same software package on both appliances",
        ReasonCode::UnexpectedPeer => {
            "check the peer address; if the other appliance was replaced or re-initialised, \
             break and re-establish the relationship"
        }
        ReasonCode::SharedHostname => {
            "give the peer appliance's own address, not the site's shared hostname"
        }
        ReasonCode::Malformed => {
            "check that the peer address points at a Dyad appliance's failover port"
        }
        ReasonCode::Timeout => "check the network between the appliances and the peer's load",
        ReasonCode::Busy => "retry shortly; the peer is handling other connection attempts",
        ReasonCode::StaleEpoch => {
            "the appliances disagree about the relationship; break it on the stale side and \
             re-establish from the primary"
        }
        ReasonCode::RelationshipState => {
            "check `dyad status` on both appliances; break the relationship first where needed"
        }
        ReasonCode::ReverseAddressUnreachable => {
            "check the reverse address and that the backup can reach the primary on it"
        }
        ReasonCode::Superseded => {
            "this hardware's settings backup was restored onto its successor, which the peer \
             now pairs with: retire this hardware with `dyad factory-reset`"
        }
        ReasonCode::Internal | ReasonCode::Unknown(_) => "check the peer appliance's log",
    }
}

/// Why one side of a handshake refused the other: the reason code both sides see, and the
/// refusing side's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: ReasonCode,
    pub text: String,
}

impl Refusal {
    pub fn new(reason: ReasonCode, text: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            text: text.into(),
        }
    }

    /// How the refusing side reports it.
    pub fn as_refused_here(&self) -> String {
        format!(
            "refused the peer appliance ({:?}): {}; {}",
            self.reason,
            self.text,
            advice(self.reason)
        )
    }

    /// How the refused side reports it (the refusal reached it as an Error frame).
    pub fn as_told_by_the_peer(&self) -> String {
        format!(
            "the peer appliance refused the connection ({:?}): {}; {}",
            self.reason,
            self.text,
            advice(self.reason)
        )
    }
}

/// A certificate fingerprint as operators compare it: sixteen groups of four hex digits (long,
/// but a shortened hash of a public value would invite collisions).
pub fn certificate_fingerprint_text(fingerprint: &[u8; 32]) -> String {
    fingerprint
        .chunks(2)
        .map(|pair| {
            pair.iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(":")
}

// ----- The handshake's checks, in their order -----
//
// After TLS, each side checks, in this order: (1) the peer's certificate against the one it
// pinned ([`check_pin`]); (2) the peer's proof of the inter-appliance key ([`check_key_proof`]),
// the acceptor checking the dialer's first and answering with its own proof only then, so a
// party without the key learns nothing but "refused"; (3) the peer's Hello
// ([`check_peer_hello`]), the acceptor checking first and sending its own Hello only then. The
// transport runs them on real connections between its I/O steps; [`handshake_outcome`] runs
// the same checks in the same order for both sides at once, for a world that has no sockets.

/// Step 1: the certificate the peer presented must be the pinned one, if one is pinned.
pub fn check_pin(pinned: Option<[u8; 32]>, presented: [u8; 32]) -> Result<(), Refusal> {
    match pinned {
        Some(pinned) if pinned != presented => Err(Refusal::new(
            ReasonCode::UnexpectedPeer,
            format!(
                "the peer's certificate {} is not the pinned certificate {} of the appliance \
                 this one is paired with",
                certificate_fingerprint_text(&presented),
                certificate_fingerprint_text(&pinned)
            ),
        )),
        _ => Ok(()),
    }
}

/// Step 2: the peer proved the same inter-appliance key (`proof_matches`: the transport's
/// constant-time MAC comparison). The text names this appliance's key fingerprint, which the
/// operator compares with the other appliance's.
pub fn check_key_proof(
    proof_matches: bool,
    local_name: &str,
    local_key_fingerprint: &str,
) -> Result<(), Refusal> {
    if proof_matches {
        Ok(())
    } else {
        Err(Refusal::new(
            ReasonCode::KeyMismatch,
            format!(
                "the inter-appliance keys differ (the key fingerprint of {local_name:?} is \
                 {local_key_fingerprint})"
            ),
        ))
    }
}

/// One side of a handshake, as [`handshake_outcome`] sees it.
#[derive(Clone, Debug)]
pub struct HandshakeSide<'a> {
    pub local: &'a LocalHello,
    /// The Hello this side sends (its `LocalHello` with the clock reading).
    pub hello: &'a Hello,
    pub certificate: [u8; 32],
    pub key_fingerprint: &'a str,
    /// The certificate this side insists on (a dialer that knows its peer).
    pub pinned_peer: Option<[u8; 32]>,
}

/// Which side refused a handshake, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    RefusedByDialer(Refusal),
    RefusedByAcceptor(Refusal),
}

impl HandshakeFailure {
    /// What the dialer reports (its replica's `ConnectFailed` reason).
    pub fn dialer_text(&self) -> String {
        match self {
            HandshakeFailure::RefusedByDialer(refusal) => refusal.as_refused_here(),
            HandshakeFailure::RefusedByAcceptor(refusal) => refusal.as_told_by_the_peer(),
        }
    }
}

/// The whole handshake's decision for a dialer and an acceptor, in the transport's order: the
/// dialer's pin, the acceptor's pin, the acceptor's check of the dialer's key proof, then the
/// acceptor's check of the dialer's Hello and the dialer's of the acceptor's. `keys_match`
/// says whether both hold the same inter-appliance key. Returns the protocol version spoken.
pub fn handshake_outcome(
    dialer: &HandshakeSide<'_>,
    acceptor: &HandshakeSide<'_>,
    keys_match: bool,
) -> Result<u16, HandshakeFailure> {
    check_pin(dialer.pinned_peer, acceptor.certificate)
        .map_err(HandshakeFailure::RefusedByDialer)?;
    check_pin(acceptor.pinned_peer, dialer.certificate)
        .map_err(HandshakeFailure::RefusedByAcceptor)?;
    check_key_proof(
        keys_match,
        &acceptor.local.node_name,
        acceptor.key_fingerprint,
    )
    .map_err(HandshakeFailure::RefusedByAcceptor)?;
    check_peer_hello(acceptor.local, dialer.hello).map_err(|(reason, text)| {
        HandshakeFailure::RefusedByAcceptor(Refusal::new(reason, text))
    })?;
    check_peer_hello(dialer.local, acceptor.hello)
        .map_err(|(reason, text)| HandshakeFailure::RefusedByDialer(Refusal::new(reason, text)))
}

/// The operator gave the site's shared hostname as the peer address; refused before anything was
/// resolved or dialled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedHostname {
    pub address: String,
    pub site_hostname: String,
}

impl fmt::Display for SharedHostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused to use {:?} as the peer address: it is the site's shared hostname {:?}, \
             which follows whichever appliance is primary (possibly this one); give the peer \
             appliance's own address, not the site's shared hostname",
            self.address, self.site_hostname
        )
    }
}

impl std::error::Error for SharedHostname {}

/// Refuses the site's shared hostname (which follows the primary around, possibly to this very
/// appliance) as a peer address, in every spelling (case, trailing dot, with or without port).
pub fn check_not_shared_hostname(address: &str, site_hostname: &str) -> Result<(), SharedHostname> {
    let site = normalize_host(site_hostname);
    if site.is_empty() {
        return Ok(());
    }
    if normalize_host(address) == site || normalize_host(host_part(address)) == site {
        return Err(SharedHostname {
            address: address.to_string(),
            site_hostname: site_hostname.to_string(),
        });
    }
    Ok(())
}

fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The host part of `host:port`, `[v6]:port`, a bare host or a bare IPv6 address.
fn host_part(address: &str) -> &str {
    let address = address.trim();
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        // Exactly one colon: host and port. More than one: a bare IPv6 address.
        Some((host, _port)) if !host.contains(':') => host,
        _ => address,
    }
}
