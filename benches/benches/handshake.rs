//! Connection setup rate of the appliance link, beside plain rustls in the same run.
//!
//! - `handshake/plain_rustls_mtls13`: a mutual TLS 1.3 handshake over loopback TCP with the same
//!   certificates, provider, verifier and settings as Dyad's, followed by one byte each way so
//!   that both sides have finished (the baseline).
//! - `handshake/dyad_full`: the whole Dyad handshake (TCP, the same TLS handshake, both key
//!   proofs, the Hello exchange with its checks) through `connect` and an `Acceptor`.
//!
//! Target: `dyad_full` reaches at least 0.8x the baseline's handshakes per second. After the
//! criterion groups, a direct timing of both prints the ratio; `DYAD_BENCH_HANDSHAKES` sets how
//! many handshakes of each that timing runs (default 300; CI can set it small).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dyad_node::transport::{
    client_config, connect, keygen, server_config, Acceptor, Identity, LocalHello, TransportConfig,
};
use dyad_wire::{Epoch, NodeId, Role, SoftwareVersion, Version};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

fn software() -> SoftwareVersion {
    SoftwareVersion {
        app: Version {
            major: 7,
            minor: 3,
            patch: 0,
        },
        base: Version {
            major: 3,
            minor: 2,
            patch: 0,
        },
    }
}

fn local(name: &str, id: u8) -> LocalHello {
    LocalHello::new(
        software(),
        NodeId([id; 16]),
        name,
        Role::Primary,
        Epoch {
            counter: 1,
            node: NodeId([1; 16]),
        },
    )
}

/// Both sides' settings, sharing one key; each has its own identity.
struct Pair {
    server: Arc<TransportConfig>,
    client: TransportConfig,
}

fn pair() -> Pair {
    let key = keygen().expect("the OS generator works");
    let server_identity = Arc::new(Identity::generate("alpha").expect("identity"));
    let client_identity = Arc::new(Identity::generate("beta").expect("identity"));
    Pair {
        server: Arc::new(TransportConfig::new(
            server_identity,
            key.clone(),
            local("alpha", 1),
        )),
        client: TransportConfig::new(client_identity, key, local("beta", 2)),
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A plain rustls server: TLS accept, read one byte, answer one byte.
async fn plain_server(listener: TcpListener, identity: Arc<Identity>) {
    let acceptor =
        tokio_rustls::TlsAcceptor::from(server_config(&identity).expect("server config"));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let mut byte = [0u8; 1];
                if tls.read_exact(&mut byte).await.is_ok() {
                    let _ = tls.write_all(&byte).await;
                    let _ = tls.flush().await;
                }
            }
        });
    }
}

struct Plain {
    connector: tokio_rustls::TlsConnector,
    address: std::net::SocketAddr,
}

impl Plain {
    async fn start(pair: &Pair) -> Plain {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(plain_server(listener, pair.server.identity.clone()));
        Plain {
            connector: tokio_rustls::TlsConnector::from(
                client_config(&pair.client.identity).expect("client config"),
            ),
            address,
        }
    }

    async fn handshake(&self) {
        let tcp = TcpStream::connect(self.address).await.expect("tcp");
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("peer.dyad.invalid").expect("name");
        let mut tls = self.connector.connect(name, tcp).await.expect("TLS");
        tls.write_all(&[1]).await.expect("write");
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.expect("read");
        black_box(byte);
    }
}

struct Dyad {
    acceptor: Acceptor,
    address: String,
}

impl Dyad {
    async fn start(pair: &Pair) -> Dyad {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let acceptor = Acceptor::new(listener, pair.server.clone()).expect("acceptor");
        let address = acceptor.local_addr().to_string();
        Dyad { acceptor, address }
    }

    async fn handshake(&mut self, client: &TransportConfig) {
        let (client, accepted) =
            tokio::join!(connect(&self.address, client), self.acceptor.accept());
        black_box(client.expect("client authenticates"));
        black_box(accepted.result.expect("server authenticates"));
    }
}

fn handshakes(c: &mut Criterion) {
    let rt = runtime();
    let pair = pair();
    let plain = rt.block_on(Plain::start(&pair));
    let mut dyad = rt.block_on(Dyad::start(&pair));

    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("plain_rustls_mtls13", |b| {
        b.iter(|| rt.block_on(plain.handshake()))
    });
    group.bench_function("dyad_full", |b| {
        b.iter(|| rt.block_on(dyad.handshake(&pair.client)))
    });
    group.finish();

    // The ratio itself, measured here so it is printed with the run that produced it.
    let count: u32 = std::env::var("DYAD_BENCH_HANDSHAKES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(300)
        .max(1);
    let (plain_time, dyad_time) = rt.block_on(async {
        // Interleave rounds so that drift on a shared machine affects both alike.
        let mut plain_time = Duration::ZERO;
        let mut dyad_time = Duration::ZERO;
        for _ in 0..count {
            let started = Instant::now();
            plain.handshake().await;
            plain_time += started.elapsed();
            let started = Instant::now();
            dyad.handshake(&pair.client).await;
            dyad_time += started.elapsed();
        }
        (plain_time, dyad_time)
    });
    let plain_rate = f64::from(count) / plain_time.as_secs_f64();
    let dyad_rate = f64::from(count) / dyad_time.as_secs_f64();
    eprintln!(
        "handshake ratio over {count} each: plain rustls {plain_rate:.0}/s, dyad full \
         {dyad_rate:.0}/s, ratio {:.2}x (target >= 0.80x)",
        dyad_rate / plain_rate
    );
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
