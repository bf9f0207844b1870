//! Frames over the authenticated TLS stream: what the replication driver reads and writes once
//! the handshake has finished.
//!
//! The reader keeps one `BytesMut` read buffer and hands it to `dyad_wire::decode_frame`, which
//! validates each header (and so bounds how much we read) before anything is allocated for the
//! payload; chunk payloads leave as `Bytes` sharing that buffer. The writer encodes into its own
//! buffer and writes it whole, except a chunk's data, written from the chunk's own buffer.

use std::net::SocketAddr;

use bytes::BytesMut;
use dyad_wire::{
    decode_frame, encode_chunk_header, encode_frame, DecodeError, FrameHeader, Hello, Message,
    ReasonCode, FRAME_HEADER_LEN,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::error::TransportError;
use super::identity::CertFingerprint;
use dyad_core::handshake::CLOCK_OFFSET_WARNING_MS;

/// The TLS stream to the peer, client or server side.
pub type PeerStream = tokio_rustls::TlsStream<TcpStream>;

/// Smallest read we ask the socket for, so small frames do not cost one read each.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What the handshake established about the peer.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The peer's Hello, as it sent it.
    pub hello: Hello,
    /// The protocol version both sides will speak.
    pub protocol_version: u16,
    /// The BLAKE3 hash of the peer's certificate (what gets pinned).
    pub cert_fingerprint: CertFingerprint,
    /// The peer's clock minus ours, corrected by half the measured round trip.
    pub clock_offset_ms: i64,
    /// The round trip measured during the handshake.
    pub round_trip_ms: u64,
    pub remote_addr: SocketAddr,
}

impl PeerInfo {
    /// Whether status should warn about the clock offset.
    pub fn clock_offset_warning(&self) -> bool {
        self.clock_offset_ms.unsigned_abs() > CLOCK_OFFSET_WARNING_MS.unsigned_abs()
    }
}

/// Largest payload accepted before the peer has proved the key: a Hello or an Error with its
/// longest text fits easily. Without this an unauthenticated peer could make each
/// authenticating slot reserve a full control-frame buffer.
pub(crate) const HANDSHAKE_MAX_PAYLOAD_BYTES: usize = 8 * 1024;

/// Reads one frame from `io`, reading more into `buf` as needed. `Ok(None)` means the peer
/// closed the connection cleanly between frames. Frames whose payload exceeds
/// `max_payload_bytes` are refused as soon as their header arrives (the wire's own per-kind
/// limits always apply as well).
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    max_payload_bytes: usize,
) -> Result<Option<Message>, TransportError> {
    loop {
        if let Some(header) = buf.first_chunk::<FRAME_HEADER_LEN>() {
            let payload_len = FrameHeader::from_bytes(header).payload_len as usize;
            if payload_len > max_payload_bytes {
                return Err(TransportError::misbehaved(
                    ReasonCode::Malformed,
                    format!(
                        "the peer sent a frame of {payload_len} bytes during the handshake, \
                         above the limit of {max_payload_bytes}"
                    ),
                ));
            }
        }
        match decode_frame(buf) {
            Ok(message) => return Ok(Some(message)),
            Err(DecodeError::Malformed(why)) => {
                return Err(TransportError::misbehaved(
                    ReasonCode::Malformed,
                    format!("the peer sent a malformed frame: {why}"),
                ))
            }
            Err(DecodeError::Incomplete { needed }) => {
                // `needed` comes from a header decode_frame has already checked against the
                // frame limits, so this reservation is bounded.
                buf.reserve(needed.max(READ_CHUNK_BYTES));
                let read = io
                    .read_buf(buf)
                    .await
                    .map_err(|error| TransportError::io("reading from the peer", error))?;
                if read == 0 {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Err(TransportError::misbehaved(
                        ReasonCode::Malformed,
                        format!(
                            "the peer closed the connection in the middle of a frame ({} bytes \
                             of it received)",
                            buf.len()
                        ),
                    ));
                }
            }
        }
    }
}

