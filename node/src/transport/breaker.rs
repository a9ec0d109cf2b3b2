//! A circuit breaker per peer, next to the failure detector. Gossip can call
//! a peer alive while requests to it fail or hang — a partial partition
//! where some node relays gossip between two halves that cannot reach each
//! other, say. After `TRIP_AFTER` request-path calls in a row fail (errors
//! or timeouts), the peer is *suspect* for a cool-down: the coordinator
//! routes around it (substitutes and hints for writes, other replicas for
//! reads) instead of waiting out a timeout on every request. When the
//! cool-down ends, one background probe (an empty call) is sent and the peer
//! stays suspect until it answers: a success closes the breaker, a failure
//! opens it again for twice as long (at most `MAX_COOLDOWN`). No client
//! request ever waits on a probe.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Consecutive failures that make a peer suspect.
const TRIP_AFTER: u32 = 3;
const FIRST_COOLDOWN: Duration = Duration::from_secs(1);
const MAX_COOLDOWN: Duration = Duration::from_secs(16);

#[derive(Debug, Clone)]
struct Health {
    failures: u32,
    open_until: Option<Instant>,
    cooldown: Duration,
    /// A probe is out (the breaker stays open until it answers).
    probing: bool,
    /// Where the peer was last called (what a probe calls).
    addr: String,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            failures: 0,
            open_until: None,
            cooldown: FIRST_COOLDOWN,
            probing: false,
            addr: String::new(),
        }
    }
}

/// What the request path should do about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Closed,
    Open,
    /// Open, and its cool-down is over: send a probe to this address.
    Probe(String),
}

#[derive(Debug, Default)]
pub(crate) struct Breakers {
    peers: Mutex<HashMap<String, Health>>,
}

impl Breakers {
    /// Whether requests should avoid `peer` for now; the first caller after
    /// a cool-down is told to send the probe.
    pub(crate) fn state(&self, peer: &str) -> State {
        self.state_at(peer, Instant::now())
    }

    fn state_at(&self, peer: &str, now: Instant) -> State {
        let mut peers = self.peers.lock();
        let Some(h) = peers.get_mut(peer) else {
            return State::Closed;
        };
        match h.open_until {
            None => State::Closed,
            Some(until) if now < until || h.probing => State::Open,
            Some(_) => {
                h.probing = true;
                State::Probe(h.addr.clone())
            }
        }
    }

    pub(crate) fn success(&self, peer: &str) {
        let mut peers = self.peers.lock();
        if let Some(h) = peers.get_mut(peer) {
            let addr = std::mem::take(&mut h.addr);
            *h = Health {
                addr,
                ..Health::default()
            };
        }
    }

    /// Records a failed call to `peer` at `addr`; true when this opened
    /// the breaker.
    pub(crate) fn failure(&self, peer: &str, addr: &str) -> bool {
        self.failure_at(peer, addr, Instant::now())
    }

    fn failure_at(&self, peer: &str, addr: &str, now: Instant) -> bool {
        let mut peers = self.peers.lock();
        let h = peers.entry(peer.to_string()).or_default();
        addr.clone_into(&mut h.addr);
        h.failures = h.failures.saturating_add(1);
        let open = h.open_until.is_some_and(|until| now < until);
        if h.failures < TRIP_AFTER || (open && !h.probing) {
            return false;
        }
        // Tripped, or the probe after a cool-down failed: open (longer).
        if h.probing {
            h.cooldown = (h.cooldown * 2).min(MAX_COOLDOWN);
        }
        h.probing = false;
        let first = h.open_until.is_none();
        h.open_until = Some(now + h.cooldown);
        first
    }

    /// Peers currently avoided.
    pub(crate) fn suspects(&self) -> Vec<String> {
        let now = Instant::now();
        self.peers
            .lock()
            .iter()
            .filter(|(_, h)| h.probing || h.open_until.is_some_and(|u| now < u))
            .map(|(p, _)| p.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_after_consecutive_failures_and_probes_after_the_cooldown() {
        let b = Breakers::default();
        let t = Instant::now();
        assert!(!b.failure_at("p", "a:1", t));
        assert!(!b.failure_at("p", "a:1", t));
        assert_eq!(b.state_at("p", t), State::Closed);
        assert!(
            b.failure_at("p", "a:1", t),
            "the third failure in a row trips it"
        );
        assert_eq!(b.state_at("p", t + Duration::from_millis(999)), State::Open);
        // After the cool-down one caller is told to probe; the peer stays
        // suspect for everyone while the probe is out.
        let later = t + FIRST_COOLDOWN;
        assert_eq!(b.state_at("p", later), State::Probe("a:1".into()));
        assert_eq!(b.state_at("p", later), State::Open);
        // The probe fails: open again, for twice as long.
        assert!(!b.failure_at("p", "a:1", later));
        assert_eq!(
            b.state_at("p", later + Duration::from_millis(1999)),
            State::Open
        );
        let later2 = later + FIRST_COOLDOWN * 2;
        assert_eq!(b.state_at("p", later2), State::Probe("a:1".into()));
        // It answers: closed, history forgotten.
        b.success("p");
        assert_eq!(b.state_at("p", later2), State::Closed);
        assert!(!b.failure_at("p", "a:1", later2));
        // A success between failures resets the count.
        b.success("p");
        b.failure_at("p", "a:1", t);
        b.failure_at("p", "a:1", t);
        b.success("p");
        assert!(!b.failure_at("p", "a:1", t));
        assert!(b.suspects().is_empty());
    }
}
