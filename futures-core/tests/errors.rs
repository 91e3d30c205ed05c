//! How `TaskError` reads: its `Display` for each case a user meets.

use cf_futures_core::{ExitCause, TaskError};

#[test]
fn worker_died_names_the_last_panic_when_there_was_one() {
    let plain = TaskError::WorkerDied {
        pid: 42,
        cause: ExitCause::Signal(6),
        last_panic: None,
    };
    let text = plain.to_string();
    assert!(
        text.starts_with("worker process 42 died while holding this task (killed by signal 6 (SIGABRT)); the pool replaced"),
        "{text}"
    );
    assert!(!text.contains("panic that"), "{text}");

    let panicked = TaskError::WorkerDied {
        pid: 42,
        cause: ExitCause::Signal(6),
        last_panic: Some("panicked at src/x.rs:3:5: boom".into()),
    };
    let text = panicked.to_string();
    assert!(
        text.starts_with(
            "worker process 42 died while holding this task (killed by signal 6 (SIGABRT)) after \
             a panic that could not unwind: panicked at src/x.rs:3:5: boom; the pool replaced"
        ),
        "{text}"
    );
}
