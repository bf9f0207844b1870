//! The steps after TCP that turn a socket into an [`AuthenticatedConnection`]: TLS 1.3, the
//! pinned-identity check, the inter-appliance key proof and the Hello exchange.
//!
//! Order matters. The client proves the key first and the server answers with its own proof
//! only after the client's verified, so a party without the key learns nothing but "refused".
//! The proof is a keyed BLAKE3 MAC over this connection's TLS exporter value, the prover's role
//! and both certificates' hashes: it cannot be replayed on another connection, reflected back
//! with the roles swapped, or relayed through a middlebox that terminates TLS with its own
//! certificate. No Hello (let alone replication data) is read or sent before both proofs
//! verified. Every refusal is sent to the peer as an Error frame before closing, so both
//! operators see the same reason, and each side logs it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use dyad_wire::{ErrorMessage, Hello, KeyProof, Message, ReasonCode};
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::config::{Timeouts, TransportConfig};
use super::connection::{
    read_frame, write_frame, AuthenticatedConnection, PeerInfo, PeerStream,
    HANDSHAKE_MAX_PAYLOAD_BYTES,
};
use super::error::TransportError;
use super::identity::CertFingerprint;
use super::tls::{client_config, server_config, TLS_SERVER_NAME};
use dyad_core::handshake::{check_key_proof, check_pin, Refusal};
use dyad_core::handshake::{check_peer_hello, LocalHello};

/// This side refused the peer for `refusal`.
fn refused(refusal: Refusal) -> TransportError {
    TransportError::incompatible(refusal.reason, refusal.text)
}

/// Label of the TLS exporter value the key proof is computed over (RFC 8446 §7.5).
const EXPORTER_LABEL: &[u8] = b"EXPORTER-dyad-inter-appliance-key-proof-v1";

const PROOF_DOMAIN: &[u8] = b"dyad inter-appliance key proof v1";

/// Which end of the TLS connection a proof comes from; part of the MAC so that a proof can never
/// be sent back to its author as the other side's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// The MAC one side sends to prove it holds the key.
pub(crate) fn key_proof_mac(
    mac_key: &[u8; 32],
    prover: Side,
    exporter: &[u8; 32],
    client_cert: &CertFingerprint,
    server_cert: &CertFingerprint,
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(mac_key);
    hasher.update(PROOF_DOMAIN);
    hasher.update(match prover {
        Side::Client => b"client",
        Side::Server => b"server",
    });
    hasher.update(exporter);
    hasher.update(&client_cert.0);
    hasher.update(&server_cert.0);
    *hasher.finalize().as_bytes()
}

/// Checks a received proof in constant time (blake3's `Hash` equality is constant-time).
fn proof_matches(expected: [u8; 32], received: [u8; 32]) -> bool {
    blake3::Hash::from(expected) == blake3::Hash::from(received)
}

fn now_unix_ms() -> u64 {
    // A clock before 1970 is treated as 1970; the offset shown in status then makes it obvious.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The peer's clock minus ours: their reading plus the half round trip it travelled, minus our
/// reading when it arrived.
pub(crate) fn clock_offset_ms(
    peer_clock_unix_ms: u64,
    our_clock_unix_ms: u64,
    rtt: Duration,
) -> i64 {
    let half_rtt_ms = i128::try_from(rtt.as_millis() / 2).unwrap_or(i128::MAX / 4);
    let offset = i128::from(peer_clock_unix_ms) + half_rtt_ms - i128::from(our_clock_unix_ms);
    i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX })
}

fn hello_message(local: &LocalHello) -> Message {
    Message::Hello(Hello {
        protocol_min: local.protocol_min,
        protocol_max: local.protocol_max,
        software: local.software,
        node_id: local.node_id,
        node_name: local.node_name.clone(),
        role: local.role,
        epoch: local.epoch,
        clock_unix_ms: now_unix_ms(),
    })
}

