//! Continuous client traffic recorded into a `History`.
//!
//! A writer owns `keys` keys (`<name>-<j>`) and writes them round-robin with
//! increasing versions, each put carrying the context of its own last
//! acknowledged write of that key (so acknowledged writes supersede each
//! other instead of piling up siblings). A reader does quorum reads of the
//! writers' keys. Every operation has a client-side deadline, so a hung
//! request is recorded as a failure instead of stalling the test.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringkv_client::{Client, Context, PutOptions};

use crate::history::{History, Kind, Outcome, value, version_of};

pub const OP_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Writer {
    pub name: String,
    /// Client gRPC endpoint of the coordinator this writer talks to.
    pub endpoint: String,
    pub keys: usize,
    /// Pause between operations.
    pub pause: Duration,
}

impl Writer {
    pub fn key(&self, j: usize) -> String {
        format!("{}-{j}", self.name)
    }

    /// Write until `stop`; returns how many writes it attempted.
    pub async fn run(self, hist: Arc<History>, stop: Arc<AtomicBool>) -> u64 {
        let mut client = loop {
            match Client::connect(&self.endpoint).await {
                Ok(c) => break c,
                Err(_) if !stop.load(Ordering::Relaxed) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(_) => return 0,
            }
        };
        let mut contexts: HashMap<String, Context> = HashMap::new();
        let mut version = 0u64;
        while !stop.load(Ordering::Relaxed) {
            version += 1;
            let key = self.key((version as usize - 1) % self.keys);
            let opts = PutOptions {
                context: contexts.get(&key).cloned().unwrap_or_default(),
                ..Default::default()
            };
            let start = hist.now();
            let res = tokio::time::timeout(
                OP_DEADLINE,
                client.put_with(&key, value(&key, version), opts),
            )
            .await;
            let outcome = match res {
                Ok(Ok(r)) => {
                    contexts.insert(key.clone(), r.context);
                    Outcome::Ok
                }
                Ok(Err(e)) => Outcome::Failed(e.to_string()),
                Err(_) => Outcome::Failed(format!("no answer within {OP_DEADLINE:?}")),
            };
            hist.record(&key, Kind::Write { version }, start, outcome);
            if !self.pause.is_zero() {
                tokio::time::sleep(self.pause).await;
            }
        }
        version
    }
}

/// Quorum-read the writers' keys round-robin until `stop`.
pub async fn read_loop(
    endpoint: String,
    keys: Vec<String>,
    hist: Arc<History>,
    stop: Arc<AtomicBool>,
    pause: Duration,
) {
    let Ok(mut client) = Client::connect(&endpoint).await else {
        return;
    };
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let key = &keys[i % keys.len()];
        i += 1;
        let start = hist.now();
        let res = tokio::time::timeout(OP_DEADLINE, client.get(key)).await;
        let (versions, outcome) = match res {
            Ok(Ok(g)) => (
                g.siblings
                    .iter()
                    .filter_map(|s| version_of(key, &s.value))
                    .collect(),
                Outcome::Ok,
            ),
            Ok(Err(e)) => (Vec::new(), Outcome::Failed(e.to_string())),
            Err(_) => (
                Vec::new(),
                Outcome::Failed(format!("no answer within {OP_DEADLINE:?}")),
            ),
        };
        hist.record(key, Kind::Read { versions }, start, outcome);
        tokio::time::sleep(pause).await;
    }
}
