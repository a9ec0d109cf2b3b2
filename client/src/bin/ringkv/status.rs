//! How `ringkv status` and the progress of decommission, repair, cleanup
//! and removenode read, as text or JSON.

fn state_name(s: i32) -> &'static str {
    match ringkv_proto::v1::NodeState::try_from(s) {
        Ok(ringkv_proto::v1::NodeState::Joining) => "JOINING",
        Ok(ringkv_proto::v1::NodeState::Normal) => "NORMAL",
        Ok(ringkv_proto::v1::NodeState::Leaving) => "LEAVING",
        Ok(ringkv_proto::v1::NodeState::Left) => "LEFT",
        Ok(ringkv_proto::v1::NodeState::Repairing) => "REPAIRING",
        _ => "UNKNOWN",
    }
}

pub(crate) fn decommission_line(d: &ringkv_client::pb::DecommissionStatus) -> String {
    use ringkv_client::pb::decommission_status::Phase;
    let phase = match Phase::try_from(d.phase) {
        Ok(Phase::NotStarted) => "not started",
        Ok(Phase::Streaming) => "streaming",
        Ok(Phase::Done) => "done (LEFT)",
        Ok(Phase::Failed) => "FAILED",
        _ => "unknown",
    };
    let mut s = format!(
        "decommission: {phase}, ranges {}/{}, {} keys / {} bytes streamed",
        d.ranges_done, d.ranges_total, d.keys_streamed, d.bytes_streamed
    );
    if !d.error.is_empty() {
        s.push_str(&format!(
            " — {} (run decommission again to resume)",
            d.error
        ));
    }
    s
}

pub(crate) fn cleanup_line(c: &ringkv_client::pb::CleanupStatus) -> String {
    let mut s = format!(
        "cleanup: {}, ranges {}/{} ({} kept), {} keys / {} bytes dropped, {} keys / {} bytes pushed to replicas first; last complete cleanup {}",
        if c.running { "RUNNING" } else { "idle" },
        c.ranges_done,
        c.ranges_total,
        c.ranges_kept,
        c.keys_dropped,
        c.bytes_dropped,
        c.keys_pushed,
        c.bytes_pushed,
        ago(c.last_completed_unix_ms)
    );
    if !c.last_error.is_empty() {
        s.push_str(&format!(" — {}", c.last_error));
    }
    s
}

pub(crate) fn removal_line(r: &ringkv_client::pb::RemoveNodeStatus) -> String {
    use ringkv_client::pb::remove_node_status::Phase;
    let phase = match Phase::try_from(r.phase) {
        Ok(Phase::NotStarted) => "not started",
        Ok(Phase::Announcing) => "announcing (waiting for every live node to hear)",
        Ok(Phase::Streaming) => "streaming",
        Ok(Phase::Done) => "done (LEFT)",
        Ok(Phase::Failed) => "FAILED",
        _ => "unknown",
    };
    let mut s = format!(
        "removenode {}: {phase}, ranges {}/{}, {} keys / {} bytes streamed",
        r.node_id, r.ranges_done, r.ranges_total, r.keys_streamed, r.bytes_streamed
    );
    if !r.error.is_empty() {
        s.push_str(&format!(" — {} (run removenode again to resume)", r.error));
    }
    s
}

fn ago(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "never".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{}s ago", now.saturating_sub(unix_ms) / 1000)
}

pub(crate) fn repair_line(r: &ringkv_client::pb::RepairStatus) -> String {
    let fresh = r
        .ranges
        .iter()
        .filter(|x| x.last_completed_unix_ms > 0)
        .count();
    let mut s = format!(
        "repair: {}, ranges {}/{}, {} keys / {} bytes streamed, {} digest bytes; last complete repair {}; {fresh}/{} ranges ever repaired",
        if r.running { "RUNNING" } else { "idle" },
        r.ranges_done,
        r.ranges_total,
        r.keys_streamed,
        r.bytes_streamed,
        r.digest_bytes,
        ago(r.last_completed_unix_ms),
        r.ranges.len()
    );
    if !r.last_error.is_empty() {
        s.push_str(&format!(" — last error: {}", r.last_error));
    }
    s
}

