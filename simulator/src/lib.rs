//! The deterministic simulator.
//!
//! One seed drives a world of simulated appliances, disks, clocks, network and clients around
//! the engine's real replica state machine and real store, so that faults no test bench can
//! reproduce are replayed bit for bit. `docs/simulator.md` says what is simulated and how to
//! add a scenario or replay a failure.
#![forbid(unsafe_code)]

pub mod checks;
pub mod clients;
pub mod cost;
pub mod coverage;
pub mod replay;
pub mod rng;
pub mod runner;
pub mod scenarios;
mod scenarios_migration;
mod scenarios_roles;
mod scenarios_storage;
mod scenarios_upgrade;
pub mod shrink;
pub mod swarm;
pub mod upgrade;
pub mod world;

pub use scenarios::{Scenario, SCENARIOS};
