//! `compare`: cf's two pools, their Rust peers (rayon, tokio's `spawn_blocking`, the futures
//! crate's `ThreadPool`, procspawn, ipc-channel, `std::thread`, sequential), the machine's limits
//! (socketpair and shared-memory ping-pongs, `memcpy`), CPython's `concurrent.futures` (and loky
//! and pebble when installed), on the same workloads in one run, and each idle worker process's
//! resident memory. Prints a markdown table of medians with the ratios cf/peer and the issues'
//! targets; `--json PATH` writes the same with every sample.
//!
//! ```text
//! cargo run --release -p cf-benches --bin compare -- [--runs N] [--sample-ms MS] [--json PATH]
//!                                                     [--no-python] [--python-script PATH]
//!                                                     [--only PREFIX,...]
//! ```
//!
//! `--only` measures just the workloads whose key starts with one of the prefixes (`memory`,
//! `round_trip`, `submit_throughput`, `map_c`, `echo_`, `cpu_`, `startup`); for iterating on one
//! of them.
//!
//! A full run also draws the chart of cf against each peer, `benches/compare.svg` (the one the
//! READMEs show); `--svg PATH` writes it elsewhere (also for a run with `--only`), `--no-svg`
//! not at all. `--chart-from RUN.json --svg PATH` draws the chart of an earlier run saved with
//! `--json`, measuring nothing.
//!
//! Contenders of one workload are sampled round-robin (run 1 of each, then run 2 of each, ...),
//! so a burst of load from elsewhere on the machine hits them alike rather than one of them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cf_benches::ipc::IpcPingPong;
use cf_benches::measure::Sampler;
use cf_benches::peers::{self, Rayon};
use cf_benches::physical::{self, Message, PingPong, ThreadPingPong, SMALL_MESSAGE};
use cf_benches::report::{Memory, Metric, Report, Row, Workload};
use cf_benches::shm_pingpong::{ShmPingPong, Wait};
use cf_benches::workloads::{
    echo, map, round_trip, scaling, startup, throughput, CHUNKSIZES, CPU_N, CPU_TASKS, MAP_ITEMS,
    PAYLOADS, PROCSPAWN_WINDOW, SUBMIT_TASKS,
};
use cf_benches::{chart, cores, memory, python, tasks};
use cf_pool_proc::ProcessPoolExecutor;
use cf_pool_thread::ThreadPoolExecutor;

/// Tasks for the peers that need a syscall or a process per task (`std::thread`, procspawn):
/// 20 000 of them would take most of the time budget, and their rate does not depend on it.
const SLOW_PEER_TASKS: u64 = 2_000;
/// Threads alive at once in the thread-per-task throughput run.
const THREAD_WINDOW: usize = 1024;
/// Payloads from this size on are also copied from memory (`memcpy-uncached`).
const UNCACHED_MIN: usize = 1 << 20;
/// `cpu_heavy` argument for Python: its loop is roughly 50x slower per iteration.
const PY_CPU_N: u64 = 300_000;

const USAGE: &str = "usage: compare [--runs N] [--sample-ms MS] [--json PATH] [--no-python] \
                     [--python-script PATH] [--only PREFIX,...] [--svg PATH | --no-svg] \
                     [--chart-from RUN.json]";

/// Where a full run draws its chart.
fn default_svg() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compare.svg")
}