pub(crate) fn print(s: &ringkv_client::StatusResponse, json: bool) {
    let repl = s.replication.unwrap_or_default();
    if json {
        let members: Vec<_> = s
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "node_id": m.node_id, "zone": m.zone, "state": state_name(m.state), "alive": m.alive,
                    "client_grpc_addr": m.client_grpc_addr, "http_addr": m.http_addr, "internode_addr": m.internode_addr,
                    "tokens": m.tokens, "generation": m.generation, "owned_fraction": m.owned_fraction,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "node_id": s.node_id, "zone": s.zone, "state": state_name(s.state), "version": s.version,
                "replication": {"n": repl.n, "w": repl.w, "r": repl.r}, "conflict_mode": s.conflict_mode,
                "draining": s.draining, "uptime_ms": s.uptime_ms, "members": members,
                "pending_hints": s.pending_hints, "pending_hints_by_node": s.pending_hints_by_node,
                "repair": s.repair.as_ref().map(|r| serde_json::json!({
                    "running": r.running, "repair_id": r.repair_id, "ranges_total": r.ranges_total,
                    "ranges_done": r.ranges_done, "keys_streamed": r.keys_streamed,
                    "bytes_streamed": r.bytes_streamed, "digest_bytes": r.digest_bytes,
                    "last_completed_unix_ms": r.last_completed_unix_ms, "last_error": r.last_error,
                })),
                "decommission": s.decommission.as_ref().map(|d| serde_json::json!({
                    "phase": d.phase, "ranges_total": d.ranges_total, "ranges_done": d.ranges_done,
                    "keys_streamed": d.keys_streamed, "bytes_streamed": d.bytes_streamed, "error": d.error,
                })),
                "cleanup": s.cleanup.as_ref().map(|c| serde_json::json!({
                    "running": c.running, "cleanup_id": c.cleanup_id, "ranges_total": c.ranges_total,
                    "ranges_done": c.ranges_done, "ranges_kept": c.ranges_kept,
                    "keys_dropped": c.keys_dropped, "bytes_dropped": c.bytes_dropped,
                    "keys_pushed": c.keys_pushed, "bytes_pushed": c.bytes_pushed,
                    "last_completed_unix_ms": c.last_completed_unix_ms, "last_error": c.last_error,
                })),
                "removal": s.removal.as_ref().map(|r| serde_json::json!({
                    "node_id": r.node_id, "phase": r.phase, "ranges_total": r.ranges_total,
                    "ranges_done": r.ranges_done, "keys_streamed": r.keys_streamed,
                    "bytes_streamed": r.bytes_streamed, "error": r.error,
                })),
                "removed_nodes": s.removed_nodes.iter().map(|r| serde_json::json!({
                    "node_id": r.node_id, "generation": r.generation, "done": r.done,
                    "removed_by": r.removed_by, "at_unix_ms": r.at_unix_ms,
                })).collect::<Vec<_>>(),
                "backup": s.backup.as_ref().map(|b| serde_json::json!({
                    "running": b.running, "backup_id": b.backup_id, "phase": b.phase,
                    "url": b.url, "files_total": b.files_total, "files_done": b.files_done,
                    "files_uploaded": b.files_uploaded, "bytes_total": b.bytes_total,
                    "bytes_uploaded": b.bytes_uploaded, "bytes_skipped": b.bytes_skipped,
                    "started_unix_ms": b.started_unix_ms, "finished_unix_ms": b.finished_unix_ms,
                    "error": b.error, "last_completed_id": b.last_completed_id,
                    "last_completed_unix_ms": b.last_completed_unix_ms,
                })),
                "restore": s.restore.as_ref().map(|r| serde_json::json!({
                    "running": r.running, "backup_id": r.backup_id, "phase": r.phase,
                    "url": r.url, "bytes_downloaded": r.bytes_downloaded,
                    "bytes_total": r.bytes_total, "keys_loaded": r.keys_loaded,
                    "started_unix_ms": r.started_unix_ms, "finished_unix_ms": r.finished_unix_ms,
                    "error": r.error,
                })),
            })
        );
        return;
    }
    println!(
        "node {} (zone {}) {}{} — N={} W={} R={} conflict_mode={} version {}",
        s.node_id,
        s.zone,
        state_name(s.state),
        if s.draining { ", DRAINING" } else { "" },
        repl.n,
        repl.w,
        repl.r,
        s.conflict_mode,
        s.version
    );
    println!(
        "{:<16} {:<10} {:<8} {:<6} {:>6} {:>8}  {:<22} {:<22}",
        "MEMBER", "ZONE", "STATE", "ALIVE", "TOKENS", "OWNS", "GRPC", "HTTP"
    );
    for m in &s.members {
        println!(
            "{:<16} {:<10} {:<8} {:<6} {:>6} {:>7.1}%  {:<22} {:<22}",
            m.node_id,
            m.zone,
            state_name(m.state),
            if m.alive { "yes" } else { "no" },
            m.tokens,
            m.owned_fraction * 100.0,
            m.client_grpc_addr,
            m.http_addr
        );
    }
    let hints: Vec<String> = s
        .pending_hints_by_node
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!(
        "hints held: {}{}",
        s.pending_hints,
        if hints.is_empty() {
            String::new()
        } else {
            format!(" ({})", hints.join(", "))
        }
    );
    if let Some(r) = &s.repair {
        println!("{}", repair_line(r));
    }
    if let Some(j) = &s.join {
        println!(
            "join: ranges {}/{}, {} keys / {} bytes streamed in",
            j.ranges_done, j.ranges_total, j.keys_streamed, j.bytes_streamed
        );
    }
    if let Some(d) = &s.decommission
        && d.phase != ringkv_client::pb::decommission_status::Phase::NotStarted as i32
    {
        println!("{}", decommission_line(d));
    }
    if let Some(c) = &s.cleanup
        && (c.running || c.cleanup_id != 0)
    {
        println!("{}", cleanup_line(c));
    }
    if let Some(r) = &s.removal
        && r.phase != ringkv_client::pb::remove_node_status::Phase::NotStarted as i32
    {
        println!("{}", removal_line(r));
    }
    if let Some(b) = &s.backup
        && !b.backup_id.is_empty()
    {
        println!(
            "backup {} to {}: {}, files {}/{} ({} uploaded), {} of {} bytes uploaded, {} skipped{}",
            b.backup_id,
            b.url,
            b.phase,
            b.files_done,
            b.files_total,
            b.files_uploaded,
            b.bytes_uploaded,
            b.bytes_total,
            b.bytes_skipped,
            if b.error.is_empty() {
                String::new()
            } else {
                format!(" — {}", b.error)
            }
        );
    }
    if let Some(r) = &s.restore
        && !r.backup_id.is_empty()
    {
        println!(
            "restore of {} from {}: {}, {} of {} bytes downloaded, {} keys loaded{}",
            r.backup_id,
            r.url,
            r.phase,
            r.bytes_downloaded,
            r.bytes_total,
            r.keys_loaded,
            if r.error.is_empty() {
                String::new()
            } else {
                format!(" — {}", r.error)
            }
        );
    }
    for r in &s.removed_nodes {
        println!(
            "removed: {} (generation {}) by {} {}{}",
            r.node_id,
            r.generation,
            r.removed_by,
            ago(r.at_unix_ms),
            if r.done { "" } else { ", streaming" }
        );
    }
}
