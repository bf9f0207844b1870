//! Verifying a recording one chunk at a time against its BLAKE3 root.
//!
//! A recording's content id (its "root") is plain `blake3::hash` of the whole content, so
//! anyone can check it with stock tools. Our chunks are [`CHUNK_SIZE_BYTES`] long, a power of
//! two multiple of BLAKE3's 1 KiB chunk, so each of our chunks is one whole subtree of the
//! BLAKE3 tree and its chaining value can be computed from that chunk alone (blake3's `hazmat`
//! module). The list of chunk chaining values is authenticated by merging it back up to the
//! root with BLAKE3's own split rule (`left_subtree_len`); after that, each chunk is checked
//! on its own against its chaining value, before it is written and whenever it is read.
//!
//! A recording of at most one chunk has no parent nodes: its single "chaining value" is the
//! root itself (blake3 of the chunk). An empty recording has no chunks and the root of the
//! empty input.

use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, HasherExt};
use blake3::hazmat::{ChainingValue, Mode};
use std::io::{self, Read};

/// Size of a recording chunk: the unit of transfer, verification and resumption.
pub const CHUNK_SIZE_BYTES: usize = 1 << 20;

const _: () = assert!(CHUNK_SIZE_BYTES <= dyad_wire::limits::MAX_CHUNK_BYTES);
const _: () = assert!(CHUNK_SIZE_BYTES.is_power_of_two() && CHUNK_SIZE_BYTES >= blake3::CHUNK_LEN);

/// Largest recording the store accepts (1 TiB): bounds the chaining value list (8 MiB).
pub const MAX_RECORDING_BYTES: u64 = 1 << 40;

/// Why a chaining value list or a chunk does not match a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeError {
    /// The list holds the wrong number of chaining values for the recording's length.
    WrongChunkCount { expected: u64, got: u64 },
    /// The recording is longer than [`MAX_RECORDING_BYTES`].
    TooLarge { len: u64 },
    /// The chaining values do not merge to the expected root.
    RootMismatch,
    /// The chunk index is past the recording's end.
    IndexOutOfRange { index: u64, chunk_count: u64 },
    /// The chunk has the wrong length for its place in the recording.
    WrongChunkLength { expected: u64, got: u64 },
    /// The chunk's bytes do not hash to its chaining value.
    ChunkMismatch { index: u64 },
}

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TreeError::WrongChunkCount { expected, got } => write!(
                f,
                "the chunk hash list has {got} entries, the recording's length needs {expected}"
            ),
            TreeError::TooLarge { len } => write!(
                f,
                "a recording of {len} bytes is larger than the limit of {MAX_RECORDING_BYTES}"
            ),
            TreeError::RootMismatch => {
                write!(
                    f,
                    "the chunk hash list does not match the recording's BLAKE3 root"
                )
            }
            TreeError::IndexOutOfRange { index, chunk_count } => write!(
                f,
                "chunk {index} is past the end of a recording of {chunk_count} chunks"
            ),
            TreeError::WrongChunkLength { expected, got } => {
                write!(f, "chunk has {got} bytes where {expected} were expected")
            }
            TreeError::ChunkMismatch { index } => {
                write!(f, "chunk {index} does not match its BLAKE3 chaining value")
            }
        }
    }
}

impl std::error::Error for TreeError {}

/// Number of chunks of a recording of `total_len` bytes (zero for an empty one).
pub fn chunk_count(total_len: u64) -> u64 {
    total_len.div_ceil(CHUNK_SIZE_BYTES as u64)
}

/// Length of chunk `index` of a recording of `total_len` bytes.
pub fn chunk_len(index: u64, total_len: u64) -> Result<u64, TreeError> {
    let count = chunk_count(total_len);
    if index >= count {
        return Err(TreeError::IndexOutOfRange {
            index,
            chunk_count: count,
        });
    }
    let start = index * CHUNK_SIZE_BYTES as u64;
    Ok((total_len - start).min(CHUNK_SIZE_BYTES as u64))
}

/// The chaining value of chunk `index` of a recording of `total_len` bytes, from the chunk's
/// bytes alone. `data` must have the chunk's length (checked by callers).
pub fn chunk_chaining_value(index: u64, data: &[u8], total_len: u64) -> ChainingValue {
    if total_len <= CHUNK_SIZE_BYTES as u64 {
        // A one-chunk recording is its own root: there is no parent node to merge into.
        return *blake3::hash(data).as_bytes();
    }
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * CHUNK_SIZE_BYTES as u64);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// Checks that `data` is chunk `index` of a recording of `total_len` bytes whose chaining
/// value is `expected_cv`.
pub fn verify_chunk(
    index: u64,
    data: &[u8],
    expected_cv: &ChainingValue,
    total_len: u64,
) -> Result<(), TreeError> {
    let expected_len = chunk_len(index, total_len)?;
    if data.len() as u64 != expected_len {
        return Err(TreeError::WrongChunkLength {
            expected: expected_len,
            got: data.len() as u64,
        });
    }
    if chunk_chaining_value(index, data, total_len) != *expected_cv {
        return Err(TreeError::ChunkMismatch { index });
    }
    Ok(())
}

