//! The Dyad engine: what an appliance knows and does.
//!
//! The replica state machines live here (events in, actions out; no sockets, clock or RNG of
//! their own), together with the stores behind traits, the secure transport and the tokio
//! driver that connects them to the real world. The simulator drives the same state machines
//! through a deterministic world. See `docs/architecture.md`.
#![forbid(unsafe_code)]

// The simulator's planted-bug tests switch off safety checks to prove the checkers notice;
// such a build must never ship, so the switch refuses to compile without debug assertions.
#[cfg(all(feature = "planted-bugs", not(debug_assertions)))]
compile_error!(
    "the `planted-bugs` feature deliberately plants defects and exists only for the \
     simulator's tests; it cannot be enabled in a release build"
);

pub use dyad_wire as wire;

#[cfg(feature = "planted-bugs")]
pub mod planted;

/// Whether the planted bug `$bug` (a [`planted::PlantedBug`] variant) is selected on this
/// thread; a constant `false` in every build without the `planted-bugs` feature.
macro_rules! planted_bug {
    ($bug:ident) => {{
        #[cfg(feature = "planted-bugs")]
        let active = $crate::planted::active($crate::planted::PlantedBug::$bug);
        #[cfg(not(feature = "planted-bugs"))]
        let active = false;
        active
    }};
}
pub(crate) use planted_bug;

pub mod appliance;
pub mod backup;
pub mod cli;
pub mod demo;
pub mod disk;
pub mod driver;
pub mod replica;
pub mod store;
pub mod transport;
pub mod update;
