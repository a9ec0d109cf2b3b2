//! The sweep plot: throughput vs p99 latency per system (SVG, log-log).

use std::path::Path;

use plotters::prelude::*;

use crate::error::BenchError;
use crate::report::{Curve, fmt_ops};
use crate::systems::SystemKind;

fn color(s: SystemKind) -> RGBColor {
    match s {
        SystemKind::Ringkv => RGBColor(214, 39, 40),
        SystemKind::Etcd => RGBColor(31, 119, 180),
        SystemKind::Redis => RGBColor(44, 160, 44),
    }
}

fn bounds(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let lo = v.clone().fold(f64::INFINITY, f64::min);
    let hi = v.fold(0.0, f64::max);
    if lo.is_finite() && lo > 0.0 {
        (lo / 1.6, hi * 1.6)
    } else {
        (0.1, 10.0)
    }
}

/// Draws `curves` into an SVG at `path`; each point is labelled with its
/// client count.
pub fn sweep_svg(
    path: &Path,
    title: &str,
    curves: &[(SystemKind, Curve)],
) -> Result<(), BenchError> {
    let e = |e: &dyn std::fmt::Display| BenchError::Plot(e.to_string());
    let all = curves.iter().flat_map(|(_, c)| c.iter());
    let (x0, x1) = bounds(all.clone().map(|p| p.0));
    let (y0, y1) = bounds(all.map(|p| p.1));
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_labels(16)
        .y_labels(16)
        .x_desc("throughput (ops/s, log)")
        .y_desc("p99 latency (ms, log)")
        .x_label_formatter(&|v| fmt_ops(*v))
        .y_label_formatter(&|v| {
            if *v >= 10.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        })
        .draw()
        .map_err(|x| e(&x))?;
    for (s, c) in curves {
        let col = color(*s);
        chart
            .draw_series(LineSeries::new(
                c.iter().map(|p| (p.0, p.1)),
                col.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(s.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], col.stroke_width(3)));
        chart
            .draw_series(c.iter().map(|p| {
                EmptyElement::at((p.0, p.1))
                    + Circle::new((0, 0), 4, col.filled())
                    + Text::new(p.2.to_string(), (6, -16), ("sans-serif", 12).into_font())
            }))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_system_and_client_label() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sweep.svg");
        let curves = vec![
            (
                SystemKind::Ringkv,
                vec![(3_000.0, 9.0, 8), (4_100.0, 30.0, 128)],
            ),
            (
                SystemKind::Redis,
                vec![(90_000.0, 0.8, 8), (95_000.0, 3.1, 256)],
            ),
        ];
        sweep_svg(&p, "write only", &curves).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        // plotters writes each text's content on a line of its own.
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        for want in [
            "ringkv",
            "redis",
            "write only",
            "128",
            "256",
            "p99 latency (ms, log)",
        ] {
            assert!(
                texts.iter().any(|t| t.starts_with(want)),
                "no text {want:?} in the SVG"
            );
        }
    }
}
