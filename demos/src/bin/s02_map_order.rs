//! Section 2, "executor.map()": results in input order, each with the worker (pid or thread) that ran it.
//!
//! `cargo run --release -p cf-demos --bin s02_map_order -- --backend process|thread|both`

fn main() -> std::process::ExitCode {
    cf_demos::main_for("s02_map_order")
}
