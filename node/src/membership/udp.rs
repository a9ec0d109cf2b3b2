//! The gossip socket chitchat runs on: every datagram goes through
//! [`Guard`] (authentication, replay window, size and decompression bounds)
//! before chitchat decodes anything, plus the test fault layer.
//!
//! Chitchat keeps its wire codec private: only its own UDP socket turns
//! messages into bytes and back. So this socket owns the public UDP port and
//! uses two private chitchat sockets on loopback as codecs: to send, the
//! encoder sends the message to a loopback tap, whose bytes are sealed and
//! sent on; to receive, checked payloads are fed to the decoder, each
//! followed by an end marker (a BadCluster message whose length carries a
//! sequence tag) so a payload chitchat could not decode is noticed at once
//! instead of by a timeout. Datagrams on loopback from anyone else are
//! ignored.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as CodecSocket};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::guard::{self, DropReason, GossipSecret, Guard, Opened};
use crate::ratelimit::LogEvery;
use crate::transport::FaultInjector;

/// Received datagrams, by outcome; shared with the membership for metrics.
#[derive(Debug, Default)]
pub struct GossipStats {
    dropped: [AtomicU64; DropReason::ALL.len()],
    pub accepted: AtomicU64,
}

impl GossipStats {
    fn count_drop(&self, r: DropReason) {
        let i = DropReason::ALL
            .iter()
            .position(|x| *x == r)
            .expect("listed");
        self.dropped[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Dropped datagrams by reason label (every reason present).
    pub fn dropped(&self) -> BTreeMap<&'static str, u64> {
        DropReason::ALL
            .iter()
            .zip(&self.dropped)
            .map(|(r, c)| (r.label(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

pub struct GuardedTransport {
    pub me: String,
    pub secret: Option<GossipSecret>,
    pub faults: Option<Arc<FaultInjector>>,
    pub stats: Arc<GossipStats>,
}

struct GuardedSocket {
    me: String,
    faults: Option<Arc<FaultInjector>>,
    outer: Arc<UdpSocket>,
    guard: Arc<parking_lot::Mutex<Guard>>,
    encoder: Box<dyn Socket>,
    encoder_addr: SocketAddr,
    tap: UdpSocket,
    tap_addr: SocketAddr,
    buf: Vec<u8>,
    rx: mpsc::Receiver<RecvOutcome>,
    reader: JoinHandle<()>,
}

impl Drop for GuardedSocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl Transport for GuardedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let outer = Arc::new(
            UdpSocket::bind(listen_addr)
                .await
                .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?,
        );
        let encoder = CodecSocket::open(loopback()).await?;
        let encoder_addr = encoder.local_addr()?;
        let tap = UdpSocket::bind(loopback()).await?;
        let tap_addr = tap.local_addr()?;
        let decoder = CodecSocket::open(loopback()).await?;
        let feed = UdpSocket::bind(loopback()).await?;
        let guard = Arc::new(parking_lot::Mutex::new(Guard::new(self.secret.clone())));
        let (tx, rx) = mpsc::channel(64);
        let reader = Reader {
            me: self.me.clone(),
            faults: self.faults.clone(),
            outer: outer.clone(),
            guard: guard.clone(),
            decoder_addr: decoder.local_addr()?,
            decoder: Box::new(decoder),
            feed_addr: feed.local_addr()?,
            feed,
            tag: 0,
            stats: self.stats.clone(),
            log: LogEvery::new(Duration::from_secs(10)),
        };
        Ok(Box::new(GuardedSocket {
            me: self.me.clone(),
            faults: self.faults.clone(),
            outer,
            guard,
            encoder: Box::new(encoder),
            encoder_addr,
            tap,
            tap_addr,
            buf: vec![0; guard::MAX_DATAGRAM + 1],
            rx,
            reader: tokio::spawn(reader.run(tx)),
        }))
    }
}

#[async_trait::async_trait]
impl Socket for GuardedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.outer.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        if let Some(f) = &self.faults
            && f.gossip_dropped(&self.me, to, true)
        {
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        // Whatever a cancelled send left behind is not this message.
        while self.tap.try_recv_from(&mut self.buf).is_ok() {}
        let sent = self.encoder.send(self.tap_addr, envelope).await?;
        let n = loop {
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(1), self.tap.recv_from(&mut self.buf))
                    .await
                    .context("gossip encoder did not answer")??;
            if from == self.encoder_addr && n == sent.num_bytes_sent {
                break n;
            }
        };
        let datagrams = self.guard.lock().seal(&self.buf[..n], now_ms());
        let mut total = 0;
        for d in datagrams {
            total += self.outer.send_to(&d, to).await?;
        }
        Ok(SendOutcome {
            num_bytes_sent: total,
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.rx
            .recv()
            .await
            .context("gossip receiver stopped (socket broken)")
    }
}

/// Reads the public socket, checks, decodes, and queues what passes.
struct Reader {
    me: String,
    faults: Option<Arc<FaultInjector>>,
    outer: Arc<UdpSocket>,
    guard: Arc<parking_lot::Mutex<Guard>>,
    decoder: Box<dyn Socket>,
    decoder_addr: SocketAddr,
    feed: UdpSocket,
    feed_addr: SocketAddr,
    tag: u8,
    stats: Arc<GossipStats>,
    log: LogEvery,
}

impl Reader {
    async fn run(mut self, tx: mpsc::Sender<RecvOutcome>) {
        let mut buf = vec![0u8; guard::MAX_DATAGRAM + 1];
        loop {
            let (n, from) = match self.outer.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) if is_transient(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "gossip socket failed; gossip stops");
                    return;
                }
            };
            if let Some(f) = &self.faults
                && f.gossip_dropped(&self.me, from, false)
            {
                continue;
            }
            let opened = self.guard.lock().open(from, &buf[..n], now_ms());
            let payload = match opened {
                Opened::Payload(p) => p,
                Opened::Partial => continue,
                Opened::Dropped(r) => {
                    self.dropped(r, from, n);
                    continue;
                }
            };
            let envelope = match self.decode(&payload).await {
                Ok(Some(e)) => e,
                Ok(None) => {
                    self.dropped(DropReason::Malformed, from, n);
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "gossip decoder failed; gossip stops");
                    return;
                }
            };
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            let out = RecvOutcome {
                from_addr: from,
                envelope,
                num_bytes_received: n,
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    }

    fn dropped(&self, r: DropReason, from: SocketAddr, len: usize) {
        self.stats.count_drop(r);
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(
                reason = r.label(),
                %from,
                len,
                suppressed,
                "gossip datagram dropped before decoding"
            );
        }
    }

    /// Chitchat's decoding of a checked payload; `None` if it refused it.
    async fn decode(&mut self, payload: &[u8]) -> anyhow::Result<Option<ChitchatEnvelope>> {
        if guard::is_bad_cluster(payload) {
            let version = ProtocolVersion::from_code(payload[2]).unwrap_or(ProtocolVersion::V0);
            return Ok(Some(ChitchatEnvelope {
                version,
                message: ChitchatMessage::BadCluster,
            }));
        }
        // Tags 1..=200: a marker's length says which payload it follows.
        self.tag = self.tag % 200 + 1;
        let marker = guard::end_marker(self.tag);
        self.feed.send_to(payload, self.decoder_addr).await?;
        self.feed.send_to(&marker, self.decoder_addr).await?;
        let mut decoded = None;
        loop {
            let Ok(out) = tokio::time::timeout(Duration::from_secs(2), self.decoder.recv()).await
            else {
                // Loopback lost the marker (it never does, short of memory
                // pressure): give up on this payload, keep gossiping.
                tracing::warn!("gossip decoder gave no answer; payload dropped");
                return Ok(decoded);
            };
            let out = out?;
            if out.from_addr != self.feed_addr {
                continue;
            }
            let is_marker = matches!(out.envelope.message, ChitchatMessage::BadCluster);
            if is_marker && out.num_bytes_received == marker.len() {
                return Ok(decoded);
            }
            // Anything else is this payload, or (if loopback reordered an
            // earlier pair) a stale one: the length tells them apart.
            if !is_marker && out.num_bytes_received == payload.len() {
                decoded = Some(out.envelope);
            }
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::OutOfMemory
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::WouldBlock
    )
}
