//! The backend-independent conformance suite run against `Pool`, once per backend: the enum
//! forwards every `Executor` method, so it must pass exactly what the pools pass.

use cf_executor_api::conformance::Config;
use concurrent_futures::{Pool, ProcessPoolExecutor, ThreadPoolExecutor};

mod thread {
    use super::*;

    fn make(config: Config) -> Pool {
        let mut builder = ThreadPoolExecutor::builder().max_workers(config.max_workers);
        if let Some(initializer) = config.initializer {
            builder = builder.initializer(initializer);
        }
        Pool::from(builder.build().expect("a valid conformance config"))
    }

    cf_executor_api::conformance_tests!(make);
}

mod process {
    use super::*;

    fn make(config: Config) -> Pool {
        let mut builder = ProcessPoolExecutor::builder().max_workers(config.max_workers);
        if let Some(initializer) = config.initializer {
            builder = builder.initializer(initializer);
        }
        Pool::from(builder.build().expect("a valid conformance config"))
    }

    cf_executor_api::conformance_tests!(make);
}
