//! Section 5, "as_completed()": futures yielded in completion order, shortest task first.
//!
//! `cargo run --release -p cf-demos --bin s05_as_completed -- --backend process|thread|both`

fn main() -> std::process::ExitCode {
    cf_demos::main_for("s05_as_completed")
}
