//! Router port mapping: asks the home router (the default route's gateway)
//! for a UDP mapping of the gate socket's port with PCP (RFC 6887),
//! NAT-PMP (RFC 6886) or UPnP-IGD, keeps it renewed, and releases it at
//! shutdown. The mapped address is a candidate that any peer's packets get
//! through, whatever the router's NAT does otherwise (docs/NAT.md, "Router
//! port mapping").
//!
//! [`machine`] decides (sans IO, on a caller's clock); [`wire`] and
//! [`upnp`] are the protocols' formats; [`gateway`] finds the router;
//! [`client`] is the async shell that drives them. Nothing here talks to
//! anything but the gateway: NAT-PMP/PCP go to its port 5351, UPnP's
//! search is multicast on the LAN with TTL 1 and only an answer from the
//! gateway's own address is followed, to a description URL on that same
//! address.

pub mod client;
pub mod gateway;
pub mod machine;
pub mod upnp;
pub mod wire;

pub use client::{PortMapClient, Status};
pub use machine::{Mapping, Protocol};
