//! The byte layouts of the records the store keeps in its metadata database.
//!
//! These bytes come back from a file, so every decoder here treats them as untrusted: lengths
//! are checked against named limits before anything is allocated, flags must be 0 or 1,
//! trailing bytes are refused, and each layout has exactly one encoding of a value (decode
//! then encode gives the same bytes; the fuzz target `store_records` checks it). Layouts are
//! little-endian and fixed in `docs/storage.md`; changing one needs a new `FORMAT_VERSION`.
//!
//! A hand-written layout instead of rkyv: the records are small and flat, and an explicit
//! layout keeps the on-disk format independent of a serialization library's versions.

use dyad_wire::{Epoch, NodeId, SessionId};

use dyad_core::tree::{chunk_count, CHUNK_SIZE_BYTES, MAX_RECORDING_BYTES};

/// Longest site-configuration or appliance-local key.
pub const MAX_CONFIG_KEY_BYTES: usize = 256;
/// Largest site-configuration or appliance-local value.
pub const MAX_CONFIG_VALUE_BYTES: usize = 256 * 1024;
/// Most keys one conflict record can hold.
pub const MAX_CONFLICT_ENTRIES: usize = 100_000;

/// A record's bytes do not follow its layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    pub record: &'static str,
    pub problem: &'static str,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stored {} record is malformed: {}",
            self.record, self.problem
        )
    }
}

impl std::error::Error for RecordError {}

/// The version of the site configuration: the epoch of the write and a sequence number that
/// grows by one with every change, across epochs. Ordered by epoch, then sequence. The same
/// type travels on the wire.
pub use dyad_wire::ConfigVersion;

/// The chain of a configuration with no change before it: that of a configuration never
/// written, and the anchor of a store made before chains were kept.
pub const CONFIG_CHAIN_ZERO: [u8; 32] = [0; 32];

/// The version of an empty configuration that was never written.
pub const CONFIG_VERSION_ZERO: ConfigVersion = ConfigVersion {
    epoch: Epoch {
        counter: 0,
        node: NodeId([0; 16]),
    },
    sequence: 0,
    chain: CONFIG_CHAIN_ZERO,
};

/// One change of the site configuration: `value` is `None` for a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigChange {
    pub version: ConfigVersion,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// The whole site configuration at one version; entries sorted by key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSnapshot {
    pub version: ConfigVersion,
    pub entries: Vec<(String, Vec<u8>)>,
}

/// One key on which two configurations differ; `None` where a side lacks the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictEntry {
    pub key: String,
    pub local: Option<Vec<u8>>,
    pub incoming: Option<Vec<u8>>,
}

/// What this appliance's configuration held when it was replaced by a differing one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictRecord {
    pub recorded_unix_ms: u64,
    pub local_version: ConfigVersion,
    pub incoming_version: ConfigVersion,
    pub entries: Vec<ConflictEntry>,
}

impl ConflictRecord {
    /// The keys on which `local` and `incoming` differ, with both values.
    pub fn between(
        local: &ConfigSnapshot,
        incoming: &ConfigSnapshot,
        recorded_unix_ms: u64,
    ) -> ConflictRecord {
        use std::collections::BTreeMap;
        type Sides<'a> = (Option<&'a Vec<u8>>, Option<&'a Vec<u8>>);
        let mut keys: BTreeMap<&str, Sides<'_>> = BTreeMap::new();
        for (key, value) in &local.entries {
            keys.entry(key).or_default().0 = Some(value);
        }
        for (key, value) in &incoming.entries {
            keys.entry(key).or_default().1 = Some(value);
        }
        let entries = keys
            .into_iter()
            .filter(|(_, (a, b))| a != b)
            .map(|(key, (a, b))| ConflictEntry {
                key: key.to_string(),
                local: a.cloned(),
                incoming: b.cloned(),
            })
            .collect();
        ConflictRecord {
            recorded_unix_ms,
            local_version: local.version,
            incoming_version: incoming.version,
            entries,
        }
    }
}

/// A completed session's metadata, as listed in the catalog (the same type travels on the
/// wire).
pub use dyad_wire::SessionMeta;

/// A recording being received (or re-fetched after corruption), before it is published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartialRecord {
    pub meta: SessionMeta,
    pub cvs: Vec<[u8; 32]>,
    /// Set when a published recording was found damaged (a chunk that failed verification or
    /// could not be read): it is listed as damaged, fetched again from a peer that holds it,
    /// and kept until then. The time it was found, when known (`Some(0)`: a store from before
    /// the time was recorded).
    pub damaged_since_unix_ms: Option<u64>,
}

