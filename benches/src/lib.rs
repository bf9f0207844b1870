//! Shared helpers for Dyad's benchmarks: deterministic input data.
#![forbid(unsafe_code)]

/// Incompressible-looking bytes from a fixed seed (xorshift), so every run measures the same
/// input without pulling an RNG crate into the benchmarks.
pub fn synthetic_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Running `dyad serve` drivers inside a benchmark process, and talking to them.
pub mod appliances {
    use std::time::{Duration, Instant};

    use dyad_core::replica::ReplicaConfig;
    use dyad_node::admin::{AdminReply, AdminRequest};
    use dyad_node::appliance::DataDir;
    use dyad_node::driver::{self, ServeError};

    /// How long a benchmark waits for a driver to answer on its admin socket.
    const STARTUP_WAIT: Duration = Duration::from_secs(60);

    /// A free loopback port (bound and released; good enough for a benchmark).
    pub fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        listener.local_addr().expect("a bound address").port()
    }

    /// A driver serving a data folder on its own thread until stopped.
    pub struct Running {
        shutdown: tokio::sync::oneshot::Sender<()>,
        thread: std::thread::JoinHandle<Result<(), ServeError>>,
    }

    /// Starts `dyad serve` on `dir` and waits until it answers.
    pub fn start(dir: &DataDir) -> Running {
        let (shutdown, receiver) = tokio::sync::oneshot::channel();
        let serve_dir = dir.clone();
        let thread = std::thread::spawn(move || {
            driver::serve(serve_dir, ReplicaConfig::default(), Some(receiver))
        });
        let deadline = Instant::now() + STARTUP_WAIT;
        while dyad_node::admin::admin_call(dir, &AdminRequest::Status, |_| {}).is_err() {
            assert!(Instant::now() < deadline, "the appliance did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Running { shutdown, thread }
    }

    /// Stops a driver and waits for it.
    pub fn stop(running: Running) {
        let _ = running.shutdown.send(());
        let _ = running.thread.join();
    }

    /// One admin request that must succeed.
    pub fn admin(dir: &DataDir, request: AdminRequest) -> serde_json::Value {
        match dyad_node::admin::admin_call(dir, &request, |_| {}) {
            Ok(AdminReply::Ok(value)) => value,
            other => panic!("{request:?} failed: {other:?}"),
        }
    }
}
