//! The comparison as an SVG chart: throughput per workload (top) and
//! p50/p99 latency per workload (bottom), etcd and Cairn side by side, each
//! group labelled with its Cairn/etcd ratio.
//!
//! Both panels use a log scale: the workloads span three orders of
//! magnitude (a single client's hundreds of requests per second against a
//! watch's hundreds of thousands of events per second), and on a log scale
//! the gap between two bars reads as their ratio whatever their size.

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::results::{fmt_ratio, ratio, Comparison, Figures};

const WIDTH: u32 = 1280;
const PANEL_HEIGHT: u32 = 480;
const FONT: &str = "sans-serif";

const ETCD: RGBColor = RGBColor(0x4c, 0x78, 0xa8);
const ETCD_LIGHT: RGBColor = RGBColor(0xa6, 0xc3, 0xe0);
const CAIRN: RGBColor = RGBColor(0xe4, 0x6c, 0x0a);
const CAIRN_LIGHT: RGBColor = RGBColor(0xf8, 0xc3, 0x8f);

/// Bars of a group sit in the middle of each workload's unit-wide slot.
const BAR_WIDTH: f64 = 0.34;

/// The axis range for values in `values` on a log scale: whole powers of
/// ten around them, with room above for the ratio labels.
pub fn log_range(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let pos: Vec<f64> = values.into_iter().filter(|v| *v > 0.0 && v.is_finite()).collect();
    if pos.is_empty() {
        return (1.0, 10.0);
    }
    let lo = pos.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = pos.iter().copied().fold(0.0, f64::max);
    let lo = 10f64.powf((lo / 2.0).log10().floor());
    let hi = 10f64.powf((hi * 4.0).log10().ceil());
    (lo, hi.max(lo * 10.0))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The chart as SVG text.
pub fn render_svg(c: &Comparison) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 2 * PANEL_HEIGHT + 40)).into_drawing_area();
        root.fill(&WHITE)?;
        let subtitle = format!(
            "{} members each on {} ({} cores){}",
            c.meta.settings.members,
            c.meta.machine.cpu,
            c.meta.machine.cores,
            if c.meta.quick { " — quick smoke run" } else { "" }
        );
        root.draw(&Text::new(
            "Cairn vs etcd (same run, same machine)",
            (WIDTH as i32 / 2, 8),
            TextStyle::from((FONT, 27).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
        root.draw(&Text::new(
            subtitle,
            (WIDTH as i32 / 2, 34),
            TextStyle::from((FONT, 17).into_font())
                .color(&RGBColor(0x55, 0x55, 0x55))
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
        let body = root.margin(50, 0, 0, 0);
        let (top, bottom) = body.split_vertically(PANEL_HEIGHT);
        throughput_panel(&root, &top, c)?;
        latency_panel(&root, &bottom, c)?;
        root.present()?;
    }
    Ok(svg)
}

fn throughput_panel(root: &Area, area: &Area, c: &Comparison) -> anyhow::Result<()> {
    let n = c.workloads.len().max(1);
    let rates = c.workloads.iter().flat_map(|w| [w.etcd.figures, w.cairn.figures]).flatten().map(|f| f.rate);
    let (lo, hi) = log_range(rates);
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput (higher is better; label: Cairn/etcd)", (FONT, 21))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(44)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .y_desc("requests/s (watch: events/s), log scale")
        .y_label_formatter(&|v| super::results::fmt_rate(*v))
        .draw()?;

    for (server, color, offset) in [("etcd", ETCD, -BAR_WIDTH), ("Cairn", CAIRN, 0.0)] {
        let bars = c.workloads.iter().enumerate().filter_map(|(i, w)| {
            let f = if server == "etcd" { w.etcd.figures } else { w.cairn.figures }?;
            let x0 = i as f64 + 0.5 + offset;
            Some(Rectangle::new([(x0, lo), (x0 + BAR_WIDTH, f.rate)], color.filled()))
        });
        chart
            .draw_series(bars)?
            .label(server)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    for (i, w) in c.workloads.iter().enumerate() {
        let top = [w.etcd.figures, w.cairn.figures].iter().flatten().map(|f| f.rate).fold(lo, f64::max);
        let label = match w.both() {
            Some((e, k)) => fmt_ratio(ratio(k.rate, e.rate)),
            None => "failed".into(),
        };
        ratio_label(&chart, root, i, top, &label)?;
        x_label(&chart, root, i, lo, &w.short)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 17))
        .draw()?;
    Ok(())
}

fn latency_panel(root: &Area, area: &Area, c: &Comparison) -> anyhow::Result<()> {
    let n = c.workloads.len().max(1);
    let lats =
        c.workloads.iter().flat_map(|w| [w.etcd.figures, w.cairn.figures]).flatten().flat_map(|f| [f.p50_ms, f.p99_ms]);
    let (lo, hi) = log_range(lats);
    let mut chart = ChartBuilder::on(area)
        .caption("Latency: p50 (dark) and p99 (full bar); lower is better; label: Cairn/etcd p99", (FONT, 21))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(44)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .y_desc("milliseconds (watch: put → event), log scale")
        .y_label_formatter(&|v| super::results::fmt_ms(*v))
        .draw()?;

    type Pick = fn(&Figures) -> f64;
    let series: [(&str, RGBColor, f64, Pick); 4] = [
        ("etcd p99", ETCD_LIGHT, -BAR_WIDTH, |f| f.p99_ms),
        ("etcd p50", ETCD, -BAR_WIDTH, |f| f.p50_ms),
        ("Cairn p99", CAIRN_LIGHT, 0.0, |f| f.p99_ms),
        ("Cairn p50", CAIRN, 0.0, |f| f.p50_ms),
    ];
    for (name, color, offset, pick) in series {
        let etcd = name.starts_with("etcd");
        let bars = c.workloads.iter().enumerate().filter_map(|(i, w)| {
            let f = if etcd { w.etcd.figures } else { w.cairn.figures }?;
            let x0 = i as f64 + 0.5 + offset;
            Some(Rectangle::new([(x0, lo), (x0 + BAR_WIDTH, pick(&f))], color.filled()))
        });
        chart
            .draw_series(bars)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    for (i, w) in c.workloads.iter().enumerate() {
        let top = [w.etcd.figures, w.cairn.figures].iter().flatten().map(|f| f.p99_ms).fold(lo, f64::max);
        let label = match w.both() {
            Some((e, k)) => fmt_ratio(ratio(k.p99_ms, e.p99_ms)),
            None => "failed".into(),
        };
        ratio_label(&chart, root, i, top, &label)?;
        x_label(&chart, root, i, lo, &w.short)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 17))
        .draw()?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::combinators::LogCoord<f64>>,
>;

/// The Cairn/etcd ratio above workload `i`'s group, whose taller bar ends at `top`.
fn ratio_label(chart: &Chart, root: &Area, i: usize, top: f64, label: &str) -> anyhow::Result<()> {
    let (x, y) = chart.backend_coord(&(i as f64 + 0.5, top));
    root.draw(&Text::new(
        label.to_string(),
        (x, y - 4),
        TextStyle::from((FONT, 16).into_font().style(FontStyle::Bold)).pos(Pos::new(HPos::Center, VPos::Bottom)),
    ))
    .map_err(|e| anyhow!("{e}"))
}

/// Workload `i`'s name under the axis, one text line per `\n`-separated part.
fn x_label(chart: &Chart, root: &Area, i: usize, lo: f64, name: &str) -> anyhow::Result<()> {
    let (x, y) = chart.backend_coord(&(i as f64 + 0.5, lo));
    for (line, text) in name.split('\n').enumerate() {
        root.draw(&Text::new(
            text.to_string(),
            (x, y + 6 + 16 * line as i32),
            TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::compare::results::tests::sample;

    /// Checks that `svg` is one well-formed XML element tree rooted at
    /// `<svg>`: every tag closed in order, attributes quoted.
    pub fn check_well_formed(svg: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg.trim();
        if let Some(i) = rest.find("?>").filter(|_| rest.starts_with("<?xml")) {
            rest = rest[i + 2..].trim_start();
        }
        let mut roots = 0;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').ok_or("unterminated tag")? + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with("!--") {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("</{name}> without an open tag"))?;
                if open != name.trim() {
                    return Err(format!("</{name}> closes <{open}>"));
                }
                continue;
            }
            let name = tag.split_whitespace().next().ok_or("empty tag")?.trim_end_matches('/').to_string();
            if stack.is_empty() {
                roots += 1;
                if name != "svg" {
                    return Err(format!("root element <{name}>"));
                }
            }
            if !tag.matches('"').count().is_multiple_of(2) {
                return Err(format!("unbalanced quotes in <{tag}>"));
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        match (stack.is_empty(), roots) {
            (true, 1) => Ok(()),
            (false, _) => Err(format!("unclosed {stack:?}")),
            (true, n) => Err(format!("{n} root elements")),
        }
    }

    #[test]
    fn log_ranges_cover_the_values_in_powers_of_ten() {
        assert_eq!(log_range([300.0, 45_000.0]), (100.0, 1_000_000.0));
        assert_eq!(log_range([0.4, 3.0]), (0.1, 100.0));
        assert_eq!(log_range([]), (1.0, 10.0));
        assert_eq!(log_range([0.0, f64::NAN, 5.0]), (1.0, 100.0));
    }

    #[test]
    fn chart_is_well_formed_svg_with_both_series() {
        let svg = render_svg(&sample()).unwrap();
        check_well_formed(&svg).unwrap_or_else(|e| panic!("{e}:\n{svg}"));
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim()))
            .collect();
        for text in ["etcd", "Cairn", "etcd p99", "Cairn p50", "2.50×", "failed", "put", "range", "l-1000"] {
            assert!(texts.contains(&text), "{text} missing in {texts:?}");
        }
        // One bar per run in the top panel, two per run below, plus the
        // legend swatches; one run of the sample failed.
        let bars = svg.matches("<rect").count();
        assert!(bars >= 15 + 30, "{bars} rects");
    }

    #[test]
    fn the_checker_rejects_broken_xml() {
        assert!(check_well_formed("<svg><g></svg>").is_err());
        assert!(check_well_formed("<svg><rect x=\"1/></svg>").is_err());
        assert!(check_well_formed("<svg/><svg/>").is_err());
        assert!(check_well_formed("<?xml version=\"1.0\"?><svg><g/><!-- c --></svg>").is_ok());
    }
}