/// The partial record's state byte: being received, damaged before the time was recorded,
/// damaged with its time following.
const PARTIAL_RECEIVING: u8 = 0;
const PARTIAL_DAMAGED_UNTIMED: u8 = 1;
const PARTIAL_DAMAGED: u8 = 2;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn bytes(&mut self, value: &[u8]) {
        self.u32(u32::try_from(value.len()).expect("record fields are below their limits"));
        self.0.extend_from_slice(value);
    }
    fn option(&mut self, value: Option<&[u8]>) {
        match value {
            None => self.u8(0),
            Some(bytes) => {
                self.u8(1);
                self.bytes(bytes);
            }
        }
    }
    /// Only the stamp: the chain is stored apart, so these layouts are those of format 1.
    fn version(&mut self, version: &ConfigVersion) {
        self.u64(version.epoch.counter);
        self.0.extend_from_slice(&version.epoch.node.0);
        self.u64(version.sequence);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    record: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], record: &'static str) -> Reader<'a> {
        Reader { bytes, record }
    }
    fn error(&self, problem: &'static str) -> RecordError {
        RecordError {
            record: self.record,
            problem,
        }
    }
    fn take(&mut self, len: usize) -> Result<&'a [u8], RecordError> {
        if self.bytes.len() < len {
            return Err(self.error("truncated"));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn flag(&mut self) -> Result<bool, RecordError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.error("a flag is neither 0 nor 1")),
        }
    }
    fn bytes(&mut self, max: usize) -> Result<&'a [u8], RecordError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(self.error("a field is longer than its limit"));
        }
        self.take(len)
    }
    fn string(&mut self, max: usize) -> Result<String, RecordError> {
        let bytes = self.bytes(max)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| self.error("a key is not UTF-8"))
    }
    fn option(&mut self, max: usize) -> Result<Option<Vec<u8>>, RecordError> {
        if self.flag()? {
            Ok(Some(self.bytes(max)?.to_vec()))
        } else {
            Ok(None)
        }
    }
    /// A version's stamp `(epoch, sequence)`; its chain is kept apart (`CONFIG_CHAINS`), so it
    /// comes back as zeros here.
    fn version(&mut self) -> Result<ConfigVersion, RecordError> {
        Ok(ConfigVersion {
            epoch: Epoch {
                counter: self.u64()?,
                node: NodeId(self.array()?),
            },
            sequence: self.u64()?,
            chain: CONFIG_CHAIN_ZERO,
        })
    }
    fn finish(self) -> Result<(), RecordError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.error("trailing bytes"))
        }
    }
}

/// Encoded length of a [`ConfigVersion`].
pub const CONFIG_VERSION_LEN: usize = 32;
/// Encoded length of a [`SessionMeta`].
pub const SESSION_META_LEN: usize = 16 + 8 + 8 + 8 + 8 + 32 + 4 + 1;
/// Encoded length of a session id as a database key (origin, then big-endian sequence so
/// that keys sort like ids).
pub const SESSION_KEY_LEN: usize = 24;

pub fn encode_config_version(version: &ConfigVersion) -> Vec<u8> {
    let mut writer = Writer(Vec::with_capacity(CONFIG_VERSION_LEN));
    writer.version(version);
    writer.0
}

pub fn decode_config_version(bytes: &[u8]) -> Result<ConfigVersion, RecordError> {
    let mut reader = Reader::new(bytes, "configuration version");
    let version = reader.version()?;
    reader.finish()?;
    Ok(version)
}

pub fn encode_config_change(change: &ConfigChange) -> Vec<u8> {
    let mut writer = Writer(Vec::new());
    writer.version(&change.version);
    writer.bytes(change.key.as_bytes());
    writer.option(change.value.as_deref());
    writer.0
}

pub fn decode_config_change(bytes: &[u8]) -> Result<ConfigChange, RecordError> {
    let mut reader = Reader::new(bytes, "configuration change");
    let change = ConfigChange {
        version: reader.version()?,
        key: reader.string(MAX_CONFIG_KEY_BYTES)?,
        value: reader.option(MAX_CONFIG_VALUE_BYTES)?,
    };
    reader.finish()?;
    Ok(change)
}

