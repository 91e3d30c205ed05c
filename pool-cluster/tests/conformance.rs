//! The shared conformance suite on `ClusterExecutor`: every scenario with its own server and
//! two local nodes sharing the scenario's `max_workers` (one node when it is 1).
//!
//! One exception, `idle_worker_reuse`: its first half asserts that tasks submitted one after
//! another, each awaited, run on a single worker. With two idle nodes the server hands each
//! task to whichever node asked first, so that holds per node, not across nodes; the scenario
//! runs on one node with all the workers.

mod common;

use cf_executor_api::conformance::{self, Config};
use common::Cluster;

#[test]
fn node_entry() {
    common::node_entry();
}

fn split(max_workers: usize) -> Vec<usize> {
    if max_workers == 1 {
        vec![1]
    } else {
        vec![max_workers.div_ceil(2), max_workers / 2]
    }
}

fn start(config: Config, nodes: Vec<usize>) -> Option<Cluster> {
    Cluster::start(&nodes, |b| {
        let b = b.max_workers(config.max_workers);
        match config.initializer {
            Some(init) => b.initializer(init),
            None => b,
        }
    })
}

fn two_nodes(config: Config) -> Cluster {
    start(config, split(config.max_workers)).expect("checked by has_server")
}

fn one_node(config: Config) -> Cluster {
    start(config, vec![config.max_workers]).expect("checked by has_server")
}

/// `false` (after saying why) when no server can be started and none is required.
fn has_server() -> bool {
    common::Server::start().is_some()
}

macro_rules! scenarios {
    ($make:ident: $($scenario:ident),* $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                if has_server() {
                    conformance::$scenario($make);
                }
            }
        )*
    };
}

scenarios!(two_nodes:
    submit_pow,
    max_workers_reported,
    map_matches_sequential,
    map_failing_item_ends_iteration,
    map_timeout_cancels_the_rest,
    map_buffersize_ordered,
    map_buffersize_infinite_input,
    map_buffersize_bounds_lookahead,
    map_input_panic_ends_the_map,
    map_invalid_arguments,
    map_empty_input,
    map_without_buffersize_submits_everything,
    map_drop_cancels_unstarted,
    submit_batch_items_complete_individually,
    submit_after_shutdown,
    shutdown_wait_completes_all,
    shutdown_cancel_futures,
    cancelled_submit_then_shutdown_returns,
    drop_waits_for_work,
    shutdown_no_wait_returns_at_once,
    saturation,
    initializer_state_visible,
    failing_initializer_breaks_executor,
    panic_becomes_panicked,
    panicking_waker_is_contained,
    generic_function,
    buffers_round_trip,
);

scenarios!(one_node: idle_worker_reuse);
