//! What every gossip datagram passes before chitchat decodes it.
//!
//! With a cluster secret, each datagram is sealed:
//! `"RKG1" | sent_at_ms u64 | nonce u64 | index u8 | count u8 | tag[32] | body`
//! where `tag` is HMAC-SHA256 under the secret over everything before it and
//! the body. A datagram is dropped, before any decoding, when it is
//! oversized, its tag does not verify under any configured key, its
//! timestamp is outside ±[`REPLAY_WINDOW`] of our clock, or the same
//! (timestamp, nonce, index) was already accepted in that window. A sealed
//! chitchat message that does not fit one datagram travels as two fragments
//! (each sealed on its own, so an unauthenticated fragment never takes
//! reassembly memory).
//!
//! With or without a secret, a payload whose zstd frames could decompress
//! to more than [`MAX_DECOMPRESSED`] is dropped: chitchat decompresses every
//! block of a datagram into one buffer, so 64 KB of tiny frames would
//! otherwise allocate ~290 MiB (issue 9, finding 3).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ring::hmac;

/// Largest UDP payload over IPv4; anything larger never comes from chitchat.
pub const MAX_DATAGRAM: usize = 65_507;
/// Most bytes the zstd frames of one gossip payload may declare. A full
/// 64 KB datagram of real gossip state decompresses to a few hundred KB.
pub const MAX_DECOMPRESSED: u64 = 1 << 20;
/// Accepted distance between a sealed datagram's timestamp and our clock,
/// either way. Gossip answers within milliseconds; NTP keeps clocks closer.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(60);

const MAGIC: &[u8; 4] = b"RKG1";
const TAG_LEN: usize = 32;
const HEADER_LEN: usize = 4 + 8 + 8 + 1 + 1 + TAG_LEN;
const MAX_BODY: usize = MAX_DATAGRAM - HEADER_LEN;
/// A sealed chitchat payload (at most `MAX_DATAGRAM`) needs at most two.
const MAX_FRAGMENTS: u8 = 2;
/// Accepted (timestamp, nonce, index) remembered for replay detection.
const REPLAY_CACHE: usize = 65_536;
/// Half-assembled messages kept, and for how long.
const PARTIALS: usize = 256;
const PARTIAL_TTL: Duration = Duration::from_secs(5);
/// Shortest key accepted: HMAC keys shorter than this are guessable.
const MIN_SECRET_BYTES: usize = 16;
/// Chitchat's own header: magic 45139 (LE), protocol version, message type.
const CHITCHAT_MAGIC: [u8; 2] = 45_139u16.to_le_bytes();

/// Why a datagram was dropped: the closed label set of
/// `ringkv_gossip_dropped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Larger than any datagram chitchat sends, or a reassembled message too large.
    Oversized,
    /// No valid tag under the cluster secret (or none at all).
    Unauthenticated,
    /// Timestamp outside the replay window.
    Stale,
    /// Already accepted within the window.
    Replayed,
    /// Zstd frames that could decompress past `MAX_DECOMPRESSED`.
    DecompressionBomb,
    /// Not a chitchat message (or not one chitchat could decode).
    Malformed,
    /// Authenticated, but the replay cache is full (a keyed peer flooding).
    Overload,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::Oversized,
        DropReason::Unauthenticated,
        DropReason::Stale,
        DropReason::Replayed,
        DropReason::DecompressionBomb,
        DropReason::Malformed,
        DropReason::Overload,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::Stale => "stale",
            DropReason::Replayed => "replayed",
            DropReason::DecompressionBomb => "decompression_bomb",
            DropReason::Malformed => "malformed",
            DropReason::Overload => "overload",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("gossip secret file {path}: {reason}")]
    File { path: String, reason: String },
}

/// The cluster's gossip keys: the first signs, every one verifies (so a key
/// can be rotated by a rolling restart with both lines in the file).
#[derive(Clone)]
pub struct GossipSecret {
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for GossipSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GossipSecret({} keys)", self.keys.len())
    }
}

