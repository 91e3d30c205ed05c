//! The `compare` binary's results: rows of medians, ratios against cf, the targets, as
//! markdown and as JSON.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::measure::median;

/// What a row's median means, and which direction is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Seconds per operation; lower is better.
    Latency,
    /// Items per second (`items` per operation); higher is better.
    Throughput,
    /// Bytes moved per second (`items` bytes per operation: twice the payload for a round
    /// trip, once for a copy); higher is better.
    Bandwidth,
    /// The time of the sequential baseline measured in the same workload (`sequential` for
    /// Rust, `py-seq` for Python) over this row's time; higher is better.
    Speedup,
}

impl Metric {
    fn unit(self) -> &'static str {
        match self {
            Metric::Latency => "time/op (lower is better)",
            Metric::Throughput => "items/s (higher is better)",
            Metric::Bandwidth => "bytes/s (higher is better)",
            Metric::Speedup => "speedup over sequential (higher is better)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Metric::Latency => "latency",
            Metric::Throughput => "throughput",
            Metric::Bandwidth => "bandwidth",
            Metric::Speedup => "speedup",
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        [
            Metric::Latency,
            Metric::Throughput,
            Metric::Bandwidth,
            Metric::Speedup,
        ]
        .into_iter()
        .find(|m| m.key() == key)
    }
}

/// One measurement of one contender on one workload.
#[derive(Debug, Clone)]
pub struct Row {
    /// Workload key (`round_trip`, `map_c16`, `echo_1MiB`, `cpu_w2`, ...), shared with Python.
    pub workload: String,
    /// Contender key (`cf-proc`, `rayon`, `py-proc`, ...).
    pub contender: String,
    /// How this contender deviates from the workload as titled (fewer tasks, a window), if at all.
    pub detail: String,
    /// What the median means.
    pub metric: Metric,
    /// Items per operation: tasks, map items, or payload bytes.
    pub items: u64,
    /// Seconds per operation, one per run.
    pub seconds: Vec<f64>,
}

impl Row {
    /// The median seconds per operation.
    #[must_use]
    pub fn median_seconds(&self) -> f64 {
        median(&self.seconds)
    }
}

/// A workload's title in the table.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The key rows refer to.
    pub key: String,
    /// What the table shows.
    pub title: String,
    /// What the median means.
    pub metric: Metric,
}

/// One of the targets, evaluated.
#[derive(Debug, Clone)]
pub struct Target {
    /// What is compared.
    pub name: String,
    /// The goal, e.g. `<= 1.5x`.
    pub goal: String,
    /// The measured value, formatted; `n/a` when a contender is missing.
    pub measured: String,
    /// `Some(true)` met, `Some(false)` not met, `None` not measured.
    pub met: Option<bool>,
}

impl Target {
    /// A ratio `v` with its goal: met when `ok(v)`, not measured when `v` is `None`.
    fn ratio(name: &str, goal: &str, v: Option<f64>, ok: fn(f64) -> bool) -> Self {
        Target {
            name: name.into(),
            goal: goal.into(),
            measured: v.map_or("n/a".into(), |v| format!("{v:.2}x")),
            met: v.map(ok),
        }
    }

    /// A ratio shown for context, with no goal.
    fn context(name: impl Into<String>, v: Option<f64>) -> Self {
        Target {
            name: name.into(),
            goal: "—".into(),
            measured: v.map_or("n/a".into(), |v| format!("{v:.2}x")),
            met: None,
        }
    }
}

/// The resident memory of a pool's idle worker processes.
#[derive(Debug, Clone)]
pub struct Memory {
    /// Contender key (`cf-proc`, `procspawn`, `py-proc`, ...).
    pub contender: String,
    /// How the workers were started, or other context.
    pub detail: String,
    /// `VmRSS` of each worker, in KiB.
    pub kib: Vec<u64>,
}

/// All results of one `compare` run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Workloads in display order.
    pub workloads: Vec<Workload>,
    /// Every measurement.
    pub rows: Vec<Row>,
    /// Idle workers' resident memory, per process pool.
    pub memory: Vec<Memory>,
    /// Facts about the machine and the run, shown above the table.
    pub machine: Vec<(String, String)>,
}

