//! What `Pool` adds over forwarding: the run-time choice, and the process-only calls, which do
//! their work on a process pool and are refused (doing nothing) on a thread pool.

use std::time::Duration;

use concurrent_futures::{Backend, Executor, Pool, SubmitError, TaskError, Unsupported};

const WAIT: Duration = Duration::from_secs(60);

fn square(x: u64) -> u64 {
    x * x
}

fn spin(_: ()) -> u64 {
    loop {
        std::hint::spin_loop();
    }
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn every_backend_parses_from_its_name_and_builds() {
    assert_eq!(Backend::LOCAL, [Backend::Process, Backend::Thread]);
    // The cluster needs a server and nodes: demos/tests/backends_agree.rs builds it.
    assert_eq!(&Backend::ALL[..2], Backend::LOCAL);
    #[cfg(feature = "cluster")]
    assert_eq!(Backend::ALL[2..], [Backend::Cluster]);
    #[cfg(not(feature = "cluster"))]
    assert_eq!(Backend::ALL.len(), 2);
    for &backend in Backend::ALL {
        assert_eq!(backend.name().parse::<Backend>(), Ok(backend));
    }
    for &backend in Backend::LOCAL {
        let pool = Pool::with_workers(backend, 2).unwrap();
        assert_eq!(pool.backend(), backend);
        assert_eq!(pool.max_workers(), 2);
        assert_eq!(
            pool.submit(square, 9).unwrap().result_timeout(WAIT),
            Ok(&81)
        );
    }
    let e = "Thread".parse::<Backend>().unwrap_err().to_string();
    assert!(
        e.contains("\"Thread\"") && e.contains("process, thread"),
        "{e}"
    );
    assert!(!e.contains("feature"), "{e}");
    #[cfg(not(feature = "cluster"))]
    {
        let e = "cluster".parse::<Backend>().unwrap_err().to_string();
        assert!(e.contains("cargo feature `cluster`"), "{e}");
    }
}

#[test]
fn zero_workers_is_refused_on_every_backend() {
    for &backend in Backend::ALL {
        assert!(Pool::with_workers(backend, 0).is_err(), "{backend}");
    }
}

#[test]
fn the_thread_pool_refuses_what_it_cannot_do_and_keeps_working() {
    let pool = Pool::with_workers(Backend::Thread, 1).unwrap();
    let running = pool.submit(nap, 200).unwrap();
    for (result, operation) in [
        (pool.terminate_workers(), "terminate_workers"),
        (pool.kill_workers(), "kill_workers"),
    ] {
        assert_eq!(
            result,
            Err(Unsupported {
                operation,
                backend: Backend::Thread
            })
        );
    }
    assert!(matches!(
        pool.submit_with_timeout(square, 3, Duration::from_secs(1)),
        Err(SubmitError::InvalidArgument { name: "limit", .. })
    ));
    assert_eq!(pool.worker_pids(), None);
    assert!(pool.as_thread().is_some() && pool.as_process().is_none());
    // Nothing was shut down or cancelled.
    assert_eq!(running.result_timeout(WAIT), Ok(&200));
    assert_eq!(
        pool.submit(square, 4).unwrap().result_timeout(WAIT),
        Ok(&16)
    );
}

#[test]
fn the_process_pool_stops_a_task_past_its_limit() {
    let pool = Pool::with_workers(Backend::Process, 1).unwrap();
    let f = pool
        .submit_with_timeout(spin, (), Duration::from_millis(100))
        .unwrap();
    assert!(matches!(
        f.result_timeout(WAIT),
        Err(TaskError::Timeout {
            killed_worker: Some(_),
            ..
        })
    ));
    assert!(pool.as_process().is_some() && pool.as_thread().is_none());
}

#[test]
fn the_process_pool_kills_its_workers() {
    let pool = Pool::with_workers(Backend::Process, 1).unwrap();
    let running = pool.submit(spin, ()).unwrap();
    while pool.worker_pids().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.kill_workers(), Ok(()));
    assert!(matches!(
        running.result_timeout(WAIT),
        Err(TaskError::WorkerDied { .. })
    ));
    assert_eq!(pool.worker_pids(), Some(vec![]));
    assert_eq!(pool.submit(square, 2).unwrap_err(), SubmitError::Shutdown);
}

/// Without a server, the cluster backend fails to build, naming the address and where it
/// came from; its `Unsupported` says why a cluster cannot kill workers.
#[cfg(feature = "cluster")]
#[test]
fn the_cluster_backend_without_a_server_says_where_it_looked() {
    // Port 1 on the loopback: nothing listens there, the connection is refused at once.
    std::env::set_var(concurrent_futures::CLUSTER_URL_ENV, "nats://127.0.0.1:1");
    let e = Pool::with_workers(Backend::Cluster, 2)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nats://127.0.0.1:1") && e.contains("CF_CLUSTER_URL"),
        "{e}"
    );
    let refused = Unsupported {
        operation: "kill_workers",
        backend: Backend::Cluster,
    }
    .to_string();
    assert!(
        refused.contains("ClusterExecutor") && refused.contains("nodes"),
        "{refused}"
    );
}
