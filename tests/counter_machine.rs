//! The seeds' counter through `step::run`, without a loop.

#[path = "../examples/counter/machine.rs"]
mod machine;

use machine::{Counter, Input, Output};
use ringvisor::behaviours::step::run;

#[test]
fn increments_then_read_gives_the_count() {
    assert_eq!(
        run::<Counter>(0, [Input::Increment, Input::Increment, Input::Read]),
        Some(Output::Value(2))
    );
}

#[test]
fn increment_acks() {
    assert_eq!(
        run::<Counter>(0, [Input::Increment, Input::Increment]),
        Some(Output::Ack)
    );
}

#[test]
fn reset_goes_back_to_zero() {
    assert_eq!(
        run::<Counter>(0, [Input::Increment, Input::Reset, Input::Read]),
        Some(Output::Value(0))
    );
}

#[test]
#[should_panic(expected = "already 0")]
fn reset_of_zero_is_the_deliberate_bug() {
    run::<Counter>(0, [Input::Reset, Input::Reset, Input::Read]);
}
