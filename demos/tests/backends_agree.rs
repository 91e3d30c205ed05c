//! Every section prints the same facts on both pools: the outputs of `ProcessPoolExecutor` and
//! `ThreadPoolExecutor` are identical once `cf_demos::normalize` has replaced worker ids
//! (`pid=N`, `thread=N`), timings (`0.123s`), speedups (`1.95x`) and bars, and dropped the
//! lines marked `[process]` / `[thread]` as different by nature.
//!
//! The sections run in-process through the library, with their output captured; a process
//! pool here re-executes this test binary as its workers. No assertion is about a duration.

use std::sync::{mpsc, Mutex};
use std::time::Duration;

use cf_demos::{normalize, section, Backend, Section, SECTIONS};

/// Far beyond any section's run time even in a debug build on a busy machine.
const DEADLINE: Duration = Duration::from_secs(240);

/// The timing-driven sections (as_completed order, the CPU comparison) run one at a time, so
/// they do not load the two cores under each other.
static TIMING: Mutex<()> = Mutex::new(());

/// Runs `section` on `backend` in a helper thread and returns its output, failing the test
/// if the section fails or does not finish before [`DEADLINE`].
fn output(section: &'static Section, backend: Backend) -> String {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let result = section.run_on(backend, &mut out).map_err(|e| e.to_string());
        let _ = sender.send(result.map(|()| out));
    });
    match receiver.recv_timeout(DEADLINE) {
        Ok(Ok(bytes)) => String::from_utf8(bytes).expect("demo output is UTF-8"),
        Ok(Err(e)) => panic!("{} on {backend} failed: {e}", section.binary),
        Err(_) => panic!(
            "{} on {backend} did not finish in {DEADLINE:?}",
            section.binary
        ),
    }
}

fn assert_backends_agree(binary: &str) {
    let section = section(binary).expect("a section of that name");
    let _timing =
        matches!(section.number, 5 | 7).then(|| TIMING.lock().unwrap_or_else(|e| e.into_inner()));
    let process = output(section, Backend::Process);
    let thread = output(section, Backend::Thread);
    assert!(!process.trim().is_empty(), "{binary} printed nothing");
    assert!(
        !process.contains("[thread]"),
        "{binary} on processes printed a [thread] line:\n{process}"
    );
    assert!(
        !thread.contains("[process]"),
        "{binary} on threads printed a [process] line:\n{thread}"
    );

    for (out, marker) in [(&process, "[process]"), (&thread, "[thread]")] {
        let marked = out
            .lines()
            .filter(|l| l.trim_start().starts_with(marker))
            .count();
        assert!(
            marked <= 4,
            "{binary}: {marked} lines marked {marker}; keep them few"
        );
    }

    let (p, t) = (normalize(&process), normalize(&thread));
    if p != t {
        let (line, (a, b)) = p
            .lines()
            .zip(t.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map_or(
                (p.lines().count().min(t.lines().count()), ("<end>", "<end>")),
                |(i, l)| (i, l),
            );
        panic!(
            "{binary}: the backends disagree at normalised line {}:\n  process: {a}\n  thread:  {b}\n\n\
             --- process output ---\n{process}\n--- thread output ---\n{thread}",
            line + 1
        );
    }
}

macro_rules! agree {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                assert_backends_agree(stringify!($name));
            }
        )*

        #[test]
        fn every_section_is_tested_in_chapter_order() {
            let tested = [$(stringify!($name)),*];
            let sections: Vec<&str> = SECTIONS.iter().map(|s| s.binary).collect();
            assert_eq!(sections, tested);
            for (i, s) in SECTIONS.iter().enumerate() {
                assert_eq!(usize::from(s.number), i + 1, "{} is out of order", s.binary);
            }
        }
    };
}

agree!(
    s01_basics,
    s02_map_order,
    s03_submit_future,
    s04_map_vs_submit,
    s05_as_completed,
    s06_errors,
    s07_cpu_vs_io,
    s08_callbacks,
    s09_cpu_count,
    s10_pipeline,
);