pub fn encode_conflict(record: &ConflictRecord) -> Vec<u8> {
    let mut writer = Writer(Vec::new());
    writer.u64(record.recorded_unix_ms);
    writer.version(&record.local_version);
    writer.version(&record.incoming_version);
    writer
        .u32(u32::try_from(record.entries.len()).expect("entries are below MAX_CONFLICT_ENTRIES"));
    for entry in &record.entries {
        writer.bytes(entry.key.as_bytes());
        writer.option(entry.local.as_deref());
        writer.option(entry.incoming.as_deref());
    }
    // The two versions' chains trail the record, unless both are the zero anchor (records
    // written before chains existed end here): one encoding per value either way.
    if (record.local_version.chain, record.incoming_version.chain)
        != (CONFIG_CHAIN_ZERO, CONFIG_CHAIN_ZERO)
    {
        writer.0.extend_from_slice(&record.local_version.chain);
        writer.0.extend_from_slice(&record.incoming_version.chain);
    }
    writer.0
}

pub fn decode_conflict(bytes: &[u8]) -> Result<ConflictRecord, RecordError> {
    let mut reader = Reader::new(bytes, "configuration conflict");
    let recorded_unix_ms = reader.u64()?;
    let local_version = reader.version()?;
    let incoming_version = reader.version()?;
    let count = reader.u32()? as usize;
    // Each entry takes at least 6 bytes, so a count the remaining bytes cannot hold is refused
    // before anything is allocated for it.
    if count > MAX_CONFLICT_ENTRIES || count > reader.bytes.len() / 6 {
        return Err(reader.error("more entries than the record can hold"));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(ConflictEntry {
            key: reader.string(MAX_CONFIG_KEY_BYTES)?,
            local: reader.option(MAX_CONFIG_VALUE_BYTES)?,
            incoming: reader.option(MAX_CONFIG_VALUE_BYTES)?,
        });
    }
    let (mut local_version, mut incoming_version) = (local_version, incoming_version);
    if !reader.bytes.is_empty() {
        local_version.chain = reader.array()?;
        incoming_version.chain = reader.array()?;
        if (local_version.chain, incoming_version.chain) == (CONFIG_CHAIN_ZERO, CONFIG_CHAIN_ZERO) {
            return Err(reader.error("zero chains are written by omission"));
        }
    }
    reader.finish()?;
    Ok(ConflictRecord {
        recorded_unix_ms,
        local_version,
        incoming_version,
        entries,
    })
}

pub fn session_key(id: &SessionId) -> [u8; SESSION_KEY_LEN] {
    let mut key = [0u8; SESSION_KEY_LEN];
    key[..16].copy_from_slice(&id.origin.0);
    key[16..].copy_from_slice(&id.sequence.to_be_bytes());
    key
}

pub fn decode_session_key(bytes: &[u8]) -> Result<SessionId, RecordError> {
    let array: [u8; SESSION_KEY_LEN] = bytes.try_into().map_err(|_| RecordError {
        record: "session key",
        problem: "wrong length",
    })?;
    let mut origin = [0u8; 16];
    origin.copy_from_slice(&array[..16]);
    let mut sequence = [0u8; 8];
    sequence.copy_from_slice(&array[16..]);
    Ok(SessionId {
        origin: NodeId(origin),
        sequence: u64::from_be_bytes(sequence),
    })
}

fn write_meta(writer: &mut Writer, meta: &SessionMeta) {
    writer.0.extend_from_slice(&meta.id.origin.0);
    writer.u64(meta.id.sequence);
    writer.u64(meta.started_unix_ms);
    writer.u64(meta.ended_unix_ms);
    writer.u64(meta.size_bytes);
    writer.0.extend_from_slice(&meta.root);
    writer.u32(meta.chunk_size_bytes);
    writer.u8(u8::from(meta.ended_normally));
}

fn read_meta(reader: &mut Reader<'_>) -> Result<SessionMeta, RecordError> {
    let meta = SessionMeta {
        id: SessionId {
            origin: NodeId(reader.array()?),
            sequence: reader.u64()?,
        },
        started_unix_ms: reader.u64()?,
        ended_unix_ms: reader.u64()?,
        size_bytes: reader.u64()?,
        root: reader.array()?,
        chunk_size_bytes: reader.u32()?,
        ended_normally: reader.flag()?,
    };
    if meta.chunk_size_bytes as usize != CHUNK_SIZE_BYTES {
        return Err(reader.error("unsupported chunk size"));
    }
    if meta.size_bytes > MAX_RECORDING_BYTES {
        return Err(reader.error("recording larger than the limit"));
    }
    Ok(meta)
}

pub fn encode_session_meta(meta: &SessionMeta) -> Vec<u8> {
    let mut writer = Writer(Vec::with_capacity(SESSION_META_LEN));
    write_meta(&mut writer, meta);
    writer.0
}

