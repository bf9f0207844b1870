//! The tokio driver: runs one appliance's [`Replica`] against real sockets, the real disk and
//! the wall clock, and serves operator commands on the admin socket.
//!
//! One OS thread owns the replica and its store, so disk writes never run on the tasks that
//! drive TLS. Connection tasks decode frames and hand them to that thread
//! through one bounded channel, which turns a slow disk into TCP backpressure; the thread hands
//! outgoing messages to each connection's writer task through an unbounded channel whose bytes
//! are counted and capped (the protocol's window bounds them; a peer that asks for more is cut
//! off). A ticker wakes the thread for the replica's timers. Reader tasks hash each chunk as
//! they decode it, and a syncer thread runs the fsyncs, so the replica's thread only compares
//! hashes and writes.

mod render;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use dyad_wire::{ErrorMessage, Message, ReasonCode};

use crate::appliance::{Appliance, DataDir};
use crate::transport::{
    connect, Acceptor, AuthenticatedConnection, CertFingerprint, LocalHello, TransportConfig,
};
use dyad_core::node::{inbound_event, Node};
use dyad_core::replica::ports::StoreFault;
use dyad_core::replica::{
    Action, Command, CommandId, ConnId, Event, LocalNode, PeerHandshake, Purpose, Replica,
    ReplicaConfig,
};
use dyad_store::{Store, SyncWork};

use crate::admin::{AdminReply, AdminRequest, ADMIN_REQUEST_BYTES_MAX};
use crate::appliance::{
    lock_data_dir, open_store, try_lock_data_dir, wall_clock_ms, DataDirError, ServeLock,
};
use dyad_core::blame::{Blame, Failure};

/// Messages (by encoded size) waiting for one connection's writer, at most; beyond this the
/// peer is asking for more than its window and is disconnected.
pub const WRITER_QUEUE_BYTES_MAX: u64 = 96 * 1024 * 1024;
/// Inputs waiting for the replica thread, at most (backpressure on the readers).
const INBOUND_QUEUE_LEN: usize = 64;
/// How long `dyad serve` waits for a data folder locked by an offline command.
pub const SERVE_LOCK_WAIT_MS: u64 = 3_000;
/// How often the replica thread wakes for timers when nothing else happens.
const TICK_MS: u64 = 50;

/// Why `dyad serve` could not run (or answer offline), and who is at fault.
#[derive(Debug)]
pub struct ServeError {
    pub blame: Blame,
    pub message: String,
}

impl ServeError {
    /// This appliance's disk, data folder or system failed.
    pub fn local(message: impl Into<String>) -> ServeError {
        ServeError {
            blame: Blame::LocalStorage,
            message: message.into(),
        }
    }

