//! `call_catching` reports the location and backtrace of the panic that reached it: for every
//! kind of payload, and when a destructor runs another `call_catching` while the panic unwinds.

use cf_executor_api::{call_catching, TaskError};

fn location_of(outcome: Result<(), TaskError>) -> (String, Option<String>) {
    match outcome {
        Err(TaskError::Panicked {
            message, location, ..
        }) => (message, location),
        other => panic!("expected Panicked, got {other:?}"),
    }
}

#[test]
fn every_payload_kind_gets_its_location() {
    let literal = line!() + 1;
    let (message, location) = location_of(call_catching(|| panic!("a literal")));
    assert_eq!(message, "a literal");
    assert!(location.unwrap().contains(&format!(".rs:{literal}:")));

    let formatted = line!() + 1;
    let (message, location) = location_of(call_catching(|| panic!("formatted {}", 1)));
    assert_eq!(message, "formatted 1");
    assert!(location.unwrap().contains(&format!(".rs:{formatted}:")));

    let any = line!() + 1;
    let (message, location) = location_of(call_catching(|| std::panic::panic_any(42_u32)));
    assert_eq!(message, "<non-string panic payload>");
    assert!(location.unwrap().contains(&format!(".rs:{any}:")));

    let owned = line!() + 1;
    let (_, location) = location_of(call_catching(|| std::panic::panic_any(String::from("s"))));
    assert!(location.unwrap().contains(&format!(".rs:{owned}:")));
}

/// Runs a task of its own while the enclosing task's panic unwinds.
struct RunsATaskOnDrop;

impl Drop for RunsATaskOnDrop {
    fn drop(&mut self) {
        let (message, location) = location_of(call_catching(|| panic!("in the destructor")));
        assert_eq!(message, "in the destructor");
        assert!(location.is_some());
    }
}

#[test]
fn a_nested_call_during_unwinding_keeps_the_outer_panics_location() {
    let outer = line!() + 3;
    let (message, location) = location_of(call_catching(|| {
        let _guard = RunsATaskOnDrop;
        panic!("the outer task {}", 1);
    }));
    assert_eq!(message, "the outer task 1");
    let location = location.expect("the outer panic's location");
    assert!(location.contains(&format!(".rs:{outer}:")), "{location}");
}
