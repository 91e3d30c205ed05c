//! A task that captures variables is refused when the program is compiled, with the same
//! message on every path (`submit`, `submit_batch`, `map` with and without `chunksize`,
//! `submit_with_timeout`, `Pool`):
//!
//! * `ui/check/`: captures that are not `Copy + Send + Sync + 'static` fail the `Task` bound,
//!   so `cargo check` (what trybuild runs for a group of only failing cases) reports them; a
//!   closure that borrows a local is a lifetime error there (E0373); so is a result that is
//!   not serde (`std::io::Error`), with the recipe for errors;
//! * `ui/build/`: `Copy` captures meet the bounds and are caught by their size after
//!   monomorphisation, which only `cargo build` reaches (the passing case in that group makes
//!   trybuild build rather than check), and so are fn pointers.
//!   `ui/build_cluster/` holds the `Pool` case as built with the feature `cluster`.
//!
//! The expected compiler output is in the `.stderr` files beside each case; regenerate them
//! with `TRYBUILD=overwrite cargo test -p concurrent-futures --test compile_fail` after a
//! deliberate change of the messages (and of nothing else).

#[test]
#[cfg_attr(miri, ignore = "runs the compiler")]
fn capturing_closures_are_refused_with_one_message() {
    {
        let check = trybuild::TestCases::new();
        check.compile_fail("tests/ui/check/*.rs");
    } // runs `cargo check` over the group
    {
        let build = trybuild::TestCases::new();
        build.pass("tests/ui/build/non_capturing_tasks_build.rs");
        for case in [
            "map_captures_copy",
            "map_chunksize_captures_copy",
            "submit_batch_captures_copy",
            "submit_captures_copy",
            "submit_with_timeout_captures_copy",
            "submit_fn_pointer",
        ] {
            build.compile_fail(format!("tests/ui/build/{case}.rs"));
        }
        // `Pool::submit` reaches the check through every backend it holds; with `cluster`
        // (which cf-demos turns on, so in `cargo test --workspace` too) rustc names the
        // cluster's instantiation instead of the process pool's: same error, another note.
        #[cfg(not(feature = "cluster"))]
        build.compile_fail("tests/ui/build/pool_submit_captures_copy.rs");
        #[cfg(feature = "cluster")]
        build.compile_fail("tests/ui/build_cluster/pool_submit_captures_copy.rs");
    } // runs `cargo build` over the group
}
