//! The backend-independent conformance suite (`cf_executor_api::conformance`, ported from
//! CPython's `Lib/test/test_concurrent_futures/`), run against the process pool exactly as the
//! thread pool runs it.

mod common;

use cf_executor_api::conformance::Config;
use cf_pool_proc::ProcessPoolExecutor;

fn make(config: Config) -> ProcessPoolExecutor {
    let mut builder = ProcessPoolExecutor::builder().max_workers(config.max_workers);
    if let Some(init) = config.initializer {
        builder = builder.initializer(init);
    }
    builder.build().expect("build the process pool")
}

cf_executor_api::conformance_tests!(make);

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
