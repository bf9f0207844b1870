//! The core's `Node` on a real store (on the simulated disk): the rules it owns for every
//! driver — connection ids, a connection reported closed once, local closes fed back, command
//! ids, chunk hashing on arrival, keep-alives and the idle timeout, and the client gate's
//! limit read from the configuration.

use bytes::Bytes;
use dyad_core::clients::{CheckIn, CheckInAnswer, ClientKind, MAX_CONCURRENT_UPGRADES_KEY};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dyad_core::node::{
    inbound_event, Node, SteadyClock, IDLE_TIMEOUT_MS, KEEPALIVE_INTERVAL_MS, OWN_STALL_MS,
};
use dyad_core::replica::{
    Action, Command, CommandError, Event, LocalNode, PeerHandshake, Replica, ReplicaConfig,
};
use dyad_core::tree::chunk_subtree_cv;
use dyad_store::disk::sim::SimDisk;
use dyad_store::{Store, FORMAT_VERSION};
use dyad_wire::{
    Chunk, Epoch, Hello, KeepAlive, Message, NodeId, Role, SessionId, SoftwareVersion, Version,
    PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};

const NOW_MS: u64 = 1_800_000_000_000;

fn version(major: u16, minor: u16) -> Version {
    Version {
        major,
        minor,
        patch: 0,
    }
}

fn software() -> SoftwareVersion {
    SoftwareVersion {
        app: version(2, 0),
        base: version(3, 2),
    }
}

fn node() -> Node<Store> {
    node_with_clock(Arc::new(|| 0))
}

fn node_with_clock(steady: SteadyClock) -> Node<Store> {
    let store =
        Store::open_or_create_with_format(SimDisk::new(7), FORMAT_VERSION).expect("a fresh store");
    let local = LocalNode {
        node_id: NodeId([1; 16]),
        predecessors: Vec::new(),
        name: "a".into(),
        software: software(),
        site_hostname: None,
    };
    let replica =
        Replica::open(store, local, ReplicaConfig::default(), NOW_MS).expect("a fresh replica");
    Node::new(replica, software().app, NOW_MS, steady)
}

fn stranger() -> PeerHandshake {
    let peer = NodeId([2; 16]);
    PeerHandshake {
        hello: Hello {
            protocol_min: PROTOCOL_VERSION_MIN,
            protocol_max: PROTOCOL_VERSION_MAX,
            software: software(),
            node_id: peer,
            node_name: "b".into(),
            role: Role::Standalone,
            epoch: Epoch {
                counter: 1,
                node: peer,
            },
            clock_unix_ms: NOW_MS,
        },
        certificate_fingerprint: [9; 32],
        clock_offset_ms: 0,
    }
}

fn actions(node: &mut Node<Store>) -> Vec<Action> {
    std::iter::from_fn(|| node.poll_action()).collect()
}

#[test]
fn connections_get_ids_from_one_and_end_once() {
    let mut node = node();
    let first = node.connected(NOW_MS, stranger(), None);
    let second = node.connected(NOW_MS, stranger(), None);
    assert_eq!((first, second), (1, 2));
    assert!(node.is_open(first) && node.is_open(second));
    node.disconnected(NOW_MS + 1, first, "the peer closed the connection".into());
    assert!(!node.is_open(first));
    // The same end reported again, and a message on it, change nothing.
    node.disconnected(NOW_MS + 2, first, "again".into());
    node.received(
        NOW_MS + 3,
        first,
        Message::KeepAlive(KeepAlive { sequence: 1 }),
    );
    assert!(node.is_open(second));
    assert_eq!(node.open_connections().collect::<Vec<_>>(), vec![second]);
}

#[test]
fn a_local_close_is_told_to_the_replica_at_once() {
    let mut node = node();
    let conn = node.connected(NOW_MS, stranger(), None);
    let _ = actions(&mut node);
    node.close_locally(NOW_MS, conn, "the peer asked for more than its window");
    assert!(!node.is_open(conn));
    // What the socket delivers afterwards never reaches the replica.
    node.received(NOW_MS, conn, Message::KeepAlive(KeepAlive { sequence: 2 }));
    node.disconnected(NOW_MS, conn, "the peer closed the connection".into());
    assert!(node.open_connections().next().is_none());
}

