//! The deterministic simulator.
//!
//! One seed drives a world of simulated appliances, disks, clocks, network and clients around
//! the engine's real state machines, so that faults no test bench can reproduce are replayed
//! bit for bit. The world and its scenarios arrive with the replication engine; until then
//! this crate only fixes the command-line contract (`--list`, `--scenario S --seed N`).
#![forbid(unsafe_code)]

/// A named, seeded test of the engine. Scenarios are registered in [`SCENARIOS`].
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
}

/// Every scenario this build knows. Empty until the engine has a replica state machine.
pub const SCENARIOS: &[Scenario] = &[];
