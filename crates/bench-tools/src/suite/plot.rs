//! The plots of `BENCHMARKS.md` (plotters), as SVG and PNG. The labels need a TrueType
//! font: DejaVu Sans from the usual places, or the file named by `NEFFOS_BENCH_FONT`.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::SuiteResults;
use super::report::thousands;

/// A plot written under `docs/bench/`.
#[derive(Debug, Clone)]
pub(super) struct Plot {
    /// Caption.
    pub(super) title: String,
    /// SVG path relative to the repository root.
    pub(super) svg: String,
    /// PNG path relative to the repository root, when written.
    pub(super) png: Option<String>,
}

const SIZE: (u32, u32) = (900, 540);

pub(super) const COLORS: [RGBColor; 6] = [
    RGBColor(0xD6, 0x27, 0x28),
    RGBColor(0x1F, 0x77, 0xB4),
    RGBColor(0x2C, 0xA0, 0x2C),
    RGBColor(0x7F, 0x7F, 0x7F),
    RGBColor(0x94, 0x67, 0xBD),
    RGBColor(0xFF, 0x7F, 0x0E),
];

/// Registers a font for the bitmap backend once; false when none was found.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let candidates = [
            std::env::var("NEFFOS_BENCH_FONT").unwrap_or_default(),
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into(),
            "/usr/share/fonts/TTF/DejaVuSans.ttf".into(),
            "/usr/share/fonts/dejavu/DejaVuSans.ttf".into(),
        ];
        for path in candidates.iter().filter(|p| !p.is_empty()) {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

pub(super) type DrawResult = anyhow::Result<()>;

pub(super) fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// A drawing function usable with both backends.
pub(super) trait Chart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

/// Draws `chart` into `<dir>/<name>.svg` and, with a font, `.png`.
pub(super) fn plot_chart(
    dir: &Path,
    name: &str,
    title: &str,
    chart: &impl Chart,
) -> anyhow::Result<Plot> {
    if !font_ready() {
        anyhow::bail!(
            "no TrueType font to draw the labels with: install DejaVu Sans (fonts-dejavu-core) \
             or set NEFFOS_BENCH_FONT to a .ttf file"
        );
    }
    let svg_path = dir.join(format!("{name}.svg"));
    {
        let root = SVGBackend::new(&svg_path, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        chart.draw(&root)?;
        root.present().map_err(err)?;
    }
    let png = {
        let png_path = dir.join(format!("{name}.png"));
        let root = BitMapBackend::new(&png_path, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        chart.draw(&root)?;
        root.present().map_err(err)?;
        Some(format!("docs/bench/{name}.png"))
    };
    Ok(Plot {
        title: title.to_owned(),
        svg: format!("docs/bench/{name}.svg"),
        png,
    })
}

/// Deliveries per second versus receivers, per peer (saturating runs).
struct Throughput<'a>(&'a SuiteResults);

impl Chart for Throughput<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let res = self.0;
        let series: Vec<(String, Vec<(f64, f64)>)> = res
            .peers
            .iter()
            .map(|p| {
                let pts = res
                    .plan
                    .client_counts
                    .iter()
                    .filter_map(|&n| p.saturate_at(n))
                    .filter(|r| r.connected > 0)
                    .map(|r| (r.connected as f64, r.deliveries_per_s))
                    .collect();
                (p.key.clone(), pts)
            })
            .collect();
        let max_y = series
            .iter()
            .flat_map(|(_, s)| s.iter().map(|p| p.1))
            .fold(1.0f64, f64::max)
            * 1.15;
        let (min_x, max_x) = series
            .iter()
            .flat_map(|(_, s)| s.iter().map(|p| p.0))
            .fold((f64::MAX, 1.0f64), |(a, b), x| (a.min(x), b.max(x)));
        let min_x = if min_x == f64::MAX { 1.0 } else { min_x };
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Fan-out: maximum deliveries/s vs clients ({} B)",
                    res.plan.size
                ),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(90)
            .build_cartesian_2d((min_x * 0.8..max_x * 1.25).log_scale(), 0.0..max_y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("clients (log scale)")
            .y_desc("deliveries/s")
            .light_line_style(WHITE)
            .x_label_formatter(&|x| {
                let shown = res
                    .plan
                    .client_counts
                    .iter()
                    .any(|&c| (c as f64 - *x).abs() < 0.5);
                if shown { thousands(*x) } else { String::new() }
            })
            .y_label_formatter(&|y| thousands(*y))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(err)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

/// p50 (thin) and p99 (thick) latency versus offered deliveries/s, per peer.
struct LatencyChart<'a>(&'a SuiteResults);

impl Chart for LatencyChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let res = self.0;
        let mut max_x = 1.0f64;
        let mut max_y = 0.1f64;
        let mut min_y = f64::MAX;
        for p in &res.peers {
            for r in p.sweep.iter().chain(p.fixed.iter()) {
                max_x = max_x.max(r.offered_deliveries_per_s);
                max_y = max_y.max(r.latency.p99_us / 1000.0);
                min_y = min_y.min(r.latency.p50_us / 1000.0);
            }
        }
        let min_y = if min_y == f64::MAX {
            0.01
        } else {
            (min_y * 0.7).max(0.01)
        };
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Fan-out latency vs offered load ({} clients): p99 thick, p50 thin",
                    thousands(res.plan.fanout_clients as f64)
                ),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..max_x * 1.1, (min_y..max_y * 1.5).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("offered deliveries/s")
            .y_desc("latency, ms (log scale)")
            .y_labels(6)
            .light_line_style(WHITE)
            .x_label_formatter(&|x| thousands(*x))
            .y_label_formatter(&|y| format!("{y}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(err)?;
        for (i, p) in res.peers.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mut runs: Vec<_> = p.sweep.iter().chain(p.fixed.iter()).collect();
            runs.sort_by(|a, b| {
                a.offered_deliveries_per_s
                    .total_cmp(&b.offered_deliveries_per_s)
            });
            let p99: Vec<(f64, f64)> = runs
                .iter()
                .map(|r| (r.offered_deliveries_per_s, r.latency.p99_us / 1000.0))
                .collect();
            let p50: Vec<(f64, f64)> = runs
                .iter()
                .map(|r| (r.offered_deliveries_per_s, r.latency.p50_us / 1000.0))
                .collect();
            chart
                .draw_series(LineSeries::new(p99.clone(), color.stroke_width(3)))
                .map_err(err)?
                .label(p.key.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
            chart
                .draw_series(p99.iter().map(|&pt| Circle::new(pt, 4, color.filled())))
                .map_err(err)?;
            chart
                .draw_series(LineSeries::new(p50.clone(), color.stroke_width(1)))
                .map_err(err)?;
            chart
                .draw_series(
                    p50.iter()
                        .map(|&pt| Circle::new(pt, 3, color.stroke_width(1))),
                )
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

/// A bar chart: one labelled bar per entry, its value printed above it.
pub(super) struct Bars {
    pub(super) caption: String,
    pub(super) y_desc: &'static str,
    pub(super) bars: Vec<(String, f64)>,
    /// Formats a value for the label above its bar.
    pub(super) format: fn(f64) -> String,
    /// A horizontal target line and its legend.
    pub(super) target: Option<(f64, &'static str)>,
}

impl Chart for Bars {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let floor = self.target.map_or(1.0, |(y, _)| y);
        let max_y = self.bars.iter().map(|b| b.1).fold(floor, f64::max) * 1.15;
        let n = self.bars.len().max(1) as u32;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.caption, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d((0u32..n - 1).into_segmented(), 0.0..max_y)
            .map_err(err)?;
        let names: Vec<String> = self.bars.iter().map(|b| b.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .y_desc(self.y_desc)
            .y_label_formatter(&|v| (self.format)(*v))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (i, (_, value)) in self.bars.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let i = i as u32;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *value),
                    ],
                    color.mix(0.8).filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    (self.format)(*value),
                    (SegmentValue::CenterOf(i), *value + max_y * 0.02),
                    ("sans-serif", 15),
                )))
                .map_err(err)?;
        }
        if let Some((y, label)) = self.target {
            chart
                .draw_series(LineSeries::new(
                    vec![(SegmentValue::Exact(0), y), (SegmentValue::Exact(n), y)],
                    BLACK.stroke_width(1),
                ))
                .map_err(err)?
                .label(label)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(err)?;
        }
        Ok(())
    }
}

