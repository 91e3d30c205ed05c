//! `cf_demos::normalize` replaces exactly the variable tokens and keeps every fact.

use cf_demos::normalize;

#[test]
fn worker_ids_and_their_lists_become_one_token() {
    assert_eq!(
        normalize("  3^2 = 9 (worker pid=4242)"),
        "  3^2 = 9 (worker <id>)\n"
    );
    assert_eq!(normalize("Main: thread=1"), "Main: <id>\n");
    assert_eq!(
        normalize("Unique workers: {pid=1, pid=2, pid=3}"),
        normalize("Unique workers: {thread=9}")
    );
    assert_eq!(
        normalize("  Workers: [thread=4, thread=5, thread=5]"),
        "  Workers: [<id>]\n"
    );
}

#[test]
fn timings_speedups_and_bars_become_tokens() {
    assert_eq!(
        normalize("[x] Sequential  1.601s  speedup  1.00x  │████▍   │"),
        "[x] Sequential <t>  speedup <x>  │<bar>│\n"
    );
    assert_eq!(
        normalize("  Task 4 completed (took 0.10s), 0.103s after submit"),
        "  Task 4 completed (took <t>), <t> after submit\n"
    );
}

/// A right-aligned column is padded by the width of its value: ten seconds and more, or a
/// speedup of ten and more, take one character more and one space less.
#[test]
fn padding_before_a_timing_or_speedup_does_not_count() {
    assert_eq!(
        normalize("  Sequential  28.642s  speedup 26.89x  │██│"),
        normalize("  Sequential   1.052s  speedup  1.00x  │█ │")
    );
    assert_eq!(
        normalize("Sequential   1.052s"),
        "Sequential <t>\n",
        "a run of spaces becomes one"
    );
    assert_eq!(normalize("took 0.10s"), "took <t>\n");
    assert_eq!(normalize("(took 0.10s)"), "(took <t>)\n");
}

#[test]
fn facts_stay() {
    for line in [
        "Record 5: value=50",
        "  100 / 0 -> task panicked: attempt to divide by zero",
        "cpu_count(): 2",
        "Squares: [1, 4, 9, 16, 25]",
        "  10.0 / 2.0 = 5.0",
        "8 x io_heavy(0.2) (a 0.2-second wait)",
        "pid=12a stays: not a worker token",
        "version 1.2.3x stays",
    ] {
        assert_eq!(normalize(line), format!("{line}\n"), "{line:?} was changed");
    }
    assert_ne!(
        normalize("  Task 4 completed"),
        normalize("  Task 3 completed")
    );
    assert_ne!(normalize("Done: false"), normalize("Done: true"));
}

#[test]
fn only_marked_lines_are_dropped() {
    let text = "a\n[process] pids differ: true\n  [thread] indented marker\n[cluster] on a node\n\
                b [thread] not at start\n[clusters] not a marker\n";
    assert_eq!(
        normalize(text),
        "a\nb [thread] not at start\n[clusters] not a marker\n"
    );
}
