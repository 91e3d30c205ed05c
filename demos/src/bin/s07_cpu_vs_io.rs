//! Section 7, "CPU-Bound vs I/O-Bound": sequential vs thread pool vs process pool, timed, as bars.
//!
//! `cargo run --release -p cf-demos --bin s07_cpu_vs_io -- --backend process|thread|both`

fn main() -> std::process::ExitCode {
    cf_demos::main_for("s07_cpu_vs_io")
}