/// Server memory per idle connection, per peer, with the 8 KiB target.
fn idle_memory(res: &SuiteResults) -> Bars {
    Bars {
        caption: format!(
            "Server memory per idle connection ({} connections), KiB",
            thousands(res.plan.idle_clients as f64)
        ),
        y_desc: "KiB per connection (VmRSS delta)",
        bars: res
            .peers
            .iter()
            .filter_map(|p| Some((p.key.clone(), p.idle.as_ref()?.kib_per_conn?)))
            .collect(),
        format: |v| format!("{v:.1}"),
        target: Some((8.0, "target: 8 KiB")),
    }
}

fn short_name(peer: &str) -> &str {
    if peer == "go-neffos" {
        "Go neffos"
    } else {
        peer
    }
}

/// Broker connections per instance: the cross-instance runs (2 instances, 1,000 clients) and
/// the scale-out runs (6 instances, 100,000 clients).
fn broker_connections(res: &SuiteResults) -> Bars {
    let mut bars: Vec<(String, f64)> = res
        .cluster
        .iter()
        .filter_map(|row| {
            let broker = row.broker.as_ref()?;
            let per_instance = broker.connections? as f64 / broker.instances.max(1) as f64;
            Some((
                format!("{} {}", short_name(&row.peer), row.exchange),
                per_instance,
            ))
        })
        .collect();
    bars.extend(res.scale_out.iter().filter_map(|run| {
        let most = run.broker_conns.iter().copied().max()?;
        Some((
            format!("scale-out {} ({}k)", run.exchange, run.clients / 1000),
            most as f64,
        ))
    }));
    Bars {
        caption: "Broker connections per instance".into(),
        y_desc: "connections to the broker, per instance",
        bars,
        format: |v| format!("{v:.0}"),
        target: None,
    }
}

