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
