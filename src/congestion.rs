//! Which congestion controller a connection runs ([`Congestion`]): the name
//! a user or config gives, and the quinn controller factory behind it.
//!
//! The choice and the measurements behind the default are in
//! docs/BENCHMARKS.md ("Under loss"). Callers put the factory into a
//! `TransportConfig` (see [`crate::endpoint::Liveness::transport_config`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use quinn::congestion::{BbrConfig, ControllerFactory, CubicConfig, NewRenoConfig};

pub mod steady;

/// A congestion controller for QUIC connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Congestion {
    /// quinn's Cubic (RFC 9438): loss-based, cuts its window to 0.7× on
    /// every loss episode, so random loss caps it near the Reno formula.
    Cubic,
    /// quinn's NewReno (RFC 9002): loss-based, halves on every episode.
    NewReno,
    /// quinn's experimental BBR (v1, after quiche): paces at a measured
    /// bandwidth; loss only holds its window during recovery.
    Bbr,
    /// Ours ([`steady`]), the default: the window at twice the measured
    /// bandwidth-delay product; loss counts only with a queue longer than
    /// its own or above 10 % of a round. In the lab it holds TCP's rate at
    /// 0.1–3 % loss where Cubic falls to 1/20 of it, and leaves a competing
    /// TCP flow (BBR or Cubic) more than a third of the link, which quinn's
    /// BBR does not (docs/BENCHMARKS.md, "Under loss").
    #[default]
    Steady,
}

impl Congestion {
    pub const ALL: [Congestion; 4] = [
        Congestion::Cubic,
        Congestion::NewReno,
        Congestion::Bbr,
        Congestion::Steady,
    ];

    /// The name the command line and config files use.
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::NewReno => "newreno",
            Congestion::Bbr => "bbr",
            Congestion::Steady => "steady",
        }
    }

    /// A factory that builds this controller for each new connection.
    pub fn factory(self) -> Arc<dyn ControllerFactory + Send + Sync> {
        match self {
            Congestion::Cubic => Arc::new(CubicConfig::default()),
            Congestion::NewReno => Arc::new(NewRenoConfig::default()),
            Congestion::Bbr => Arc::new(BbrConfig::default()),
            Congestion::Steady => Arc::new(steady::SteadyConfig::default()),
        }
    }
}

impl fmt::Display for Congestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A controller name that is not one of [`Congestion::ALL`].
#[derive(Debug)]
pub struct UnknownCongestion(String);

impl fmt::Display for UnknownCongestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Congestion::ALL.iter().map(|c| c.name()).collect();
        write!(
            f,
            "unknown congestion controller {:?}; choose one of: {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownCongestion {}

impl FromStr for Congestion {
    type Err = UnknownCongestion;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase();
        Congestion::ALL
            .into_iter()
            .find(|c| c.name() == wanted)
            .ok_or_else(|| UnknownCongestion(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_controller_parses_from_its_name() {
        for controller in Congestion::ALL {
            assert_eq!(controller.name().parse::<Congestion>().unwrap(), controller);
        }
        assert_eq!("BBR".parse::<Congestion>().unwrap(), Congestion::Bbr);
        let error = "vegas".parse::<Congestion>().unwrap_err().to_string();
        assert!(error.contains("cubic, newreno, bbr"), "{error}");
    }
}
