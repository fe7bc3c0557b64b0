//! Password guesses, counted where they are made. Every password proof is
//! one online guess by whoever is at the other end, so each proof is
//! charged to the address it comes from when it *starts*, and the charge is
//! given back only when the proof succeeds: a guesser that never finishes
//! still pays. Charges are kept per source address, not per connection or
//! identity (both are free), and regained slowly. Pure: callers pass `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Who a guess is charged to: an address (an IPv6 address by its /64, the
/// block one host usually gets), or every relayed peer together (the relay
/// hides their addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Address(IpAddr),
    Relayed,
}

impl Source {
    pub fn of(ip: IpAddr, relayed: bool) -> Self {
        if relayed {
            return Source::Relayed;
        }
        match ip {
            IpAddr::V4(_) => Source::Address(ip),
            IpAddr::V6(v6) => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                Source::Address(IpAddr::from(segments))
            }
        }
    }
}

/// How many guesses a source may make. Defaults: 5 at once, then one more
/// every minute (at most 1 440 a day); 4 096 sources remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuessLimits {
    pub burst: u32,
    pub regain_every: Duration,
    pub max_sources: usize,
}

impl Default for GuessLimits {
    fn default() -> Self {
        Self {
            burst: 5,
            regain_every: Duration::from_secs(60),
            max_sources: 4096,
        }
    }
}

/// A source that has no guess left, and when it has one again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many password guesses from this address; try again in {} s", .retry_after.as_secs().max(1))]
pub struct TooManyGuesses {
    pub retry_after: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Account {
    spent: u32,
    /// When the last guess was regained (or the first spent).
    since: Instant,
}

#[derive(Debug)]
pub struct GuessLimiter {
    limits: GuessLimits,
    accounts: HashMap<Source, Account>,
}

impl Default for GuessLimiter {
    fn default() -> Self {
        Self::new(GuessLimits::default())
    }
}

impl GuessLimiter {
    pub fn new(limits: GuessLimits) -> Self {
        Self {
            limits,
            accounts: HashMap::new(),
        }
    }

    /// Charges one guess to `source` as a proof starts.
    pub fn charge(&mut self, source: Source, now: Instant) -> Result<(), TooManyGuesses> {
        let limits = self.limits;
        if !self.accounts.contains_key(&source) && self.accounts.len() >= limits.max_sources {
            self.forget_one(now);
        }
        let account = self.accounts.entry(source).or_insert(Account {
            spent: 0,
            since: now,
        });
        regain(account, limits, now);
        if account.spent >= limits.burst {
            let waited = now.saturating_duration_since(account.since);
            return Err(TooManyGuesses {
                retry_after: limits.regain_every.saturating_sub(waited),
            });
        }
        if account.spent == 0 {
            account.since = now;
        }
        account.spent += 1;
        Ok(())
    }

    /// Gives back the guess of a proof that succeeded.
    pub fn refund(&mut self, source: Source) {
        if let Some(account) = self.accounts.get_mut(&source) {
            account.spent = account.spent.saturating_sub(1);
        }
    }

    /// Makes room for one more source: drops one that has regained
    /// everything, else the one that spent longest ago.
    fn forget_one(&mut self, now: Instant) {
        let limits = self.limits;
        for account in self.accounts.values_mut() {
            regain(account, limits, now);
        }
        let victim = self
            .accounts
            .iter()
            .min_by_key(|(_, a)| (a.spent != 0, a.since))
            .map(|(source, _)| *source);
        if let Some(victim) = victim {
            self.accounts.remove(&victim);
        }
    }
}

fn regain(account: &mut Account, limits: GuessLimits, now: Instant) {
    let every = limits.regain_every.as_nanos().max(1);
    let elapsed = now.saturating_duration_since(account.since).as_nanos();
    let regained = u32::try_from(elapsed / every).unwrap_or(u32::MAX);
    if regained == 0 {
        return;
    }
    account.spent = account.spent.saturating_sub(regained);
    account.since = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> Source {
        Source::of(IpAddr::from([192, 0, 2, last]), false)
    }

    #[test]
    fn a_source_gets_a_burst_then_one_guess_a_minute() {
        let mut limiter = GuessLimiter::new(GuessLimits::default());
        let start = Instant::now();
        for _ in 0..5 {
            limiter.charge(v4(1), start).unwrap();
        }
        let refused = limiter.charge(v4(1), start).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(60));
        // Another address is not affected.
        limiter.charge(v4(2), start).unwrap();
        // A minute later: one more guess, not six.
        let later = start + Duration::from_secs(61);
        limiter.charge(v4(1), later).unwrap();
        assert!(limiter.charge(v4(1), later).is_err());
    }

    #[test]
    fn a_successful_proof_costs_nothing() {
        let mut limiter = GuessLimiter::new(GuessLimits::default());
        let now = Instant::now();
        for _ in 0..100 {
            limiter.charge(v4(1), now).unwrap();
            limiter.refund(v4(1));
        }
    }

    #[test]
    fn ipv6_is_charged_by_its_64_and_relayed_peers_together() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a, false), Source::of(b, false));
        assert_ne!(Source::of(a, false), Source::of(c, false));
        assert_eq!(Source::of(a, true), Source::of(c, true));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_idle_sources_first() {
        let limits = GuessLimits {
            max_sources: 2,
            ..GuessLimits::default()
        };
        let mut limiter = GuessLimiter::new(limits);
        let now = Instant::now();
        for _ in 0..5 {
            limiter.charge(v4(1), now).unwrap();
        }
        limiter.charge(v4(2), now).unwrap();
        limiter.refund(v4(2));
        limiter.charge(v4(3), now).unwrap();
        assert_eq!(limiter.accounts.len(), 2);
        // The guesser that spent everything is still remembered.
        assert!(limiter.charge(v4(1), now).is_err());
    }
}