/// Encodes `message` into `buf` (cleared first) and writes it to `io`.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    io: &mut W,
    buf: &mut BytesMut,
    message: &Message,
) -> Result<(), TransportError> {
    buf.clear();
    encode_frame(message, buf).map_err(|error| TransportError::LocalConfig {
        text: format!("cannot encode a {:?} message: {error}", message.kind()),
    })?;
    io.write_all(buf)
        .await
        .map_err(|error| TransportError::io("writing to the peer", error))?;
    io.flush()
        .await
        .map_err(|error| TransportError::io("writing to the peer", error))
}

/// The receiving half of an authenticated connection.
pub struct FrameReader {
    io: ReadHalf<PeerStream>,
    buf: BytesMut,
}

impl FrameReader {
    /// The next message; `Ok(None)` when the peer closed the connection cleanly.
    pub async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        read_frame(&mut self.io, &mut self.buf, usize::MAX).await
    }
}

/// The sending half of an authenticated connection.
pub struct FrameWriter {
    io: WriteHalf<PeerStream>,
    buf: BytesMut,
    bytes_sent: u64,
}

impl FrameWriter {
    pub async fn send(&mut self, message: &Message) -> Result<(), TransportError> {
        if let Message::Chunk(chunk) = message {
            // The headers, then the data straight from the chunk's buffer: copying a chunk
            // into the frame buffer first would cost a pass over every byte sent.
            self.buf.clear();
            encode_chunk_header(
                chunk.session,
                chunk.chunk_index,
                chunk.data.len(),
                &mut self.buf,
            )
            .map_err(|error| TransportError::LocalConfig {
                text: format!("cannot encode a chunk: {error}"),
            })?;
            let written = async {
                self.io.write_all(&self.buf).await?;
                self.io.write_all(&chunk.data).await?;
                self.io.flush().await
            };
            written
                .await
                .map_err(|error| TransportError::io("writing to the peer", error))?;
            self.bytes_sent += (self.buf.len() + chunk.data.len()) as u64;
            return Ok(());
        }
        write_frame(&mut self.io, &mut self.buf, message).await?;
        self.bytes_sent += self.buf.len() as u64;
        Ok(())
    }

    /// Frame bytes written so far (before TLS): what status reports as bytes on the wire.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Ends the connection with a TLS close_notify.
    pub async fn close(&mut self) -> Result<(), TransportError> {
        self.io
            .shutdown()
            .await
            .map_err(|error| TransportError::io("closing the connection to the peer", error))
    }
}

/// A connection whose peer proved the inter-appliance key and passed the Hello checks. Only
/// these carry replication traffic.
pub struct AuthenticatedConnection {
    peer: PeerInfo,
    reader: FrameReader,
    writer: FrameWriter,
}

impl std::fmt::Debug for AuthenticatedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticatedConnection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl AuthenticatedConnection {
    /// `read_buf` carries whatever the handshake read past its last frame.
    pub(crate) fn new(
        stream: PeerStream,
        read_buf: BytesMut,
        peer: PeerInfo,
    ) -> AuthenticatedConnection {
        let (read_half, write_half) = tokio::io::split(stream);
        AuthenticatedConnection {
            peer,
            reader: FrameReader {
                io: read_half,
                buf: read_buf,
            },
            writer: FrameWriter {
                io: write_half,
                buf: BytesMut::new(),
                bytes_sent: 0,
            },
        }
    }

    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    pub async fn send(&mut self, message: &Message) -> Result<(), TransportError> {
        self.writer.send(message).await
    }

    pub async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        self.reader.recv().await
    }

    pub async fn close(&mut self) -> Result<(), TransportError> {
        self.writer.close().await
    }

    /// Separates reading from writing so that each can run in its own task.
    pub fn into_split(self) -> (PeerInfo, FrameReader, FrameWriter) {
        (self.peer, self.reader, self.writer)
    }
}
