//! Section 1, "ProcessPoolExecutor Basics": `cpu_count()` and squares computed with `map`.
//!
//! `cargo run --release -p cf-demos --bin s01_basics -- --backend process|thread|both`

fn main() -> std::process::ExitCode {
    cf_demos::main_for("s01_basics")
}