/// The chaining value of `data` as the subtree starting at chunk `index` of a recording longer
/// than one chunk: what [`chunk_chaining_value`] returns for such a recording. It needs no
/// knowledge of the recording's length, so a driver can compute it as soon as a chunk
/// arrives, on whichever thread decoded it.
pub fn chunk_subtree_cv(index: u64, data: &[u8]) -> ChainingValue {
    chunk_chaining_value(index, data, u64::MAX)
}

/// [`verify_chunk`] for a chunk of `data_len` bytes whose [`chunk_subtree_cv`] was already
/// computed. A recording of one chunk hashes its chunk as the root instead, which the subtree
/// value cannot show: such a chunk is refused here, and callers verify it with
/// [`verify_chunk`] (the store does).
pub fn verify_chunk_hashed(
    index: u64,
    data_len: u64,
    subtree_cv: &ChainingValue,
    expected_cv: &ChainingValue,
    total_len: u64,
) -> Result<(), TreeError> {
    let expected_len = chunk_len(index, total_len)?;
    if data_len != expected_len {
        return Err(TreeError::WrongChunkLength {
            expected: expected_len,
            got: data_len,
        });
    }
    if total_len <= CHUNK_SIZE_BYTES as u64 || subtree_cv != expected_cv {
        return Err(TreeError::ChunkMismatch { index });
    }
    Ok(())
}

/// The root of a recording of `total_len` bytes whose chunks have the chaining values `cvs`.
pub fn root_from_chaining_values(
    cvs: &[ChainingValue],
    total_len: u64,
) -> Result<blake3::Hash, TreeError> {
    if total_len > MAX_RECORDING_BYTES {
        return Err(TreeError::TooLarge { len: total_len });
    }
    let expected = chunk_count(total_len);
    if cvs.len() as u64 != expected {
        return Err(TreeError::WrongChunkCount {
            expected,
            got: cvs.len() as u64,
        });
    }
    match cvs {
        [] => Ok(blake3::hash(b"")),
        [only] => Ok(blake3::Hash::from_bytes(*only)),
        _ => {
            let (left, right) = split(cvs, total_len);
            Ok(merge_subtrees_root(&left, &right, Mode::Hash))
        }
    }
}

/// Whether `cvs` authenticate to `root` for a recording of `total_len` bytes.
pub fn check_chaining_values(
    cvs: &[ChainingValue],
    total_len: u64,
    root: &[u8; 32],
) -> Result<(), TreeError> {
    if root_from_chaining_values(cvs, total_len)?.as_bytes() == root {
        Ok(())
    } else {
        Err(TreeError::RootMismatch)
    }
}

/// The two child chaining values of the subtree covering `cvs` (`len` bytes, more than one
/// chunk), split where BLAKE3 splits it.
fn split(cvs: &[ChainingValue], len: u64) -> (ChainingValue, ChainingValue) {
    let left_len = left_subtree_len(len);
    // left_len is a power of two at least CHUNK_SIZE_BYTES because len > CHUNK_SIZE_BYTES.
    let left_chunks = (left_len / CHUNK_SIZE_BYTES as u64) as usize;
    let left = subtree_cv(&cvs[..left_chunks], left_len);
    let right = subtree_cv(&cvs[left_chunks..], len - left_len);
    (left, right)
}

fn subtree_cv(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (left, right) = split(cvs, len);
    merge_subtrees_non_root(&left, &right, Mode::Hash)
}

