//! Redis through the `redis` crate (tokio): plain SET and GET over
//! multiplexed connections (requests of many clients pipelined on one TCP
//! connection, as HTTP/2 does for the gRPC systems).

use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;

use crate::error::{BenchError, OpError};
use crate::load::{Driver, Session, key_name};

pub struct RedisDriver {
    conns: Vec<MultiplexedConnection>,
}

impl RedisDriver {
    /// Opens `per_server` connections to each `redis://host:port/` URL.
    pub async fn connect(servers: &[String], per_server: usize) -> Result<RedisDriver, BenchError> {
        let err = |addr: &String, e: redis::RedisError| BenchError::Connect {
            system: "redis".into(),
            addr: addr.clone(),
            reason: e.to_string(),
        };
        let mut conns = Vec::new();
        for addr in servers {
            let client = redis::Client::open(addr.as_str()).map_err(|e| err(addr, e))?;
            for _ in 0..per_server.max(1) {
                let mut c = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| err(addr, e))?;
                // The load generator has its own per-request timeout.
                c.set_response_timeout(Duration::from_secs(60));
                conns.push(c);
            }
        }
        if conns.is_empty() {
            return Err(BenchError::Args("redis: no server addresses".into()));
        }
        Ok(RedisDriver { conns })
    }
}

pub struct RedisSession {
    conn: MultiplexedConnection,
}

fn failed(e: redis::RedisError) -> OpError {
    OpError::Failed(e.to_string())
}

impl Session for RedisSession {
    async fn get(&mut self, key: u64) -> Result<usize, OpError> {
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key_name(key))
            .query_async(&mut self.conn)
            .await
            .map_err(failed)?;
        Ok(usize::from(v.is_some()))
    }

    async fn put(&mut self, key: u64, value: Bytes) -> Result<(), OpError> {
        redis::cmd("SET")
            .arg(key_name(key))
            .arg(&value[..])
            .query_async::<()>(&mut self.conn)
            .await
            .map_err(failed)
    }
}

impl Driver for RedisDriver {
    type Session = RedisSession;
    fn session(&self, client: usize) -> RedisSession {
        RedisSession {
            conn: super::pick(&self.conns, client),
        }
    }
}
