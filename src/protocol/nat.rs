//! What a node says of its own NAT (`TrackerRequestBody::ReportNat`,
//! `Member::nat`): the vocabulary of RFC 4787 that birthday punching
//! (`crate::birthday`) decides by. Encoded with the rest of the protocol.

use serde::{Deserialize, Serialize};

/// How a NAT assigns external ports (RFC 4787, 4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NatMapping {
    /// Not measured, or the measurement failed.
    #[default]
    Unknown,
    /// One external address per internal one, whatever the destination
    /// (no NAT counts as this).
    EndpointIndependent,
    /// A fresh external port per destination: a symmetric NAT.
    EndpointDependent,
}

/// What a NAT lets in (RFC 4787, 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NatFiltering {
    #[default]
    Unknown,
    /// A new port of an address already contacted gets in (endpoint-independent
    /// or address-dependent filtering).
    Open,
    /// Only the exact address and port contacted gets in.
    AddressAndPortDependent,
}

/// A node's NAT as it measured it from its gate socket against the
/// tracker's two ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatReport {
    pub mapping: NatMapping,
    pub filtering: NatFiltering,
    /// The external port the tracker's second port saw (0: none). With an
    /// endpoint-dependent mapping, its distance from the reflexive port hints
    /// whether the NAT hands out ports in sequence (`birthday::predict`).
    pub second_port: u16,
}