/// Cross-instance fan-out next to the brokers' own ceilings, in broker deliveries per second
/// (what the broker itself had to deliver) and client deliveries per second.
fn cross_instance(res: &SuiteResults) -> Bars {
    let mut bars = Vec::new();
    for exchange in ["redis", "nats"] {
        for row in res.cluster.iter().filter(|r| r.exchange == exchange) {
            if let Some(report) = &row.saturate {
                bars.push((
                    format!("{} {exchange}", short_name(&row.peer)),
                    report.deliveries_per_s,
                ));
            }
        }
        if let Some(ceiling) = res
            .broker_ceilings
            .iter()
            .find(|c| c.broker.eq_ignore_ascii_case(exchange))
            && let Some(publishes) = ceiling.publishes_per_s
        {
            bars.push((
                format!("{exchange} ceiling"),
                publishes * ceiling.subscribers as f64,
            ));
        }
    }
    Bars {
        caption:
            "Cross-instance fan-out (client deliveries/s) and broker ceilings (broker deliveries/s)"
                .into(),
        y_desc: "deliveries per second",
        bars,
        format: |v| {
            if v >= 1e6 {
                format!("{:.2} M", v / 1e6)
            } else {
                format!("{:.0} k", v / 1e3)
            }
        },
        target: None,
    }
}

/// Draws every plot into `dir`.
pub(super) fn draw_all(res: &SuiteResults, dir: &Path) -> anyhow::Result<Vec<Plot>> {
    let mut plots = vec![
        plot_chart(
            dir,
            "throughput_vs_clients",
            "Maximum fan-out throughput versus clients",
            &Throughput(res),
        )?,
        plot_chart(
            dir,
            "latency_vs_load",
            "Fan-out latency percentiles versus offered load",
            &LatencyChart(res),
        )?,
        plot_chart(
            dir,
            "idle_memory",
            "Server memory per idle connection",
            &idle_memory(res),
        )?,
        plot_chart(
            dir,
            "broker_connections",
            "Broker connections per instance",
            &broker_connections(res),
        )?,
        plot_chart(
            dir,
            "cross_instance",
            "Cross-instance fan-out next to the brokers' own ceilings",
            &cross_instance(res),
        )?,
    ];
    if let Some(resume) = &res.resume {
        plots.push(super::resume::plot(resume, dir)?);
    }
    if let Some(shards) = &res.shards {
        plots.extend(super::shards::plots(shards, dir)?);
    }
    Ok(plots)
}