    /// The operator's to fix: the folder, the address or the request.
    pub fn operator(message: impl Into<String>) -> ServeError {
        ServeError {
            blame: Blame::Operator,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServeError {}

/// An appliance that does not open: the disk's fault for I/O, the operator's otherwise.
fn appliance_error(error: crate::appliance::ApplianceError) -> ServeError {
    match error {
        crate::appliance::ApplianceError::Io { .. } => ServeError::local(error.to_string()),
        other => ServeError::operator(other.to_string()),
    }
}

impl From<DataDirError> for ServeError {
    fn from(error: DataDirError) -> ServeError {
        // Another server holds the folder, or it cannot be opened: the message says what to do.
        ServeError::operator(error.0)
    }
}

/// The exit code of `dyad serve` after a storage failure stopped its store (`EX_TEMPFAIL`):
/// a service manager restarts it, and opening the store runs recovery, which re-verifies what
/// it cannot prove durable. See docs/operator-guide.md.
pub const STORAGE_FAILURE_EXIT_CODE: u8 = 75;

/// How long `dyad serve` keeps answering status after its store failed, so that an operator
/// (or monitoring) sees why, before it exits with [`STORAGE_FAILURE_EXIT_CODE`].
pub const STORAGE_FAILURE_EXIT_DEFAULT_MS: u64 = 60_000;

/// What the driver does beyond the replica's configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeOptions {
    /// After a storage failure, exit this long after it (`None`: keep running, answering
    /// status, until shut down).
    pub storage_failure_exit_ms: Option<u64>,
}

/// Why `dyad serve` ended without an error of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeEnd {
    /// Asked to shut down.
    Shutdown,
    /// The store failed (a failed write or fsync) and the grace period ran out.
    StorageFailed { message: String },
}

/// A steady clock for the client-update gate, in milliseconds since this process first read
/// it: the gate's grant timeouts must not move when the wall clock is stepped.
fn monotonic_ms() -> u64 {
    static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    STARTED
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

enum Input {
    Tick,
    Net(Event),
    Established {
        purpose: Purpose,
        result: Result<Box<AuthenticatedConnection>, String>,
    },
    Accepted(Box<AuthenticatedConnection>),
    Admin {
        request: AdminRequest,
        reply: mpsc::UnboundedSender<AdminReply>,
    },
    Shutdown,
}

enum WriterCommand {
    Send(Message, u64),
    Close(Option<ErrorMessage>),
}

struct ConnHandle {
    writer: mpsc::UnboundedSender<WriterCommand>,
    queued_bytes: Arc<AtomicU64>,
    reader: tokio::task::JoinHandle<()>,
}

/// Takes the serve lock for `dyad serve`, waiting up to [`SERVE_LOCK_WAIT_MS`]: a command
/// answering offline (status, config, session) holds the lock for moments, and a server
/// that gave up at once would fail to start whenever, say, a monitoring script ran
/// `dyad status` just then.
fn lock_data_dir_for_serve(dir: &DataDir) -> Result<ServeLock, ServeError> {
    let deadline = std::time::Instant::now() + Duration::from_millis(SERVE_LOCK_WAIT_MS);
    loop {
        if let Some(lock) = try_lock_data_dir(dir)? {
            return Ok(lock);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(lock_data_dir(dir)?);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `dyad serve` until `shutdown` fires (or forever). Returns once everything stopped.
pub fn serve(
    dir: DataDir,
    replica_config: ReplicaConfig,
    shutdown: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<(), ServeError> {
    serve_with(dir, replica_config, shutdown, ServeOptions::default()).map(|_| ())
}

/// [`serve`] with the driver's own options; says why it ended.
pub fn serve_with(
    dir: DataDir,
    replica_config: ReplicaConfig,
    shutdown: Option<tokio::sync::oneshot::Receiver<()>>,
    options: ServeOptions,
) -> Result<ServeEnd, ServeError> {
    // Checked before taking the lock, which would otherwise create `serve.lock` in a folder
    // that is not an appliance's (or fail on a missing folder with a confusing message).
    if !dir.settings().exists() {
        return Err(ServeError::operator(
            crate::appliance::ApplianceError::NotInitialised(dir.root.clone()).to_string(),
        ));
    }
    let _lock = lock_data_dir_for_serve(&dir)?;
    // An install interrupted by a crash is finished or rolled back before anything else reads
    // the versions; the operator is told which.
    if let Some(report) = crate::update::recover_locked(&dir, wall_clock_ms())
        .map_err(|error| ServeError::local(format!("recovering an interrupted install: {error}")))?
    {
        tracing::warn!("{}", report.message);
        eprintln!("dyad: {}", report.message);
    }
    let appliance = Appliance::open(dir.clone()).map_err(appliance_error)?;
    let store = open_store(&dir)?;
    let node = LocalNode {
        node_id: appliance.settings.node_id,
        predecessors: appliance.settings.predecessors.clone(),
        name: appliance.settings.name.clone(),
        software: appliance.settings.software,
        site_hostname: appliance.settings.site_hostname.clone(),
    };
    let replica = Replica::open(store, node, replica_config, wall_clock_ms())
        .map_err(|fault| ServeError::local(format!("cannot open the replica state: {fault}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| ServeError::local(format!("cannot start the runtime: {error}")))?;
    let identity = Arc::new(appliance.identity.clone());
    let transport = transport_config(&appliance, identity.clone(), &replica);
    let (config_sender, config_receiver) = watch::channel(Arc::new(transport));
    let (inbound_sender, inbound_receiver) = mpsc::channel::<Input>(INBOUND_QUEUE_LEN);

    let listen = appliance.settings.listen.clone();
    let socket_path = dir.admin_socket();
    let setup = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|error| {
                ServeError::operator(format!(
                    "cannot listen on {listen}: {error}; is the address right and free?"
                ))
            })?;
        let acceptor =
            Acceptor::with_updates(listener, config_receiver.clone()).map_err(|error| {
                ServeError::local(format!("cannot serve the failover port: {error}"))
            })?;
        let _ = std::fs::remove_file(&socket_path);
        let admin = tokio::net::UnixListener::bind(&socket_path).map_err(|error| {
            ServeError::local(format!(
                "cannot create the admin socket {}: {error}",
                socket_path.display()
            ))
        })?;
        set_private(&socket_path)?;
        Ok::<_, ServeError>((acceptor, admin))
    })?;
    let (acceptor, admin_listener) = setup;
    tracing::info!(name = %appliance.settings.name, listen = %listen, "serving");

    let handle = runtime.handle().clone();
    runtime.spawn(accept_loop(acceptor, inbound_sender.clone()));
    runtime.spawn(admin_loop(admin_listener, inbound_sender.clone()));
    runtime.spawn(ticker(inbound_sender.clone()));
    if let Some(shutdown) = shutdown {
        let sender = inbound_sender.clone();
        runtime.spawn(async move {
            let _ = shutdown.await;
            let _ = sender.send(Input::Shutdown).await;
        });
    }
    let client_app_version = appliance.settings.software.app;
    let syncer = spawn_syncer(inbound_sender.clone())?;
    let mut driver = ReplicaThread {
        syncer,
        node: Node::new(
            replica,
            client_app_version,
            wall_clock_ms(),
            Arc::new(monotonic_ms),
        ),
        appliance,
        identity,
        config_sender,
        inbound: inbound_sender,
        runtime: handle,
        conns: BTreeMap::new(),
        waiting: BTreeMap::new(),
        wire_bytes_sent: Arc::new(AtomicU64::new(0)),
        options,
        storage_failed_since_unix_ms: None,
    };
    let thread = std::thread::Builder::new()
        .name("dyad-replica".into())
        .spawn(move || driver.run(inbound_receiver))
        .map_err(|error| ServeError::local(format!("cannot start the replica thread: {error}")))?;
    let result = thread
        .join()
        .map_err(|_| ServeError::local("the replica thread panicked"))
        .and_then(|result| result);
    let _ = std::fs::remove_file(dir.admin_socket());
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Starts the thread that makes received chunks durable while the replica's thread goes on
/// receiving: it runs each sync in the order asked (fsync of the recording, then the commit
/// of its durable bits) and reports it back as an event. It ends when the replica's thread
/// drops its sender.
fn spawn_syncer(
    inbound: mpsc::Sender<Input>,
) -> Result<std::sync::mpsc::Sender<(SyncWork, u64)>, ServeError> {
    let (sender, work) = std::sync::mpsc::channel::<(SyncWork, u64)>();
    std::thread::Builder::new()
        .name("dyad-syncer".into())
        .spawn(move || {
            for (work, ticket) in work {
                let session = work.session();
                let outcome = work.run().map_err(StoreFault::from);
                let event = Event::Synced {
                    session,
                    ticket,
                    outcome,
                };
                if inbound.blocking_send(Input::Net(event)).is_err() {
                    return;
                }
            }
        })
        .map_err(|error| ServeError::local(format!("cannot start the syncer thread: {error}")))?;
    Ok(sender)
}

fn set_private(path: &std::path::Path) -> Result<(), ServeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|error| {
        ServeError::local(format!("cannot make {} private: {error}", path.display()))
    })
}

fn transport_config(
    appliance: &Appliance,
    identity: Arc<crate::transport::Identity>,
    replica: &Replica<Store>,
) -> TransportConfig {
    let state = replica.state();
    let local = LocalHello::new(
        appliance.settings.software,
        appliance.settings.node_id,
        appliance.settings.name.clone(),
        state.role,
        state.epoch,
    );
    let mut config = TransportConfig::new(identity, appliance.psk.clone(), local);
    config.site_hostname = appliance.settings.site_hostname.clone();
    config
}

async fn ticker(sender: mpsc::Sender<Input>) {
    let mut interval = tokio::time::interval(Duration::from_millis(TICK_MS));
    loop {
        interval.tick().await;
        // A full queue means the thread is busy and will look at its timers anyway.
        if let Err(mpsc::error::TrySendError::Closed(_)) = sender.try_send(Input::Tick) {
            return;
        }
    }
}

async fn accept_loop(mut acceptor: Acceptor, sender: mpsc::Sender<Input>) {
    loop {
        let accepted = acceptor.accept().await;
        match accepted.result {
            Ok(connection) => {
                if sender
                    .send(Input::Accepted(Box::new(connection)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(peer = %accepted.peer_addr, "refused a connection: {error}")
            }
        }
    }
}

async fn admin_loop(listener: tokio::net::UnixListener, sender: mpsc::Sender<Input>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let sender = sender.clone();
        tokio::spawn(async move {
            let (read_half, mut write_half) = stream.into_split();
            let mut reader =
                tokio::io::BufReader::new(read_half).take(ADMIN_REQUEST_BYTES_MAX as u64);
            let mut line = String::new();
            let reply_line = |reply: &AdminReply| {
                let mut line = serde_json::to_string(reply)
                    .unwrap_or_else(|_| "{\"error\":\"unprintable reply\"}".into());
                line.push('\n');
                line
            };
            let request = match reader.read_line(&mut line).await {
                Ok(_) => serde_json::from_str::<AdminRequest>(line.trim())
                    .map_err(|error| format!("bad admin request: {error}")),
                Err(error) => Err(format!("reading the admin request: {error}")),
            };
            let request = match request {
                Ok(request) => request,
                Err(text) => {
                    let _ = write_half
                        .write_all(
                            reply_line(&AdminReply::Failed(Failure::operator(text))).as_bytes(),
                        )
                        .await;
                    return;
                }
            };
            let (reply_sender, mut replies) = mpsc::unbounded_channel();
            if sender
                .send(Input::Admin {
                    request,
                    reply: reply_sender,
                })
                .await
                .is_err()
            {
                return;
            }
            while let Some(reply) = replies.recv().await {
                let done = reply.is_final();
                if write_half
                    .write_all(reply_line(&reply).as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                if done {
                    return;
                }
            }
        });
    }
}

use tokio::io::AsyncReadExt as _;

struct ReplicaThread {
    /// The replica and the rules around it (connection ids, local closes, the driving order,
    /// the client gate): the same `Node` the simulator runs.
    node: Node<Store>,
    appliance: Appliance,
    identity: Arc<crate::transport::Identity>,
    config_sender: watch::Sender<Arc<TransportConfig>>,
    inbound: mpsc::Sender<Input>,
    runtime: tokio::runtime::Handle,
    /// The sockets of the connections the node has open (or has just closed, until the
    /// close is performed).
    conns: BTreeMap<ConnId, ConnHandle>,
    waiting: BTreeMap<CommandId, mpsc::UnboundedSender<AdminReply>>,
    /// The syncer thread, which runs the replica's syncs one after the other
    /// ([`Action::SyncIncoming`]).
    syncer: std::sync::mpsc::Sender<(SyncWork, u64)>,
    /// Every frame byte sent to peers since start (recordings and metadata).
    wire_bytes_sent: Arc<AtomicU64>,
    options: ServeOptions,
    /// When the store was first seen failed (status keeps saying why until the exit).
    storage_failed_since_unix_ms: Option<u64>,
}

impl ReplicaThread {
    /// After a storage failure: logs it once, and says when the grace period is over.
    fn storage_failure_exit(&mut self, now: u64) -> Option<ServeEnd> {
        let failure = self.node.replica().store().failure()?;
        let since = *self.storage_failed_since_unix_ms.get_or_insert_with(|| {
            match self.options.storage_failure_exit_ms {
                Some(grace_ms) => tracing::error!(
                    "storage failure: {failure}; replication stopped; status keeps answering for \
                     {} s, then dyad serve exits with code {STORAGE_FAILURE_EXIT_CODE} so the \
                     service manager restarts it and recovery runs",
                    grace_ms / 1000
                ),
                None => tracing::error!(
                    "storage failure: {failure}; replication stopped; restart the service once \
                     the disk is checked"
                ),
            }
            now
        });
        let grace_ms = self.options.storage_failure_exit_ms?;
        (now.saturating_sub(since) >= grace_ms).then(|| ServeEnd::StorageFailed {
            message: failure.to_string(),
        })
    }

    fn run(&mut self, mut inbound: mpsc::Receiver<Input>) -> Result<ServeEnd, ServeError> {
        let mut end = ServeEnd::Shutdown;
        while let Some(input) = inbound.blocking_recv() {
            let now = wall_clock_ms();
            match input {
                Input::Shutdown => break,
                // A tick wakes the node for the replica's timers, and shows it the wall
                // clock so that a step backwards is noticed within one tick.
                Input::Tick => self.node.handle_timeout(now),
                Input::Net(event) => match event {
                    Event::Disconnected { conn, reason } => {
                        self.conns.remove(&conn);
                        self.node.disconnected(now, conn, reason);
                    }
                    Event::Synced {
                        session,
                        ticket,
                        outcome,
                    } => self.node.synced(now, session, ticket, outcome),
                    event => self.node.inbound(now, event),
                },
                Input::Established { purpose, result } => match result {
                    Ok(connection) => self.register(now, *connection, Some(purpose)),
                    Err(reason) => self.node.connect_failed(now, purpose, reason),
                },
                Input::Accepted(connection) => self.register(now, *connection, None),
                Input::Admin { request, reply } => self.admin(now, request, reply),
            }
            self.drain(now);
            if let Some(storage_failed) = self.storage_failure_exit(now) {
                end = storage_failed;
                break;
            }
        }
        for (_, handle) in std::mem::take(&mut self.conns) {
            let _ = handle.writer.send(WriterCommand::Close(None));
        }
        Ok(end)
    }

    /// Carries out the node's actions (which may raise more: a sync that cannot start), and
    /// keeps the transport's view of role and epoch current.
    fn drain(&mut self, now: u64) {
        // The listener must say the new role before a close makes the peer redial.
        self.follow_relationship();
        while let Some(action) = self.node.poll_action() {
            self.perform(now, action);
        }
        self.follow_relationship();
    }

    /// Keeps the transport's Hello (role and epoch) equal to the replica's.
    fn follow_relationship(&mut self) {
        let state = self.node.replica().state();
        let current = self.config_sender.borrow().clone();
        // Inbound connections are not pinned by the transport (the replica checks the
        // peer's certificate itself when it classifies the link), so only the Hello's role and
        // epoch need to follow the relationship.
        if current.local.role != state.role || current.local.epoch != state.epoch {
            let updated =
                transport_config(&self.appliance, self.identity.clone(), self.node.replica());
            let _ = self.config_sender.send(Arc::new(updated));
        }
    }

    fn perform(&mut self, now: u64, action: Action) {
        match action {
            Action::Connect {
                address,
                purpose,
                pinned_fingerprint,
            } => {
                let mut config = (**self.config_sender.borrow()).clone();
                config.pinned_peer = pinned_fingerprint.map(CertFingerprint);
                let sender = self.inbound.clone();
                self.runtime.spawn(async move {
                    let result = connect(&address, &config)
                        .await
                        .map(Box::new)
                        .map_err(|error| error.to_string());
                    let _ = sender.send(Input::Established { purpose, result }).await;
                });
            }
            Action::Send { conn, message } => {
                let Some(handle) = self.conns.get(&conn) else {
                    return;
                };
                let size = message_size(&message);
                let queued = handle.queued_bytes.fetch_add(size, Ordering::Relaxed) + size;
                if queued > WRITER_QUEUE_BYTES_MAX {
                    tracing::warn!(
                        conn,
                        queued,
                        "the peer asked for more than its window; disconnecting"
                    );
                    let text =
                        "too much data requested at once (more than the transfer window allows)";
                    let _ = handle
                        .writer
                        .send(WriterCommand::Close(Some(ErrorMessage::new(
                            ReasonCode::Malformed,
                            text,
                        ))));
                    self.conns.remove(&conn);
                    self.node
                        .close_locally(now, conn, "the peer asked for more than its window");
                    return;
                }
                let _ = handle.writer.send(WriterCommand::Send(message, size));
            }
            // The node has told the replica already; only the socket is left to close.
            Action::Close { conn, error } => {
                if let Some(handle) = self.conns.remove(&conn) {
                    handle.reader.abort();
                    let _ = handle.writer.send(WriterCommand::Close(error));
                }
            }
            Action::SyncIncoming { session, ticket } => {
                // The work is taken now, when the action arrives, and run later in order
                // on the syncer thread.
                match self.node.replica().store().sync_work(&session, ticket) {
                    Ok(work) => {
                        if self.syncer.send((work, ticket)).is_err() {
                            let stopped = StoreFault {
                                message: "the syncer thread stopped".into(),
                                terminal: true,
                            };
                            self.node.synced(now, session, ticket, Err(stopped));
                        }
                    }
                    Err(error) => {
                        self.node
                            .synced(now, session, ticket, Err(StoreFault::from(error)))
                    }
                }
            }
            Action::Progress { command, progress } => {
                if let Some(reply) = self.waiting.get(&command) {
                    let _ = reply.send(AdminReply::Progress(render::progress(&progress)));
                }
            }
            Action::Completed { command, outcome } => {
                if let Some(reply) = self.waiting.remove(&command) {
                    let _ = reply.send(match outcome {
                        Ok(text) => AdminReply::Ok(serde_json::Value::String(text)),
                        Err(error) => AdminReply::Failed(Failure::from(error)),
                    });
                }
            }
        }
    }

    /// Hands an authenticated connection to the node, which gives it an id, and starts its
    /// reader and writer tasks. The node's actions on it wait in its queue until then.
    fn register(
        &mut self,
        now: u64,
        connection: AuthenticatedConnection,
        outbound: Option<Purpose>,
    ) {
        let (peer, mut reader, mut writer) = connection.into_split();
        let handshake = PeerHandshake {
            hello: peer.hello.clone(),
            certificate_fingerprint: peer.cert_fingerprint.0,
            clock_offset_ms: peer.clock_offset_ms,
        };
        let conn = self.node.connected(now, handshake, outbound);
        let (writer_sender, mut writer_commands) = mpsc::unbounded_channel::<WriterCommand>();
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let writer_queue = queued_bytes.clone();
        let wire_bytes = self.wire_bytes_sent.clone();
        // Keep-alives and the idle timeout are the node's: the writer sends what it is given
        // and the reader reads until the connection ends.
        self.runtime.spawn(async move {
            loop {
                match writer_commands.recv().await {
                    None => {
                        let _ = writer.close().await;
                        return;
                    }
                    Some(WriterCommand::Send(message, size)) => {
                        let before = writer.bytes_sent();
                        let result = writer.send(&message).await;
                        wire_bytes.fetch_add(writer.bytes_sent() - before, Ordering::Relaxed);
                        writer_queue.fetch_sub(size, Ordering::Relaxed);
                        if result.is_err() {
                            return;
                        }
                    }
                    Some(WriterCommand::Close(error)) => {
                        if let Some(error) = error {
                            let _ = writer.send(&Message::Error(error)).await;
                        }
                        let _ = writer.close().await;
                        return;
                    }
                }
            }
        });
        let sender = self.inbound.clone();
        let reader_task = self.runtime.spawn(async move {
            let reason = loop {
                match reader.recv().await {
                    Ok(Some(message)) => {
                        // Chunks are hashed here, on the task that decoded them, so that the
                        // replica's thread only compares 32 bytes before writing.
                        let event = inbound_event(conn, message);
                        if sender.send(Input::Net(event)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break "the peer closed the connection".to_string(),
                    Err(error) => break error.to_string(),
                }
            };
            let _ = sender
                .send(Input::Net(Event::Disconnected { conn, reason }))
                .await;
        });
        self.conns.insert(
            conn,
            ConnHandle {
                writer: writer_sender,
                queued_bytes,
                reader: reader_task,
            },
        );
    }

    fn admin(&mut self, now: u64, request: AdminRequest, reply: mpsc::UnboundedSender<AdminReply>) {
        let command = match request {
            AdminRequest::Establish { backup, reverse } => Some(Command::Establish {
                backup_address: backup,
                reverse_address: reverse,
            }),
            AdminRequest::SyncNow => Some(Command::SyncNow),
            AdminRequest::Break => Some(Command::Break),
            AdminRequest::Promote { force } => Some(Command::Promote { force }),
            AdminRequest::Demote => Some(Command::Demote),
            AdminRequest::ClientCheckIn {
                client_id,
                kind,
                installed_app,
            } => {
                let steady = monotonic_ms();
                let _ = reply.send(self.client_check_in(steady, client_id, &kind, &installed_app));
                None
            }
            AdminRequest::ClientProgress => {
                let (progress, warning) = self.node.client_progress(monotonic_ms());
                if let Some(warning) = warning {
                    tracing::warn!("{warning}");
                }
                let _ = reply.send(AdminReply::Ok(serde_json::json!({
                    "application_version": self.appliance.settings.software.app.to_string(),
                    "max_concurrent_upgrades": self.node.clients().max_concurrent(),
                    "updated": progress.updated,
                    "in_progress": progress.in_progress,
                    "waiting": progress.waiting,
                    "needs_manual_reinstall": progress.needs_manual_reinstall,
                })));
                None
            }
            other => {
                let wire = self.wire_bytes_sent.load(Ordering::Relaxed);
                let answer = render::answer_locally(
                    self.node.replica_mut(),
                    &self.appliance,
                    now,
                    wire,
                    other,
                );
                let _ = reply.send(answer);
                // A configuration write or an import may have given the replica work.
                self.node.handle_timeout(now);
                None
            }
        };
        if let Some(command) = command {
            let id = self.node.command(now, command);
            self.waiting.insert(id, reply);
        }
    }
}

impl ReplicaThread {
    fn client_check_in(
        &mut self,
        now_monotonic_ms: u64,
        client_id: String,
        kind: &str,
        installed_app: &str,
    ) -> AdminReply {
        use dyad_core::clients::{CheckIn, CheckInAnswer, ClientKind};
        let kind = match kind {
            "deployed" => ClientKind::Deployed,
            "integration" => ClientKind::Integration,
            other => {
                return AdminReply::Failed(Failure::operator(format!(
                    "client kind {other:?} is neither `deployed` nor `integration`"
                )))
            }
        };
        let installed_app = match installed_app.parse::<dyad_wire::Version>() {
            Ok(version) => version,
            Err(why) => {
                return AdminReply::Failed(Failure::operator(format!("installed version: {why}")))
            }
        };
        let check_in = CheckIn {
            client_id,
            kind,
            installed_app,
        };
        let (answer, warning) = self.node.client_check_in(now_monotonic_ms, &check_in);
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        match answer {
            Ok(CheckInAnswer::UpToDate) => {
                AdminReply::Ok(serde_json::json!({ "answer": "up-to-date" }))
            }
            Ok(CheckInAnswer::UpdateNow { target }) => AdminReply::Ok(
                serde_json::json!({ "answer": "update-now", "target": target.to_string() }),
            ),
            Ok(CheckInAnswer::RetryLater { after_ms }) => {
                AdminReply::Ok(serde_json::json!({ "answer": "retry-later", "after_ms": after_ms }))
            }
            Ok(CheckInAnswer::ManualReinstall { target }) => AdminReply::Ok(serde_json::json!({
                "answer": "manual-reinstall",
                "target": target.to_string(),
                "text": "integration clients never update themselves: reinstall this client with the current installer",
            })),
            Err(error) => AdminReply::Failed(Failure::operator(error.to_string())),
        }
    }
}

fn message_size(message: &Message) -> u64 {
    match message {
        Message::Chunk(chunk) => chunk.data.len() as u64 + 64,
        _ => 1024,
    }
}

/// Answers `request` without a running server, from the data folder itself (taking the serve
/// lock so that no server starts meanwhile). Commands that need the peer are refused.
pub fn answer_offline(dir: &DataDir, request: AdminRequest) -> Result<AdminReply, ServeError> {
    if matches!(
        request,
        AdminRequest::Establish { .. }
            | AdminRequest::SyncNow
            | AdminRequest::Break
            | AdminRequest::Promote { .. }
            | AdminRequest::Demote
            | AdminRequest::ClientCheckIn { .. }
            | AdminRequest::ClientProgress
    ) {
        return Err(ServeError::operator(format!(
            "this needs the running appliance; start it with `dyad serve --data-dir {}`",
            dir.root.display()
        )));
    }
    let _lock = lock_data_dir(dir)?;
    let appliance = Appliance::open(dir.clone()).map_err(appliance_error)?;
    let store = open_store(dir)?;
    let node = LocalNode {
        node_id: appliance.settings.node_id,
        predecessors: appliance.settings.predecessors.clone(),
        name: appliance.settings.name.clone(),
        software: appliance.settings.software,
        site_hostname: appliance.settings.site_hostname.clone(),
    };
    let now = wall_clock_ms();
    let mut replica = Replica::open(store, node, ReplicaConfig::default(), now)
        .map_err(|fault| ServeError::local(format!("cannot open the replica state: {fault}")))?;
    Ok(render::answer_locally(
        &mut replica,
        &appliance,
        now,
        0,
        request,
    ))
}
