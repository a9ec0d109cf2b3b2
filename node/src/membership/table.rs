//! The member table and its merge rule, kept free of I/O so it can be tested
//! directly: an entry replaces another for the same node when its
//! (generation, heartbeat) is newer; a member is alive while its heartbeat
//! keeps moving.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringkv_proto::v1 as pb;

use super::{Member, MembershipView};

#[derive(Debug)]
struct Entry {
    info: pb::MemberInfo,
    /// When the heartbeat last advanced, as observed here.
    last_advance: Instant,
}

#[derive(Debug)]
pub struct MemberTable {
    me: String,
    local: pb::MemberInfo,
    others: BTreeMap<String, Entry>,
    dead_after: Duration,
}

impl MemberTable {
    pub fn new(local: pb::MemberInfo, dead_after: Duration) -> Self {
        MemberTable {
            me: local.node_id.clone(),
            local,
            others: BTreeMap::new(),
            dead_after,
        }
    }

    pub fn local(&self) -> &pb::MemberInfo {
        &self.local
    }

    pub fn local_mut(&mut self) -> &mut pb::MemberInfo {
        &mut self.local
    }

    /// Merges a received entry; returns true when it was news.
    pub fn merge(&mut self, info: pb::MemberInfo, now: Instant) -> bool {
        if info.node_id == self.me || info.node_id.is_empty() {
            return false;
        }
        match self.others.get_mut(&info.node_id) {
            Some(e)
                if (info.generation, info.heartbeat) <= (e.info.generation, e.info.heartbeat) =>
            {
                false
            }
            Some(e) => {
                e.info = info;
                e.last_advance = now;
                true
            }
            None => {
                self.others.insert(
                    info.node_id.clone(),
                    Entry {
                        info,
                        last_advance: now,
                    },
                );
                true
            }
        }
    }

    /// Every entry including this node's, for sending.
    pub fn all(&self) -> Vec<pb::MemberInfo> {
        let mut v: Vec<pb::MemberInfo> = self.others.values().map(|e| e.info.clone()).collect();
        v.push(self.local.clone());
        v
    }

    pub fn gossip_addrs(&self) -> Vec<String> {
        self.others
            .values()
            .map(|e| e.info.gossip_addr.clone())
            .filter(|a| !a.is_empty())
            .collect()
    }

    /// The snapshot consumers see (liveness as of `now`).
    pub fn view(&self, now: Instant, version: u64) -> MembershipView {
        let mut members: Vec<Member> = self
            .others
            .values()
            .filter_map(|e| {
                Member::from_info(
                    &e.info,
                    now.duration_since(e.last_advance) < self.dead_after,
                )
            })
            .collect();
        members.extend(Member::from_info(&self.local, true));
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        MembershipView { version, members }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, generation: u64, heartbeat: u64) -> pb::MemberInfo {
        pb::MemberInfo {
            node_id: id.into(),
            generation,
            heartbeat,
            state: pb::NodeState::Normal as i32,
            ..Default::default()
        }
    }

    #[test]
    fn newer_generation_or_heartbeat_wins_and_silence_means_dead() {
        let t0 = Instant::now();
        let mut t = MemberTable::new(info("me", 1, 0), Duration::from_secs(5));
        assert!(t.merge(info("b", 1, 3), t0));
        assert!(!t.merge(info("b", 1, 2), t0), "older heartbeat ignored");
        assert!(
            t.merge(info("b", 2, 0), t0),
            "restart (new generation) wins"
        );
        assert!(!t.merge(info("me", 9, 9), t0), "nobody else speaks for me");
        let v = t.view(t0 + Duration::from_secs(1), 1);
        assert_eq!(v.members.len(), 2);
        assert!(v.get("b").unwrap().alive);
        assert_eq!(v.get("b").unwrap().generation, 2);
        let later = t.view(t0 + Duration::from_secs(6), 2);
        assert!(!later.get("b").unwrap().alive);
        assert!(later.get("me").unwrap().alive);
    }
}