struct Options {
    runs: usize,
    sample: Duration,
    json: Option<PathBuf>,
    python: bool,
    script: PathBuf,
    only: Vec<String>,
    /// `None`: the default (a full run draws `default_svg()`); `Some(None)`: `--no-svg`.
    svg: Option<Option<PathBuf>>,
    /// Draw the chart of this saved run instead of measuring.
    chart_from: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        runs: 7,
        sample: Duration::from_millis(40),
        json: None,
        python: true,
        script: python::default_script(),
        only: Vec::new(),
        svg: None,
        chart_from: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--runs" => {
                o.runs = value("--runs")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?;
            }
            "--sample-ms" => {
                let ms: u64 = value("--sample-ms")?
                    .parse()
                    .map_err(|e| format!("--sample-ms: {e}"))?;
                o.sample = Duration::from_millis(ms);
            }
            "--json" => o.json = Some(value("--json")?.into()),
            "--no-python" => o.python = false,
            "--python-script" => o.script = value("--python-script")?.into(),
            "--only" => {
                o.only = value("--only")?.split(',').map(str::to_owned).collect();
            }
            "--svg" => o.svg = Some(Some(value("--svg")?.into())),
            "--no-svg" => o.svg = Some(None),
            "--chart-from" => o.chart_from = Some(value("--chart-from")?.into()),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if o.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(o)
}

/// One contender of a workload: how to run the operation `iters` times.
struct Contender<'a> {
    key: &'static str,
    detail: String,
    items: u64,
    op: Box<dyn FnMut(u64) -> Duration + 'a>,
}

fn contender<'a>(
    key: &'static str,
    items: u64,
    op: impl FnMut(u64) -> Duration + 'a,
) -> Contender<'a> {
    Contender {
        key,
        detail: String::new(),
        items,
        op: Box::new(op),
    }
}

impl Contender<'_> {
    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

struct Bench {
    sampler: Sampler,
    report: Report,
    only: Vec<String>,
}

impl Bench {
    /// Measures every contender of one workload, round-robin, and records the rows.
    fn workload(&mut self, key: &str, title: &str, metric: Metric, mut cs: Vec<Contender<'_>>) {
        if !self.wanted(key) {
            return;
        }
        let started = Instant::now();
        eprint!("{key:<18} ");
        let iters: Vec<u64> = cs
            .iter_mut()
            .map(|c| self.sampler.calibrate(&mut c.op))
            .collect();
        let mut seconds = vec![Vec::with_capacity(self.sampler.runs); cs.len()];
        for _ in 0..self.sampler.runs {
            for ((c, &n), s) in cs.iter_mut().zip(&iters).zip(&mut seconds) {
                s.push((c.op)(n).as_secs_f64() / n as f64);
            }
        }
        self.report.workloads.push(Workload {
            key: key.into(),
            title: title.into(),
            metric,
        });
        for (c, seconds) in cs.into_iter().zip(seconds) {
            self.report.rows.push(Row {
                workload: key.into(),
                contender: c.key.into(),
                detail: c.detail,
                metric,
                items: c.items,
                seconds,
            });
        }
        eprintln!("{:.1} s", started.elapsed().as_secs_f64());
    }

    fn wanted(&self, key: &str) -> bool {
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|p| key.starts_with(p.as_str()) || p.starts_with(key))
    }
}

