//! Removal announcements: how one node tells every node that another, dead
//! for good, is being removed (`Admin.RemoveNode`) — gossip otherwise carries
//! each node's own state only, and a dead node cannot announce LEFT itself.
//!
//! A removal is a key `removed/<node id>` in the announcing node's own gossip
//! state; its value names the removed incarnation (generation and a hash of
//! its tokens), whether its ranges have finished streaming (`done`), who
//! coordinated it and when. Every node:
//!
//! - honours every removal it hears of: a member it applies to is shown
//!   LEAVING while the removal streams (writes for its ranges reach the new
//!   owners as pending replicas) and LEFT once done;
//! - re-announces it in its own gossip state and keeps it in its data
//!   directory (`removed_nodes`), so the removal outlives the coordinator, its
//!   restarts and chitchat forgetting dead nodes, and so the coordinator can
//!   tell when every live node has heard (each one's state carries the key).
//!
//! A removal applies to the removed incarnation and any older one, and to any
//! incarnation announcing the removed tokens: the dead node restarted later
//! with its old data directory (a newer generation, the same tokens) is LEFT
//! for everyone and turns itself LEFT (see `repair::remove`) instead of
//! silently rejoining with stale data. Started with an empty data directory,
//! the same id picks new tokens and joins as a new node.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Member, NodeState};

/// Gossip key prefix of removal announcements.
pub const KEY_PREFIX: &str = "removed/";
const FILE: &str = "removed_nodes";
const VERSION: &str = "1";

/// One removal, as announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub node_id: String,
    /// Generation of the removed incarnation.
    pub generation: u64,
    /// [`tokens_hash`] of the removed incarnation's tokens (0: it had none).
    pub tokens_hash: u64,
    /// Its ranges reached their new owners: it is LEFT (else LEAVING).
    pub done: bool,
    /// The node that coordinates the removal.
    pub by: String,
    /// When the removal started (Unix ms).
    pub at_ms: u64,
}

/// A stable hash of a token list; 0 only for an empty one.
pub fn tokens_hash(tokens: &[u64]) -> u64 {
    if tokens.is_empty() {
        return 0;
    }
    let mut bytes = Vec::with_capacity(tokens.len() * 8);
    for t in tokens {
        bytes.extend_from_slice(&t.to_be_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes) | 1
}

impl Removal {
    /// The gossip key of this removal.
    pub fn key(&self) -> String {
        format!("{KEY_PREFIX}{}", self.node_id)
    }

    /// The gossip value (`1 <generation> <tokens hash> <done> <at ms> <by>`).
    pub fn value(&self) -> String {
        format!(
            "{VERSION} {} {:x} {} {} {}",
            self.generation,
            self.tokens_hash,
            u8::from(self.done),
            self.at_ms,
            self.by
        )
    }

    /// Parses a gossiped (key, value); `None` for anything malformed (a peer
    /// running a newer format, or garbage), which is ignored.
    pub fn parse(key: &str, value: &str) -> Option<Removal> {
        let node_id = key.strip_prefix(KEY_PREFIX)?;
        let mut f = value.split(' ');
        if f.next()? != VERSION || node_id.is_empty() {
            return None;
        }
        let generation = f.next()?.parse().ok()?;
        let tokens_hash = u64::from_str_radix(f.next()?, 16).ok()?;
        let done = match f.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let at_ms = f.next()?.parse().ok()?;
        let by = f.next()?.to_string();
        if by.is_empty() || f.next().is_some() {
            return None;
        }
        Some(Removal {
            node_id: node_id.to_string(),
            generation,
            tokens_hash,
            done,
            by,
            at_ms,
        })
    }

    /// Whether this announcement is newer than `other` (of the same node): a
    /// later incarnation's removal, or the same one finished.
    pub fn supersedes(&self, other: &Removal) -> bool {
        (self.generation, self.done) > (other.generation, other.done)
    }

    /// Whether the incarnation (`generation`, `tokens`) is the removed one.
    pub fn applies_to(&self, generation: u64, tokens: &[u64]) -> bool {
        generation <= self.generation
            || (self.tokens_hash != 0 && tokens_hash(tokens) == self.tokens_hash)
    }

    /// The state every node shows the removed incarnation in.
    pub fn state(&self) -> NodeState {
        if self.done {
            NodeState::Left
        } else {
            NodeState::Leaving
        }
    }
}

/// Removals by removed node id, newest announcement of each.
pub type Removals = BTreeMap<String, Removal>;

/// Adds `r` unless an announcement at least as new is known; true if added.
pub fn merge(into: &mut Removals, r: Removal) -> bool {
    match into.get(&r.node_id) {
        Some(known) if !r.supersedes(known) => false,
        _ => {
            into.insert(r.node_id.clone(), r);
            true
        }
    }
}

/// Shows every removed member (other than `me`, whose own state is its own
/// business) as its removal says. A member already LEFT stays LEFT.
pub fn apply(members: &mut [Member], removals: &Removals, me: &str) {
    for m in members.iter_mut() {
        if m.node_id == me || m.state == NodeState::Left {
            continue;
        }
        if let Some(r) = removals.get(&m.node_id)
            && r.applies_to(m.generation, &m.tokens)
        {
            m.state = r.state();
        }
    }
}

/// The removals kept in `dir` (none when the file does not exist).
pub fn load(dir: &Path) -> std::io::Result<Vec<Removal>> {
    let text = match std::fs::read_to_string(dir.join(FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let (id, v) = l.split_once('\t')?;
            Removal::parse(&format!("{KEY_PREFIX}{id}"), v)
        })
        .collect())
}