/// Keeps an Error frame's text within the wire limit, cutting at a character boundary.
fn error_frame(reason: ReasonCode, text: &str) -> Message {
    let mut end = text.len().min(dyad_wire::limits::MAX_TEXT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Message::Error(ErrorMessage::new(reason, &text[..end]))
}

/// Describes a TLS handshake failure by who is at fault.
fn classify_tls_error(error: std::io::Error, step_timeout: Duration) -> TransportError {
    if let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::AlertReceived(alert) => TransportError::TlsHandshake {
                text: format!("the peer aborted the TLS handshake with alert {alert:?}"),
            },
            rustls::Error::NoCertificatesPresented => TransportError::incompatible(
                ReasonCode::UnexpectedPeer,
                "the peer presented no TLS certificate, so it is not a Dyad appliance",
            ),
            rustls::Error::InvalidCertificate(why) => TransportError::incompatible(
                ReasonCode::UnexpectedPeer,
                format!("the peer's TLS certificate is not usable ({why:?})"),
            ),
            rustls::Error::PeerIncompatible(why) => TransportError::incompatible(
                ReasonCode::NoCommonProtocol,
                format!("the peer does not speak TLS 1.3 as Dyad does ({why:?})"),
            ),
            rustls::Error::PeerMisbehaved(why) => TransportError::misbehaved(
                ReasonCode::Malformed,
                format!("the peer broke the TLS protocol ({why:?})"),
            ),
            rustls::Error::InvalidMessage(why) => TransportError::misbehaved(
                ReasonCode::Malformed,
                format!("the peer sent something that is not TLS ({why:?})"),
            ),
            other => TransportError::TlsHandshake {
                text: other.to_string(),
            },
        };
    }
    match error.kind() {
        std::io::ErrorKind::UnexpectedEof => TransportError::TlsHandshake {
            text: "the peer closed the connection during the TLS handshake (it may be busy with \
                   other connection attempts, or not a Dyad appliance)"
                .to_string(),
        },
        std::io::ErrorKind::InvalidData => TransportError::misbehaved(
            ReasonCode::Malformed,
            format!("the peer sent something that is not TLS ({error})"),
        ),
        std::io::ErrorKind::TimedOut => TransportError::misbehaved(
            ReasonCode::Timeout,
            format!(
                "the TLS handshake did not finish within {} ms",
                step_timeout.as_millis()
            ),
        ),
        _ => TransportError::io("TLS handshake with the peer", error),
    }
}

/// The handshake state both sides share once TLS is up.
struct Session<'a> {
    stream: PeerStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    config: &'a TransportConfig,
    side: Side,
    peer_addr: std::net::SocketAddr,
    peer_cert: CertFingerprint,
    client_cert: CertFingerprint,
    server_cert: CertFingerprint,
}

