//! The datagrams of NAT-PMP (RFC 6886) and PCP (RFC 6887) for one UDP
//! mapping: encode a request, decode a response. Pure; a response that is
//! short, of another version or opcode, or for another port is `None`
//! (anyone on the LAN could send garbage to the client's socket).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

/// The port NAT-PMP and PCP servers listen on.
pub const SERVER_PORT: u16 = 5351;

const NATPMP_VERSION: u8 = 0;
const PCP_VERSION: u8 = 2;
const NATPMP_OP_ADDRESS: u8 = 0;
const NATPMP_OP_MAP_UDP: u8 = 1;
const PCP_OP_MAP: u8 = 1;
const RESPONSE_BIT: u8 = 0x80;
const UDP: u8 = 17;
/// PCP's MAP request and response are both this long (header + opcode).
pub const PCP_MAP_LEN: usize = 60;
/// Largest datagram either protocol sends us (PCP without options).
pub const MAX_RESPONSE: usize = 1100;

/// What a server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// NAT-PMP: the router's external address.
    NatPmpAddress {
        result: u16,
        epoch: u32,
        external: Ipv4Addr,
    },
    /// NAT-PMP: a UDP mapping of `internal_port` (lifetime 0: released).
    NatPmpMap {
        result: u16,
        epoch: u32,
        internal_port: u16,
        external_port: u16,
        lifetime: u32,
    },
    /// PCP: a MAP answer for the request with `nonce`.
    PcpMap {
        result: u8,
        epoch: u32,
        lifetime: u32,
        nonce: [u8; 12],
        internal_port: u16,
        external: SocketAddrV4,
    },
    /// The server does not speak the version asked (a NAT-PMP-only server
    /// answering PCP, RFC 6887 §9).
    UnsupportedVersion,
}

/// NAT-PMP: ask for the external address.
pub fn natpmp_address_request() -> [u8; 2] {
    [NATPMP_VERSION, NATPMP_OP_ADDRESS]
}

/// NAT-PMP: map UDP `internal_port`, suggesting `external_port`, for
/// `lifetime` seconds (0 releases it).
pub fn natpmp_map_request(internal_port: u16, external_port: u16, lifetime: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[0] = NATPMP_VERSION;
    out[1] = NATPMP_OP_MAP_UDP;
    out[4..6].copy_from_slice(&internal_port.to_be_bytes());
    out[6..8].copy_from_slice(&external_port.to_be_bytes());
    out[8..12].copy_from_slice(&lifetime.to_be_bytes());
    out
}

