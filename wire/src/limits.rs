//! Named limits on everything a peer can make us allocate.
//!
//! Every length that arrives from the wire is checked against one of these *before* memory is
//! reserved for it, so a hostile or broken peer can cost us at most these many bytes per frame.

/// Largest payload of a control (non-chunk) frame. Catalog exchanges are the largest control
/// messages; they are paged so that a page stays below this.
pub const MAX_CONTROL_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// Largest recording chunk carried by one chunk frame. Recordings are cut into chunks of at
/// most this size; the store's chunk size must not exceed it.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest operator-facing text (error explanations) in a message.
pub const MAX_TEXT_BYTES: usize = 4096;

/// Largest appliance name carried in the handshake.
pub const MAX_NODE_NAME_BYTES: usize = 128;

/// Most earlier node ids an appliance names as its predecessors (each restore onto new
/// hardware adds one; older ones are forgotten).
pub const MAX_PREDECESSORS: usize = 16;

/// Largest number of entries in any list inside one message.
pub const MAX_LIST_LEN: usize = 65_536;

/// Largest peer address (`host:port`) in a message.
pub const MAX_ADDRESS_BYTES: usize = 256;

/// Largest recording, in chunks: with 1 MiB chunks, 64 GiB. A session header lists one
/// chaining value (32 bytes) per chunk, so this also bounds that message to 2 MiB.
pub const MAX_CHUNKS_PER_RECORDING: usize = 65_536;

/// Most chunks one fetch request may ask for (the receiver's window is at most this).
pub const MAX_CHUNKS_PER_FETCH: usize = 256;

/// Largest site-configuration key.
pub const MAX_CONFIG_KEY_BYTES: usize = 256;

/// Largest site-configuration value.
pub const MAX_CONFIG_VALUE_BYTES: usize = 64 * 1024;

/// Most catalog ranges asked about (or answered) in one message. An answer holds at most
/// [`MAX_RANGE_ANSWER_LEN`] summaries of 40 bytes per range, so this keeps it within
/// [`MAX_CONTROL_PAYLOAD_BYTES`]; larger questions are sent in parts.
pub const MAX_CATALOG_RANGES: usize = 4096;

/// Most origins (appliances that completed sessions) in one catalog answer.
pub const MAX_CATALOG_ORIGINS: usize = 4096;

/// Most children or items in the answer about one range (the summary tree's fan-out).
pub const MAX_RANGE_ANSWER_LEN: usize = 16;