impl Session<'_> {
    fn new(
        stream: PeerStream,
        config: &TransportConfig,
        side: Side,
        peer_addr: std::net::SocketAddr,
    ) -> Result<Session<'_>, TransportError> {
        let (_, connection) = stream.get_ref();
        let peer_cert = connection
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| CertFingerprint::of_der(cert))
            .ok_or_else(|| {
                TransportError::incompatible(
                    ReasonCode::UnexpectedPeer,
                    "the peer presented no TLS certificate, so it is not a Dyad appliance",
                )
            })?;
        let own_cert = config.identity.fingerprint();
        let (client_cert, server_cert) = match side {
            Side::Client => (own_cert, peer_cert),
            Side::Server => (peer_cert, own_cert),
        };
        Ok(Session {
            stream,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            config,
            side,
            peer_addr,
            peer_cert,
            client_cert,
            server_cert,
        })
    }

    fn proof(&self, prover: Side) -> Result<[u8; 32], TransportError> {
        let exporter = match &self.stream {
            PeerStream::Client(stream) => {
                stream
                    .get_ref()
                    .1
                    .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
            }
            PeerStream::Server(stream) => {
                stream
                    .get_ref()
                    .1
                    .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
            }
        }
        .map_err(|error| TransportError::LocalConfig {
            text: format!("TLS exporter unavailable: {error}"),
        })?;
        Ok(key_proof_mac(
            &self.config.psk.proof_mac_key(),
            prover,
            &exporter,
            &self.client_cert,
            &self.server_cert,
        ))
    }

    fn peer_side(&self) -> Side {
        match self.side {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    async fn send(&mut self, message: &Message) -> Result<(), TransportError> {
        let limit = step_timeout(&self.config.timeouts, Step::Send);
        match timeout(
            limit,
            write_frame(&mut self.stream, &mut self.write_buf, message),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(TransportError::misbehaved(
                ReasonCode::Timeout,
                format!(
                    "the peer did not read our {:?} message within {} ms",
                    message.kind(),
                    limit.as_millis()
                ),
            )),
        }
    }

    async fn receive(&mut self, step: Step) -> Result<Message, TransportError> {
        let limit = step_timeout(&self.config.timeouts, step);
        let read = read_frame(
            &mut self.stream,
            &mut self.read_buf,
            HANDSHAKE_MAX_PAYLOAD_BYTES,
        );
        match timeout(limit, read).await {
            Ok(Ok(Some(message))) => Ok(message),
            Ok(Ok(None)) => Err(TransportError::misbehaved(
                ReasonCode::Malformed,
                format!("the peer closed the connection while we waited for its {step}"),
            )),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(TransportError::misbehaved(
                ReasonCode::Timeout,
                format!(
                    "the peer did not send its {step} within {} ms",
                    limit.as_millis()
                ),
            )),
        }
    }

    /// Tells the peer why we refuse it, closes, and hands back the error to report here.
    async fn refuse(mut self, error: TransportError) -> TransportError {
        // Only our own refusals are sent; echoing the peer's refusal back, or reporting an I/O
        // failure over the failed connection, tells it nothing.
        if let TransportError::Incompatible { reason, text }
        | TransportError::PeerMisbehaved { reason, text } = &error
        {
            let frame = error_frame(*reason, text);
            // Best effort: the peer may already be gone, and our own error is what matters here.
            let _ = self.send(&frame).await;
        }
        let _ = timeout(
            step_timeout(&self.config.timeouts, Step::Send),
            self.stream.shutdown(),
        )
        .await;
        error
    }

    /// A message other than the one expected: an Error is the peer refusing us; anything else
    /// breaks the protocol.
    fn unexpected(&self, message: Message, step: Step) -> TransportError {
        match message {
            Message::Error(error) => TransportError::PeerRefused {
                reason: error.reason(),
                text: error.text,
            },
            other => TransportError::misbehaved(
                ReasonCode::Malformed,
                format!(
                    "the peer sent a {:?} message instead of its {step}",
                    other.kind()
                ),
            ),
        }
    }

    fn check_pin(&self) -> Result<(), TransportError> {
        check_pin(self.config.pinned_peer.map(|pin| pin.0), self.peer_cert.0).map_err(refused)
    }

    fn check_proof(&self, received: KeyProof) -> Result<(), TransportError> {
        let expected = self.proof(self.peer_side())?;
        check_key_proof(
            proof_matches(expected, received.mac),
            &self.config.local.node_name,
            &self.config.psk.fingerprint().to_string(),
        )
        .map_err(refused)
    }

    fn finish(
        self,
        peer: Hello,
        protocol_version: u16,
        rtt: Duration,
        received_unix_ms: u64,
    ) -> AuthenticatedConnection {
        let info = PeerInfo {
            clock_offset_ms: clock_offset_ms(peer.clock_unix_ms, received_unix_ms, rtt),
            round_trip_ms: u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX),
            hello: peer,
            protocol_version,
            cert_fingerprint: self.peer_cert,
            remote_addr: self.peer_addr,
        };
        if info.clock_offset_warning() {
            tracing::warn!(
                peer = %info.hello.node_name,
                clock_offset_ms = info.clock_offset_ms,
                "the peer appliance's clock differs from ours by more than the warning threshold; \
                 fix NTP on both appliances"
            );
        }
        tracing::info!(
            peer = %info.hello.node_name,
            peer_addr = %info.remote_addr,
            peer_cert = %info.cert_fingerprint,
            protocol_version,
            side = ?self.side,
            "authenticated connection with the peer appliance"
        );
        AuthenticatedConnection::new(self.stream, self.read_buf, info)
    }
}

