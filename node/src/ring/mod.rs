//! The consistent-hash ring: 64-bit tokens, vnodes, zone-aware preference lists.
//!
//! A token `t` of node X owns the range `(previous token, t]`; a key belongs to
//! the first token at or after `xxh3_64(key)`, wrapping at 2^64.

mod alloc;
mod persist;
mod topology;

pub use alloc::{SplitMix64, allocate_tokens};
pub use persist::{TokenFileError, load_or_create_tokens, load_tokens};
pub use topology::{SharedTopology, Topology, WritePlan};

use std::collections::HashMap;

pub type Token = u64;

/// The ring token of a user key.
pub fn key_token(key: &[u8]) -> Token {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// One physical node as the ring sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingNode {
    pub id: String,
    pub zone: String,
    pub tokens: Vec<Token>,
}

/// An immutable ring; rebuilt whenever membership changes.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    nodes: Vec<RingNode>,
    /// (token, node index), sorted by token then node id.
    tokens: Vec<(Token, u32)>,
    zone_count: usize,
}

impl Ring {
    pub fn new(mut nodes: Vec<RingNode>) -> Ring {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.dedup_by(|a, b| a.id == b.id);
        let mut tokens: Vec<(Token, u32)> = nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.tokens.iter().map(move |t| (*t, i as u32)))
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        let mut zones: Vec<&str> = nodes.iter().map(|n| n.zone.as_str()).collect();
        zones.sort_unstable();
        zones.dedup();
        let zone_count = zones.len();
        Ring {
            nodes,
            tokens,
            zone_count,
        }
    }

    pub fn nodes(&self) -> &[RingNode] {
        &self.nodes
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn zone_count(&self) -> usize {
        self.zone_count
    }

    /// Index in `tokens` of the token owning `t`.
    fn owner_pos(&self, t: Token) -> usize {
        let p = self.tokens.partition_point(|(tok, _)| *tok < t);
        if p == self.tokens.len() { 0 } else { p }
    }

    /// The node owning `t` (first token clockwise), if the ring is not empty.
    pub fn primary(&self, t: Token) -> Option<&RingNode> {
        if self.tokens.is_empty() {
            return None;
        }
        Some(&self.nodes[self.tokens[self.owner_pos(t)].1 as usize])
    }

    /// The preference list of token `t`: the first `n` distinct physical nodes
    /// clockwise, taking nodes from not-yet-used zones first, so with at least
    /// `n` zones every replica is in a different zone (NetworkTopologyStrategy).
    /// The first entry is always the primary.
    pub fn preference_list(&self, t: Token, n: usize) -> Vec<&RingNode> {
        let want = n.min(self.nodes.len());
        if want == 0 || self.tokens.is_empty() {
            return Vec::new();
        }
        let mut seen = vec![false; self.nodes.len()];
        let mut chosen: Vec<u32> = Vec::with_capacity(want);
        let mut chosen_zones: Vec<&str> = Vec::with_capacity(want);
        let mut skipped: Vec<u32> = Vec::new();
        let start = self.owner_pos(t);
        let len = self.tokens.len();
        for i in 0..len {
            let idx = self.tokens[(start + i) % len].1;
            if seen[idx as usize] {
                continue;
            }
            seen[idx as usize] = true;
            let zone = self.nodes[idx as usize].zone.as_str();
            if chosen_zones.contains(&zone) {
                skipped.push(idx);
            } else {
                chosen.push(idx);
                chosen_zones.push(zone);
            }
            if chosen.len() == want
                || (chosen_zones.len() == self.zone_count && chosen.len() + skipped.len() >= want)
            {
                break;
            }
        }
        let fill = want.saturating_sub(chosen.len());
        chosen.extend(skipped.into_iter().take(fill));
        chosen
            .into_iter()
            .map(|i| &self.nodes[i as usize])
            .collect()
    }

    /// Every distinct node clockwise from the owner of `t`, ignoring zones:
    /// where a sloppy quorum looks for substitutes past the preference list.
    pub fn clockwise(&self, t: Token) -> Vec<&RingNode> {
        let len = self.tokens.len();
        let mut seen = vec![false; self.nodes.len()];
        let mut out = Vec::new();
        if len == 0 {
            return out;
        }
        let start = self.owner_pos(t);
        for i in 0..len {
            let idx = self.tokens[(start + i) % len].1 as usize;
            if !seen[idx] {
                seen[idx] = true;
                out.push(&self.nodes[idx]);
                if out.len() == self.nodes.len() {
                    break;
                }
            }
        }
        out
    }

    /// Contiguous token ranges `(start, end]` and their primary owner; the first
    /// range wraps around zero.
    pub fn ranges(&self) -> Vec<(Token, Token, &RingNode)> {
        let len = self.tokens.len();
        (0..len)
            .map(|i| {
                let prev = self.tokens[(i + len - 1) % len].0;
                let (end, idx) = self.tokens[i];
                (prev, end, &self.nodes[idx as usize])
            })
            .collect()
    }

    /// Fraction of the token space each node owns as primary (sums to 1).
    pub fn primary_ownership(&self) -> HashMap<String, f64> {
        self.ownership(1)
    }

    /// Fraction of the token space for which each node is one of the `n`
    /// replicas (sums to min(n, nodes)).
    pub fn ownership(&self, n: usize) -> HashMap<String, f64> {
        let mut out: HashMap<String, f64> =
            self.nodes.iter().map(|x| (x.id.clone(), 0.0)).collect();
        if self.tokens.is_empty() {
            return out;
        }
        let space = 2f64.powi(64);
        for (start, end, _) in self.ranges() {
            let width = if self.tokens.len() == 1 {
                space
            } else {
                end.wrapping_sub(start) as f64
            };
            for node in self.preference_list(end, n) {
                *out.get_mut(&node.id).expect("node of ring") += width / space;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
