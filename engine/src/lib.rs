//! The Dyad engine: what an appliance knows and does.
//!
//! The replica state machines live here (events in, actions out; no sockets, clock or RNG of
//! their own), together with the stores behind traits, the secure transport and the tokio
//! driver that connects them to the real world. The simulator drives the same state machines
//! through a deterministic world. See `docs/architecture.md`.
#![forbid(unsafe_code)]

pub use dyad_wire as wire;

pub mod appliance;
pub mod cli;
pub mod demo;
pub mod disk;
pub mod driver;
pub mod replica;
pub mod store;
pub mod transport;
pub mod update;