/// The handshake steps, each with its own timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    KeyProof,
    Hello,
    Send,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::KeyProof => "key proof",
            Step::Hello => "Hello",
            Step::Send => "send",
        })
    }
}

fn log_failure(side: Side, peer_addr: std::net::SocketAddr, error: &TransportError) {
    tracing::warn!(
        side = ?side,
        peer_addr = %peer_addr,
        reason = ?error.reason(),
        "connection with the peer appliance failed: {error}"
    );
}

/// Client side: TLS, pin, key proof (ours first), Hello (ours first).
pub(crate) async fn client_handshake(
    tcp: TcpStream,
    config: &TransportConfig,
) -> Result<AuthenticatedConnection, TransportError> {
    let peer_addr = tcp
        .peer_addr()
        .map_err(|error| TransportError::io("reading the peer's address", error))?;
    let result = client_steps(tcp, peer_addr, config).await;
    if let Err(error) = &result {
        log_failure(Side::Client, peer_addr, error);
    }
    result
}

async fn client_steps(
    tcp: TcpStream,
    peer_addr: std::net::SocketAddr,
    config: &TransportConfig,
) -> Result<AuthenticatedConnection, TransportError> {
    let tls_config =
        client_config(&config.identity).map_err(|error| TransportError::LocalConfig {
            text: format!("cannot set up TLS: {error}"),
        })?;
    let connector = tokio_rustls::TlsConnector::from(tls_config);
    let server_name =
        ServerName::try_from(TLS_SERVER_NAME).expect("TLS_SERVER_NAME is a valid DNS name");
    let limit = config.timeouts.tls_handshake_timeout;
    let stream = match timeout(limit, connector.connect(server_name, tcp)).await {
        Ok(Ok(stream)) => PeerStream::Client(stream),
        Ok(Err(error)) => return Err(classify_tls_error(error, limit)),
        Err(_) => {
            return Err(TransportError::misbehaved(
                ReasonCode::Timeout,
                format!(
                    "the TLS handshake did not finish within {} ms",
                    limit.as_millis()
                ),
            ))
        }
    };
    let mut session = Session::new(stream, config, Side::Client, peer_addr)?;
    if let Err(error) = session.check_pin() {
        return Err(session.refuse(error).await);
    }

    let proof = session.proof(Side::Client)?;
    session
        .send(&Message::KeyProof(KeyProof { mac: proof }))
        .await?;
    match session.receive(Step::KeyProof).await? {
        Message::KeyProof(received) => {
            if let Err(error) = session.check_proof(received) {
                return Err(session.refuse(error).await);
            }
        }
        other => {
            let error = session.unexpected(other, Step::KeyProof);
            return Err(session.refuse(error).await);
        }
    }

    let sent_at = Instant::now();
    session.send(&hello_message(&config.local)).await?;
    let peer = match session.receive(Step::Hello).await? {
        Message::Hello(peer) => peer,
        other => {
            let error = session.unexpected(other, Step::Hello);
            return Err(session.refuse(error).await);
        }
    };
    let rtt = sent_at.elapsed();
    let received_unix_ms = now_unix_ms();
    // The server checked the same things before answering; checking again here keeps the rule
    // in one place for both sides and protects against a peer that skips its checks.
    match check_peer_hello(&config.local, &peer) {
        Ok(version) => Ok(session.finish(peer, version, rtt, received_unix_ms)),
        Err((reason, text)) => Err(session
            .refuse(TransportError::incompatible(reason, text))
            .await),
    }
}