impl Report {
    /// The row of `contender` on `workload`.
    #[must_use]
    pub fn row(&self, workload: &str, contender: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.workload == workload && r.contender == contender)
    }

    /// The figure of merit of `contender` on `workload`, in the workload's metric.
    #[must_use]
    pub fn value(&self, workload: &str, contender: &str) -> Option<f64> {
        let row = self.row(workload, contender)?;
        let m = row.median_seconds();
        Some(match row.metric {
            Metric::Latency => m,
            Metric::Throughput | Metric::Bandwidth => row.items as f64 / m,
            Metric::Speedup => {
                let baseline = if contender.starts_with("py-") {
                    "py-seq"
                } else {
                    "sequential"
                };
                self.row(workload, baseline)?.median_seconds() / m
            }
        })
    }

    /// `a`'s figure of merit over `b`'s on `workload` (both in the workload's metric).
    #[must_use]
    pub fn ratio(&self, workload: &str, a: &str, b: &str) -> Option<f64> {
        Some(self.value(workload, a)? / self.value(workload, b)?)
    }

    /// The targets, each evaluated on this run.
    #[must_use]
    pub fn targets(&self, cores: usize) -> Vec<Target> {
        let mut t = vec![
            Target::ratio(
                "process round trip vs socketpair ping-pong",
                "<= 1.5x",
                self.ratio("round_trip", "cf-proc", "socketpair"),
                |v| v <= 1.5,
            ),
            Target::ratio(
                "process round trip vs CPython process pool",
                "<= 0.25x",
                self.ratio("round_trip", "cf-proc", "py-proc"),
                |v| v <= 0.25,
            ),
            Target::ratio(
                "process submit throughput vs CPython process pool",
                ">= 30x",
                self.ratio("submit_throughput", "cf-proc", "py-proc"),
                |v| v >= 30.0,
            ),
            Target::ratio(
                "process map, chunksize 256, vs CPython process pool",
                ">= 5x",
                self.ratio("map_c256", "cf-proc", "py-proc"),
                |v| v >= 5.0,
            ),
            // A plain `Vec<u8>` is serialized element by element: its goal is procspawn's figure
            // (below), and how it stands against memory speed is shown without one.
            Target::context(
                "context: 16 MiB echo (Vec<u8>, the default) vs memcpy bandwidth (no goal; its goal \
                 is procspawn's figure, below)",
                self.ratio("echo_16MiB", "cf-proc", "memcpy"),
            ),
        ];
        for (contender, what) in [
            ("cf-proc+ByteBuf", "serde_bytes::ByteBuf"),
            ("cf-proc+Buffer", "cf Buffer, shared memory"),
        ] {
            t.push(Target::ratio(
                &format!("16 MiB echo ({what}) vs memcpy bandwidth"),
                ">= 0.30x",
                self.ratio("echo_16MiB", contender, "memcpy"),
                |v| v >= 0.30,
            ));
        }
        // The warm `memcpy` copies the same two buffers again and again, which a cache of twice
        // the payload keeps: there it is the cache's speed. One copy from memory, for context.
        t.push(Target::context(
            "context: 16 MiB echo (serde_bytes::ByteBuf) vs one copy between buffers the cache \
             does not hold (memcpy-uncached; no goal, and no limit: copies in a chain read part \
             of what the previous one left in the cache)",
            self.ratio("echo_16MiB", "cf-proc+ByteBuf", "memcpy-uncached"),
        ));
        t.push(Target::context(
            "context: 16 MiB echo (serde_bytes::ByteBuf) vs its four copies, in one thread into \
             warm buffers (no goal; a transport that copies on one CPU at a time can do at \
             most 1.0x)",
            self.ratio("echo_16MiB", "cf-proc+ByteBuf", "copy-chain"),
        ));
        t.push(Target::ratio(
            "16 MiB echo (serde_bytes::ByteBuf) vs procspawn (Vec<u8>)",
            ">= 3x",
            self.ratio("echo_16MiB", "cf-proc+ByteBuf", "procspawn"),
            |v| v >= 3.0,
        ));
        t.push(Target::ratio(
            "16 MiB echo (Vec<u8>, the default) vs procspawn (Vec<u8>)",
            ">= 1x",
            self.ratio("echo_16MiB", "cf-proc", "procspawn"),
            |v| v >= 1.0,
        ));
        t.push(Target::ratio(
            "process pool start + first result + shutdown vs CPython process pool",
            "<= 0.3x",
            self.ratio("startup", "cf-proc", "py-proc"),
            |v| v <= 0.3,
        ));
        let wide = format!("cpu_w{cores}");
        for pool in ["cf-proc", "cf-thread"] {
            t.push(Target::ratio(
                &format!("CPU-bound speedup, {cores} workers, {pool}"),
                ">= 1.9x",
                self.value(&wide, pool),
                |v| v >= 1.9,
            ));
        }
        let ceiling = self.value(&wide, "ideal-split");
        t.push(Target::context(
            format!(
                "context: what the machine gave this run ({cores} plain threads, an equal share \
                 of the tasks each)"
            ),
            ceiling,
        ));
        t.push(Target::ratio(
            "thread round trip vs rayon spawn + channel",
            "<= 1.0x",
            self.ratio("round_trip", "cf-thread", "rayon"),
            |v| v <= 1.0,
        ));
        t.push(Target::ratio(
            "thread submit throughput vs rayon spawn + channel",
            ">= 1.5x",
            self.ratio("submit_throughput", "cf-thread", "rayon"),
            |v| v >= 1.5,
        ));
        let rate = self.value("submit_throughput", "cf-thread");
        t.push(Target {
            name: "thread submit throughput".into(),
            goal: ">= 3M tasks/s".into(),
            measured: rate.map_or("n/a".into(), |r| format!("{:.2}M tasks/s", r / 1e6)),
            met: rate.map(|r| r >= 3e6),
        });
        let v = self.ratio("submit_throughput", "cf-thread", "py-thread");
        t.push(Target {
            name: "thread submit throughput vs CPython thread pool".into(),
            goal: ">= 50x".into(),
            measured: v.map_or("n/a".into(), |v| format!("{v:.1}x")),
            met: v.map(|v| v >= 50.0),
        });
        t
    }

    /// The results as markdown: machine facts, the table of medians and ratios, the targets.
    #[must_use]
    pub fn markdown(&self, cores: usize) -> String {
        let mut s = String::new();
        for (k, v) in &self.machine {
            let _ = writeln!(s, "- {k}: {v}");
        }
        s.push('\n');
        s.push_str(
            "| workload | contender | median | runs | cf-proc ÷ this | cf-thread ÷ this |\n\
             |---|---|--:|--:|--:|--:|\n",
        );
        for w in &self.workloads {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.workload == w.key).collect();
            for (i, r) in rows.iter().enumerate() {
                let title = if i == 0 {
                    format!("**{}** ({})", w.title, w.metric.unit())
                } else {
                    String::new()
                };
                let name = if r.detail.is_empty() {
                    format!("`{}`", r.contender)
                } else {
                    format!("`{}` ({})", r.contender, r.detail)
                };
                let value = self
                    .value(&w.key, &r.contender)
                    .map_or("n/a".into(), |v| format_value(w.metric, v));
                let ratio = |cf: &str| {
                    if cf == r.contender {
                        return "—".to_owned();
                    }
                    self.ratio(&w.key, cf, &r.contender)
                        .map_or(String::new(), |v| format!("{v:.3}"))
                };
                let _ = writeln!(
                    s,
                    "| {title} | {name} | {value} | {} | {} | {} |",
                    r.seconds.len(),
                    ratio("cf-proc"),
                    ratio("cf-thread")
                );
            }
        }
        if !self.memory.is_empty() {
            s.push_str(
                "\n| idle worker process | resident memory (VmRSS) per worker | workers |\n\
                 |---|--:|--:|\n",
            );
            for m in &self.memory {
                let name = if m.detail.is_empty() {
                    format!("`{}`", m.contender)
                } else {
                    format!("`{}` ({})", m.contender, m.detail)
                };
                let kib = if m.kib.is_empty() {
                    "n/a".to_owned()
                } else {
                    let v: Vec<f64> = m.kib.iter().map(|&k| k as f64).collect();
                    format!("{:.1} MiB", median(&v) / 1024.0)
                };
                let _ = writeln!(s, "| {name} | {kib} | {} |", m.kib.len());
            }
        }
        s.push_str("\n| target | goal | measured | status |\n|---|---|--:|---|\n");
        for t in self.targets(cores) {
            let status = match t.met {
                Some(true) => "met",
                Some(false) => "**not met**",
                None if t.goal == "—" => "",
                None => "not measured",
            };
            let _ = writeln!(s, "| {} | {} | {} | {status} |", t.name, t.goal, t.measured);
        }
        s
    }

    /// Reads back what [`json`](Self::json) wrote (targets are recomputed, not read).
    ///
    /// # Errors
    ///
    /// A field is missing or has the wrong type.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        fn field<'a>(v: &'a Value, k: &str) -> Result<&'a Value, String> {
            v.get(k).ok_or_else(|| format!("no `{k}` in {v}"))
        }
        fn text(v: &Value, k: &str) -> Result<String, String> {
            field(v, k)?
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("`{k}` is not a string"))
        }
        fn list<'a>(v: &'a Value, k: &str) -> Result<&'a Vec<Value>, String> {
            field(v, k)?
                .as_array()
                .ok_or_else(|| format!("`{k}` is not a list"))
        }
        fn metric(v: &Value) -> Result<Metric, String> {
            let key = text(v, "metric")?;
            Metric::from_key(&key).ok_or_else(|| format!("unknown metric `{key}`"))
        }
        let mut report = Report::default();
        if let Some(m) = v.get("machine").and_then(Value::as_object) {
            for (k, val) in m {
                report
                    .machine
                    .push((k.clone(), val.as_str().unwrap_or_default().to_owned()));
            }
        }
        for w in list(v, "workloads")? {
            report.workloads.push(Workload {
                key: text(w, "key")?,
                title: text(w, "title")?,
                metric: metric(w)?,
            });
        }
        for r in list(v, "rows")? {
            report.rows.push(Row {
                workload: text(r, "workload")?,
                contender: text(r, "contender")?,
                detail: text(r, "detail")?,
                metric: metric(r)?,
                items: field(r, "items")?
                    .as_u64()
                    .ok_or("`items` is not a count")?,
                seconds: list(r, "seconds")?
                    .iter()
                    .map(|s| s.as_f64().ok_or("a sample is not a number"))
                    .collect::<Result<_, _>>()?,
            });
        }
        for m in v
            .get("memory")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            report.memory.push(Memory {
                contender: text(m, "contender")?,
                detail: text(m, "detail")?,
                kib: list(m, "vm_rss_kib")?
                    .iter()
                    .map(|k| k.as_u64().ok_or("a size is not a count"))
                    .collect::<Result<_, _>>()?,
            });
        }
        Ok(report)
    }

    /// The same results as JSON, with every sample.
    #[must_use]
    pub fn json(&self, cores: usize) -> Value {
        let machine: serde_json::Map<String, Value> = self
            .machine
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "workload": r.workload,
                    "contender": r.contender,
                    "detail": r.detail,
                    "metric": r.metric.key(),
                    "items": r.items,
                    "runs": r.seconds.len(),
                    "median_seconds": r.median_seconds(),
                    "value": self.value(&r.workload, &r.contender),
                    "cf_proc_ratio": self.ratio(&r.workload, "cf-proc", &r.contender),
                    "cf_thread_ratio": self.ratio(&r.workload, "cf-thread", &r.contender),
                    "seconds": r.seconds,
                })
            })
            .collect();
        let workloads: Vec<Value> = self
            .workloads
            .iter()
            .map(|w| json!({"key": w.key, "title": w.title, "metric": w.metric.key()}))
            .collect();
        let targets: Vec<Value> = self
            .targets(cores)
            .into_iter()
            .map(
                |t| json!({"target": t.name, "goal": t.goal, "measured": t.measured, "met": t.met}),
            )
            .collect();
        let memory: Vec<Value> = self
            .memory
            .iter()
            .map(|m| json!({"contender": m.contender, "detail": m.detail, "vm_rss_kib": m.kib}))
            .collect();
        json!({
            "machine": machine,
            "workloads": workloads,
            "rows": rows,
            "memory": memory,
            "targets": targets,
        })
    }
}

