//! The peer benchmark's results: rows, ratios and Markdown tables.

use std::fmt::Write;

use crate::matrix::Point;
use crate::systems::SystemKind;

/// One system at one point.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub system: SystemKind,
    pub point: Point,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// Write latency alone (p50, p99), when the point writes.
    pub put_p50_us: Option<u64>,
    pub put_p99_us: Option<u64>,
    /// CPU of the system's server processes per operation.
    pub server_cpu_us_per_op: Option<f64>,
    /// CPU of the load generator per operation (it shares the machine).
    pub client_cpu_us_per_op: Option<f64>,
    pub errors: u64,
    pub missing: u64,
    pub siblings: u64,
    pub last_error: Option<String>,
}

/// `a / b` when both are meaningful.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && a >= 0.0 && b > 0.0).then(|| a / b)
}

pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 10.0 => format!("{r:.0}x"),
        Some(r) => format!("{r:.2}x"),
        None => "—".into(),
    }
}

/// Whole operations per second with thousands separators: `13,846`.
pub fn fmt_ops(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Microseconds as milliseconds with two decimals.
pub fn fmt_ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

pub fn fmt_cpu(us: Option<f64>) -> String {
    match us {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
        None => "—".into(),
    }
}

fn fmt_value(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// The systems present in `rows`, in table order.
fn systems(rows: &[Row]) -> Vec<SystemKind> {
    SystemKind::ALL
        .into_iter()
        .filter(|s| rows.iter().any(|r| r.system == *s))
        .collect()
}

/// The points present in `rows`, in run order.
fn points(rows: &[Row]) -> Vec<Point> {
    let mut p: Vec<Point> = rows.iter().map(|r| r.point).collect();
    p.sort();
    p.dedup();
    p
}

fn find(rows: &[Row], s: SystemKind, p: &Point) -> Option<Row> {
    rows.iter()
        .find(|r| r.system == s && r.point == *p)
        .cloned()
}

/// One line per point: ops/s of every system and ringkv's ratio to each peer.
pub fn summary_table(rows: &[Row]) -> String {
    let sys = systems(rows);
    let peers: Vec<SystemKind> = sys
        .iter()
        .copied()
        .filter(|s| *s != SystemKind::Ringkv)
        .collect();
    let has_ringkv = sys.contains(&SystemKind::Ringkv);
    let mut t = String::from("| workload | keys | value | clients |");
    for s in &sys {
        let _ = write!(t, " {s} ops/s |");
    }
    if has_ringkv {
        for p in &peers {
            let _ = write!(t, " ringkv/{p} |");
        }
    }
    t.push_str("\n|---|---|---|---|");
    let ncols = sys.len() + if has_ringkv { peers.len() } else { 0 };
    t.push_str(&"---:|".repeat(ncols));
    t.push('\n');
    for p in points(rows) {
        let _ = write!(
            t,
            "| {} | {} | {} | {} |",
            p.workload.label(),
            p.dist,
            fmt_value(p.value_bytes),
            p.clients
        );
        for s in &sys {
            let v = find(rows, *s, &p).map_or("—".to_string(), |r| fmt_ops(r.ops_per_sec));
            let _ = write!(t, " {v} |");
        }
        if has_ringkv {
            let ours = find(rows, SystemKind::Ringkv, &p);
            for peer in &peers {
                let r = match (&ours, find(rows, *peer, &p)) {
                    (Some(a), Some(b)) => ratio(a.ops_per_sec, b.ops_per_sec),
                    _ => None,
                };
                let _ = write!(t, " {} |", fmt_ratio(r));
            }
        }
        t.push('\n');
    }
    t
}

/// One line per point and system: latency percentiles, CPU per operation,
/// and ringkv's throughput and CPU ratio to that system.
pub fn detail_table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| workload | keys | value | clients | system | ops/s | p50 ms | p99 ms | p999 ms | write p99 ms | server CPU µs/op | client CPU µs/op | errors | ringkv/this ops/s | ringkv/this CPU/op |\n\
         |---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in points(rows) {
        let ours = find(rows, SystemKind::Ringkv, &p);
        for s in systems(rows) {
            let Some(r) = find(rows, s, &p) else { continue };
            let (ops_ratio, cpu_ratio) = match (&ours, s) {
                (Some(o), s) if s != SystemKind::Ringkv => (
                    fmt_ratio(ratio(o.ops_per_sec, r.ops_per_sec)),
                    fmt_ratio(match (o.server_cpu_us_per_op, r.server_cpu_us_per_op) {
                        (Some(a), Some(b)) => ratio(a, b),
                        _ => None,
                    }),
                ),
                _ => ("—".into(), "—".into()),
            };
            let errors = if r.missing > 0 {
                format!("{} ({} not found)", r.errors, r.missing)
            } else {
                r.errors.to_string()
            };
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.workload.label(),
                p.dist,
                fmt_value(p.value_bytes),
                p.clients,
                s,
                fmt_ops(r.ops_per_sec),
                fmt_ms(r.p50_us),
                fmt_ms(r.p99_us),
                fmt_ms(r.p999_us),
                r.put_p99_us.map_or("—".into(), fmt_ms),
                fmt_cpu(r.server_cpu_us_per_op),
                fmt_cpu(r.client_cpu_us_per_op),
                errors,
                ops_ratio,
                cpu_ratio
            );
        }
    }
    t
}

/// One plotted curve: (ops/s, p99 ms, clients) per sweep point, in client order.
pub type Curve = Vec<(f64, f64, usize)>;