/// PCP MAP: map UDP `internal_port` of `client` (the address the request
/// leaves from; the server checks it), suggesting `external_port`, for
/// `lifetime` seconds (0 releases it).
pub fn pcp_map_request(
    client: Ipv4Addr,
    nonce: [u8; 12],
    internal_port: u16,
    external_port: u16,
    lifetime: u32,
) -> [u8; PCP_MAP_LEN] {
    let mut out = [0u8; PCP_MAP_LEN];
    out[0] = PCP_VERSION;
    out[1] = PCP_OP_MAP;
    out[4..8].copy_from_slice(&lifetime.to_be_bytes());
    out[8..24].copy_from_slice(&client.to_ipv6_mapped().octets());
    out[24..36].copy_from_slice(&nonce);
    out[36] = UDP;
    out[40..42].copy_from_slice(&internal_port.to_be_bytes());
    out[42..44].copy_from_slice(&external_port.to_be_bytes());
    // No preferred external address: the IPv4-mapped all-zeros address.
    out[44..60].copy_from_slice(&Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets());
    out
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Decodes a datagram from the server; `None` for anything else.
pub fn decode(bytes: &[u8]) -> Option<Response> {
    let (&version, &op) = (bytes.first()?, bytes.get(1)?);
    if version == NATPMP_VERSION && op & RESPONSE_BIT != 0 {
        let result = be16(bytes.get(..4)?, 2);
        // Result 1 is NAT-PMP's "unsupported version": its answer to a PCP
        // request (RFC 6887 §9), whatever the opcode echoed.
        if result == 1 {
            return Some(Response::UnsupportedVersion);
        }
        return match op & !RESPONSE_BIT {
            NATPMP_OP_ADDRESS if bytes.len() >= 12 => Some(Response::NatPmpAddress {
                result,
                epoch: be32(bytes, 4),
                external: Ipv4Addr::new(bytes[8], bytes[9], bytes[10], bytes[11]),
            }),
            NATPMP_OP_MAP_UDP if bytes.len() >= 16 => Some(Response::NatPmpMap {
                result,
                epoch: be32(bytes, 4),
                internal_port: be16(bytes, 8),
                external_port: be16(bytes, 10),
                lifetime: be32(bytes, 12),
            }),
            _ => None,
        };
    }
    if version != PCP_VERSION || op != RESPONSE_BIT | PCP_OP_MAP || bytes.len() < PCP_MAP_LEN {
        return None;
    }
    if bytes[36] != UDP {
        return None;
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&bytes[24..36]);
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&bytes[44..60]);
    let external = Ipv6Addr::from(ip).to_ipv4_mapped()?;
    Some(Response::PcpMap {
        result: bytes[3],
        epoch: be32(bytes, 8),
        lifetime: be32(bytes, 4),
        nonce,
        internal_port: be16(bytes, 40),
        external: SocketAddrV4::new(external, be16(bytes, 42)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natpmp_map_request_is_rfc_6886s_layout() {
        assert_eq!(
            natpmp_map_request(4000, 4001, 7200),
            [0, 1, 0, 0, 0x0f, 0xa0, 0x0f, 0xa1, 0, 0, 0x1c, 0x20]
        );
        assert_eq!(natpmp_address_request(), [0, 0]);
    }

    #[test]
    fn natpmp_responses_decode() {
        let address = [0, 128, 0, 0, 0, 0, 0, 9, 198, 51, 100, 11];
        assert_eq!(
            decode(&address),
            Some(Response::NatPmpAddress {
                result: 0,
                epoch: 9,
                external: Ipv4Addr::new(198, 51, 100, 11)
            })
        );
        let map = [
            0, 129, 0, 0, 0, 0, 0, 9, 0x0f, 0xa0, 0x0f, 0xa1, 0, 0, 0, 60,
        ];
        assert_eq!(
            decode(&map),
            Some(Response::NatPmpMap {
                result: 0,
                epoch: 9,
                internal_port: 4000,
                external_port: 4001,
                lifetime: 60
            })
        );
    }

    #[test]
    fn pcp_request_and_response_round_trip() {
        let client = Ipv4Addr::new(10, 0, 1, 2);
        let nonce = [7u8; 12];
        let request = pcp_map_request(client, nonce, 4000, 4000, 7200);
        assert_eq!(request[0], 2);
        assert_eq!(&request[8..24], &client.to_ipv6_mapped().octets());
        // What a server sends back: the request with the response bit, a
        // result, lifetime, epoch, and the assigned address.
        let mut response = request;
        response[1] |= RESPONSE_BIT;
        response[3] = 0;
        response[4..8].copy_from_slice(&120u32.to_be_bytes());
        response[8..12].copy_from_slice(&5u32.to_be_bytes());
        response[12..24].fill(0);
        response[42..44].copy_from_slice(&4002u16.to_be_bytes());
        response[44..60]
            .copy_from_slice(&Ipv4Addr::new(198, 51, 100, 11).to_ipv6_mapped().octets());
        assert_eq!(
            decode(&response),
            Some(Response::PcpMap {
                result: 0,
                epoch: 5,
                lifetime: 120,
                nonce,
                internal_port: 4000,
                external: "198.51.100.11:4002".parse().unwrap(),
            })
        );
    }

    #[test]
    fn a_natpmp_only_server_refusing_pcp_is_recognised() {
        assert_eq!(decode(&[0, 129, 0, 1]), Some(Response::UnsupportedVersion));
        assert_eq!(
            decode(&[0, 129, 0, 1, 0, 0, 0, 3]),
            Some(Response::UnsupportedVersion)
        );
    }

    #[test]
    fn garbage_and_truncated_datagrams_are_ignored() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0, 128, 0]), None);
        assert_eq!(decode(&[2, 129, 0, 0, 0]), None);
        assert_eq!(decode(&[9; 60]), None);
        let mut not_udp = pcp_map_request(Ipv4Addr::LOCALHOST, [0; 12], 1, 1, 1);
        not_udp[1] |= RESPONSE_BIT;
        not_udp[36] = 6;
        assert_eq!(decode(&not_udp), None);
    }
}
