//! The counter's sequential core, shared by the example and its unit tests.

use ringvisor::behaviours::step::StateMachine;

/// Inputs of the counter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    Increment,
    Read,
    Reset,
}

/// Outputs of the counter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Output {
    Ack,
    Value(u64),
}

/// The sequential core: `input -> state -> (state, output)`.
pub struct Counter;

impl StateMachine for Counter {
    type State = u64;
    type Input = Input;
    type Output = Output;

    fn step(input: Input, n: &mut u64) -> Output {
        match input {
            Input::Increment => {
                *n += 1;
                Output::Ack
            }
            Input::Read => Output::Value(*n),
            Input::Reset => {
                assert!(*n != 0, "reset of a counter that is already 0");
                *n = 0;
                Output::Ack
            }
        }
    }
}
