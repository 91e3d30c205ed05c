//! Section 6, "Error Handling with Futures": a failure as a domain `Result` and as a `TaskError::Panicked`.
//!
//! `cargo run --release -p cf-demos --bin s06_errors -- --backend process|thread|both`

fn main() -> std::process::ExitCode {
    cf_demos::main_for("s06_errors")
}