fn main() {
    cf_benches::init();
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(run) = &options.chart_from {
        chart_from(run, &options);
        return;
    }
    let started = Instant::now();
    let cores = cores();
    let mut bench = Bench {
        sampler: Sampler {
            target: options.sample,
            runs: options.runs,
        },
        report: Report::default(),
        only: options.only.clone(),
    };
    bench.report.machine = machine_facts(cores);
    let load_before = loadavg();
    eprintln!("load average at start: {load_before}");

    if bench.wanted("memory") {
        measure_memory(&mut bench, cores);
    }
    if ["round_trip", "submit_throughput", "map_c", "echo_"]
        .iter()
        .any(|k| bench.wanted(k))
    {
        measure_steady_state(&mut bench, cores);
    }
    if bench.wanted("cpu_") {
        measure_scaling(&mut bench, cores);
    }
    measure_startup(&mut bench, cores);

    let mut python_facts = vec![];
    if options.python {
        eprintln!("python             (benches/python/compare.py)");
        let args = python::Args {
            runs: options.runs,
            workers: cores,
            tasks: SUBMIT_TASKS,
            slow_tasks: SLOW_PEER_TASKS,
            map_items: MAP_ITEMS,
            cpu_n: PY_CPU_N,
            cpu_tasks: CPU_TASKS,
            target_seconds: options.sample.as_secs_f64(),
            only: options.only.clone(),
        };
        match python::run(&options.script, &args) {
            Ok(Some(py)) => {
                let peers: Vec<String> = py.peers.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let peers = if peers.is_empty() {
                    "no loky or pebble (`pip install loky pebble` adds them)".to_owned()
                } else {
                    peers.join(", ")
                };
                python_facts.push((
                    "python".to_owned(),
                    format!(
                        "{} {}, process pool start method `{}`; {peers}",
                        py.implementation, py.python, py.start_method
                    ),
                ));
                add_python_rows(&mut bench.report, py);
            }
            Ok(None) => python_facts.push(("python".into(), "no python3 on PATH".into())),
            Err(e) => {
                eprintln!("warning: {e}");
                python_facts.push(("python".into(), format!("failed: {e}")));
            }
        }
    }
    let report = &mut bench.report;
    report.machine.extend(python_facts);
    let load_after = loadavg();
    report.machine.push((
        "load average (1, 5, 15 min) at start / at end".into(),
        format!("{load_before} / {load_after}"),
    ));
    report.machine.push((
        "method".into(),
        format!(
            "median of {} runs per row (samples of >= {} ms, round-robin across contenders); \
             {cores} workers per pool; total {:.0} s",
            options.runs,
            options.sample.as_millis(),
            started.elapsed().as_secs_f64()
        ),
    ));
    println!("{}", report.markdown(cores));
    let svg = match &options.svg {
        Some(path) => path.clone(),
        None if options.only.is_empty() => Some(default_svg()),
        None => None,
    };
    if let Some(path) = svg {
        write_chart(report, &path);
    }
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&report.json(cores)).expect("JSON");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
        eprintln!("wrote {}", path.display());
    }
}

/// Draws `report`'s chart into `path`, with the run's facts as the subtitle; exits on failure.
fn write_chart(report: &Report, path: &Path) {
    let fact = |key: &str| {
        report
            .machine
            .iter()
            .find(|(k, _)| k.starts_with(key))
            .map_or("?", |(_, v)| v.as_str())
    };
    let subtitle = [
        format!("compare, {}: {}", fact("date"), fact("method")),
        format!(
            "load average (1, 5, 15 min) at start / at end: {}",
            fact("load average")
        ),
    ];
    if let Err(e) = std::fs::write(path, chart::svg(report, &subtitle)) {
        eprintln!("cannot write {}: {e}", path.display());
        std::process::exit(1);
    }
    eprintln!("wrote {}", path.display());
}

/// `--chart-from`: the chart of a run saved with `--json`.
fn chart_from(run: &Path, options: &Options) {
    let report = std::fs::read_to_string(run)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
        .and_then(|v| Report::from_json(&v));
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot read the run {}: {e}", run.display());
            std::process::exit(1);
        }
    };
    let path = match &options.svg {
        Some(Some(path)) => path.clone(),
        Some(None) => return,
        None => default_svg(),
    };
    write_chart(&report, &path);
}

