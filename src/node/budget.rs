//! How much unsolicited traffic — punch probes and handshakes to an address
//! nothing has come from yet — this node sends to one IP address. An
//! introduction names addresses the node cannot check (a lying tracker, a
//! peer registering someone else's address as its own); without a bound, a
//! stream of introductions would turn the node into a traffic cannon aimed
//! at a third party. Each unproven IP gets a byte budget that refills
//! slowly; an IP that has sent this node a packet (a probe, a connection)
//! is proven and no longer limited. Pure: no clock, no sockets.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use crate::rate::TokenBucket;

/// Bytes an unproven IP may receive at once, and per second after that.
pub const UNPROVEN_BURST: u32 = 32 * 1024;
pub const UNPROVEN_PER_SECOND: u32 = 1024;
/// What a probe costs: its payload and UDP/IP headers, rounded up.
pub const PROBE_COST: u32 = 128;
/// What a handshake to a silent address costs: QUIC's 1,200-byte Initial
/// and its retransmissions until the connect deadline.
pub const DIAL_COST: u32 = 6 * 1200;
/// IPs remembered, each way, at most; beyond, the oldest knowledge goes
/// (an unproven IP forgotten starts with a full budget again, bounded in
/// total by how fast new budgets can be spent).
const REMEMBERED: usize = 4096;

/// Unsolicited traffic one could send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsolicited {
    Probe,
    Dial,
}

impl Unsolicited {
    fn cost(self) -> u32 {
        match self {
            Unsolicited::Probe => PROBE_COST,
            Unsolicited::Dial => DIAL_COST,
        }
    }
}

#[derive(Default)]
pub struct DestinationBudget {
    proven: HashSet<IpAddr>,
    unproven: HashMap<IpAddr, TokenBucket>,
}

impl DestinationBudget {
    /// A packet came from `ip`: it is reachable and wants to hear from us.
    pub fn prove(&mut self, ip: IpAddr) {
        self.unproven.remove(&ip);
        if self.proven.len() >= REMEMBERED && !self.proven.contains(&ip) {
            self.proven.clear();
        }
        self.proven.insert(ip);
    }

    /// Whether sending `what` to `ip` now is within its budget (and spends
    /// it if so).
    pub fn allow(&mut self, ip: IpAddr, what: Unsolicited, now: Instant) -> bool {
        if self.proven.contains(&ip) {
            return true;
        }
        if self.unproven.len() >= REMEMBERED && !self.unproven.contains_key(&ip) {
            // Forget those whose budget is whole again: nothing is lost.
            self.unproven.retain(|_, bucket| !bucket.is_full_at(now));
            if self.unproven.len() >= REMEMBERED {
                return false;
            }
        }
        self.unproven
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(UNPROVEN_PER_SECOND, UNPROVEN_BURST, now))
            .try_take_amount(what.cost(), now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_unproven_address_gets_its_burst_then_its_rate() {
        let now = Instant::now();
        let mut budget = DestinationBudget::default();
        let victim = ip("192.0.2.7");
        let mut sent = 0;
        while budget.allow(victim, Unsolicited::Probe, now) {
            sent += PROBE_COST;
        }
        assert!(
            sent <= UNPROVEN_BURST && sent + PROBE_COST > UNPROVEN_BURST,
            "{sent}"
        );
        assert!(!budget.allow(victim, Unsolicited::Dial, now));
        // Ten seconds later, ten seconds' worth.
        let later = now + Duration::from_secs(10);
        let mut more = 0;
        while budget.allow(victim, Unsolicited::Probe, later) {
            more += PROBE_COST;
        }
        assert!(more <= 10 * UNPROVEN_PER_SECOND + PROBE_COST, "{more}");
        // Another address has a budget of its own.
        assert!(budget.allow(ip("192.0.2.8"), Unsolicited::Dial, now));
    }

    #[test]
    fn a_proven_address_is_not_limited() {
        let now = Instant::now();
        let mut budget = DestinationBudget::default();
        let peer = ip("198.51.100.4");
        while budget.allow(peer, Unsolicited::Dial, now) {}
        budget.prove(peer);
        for _ in 0..1000 {
            assert!(budget.allow(peer, Unsolicited::Dial, now));
        }
    }

    #[test]
    fn memory_is_bounded_by_the_addresses_remembered() {
        let now = Instant::now();
        let mut budget = DestinationBudget::default();
        for i in 0..(REMEMBERED as u32 * 2) {
            let addr = IpAddr::from(i.to_be_bytes());
            budget.allow(addr, Unsolicited::Dial, now);
            budget.prove(IpAddr::from((i + 1_000_000).to_be_bytes()));
        }
        assert!(budget.unproven.len() <= REMEMBERED);
        assert!(budget.proven.len() <= REMEMBERED);
    }
}
