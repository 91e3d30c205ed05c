//! Section 9, "os.cpu_count() and max_workers": the default worker count and 8 tasks over 4 workers.
//!
//! `cargo run --release -p cf-demos --bin s09_cpu_count -- --backend process|thread|both`

fn main() -> std::process::ExitCode {
    cf_demos::main_for("s09_cpu_count")
}
