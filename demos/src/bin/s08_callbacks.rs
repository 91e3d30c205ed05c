//! Section 8, "Callbacks on Futures": factorials reported by `add_done_callback` callbacks.
//!
//! `cargo run --release -p cf-demos --bin s08_callbacks -- --backend process|thread|both`

fn main() -> std::process::ExitCode {
    cf_demos::main_for("s08_callbacks")
}