/// Keeps `removals` in `dir`, atomically and durably.
pub fn save(dir: &Path, removals: &Removals) -> std::io::Result<()> {
    use std::io::Write;
    let mut body = String::new();
    for r in removals.values() {
        body.push_str(&format!("{}\t{}\n", r.node_id, r.value()));
    }
    let tmp = dir.join(format!("{FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, dir.join(FILE))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn removal(generation: u64, tokens: &[u64], done: bool) -> Removal {
        Removal {
            node_id: "node-2".into(),
            generation,
            tokens_hash: tokens_hash(tokens),
            done,
            by: "node-0".into(),
            at_ms: 1234,
        }
    }

    fn member(id: &str, generation: u64, tokens: Vec<u64>, state: NodeState) -> Member {
        Member {
            node_id: id.into(),
            zone: "z".into(),
            state,
            generation,
            tokens: Arc::new(tokens),
            internode_addr: String::new(),
            client_grpc_addr: String::new(),
            http_addr: String::new(),
            gossip_addr: String::new(),
            alive: false,
        }
    }

    #[test]
    fn values_round_trip_and_garbage_is_ignored() {
        let r = removal(77, &[1, 2, 3], true);
        assert_eq!(Removal::parse(&r.key(), &r.value()), Some(r.clone()));
        let open = removal(77, &[], false);
        assert_eq!(open.tokens_hash, 0);
        assert_eq!(Removal::parse(&open.key(), &open.value()), Some(open));
        for bad in [
            "",
            "2 77 1 1 5 node-0",
            "1 x 1 1 5 node-0",
            "1 77 zz 1 5 node-0",
            "1 77 1 2 5 node-0",
            "1 77 1 1 5",
            "1 77 1 1 5 node-0 extra",
        ] {
            assert_eq!(Removal::parse(&r.key(), bad), None, "{bad:?}");
        }
        assert_eq!(Removal::parse("zone", &r.value()), None);
        assert_eq!(Removal::parse(KEY_PREFIX, &r.value()), None);
    }

    #[test]
    fn newer_announcements_win() {
        let mut all = Removals::new();
        assert!(merge(&mut all, removal(5, &[1], false)));
        assert!(!merge(&mut all, removal(5, &[1], false)));
        assert!(!merge(&mut all, removal(4, &[1], true)));
        assert!(merge(&mut all, removal(5, &[1], true)));
        assert!(all["node-2"].done);
        assert!(!merge(&mut all, removal(5, &[1], false)), "done stays done");
        assert!(
            merge(&mut all, removal(9, &[7], false)),
            "a later incarnation"
        );
        assert_eq!(all["node-2"].generation, 9);
    }

    #[test]
    fn applies_to_the_removed_incarnation_and_its_tokens_only() {
        let r = removal(100, &[10, 20], true);
        assert!(r.applies_to(100, &[10, 20]));
        assert!(r.applies_to(50, &[]), "an older incarnation");
        assert!(r.applies_to(200, &[10, 20]), "restarted on its old data");
        assert!(!r.applies_to(200, &[11, 21]), "started afresh: a new node");
        assert!(!r.applies_to(200, &[]), "a fresh node before it has tokens");
        let mut all = Removals::new();
        merge(&mut all, r);
        let mut members = vec![
            member("node-0", 1, vec![1], NodeState::Normal),
            member("node-2", 100, vec![10, 20], NodeState::Normal),
        ];
        apply(&mut members, &all, "node-0");
        assert_eq!(members[1].state, NodeState::Left);
        assert_eq!(members[0].state, NodeState::Normal);
        let mut fresh = vec![member("node-2", 300, vec![5], NodeState::Joining)];
        apply(&mut fresh, &all, "node-0");
        assert_eq!(fresh[0].state, NodeState::Joining);
        // Never applied to this node itself.
        let mut me = vec![member("node-2", 100, vec![10, 20], NodeState::Normal)];
        apply(&mut me, &all, "node-2");
        assert_eq!(me[0].state, NodeState::Normal);
        let mut leaving = Removals::new();
        merge(&mut leaving, removal(100, &[10, 20], false));
        let mut m = vec![member("node-2", 100, vec![10, 20], NodeState::Normal)];
        apply(&mut m, &leaving, "node-0");
        assert_eq!(m[0].state, NodeState::Leaving);
    }

    #[test]
    fn kept_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let mut all = Removals::new();
        merge(&mut all, removal(5, &[1, 2], true));
        let mut other = removal(6, &[3], false);
        other.node_id = "node-9".into();
        merge(&mut all, other);
        save(dir.path(), &all).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back, all.values().cloned().collect::<Vec<_>>());
    }
}
