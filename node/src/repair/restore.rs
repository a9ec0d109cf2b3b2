//! Bringing back a node whose data directory was lost. It keeps its tokens
//! (the ring remembers them) and announces REPAIRING: it takes writes for
//! its ranges like any replica, but reads leave it out and it is not ready.
//! It pulls every range it replicates from at least one other replica,
//! retrying ranges whose peers are down, and only then turns NORMAL. The
//! state is recorded in the data directory, so a restart mid-way resumes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::Repairer;
use crate::membership::{Membership, NodeState};

/// Ranges pulled at once.
const PARALLEL: usize = 4;

/// Restores this node's ranges, then turns it NORMAL. `settle`: how long a
/// state change is given to spread by gossip first.
pub async fn run(repair: Arc<Repairer>, membership: Membership, dir: PathBuf, settle: Duration) {
    membership.wait_for_peer(settle * 10).await;
    tokio::time::sleep(settle).await;
    tracing::info!("data directory was lost: restoring this node's ranges before serving reads");
    let mut done: std::collections::HashSet<(u64, u64)> = Default::default();
    loop {
        let ranges: Vec<_> = repair
            .my_ranges()
            .into_iter()
            .filter(|(r, _)| !done.contains(&(r.start, r.end)))
            .collect();
        let total = ranges.len();
        let outcomes: Vec<(u64, u64, Option<String>)> = futures::stream::iter(ranges)
            .map(|(range, peers)| {
                let repair = repair.clone();
                async move {
                    let res = repair.restore_range(range, &peers).await;
                    (range.start, range.end, res.err())
                }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let mut failed = Vec::new();
        for (start, end, err) in outcomes {
            match err {
                None => {
                    done.insert((start, end));
                }
                Some(e) => failed.push(e),
            }
        }
        if failed.is_empty() {
            break;
        }
        tracing::warn!(
            failed = failed.len(),
            total,
            first = %failed[0],
            "restoring: some ranges could not be pulled yet; retrying"
        );
        tokio::time::sleep(settle.max(Duration::from_secs(1))).await;
    }
    if let Err(e) = super::moves::save_state(&dir, None) {
        tracing::error!(error = %e, "cannot record the end of the restore; staying REPAIRING");
        return;
    }
    membership
        .update_local(|l| l.state = NodeState::Normal.to_proto() as i32)
        .await;
    tracing::info!("restored: NORMAL");
}
