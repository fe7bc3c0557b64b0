//! The rendezvous tracker and relay: the server ([`server`]) with its pure
//! state ([`registry`]) and its relay (`relay`), and the session a node
//! keeps with it ([`client`]).

pub mod client;
mod doorbell;
mod introduce;
mod offered;
mod per_address;
pub mod registry;
mod relay;
pub mod server;

pub use client::{SessionEvent, TrackerError, TrackerSession};
pub use registry::TrackerLimits;
pub use relay::RelayConfig;
pub use server::{Tracker, TrackerConfig, TrackerStats};
