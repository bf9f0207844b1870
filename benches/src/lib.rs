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