/// Round trip, submit throughput, map and echo, on warm pools of `cores` workers.
fn measure_steady_state(bench: &mut Bench, cores: usize) {
    let proc = ProcessPoolExecutor::builder()
        .max_workers(cores)
        .build()
        .expect("process pool");
    let thread = ThreadPoolExecutor::builder()
        .max_workers(cores)
        .build()
        .expect("thread pool");
    let rayon = Rayon::new(cores);
    let tokio = peers::tokio_blocking(cores);
    let futures_pool = peers::futures_pool(cores);
    let ps = procspawn::Pool::new(cores).expect("procspawn pool");
    // Start every worker and let the adaptive windows settle.
    throughput::cf(&proc, SUBMIT_TASKS, 1);
    throughput::cf(&thread, SUBMIT_TASKS, 1);
    throughput::rayon(&rayon, SUBMIT_TASKS, 1);
    throughput::tokio(&tokio, SUBMIT_TASKS, 1);
    throughput::futures_pool(&futures_pool, SUBMIT_TASKS, 1);
    throughput::procspawn(&ps, 100, PROCSPAWN_WINDOW, 1);
    let mut pingpong = PingPong::start().expect("ping-pong partner");
    let mut ipc = IpcPingPong::start().expect("ipc-channel partner");
    let mut thread_pingpong = ThreadPingPong::start();
    let small = Message::of_frame_len(SMALL_MESSAGE);
    let mut futex = ShmPingPong::start(Wait::Futex).expect("shared-memory partner");
    let mut spin = ShmPingPong::start(Wait::Spin).expect("shared-memory partner");

    bench.workload(
        "round_trip",
        "round trip: submit one task, wait for its result",
        Metric::Latency,
        vec![
            contender("cf-proc", 1, |n| round_trip::cf(&proc, n)),
            contender("cf-thread", 1, |n| round_trip::cf(&thread, n)),
            contender("rayon", 1, |n| round_trip::rayon(&rayon, n))
                .detail("spawn + a reused channel"),
            contender("tokio", 1, |n| round_trip::tokio(&tokio, n))
                .detail("block_on(spawn_blocking)"),
            contender("futures-pool", 1, |n| {
                round_trip::futures_pool(&futures_pool, n)
            })
            .detail("futures ThreadPool, block_on(spawn_with_handle)"),
            contender("procspawn", 1, |n| round_trip::procspawn(&ps, n)),
            contender("std::thread", 1, round_trip::std_thread).detail("spawn + join"),
            contender("sequential", 1, round_trip::sequential).detail("a plain call"),
            contender("socketpair", 1, |n| pingpong.run(&small, n)).detail(format!(
                "{SMALL_MESSAGE}-byte ping-pong between two processes"
            )),
            contender("ipc-channel", 1, |n| ipc.round_trips(n))
                .detail("IpcSender<u64> ping-pong between two processes"),
            contender("shm-futex", 1, |n| futex.run(n))
                .detail("shared-memory ping-pong between two processes, futex wait/wake"),
            contender("shm-spin", 1, |n| spin.run(n))
                .detail("shared-memory ping-pong between two processes, spinning"),
            contender("thread-pingpong", 1, |n| thread_pingpong.run(n))
                .detail("mpsc ping-pong between two threads"),
        ],
    );
    drop(thread_pingpong);

    let slow = format!("{SLOW_PEER_TASKS} tasks");
    bench.workload(
        "submit_throughput",
        &format!("submit throughput: {SUBMIT_TASKS} tasks, collected with as_completed"),
        Metric::Throughput,
        vec![
            contender("cf-proc", SUBMIT_TASKS, |n| {
                throughput::cf(&proc, SUBMIT_TASKS, n)
            }),
            contender("cf-thread", SUBMIT_TASKS, |n| {
                throughput::cf(&thread, SUBMIT_TASKS, n)
            }),
            contender("rayon", SUBMIT_TASKS, |n| {
                throughput::rayon(&rayon, SUBMIT_TASKS, n)
            })
            .detail("spawn + a reused channel"),
            contender("tokio", SUBMIT_TASKS, |n| {
                throughput::tokio(&tokio, SUBMIT_TASKS, n)
            })
            .detail("spawn_blocking, FuturesUnordered"),
            contender("futures-pool", SUBMIT_TASKS, |n| {
                throughput::futures_pool(&futures_pool, SUBMIT_TASKS, n)
            })
            .detail("futures ThreadPool, spawn_with_handle, FuturesUnordered"),
            contender("procspawn", SLOW_PEER_TASKS, |n| {
                throughput::procspawn(&ps, SLOW_PEER_TASKS, PROCSPAWN_WINDOW, n)
            })
            .detail(format!("{slow}, {PROCSPAWN_WINDOW} in flight")),
            contender("std::thread", SLOW_PEER_TASKS, |n| {
                throughput::std_thread(SLOW_PEER_TASKS, THREAD_WINDOW, n)
            })
            .detail(format!("{slow}, {THREAD_WINDOW} alive")),
            contender("sequential", SUBMIT_TASKS, |n| {
                throughput::sequential(SUBMIT_TASKS, n)
            }),
        ],
    );

    for c in CHUNKSIZES {
        let ps_items = if c == 1 { SLOW_PEER_TASKS } else { MAP_ITEMS };
        let mut ps_detail = format!("a task per chunk, {PROCSPAWN_WINDOW} in flight");
        if ps_items != MAP_ITEMS {
            ps_detail = format!("{ps_items} items, {ps_detail}");
        }
        bench.workload(
            &format!("map_c{c}"),
            &format!("map over {MAP_ITEMS} items, chunksize {c}"),
            Metric::Throughput,
            vec![
                contender("cf-proc", MAP_ITEMS, |n| map::cf(&proc, MAP_ITEMS, c, n)),
                contender("cf-thread", MAP_ITEMS, |n| {
                    map::cf(&thread, MAP_ITEMS, c, n)
                }),
                contender("cf-proc+chunk-tasks", MAP_ITEMS, |n| {
                    map::cf_chunk_tasks(&proc, MAP_ITEMS, c, n)
                })
                .detail("submit(noop_chunk, chunk): one task and future per chunk"),
                contender("rayon", MAP_ITEMS, |n| {
                    map::rayon(&rayon.pool, MAP_ITEMS, c, n)
                })
                .detail("par_iter, with_min_len(chunksize)"),
                contender("procspawn", ps_items, |n| {
                    map::procspawn(&ps, ps_items, c, PROCSPAWN_WINDOW, n)
                })
                .detail(ps_detail),
                contender("sequential", MAP_ITEMS, |n| map::sequential(MAP_ITEMS, n)),
            ],
        );
    }

    for (len, label) in PAYLOADS {
        // A round trip moves the payload twice (there and back), a memcpy once.
        let moved = 2 * len as u64;
        let message = Message::new(&tasks::payload(len));
        let src = tasks::payload(len);
        // Payloads of a few KiB come from the cache however they are copied.
        let mut uncached = (len >= UNCACHED_MIN).then(|| physical::UncachedCopy::new(len));
        bench.workload(
            &format!("echo_{label}"),
            &format!(
                "echo a {label} payload (bandwidth = bytes moved / time: 2 × payload per round \
                 trip, the payload once per memcpy)"
            ),
            Metric::Bandwidth,
            vec![
                contender("cf-proc", moved, |n| echo::cf_vec(&proc, len, n))
                    .detail("Vec<u8>, the default"),
                contender("cf-proc+ByteBuf", moved, |n| {
                    echo::cf_bytebuf(&proc, len, n)
                })
                .detail("serde_bytes::ByteBuf"),
                contender("cf-proc+Buffer", moved, |n| echo::cf_buffer(&proc, len, n))
                    .detail("cf Buffer: shared memory"),
                contender("cf-thread", moved, |n| echo::cf_vec(&thread, len, n))
                    .detail("Vec<u8>, moved"),
                contender("procspawn", moved, |n| echo::procspawn(&ps, len, n)).detail("Vec<u8>"),
                contender("ipc-channel", moved, |n| ipc.echo(len, n))
                    .detail("IpcBytesSender there and back between two processes"),
                contender("socketpair", moved, |n| pingpong.run(&message, n))
                    .detail("the bytes there and back between two processes"),
                contender("memcpy", len as u64, |n| physical::memcpy(&src, n))
                    .detail("one copy into a warm buffer"),
                contender("copy-chain", moved, |n| physical::copy_chain(&src, n))
                    .detail("the four copies of a byte-string echo, warm buffers, one thread"),
            ]
            .into_iter()
            .chain(uncached.as_mut().map(|copy| {
                let detail = format!(
                    "context: one copy between buffers not in the cache (slots of two {} MiB arenas)",
                    copy.arena_bytes() >> 20
                );
                contender("memcpy-uncached", len as u64, |n| copy.run(n)).detail(detail)
            }))
            .collect(),
        );
    }
    ps.shutdown();
}

