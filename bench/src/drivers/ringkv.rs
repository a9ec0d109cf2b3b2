//! ringkv through the public `ringkv_client::Client` (gRPC).
//!
//! Writes carry the newest causal context any client has seen for the key
//! (from put and get answers), as an application doing read-modify-write
//! would; blind writes would pile up siblings. Reads and writes use the
//! cluster's default R and W.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ringkv_client::{Client, Context, PutOptions};

use crate::error::{BenchError, OpError};
use crate::load::{Driver, Session, key_name};

/// Newest context seen per key, sharded to keep lock contention low.
#[derive(Debug, Default)]
pub struct Contexts(Vec<Mutex<HashMap<u64, Context>>>);

impl Contexts {
    pub fn new() -> Contexts {
        Contexts((0..64).map(|_| Mutex::new(HashMap::new())).collect())
    }

    fn shard(&self, k: u64) -> &Mutex<HashMap<u64, Context>> {
        &self.0[(k % self.0.len() as u64) as usize]
    }

    pub fn get(&self, k: u64) -> Context {
        self.shard(k)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&k)
            .cloned()
            .unwrap_or_default()
    }

    pub fn set(&self, k: u64, c: Context) {
        self.shard(k)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k, c);
    }

    pub fn len(&self) -> usize {
        self.0
            .iter()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct RingkvDriver {
    conns: Vec<Client>,
    contexts: Arc<Contexts>,
}

impl RingkvDriver {
    /// Opens `per_server` token-aware clients, seeded at the nodes' client
    /// gRPC addresses (`http://host:port`) in turn: each learns the ring and
    /// keeps one HTTP/2 connection per node, sending every request to a
    /// replica of its key, as an application would — `per_server`
    /// connections to each node, like the other systems' drivers.
    pub async fn connect(nodes: &[String], per_server: usize) -> Result<RingkvDriver, BenchError> {
        let mut conns = Vec::new();
        for i in 0..per_server.max(1) {
            let Some(addr) = nodes.get(i % nodes.len().max(1)) else {
                break;
            };
            conns.push(
                Client::connect_cluster(&[addr.as_str()])
                    .await
                    .map_err(|e| BenchError::Connect {
                        system: "ringkv".into(),
                        addr: addr.clone(),
                        reason: e.to_string(),
                    })?,
            );
        }
        if conns.is_empty() {
            return Err(BenchError::Args("ringkv: no node addresses".into()));
        }
        Ok(RingkvDriver {
            conns,
            contexts: Arc::new(Contexts::new()),
        })
    }

    pub fn contexts(&self) -> &Contexts {
        &self.contexts
    }
}

pub struct RingkvSession {
    client: Client,
    contexts: Arc<Contexts>,
}

fn failed(e: ringkv_client::ClientError) -> OpError {
    OpError::Failed(e.to_string())
}

impl Session for RingkvSession {
    async fn get(&mut self, key: u64) -> Result<usize, OpError> {
        let g = self.client.get(key_name(key)).await.map_err(failed)?;
        self.contexts.set(key, g.context);
        Ok(g.siblings.len())
    }

    async fn put(&mut self, key: u64, value: Bytes) -> Result<(), OpError> {
        let opts = PutOptions {
            context: self.contexts.get(key),
            ..Default::default()
        };
        let r = self
            .client
            .put_with(key_name(key), value, opts)
            .await
            .map_err(failed)?;
        self.contexts.set(key, r.context);
        Ok(())
    }
}

impl Driver for RingkvDriver {
    type Session = RingkvSession;
    fn session(&self, client: usize) -> RingkvSession {
        RingkvSession {
            client: super::pick(&self.conns, client),
            contexts: self.contexts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_keep_the_newest_per_key() {
        let c = Contexts::new();
        assert!(c.is_empty());
        assert_eq!(c.get(7), Context::default());
        c.set(7, Context("a".into()));
        c.set(7, Context("b".into()));
        c.set(71, Context("c".into()));
        assert_eq!(c.get(7), Context("b".into()));
        assert_eq!(c.get(71), Context("c".into()));
        assert_eq!(c.len(), 2);
    }

    #[tokio::test]
    async fn connect_reports_the_unreachable_node() {
        // Port 1 on loopback: nothing listens there.
        let err = RingkvDriver::connect(&["http://127.0.0.1:1".into()], 1)
            .await
            .err()
            .expect("no server on port 1");
        assert!(
            matches!(&err, BenchError::Connect { addr, .. } if addr == "http://127.0.0.1:1"),
            "{err}"
        );
        assert!(matches!(
            RingkvDriver::connect(&[], 4).await,
            Err(BenchError::Args(_))
        ));
    }
}
