//! A [`Sink`] that loads restored records into a running cluster through
//! its nodes' Admin API (`RestoreRecords`): batches go to the nodes in
//! turn; a batch that fails for want of a replica is retried (on the next
//! node, with back-off), which is safe because loading is idempotent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

use super::BackupError;
use super::restore::Sink;

/// Tries per batch before the restore gives up.
const ATTEMPTS: u32 = 8;

#[derive(Debug)]
pub struct AdminSink {
    nodes: Vec<(String, AdminClient<Channel>)>,
    next: AtomicUsize,
}

/// `host:port` → `http://host:port`; URLs pass unchanged.
pub fn admin_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl AdminSink {
    /// Clients of these Admin addresses (connected lazily).
    pub fn new(addrs: &[String]) -> Result<AdminSink, BackupError> {
        if addrs.is_empty() {
            return Err(BackupError::Invalid {
                what: "restore target",
                why: "no node to load into".into(),
            });
        }
        let nodes = addrs
            .iter()
            .map(|a| {
                let url = admin_url(a);
                let ep = Endpoint::from_shared(url.clone()).map_err(|e| BackupError::Invalid {
                    what: "admin address",
                    why: format!("{a:?}: {e}"),
                })?;
                let ch = ep
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(120))
                    .connect_lazy();
                Ok((
                    a.clone(),
                    AdminClient::new(ch)
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(64 << 20),
                ))
            })
            .collect::<Result<_, BackupError>>()?;
        Ok(AdminSink {
            nodes,
            next: AtomicUsize::new(0),
        })
    }
}

#[async_trait::async_trait]
impl Sink for AdminSink {
    async fn load(&self, batch: Vec<(Bytes, Bytes)>) -> Result<u64, BackupError> {
        let items: Vec<pb::RestoreRecord> = batch
            .into_iter()
            .map(|(key, record)| pb::RestoreRecord { key, record })
            .collect();
        let mut delay = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
            let (addr, client) = &self.nodes[i];
            let mut client = client.clone();
            match client
                .restore_records(pb::RestoreRecordsRequest {
                    items: items.clone(),
                })
                .await
            {
                Ok(r) => return Ok(r.into_inner().replica_writes),
                Err(s) if s.code() == tonic::Code::InvalidArgument => {
                    return Err(BackupError::Load(format!("{addr}: {}", s.message())));
                }
                Err(s) => {
                    last = format!("{addr}: {} ({:?})", s.message(), s.code());
                    tracing::debug!(attempt, error = %last, "restore batch failed; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        Err(BackupError::Load(format!(
            "a batch failed {ATTEMPTS} times, last: {last}"
        )))
    }
}
