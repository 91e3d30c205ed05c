//! An SVG chart of one `compare` run: for each peer, how many times faster (or smaller) cf is,
//! on a log scale centred on 1x. Hand-built (a few hundred lines of text, no plotting crate):
//! horizontal bars are all it needs.

use std::fmt::Write as _;

use crate::report::{Metric, Report};

/// The workloads the chart shows, with their short titles. Others stay in the table.
const SECTIONS: [(&str, &str); 7] = [
    (
        "round_trip",
        "round trip: submit one task, wait for its result",
    ),
    (
        "submit_throughput",
        "submit throughput: 20 000 tasks, as_completed",
    ),
    ("map_c1", "map, chunksize 1"),
    ("map_c256", "map, chunksize 256"),
    ("echo_16MiB", "echo a 16 MiB byte string"),
    ("startup", "pool start + first result + shutdown"),
    ("cpu_w", "CPU-bound, all workers"),
];

/// Contenders that are not peers: the machine's limits, drawn grey.
const LIMITS: [&str; 7] = [
    "socketpair",
    "shm-futex",
    "shm-spin",
    "thread-pingpong",
    "memcpy",
    "copy-chain",
    "ideal-split",
];

/// Rows left out: the plain call (no pool at all), the variants of cf itself, and a copy from
/// memory (context in the tables, but neither a peer nor a limit of an echo).
fn skipped(contender: &str) -> bool {
    contender.starts_with("cf-")
        || contender == "sequential"
        || contender == "py-seq"
        || contender == "memcpy-uncached"
}

/// Which cf pool a contender is held against: thread pools against `cf-thread`, everything
/// that crosses a process boundary against `cf-proc` (with byte strings, `cf-proc+ByteBuf`:
/// what a user sends bytes as).
fn counterpart(workload: &str, contender: &str) -> &'static str {
    const THREADS: [&str; 6] = [
        "rayon",
        "tokio",
        "futures-pool",
        "std::thread",
        "py-thread",
        "thread-pingpong",
    ];
    if THREADS.contains(&contender) || (workload.starts_with("cpu_w") && contender == "ideal-split")
    {
        "cf-thread"
    } else if workload.starts_with("echo_") {
        "cf-proc+ByteBuf"
    } else {
        "cf-proc"
    }
}

/// One bar: cf's advantage over a contender (above 1: cf is faster or smaller).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// The contender.
    pub contender: String,
    /// The cf contender it is held against.
    pub cf: String,
    /// cf's figure of merit over the contender's, turned so that above 1 means cf is better.
    pub advantage: f64,
    /// A machine limit rather than a peer.
    pub limit: bool,
}

/// The bars of each charted workload, in display order (workloads absent from the run are
/// left out).
#[must_use]
pub fn sections(report: &Report) -> Vec<(String, Vec<Bar>)> {
    let mut out = Vec::new();
    for (key, title) in SECTIONS {
        let Some(w) = report.workloads.iter().find(|w| {
            if key == "cpu_w" {
                // The widest CPU-bound group: every worker busy.
                report
                    .workloads
                    .iter()
                    .rfind(|w| w.key.starts_with("cpu_w"))
                    .is_some_and(|last| last.key == w.key)
            } else {
                w.key == key
            }
        }) else {
            continue;
        };
        let mut bars = Vec::new();
        for r in report.rows.iter().filter(|r| r.workload == w.key) {
            if skipped(&r.contender) {
                continue;
            }
            let cf = counterpart(&w.key, &r.contender);
            if w.key.starts_with("echo_") && cf == "cf-thread" {
                // A thread pool moves a pointer, not the bytes: nothing to compare.
                continue;
            }
            let Some(ratio) = report.ratio(&w.key, cf, &r.contender) else {
                continue;
            };
            let advantage = if w.metric == Metric::Latency {
                1.0 / ratio
            } else {
                ratio
            };
            bars.push(Bar {
                contender: r.contender.clone(),
                cf: cf.to_owned(),
                advantage,
                limit: LIMITS.contains(&r.contender.as_str()),
            });
        }
        if !bars.is_empty() {
            out.push((title.to_owned(), bars));
        }
    }
    if let Some(cf) = report.memory.iter().find(|m| m.contender == "cf-proc") {
        let cf_kib = median_kib(&cf.kib);
        let bars: Vec<Bar> = report
            .memory
            .iter()
            .filter(|m| m.contender != "cf-proc")
            .filter_map(|m| {
                Some(Bar {
                    contender: m.contender.clone(),
                    cf: "cf-proc".into(),
                    advantage: median_kib(&m.kib)? / cf_kib?,
                    limit: false,
                })
            })
            .collect();
        if !bars.is_empty() {
            out.push(("idle worker's resident memory".to_owned(), bars));
        }
    }
    out
}

