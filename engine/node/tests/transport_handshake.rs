//! Loopback tests of the appliance link: two real transports (or a transport and a deliberately
//! broken client) on 127.0.0.1 with ephemeral ports. Every test runs under a deadline so that a
//! hang fails instead of stalling CI.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use dyad_node::transport::{
    client_config, connect, keygen, provider, Accepted, Acceptor, CertFingerprint, Identity,
    InterApplianceKey, LocalHello, PeerCertVerifier, Timeouts, TransportConfig, TransportError,
};
use dyad_wire::{
    decode_frame, encode_frame, Epoch, KeepAlive, KeyProof, Message, NodeId, ReasonCode, Role,
    SoftwareVersion, Version,
};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TEST_DEADLINE: Duration = Duration::from_secs(20);

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_DEADLINE, future)
        .await
        .expect("the test finished within its deadline")
}

fn software(app: (u16, u16, u16), base: (u16, u16, u16)) -> SoftwareVersion {
    SoftwareVersion {
        app: Version {
            major: app.0,
            minor: app.1,
            patch: app.2,
        },
        base: Version {
            major: base.0,
            minor: base.1,
            patch: base.2,
        },
    }
}

fn current_software() -> SoftwareVersion {
    software((7, 3, 0), (3, 2, 0))
}

fn local(name: &str, id: u8, role: Role) -> LocalHello {
    LocalHello::new(
        current_software(),
        NodeId([id; 16]),
        name,
        role,
        Epoch {
            counter: 4,
            node: NodeId([1; 16]),
        },
    )
}

fn quick_timeouts() -> Timeouts {
    Timeouts {
        connect_timeout: Duration::from_secs(3),
        tls_handshake_timeout: Duration::from_secs(3),
        key_proof_timeout: Duration::from_secs(3),
        hello_timeout: Duration::from_secs(3),
        send_timeout: Duration::from_secs(2),
    }
}

fn config(name: &str, id: u8, role: Role, key: &InterApplianceKey) -> TransportConfig {
    let identity = Arc::new(Identity::generate(name).expect("identity"));
    let mut config = TransportConfig::new(identity, key.clone(), local(name, id, role));
    config.timeouts = quick_timeouts();
    config
}

async fn serve(config: TransportConfig) -> Acceptor {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Acceptor::new(listener, Arc::new(config)).expect("acceptor")
}

fn reason_of(result: &Result<impl std::fmt::Debug, TransportError>) -> Option<ReasonCode> {
    result.as_ref().err().and_then(TransportError::reason)
}

