//! Section 4, "map() vs submit()": one batch with a failing item both ways, and the comparison table.
//!
//! `cargo run --release -p cf-demos --bin s04_map_vs_submit -- --backend process|thread|both`

fn main() -> std::process::ExitCode {
    cf_demos::main_for("s04_map_vs_submit")
}