impl GossipSecret {
    /// One key per non-empty line (surrounding whitespace ignored, `#`
    /// starts a comment line); each at least 16 bytes.
    pub fn from_text(text: &str) -> Result<GossipSecret, String> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "line {}: a key must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -base64 32`)",
                    i + 1
                ));
            }
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, line.as_bytes()));
        }
        if keys.is_empty() {
            return Err("no key in the file".into());
        }
        Ok(GossipSecret { keys })
    }

    pub fn load(path: &Path) -> Result<GossipSecret, SecretError> {
        let err = |reason: String| SecretError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::from_text(&text).map_err(err)
    }

    fn verify(&self, msg: &[u8], tag: &[u8]) -> bool {
        // ring's verify compares in constant time.
        self.keys.iter().any(|k| hmac::verify(k, msg, tag).is_ok())
    }
}

/// Seals chitchat payloads and opens received datagrams.
pub struct Guard {
    secret: Option<GossipSecret>,
    rng: ring::rand::SystemRandom,
    seen: HashSet<(u64, u64, u8)>,
    seen_order: VecDeque<(u64, u64, u8)>,
    partials: HashMap<(SocketAddr, u64, u64), Partial>,
}

struct Partial {
    parts: [Option<Vec<u8>>; MAX_FRAGMENTS as usize],
    started: Instant,
}

/// What became of one received datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// A whole chitchat payload, checked; hand it to the decoder.
    Payload(Vec<u8>),
    /// The first fragment of a message; wait for the other.
    Partial,
    Dropped(DropReason),
}

impl Guard {
    pub fn new(secret: Option<GossipSecret>) -> Guard {
        Guard {
            secret,
            rng: ring::rand::SystemRandom::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            partials: HashMap::new(),
        }
    }

    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The datagrams to send for one serialized chitchat message.
    pub fn seal(&self, payload: &[u8], now_ms: u64) -> Vec<Vec<u8>> {
        let Some(secret) = &self.secret else {
            return vec![payload.to_vec()];
        };
        let mut nonce = [0u8; 8];
        if ring::rand::SecureRandom::fill(&self.rng, &mut nonce).is_err() {
            // The OS RNG failing is not recoverable; a time-derived nonce
            // keeps gossip going (replay detection still holds per ms).
            nonce = now_ms.to_le_bytes();
        }
        let chunks: Vec<&[u8]> = if payload.is_empty() {
            vec![payload]
        } else {
            payload.chunks(MAX_BODY).collect()
        };
        let count = chunks.len() as u8;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                let mut d = Vec::with_capacity(HEADER_LEN + body.len());
                d.extend_from_slice(MAGIC);
                d.extend_from_slice(&now_ms.to_le_bytes());
                d.extend_from_slice(&nonce);
                d.push(i as u8);
                d.push(count);
                let tag = {
                    let mut ctx = hmac::Context::with_key(&secret.keys[0]);
                    ctx.update(&d);
                    ctx.update(body);
                    ctx.sign()
                };
                d.extend_from_slice(tag.as_ref());
                d.extend_from_slice(body);
                d
            })
            .collect()
    }

    /// Checks one received datagram (see the module comment for the order).
    pub fn open(&mut self, from: SocketAddr, datagram: &[u8], now_ms: u64) -> Opened {
        if datagram.len() > MAX_DATAGRAM {
            return Opened::Dropped(DropReason::Oversized);
        }
        let payload = match &self.secret {
            None => datagram.to_vec(),
            Some(secret) => match self.open_sealed(secret.clone(), from, datagram, now_ms) {
                Ok(Some(p)) => p,
                Ok(None) => return Opened::Partial,
                Err(r) => return Opened::Dropped(r),
            },
        };
        match check_payload(&payload) {
            Ok(()) => Opened::Payload(payload),
            Err(r) => Opened::Dropped(r),
        }
    }

    fn open_sealed(
        &mut self,
        secret: GossipSecret,
        from: SocketAddr,
        d: &[u8],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, DropReason> {
        if d.len() < HEADER_LEN || &d[..4] != MAGIC {
            return Err(DropReason::Unauthenticated);
        }
        let signed = HEADER_LEN - TAG_LEN;
        let (head, rest) = d.split_at(signed);
        let (tag, body) = rest.split_at(TAG_LEN);
        let mut msg = Vec::with_capacity(head.len() + body.len());
        msg.extend_from_slice(head);
        msg.extend_from_slice(body);
        if !secret.verify(&msg, tag) {
            return Err(DropReason::Unauthenticated);
        }
        let field = |at: usize| u64::from_le_bytes(d[at..at + 8].try_into().expect("8 bytes"));
        let (sent_ms, nonce, index, count) = (field(4), field(12), d[20], d[21]);
        let window = REPLAY_WINDOW.as_millis() as u64;
        if sent_ms.abs_diff(now_ms) > window {
            return Err(DropReason::Stale);
        }
        if count == 0 || count > MAX_FRAGMENTS || index >= count {
            return Err(DropReason::Malformed);
        }
        // Forget what fell out of the window, then refuse repeats.
        while let Some(&(t, _, _)) = self.seen_order.front() {
            if t.saturating_add(window) >= now_ms {
                break;
            }
            let old = self.seen_order.pop_front().expect("front exists");
            self.seen.remove(&old);
        }
        let id = (sent_ms, nonce, index);
        if self.seen.contains(&id) {
            return Err(DropReason::Replayed);
        }
        if self.seen.len() >= REPLAY_CACHE {
            return Err(DropReason::Overload);
        }
        self.seen.insert(id);
        self.seen_order.push_back(id);
        if count == 1 {
            return Ok(Some(body.to_vec()));
        }
        self.partials
            .retain(|_, p| p.started.elapsed() < PARTIAL_TTL);
        let key = (from, sent_ms, nonce);
        if !self.partials.contains_key(&key) && self.partials.len() >= PARTIALS {
            return Err(DropReason::Overload);
        }
        let p = self.partials.entry(key).or_insert_with(|| Partial {
            parts: Default::default(),
            started: Instant::now(),
        });
        p.parts[index as usize] = Some(body.to_vec());
        if p.parts[..count as usize].iter().any(|x| x.is_none()) {
            return Ok(None);
        }
        let p = self.partials.remove(&key).expect("present");
        let whole: Vec<u8> = p.parts.into_iter().flatten().flatten().collect();
        if whole.len() > MAX_DATAGRAM {
            return Err(DropReason::Oversized);
        }
        Ok(Some(whole))
    }
}