#[test]
fn commands_get_ids_and_their_outcome_under_that_id() {
    let mut node = node();
    let first = node.command(NOW_MS, Command::SyncNow);
    let second = node.command(NOW_MS, Command::Demote);
    assert_eq!((first, second), (1, 2));
    let completed: Vec<_> = actions(&mut node)
        .into_iter()
        .filter_map(|action| match action {
            Action::Completed { command, outcome } => Some((command, outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(completed.len(), 2, "{completed:?}");
    assert_eq!(completed[0].0, first);
    assert!(
        matches!(&completed[0].1, Err(CommandError::Refused(text)) if text.contains("standalone")),
        "{:?}",
        completed[0].1
    );
}

#[test]
fn chunks_are_hashed_on_arrival_and_other_messages_pass() {
    let data = Bytes::from(vec![5u8; 4096]);
    let chunk = Chunk {
        session: SessionId {
            origin: NodeId([3; 16]),
            sequence: 1,
        },
        chunk_index: 4,
        data: data.clone(),
    };
    match inbound_event(7, Message::Chunk(chunk.clone())) {
        Event::ChunkReceived {
            conn,
            chunk: received,
            subtree_cv,
        } => {
            assert_eq!(conn, 7);
            assert_eq!(received, chunk);
            assert_eq!(subtree_cv, chunk_subtree_cv(4, &data));
        }
        other => panic!("{other:?}"),
    }
    let keep_alive = Message::KeepAlive(KeepAlive { sequence: 3 });
    assert_eq!(
        inbound_event(7, keep_alive.clone()),
        Event::Received {
            conn: 7,
            message: keep_alive
        }
    );
}

#[test]
fn the_client_limit_is_read_from_the_configuration_before_each_check_in() {
    let mut node = node();
    let outdated = |id: &str| CheckIn {
        client_id: id.into(),
        kind: ClientKind::Deployed,
        installed_app: version(1, 0),
    };
    node.write_config(NOW_MS, MAX_CONCURRENT_UPGRADES_KEY, Some(b"1"))
        .expect("a standalone appliance takes configuration writes");
    let (first, warning) = node.client_check_in(0, &outdated("c1"));
    assert!(warning.is_none());
    assert!(
        matches!(first, Ok(CheckInAnswer::UpdateNow { .. })),
        "{first:?}"
    );
    let (second, _) = node.client_check_in(1, &outdated("c2"));
    assert!(
        matches!(second, Ok(CheckInAnswer::RetryLater { .. })),
        "{second:?}"
    );
    // A value the gate refuses keeps the limit in force and says why.
    node.write_config(NOW_MS, MAX_CONCURRENT_UPGRADES_KEY, Some(b"many"))
        .expect("written");
    let (third, warning) = node.client_check_in(2, &outdated("c3"));
    assert!(
        matches!(third, Ok(CheckInAnswer::RetryLater { .. })),
        "{third:?}"
    );
    let warning = warning.expect("the refused value is reported");
    assert!(warning.contains("keeping the limit of 1"), "{warning}");
    // Raised on the configuration, the next check-in is granted.
    node.write_config(NOW_MS, MAX_CONCURRENT_UPGRADES_KEY, Some(b"5"))
        .expect("written");
    let (fourth, _) = node.client_check_in(3, &outdated("c4"));
    assert!(
        matches!(fourth, Ok(CheckInAnswer::UpdateNow { .. })),
        "{fourth:?}"
    );
}

#[test]
fn quiet_connections_get_keep_alives_and_silent_peers_are_dropped() {
    let clock = Arc::new(AtomicU64::new(1_000));
    let reading = Arc::clone(&clock);
    let mut node = node_with_clock(Arc::new(move || reading.load(Ordering::Relaxed)));
    let conn = node.connected(NOW_MS, stranger(), None);
    let _ = actions(&mut node);
    let due = node.next_steady_timeout().expect("a liveness deadline");
    assert_eq!(due, 1_000 + KEEPALIVE_INTERVAL_MS);
    // Ten quiet seconds: a keep-alive, and the connection stays.
    clock.store(due, Ordering::Relaxed);
    node.handle_timeout(NOW_MS + KEEPALIVE_INTERVAL_MS);
    let sent = actions(&mut node);
    assert!(
        sent.iter().any(|action| matches!(action, Action::Send { conn: c, message: Message::KeepAlive(_) } if *c == conn)),
        "{sent:?}"
    );
    assert!(node.is_open(conn));
    // The peer's keep-alive counts as hearing from it; then 45 s of silence closes it.
    node.received(NOW_MS, conn, Message::KeepAlive(KeepAlive { sequence: 1 }));
    let heard = clock.load(Ordering::Relaxed);
    let mut at = heard;
    while at < heard + IDLE_TIMEOUT_MS {
        at += KEEPALIVE_INTERVAL_MS / 2;
        clock.store(at, Ordering::Relaxed);
        node.handle_timeout(NOW_MS);
        let _ = actions(&mut node);
    }
    assert!(!node.is_open(conn), "a peer silent for 45 s is dropped");
}

#[test]
fn a_stall_of_our_own_is_not_held_against_the_peer() {
    let clock = Arc::new(AtomicU64::new(0));
    let reading = Arc::clone(&clock);
    let mut node = node_with_clock(Arc::new(move || reading.load(Ordering::Relaxed)));
    let conn = node.connected(NOW_MS, stranger(), None);
    let _ = actions(&mut node);
    // The node is called a minute late (its thread was blocked, its process frozen): what the
    // peer sent meanwhile may still be queued, so the link gets time to show it.
    clock.store(60_000, Ordering::Relaxed);
    node.handle_timeout(NOW_MS);
    assert!(node.is_open(conn));
    // Ticking again as a driver does, the silence counts from a moment before the stall ended.
    let mut at = 60_000;
    while at < 60_000 + IDLE_TIMEOUT_MS - OWN_STALL_MS {
        assert!(node.is_open(conn), "open at {at} ms");
        at += 1_000;
        clock.store(at, Ordering::Relaxed);
        node.handle_timeout(NOW_MS);
        let _ = actions(&mut node);
    }
    assert!(!node.is_open(conn), "then silence counts again");
}
