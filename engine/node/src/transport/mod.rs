//! The secure channel between the two appliances: mutually authenticated TLS 1.3 proven with
//! the inter-appliance pre-shared key, then a Hello exchange that refuses incompatible peers.
//!
//! This is a driver: it owns sockets, timers and the wall clock, so the replica state machines
//! never do. [`connect`] dials the peer; an [`Acceptor`] serves a listener with a bounded number
//! of connections still authenticating. Both hand back an [`AuthenticatedConnection`] only after
//! TLS, the pinned-identity check, both key proofs and the Hello checks passed; every refusal
//! reaches both operators with the same [`ReasonCode`]. The design and threat model are in
//! `docs/security.md`.

mod config;
mod connection;
mod crypto_provider;
mod error;
mod files;
mod handshake;
mod identity;
mod keys;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

pub use config::{Timeouts, TransportConfig, DEFAULT_MAX_AUTHENTICATING};
pub use connection::{AuthenticatedConnection, FrameReader, FrameWriter, PeerInfo};
pub use crypto_provider::provider;
pub use dyad_core::handshake::{
    check_peer_hello, LocalHello, SharedHostname, CLOCK_OFFSET_WARNING_MS,
};
pub use error::{advice, TransportError};
pub use files::{read_limited, write_atomically, FileError, PUBLIC_FILE_MODE, SECRET_FILE_MODE};
pub use identity::{CertFingerprint, Identity, IdentityError};
pub use keys::{
    key_set, key_show, keygen, InterApplianceKey, KeyError, KeyFingerprint, KEY_TEXT_PREFIX,
};
pub use tls::{client_config, server_config, PeerCertVerifier, TLS_SERVER_NAME};

/// Refuses the site's shared hostname (which follows the primary around, possibly to this very
/// appliance) as a peer address, before anything is resolved or dialled.
pub fn check_peer_address(address: &str, site_hostname: &str) -> Result<(), TransportError> {
    dyad_core::handshake::check_not_shared_hostname(address, site_hostname)
        .map_err(TransportError::SharedHostname)
}

/// Dials the peer appliance at `peer_address` (`host:port`) and runs the whole handshake.
pub async fn connect(
    peer_address: &str,
    config: &TransportConfig,
) -> Result<AuthenticatedConnection, TransportError> {
    config.validate()?;
    if let Some(site_hostname) = &config.site_hostname {
        check_peer_address(peer_address, site_hostname)?;
    }
    let limit = config.timeouts.connect_timeout;
    let tcp = match timeout(limit, dial(peer_address)).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(TransportError::io(
                format!("connecting to {peer_address}"),
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {} ms", limit.as_millis()),
                ),
            ))
        }
    };
    handshake::client_handshake(tcp, config).await
}

async fn dial(peer_address: &str) -> Result<TcpStream, TransportError> {
    let addresses = tokio::net::lookup_host(peer_address)
        .await
        .map_err(|error| TransportError::io(format!("resolving {peer_address}"), error))?;
    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(tcp) => {
                // Handshake messages are small and strictly alternate; Nagle would delay each.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(TransportError::io(
        format!("connecting to {peer_address}"),
        last_error.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name resolved to no address",
            )
        }),
    ))
}

/// One finished server-side handshake, successful or not (failures are reported so that status
/// can show why the peer could not connect).
#[derive(Debug)]
pub struct Accepted {
    pub peer_addr: SocketAddr,
    pub result: Result<AuthenticatedConnection, TransportError>,
}

/// Serves a listener: accepts TCP connections, runs the server handshake for at most
/// `max_authenticating` of them at once (a connection arriving while all slots are taken is
/// closed at once, before TLS, so it costs no handshake work) and hands over the results.
///
/// Dropping the acceptor stops the listener and every handshake in progress.
pub struct Acceptor {
    results: mpsc::Receiver<Accepted>,
    task: JoinHandle<()>,
    local_addr: SocketAddr,
}

impl Acceptor {
    /// Starts serving `listener` with a fixed configuration. Must be called within a tokio
    /// runtime.
    pub fn new(
        listener: TcpListener,
        config: Arc<TransportConfig>,
    ) -> Result<Acceptor, TransportError> {
        Acceptor::with_updates(listener, watch::channel(config).1)
    }

    /// Starts serving `listener`; each new connection uses the configuration current when it
    /// arrives (the role and epoch in the Hello change with the relationship).
    pub fn with_updates(
        listener: TcpListener,
        updates: watch::Receiver<Arc<TransportConfig>>,
    ) -> Result<Acceptor, TransportError> {
        let config = updates.borrow().clone();
        config.validate()?;
        let local_addr = listener
            .local_addr()
            .map_err(|error| TransportError::io("reading the listener's address", error))?;
        let (sender, results) = mpsc::channel(config.max_authenticating);
        let task = tokio::spawn(accept_loop(listener, updates, sender));
        Ok(Acceptor {
            results,
            task,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next finished handshake.
    pub async fn accept(&mut self) -> Accepted {
        match self.results.recv().await {
            Some(accepted) => accepted,
            None => Accepted {
                peer_addr: self.local_addr,
                result: Err(TransportError::io(
                    "serving the failover port",
                    std::io::Error::other("the accept loop stopped"),
                )),
            },
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pause after a failed `accept()` (for example out of file descriptors), so the loop does not
/// spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

async fn accept_loop(
    listener: TcpListener,
    updates: watch::Receiver<Arc<TransportConfig>>,
    sender: mpsc::Sender<Accepted>,
) {
    let max_authenticating = updates.borrow().max_authenticating;
    let slots = Arc::new(Semaphore::new(max_authenticating));
    // Owning the handshake tasks here means aborting this loop aborts them too.
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer_addr)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(
                            %peer_addr,
                            max_authenticating,
                            "dropping a connection: all authenticating slots are taken"
                        );
                        drop(tcp);
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let config = updates.borrow().clone();
                    let sender = sender.clone();
                    handshakes.spawn(async move {
                        let result = handshake::server_handshake(tcp, peer_addr, &config).await;
                        // The slot is free as soon as authentication ends, whoever takes the result.
                        drop(slot);
                        let _ = sender.send(Accepted { peer_addr, result }).await;
                    });
                }
                Err(error) => {
                    tracing::warn!("accepting a connection on the failover port failed: {error}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyad_wire::ReasonCode;

    #[test]
    fn the_shared_hostname_is_refused_in_every_spelling() {
        let site = "recordings.example.com";
        for address in [
            "recordings.example.com",
            "RECORDINGS.example.com.",
            "recordings.example.com:7443",
            " Recordings.Example.Com.:7443 ",
        ] {
            let error = check_peer_address(address, site).expect_err(address);
            assert_eq!(
                error.reason(),
                Some(ReasonCode::SharedHostname),
                "{address}"
            );
            assert!(error.to_string().contains("shared hostname"), "{error}");
        }
        assert!(check_peer_address("recordings.example.com", "recordings.example.com.").is_err());
        for address in [
            "backup.example.com:7443",
            "recordings.example.com.evil:7443",
            "10.0.0.2:7443",
            "[::1]:7443",
            "fe80::1",
        ] {
            assert!(check_peer_address(address, site).is_ok(), "{address}");
        }
        assert!(check_peer_address("[::1]:7443", "::1").is_err());
        assert!(check_peer_address("anything:1", "").is_ok());
    }
}
