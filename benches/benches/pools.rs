//! The criterion suite: one `benchmark_group` per workload, cf's pools and their peers side by
//! side, the machine's limits in the same groups. `cargo bench -p cf-benches [-- FILTER]`.
//!
//! The workloads are the `compare` binary's (`cf_benches::workloads`); this harness adds
//! criterion's statistics and history. `main` is written out (not `criterion_main!`) because
//! the process pools and the ping-pong partner re-execute this binary and must be caught first.

use std::time::Duration;

use cf_benches::ipc::IpcPingPong;
use cf_benches::peers::{self, Rayon};
use cf_benches::physical::{self, Message, PingPong, ThreadPingPong, SMALL_MESSAGE};
use cf_benches::shm_pingpong::{ShmPingPong, Wait};
use cf_benches::workloads::{
    echo, map, round_trip, scaling, startup, throughput, CHUNKSIZES, CPU_N, CPU_TASKS, MAP_ITEMS,
    PAYLOADS, PROCSPAWN_WINDOW, SUBMIT_TASKS,
};
use cf_benches::{cores, tasks};
use cf_pool_proc::ProcessPoolExecutor;
use cf_pool_thread::ThreadPoolExecutor;
use criterion::{BenchmarkId, Criterion, Throughput};

/// Tasks for the peers that pay a process or a thread per task.
const SLOW_PEER_TASKS: u64 = 2_000;

struct Pools {
    proc: ProcessPoolExecutor,
    thread: ThreadPoolExecutor,
    rayon: Rayon,
    tokio: tokio::runtime::Runtime,
    futures: futures::executor::ThreadPool,
    procspawn: procspawn::Pool,
}

impl Pools {
    /// Pools of `workers`, warmed up (every worker started).
    fn new(workers: usize) -> Self {
        let pools = Pools {
            proc: ProcessPoolExecutor::builder()
                .max_workers(workers)
                .build()
                .expect("process pool"),
            thread: ThreadPoolExecutor::builder()
                .max_workers(workers)
                .build()
                .expect("thread pool"),
            rayon: Rayon::new(workers),
            tokio: peers::tokio_blocking(workers),
            futures: peers::futures_pool(workers),
            procspawn: procspawn::Pool::new(workers).expect("procspawn pool"),
        };
        throughput::cf(&pools.proc, 2_000, 1);
        throughput::cf(&pools.thread, 2_000, 1);
        pools
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        self.procspawn.shutdown();
    }
}

fn bench_round_trip(c: &mut Criterion, pools: &Pools) {
    let mut g = c.benchmark_group("round_trip");
    g.bench_function("cf-proc", |b| {
        b.iter_custom(|n| round_trip::cf(&pools.proc, n))
    });
    g.bench_function("cf-thread", |b| {
        b.iter_custom(|n| round_trip::cf(&pools.thread, n))
    });
    g.bench_function("rayon", |b| {
        b.iter_custom(|n| round_trip::rayon(&pools.rayon, n))
    });
    g.bench_function("tokio", |b| {
        b.iter_custom(|n| round_trip::tokio(&pools.tokio, n))
    });
    g.bench_function("futures-pool", |b| {
        b.iter_custom(|n| round_trip::futures_pool(&pools.futures, n))
    });
    g.bench_function("procspawn", |b| {
        b.iter_custom(|n| round_trip::procspawn(&pools.procspawn, n))
    });
    g.bench_function("std::thread", |b| b.iter_custom(round_trip::std_thread));
    g.bench_function("sequential", |b| b.iter_custom(round_trip::sequential));
    let mut pingpong = PingPong::start().expect("ping-pong partner");
    let small = Message::of_frame_len(SMALL_MESSAGE);
    g.bench_function("socketpair", |b| b.iter_custom(|n| pingpong.run(&small, n)));
    drop(pingpong);
    let mut ipc = IpcPingPong::start().expect("ipc-channel partner");
    g.bench_function("ipc-channel", |b| b.iter_custom(|n| ipc.round_trips(n)));
    drop(ipc);
    for (name, how) in [("shm-futex", Wait::Futex), ("shm-spin", Wait::Spin)] {
        let mut shm = ShmPingPong::start(how).expect("shared-memory partner");
        g.bench_function(name, |b| b.iter_custom(|n| shm.run(n)));
    }
    let mut thread_pingpong = ThreadPingPong::start();
    g.bench_function("thread-pingpong", |b| {
        b.iter_custom(|n| thread_pingpong.run(n))
    });
    g.finish();
}