/// Each idle worker's resident memory: fresh pools, every worker started and given a few tasks,
/// then a moment's rest.
fn measure_memory(bench: &mut Bench, cores: usize) {
    let rest = Duration::from_millis(200);
    let proc = ProcessPoolExecutor::builder()
        .max_workers(cores)
        .build()
        .expect("process pool");
    // Enough tasks in flight at once that every worker starts.
    throughput::cf(&proc, 2_000, 1);
    std::thread::sleep(rest);
    let kib = proc
        .worker_pids()
        .into_iter()
        .filter_map(memory::rss_kib)
        .collect();
    bench.report.memory.push(Memory {
        contender: "cf-proc".into(),
        detail: "this binary, re-executed".into(),
        kib,
    });
    drop(proc);

    let before = memory::children();
    let ps = procspawn::Pool::new(cores).expect("procspawn pool");
    throughput::procspawn(&ps, 100, PROCSPAWN_WINDOW, 1);
    std::thread::sleep(rest);
    let kib = memory::children()
        .difference(&before)
        .filter_map(|&pid| memory::rss_kib(pid))
        .collect();
    bench.report.memory.push(Memory {
        contender: "procspawn".into(),
        detail: "this binary, re-executed".into(),
        kib,
    });
    ps.shutdown();
    eprintln!("memory             done");
}

