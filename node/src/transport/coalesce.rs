//! Coalescing of the request path's replica traffic. Per peer and kind
//! (writes, reads) there is a lane: an item submitted while fewer than
//! `MAX_IN_FLIGHT` calls are out starts a call at once; items submitted
//! while the lane is busy queue up and leave together in the next call, up
//! to a byte budget. Under load one call carries many items (one HTTP/2
//! round trip, one engine group on the peer); alone, an item waits for
//! nothing. No timer, no linger.

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::TransportError;

/// Calls in flight per lane: the peer pipelines the next group while one
/// is being synced, without splitting load into many small calls.
const MAX_IN_FLIGHT: usize = 2;
/// Items per call at most.
const MAX_ITEMS: usize = 1024;

type Reply<R> = oneshot::Sender<Result<R, TransportError>>;

struct Queue<I, R> {
    items: Vec<(I, usize, Reply<R>)>,
    in_flight: usize,
}

/// One peer's lane for one kind of item `I` answered by `R`.
pub(crate) struct Lane<I, R> {
    queue: Mutex<Queue<I, R>>,
    /// Payload bytes per call at most (one larger item still goes, alone).
    max_bytes: usize,
}

impl<I: Send + 'static, R: Send + 'static> Lane<I, R> {
    pub(crate) fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(Lane {
            queue: Mutex::new(Queue {
                items: Vec::new(),
                in_flight: 0,
            }),
            max_bytes,
        })
    }

    /// Queues `item` (of about `size` bytes) and returns its outcome;
    /// `send` makes one call with a batch and answers one result per item
    /// in order (or one error for all).
    pub(crate) async fn submit<F, Fut>(
        self: &Arc<Self>,
        item: I,
        size: usize,
        send: F,
    ) -> Result<R, TransportError>
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, TransportError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock();
            q.items.push((item, size, tx));
            let start = q.in_flight < MAX_IN_FLIGHT;
            if start {
                q.in_flight += 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().drain(send));
        }
        rx.await.unwrap_or_else(|_| {
            Err(TransportError::Dropped {
                what: "coalesced call",
            })
        })
    }

    /// Sends what is queued, call after call, until the queue is empty.
    async fn drain<F, Fut>(self: Arc<Self>, send: F)
    where
        F: Fn(Vec<I>) -> Fut,
        Fut: Future<Output = Result<Vec<R>, TransportError>>,
    {
        loop {
            let batch = {
                let mut q = self.queue.lock();
                if q.items.is_empty() {
                    q.in_flight -= 1;
                    return;
                }
                take_batch(&mut q.items, self.max_bytes)
            };
            let mut items = Vec::with_capacity(batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            for (item, _, reply) in batch {
                items.push(item);
                replies.push(reply);
            }
            let n = replies.len();
            match send(items).await {
                Ok(results) if results.len() == n => {
                    for (reply, r) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(r));
                    }
                }
                Ok(results) => {
                    let e = TransportError::Protocol(format!(
                        "{} answers for {n} items",
                        results.len()
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// The oldest queued items that fit in `max_bytes` (at least one).
fn take_batch<T, R>(
    items: &mut Vec<(T, usize, Reply<R>)>,
    max_bytes: usize,
) -> Vec<(T, usize, Reply<R>)> {
    let mut total = 0usize;
    let mut n = 0;
    for (_, size, _) in items.iter() {
        if n > 0 && (n >= MAX_ITEMS || total + size > max_bytes) {
            break;
        }
        total += size;
        n += 1;
    }
    items.drain(..n).collect()
}
