//! Section 3, "executor.submit() and Future Objects": `done()`, `result()`, `exception()`, many futures.
//!
//! `cargo run --release -p cf-demos --bin s03_submit_future -- --backend process|thread|both`

fn main() -> std::process::ExitCode {
    cf_demos::main_for("s03_submit_future")
}
