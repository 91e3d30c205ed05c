//! Section 10, "Practical": 15 records via `submit` + `as_completed`, successes and failures apart.
//!
//! `cargo run --release -p cf-demos --bin s10_pipeline -- --backend process|thread|both`

fn main() -> std::process::ExitCode {
    cf_demos::main_for("s10_pipeline")
}