/// CPU-bound work over 1..=cores workers, each pool built for its worker count.
fn measure_scaling(bench: &mut Bench, cores: usize) {
    let cpu = format!("{CPU_TASKS} × cpu_heavy({}M)", CPU_N / 1_000_000);
    for w in 1..=cores {
        let proc = ProcessPoolExecutor::builder()
            .max_workers(w)
            .build()
            .expect("process pool");
        let thread = ThreadPoolExecutor::builder()
            .max_workers(w)
            .build()
            .expect("thread pool");
        let rayon = rayon::ThreadPoolBuilder::new()
            .num_threads(w)
            .build()
            .expect("rayon pool");
        let ps = procspawn::Pool::new(w).expect("procspawn pool");
        // The baseline is sampled with the pools, round-robin: load from elsewhere on the
        // machine then slows both alike instead of skewing the speedup.
        let mut cs = vec![
            contender("sequential", CPU_TASKS as u64, |n| {
                scaling::sequential(CPU_TASKS, CPU_N, n)
            })
            .detail("the same calls, one after another"),
            contender("cf-proc", CPU_TASKS as u64, |n| {
                scaling::cf(&proc, CPU_TASKS, CPU_N, n)
            }),
            contender("cf-thread", CPU_TASKS as u64, |n| {
                scaling::cf(&thread, CPU_TASKS, CPU_N, n)
            }),
            contender("rayon", CPU_TASKS as u64, |n| {
                scaling::rayon(&rayon, CPU_TASKS, CPU_N, n)
            }),
            contender("procspawn", CPU_TASKS as u64, |n| {
                scaling::procspawn(&ps, CPU_TASKS, CPU_N, n)
            }),
        ];
        if w == cores {
            cs.push(
                contender("ideal-split", CPU_TASKS as u64, |n| {
                    scaling::ideal_split(w, CPU_TASKS, CPU_N, n)
                })
                .detail(format!(
                    "{w} plain threads, {} tasks each: the machine's ceiling",
                    CPU_TASKS.div_ceil(w)
                )),
            );
            cs.push(
                contender("std::thread", CPU_TASKS as u64, |n| {
                    scaling::std_thread(CPU_TASKS, CPU_N, n)
                })
                .detail(format!("{CPU_TASKS} threads, one per task")),
            );
        }
        let workers = if w == 1 { "worker" } else { "workers" };
        bench.workload(
            &format!("cpu_w{w}"),
            &format!("CPU-bound, {cpu}, {w} {workers}"),
            Metric::Speedup,
            cs,
        );
        ps.shutdown();
    }
}

