//! Dyad's core: everything that decides, nothing that waits.
//!
//! The replica state machine (events in, actions out; no sockets, clock, files or RNG of its
//! own), the handshake's rules, install planning and the client-update gate. The tokio driver
//! (`dyad-node`) and the deterministic simulator (`dyad-sim`) both run this very code; neither
//! keeps a copy of a rule. The crash-safe store the replica writes through is `dyad-store`,
//! which depends on this crate for the replica's ports. See `docs/architecture.md`.
#![forbid(unsafe_code)]

// The simulator's planted-bug tests switch off safety checks to prove the checkers notice;
// such a build must never ship, so the switch refuses to compile without debug assertions.
#[cfg(all(feature = "planted-bugs", not(debug_assertions)))]
compile_error!(
    "the `planted-bugs` feature deliberately plants defects and exists only for the \
     simulator's tests; it cannot be enabled in a release build"
);

#[cfg(feature = "planted-bugs")]
pub mod planted;

/// Whether the planted bug `$bug` (a [`planted::PlantedBug`] variant) is selected on this
/// thread; a constant `false` in every build without the `planted-bugs` feature. The feature is
/// checked in the calling crate, so a crate that plants a bug forwards its own `planted-bugs`
/// feature to this one.
#[macro_export]
macro_rules! planted_bug {
    ($bug:ident) => {{
        #[cfg(feature = "planted-bugs")]
        let active = $crate::planted::active($crate::planted::PlantedBug::$bug);
        #[cfg(not(feature = "planted-bugs"))]
        let active = false;
        active
    }};
}

pub mod blame;
pub mod clients;
pub mod handshake;
pub mod install;
pub mod node;
pub mod replica;
pub mod tree;