fn bench_submit_throughput(c: &mut Criterion, pools: &Pools) {
    let mut g = c.benchmark_group("submit_throughput");
    g.sample_size(20);
    g.throughput(Throughput::Elements(SUBMIT_TASKS));
    g.bench_function("cf-proc", |b| {
        b.iter_custom(|n| throughput::cf(&pools.proc, SUBMIT_TASKS, n))
    });
    g.bench_function("cf-thread", |b| {
        b.iter_custom(|n| throughput::cf(&pools.thread, SUBMIT_TASKS, n))
    });
    g.bench_function("rayon", |b| {
        b.iter_custom(|n| throughput::rayon(&pools.rayon, SUBMIT_TASKS, n))
    });
    g.bench_function("tokio", |b| {
        b.iter_custom(|n| throughput::tokio(&pools.tokio, SUBMIT_TASKS, n))
    });
    g.bench_function("futures-pool", |b| {
        b.iter_custom(|n| throughput::futures_pool(&pools.futures, SUBMIT_TASKS, n))
    });
    g.bench_function("sequential", |b| {
        b.iter_custom(|n| throughput::sequential(SUBMIT_TASKS, n))
    });
    g.throughput(Throughput::Elements(SLOW_PEER_TASKS));
    g.bench_function("procspawn", |b| {
        b.iter_custom(|n| {
            throughput::procspawn(&pools.procspawn, SLOW_PEER_TASKS, PROCSPAWN_WINDOW, n)
        })
    });
    g.bench_function("std::thread", |b| {
        b.iter_custom(|n| throughput::std_thread(SLOW_PEER_TASKS, 1024, n))
    });
    g.finish();
}

fn bench_map(c: &mut Criterion, pools: &Pools) {
    let mut g = c.benchmark_group("map");
    g.sample_size(20);
    for chunk in CHUNKSIZES {
        g.throughput(Throughput::Elements(MAP_ITEMS));
        g.bench_with_input(BenchmarkId::new("cf-proc", chunk), &chunk, |b, &c| {
            b.iter_custom(|n| map::cf(&pools.proc, MAP_ITEMS, c, n))
        });
        g.bench_with_input(BenchmarkId::new("cf-thread", chunk), &chunk, |b, &c| {
            b.iter_custom(|n| map::cf(&pools.thread, MAP_ITEMS, c, n))
        });
        g.bench_with_input(
            BenchmarkId::new("cf-proc chunk tasks", chunk),
            &chunk,
            |b, &c| b.iter_custom(|n| map::cf_chunk_tasks(&pools.proc, MAP_ITEMS, c, n)),
        );
        g.bench_with_input(BenchmarkId::new("rayon", chunk), &chunk, |b, &c| {
            b.iter_custom(|n| map::rayon(&pools.rayon.pool, MAP_ITEMS, c, n))
        });
        g.bench_with_input(BenchmarkId::new("sequential", chunk), &chunk, |b, _| {
            b.iter_custom(|n| map::sequential(MAP_ITEMS, n))
        });
        let items = if chunk == 1 {
            SLOW_PEER_TASKS
        } else {
            MAP_ITEMS
        };
        g.throughput(Throughput::Elements(items));
        g.bench_with_input(BenchmarkId::new("procspawn", chunk), &chunk, |b, &c| {
            b.iter_custom(|n| map::procspawn(&pools.procspawn, items, c, PROCSPAWN_WINDOW, n))
        });
    }
    g.finish();
}