/// A figure of merit with a readable unit.
#[must_use]
pub fn format_value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::Latency => format_seconds(v),
        Metric::Throughput => format_rate(v, "/s"),
        Metric::Bandwidth => {
            if v >= f64::from(1u32 << 30) {
                format!("{:.2} GiB/s", v / f64::from(1u32 << 30))
            } else {
                format!("{:.1} MiB/s", v / f64::from(1u32 << 20))
            }
        }
        Metric::Speedup => format!("{v:.2}x"),
    }
}

fn format_seconds(s: f64) -> String {
    if s < 1e-6 {
        format!("{:.1} ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.2} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn format_rate(v: f64, unit: &str) -> String {
    if v >= 1e9 {
        format!("{:.2} G{unit}", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M{unit}", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k{unit}", v / 1e3)
    } else {
        format!("{v:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, contender: &str, metric: Metric, items: u64, s: f64) -> Row {
        Row {
            workload: workload.into(),
            contender: contender.into(),
            detail: String::new(),
            metric,
            items,
            seconds: vec![s, s * 2.0, s / 2.0],
        }
    }

    #[test]
    fn ratios_follow_each_metric() {
        let report = Report {
            workloads: vec![],
            rows: vec![
                row("round_trip", "cf-proc", Metric::Latency, 1, 10e-6),
                row("round_trip", "py-proc", Metric::Latency, 1, 100e-6),
                row(
                    "submit_throughput",
                    "cf-proc",
                    Metric::Throughput,
                    1000,
                    1e-3,
                ),
                row(
                    "submit_throughput",
                    "py-proc",
                    Metric::Throughput,
                    1000,
                    50e-3,
                ),
                row("cpu_w2", "sequential", Metric::Speedup, 8, 2.0),
                row("cpu_w2", "cf-proc", Metric::Speedup, 8, 1.0),
            ],
            machine: vec![],
            memory: vec![Memory {
                contender: "cf-proc".into(),
                detail: String::new(),
                kib: vec![3072, 2048, 4096],
            }],
        };
        let r = report.ratio("round_trip", "cf-proc", "py-proc").unwrap();
        assert!((r - 0.1).abs() < 1e-9);
        let t = report
            .ratio("submit_throughput", "cf-proc", "py-proc")
            .unwrap();
        assert!((t - 50.0).abs() < 1e-9);
        assert!((report.value("cpu_w2", "cf-proc").unwrap() - 2.0).abs() < 1e-9);
        let targets = report.targets(2);
        assert_eq!(targets[1].met, Some(true));
        assert_eq!(targets[2].met, Some(true));
        assert_eq!(targets[0].met, None);
        let back = Report::from_json(&report.json(2)).expect("its own JSON");
        assert_eq!(back.markdown(2), report.markdown(2));
        let md = report.markdown(2);
        assert!(md.contains("| process round trip vs CPython"));
        assert!(md.contains("| `cf-proc` | 3.0 MiB | 3 |"), "{md}");
    }

    #[test]
    fn values_are_formatted_with_units() {
        assert_eq!(format_value(Metric::Latency, 12.5e-6), "12.50 µs");
        assert_eq!(format_value(Metric::Throughput, 3.2e6), "3.20 M/s");
        assert_eq!(
            format_value(Metric::Bandwidth, 2.0 * 1073741824.0),
            "2.00 GiB/s"
        );
        assert_eq!(format_value(Metric::Speedup, 1.95), "1.95x");
    }
}