#[tokio::test]
async fn a_matching_pair_authenticates_and_exchanges_frames() {
    bounded(async {
        let key = keygen().expect("key");
        let server_config = config("alpha", 1, Role::Primary, &key);
        let server_cert = server_config.identity.fingerprint();
        let client_config = config("beta", 2, Role::Backup, &key);
        let client_cert = client_config.identity.fingerprint();
        let mut acceptor = serve(server_config).await;
        let address = acceptor.local_addr().to_string();

        let (client, accepted) = tokio::join!(connect(&address, &client_config), acceptor.accept());
        let mut client = client.expect("client authenticates");
        let mut server = accepted.result.expect("server authenticates");

        assert_eq!(client.peer().hello.node_name, "alpha");
        assert_eq!(client.peer().hello.role, Role::Primary);
        assert_eq!(client.peer().cert_fingerprint, server_cert);
        assert_eq!(
            client.peer().protocol_version,
            dyad_wire::PROTOCOL_VERSION_MAX
        );
        assert_eq!(server.peer().hello.node_name, "beta");
        assert_eq!(server.peer().hello.node_id, NodeId([2; 16]));
        assert_eq!(server.peer().cert_fingerprint, client_cert);
        assert!(client.peer().clock_offset_ms.abs() < 1_000);
        assert!(server.peer().clock_offset_ms.abs() < 1_000);
        assert!(!client.peer().clock_offset_warning());

        client
            .send(&Message::KeepAlive(KeepAlive { sequence: 1 }))
            .await
            .expect("send");
        assert_eq!(
            server.recv().await.expect("recv"),
            Some(Message::KeepAlive(KeepAlive { sequence: 1 }))
        );
        let (_, mut reader, mut writer) = server.into_split();
        writer
            .send(&Message::KeepAlive(KeepAlive { sequence: 2 }))
            .await
            .expect("send");
        assert_eq!(
            client.recv().await.expect("recv"),
            Some(Message::KeepAlive(KeepAlive { sequence: 2 }))
        );
        // A chunk (written in two parts, headers then data) arrives whole and in order, and
        // counts as the frame it is.
        let chunk = Message::Chunk(dyad_wire::Chunk {
            session: dyad_wire::SessionId {
                origin: NodeId([1; 16]),
                sequence: 7,
            },
            chunk_index: 3,
            data: bytes::Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<u8>>()),
        });
        let mut frame = bytes::BytesMut::new();
        dyad_wire::encode_frame(&chunk, &mut frame).expect("encode");
        let before = writer.bytes_sent();
        writer.send(&chunk).await.expect("send a chunk");
        assert_eq!(writer.bytes_sent() - before, frame.len() as u64);
        writer
            .send(&Message::KeepAlive(KeepAlive { sequence: 3 }))
            .await
            .expect("send");
        assert_eq!(client.recv().await.expect("recv"), Some(chunk));
        assert_eq!(
            client.recv().await.expect("recv"),
            Some(Message::KeepAlive(KeepAlive { sequence: 3 }))
        );
        client.close().await.expect("close");
        assert_eq!(reader.recv().await.expect("clean close"), None);
    })
    .await;
}

#[tokio::test]
async fn different_keys_are_reported_as_a_key_mismatch_on_both_sides() {
    bounded(async {
        let server_config = config("alpha", 1, Role::Primary, &keygen().expect("key"));
        let client_config = config("beta", 2, Role::Backup, &keygen().expect("key"));
        let mut acceptor = serve(server_config).await;
        let address = acceptor.local_addr().to_string();

        let (client, accepted) = tokio::join!(connect(&address, &client_config), acceptor.accept());
        assert_eq!(reason_of(&client), Some(ReasonCode::KeyMismatch));
        assert!(matches!(client, Err(TransportError::PeerRefused { .. })));
        assert_eq!(reason_of(&accepted.result), Some(ReasonCode::KeyMismatch));
        assert!(matches!(
            accepted.result,
            Err(TransportError::Incompatible { .. })
        ));
        let shown = client.expect_err("refused").to_string();
        assert!(shown.contains("keys differ"), "{shown}");
        assert!(shown.contains("dyad key show"), "{shown}");
    })
    .await;
}

