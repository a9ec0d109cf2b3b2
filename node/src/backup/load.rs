//! The node side of loading restored records: each record goes to every
//! current replica of its key (and the replicas a pending move adds), this
//! node included when it is one, as a merge — the same merge a replica
//! applies to a coordinated write, so loading is idempotent and commutes
//! with live traffic.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ringkv_proto::v1 as pb;

use super::BackupError;
use crate::replica::Replica;
use crate::ring::SharedTopology;
use crate::transport::InternodeClient;
use crate::version::Record;

/// Longest key a client may write (the coordinator's bound).
const MAX_KEY: usize = 1024;

#[derive(Debug, Clone)]
pub struct Loader {
    replica: Arc<Replica>,
    topology: Arc<SharedTopology>,
    client: InternodeClient,
    n: usize,
}

impl Loader {
    pub fn new(
        replica: Arc<Replica>,
        topology: Arc<SharedTopology>,
        client: InternodeClient,
        n: usize,
    ) -> Loader {
        Loader {
            replica,
            topology,
            client,
            n,
        }
    }

    /// Checks and decodes a batch from the Admin API: every key 1..=1024
    /// bytes, every record valid as a peer's would be. All or nothing.
    pub fn decode(items: Vec<pb::RestoreRecord>) -> Result<Vec<(Bytes, Record)>, BackupError> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, it)| {
                if it.key.is_empty() || it.key.len() > MAX_KEY {
                    return Err(BackupError::Invalid {
                        what: "restore record",
                        why: format!("item {i}: key of {} bytes (1 to {MAX_KEY})", it.key.len()),
                    });
                }
                let rec =
                    Record::decode_for_peer(&it.record).map_err(|e| BackupError::Invalid {
                        what: "restore record",
                        why: format!("item {i}: {e}"),
                    })?;
                Ok((it.key, rec))
            })
            .collect()
    }

    /// Merges every record into each of its key's replicas; fails unless
    /// every replica took its share. Returns the replica writes made.
    pub async fn load(&self, items: Vec<(Bytes, Record)>) -> Result<u64, BackupError> {
        let topo = self.topology.get();
        let me = self.replica.node_id().to_string();
        // node id -> (internode address, records)
        let mut per_node: BTreeMap<String, (String, Vec<(Bytes, Record)>)> = BTreeMap::new();
        for (key, rec) in items {
            let plan = topo.write_plan(&key, self.n);
            if plan.replicas.is_empty() {
                return Err(BackupError::Load(
                    "this node sees no ring yet (no member has tokens)".into(),
                ));
            }
            for m in plan.replicas.iter().chain(plan.pending.iter()) {
                per_node
                    .entry(m.node_id.clone())
                    .or_insert_with(|| (m.internode_addr.clone(), Vec::new()))
                    .1
                    .push((key.clone(), rec.clone()));
            }
        }
        let calls = per_node.into_iter().map(|(node, (addr, items))| {
            let me = me.clone();
            async move {
                let n = items.len() as u64;
                let res = if node == me {
                    self.replica
                        .apply_batch(items)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                } else {
                    let items = items
                        .into_iter()
                        .map(|(key, rec)| pb::KeyRecord {
                            key,
                            record: Some(rec.to_proto()),
                        })
                        .collect();
                    self.client
                        .write_batch(&node, &addr, items)
                        .await
                        .map_err(|e| e.to_string())
                };
                res.map(|_| n).map_err(|e| format!("replica {node}: {e}"))
            }
        });
        let results = futures::future::join_all(calls).await;
        let mut writes = 0;
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(n) => writes += n,
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(BackupError::Load(errors.join("; ")));
        }
        Ok(writes)
    }
}

#[async_trait::async_trait]
impl super::restore::Sink for Loader {
    async fn load(&self, batch: Vec<(Bytes, Bytes)>) -> Result<u64, BackupError> {
        let items = batch
            .into_iter()
            .map(|(key, rec)| pb::RestoreRecord { key, record: rec })
            .collect();
        let decoded = Loader::decode(items)?;
        Loader::load(self, decoded).await
    }
}
