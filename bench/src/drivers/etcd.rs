//! etcd through the `etcd-client` crate: plain puts, and gets with etcd's
//! default (linearizable) consistency. Each pooled connection is its own
//! `etcd_client::Client` bound to one member; a write sent to a follower is
//! forwarded to the leader by etcd itself.

use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, ConnectOptions, KvClient};

use crate::error::{BenchError, OpError};
use crate::load::{Driver, Session, key_name};

pub struct EtcdDriver {
    conns: Vec<KvClient>,
}

impl EtcdDriver {
    /// Opens `per_server` connections to each member's client URL.
    pub async fn connect(members: &[String], per_server: usize) -> Result<EtcdDriver, BenchError> {
        let mut conns = Vec::new();
        for addr in members {
            for _ in 0..per_server.max(1) {
                let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
                let c = Client::connect([addr.as_str()], Some(opts))
                    .await
                    .map_err(|e| BenchError::Connect {
                        system: "etcd".into(),
                        addr: addr.clone(),
                        reason: e.to_string(),
                    })?;
                conns.push(c.kv_client());
            }
        }
        if conns.is_empty() {
            return Err(BenchError::Args("etcd: no member addresses".into()));
        }
        Ok(EtcdDriver { conns })
    }
}

pub struct EtcdSession {
    kv: KvClient,
}

fn failed(e: etcd_client::Error) -> OpError {
    OpError::Failed(e.to_string())
}

impl Session for EtcdSession {
    async fn get(&mut self, key: u64) -> Result<usize, OpError> {
        let r = self.kv.get(key_name(key), None).await.map_err(failed)?;
        Ok(r.kvs().len())
    }

    async fn put(&mut self, key: u64, value: Bytes) -> Result<(), OpError> {
        self.kv
            .put(key_name(key), value.to_vec(), None)
            .await
            .map_err(failed)?;
        Ok(())
    }
}

impl Driver for EtcdDriver {
    type Session = EtcdSession;
    fn session(&self, client: usize) -> EtcdSession {
        EtcdSession {
            kv: super::pick(&self.conns, client),
        }
    }
}