/// The sweep's curves per system, from the rows of the sweep's points.
pub fn sweep_curves(rows: &[Row], sweep: &[Point]) -> Vec<(SystemKind, Curve)> {
    systems(rows)
        .into_iter()
        .filter_map(|s| {
            let c: Curve = sweep
                .iter()
                .filter_map(|p| find(rows, s, p))
                .filter(|r| r.ops > 0)
                .map(|r| (r.ops_per_sec, r.p99_us as f64 / 1000.0, r.point.clients))
                .collect();
            (!c.is_empty()).then_some((s, c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Workload;
    use crate::zipf::KeyDist;

    fn point(w: Workload, clients: usize) -> Point {
        Point {
            value_bytes: 100,
            dist: KeyDist::Uniform,
            workload: w,
            clients,
        }
    }

    fn row(system: SystemKind, p: Point, ops_per_sec: f64, cpu: f64) -> Row {
        Row {
            system,
            point: p,
            ops: (ops_per_sec * 10.0) as u64,
            ops_per_sec,
            p50_us: 8_600,
            p99_us: 21_000,
            p999_us: 40_000,
            put_p50_us: Some(8_600),
            put_p99_us: Some(21_000),
            server_cpu_us_per_op: Some(cpu),
            client_cpu_us_per_op: None,
            errors: 0,
            missing: 0,
            siblings: 0,
            last_error: None,
        }
    }

    #[test]
    fn ratios() {
        assert_eq!(
            ratio(3541.0, 7447.0).map(|r| (r * 100.0).round()),
            Some(48.0)
        );
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(fmt_ratio(ratio(3541.0, 7447.0)), "0.48x");
        assert_eq!(fmt_ratio(ratio(300.0, 10.0)), "30x");
        assert_eq!(fmt_ratio(None), "—");
    }

    #[test]
    fn number_formats() {
        assert_eq!(fmt_ops(13_845.6), "13,846");
        assert_eq!(fmt_ops(999.0), "999");
        assert_eq!(fmt_ops(1_234_567.0), "1,234,567");
        assert_eq!(fmt_ms(8_600), "8.60");
        assert_eq!(fmt_cpu(Some(152.4)), "152");
        assert_eq!(fmt_cpu(Some(12.34)), "12.3");
        assert_eq!(fmt_value(10 * 1024), "10 KiB");
        assert_eq!(fmt_value(100), "100 B");
    }

    #[test]
    fn summary_has_a_ratio_per_peer_and_a_dash_for_missing_points() {
        let w32 = point(Workload::WriteOnly, 32);
        let w128 = point(Workload::WriteOnly, 128);
        let rows = vec![
            row(SystemKind::Ringkv, w32, 3541.0, 300.0),
            row(SystemKind::Etcd, w32, 7447.0, 150.0),
            row(SystemKind::Redis, w32, 92_000.0, 15.0),
            row(SystemKind::Ringkv, w128, 4175.0, 280.0),
            row(SystemKind::Etcd, w128, 13_846.0, 100.0),
        ];
        let t = summary_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| workload | keys | value | clients | ringkv ops/s | etcd ops/s | redis ops/s | ringkv/etcd | ringkv/redis |"
        );
        assert_eq!(
            lines[2],
            "| write only | uniform | 100 B | 32 | 3,541 | 7,447 | 92,000 | 0.48x | 0.04x |"
        );
        assert_eq!(
            lines[3],
            "| write only | uniform | 100 B | 128 | 4,175 | 13,846 | — | 0.30x | — |"
        );
        // Every line has the same number of cells.
        let cells = |l: &str| l.matches('|').count();
        assert!(lines.iter().all(|l| cells(l) == cells(lines[0])));

        let d = detail_table(&rows);
        let etcd = d
            .lines()
            .find(|l| l.contains("| 32 | etcd |"))
            .expect("etcd row");
        // ringkv does 0.48x etcd's ops at 2x its CPU per op.
        assert!(etcd.ends_with("| 0.48x | 2.00x |"), "{etcd}");
        assert!(etcd.contains("| 8.60 | 21.00 | 40.00 |"), "{etcd}");
        let ours = d.lines().find(|l| l.contains("| 32 | ringkv |")).unwrap();
        assert!(ours.ends_with("| — | — |"), "{ours}");
        assert!(
            d.lines()
                .all(|l| cells(l) == cells(d.lines().next().unwrap()))
        );
    }

    #[test]
    fn sweep_curves_follow_client_order_per_system() {
        let sweep: Vec<Point> = [8, 32, 128]
            .iter()
            .map(|&c| point(Workload::WriteOnly, c))
            .collect();
        let mut rows = vec![
            row(SystemKind::Etcd, sweep[2], 13_000.0, 1.0),
            row(SystemKind::Etcd, sweep[0], 3_000.0, 1.0),
            row(SystemKind::Ringkv, sweep[1], 3_500.0, 1.0),
            // Not a sweep point.
            row(SystemKind::Ringkv, point(Workload::ReadOnly, 32), 9.0, 1.0),
        ];
        rows[0].p99_us = 25_000;
        let c = sweep_curves(&rows, &sweep);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0, SystemKind::Ringkv);
        assert_eq!(c[0].1, vec![(3_500.0, 21.0, 32)]);
        assert_eq!(c[1].0, SystemKind::Etcd);
        assert_eq!(c[1].1, vec![(3_000.0, 21.0, 8), (13_000.0, 25.0, 128)]);
    }

    #[test]
    fn without_ringkv_there_are_no_ratio_columns() {
        let p = point(Workload::ReadOnly, 32);
        let t = summary_table(&[row(SystemKind::Redis, p, 90_000.0, 10.0)]);
        assert!(!t.contains("ringkv/"));
        assert!(t.contains("| read only | uniform | 100 B | 32 | 90,000 |"));
    }
}
