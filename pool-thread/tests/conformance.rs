//! The backend-independent conformance suite (`cf_executor_api::conformance`, ported from
//! CPython's `Lib/test/test_concurrent_futures/`) run against the thread pool.

use cf_executor_api::conformance::Config;
use cf_pool_thread::ThreadPoolExecutor;

cf_executor_api::conformance_tests!(make);

fn make(config: Config) -> ThreadPoolExecutor {
    let mut builder = ThreadPoolExecutor::builder().max_workers(config.max_workers);
    if let Some(initializer) = config.initializer {
        builder = builder.initializer(initializer);
    }
    builder.build().expect("a valid conformance config")
}
