//! The whole chapter: all ten sections in order, each under a heading, on both pools.
//!
//! `cargo run --release -p cf-demos --bin tour -- --backend process|thread|both`

fn main() -> std::process::ExitCode {
    cf_demos::tour_main()
}