pub fn decode_session_meta(bytes: &[u8]) -> Result<SessionMeta, RecordError> {
    let mut reader = Reader::new(bytes, "session");
    let meta = read_meta(&mut reader)?;
    reader.finish()?;
    Ok(meta)
}

/// Chaining values are stored back to back; their count follows from the recording's size.
pub fn encode_chaining_values(cvs: &[[u8; 32]]) -> Vec<u8> {
    cvs.concat()
}

pub fn decode_chaining_values(bytes: &[u8], size_bytes: u64) -> Result<Vec<[u8; 32]>, RecordError> {
    let expected = chunk_count(size_bytes.min(MAX_RECORDING_BYTES)) as usize;
    if bytes.len() != expected * 32 {
        return Err(RecordError {
            record: "chunk hash list",
            problem: "length does not match the recording size",
        });
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|cv| {
            let mut out = [0u8; 32];
            out.copy_from_slice(cv);
            out
        })
        .collect())
}

pub(crate) fn encode_partial(record: &PartialRecord) -> Vec<u8> {
    let mut writer = Writer(Vec::with_capacity(
        SESSION_META_LEN + 9 + record.cvs.len() * 32,
    ));
    write_meta(&mut writer, &record.meta);
    match record.damaged_since_unix_ms {
        None => writer.u8(PARTIAL_RECEIVING),
        // 0 is "found damaged at an unknown time", the untimed state of older stores.
        Some(0) => writer.u8(PARTIAL_DAMAGED_UNTIMED),
        Some(since_unix_ms) => {
            writer.u8(PARTIAL_DAMAGED);
            writer.u64(since_unix_ms);
        }
    }
    for cv in &record.cvs {
        writer.0.extend_from_slice(cv);
    }
    writer.0
}

pub(crate) fn decode_partial(bytes: &[u8]) -> Result<PartialRecord, RecordError> {
    let mut reader = Reader::new(bytes, "partial recording");
    let meta = read_meta(&mut reader)?;
    let damaged_since_unix_ms = match reader.u8()? {
        PARTIAL_RECEIVING => None,
        PARTIAL_DAMAGED_UNTIMED => Some(0),
        PARTIAL_DAMAGED => match reader.u64()? {
            0 => return Err(reader.error("a damaged recording's time of 0 is written untimed")),
            since_unix_ms => Some(since_unix_ms),
        },
        _ => return Err(reader.error("unknown partial recording state")),
    };
    let cvs = decode_chaining_values(reader.take(reader.bytes.len())?, meta.size_bytes)
        .map_err(|_| reader.error("chunk hash list does not match the recording size"))?;
    Ok(PartialRecord {
        meta,
        cvs,
        damaged_since_unix_ms,
    })
}

/// One bit per chunk, chunk 0 in the lowest bit of byte 0; unused high bits must be zero.
pub fn encode_bitmap(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (index, bit) in bits.iter().enumerate() {
        if *bit {
            out[index / 8] |= 1 << (index % 8);
        }
    }
    out
}

pub fn decode_bitmap(bytes: &[u8], chunk_count: u64) -> Result<Vec<bool>, RecordError> {
    let error = |problem| RecordError {
        record: "durable chunk bitmap",
        problem,
    };
    let count = usize::try_from(chunk_count).map_err(|_| error("too many chunks"))?;
    if bytes.len() != count.div_ceil(8) {
        return Err(error("length does not match the chunk count"));
    }
    let bits: Vec<bool> = (0..count)
        .map(|index| bytes[index / 8] & (1 << (index % 8)) != 0)
        .collect();
    if encode_bitmap(&bits) != bytes {
        return Err(error("bits set past the last chunk"));
    }
    Ok(bits)
}