fn median_kib(kib: &[u64]) -> Option<f64> {
    if kib.is_empty() {
        return None;
    }
    let v: Vec<f64> = kib.iter().map(|&k| k as f64).collect();
    Some(crate::measure::median(&v))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A ratio with two or three significant digits (`1793x`, `22.0x`, `0.46x`, `0.0042x`).
fn format_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else if r >= 0.1 || r <= 0.0 {
        format!("{r:.2}x")
    } else {
        let decimals = (-r.log10()).ceil() as usize + 1;
        format!("{r:.decimals$}x")
    }
}

/// A grid line's label: `0.01x`, `1x`, `100x`.
fn format_power(e: i32) -> String {
    if e < 0 {
        format!("{:.*}x", e.unsigned_abs() as usize, 10f64.powi(e))
    } else {
        format!("{}x", 10u64.pow(e.unsigned_abs()))
    }
}

/// The chart as an SVG document. `subtitle` says which run it shows (a line each).
#[must_use]
pub fn svg(report: &Report, subtitle: &[String]) -> String {
    let sections = sections(report);
    let (width, label_w, right_pad) = (960.0_f64, 330.0_f64, 70.0_f64);
    let (bar_h, row_h, head_h) = (14.0_f64, 19.0_f64, 28.0_f64);
    let legend_y = 56.0 + 17.0 * subtitle.len() as f64;
    let top = legend_y + 50.0;
    // Powers of ten around every value, 1x always included.
    let all = sections.iter().flat_map(|(_, b)| b).map(|b| b.advantage);
    let (lo, hi) = all.fold((1.0_f64, 1.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo_exp = lo.log10().floor().max(-4.0) as i32;
    let hi_exp = hi.log10().ceil().min(5.0).max(lo_exp as f64 + 1.0) as i32;
    let x0 = label_w + 10.0;
    let x1 = width - right_pad;
    let x = |v: f64| {
        let e = v.max(10f64.powi(lo_exp)).min(10f64.powi(hi_exp)).log10();
        x0 + (e - f64::from(lo_exp)) / f64::from(hi_exp - lo_exp) * (x1 - x0)
    };
    let rows: usize = sections.iter().map(|(_, b)| b.len()).sum();
    let height = top + 8.0 + sections.len() as f64 * head_h + rows as f64 * row_h + 30.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" \
         font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n\
         <text x=\"16\" y=\"26\" font-size=\"17\" font-weight=\"bold\">cf against its peers: \
         how many times faster (or smaller) cf is</text>"
    );
    for (i, line) in subtitle.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"16\" y=\"{}\" fill=\"#555\">{}</text>",
            46.0 + 17.0 * i as f64,
            escape(line)
        );
    }
    // Legend.
    let legend = [
        ("#2a9d8f", "cf ahead"),
        ("#e76f51", "peer ahead"),
        ("#9aa5b1", "a machine limit (a floor, not a peer)"),
    ];
    let mut lx = 16.0;
    for (color, text) in legend {
        let _ = writeln!(
            s,
            "<rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\">{text}</text>",
            legend_y - 11.0,
            lx + 17.0,
            legend_y,
        );
        lx += 30.0 + 7.0 * text.len() as f64;
    }
    let _ = writeln!(
        s,
        "<text x=\"16\" y=\"{}\" fill=\"#555\">Each bar: cf's figure over the peer's (time, rate, \
         speed-up or memory), turned so that right of 1x means cf is better; log scale.</text>\n\
         <text x=\"16\" y=\"{}\" fill=\"#555\">Thread pools are held against cf-thread, \
         everything that crosses a process boundary against cf-proc.</text>",
        legend_y + 20.0,
        legend_y + 37.0,
    );
    // Grid and axis labels.
    let grid_bottom = height - 26.0;
    for e in lo_exp..=hi_exp {
        let gx = x(10f64.powi(e));
        let (stroke, w) = if e == 0 { ("#333", 1.5) } else { ("#ddd", 1.0) };
        let label = format_power(e);
        let _ = writeln!(
            s,
            "<line x1=\"{gx:.1}\" y1=\"{top}\" x2=\"{gx:.1}\" y2=\"{grid_bottom}\" stroke=\"{stroke}\" \
             stroke-width=\"{w}\"/>\n<text x=\"{gx:.1}\" y=\"{}\" text-anchor=\"middle\" \
             fill=\"#555\">{label}</text>\n<text x=\"{gx:.1}\" y=\"{}\" text-anchor=\"middle\" \
             fill=\"#555\">{label}</text>",
            grid_bottom + 15.0,
            top + 10.0,
        );
    }
    let mut y = top;
    for (title, bars) in &sections {
        y += head_h + if y == top { 8.0 } else { 0.0 };
        let _ = writeln!(
            s,
            "<text x=\"16\" y=\"{:.1}\" font-weight=\"bold\" font-size=\"13\">{}</text>",
            y - 8.0,
            escape(title)
        );
        for b in bars {
            let color = if b.limit {
                "#9aa5b1"
            } else if b.advantage >= 1.0 {
                "#2a9d8f"
            } else {
                "#e76f51"
            };
            let (a, c) = (x(1.0), x(b.advantage));
            let (bx, bw) = if c >= a { (a, c - a) } else { (c, a - c) };
            let label = format!("{} vs {}", b.contender, b.cf);
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
                 <rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>",
                label_w,
                y + bar_h - 3.0,
                escape(&label),
                y,
                bw.max(1.0),
            );
            // Left of 1x the figure goes just right of the axis, clear of the labels.
            let tx = if c >= a { c + 4.0 } else { a + 4.0 };
            let anchor = "start";
            let _ = writeln!(
                s,
                "<text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"#222\">{}</text>",
                y + bar_h - 3.0,
                format_ratio(b.advantage)
            );
            y += row_h;
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Memory, Row, Workload};

    fn row(workload: &str, contender: &str, metric: Metric, s: f64) -> Row {
        Row {
            workload: workload.into(),
            contender: contender.into(),
            detail: String::new(),
            metric,
            items: 1,
            seconds: vec![s],
        }
    }

    #[test]
    fn bars_say_how_many_times_cf_is_ahead() {
        let report = Report {
            workloads: vec![Workload {
                key: "round_trip".into(),
                title: "round trip".into(),
                metric: Metric::Latency,
            }],
            rows: vec![
                row("round_trip", "cf-proc", Metric::Latency, 10e-6),
                row("round_trip", "cf-thread", Metric::Latency, 1e-6),
                row("round_trip", "py-proc", Metric::Latency, 200e-6),
                row("round_trip", "rayon", Metric::Latency, 0.5e-6),
                row("round_trip", "socketpair", Metric::Latency, 20e-6),
                row("round_trip", "sequential", Metric::Latency, 1e-9),
            ],
            memory: vec![
                Memory {
                    contender: "cf-proc".into(),
                    detail: String::new(),
                    kib: vec![3000],
                },
                Memory {
                    contender: "py-proc".into(),
                    detail: String::new(),
                    kib: vec![18000, 19000, 20000],
                },
            ],
            machine: vec![],
        };
        let sections = sections(&report);
        assert_eq!(sections.len(), 2);
        let bars = &sections[0].1;
        assert_eq!(bars.len(), 3, "no cf rows, no plain call");
        assert_eq!(bars[0].contender, "py-proc");
        assert!((bars[0].advantage - 20.0).abs() < 1e-9);
        assert_eq!(bars[1].cf, "cf-thread");
        assert!((bars[1].advantage - 0.5).abs() < 1e-9);
        assert!(bars[2].limit);
        assert!((sections[1].1[0].advantage - 19000.0 / 3000.0).abs() < 1e-9);

        let svg = svg(&report, &["a <test> run".to_owned()]);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;test&gt; run"));
        assert!(svg.contains(">20.0x<") && svg.contains(">0.50x<"));
        assert_eq!(format_ratio(0.0042), "0.0042x");
        assert_eq!(format_ratio(1793.2), "1793x");
        assert_eq!(format_power(-2), "0.01x");
        assert_eq!(format_power(3), "1000x");
        assert_eq!(
            svg.matches("<rect").count(),
            1 + 3 + 4,
            "background, legend, bars"
        );
    }
}