/// A pool's whole life for one task.
fn measure_startup(bench: &mut Bench, cores: usize) {
    bench.workload(
        "startup",
        &format!("pool start ({cores} workers) + first result + shutdown"),
        Metric::Latency,
        vec![
            contender("cf-proc", 1, |n| startup::cf_proc(cores, n))
                .detail("workers start on demand: one"),
            contender("cf-thread", 1, |n| startup::cf_thread(cores, n))
                .detail("workers start on demand: one"),
            contender("rayon", 1, |n| startup::rayon(cores, n))
                .detail("drop does not join its threads"),
            contender("procspawn", 1, |n| startup::procspawn(cores, n))
                .detail("starts every worker"),
            contender("std::thread", 1, startup::std_thread).detail("spawn + join"),
        ],
    );
}

fn add_python_rows(report: &mut Report, py: python::Report) {
    for m in py.memory {
        let detail = match m.contender.as_str() {
            "loky" => "loky's reusable executor",
            "pebble" => "pebble ProcessPool, forked",
            _ => "ProcessPoolExecutor, forked",
        };
        report.memory.push(Memory {
            contender: m.contender,
            detail: detail.into(),
            kib: m.kib,
        });
    }
    for r in py.results {
        let Some(metric) = report
            .workloads
            .iter()
            .find(|w| w.key == r.workload)
            .map(|w| w.metric)
        else {
            eprintln!(
                "warning: python measured an unknown workload `{}`",
                r.workload
            );
            continue;
        };
        let contender: &'static str = match r.contender.as_str() {
            "py-proc" => "py-proc",
            "py-thread" => "py-thread",
            "py-seq" => "py-seq",
            "loky" => "loky",
            "pebble" => "pebble",
            other => {
                eprintln!("warning: python measured an unknown contender `{other}`");
                continue;
            }
        };
        let mut detail = match contender {
            "py-proc" => "ProcessPoolExecutor".to_owned(),
            "py-thread" => "ThreadPoolExecutor".to_owned(),
            "loky" if r.workload == "startup" => {
                "ProcessPoolExecutor, loky's own start method".to_owned()
            }
            "loky" => "reusable executor".to_owned(),
            "pebble" => "ProcessPool".to_owned(),
            _ => "plain calls".to_owned(),
        };
        let standard = if r.workload.starts_with("map_c") {
            MAP_ITEMS
        } else {
            SUBMIT_TASKS
        };
        if (r.workload == "submit_throughput" || r.workload.starts_with("map_c"))
            && r.items != standard
        {
            detail.push_str(&format!(", {} items", r.items));
        }
        if r.workload.starts_with("cpu_") {
            detail.push_str(&format!(", cpu_heavy({PY_CPU_N})"));
        }
        if r.workload.starts_with("echo_") {
            detail.push_str(", bytes");
        }
        if contender == "py-thread" && r.workload.starts_with("map_c") && r.workload != "map_c1" {
            detail.push_str(", chunksize ignored");
        }
        report.rows.push(Row {
            workload: r.workload,
            contender: contender.into(),
            detail,
            metric,
            items: r.items,
            seconds: r.seconds,
        });
    }
}

fn machine_facts(cores: usize) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix(" kB")?.parse::<u64>().ok())
        .map_or("unknown".to_owned(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1048576.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".to_owned(), |s| s.trim().to_owned());
    vec![
        (
            "date".into(),
            command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        ),
        (
            "cpus".into(),
            format!("{cores} usable (what every pool is sized to), {model}"),
        ),
        ("memory".into(), mem),
        ("kernel".into(), format!("Linux {kernel}")),
        ("rustc".into(), command_output("rustc", &["--version"])),
    ]
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_owned(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        })
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}
