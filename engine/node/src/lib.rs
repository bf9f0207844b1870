//! Dyad's node: an appliance on a real machine.
//!
//! The tokio driver that connects the core's state machines to sockets, clocks and files
//! (`driver`), the rustls transport between the two appliances (`transport`), the appliance's
//! data folder (`appliance`), the admin protocol the `dyad` commands speak to a running server
//! (`driver::admin`), and the file-facing parts of updates (`update`) and settings backups
//! (`backup`). Decisions are the core's (`dyad-core`); persistence is the store's
//! (`dyad-store`). See `docs/architecture.md`.
#![forbid(unsafe_code)]

pub use dyad_wire as wire;

pub mod admin;
pub mod appliance;
pub mod backup;
pub mod driver;
pub mod transport;
pub mod update;
pub mod vendor_key;