fn bench_echo(c: &mut Criterion, pools: &Pools) {
    let mut g = c.benchmark_group("echo");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    let mut pingpong = PingPong::start().expect("ping-pong partner");
    let mut ipc = IpcPingPong::start().expect("ipc-channel partner");
    for (len, label) in PAYLOADS {
        // A round trip moves the payload twice (there and back); a memcpy once (set below).
        g.throughput(Throughput::Bytes(2 * len as u64));
        g.bench_function(BenchmarkId::new("cf-proc Vec<u8>", label), |b| {
            b.iter_custom(|n| echo::cf_vec(&pools.proc, len, n))
        });
        g.bench_function(BenchmarkId::new("cf-proc ByteBuf", label), |b| {
            b.iter_custom(|n| echo::cf_bytebuf(&pools.proc, len, n))
        });
        g.bench_function(BenchmarkId::new("cf-proc Buffer", label), |b| {
            b.iter_custom(|n| echo::cf_buffer(&pools.proc, len, n))
        });
        g.bench_function(BenchmarkId::new("cf-thread", label), |b| {
            b.iter_custom(|n| echo::cf_vec(&pools.thread, len, n))
        });
        g.bench_function(BenchmarkId::new("procspawn", label), |b| {
            b.iter_custom(|n| echo::procspawn(&pools.procspawn, len, n))
        });
        g.bench_function(BenchmarkId::new("ipc-channel", label), |b| {
            b.iter_custom(|n| ipc.echo(len, n))
        });
        let message = Message::new(&tasks::payload(len));
        g.bench_function(BenchmarkId::new("socketpair", label), |b| {
            b.iter_custom(|n| pingpong.run(&message, n))
        });
        let src = tasks::payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter_custom(|n| physical::memcpy(&src, n))
        });
    }
    g.finish();
}

fn bench_cpu_scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_scaling");
    g.sample_size(10);
    g.throughput(Throughput::Elements(CPU_TASKS as u64));
    g.bench_function("sequential", |b| {
        b.iter_custom(|n| scaling::sequential(CPU_TASKS, CPU_N, n))
    });
    for w in 1..=cores() {
        let pools = Pools::new(w);
        g.bench_with_input(BenchmarkId::new("cf-proc", w), &w, |b, _| {
            b.iter_custom(|n| scaling::cf(&pools.proc, CPU_TASKS, CPU_N, n))
        });
        g.bench_with_input(BenchmarkId::new("cf-thread", w), &w, |b, _| {
            b.iter_custom(|n| scaling::cf(&pools.thread, CPU_TASKS, CPU_N, n))
        });
        g.bench_with_input(BenchmarkId::new("rayon", w), &w, |b, _| {
            b.iter_custom(|n| scaling::rayon(&pools.rayon.pool, CPU_TASKS, CPU_N, n))
        });
        g.bench_with_input(BenchmarkId::new("procspawn", w), &w, |b, _| {
            b.iter_custom(|n| scaling::procspawn(&pools.procspawn, CPU_TASKS, CPU_N, n))
        });
    }
    g.bench_function(BenchmarkId::new("ideal-split", cores()), |b| {
        b.iter_custom(|n| scaling::ideal_split(cores(), CPU_TASKS, CPU_N, n))
    });
    g.bench_function(BenchmarkId::new("std::thread", CPU_TASKS), |b| {
        b.iter_custom(|n| scaling::std_thread(CPU_TASKS, CPU_N, n))
    });
    g.finish();
}

fn bench_startup(c: &mut Criterion) {
    let workers = cores();
    let mut g = c.benchmark_group("startup");
    g.sample_size(20);
    g.bench_function("cf-proc", |b| {
        b.iter_custom(|n| startup::cf_proc(workers, n))
    });
    g.bench_function("cf-thread", |b| {
        b.iter_custom(|n| startup::cf_thread(workers, n))
    });
    g.bench_function("rayon", |b| b.iter_custom(|n| startup::rayon(workers, n)));
    g.bench_function("procspawn", |b| {
        b.iter_custom(|n| startup::procspawn(workers, n))
    });
    g.bench_function("std::thread", |b| b.iter_custom(startup::std_thread));
    g.finish();
}

fn main() {
    cf_benches::init();
    let mut c = Criterion::default().configure_from_args();
    {
        let pools = Pools::new(cores());
        bench_round_trip(&mut c, &pools);
        bench_submit_throughput(&mut c, &pools);
        bench_map(&mut c, &pools);
        bench_echo(&mut c, &pools);
    }
    bench_cpu_scaling(&mut c);
    bench_startup(&mut c);
    c.final_summary();
}
