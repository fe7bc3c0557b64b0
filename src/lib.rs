//! punchgate: encrypted peer-to-peer chat and file transfer across NATs.
//!
//! Layers, each knowing only the ones above it in this list: [`identity`],
//! [`tls`], [`wire`], [`gate_socket`], [`tracker`] and [`node`], then the
//! command-line interface in the binary. See docs/ARCHITECTURE.md.

// Nothing from the network, the disk or the user may panic the process:
// outside tests, errors are handled, never unwrapped.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod bench;
pub mod birthday;
pub mod candidates;
pub mod command;
pub mod congestion;
pub mod demo;
pub mod dht;
pub mod doorbell;
pub mod endpoint;
pub mod gate_socket;
pub mod gossip;
pub mod hlc;
pub mod holdings;
pub mod home;
pub mod identity;
pub mod lan;
pub mod node;
pub mod pake;
pub mod portmap;
pub mod protocol;
pub mod punch;
pub mod quota;
pub mod rate;
pub mod render;
pub mod room_key;
pub mod store;
pub mod tls;
pub mod tracker;
pub mod transfer;
pub mod wake;
pub mod web;
pub mod wire;
