//! Fault injection for internode calls. One injector may be shared by every
//! node of an in-process test cluster: rules are keyed by (from, to) node id,
//! so a test can cut exactly the links it wants.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

/// What happens to a call on a faulty link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// The request never arrives: the call fails at once as unreachable.
    Drop,
    /// The request arrives and is applied, but the reply is lost.
    DropReply,
    /// The request is held this long before it is sent.
    Delay(Duration),
    /// Each request is dropped with this probability (0..=1).
    Flaky(f64),
}

/// The verdict for one call, decided before it is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    Pass,
    Drop,
    DropReply,
    Delay(Duration),
}

/// What an internode call is for, so a test can count the calls of one
/// kind while background work (hand-off, range moves, repair) makes others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallKind {
    /// Replica reads of client requests.
    Read,
    /// Replica writes of client requests.
    Write,
    /// A client write forwarded to a coordinator.
    Coordinate,
    /// A circuit breaker's probe of a suspect peer.
    Probe,
    /// Batches of records: hand-off, repair pushes, restore.
    WriteBatch,
    /// Merkle trees, range digests and range fetches (repair, moves).
    Repair,
}

/// One counter per kind, indexed by `kind as usize` (`Repair` is the last).
const KINDS: usize = CallKind::Repair as usize + 1;

#[derive(Debug, Default)]
pub struct FaultInjector {
    links: RwLock<HashMap<(String, String), Fault>>,
    /// Gossip (UDP) address → node id, so gossip datagrams obey the same
    /// per-node-pair rules as gRPC calls (a partition also hides liveness).
    gossip: RwLock<HashMap<std::net::SocketAddr, String>>,
    dropped: AtomicU64,
    calls: [AtomicU64; KINDS],
    seq: AtomicU64,
}

impl FaultInjector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the fault of the one-way link `from → to`.
    pub fn set(&self, from: &str, to: &str, fault: Fault) {
        self.links
            .write()
            .insert((from.to_string(), to.to_string()), fault);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn partition(&self, a: &str, b: &str) {
        self.set(a, b, Fault::Drop);
        self.set(b, a, Fault::Drop);
    }

    /// Cuts `node` off from every node in `others`, both ways.
    pub fn isolate(&self, node: &str, others: &[&str]) {
        for o in others {
            if *o != node {
                self.partition(node, o);
            }
        }
    }

    pub fn clear(&self, from: &str, to: &str) {
        self.links
            .write()
            .remove(&(from.to_string(), to.to_string()));
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.links.write().clear();
    }

    /// Calls dropped so far (requests or replies).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Calls attempted so far.
    pub fn calls(&self) -> u64 {
        self.calls.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Calls of `kind` attempted so far.
    pub fn calls_of(&self, kind: CallKind) -> u64 {
        self.calls[kind as usize].load(Ordering::Relaxed)
    }

    /// Declares that `node` gossips from `addr` (each node does at start).
    pub fn register_gossip(&self, addr: std::net::SocketAddr, node: &str) {
        self.gossip.write().insert(addr, node.to_string());
    }

    /// Whether a gossip datagram between `me` and the node at `peer` is
    /// lost: links with `Drop` (or an unlucky `Flaky`) lose datagrams; delays
    /// and lost replies do not apply to one-way datagrams. `outbound` says
    /// which direction the datagram travels.
    pub(crate) fn gossip_dropped(
        &self,
        me: &str,
        peer: std::net::SocketAddr,
        outbound: bool,
    ) -> bool {
        let links = self.links.read();
        if links.is_empty() {
            return false;
        }
        let Some(peer_id) = self.gossip.read().get(&peer).cloned() else {
            return false;
        };
        let key = if outbound {
            (me.to_string(), peer_id)
        } else {
            (peer_id, me.to_string())
        };
        match links.get(&key) {
            Some(Fault::Drop) => true,
            Some(Fault::Flaky(p)) => {
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                crate::ring::SplitMix64::new(n ^ 0x90551b).next_f64() < *p
            }
            _ => false,
        }
    }

    pub(crate) fn verdict(&self, kind: CallKind, from: &str, to: &str) -> Verdict {
        self.calls[kind as usize].fetch_add(1, Ordering::Relaxed);
        let fault = {
            let links = self.links.read();
            if links.is_empty() {
                return Verdict::Pass;
            }
            links.get(&(from.to_string(), to.to_string())).copied()
        };
        let v = match fault {
            None => Verdict::Pass,
            Some(Fault::Drop) => Verdict::Drop,
            Some(Fault::DropReply) => Verdict::DropReply,
            Some(Fault::Delay(d)) => Verdict::Delay(d),
            Some(Fault::Flaky(p)) => {
                // A cheap deterministic-per-call coin: splitmix of a sequence number.
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                let mut rng = crate::ring::SplitMix64::new(n ^ 0x5eed);
                if rng.next_f64() < p {
                    Verdict::Drop
                } else {
                    Verdict::Pass
                }
            }
        };
        if matches!(v, Verdict::Drop | Verdict::DropReply) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_per_directed_link() {
        let f = FaultInjector::new();
        assert_eq!(f.verdict(CallKind::Read, "a", "b"), Verdict::Pass);
        f.set("a", "b", Fault::DropReply);
        assert_eq!(f.verdict(CallKind::Read, "a", "b"), Verdict::DropReply);
        assert_eq!(f.verdict(CallKind::Read, "b", "a"), Verdict::Pass);
        f.partition("a", "c");
        assert_eq!(f.verdict(CallKind::Read, "c", "a"), Verdict::Drop);
        f.heal();
        assert_eq!(f.verdict(CallKind::Read, "c", "a"), Verdict::Pass);
        assert_eq!(f.dropped(), 2);
        f.verdict(CallKind::Repair, "a", "b");
        assert_eq!(f.calls_of(CallKind::Read), 5);
        assert_eq!(f.calls_of(CallKind::Repair), 1);
        assert_eq!(f.calls(), 6);
    }
}
