//! `InlineTask`: a call stored in its future's allocation behaves as a promise plus a job.
#![cfg(not(loom))] // loom's `Arc` cannot be unsized: no inline tasks under loom

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cf_futures_core::{InlineTask, State, TaskError};

#[test]
fn runs_then_publishes_the_outcome() {
    let (mut task, future) = InlineTask::new(|| Ok(String::from("done")));
    assert_eq!(future.state(), State::Pending);
    task.run();
    assert_eq!(
        future.state(),
        State::Running,
        "run keeps the outcome unpublished"
    );
    task.publish().unwrap();
    assert_eq!(future.result(), Ok(&String::from("done")));
    assert_eq!(future.try_unwrap().ok(), Some(Ok(String::from("done"))));
}

#[test]
fn a_second_run_keeps_the_first_outcome_for_publish() {
    let (mut task, future) = InlineTask::new(|| Ok(7_u8));
    task.run();
    task.run();
    task.publish().unwrap();
    assert_eq!(future.result_timeout(Duration::from_secs(10)), Ok(&7));
}

#[test]
fn a_cancelled_task_does_not_run() {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let (mut task, future) = InlineTask::new(move || {
        flag.store(true, Ordering::SeqCst);
        Ok(())
    });
    assert!(future.cancel());
    task.run();
    task.publish().unwrap();
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(future.result(), Err(TaskError::Cancelled));
}

#[test]
fn dropped_unpublished_breaks_the_future_and_drops_the_call() {
    let captured = Arc::new(());
    let held = Arc::clone(&captured);
    let (task, future) = InlineTask::new(move || Ok(Arc::strong_count(&held)));
    drop(task);
    assert!(matches!(future.result(), Err(TaskError::Broken { .. })));
    // The call's captures went with the task, although the future (and so the allocation
    // they sat in) lives on.
    assert_eq!(Arc::strong_count(&captured), 1);
    drop(future);
}

#[test]
fn ran_but_dropped_unpublished_breaks_the_future() {
    let (mut task, future) = InlineTask::new(|| Ok(1));
    task.run();
    drop(task);
    assert!(matches!(future.result(), Err(TaskError::Broken { .. })));
}

#[test]
fn abandon_cancels_or_fails() {
    let captured = Arc::new(());
    let held = Arc::clone(&captured);
    let (task, future) = InlineTask::new(move || Ok(Arc::strong_count(&held)));
    task.abandon(None);
    assert_eq!(future.result(), Err(TaskError::Cancelled));
    assert_eq!(
        Arc::strong_count(&captured),
        1,
        "the call is dropped when abandoned"
    );

    let (task, future) = InlineTask::new(|| Ok(1));
    task.abandon(Some(TaskError::Broken {
        reason: "gone".into(),
    }));
    assert!(matches!(future.result(), Err(TaskError::Broken { .. })));
}

#[test]
fn callbacks_run_on_publish() {
    let (mut task, future) = InlineTask::new(|| Ok(3_u8));
    let seen = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&seen);
    future.add_done_callback(move |f| flag.store(f.result() == Ok(&3), Ordering::SeqCst));
    assert!(task.has_done_callbacks());
    task.run();
    assert!(!seen.load(Ordering::SeqCst));
    task.publish().unwrap();
    assert!(seen.load(Ordering::SeqCst));
}

#[test]
fn a_task_error_outcome_is_the_future_error() {
    let (mut task, future) =
        InlineTask::new(|| -> Result<u8, TaskError> { Err(TaskError::Cancelled) });
    task.run();
    task.publish().unwrap();
    assert_eq!(future.exception(), Some(TaskError::Cancelled));
    assert_eq!(future.state(), State::Finished);
}

#[test]
fn run_and_publish_readies_once_and_publishes() {
    let (task, future) = InlineTask::new(|| Ok(5_u32));
    let mut readied = 0;
    // `ready` runs under the future's lock: it must not look at the future.
    task.run_and_publish(&mut || readied += 1).unwrap();
    assert_eq!(readied, 1);
    assert_eq!(future.result(), Ok(&5));
    assert_eq!(future.try_unwrap().ok(), Some(Ok(5)));
}

#[test]
fn run_and_publish_readies_after_the_done_callbacks() {
    let (task, future) = InlineTask::new(|| Ok(5_u32));
    let called = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&called);
    future.add_done_callback(move |_| flag.store(true, Ordering::SeqCst));
    let mut seen = Vec::new();
    task.run_and_publish(&mut || seen.push(called.load(Ordering::SeqCst)))
        .unwrap();
    assert_eq!(seen, [true], "called once, after the callback ran");
    assert_eq!(future.result(), Ok(&5));
}

#[test]
fn run_and_publish_readies_a_cancelled_task_without_running_it() {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let (task, future) = InlineTask::new(move || {
        flag.store(true, Ordering::SeqCst);
        Ok(())
    });
    assert!(future.cancel());
    let mut readied = 0;
    task.run_and_publish(&mut || readied += 1).unwrap();
    assert_eq!(readied, 1);
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(future.result(), Err(TaskError::Cancelled));
}

#[test]
fn run_and_publish_after_run_publishes_what_run_kept() {
    let (mut task, future) = InlineTask::new(|| Ok(String::from("kept")));
    task.run();
    let mut readied = 0;
    task.run_and_publish(&mut || readied += 1).unwrap();
    assert_eq!(readied, 1);
    assert_eq!(future.result(), Ok(&String::from("kept")));
}