/// Runs every decoder on `bytes` and checks that whatever decodes re-encodes to the same
/// bytes. The `store_records` fuzz target calls this; it panics only on a decoder bug.
pub fn check_decoders_roundtrip(bytes: &[u8]) {
    if let Ok(value) = decode_config_version(bytes) {
        assert_eq!(encode_config_version(&value), bytes);
    }
    if let Ok(value) = decode_config_change(bytes) {
        assert_eq!(encode_config_change(&value), bytes);
    }
    if let Ok(value) = decode_conflict(bytes) {
        assert_eq!(encode_conflict(&value), bytes);
    }
    if let Ok(value) = decode_session_meta(bytes) {
        assert_eq!(encode_session_meta(&value), bytes);
    }
    if let Ok(value) = decode_session_key(bytes) {
        assert_eq!(session_key(&value)[..], bytes[..]);
    }
    if let Ok(value) = decode_partial(bytes) {
        assert_eq!(encode_partial(&value), bytes);
    }
    if let Some((&first, rest)) = bytes.split_first() {
        let chunks = u64::from(first) * 3;
        if let Ok(value) = decode_bitmap(rest, chunks) {
            assert_eq!(encode_bitmap(&value), rest);
        }
        if let Ok(value) = decode_chaining_values(rest, chunks * CHUNK_SIZE_BYTES as u64) {
            assert_eq!(encode_chaining_values(&value), rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version(counter: u64, sequence: u64) -> ConfigVersion {
        ConfigVersion {
            epoch: Epoch {
                counter,
                node: NodeId([counter as u8; 16]),
            },
            sequence,
            chain: CONFIG_CHAIN_ZERO,
        }
    }

    #[test]
    fn records_round_trip() {
        let meta = SessionMeta {
            id: SessionId {
                origin: NodeId([3; 16]),
                sequence: 9,
            },
            started_unix_ms: 1,
            ended_unix_ms: 2,
            size_bytes: 2 * CHUNK_SIZE_BYTES as u64 + 1,
            root: [7; 32],
            chunk_size_bytes: CHUNK_SIZE_BYTES as u32,
            ended_normally: true,
        };
        let bytes = encode_session_meta(&meta);
        assert_eq!(bytes.len(), SESSION_META_LEN);
        assert_eq!(decode_session_meta(&bytes), Ok(meta));
        let partial = PartialRecord {
            meta,
            cvs: vec![[1; 32], [2; 32], [3; 32]],
            damaged_since_unix_ms: Some(1_700_000_000_123),
        };
        assert_eq!(
            decode_partial(&encode_partial(&partial)),
            Ok(partial.clone())
        );
        let receiving = PartialRecord {
            damaged_since_unix_ms: None,
            ..partial.clone()
        };
        assert_eq!(decode_partial(&encode_partial(&receiving)), Ok(receiving));
        // A store from before damage was timed: state byte 1, no time.
        let mut legacy = encode_session_meta(&meta);
        legacy.push(1);
        for cv in &partial.cvs {
            legacy.extend_from_slice(cv);
        }
        assert_eq!(
            decode_partial(&legacy).map(|record| record.damaged_since_unix_ms),
            Ok(Some(0))
        );
        // One encoding per record (the fuzz target's rule): an unknown time is written
        // untimed, and a timed state with time 0 is refused.
        let untimed = decode_partial(&legacy).expect("legacy");
        assert_eq!(encode_partial(&untimed), legacy);
        let mut timed_zero = encode_session_meta(&meta);
        timed_zero.push(2);
        timed_zero.extend_from_slice(&0u64.to_le_bytes());
        for cv in &partial.cvs {
            timed_zero.extend_from_slice(cv);
        }
        assert!(decode_partial(&timed_zero).is_err());
        let conflict = ConflictRecord {
            recorded_unix_ms: 5,
            local_version: version(1, 2),
            incoming_version: version(2, 7),
            entries: vec![ConflictEntry {
                key: "k".into(),
                local: Some(b"a".to_vec()),
                incoming: None,
            }],
        };
        assert_eq!(decode_conflict(&encode_conflict(&conflict)), Ok(conflict));
        let bits = vec![true, false, true, true, false, false, false, false, true];
        assert_eq!(decode_bitmap(&encode_bitmap(&bits), 9), Ok(bits));
        assert!(decode_bitmap(&[0, 2], 9).is_err(), "bit past the end");
    }

    #[test]
    fn hostile_bytes_are_refused() {
        let mut change = encode_config_change(&ConfigChange {
            version: version(1, 1),
            key: "key".into(),
            value: Some(vec![1, 2, 3]),
        });
        change.push(0);
        assert!(decode_config_change(&change).is_err(), "trailing byte");
        let mut huge = encode_config_version(&version(1, 1));
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_config_change(&huge).is_err());
        let mut conflict = vec![0u8; 8 + 64];
        conflict.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_conflict(&conflict).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            check_decoders_roundtrip(&bytes);
        }

        #[test]
        fn changes_round_trip(counter: u64, sequence: u64, key in "[a-z/]{0,40}",
                              value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
            let change = ConfigChange { version: version(counter, sequence), key, value };
            prop_assert_eq!(decode_config_change(&encode_config_change(&change)), Ok(change));
        }
    }
}
