//! A tour of the wire layer: encode a handshake, a refusal and a recording chunk into one
//! stream, feed it back to the decoder in uneven socket-sized reads, and show what arrives.

use bytes::{Bytes, BytesMut};
use dyad_wire::{
    decode_frame, encode_frame, Chunk, DecodeError, Epoch, ErrorMessage, Hello, Message, NodeId,
    ReasonCode, Role, SessionId, SoftwareVersion, Version, FRAME_HEADER_LEN, PROTOCOL_VERSION_MAX,
    PROTOCOL_VERSION_MIN,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let primary = NodeId(*b"primary-appl-001");
    let messages = vec![
        Message::Hello(Hello {
            protocol_min: PROTOCOL_VERSION_MIN,
            protocol_max: PROTOCOL_VERSION_MAX,
            software: SoftwareVersion {
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
            },
            node_id: primary,
            node_name: "appliance-a".into(),
            role: Role::Primary,
            epoch: Epoch {
                counter: 4,
                node: primary,
            },
            clock_unix_ms: 1_795_000_000_000,
        }),
        Message::Error(ErrorMessage::new(
            ReasonCode::VersionMismatch,
            "peer runs 7.2.1 (base 3.1.0), this appliance runs 7.3.0 (base 3.2.0)",
        )),
        Message::Chunk(Chunk {
            session: SessionId {
                origin: primary,
                sequence: 17,
            },
            chunk_index: 0,
            data: Bytes::from(vec![0x5a; 256 * 1024]),
        }),
    ];

    let mut stream = BytesMut::new();
    for message in &messages {
        let start = stream.len();
        encode_frame(message, &mut stream)?;
        let header: Vec<String> = stream[start..start + FRAME_HEADER_LEN]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        println!(
            "encoded {:?} frame: {} bytes, header {}",
            message.kind(),
            stream.len() - start,
            header.join(" ")
        );
    }

    // Feed the stream back in reads of 1,000 bytes, as a socket might deliver it.
    let mut read_buffer = BytesMut::new();
    let mut decoded = Vec::new();
    for read in stream.chunks(1000) {
        read_buffer.extend_from_slice(read);
        loop {
            match decode_frame(&mut read_buffer) {
                Ok(message) => decoded.push(message),
                Err(DecodeError::Incomplete { .. }) => break,
                Err(DecodeError::Malformed(why)) => return Err(why.to_string().into()),
            }
        }
    }
    for message in &decoded {
        match message {
            Message::Hello(hello) => println!(
                "decoded hello from {} ({}), runs {}, epoch {}",
                hello.node_name, hello.node_id, hello.software, hello.epoch
            ),
            Message::Error(error) => {
                println!("decoded refusal {:?}: {}", error.reason(), error.text)
            }
            Message::Chunk(chunk) => println!(
                "decoded chunk {} of session {}#{}: {} bytes, shared with the read buffer",
                chunk.chunk_index,
                chunk.session.origin,
                chunk.session.sequence,
                chunk.data.len()
            ),
            other => println!("decoded {:?}", other.kind()),
        }
    }

    // A peer that sends garbage is refused with a reason, never a panic.
    let mut garbage = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
    if let Err(error) = decode_frame(&mut garbage) {
        println!("garbage refused: {error}");
    }
    if decoded == messages {
        println!("all {} messages decoded identically", decoded.len());
        Ok(())
    } else {
        Err("decoded messages differ from the ones encoded".into())
    }
}