/// Server side: TLS, pin, key proof (the client's first), Hello (the client's first).
pub(crate) async fn server_handshake(
    tcp: TcpStream,
    peer_addr: std::net::SocketAddr,
    config: &TransportConfig,
) -> Result<AuthenticatedConnection, TransportError> {
    let result = server_steps(tcp, peer_addr, config).await;
    if let Err(error) = &result {
        log_failure(Side::Server, peer_addr, error);
    }
    result
}

async fn server_steps(
    tcp: TcpStream,
    peer_addr: std::net::SocketAddr,
    config: &TransportConfig,
) -> Result<AuthenticatedConnection, TransportError> {
    let tls_config =
        server_config(&config.identity).map_err(|error| TransportError::LocalConfig {
            text: format!("cannot set up TLS: {error}"),
        })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
    let limit = config.timeouts.tls_handshake_timeout;
    let stream = match timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => PeerStream::Server(stream),
        Ok(Err(error)) => return Err(classify_tls_error(error, limit)),
        Err(_) => {
            return Err(TransportError::misbehaved(
                ReasonCode::Timeout,
                format!(
                    "the TLS handshake did not finish within {} ms",
                    limit.as_millis()
                ),
            ))
        }
    };
    let mut session = Session::new(stream, config, Side::Server, peer_addr)?;
    if let Err(error) = session.check_pin() {
        return Err(session.refuse(error).await);
    }

    let received = session.receive(Step::KeyProof).await;
    match received {
        Ok(Message::KeyProof(received)) => {
            if let Err(error) = session.check_proof(received) {
                return Err(session.refuse(error).await);
            }
        }
        Ok(other) => {
            let error = session.unexpected(other, Step::KeyProof);
            return Err(session.refuse(error).await);
        }
        Err(error) => return Err(session.refuse(error).await),
    }
    let proof = session.proof(Side::Server)?;
    session
        .send(&Message::KeyProof(KeyProof { mac: proof }))
        .await?;
    let sent_at = Instant::now();

    let peer = match session.receive(Step::Hello).await {
        Ok(Message::Hello(peer)) => peer,
        Ok(other) => {
            let error = session.unexpected(other, Step::Hello);
            return Err(session.refuse(error).await);
        }
        Err(error) => return Err(session.refuse(error).await),
    };
    // The client sent its Hello as soon as it had checked our proof: one round trip after ours.
    let rtt = sent_at.elapsed();
    let received_unix_ms = now_unix_ms();
    match check_peer_hello(&config.local, &peer) {
        Ok(version) => {
            session.send(&hello_message(&config.local)).await?;
            Ok(session.finish(peer, version, rtt, received_unix_ms))
        }
        Err((reason, text)) => Err(session
            .refuse(TransportError::incompatible(reason, text))
            .await),
    }
}

