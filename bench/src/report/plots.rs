//! The report's plots, drawn with plotters' SVG back end into strings that
//! are inlined in the HTML (no files, no network, no fonts to load).
//!
//! Every plot takes series already reduced to numbers; the colour of a
//! contestant is fixed for the whole report (its index in the legend).

use super::analysis::Spread;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

const SIZE: (u32, u32) = (640, 360);

/// A contestant's colour.
pub fn colour(i: usize) -> RGBColor {
    const P: [(u8, u8, u8); 12] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
        (0, 0, 0),
        (255, 200, 0),
    ];
    let (r, g, b) = P[i % P.len()];
    RGBColor(r, g, b)
}

/// One contestant's values over categorical x positions, with spread.
pub struct CatSeries {
    /// The contestant (labels the bars when there is one load level).
    pub name: String,
    /// Colour index.
    pub colour: usize,
    /// One value per x position (`None`: not measured there).
    pub values: Vec<Option<Spread>>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A line per contestant over categorical x (load levels), each point with
/// a min–max error bar over repetitions.
pub fn categorical(
    x_labels: &[String],
    x_desc: &str,
    y_desc: &str,
    series: &[CatSeries],
) -> Result<String, String> {
    if x_labels.len() == 1 {
        return bars(&x_labels[0], y_desc, series);
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let y_max = series
            .iter()
            .flat_map(|s| s.values.iter().flatten().map(|v| v.max))
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.1;
        let n = x_labels.len().max(1) as i32;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n).into_segmented(), 0.0..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(x_labels.len().max(1))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    x_labels.get(*i as usize).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .y_label_formatter(&|v| short(*v))
            .draw()
            .map_err(err)?;
        for s in series {
            let c = colour(s.colour);
            let points: Vec<(SegmentValue<i32>, f64)> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (SegmentValue::CenterOf(i as i32), v.mean)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(err)?;
            chart
                .draw_series(points.iter().map(|p| Circle::new(p.clone(), 3, c.filled())))
                .map_err(err)?;
            chart
                .draw_series(s.values.iter().enumerate().filter_map(|(i, v)| {
                    v.filter(|v| v.n > 1).map(|v| {
                        ErrorBar::new_vertical(
                            SegmentValue::CenterOf(i as i32),
                            v.min,
                            v.mean,
                            v.max,
                            c.stroke_width(1),
                            8,
                        )
                    })
                }))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One load level: a bar per contestant (named under it), with its min–max
/// over repetitions; a line over a single category would be unreadable
/// dots stacked on each other.
fn bars(level: &str, y_desc: &str, series: &[CatSeries]) -> Result<String, String> {
    let shown: Vec<(&CatSeries, Spread)> = series
        .iter()
        .filter_map(|s| s.values.first().copied().flatten().map(|v| (s, v)))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let x_max = shown
            .iter()
            .map(|(_, v)| v.max)
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.1;
        let n = shown.len().max(1) as i32;
        // Horizontal bars: the contestants' names fit on the y axis.
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(140)
            .build_cartesian_2d(0.0..x_max, (0..n).into_segmented())
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(format!("{y_desc}, at {level}"))
            .y_labels(shown.len().max(1))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => shown
                    .get(*i as usize)
                    .map(|(s, _)| s.name.clone())
                    .unwrap_or_default(),
                SegmentValue::Last => String::new(),
            })
            .x_label_formatter(&|v| short(*v))
            .draw()
            .map_err(err)?;
        for (i, (s, v)) in shown.iter().enumerate() {
            let c = colour(s.colour);
            let i = i as i32;
            chart
                .draw_series(std::iter::once(
                    Rectangle::new(
                        [
                            (0.0, SegmentValue::Exact(i)),
                            (v.mean, SegmentValue::Exact(i + 1)),
                        ],
                        c.mix(0.8).filled(),
                    )
                    .into_dyn(),
                ))
                .map_err(err)?;
            if v.n > 1 {
                chart
                    .draw_series(std::iter::once(ErrorBar::new_horizontal(
                        SegmentValue::CenterOf(i),
                        v.min,
                        v.mean,
                        v.max,
                        BLACK.stroke_width(1),
                        8,
                    )))
                    .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One contestant's latency spectrum: per percentile, the spread over
/// repetitions of the latency in ms.
pub struct Spectrum {
    /// Colour index.
    pub colour: usize,
    /// (percentile, latency spread) pairs, percentiles ascending.
    pub points: Vec<(f64, Spread)>,
}

/// Latency percentile spectra on a log "nines" axis: x = 1/(1-p), so 90 %,
/// 99 %, 99.9 % are evenly spaced; y (ms) is logarithmic too. A shaded
/// band shows the min–max over repetitions.
pub fn spectrum(series: &[Spectrum], objective: Option<(f64, f64)>) -> Result<String, String> {
    let x_of = |p: f64| 1.0 / (1.0 - (p / 100.0).min(0.999_999));
    let all: Vec<(f64, f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().map(move |(p, v)| (x_of(*p), v.min, v.max)))
        .filter(|a| a.0.is_finite() && a.1.is_finite() && a.2.is_finite())
        .collect();
    if all.is_empty() {
        // Nothing measured (every run failed): an empty frame, not an
        // unbounded axis.
        return curves(&[], "percentile", "latency, ms", false);
    }
    let x_max = all.iter().map(|a| a.0).fold(10.0f64, f64::max);
    let y_min = all
        .iter()
        .map(|a| a.1)
        .fold(f64::INFINITY, f64::min)
        .max(0.001);
    let y_max = all
        .iter()
        .map(|a| a.2)
        .fold(0.0f64, f64::max)
        .max(y_min * 10.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (1.0..x_max * 1.05).log_scale(),
                (y_min * 0.8..y_max * 1.25).log_scale(),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("percentile (log scale of 1/(1-p))")
            .y_desc("latency, ms (log)")
            .x_label_formatter(&|x| nines(*x))
            .y_label_formatter(&|v| short(*v))
            .draw()
            .map_err(err)?;
        if let Some((p, ms)) = objective {
            let x = x_of(p);
            let red = RGBColor(200, 0, 0);
            chart
                .draw_series(std::iter::once(Circle::new(
                    (x, ms),
                    6,
                    red.stroke_width(2),
                )))
                .map_err(err)?;
        }
        for s in series {
            let c = colour(s.colour);
            let band: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|(p, v)| (x_of(*p), v.max.max(y_min)))
                .chain(
                    s.points
                        .iter()
                        .rev()
                        .map(|(p, v)| (x_of(*p), v.min.max(y_min))),
                )
                .collect();
            if s.points.iter().any(|(_, v)| v.n > 1) {
                chart
                    .draw_series(std::iter::once(Polygon::new(band, c.mix(0.15).filled())))
                    .map_err(err)?;
            }
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|(p, v)| (x_of(*p), v.mean.max(y_min))),
                    c.stroke_width(2),
                ))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One contestant's curve over a numeric x.
pub struct Curve {
    /// Colour index.
    pub colour: usize,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

/// Plain curves over a numeric x: latency over time, or auto steps
/// (offered vs achieved). `log_x` uses a log scale for x.
pub fn curves(curves: &[Curve], x_desc: &str, y_desc: &str, log_x: bool) -> Result<String, String> {
    let pts = || curves.iter().flat_map(|c| c.points.iter().copied());
    let x_min = pts().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x_min = if x_min.is_finite() { x_min } else { 0.0 };
    let x_max = pts().map(|p| p.0).fold(x_min + 1.0, f64::max);
    let y_max = pts().map(|p| p.1).fold(0.0f64, f64::max).max(1e-6) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let builder = |root| {
            let mut b = ChartBuilder::on(root);
            b.margin(12).x_label_area_size(40).y_label_area_size(70);
            b
        };
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(x_desc)
                    .y_desc(y_desc)
                    .x_labels(if log_x { 5 } else { 10 })
                    .x_label_formatter(&|v| short(*v))
                    .y_label_formatter(&|v| short(*v))
                    .draw()
                    .map_err(err)?;
                for c in curves {
                    let col = colour(c.colour);
                    chart
                        .draw_series(LineSeries::new(c.points.clone(), col.stroke_width(2)))
                        .map_err(err)?;
                    chart
                        .draw_series(c.points.iter().map(|p| Circle::new(*p, 2, col.filled())))
                        .map_err(err)?;
                }
            }};
        }
        if log_x {
            let lo = x_min.max(1e-3);
            draw!(builder(&root)
                .build_cartesian_2d((lo * 0.9..x_max * 1.1).log_scale(), 0.0..y_max)
                .map_err(err)?);
        } else {
            draw!(builder(&root)
                .build_cartesian_2d(x_min..x_max, 0.0..y_max)
                .map_err(err)?);
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One contestant's capacity curve: every step of its capacity search.
pub struct CapacityCurve {
    /// Colour index.
    pub colour: usize,
    /// Per step, in the order of offered rate: (achieved req/s, p50 ms,
    /// p99 ms, sustainable).
    pub steps: Vec<(f64, f64, f64, bool)>,
    /// Achieved req/s at the bracket's ends (last sustainable, first
    /// unsustainable), where the search found them.
    pub bracket: (Option<f64>, Option<f64>),
}

/// The capacity curve people draw for this question: latency (p50 thin,
/// p99 thick; log scale) against achieved throughput, every step of every
/// contestant; filled dots met the objective, hollow ones did not; the
/// bracket's ends are marked with a vertical tick; the objective is the
/// red line.
pub fn capacity(curves: &[CapacityCurve], objective_ms: f64) -> Result<String, String> {
    let pts = || curves.iter().flat_map(|c| c.steps.iter().copied());
    let x_max = pts().map(|p| p.0).fold(1.0f64, f64::max) * 1.05;
    let y_lo = pts()
        .map(|p| p.1)
        .filter(|v| *v > 0.0)
        .fold(objective_ms, f64::min)
        .max(1e-3)
        * 0.7;
    let y_hi = pts()
        .map(|p| p.2)
        .fold(objective_ms, f64::max)
        .max(y_lo * 10.0)
        * 1.5;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, (y_lo..y_hi).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("achieved req/s")
            .y_desc("latency, ms (p50 thin, p99 thick)")
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v))
            .draw()
            .map_err(err)?;
        let red = RGBColor(214, 39, 40);
        chart
            .draw_series(LineSeries::new(
                [(0.0, objective_ms), (x_max, objective_ms)],
                red.stroke_width(1),
            ))
            .map_err(err)?;
        for c in curves {
            let col = colour(c.colour);
            let clamp = |v: f64| v.clamp(y_lo, y_hi);
            for (width, pick) in [(1u32, 1usize), (3, 2)] {
                let line: Vec<(f64, f64)> = c
                    .steps
                    .iter()
                    .map(|s| (s.0, clamp(if pick == 1 { s.1 } else { s.2 })))
                    .collect();
                chart
                    .draw_series(LineSeries::new(line, col.stroke_width(width)))
                    .map_err(err)?;
            }
            chart
                .draw_series(c.steps.iter().map(|s| {
                    let style = if s.3 {
                        col.filled()
                    } else {
                        col.stroke_width(1)
                    };
                    Circle::new((s.0, clamp(s.2)), 4, style)
                }))
                .map_err(err)?;
            for x in [c.bracket.0, c.bracket.1].into_iter().flatten() {
                chart
                    .draw_series(LineSeries::new(
                        [(x, y_lo), (x, y_lo * 3.0)],
                        col.stroke_width(3),
                    ))
                    .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// `1.5k`, `20`, `0.35`: compact axis labels.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The percentile at x = 1/(1-p): 1 → 0 %, 10 → 90 %, 1000 → 99.9 %.
pub fn nines(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x.max(1.0));
    let text = format!("{p:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_labels() {
        assert_eq!(nines(1.0), "0%");
        assert_eq!(nines(10.0), "90%");
        assert_eq!(nines(100.0), "99%");
        assert_eq!(nines(1000.0), "99.9%");
    }
}

#[cfg(test)]
mod edge_cases {
    use super::*;

    #[test]
    fn plots_without_data_are_empty_frames() {
        // Regression: an empty spectrum once made an infinite log axis
        // (and the runner ran out of memory drawing it).
        assert!(spectrum(&[], Some((99.0, 10.0))).unwrap().contains("<svg"));
        let empty = Spectrum {
            colour: 0,
            points: Vec::new(),
        };
        assert!(spectrum(&[empty], None).unwrap().contains("<svg"));
        assert!(curves(&[], "x", "y", true).unwrap().contains("<svg"));
        assert!(categorical(&[], "x", "y", &[]).unwrap().contains("<svg"));
        let none = CatSeries {
            name: "x".into(),
            colour: 1,
            values: vec![None, None],
        };
        assert!(categorical(&["a".into(), "b".into()], "x", "y", &[none])
            .unwrap()
            .contains("<svg"));
    }

    #[test]
    fn narrow_and_single_point_ranges_draw() {
        let s = |v: f64| Spread {
            mean: v,
            min: v,
            max: v,
            n: 1,
        };
        let one = Spectrum {
            colour: 0,
            points: vec![(0.0, s(5.0))],
        };
        assert!(spectrum(&[one], Some((99.0, 100.0))).is_ok());
        let flat = Curve {
            colour: 0,
            points: vec![(1.0, 0.0)],
        };
        assert!(curves(&[flat], "s", "ms", false).is_ok());
    }
}

/// A stretch of time shaded on a timeline, seconds into the window.
pub struct Span {
    pub start_s: f64,
    pub end_s: f64,
    /// `copy`, `pause` or `fetch` (each its own shade).
    pub label: String,
}

/// The failover timeline of one run: answers and errors per second (left
/// axis) and p99 latency (right axis) per interval, with a vertical mark
/// and label at each `(time, label)` (events, the dispatcher's reactions),
/// and each span shaded and labelled (a migration's phases).
pub fn failover(
    timeline: &[crate::results::TimePoint],
    marks: &[(f64, String)],
    spans: &[Span],
) -> Result<String, String> {
    if timeline.is_empty() {
        return Err("no intervals were recorded".into());
    }
    let mut errors = Vec::new();
    let mut before = 0.0;
    for p in timeline {
        let length = (p.t_s - before).max(1e-3);
        errors.push((p.t_s, p.errors as f64 / length));
        before = p.t_s;
    }
    let answers: Vec<(f64, f64)> = timeline.iter().map(|p| (p.t_s, p.rps)).collect();
    let p99: Vec<(f64, f64)> = timeline.iter().map(|p| (p.t_s, p.p99_ms)).collect();
    let x_max = timeline.last().map_or(1.0, |p| p.t_s).max(1e-3);
    let y_max = answers
        .iter()
        .chain(&errors)
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let p99_max = p99.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-3) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(err)?
            .set_secondary_coord(0.0..x_max, 0.0..p99_max);
        chart
            .configure_mesh()
            .x_desc("seconds into the measured window")
            .y_desc("per second")
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v))
            .draw()
            .map_err(err)?;
        chart
            .configure_secondary_axes()
            .y_desc("p99 ms")
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        // Shaded first, so that the lines stay on top.
        for (i, span) in spans.iter().enumerate() {
            let shade = match span.label.as_str() {
                "pause" => RGBColor(230, 120, 60),
                "fetch" => RGBColor(140, 90, 200),
                _ => RGBColor(90, 170, 90),
            };
            let end = span.end_s.max(span.start_s + x_max * 0.002);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(span.start_s, 0.0), (end, y_max)],
                    shade.mix(0.25).filled(),
                )))
                .map_err(err)?;
            let y = y_max * (0.05 + 0.05 * (i % 3) as f64);
            chart
                .draw_series(std::iter::once(Text::new(
                    span.label.clone(),
                    (span.start_s, y),
                    ("sans-serif", 11).into_font(),
                )))
                .map_err(err)?;
        }
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_secondary_series(LineSeries::new(p99, grey.stroke_width(1)))
            .map_err(err)?;
        for (points, col) in [(answers, colour(0)), (errors, colour(3))] {
            chart
                .draw_series(LineSeries::new(points, col.stroke_width(2)))
                .map_err(err)?;
        }
        for (i, (t, label)) in marks.iter().enumerate() {
            chart
                .draw_series(LineSeries::new(
                    [(*t, 0.0), (*t, y_max)],
                    BLACK.mix(0.5).stroke_width(1),
                ))
                .map_err(err)?;
            // Labels step down so that marks close in time stay readable.
            let y = y_max * (0.97 - 0.07 * (i % 6) as f64);
            chart
                .draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (*t, y),
                    ("sans-serif", 11).into_font(),
                )))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}