#[tokio::test]
async fn different_installed_versions_are_refused_on_both_sides() {
    bounded(async {
        let key = keygen().expect("key");
        let server_config = config("alpha", 1, Role::Primary, &key);
        let mut client_config = config("beta", 2, Role::Backup, &key);
        client_config.local.software = software((7, 2, 1), (3, 1, 0));
        let mut acceptor = serve(server_config).await;
        let address = acceptor.local_addr().to_string();

        let (client, accepted) = tokio::join!(connect(&address, &client_config), acceptor.accept());
        assert_eq!(reason_of(&client), Some(ReasonCode::VersionMismatch));
        assert_eq!(
            reason_of(&accepted.result),
            Some(ReasonCode::VersionMismatch)
        );
        let text = client.expect_err("refused").to_string();
        assert!(
            text.contains("\"beta\" runs 7.2.1 (base 3.1.0) and \"alpha\" runs 7.3.0 (base 3.2.0)"),
            "{text}"
        );
        assert!(text.contains("same installed package"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn disjoint_protocol_ranges_are_refused() {
    bounded(async {
        let key = keygen().expect("key");
        let server_config = config("alpha", 1, Role::Primary, &key);
        let mut client_config = config("beta", 2, Role::Backup, &key);
        client_config.local.protocol_min = dyad_wire::PROTOCOL_VERSION_MAX + 1;
        client_config.local.protocol_max = dyad_wire::PROTOCOL_VERSION_MAX + 2;
        let mut acceptor = serve(server_config).await;
        let address = acceptor.local_addr().to_string();

        let (client, accepted) = tokio::join!(connect(&address, &client_config), acceptor.accept());
        assert_eq!(reason_of(&client), Some(ReasonCode::NoCommonProtocol));
        assert_eq!(
            reason_of(&accepted.result),
            Some(ReasonCode::NoCommonProtocol)
        );
    })
    .await;
}

#[tokio::test]
async fn an_appliance_dialling_itself_is_refused() {
    bounded(async {
        let key = keygen().expect("key");
        let server_config = config("alpha", 1, Role::Primary, &key);
        let client_config = config("alpha-again", 1, Role::Primary, &key);
        let mut acceptor = serve(server_config).await;
        let address = acceptor.local_addr().to_string();

        let (client, accepted) = tokio::join!(connect(&address, &client_config), acceptor.accept());
        assert_eq!(reason_of(&client), Some(ReasonCode::UnexpectedPeer));
        assert_eq!(
            reason_of(&accepted.result),
            Some(ReasonCode::UnexpectedPeer)
        );
    })
    .await;
}

#[tokio::test]
async fn a_changed_pinned_identity_is_refused_with_both_fingerprints() {
    bounded(async {
        let key = keygen().expect("key");
        let server_config = config("alpha", 1, Role::Primary, &key);
        let real_server_cert = server_config.identity.fingerprint();
        let mut client_config = config("beta", 2, Role::Backup, &key);
        let mut acceptor = serve(server_config).await;
        let address = acceptor.local_addr().to_string();

        // The pinned certificate is the one the server had before it was replaced.
        let old_cert = CertFingerprint([0xab; 32]);
        client_config.pinned_peer = Some(old_cert);
        let (client, accepted) = tokio::join!(connect(&address, &client_config), acceptor.accept());
        assert_eq!(reason_of(&client), Some(ReasonCode::UnexpectedPeer));
        assert!(matches!(client, Err(TransportError::Incompatible { .. })));
        assert_eq!(
            reason_of(&accepted.result),
            Some(ReasonCode::UnexpectedPeer)
        );
        assert!(matches!(
            accepted.result,
            Err(TransportError::PeerRefused { .. })
        ));
        let text = client.expect_err("refused").to_string();
        assert!(text.contains(&old_cert.to_string()), "{text}");
        assert!(text.contains(&real_server_cert.to_string()), "{text}");

        // With the right pin the same pair connects.
        client_config.pinned_peer = Some(real_server_cert);
        let (client, accepted) = tokio::join!(connect(&address, &client_config), acceptor.accept());
        client.expect("right pin connects");
        accepted.result.expect("right pin connects");
    })
    .await;
}

#[tokio::test]
async fn the_server_refuses_a_client_whose_pinned_identity_changed() {
    bounded(async {
        let key = keygen().expect("key");
        let mut server_config = config("alpha", 1, Role::Primary, &key);
        server_config.pinned_peer = Some(CertFingerprint([0xcd; 32]));
        let client_config = config("beta", 2, Role::Backup, &key);
        let mut acceptor = serve(server_config).await;
        let address = acceptor.local_addr().to_string();

        let (client, accepted) = tokio::join!(connect(&address, &client_config), acceptor.accept());
        assert_eq!(
            reason_of(&accepted.result),
            Some(ReasonCode::UnexpectedPeer)
        );
        assert!(matches!(
            accepted.result,
            Err(TransportError::Incompatible { .. })
        ));
        assert_eq!(reason_of(&client), Some(ReasonCode::UnexpectedPeer));
        assert!(matches!(client, Err(TransportError::PeerRefused { .. })));
    })
    .await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    bounded(async {
        let key = keygen().expect("key");
        let mut acceptor = serve(config("alpha", 1, Role::Primary, &key)).await;
        let address = acceptor.local_addr();

        let no_cert = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(PeerCertVerifier::new())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(no_cert));
        let client = async {
            let tcp = TcpStream::connect(address).await.expect("tcp");
            let name = ServerName::try_from("peer.dyad.invalid").expect("name");
            // In TLS 1.3 the client may finish before the server looks at its (missing)
            // certificate; either way it must never receive a Dyad frame.
            if let Ok(mut tls) = connector.connect(name, tcp).await {
                let mut buf = [0u8; 64];
                let read = tls.read(&mut buf).await;
                assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
            }
        };
        let ((), accepted) = tokio::join!(client, acceptor.accept());
        assert_eq!(
            reason_of(&accepted.result),
            Some(ReasonCode::UnexpectedPeer)
        );
        let text = accepted.result.expect_err("refused").to_string();
        assert!(text.contains("no TLS certificate"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn garbage_from_a_plain_tcp_client_is_dropped_and_frees_its_slot() {
    bounded(async {
        let key = keygen().expect("key");
        let mut server_config = config("alpha", 1, Role::Primary, &key);
        server_config.max_authenticating = 1;
        let mut acceptor = serve(server_config).await;
        let address = acceptor.local_addr();

        let mut garbage = TcpStream::connect(address).await.expect("tcp");
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\xff\xff\xff")
            .await
            .expect("write");
        let accepted = acceptor.accept().await;
        assert_eq!(reason_of(&accepted.result), Some(ReasonCode::Malformed));
        assert!(matches!(
            accepted.result,
            Err(TransportError::PeerMisbehaved { .. })
        ));
        // The server hung up on it (possibly after a TLS alert).
        let mut rest = Vec::new();
        let _ = garbage.read_to_end(&mut rest).await;

        // The only slot is free again: a real client gets through.
        let client_config = config("beta", 2, Role::Backup, &key);
        let text_address = address.to_string();
        let (client, accepted) =
            tokio::join!(connect(&text_address, &client_config), acceptor.accept());
        client.expect("client after garbage");
        accepted.result.expect("server after garbage");
    })
    .await;
}

#[tokio::test]
async fn a_tls_client_without_the_key_cannot_prove_it() {
    bounded(async {
        let key = keygen().expect("key");
        let mut server_config = config("alpha", 1, Role::Primary, &key);
        server_config.timeouts.key_proof_timeout = Duration::from_millis(500);
        let mut acceptor = serve(server_config).await;
        let address = acceptor.local_addr();
        let stranger = Identity::generate("stranger").expect("identity");
        let connector =
            tokio_rustls::TlsConnector::from(client_config(&stranger).expect("client config"));
        let name = ServerName::try_from("peer.dyad.invalid").expect("name");

        // A guessed proof: refused as a key mismatch, and the server says so before closing.
        let tcp = TcpStream::connect(address).await.expect("tcp");
        let mut tls = connector
            .connect(name.clone(), tcp)
            .await
            .expect("TLS completes");
        let mut out = BytesMut::new();
        encode_frame(&Message::KeyProof(KeyProof { mac: [7; 32] }), &mut out).expect("encode");
        tls.write_all(&out).await.expect("write");
        let accepted = acceptor.accept().await;
        assert_eq!(reason_of(&accepted.result), Some(ReasonCode::KeyMismatch));
        let mut reply = Vec::new();
        let _ = tls.read_to_end(&mut reply).await;
        let mut reply = BytesMut::from(&reply[..]);
        match decode_frame(&mut reply) {
            Ok(Message::Error(error)) => assert_eq!(error.reason(), ReasonCode::KeyMismatch),
            other => panic!("expected an Error(KeyMismatch) frame, got {other:?}"),
        }

        // Saying nothing after TLS: refused when the key-proof step times out.
        let tcp = TcpStream::connect(address).await.expect("tcp");
        let _silent = connector.connect(name, tcp).await.expect("TLS completes");
        let accepted = acceptor.accept().await;
        assert_eq!(reason_of(&accepted.result), Some(ReasonCode::Timeout));
    })
    .await;
}

#[tokio::test]
async fn a_silent_client_times_out_in_the_tls_handshake() {
    bounded(async {
        let key = keygen().expect("key");
        let mut server_config = config("alpha", 1, Role::Primary, &key);
        server_config.timeouts.tls_handshake_timeout = Duration::from_millis(300);
        let mut acceptor = serve(server_config).await;
        let _silent = TcpStream::connect(acceptor.local_addr())
            .await
            .expect("tcp");
        let started = tokio::time::Instant::now();
        let accepted = acceptor.accept().await;
        assert_eq!(reason_of(&accepted.result), Some(ReasonCode::Timeout));
        assert!(started.elapsed() < Duration::from_secs(3));
    })
    .await;
}

#[tokio::test]
async fn silent_clients_cannot_hold_more_than_the_authenticating_slots() {
    bounded(async {
        let key = keygen().expect("key");
        let mut server_config = config("alpha", 1, Role::Primary, &key);
        server_config.max_authenticating = 2;
        server_config.timeouts.tls_handshake_timeout = Duration::from_millis(700);
        let mut acceptor = serve(server_config).await;
        let address = acceptor.local_addr();
        let client_config = config("beta", 2, Role::Backup, &key);

        let _silent_one = TcpStream::connect(address).await.expect("tcp");
        let _silent_two = TcpStream::connect(address).await.expect("tcp");
        // Let the acceptor take both before the real client arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;

        // All slots are taken: the connection is closed before TLS.
        let refused = connect(&address.to_string(), &client_config).await;
        assert!(
            matches!(
                refused,
                Err(TransportError::TlsHandshake { .. }) | Err(TransportError::Io { .. })
            ),
            "{refused:?}"
        );

        // Once the silent ones time out, their slots are free again.
        for _ in 0..2 {
            let accepted = acceptor.accept().await;
            assert_eq!(reason_of(&accepted.result), Some(ReasonCode::Timeout));
        }
        let text_address = address.to_string();
        let (client, accepted): (_, Accepted) =
            tokio::join!(connect(&text_address, &client_config), acceptor.accept());
        client.expect("served after the silent clients timed out");
        accepted
            .result
            .expect("served after the silent clients timed out");
    })
    .await;
}

#[tokio::test]
async fn the_shared_hostname_is_refused_before_connecting() {
    bounded(async {
        let mut client_config = config("beta", 2, Role::Backup, &keygen().expect("key"));
        client_config.site_hostname = Some("recordings.example.com".to_string());
        // Unresolvable here, so any attempt to connect would fail differently.
        let result = connect("Recordings.Example.com.:7443", &client_config).await;
        assert!(matches!(result, Err(TransportError::SharedHostname { .. })));
        assert_eq!(reason_of(&result), Some(ReasonCode::SharedHostname));
    })
    .await;
}

#[tokio::test]
async fn an_unauthenticated_peer_cannot_announce_a_large_frame() {
    bounded(async {
        let key = keygen().expect("key");
        let mut acceptor = serve(config("alpha", 1, Role::Primary, &key)).await;
        let stranger = Identity::generate("stranger").expect("identity");
        let connector =
            tokio_rustls::TlsConnector::from(client_config(&stranger).expect("client config"));
        let name = ServerName::try_from("peer.dyad.invalid").expect("name");
        let tcp = TcpStream::connect(acceptor.local_addr())
            .await
            .expect("tcp");
        let mut tls = connector.connect(name, tcp).await.expect("TLS completes");
        // A valid header announcing a 1 MiB chunk instead of a key proof: refused on the header,
        // without waiting for (or buffering) the payload.
        let header = dyad_wire::FrameHeader::new(dyad_wire::MessageKind::Chunk, 1 << 20);
        tls.write_all(&header.to_bytes()).await.expect("write");
        tls.flush().await.expect("flush");
        let accepted = acceptor.accept().await;
        assert_eq!(reason_of(&accepted.result), Some(ReasonCode::Malformed));
        let text = accepted.result.expect_err("refused").to_string();
        assert!(text.contains("during the handshake"), "{text}");
    })
    .await;
}