/// Reads `reader` to its end, one chunk at a time (memory: one chunk), and returns the
/// chaining values of its chunks, its length and its root.
pub fn chunk_chaining_values(
    mut reader: impl Read,
) -> io::Result<(Vec<ChainingValue>, u64, blake3::Hash)> {
    let mut cvs = Vec::new();
    let mut buffer = vec![0u8; CHUNK_SIZE_BYTES];
    let mut first: Option<Vec<u8>> = None;
    let mut total_len = 0u64;
    loop {
        let filled = read_full(&mut reader, &mut buffer)?;
        if filled == 0 {
            break;
        }
        total_len += filled as u64;
        if total_len > MAX_RECORDING_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                TreeError::TooLarge { len: total_len },
            ));
        }
        let index = chunk_count(total_len) - 1;
        if index == 0 {
            // Whether chunk 0 is the whole recording is only known once more bytes arrive.
            first = Some(buffer[..filled].to_vec());
            continue;
        }
        if let Some(first) = first.take() {
            cvs.push(chunk_chaining_value(0, &first, u64::MAX));
        }
        cvs.push(chunk_chaining_value(index, &buffer[..filled], u64::MAX));
    }
    if let Some(first) = first {
        cvs.push(chunk_chaining_value(0, &first, total_len));
    }
    let root = root_from_chaining_values(&cvs, total_len)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    Ok((cvs, total_len, root))
}

/// Fills `buffer` from `reader` unless the reader ends first; returns the bytes read.
pub fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn content(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
            .collect()
    }

    fn check_len(len: usize) {
        let data = content(len, 7);
        let (cvs, total, root) = chunk_chaining_values(&data[..]).expect("in-memory read");
        assert_eq!(total, len as u64);
        assert_eq!(root, blake3::hash(&data), "len {len}");
        check_chaining_values(&cvs, total, root.as_bytes()).expect("authentic list");
        for (index, chunk) in data.chunks(CHUNK_SIZE_BYTES).enumerate() {
            verify_chunk(index as u64, chunk, &cvs[index], total).expect("chunk verifies");
            let mut bad = chunk.to_vec();
            bad[chunk.len() / 2] ^= 1;
            assert!(verify_chunk(index as u64, &bad, &cvs[index], total).is_err());
        }
    }

    #[test]
    fn boundary_lengths_agree_with_blake3() {
        let mib = CHUNK_SIZE_BYTES;
        for len in [
            0,
            1,
            1023,
            1024,
            1025,
            mib - 1,
            mib,
            mib + 1,
            2 * mib,
            3 * mib + 5,
        ] {
            check_len(len);
        }
    }

    #[test]
    fn tampered_lists_are_refused() {
        let data = content(3 * CHUNK_SIZE_BYTES + 10, 1);
        let (mut cvs, total, root) = chunk_chaining_values(&data[..]).expect("read");
        cvs.swap(0, 1);
        assert_eq!(
            check_chaining_values(&cvs, total, root.as_bytes()),
            Err(TreeError::RootMismatch)
        );
        cvs.pop();
        assert!(matches!(
            check_chaining_values(&cvs, total, root.as_bytes()),
            Err(TreeError::WrongChunkCount { .. })
        ));
        assert!(matches!(
            verify_chunk(9, b"", &[0; 32], total),
            Err(TreeError::IndexOutOfRange { .. })
        ));
    }

    #[test]
    fn precomputed_subtree_values_verify_like_the_chunks() {
        let data = content(3 * CHUNK_SIZE_BYTES + 10, 4);
        let (cvs, total, _) = chunk_chaining_values(&data[..]).expect("read");
        for (index, chunk) in data.chunks(CHUNK_SIZE_BYTES).enumerate() {
            let index = index as u64;
            let hashed = chunk_subtree_cv(index, chunk);
            let len = chunk.len() as u64;
            verify_chunk_hashed(index, len, &hashed, &cvs[index as usize], total)
                .expect("a chunk's own value verifies");
            let mut bad = chunk.to_vec();
            bad[0] ^= 1;
            let bad_cv = chunk_subtree_cv(index, &bad);
            assert_eq!(
                verify_chunk_hashed(index, len, &bad_cv, &cvs[index as usize], total),
                Err(TreeError::ChunkMismatch { index })
            );
            // The value of a chunk placed elsewhere in the tree differs.
            let moved = chunk_subtree_cv(index + 1, chunk);
            assert!(verify_chunk_hashed(index, len, &moved, &cvs[index as usize], total).is_err());
            assert!(matches!(
                verify_chunk_hashed(index, len + 1, &hashed, &cvs[index as usize], total),
                Err(TreeError::WrongChunkLength { .. })
            ));
        }
        // One chunk: its value is the root, which a subtree value never matches.
        let small = content(CHUNK_SIZE_BYTES, 2);
        let (cvs, total, _) = chunk_chaining_values(&small[..]).expect("read");
        let hashed = chunk_subtree_cv(0, &small);
        assert!(verify_chunk_hashed(0, total, &hashed, &cvs[0], total).is_err());
        verify_chunk(0, &small, &cvs[0], total).expect("verified in full instead");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn random_lengths_agree_with_blake3(len in 0usize..(5 * CHUNK_SIZE_BYTES + 3)) {
            check_len(len);
        }
    }
}
