//! How `TaskError` reads: its `Display` for each case a user meets.

use cf_futures_core::{CodecStage, ExitCause, TaskError};

#[test]
fn worker_died_names_the_last_panic_when_there_was_one() {
    let plain = TaskError::WorkerDied {
        pid: 42,
        cause: ExitCause::Signal(6),
        last_panic: None,
    };
    let text = plain.to_string();
    assert!(
        text.starts_with("worker process 42 died while holding this task (killed by signal 6 (SIGABRT)). Unless the pool's workers were stopped on purpose"),
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
             a panic that could not unwind: panicked at src/x.rs:3:5: boom. Unless"
        ),
        "{text}"
    );
}

fn panicked() -> TaskError {
    TaskError::Panicked {
        message: "boom".into(),
        location: Some("src/x.rs:3:5".into()),
        backtrace: Some(
            "   0: app::task\n             at ./src/x.rs:3:5\n   1: app::main\n             at ./src/main.rs:9:1\n"
                .into(),
        ),
    }
}

const FIRST_LINE: &str = "Panicked: task panicked at src/x.rs:3:5: boom (the panic was caught; \
                          the worker lives on; fix the task or handle this error where you read \
                          the result)";

fn backtraces_wanted() -> bool {
    std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0")
}

/// The backtrace as lines of its own, not one escaped string.
fn assert_backtrace_on_own_lines(text: &str) {
    assert!(!text.contains("\\n"), "escaped newlines:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == "stack backtrace of the task:")
        .unwrap_or_else(|| panic!("no backtrace header:\n{text}"));
    assert_eq!(
        &lines[start + 1..],
        [
            "   0: app::task",
            "             at ./src/x.rs:3:5",
            "   1: app::main",
            "             at ./src/main.rs:9:1"
        ]
    );
}

#[test]
fn debug_puts_kind_message_and_location_on_one_line() {
    let text = format!("{:?}", panicked());
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(FIRST_LINE));
    if backtraces_wanted() {
        assert_backtrace_on_own_lines(&text);
    } else {
        assert_eq!(
            lines.collect::<Vec<_>>(),
            [
                "note: the task's backtrace was captured; set RUST_BACKTRACE=1 or format this \
              error with {:#?} to see it"
            ]
        );
    }
}

#[test]
fn alternate_debug_shows_the_backtrace_on_lines_of_its_own() {
    let text = format!("{:#?}", panicked());
    assert_eq!(text.lines().next(), Some(FIRST_LINE));
    assert_backtrace_on_own_lines(&text);
}

#[test]
fn debug_without_a_backtrace_is_one_line() {
    let error = TaskError::Panicked {
        message: "boom".into(),
        location: None,
        backtrace: None,
    };
    assert_eq!(
        format!("{error:?}"),
        "Panicked: task panicked: boom (the panic was caught; the worker lives on; fix the task \
         or handle this error where you read the result)"
    );
    assert_eq!(format!("{error:#?}"), format!("{error:?}"));
    for error in [
        TaskError::Cancelled,
        TaskError::timeout(std::time::Duration::from_millis(5)),
        TaskError::WorkerDied {
            pid: 7,
            cause: ExitCause::Code(3),
            last_panic: None,
        },
        TaskError::Broken {
            reason: "init failed".into(),
        },
        TaskError::NodeFailed {
            node: Some("host:42:abc".into()),
            deliveries: Some(3),
            reason: "it stopped answering".into(),
        },
        TaskError::WorkerStartFailed {
            reason: "Too many open files (os error 24)".into(),
        },
    ] {
        let text = format!("{error:?}");
        assert!(!text.contains('\n'), "{text}");
        assert!(text.ends_with(&error.to_string()), "{text}");
    }
    assert!(format!("{:?}", TaskError::Cancelled).starts_with("Cancelled: task was cancelled"));
}

/// What `unwrap()` prints: the readable form, not a struct dump with an escaped backtrace.
#[test]
fn unwrap_prints_the_readable_form() {
    let failed: Result<(), TaskError> = std::hint::black_box(Err(panicked()));
    let payload = std::panic::catch_unwind(|| failed.unwrap()).unwrap_err();
    let message = cf_futures_core::panic_message(payload.as_ref());
    assert_eq!(
        message.lines().next().unwrap(),
        format!("called `Result::unwrap()` on an `Err` value: {FIRST_LINE}")
    );
    assert!(!message.contains("\\n"), "{message}");
}

/// A node-level failure names the node and the deliveries when known, and says the executor
/// lives on (unlike `Broken`, which says to create a new one).
#[test]
fn node_failed_names_the_node_and_says_the_executor_lives_on() {
    let named = TaskError::NodeFailed {
        node: Some("host:42:abc".into()),
        deliveries: Some(3),
        reason: "it stopped answering".into(),
    };
    assert_eq!(
        named.to_string(),
        "cluster node host:42:abc failed this task (delivered 3 times): it stopped answering; \
         the executor is not broken: later tasks still run on live nodes of this build"
    );
    assert!(format!("{named:?}").starts_with("NodeFailed: cluster node host:42:abc failed"));
    let once = TaskError::NodeFailed {
        node: Some("h:1:x".into()),
        deliveries: Some(1),
        reason: "r".into(),
    };
    assert!(once
        .to_string()
        .starts_with("cluster node h:1:x failed this task (delivered once): r;"));
    let nobody = TaskError::NodeFailed {
        node: None,
        deliveries: None,
        reason: "no node of this build is alive".into(),
    };
    assert_eq!(
        nobody.to_string(),
        "no cluster node ran this task: no node of this build is alive; the executor is not \
         broken: later tasks still run on live nodes of this build"
    );
    assert!(!nobody.to_string().contains("create a new executor"));
}

/// A codec failure points at the type's serde impls, unless the system refused something (the
/// message ends with an operating system error): then the type is not the problem.
#[test]
fn codec_errors_blame_the_type_only_when_the_system_did_not_refuse() {
    let by_type = TaskError::Codec {
        stage: CodecStage::DeserializeArgument,
        message: "invalid value".into(),
    };
    assert!(
        by_type
            .to_string()
            .contains("Serialize and Deserialize agree"),
        "{by_type}"
    );
    let by_system = TaskError::Codec {
        stage: CodecStage::SerializeArgument,
        message: "a buffer could not be placed: Too many open files (os error 24)".into(),
    };
    let text = by_system.to_string();
    assert!(!text.contains("Serialize and Deserialize"), "{text}");
    assert!(text.ends_with("(os error 24)"), "{text}");
    // Refused, though the system's error is no longer known.
    let refused = TaskError::Codec {
        stage: CodecStage::DeserializeResult,
        message: "a buffer was lost in transit: the system refused this process the descriptor \
                  it came with (a descriptor can be made again now)"
            .into(),
    };
    let text = refused.to_string();
    assert!(!text.contains("Serialize and Deserialize"), "{text}");
    // A cluster's server that refused a payload, or did not give one back.
    for message in [
        "the server refused to store the result 8 times (its JetStream storage may be full): \
         no stream found for given subject",
        "cannot read payload c.1.argument from the object store: the server sent nothing for 30s",
    ] {
        let by_server = TaskError::Codec {
            stage: CodecStage::SerializeResult,
            message: message.into(),
        };
        let text = by_server.to_string();
        assert!(!text.contains("Serialize and Deserialize"), "{text}");
    }
}