/// How long one step of the handshake may take.
fn step_timeout(timeouts: &Timeouts, step: Step) -> Duration {
    match step {
        Step::KeyProof => timeouts.key_proof_timeout,
        Step::Hello => timeouts.hello_timeout,
        Step::Send => timeouts.send_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(byte: u8) -> CertFingerprint {
        CertFingerprint([byte; 32])
    }

    #[test]
    fn proofs_bind_role_channel_and_both_certificates() {
        let key = [9u8; 32];
        let exporter = [1u8; 32];
        let base = key_proof_mac(
            &key,
            Side::Client,
            &exporter,
            &fingerprint(1),
            &fingerprint(2),
        );
        assert_ne!(
            base,
            key_proof_mac(
                &key,
                Side::Server,
                &exporter,
                &fingerprint(1),
                &fingerprint(2)
            ),
            "a client proof must not pass as the server's"
        );
        assert_ne!(
            base,
            key_proof_mac(
                &key,
                Side::Client,
                &[2u8; 32],
                &fingerprint(1),
                &fingerprint(2)
            ),
            "a proof from another connection must not pass"
        );
        assert_ne!(
            base,
            key_proof_mac(
                &key,
                Side::Client,
                &exporter,
                &fingerprint(3),
                &fingerprint(2)
            ),
        );
        assert_ne!(
            base,
            key_proof_mac(
                &key,
                Side::Client,
                &exporter,
                &fingerprint(1),
                &fingerprint(3)
            ),
        );
        assert_ne!(
            base,
            key_proof_mac(
                &[8u8; 32],
                Side::Client,
                &exporter,
                &fingerprint(1),
                &fingerprint(2)
            ),
        );
        assert!(proof_matches(base, base));
        assert!(!proof_matches(base, [0u8; 32]));
    }

    fn local() -> LocalHello {
        LocalHello::new(
            dyad_wire::SoftwareVersion {
                app: dyad_wire::Version {
                    major: 7,
                    minor: 3,
                    patch: 0,
                },
                base: dyad_wire::Version {
                    major: 3,
                    minor: 2,
                    patch: 0,
                },
            },
            dyad_wire::NodeId([1; 16]),
            "alpha",
            dyad_wire::Role::Primary,
            dyad_wire::Epoch {
                counter: 1,
                node: dyad_wire::NodeId([1; 16]),
            },
        )
    }

    fn peer_of(local: &LocalHello) -> Hello {
        Hello {
            protocol_min: local.protocol_min,
            protocol_max: local.protocol_max,
            software: local.software,
            node_id: dyad_wire::NodeId([2; 16]),
            node_name: "beta".to_string(),
            role: dyad_wire::Role::Backup,
            epoch: local.epoch,
            clock_unix_ms: 0,
        }
    }

    #[test]
    fn hello_checks_refuse_each_incompatibility_with_its_own_reason() {
        let local = local();
        let peer = peer_of(&local);
        assert_eq!(
            check_peer_hello(&local, &peer),
            Ok(dyad_wire::PROTOCOL_VERSION_MAX)
        );

        let mut older = peer.clone();
        older.software.app.minor = 2;
        let (reason, text) = check_peer_hello(&local, &older).expect_err("version differs");
        assert_eq!(reason, ReasonCode::VersionMismatch);
        assert!(
            text.contains("\"beta\" runs 7.2.0 (base 3.2.0) and \"alpha\" runs 7.3.0"),
            "{text}"
        );

        let mut other_base = peer.clone();
        other_base.software.base.major = 4;
        assert_eq!(
            check_peer_hello(&local, &other_base).map_err(|error| error.0),
            Err(ReasonCode::VersionMismatch)
        );

        let mut future = peer.clone();
        future.protocol_min = local.protocol_max + 1;
        future.protocol_max = local.protocol_max + 5;
        assert_eq!(
            check_peer_hello(&local, &future).map_err(|error| error.0),
            Err(ReasonCode::NoCommonProtocol)
        );

        let mut itself = peer;
        itself.node_id = local.node_id;
        assert_eq!(
            check_peer_hello(&local, &itself).map_err(|error| error.0),
            Err(ReasonCode::UnexpectedPeer)
        );
    }

    #[test]
    fn clock_offset_adds_half_the_round_trip() {
        assert_eq!(clock_offset_ms(10_000, 10_000, Duration::from_millis(0)), 0);
        assert_eq!(
            clock_offset_ms(10_000, 10_050, Duration::from_millis(100)),
            0
        );
        assert_eq!(
            clock_offset_ms(70_000, 10_000, Duration::from_millis(0)),
            60_000
        );
        assert_eq!(clock_offset_ms(0, 5_000, Duration::from_millis(0)), -5_000);
        assert_eq!(clock_offset_ms(u64::MAX, 0, Duration::MAX), i64::MAX);
    }

    #[test]
    fn error_text_is_cut_to_the_wire_limit_at_a_character_boundary() {
        let long = "é".repeat(dyad_wire::limits::MAX_TEXT_BYTES);
        let Message::Error(error) = error_frame(ReasonCode::Internal, &long) else {
            panic!("error_frame builds an Error message");
        };
        assert!(error.text.len() <= dyad_wire::limits::MAX_TEXT_BYTES);
        let mut out = BytesMut::new();
        dyad_wire::encode_frame(&Message::Error(error), &mut out).expect("within limits");
    }
}