/// Cheap checks on a chitchat payload before chitchat sees it: its header,
/// and how much its zstd frames could decompress to.
pub fn check_payload(p: &[u8]) -> Result<(), DropReason> {
    if p.len() < 4 || p[..2] != CHITCHAT_MAGIC || p[2] > 1 || p[3] > 3 {
        return Err(DropReason::Malformed);
    }
    if decompression_bound(p) > MAX_DECOMPRESSED {
        return Err(DropReason::DecompressionBomb);
    }
    Ok(())
}

/// An upper bound of what chitchat could decompress from `p`. Every zstd
/// frame (current or legacy format) starts with a magic number, and each
/// compressed block decompresses into a 64 KiB buffer, so summing, over
/// every place a frame could start, its declared content size (64 KiB when
/// unknown or larger) bounds the output without parsing chitchat's format.
pub fn decompression_bound(p: &[u8]) -> u64 {
    const BLOCK_MAX: u64 = u16::MAX as u64;
    let mut total = 0u64;
    for i in 0..p.len().saturating_sub(3) {
        // Magic numbers 0xFD2FB51E..=0xFD2FB528, little-endian.
        if p[i + 1] == 0xB5 && p[i + 2] == 0x2F && p[i + 3] == 0xFD && (0x1E..=0x28).contains(&p[i])
        {
            let declared = match zstd_safe::get_frame_content_size(&p[i..]) {
                Ok(Some(n)) => n.min(BLOCK_MAX),
                _ => BLOCK_MAX,
            };
            total = total.saturating_add(declared);
        }
    }
    total
}

/// A BadCluster message (chitchat ignores what follows the 4-byte header);
/// the decoder uses it as an end marker, its length carrying a sequence tag.
pub fn end_marker(tag: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 + tag as usize);
    m.extend_from_slice(&CHITCHAT_MAGIC);
    m.push(0);
    m.push(3);
    m.resize(4 + tag as usize, 0);
    m
}

/// True when `p` is itself a BadCluster message (it then needs no decoder).
pub fn is_bad_cluster(p: &[u8]) -> bool {
    p.len() >= 4 && p[..2] == CHITCHAT_MAGIC && p[2] <= 1 && p[3] == 3
}

#[cfg(test)]
mod tests;
