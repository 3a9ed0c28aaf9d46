//! `latency.svg`: every operation's latency against the time it started,
//! coloured by outcome, over shaded fault windows, so a glance shows what
//! each fault did to the clients.

use std::path::Path;

use plotters::prelude::*;

use crate::history::{self, Event, EventType};
use crate::nemesis::{FaultKind, FaultRecord};

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("cannot draw the latency chart: {0}")]
    Draw(String),
    #[error(transparent)]
    History(#[from] history::HistoryError),
}

fn draw_err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError::Draw(e.to_string())
}

const OK: RGBColor = RGBColor(46, 139, 87);
const FAIL: RGBColor = RGBColor(220, 50, 32);
const INFO: RGBColor = RGBColor(65, 105, 225);

fn fault_color(kind: FaultKind) -> RGBColor {
    match kind {
        FaultKind::Kill => RGBColor(230, 60, 60),
        FaultKind::Pause => RGBColor(240, 170, 0),
        FaultKind::Partition => RGBColor(140, 80, 200),
        FaultKind::KillAll => RGBColor(120, 0, 0),
        FaultKind::Member => RGBColor(0, 150, 150),
        FaultKind::Transfer => RGBColor(30, 30, 30),
        FaultKind::Compact => RGBColor(120, 120, 120),
    }
}

/// Writes the chart. `end_ns` is the end of the run on the run clock;
/// faults still open are drawn up to it.
pub fn latency_svg(
    path: &Path,
    title: &str,
    events: &[Event],
    faults: &[FaultRecord],
    end_ns: u64,
) -> Result<(), ChartError> {
    let mut points: Vec<(f64, f64, EventType)> = Vec::new();
    for pair in history::pair_events(events)? {
        let Some(done) = pair.completion.map(|c| &events[c]) else {
            continue;
        };
        let call = events[pair.invoke].t_ns;
        let latency_ms = (done.t_ns - call) as f64 / 1e6;
        points.push((call as f64 / 1e9, latency_ms.max(0.01), done.kind));
    }
    let end_s = (end_ns as f64 / 1e9).max(1.0);
    let max_ms = points.iter().map(|p| p.1).fold(100.0_f64, f64::max) * 1.5;
    let min_ms = 0.01;

    let root = SVGBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end_s, (min_ms..max_ms).log_scale())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("latency (ms, log)")
        .draw()
        .map_err(draw_err)?;

    // Instant faults (a leader transfer, a compaction) get a thin band of
    // this width so they show.
    let instant_s = end_s / 400.0;
    for kind in FaultKind::ALL {
        let windows: Vec<(f64, f64)> = faults
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| {
                let start = f.start_ns as f64 / 1e9;
                let end = f.end_ns.unwrap_or(end_ns) as f64 / 1e9;
                (start, end.max(start + instant_s))
            })
            .collect();
        if windows.is_empty() {
            continue;
        }
        let color = fault_color(kind);
        chart
            .draw_series(
                windows.into_iter().map(move |(s, e)| {
                    let alpha = if kind.is_instant() { 0.5 } else { 0.15 };
                    Rectangle::new([(s, min_ms), (e, max_ms)], color.mix(alpha).filled())
                }),
            )
            .map_err(draw_err)?
            .label(kind.name())
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.mix(0.4).filled())
            });
    }

    for (kind, color, name) in [
        (EventType::Ok, OK, "ok"),
        (EventType::Info, INFO, "info (unknown)"),
        (EventType::Fail, FAIL, "fail"),
    ] {
        let series: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.2 == kind)
            .map(|p| (p.0, p.1))
            .collect();
        let count = series.len();
        chart
            .draw_series(
                series
                    .into_iter()
                    .map(move |(x, y)| Circle::new((x, y), 2, color.mix(0.6).filled())),
            )
            .map_err(draw_err)?
            .label(format!("{name} ({count})"))
            .legend(move |(x, y)| Circle::new((x + 6, y), 4, color.filled()));
    }

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}
