//! The seeds' sequential view: a state machine `step(input, &mut state) ->
//! output`, served as a gen_server, and `run` to test it without a loop.
//!
//! ```
//! use ringvisor_behaviours::step::{self, StateMachine};
//!
//! #[derive(Debug, PartialEq)]
//! enum Out { Ack, Value(u64) }
//! enum In { Increment, Read }
//! struct Counter;
//! impl StateMachine for Counter {
//!     type State = u64;
//!     type Input = In;
//!     type Output = Out;
//!     fn step(input: In, n: &mut u64) -> Out {
//!         match input {
//!             In::Increment => { *n += 1; Out::Ack }
//!             In::Read => Out::Value(*n),
//!         }
//!     }
//! }
//! assert_eq!(step::run::<Counter>(0, [In::Increment, In::Increment, In::Read]), Some(Out::Value(2)));
//! ```

use std::marker::PhantomData;

use crate::call::From;
use crate::gen_server::{Ctx, GenServer, Init, Reply};

/// A sequential state machine: `input -> state -> (state, output)`.
pub trait StateMachine: 'static {
    /// The state.
    type State: 'static;
    /// What it takes.
    type Input: 'static;
    /// What it answers.
    type Output: 'static;

    /// One step. A panic here is a crash: served as a gen_server, the
    /// process ends and its supervisor restarts it.
    fn step(input: Self::Input, state: &mut Self::State) -> Self::Output;
}

/// Runs `inputs` through the machine from `state`; the last output (`None`
/// for no inputs). Panics propagate, so a test can expect them.
pub fn run<M: StateMachine>(
    mut state: M::State,
    inputs: impl IntoIterator<Item = M::Input>,
) -> Option<M::Output> {
    let mut last = None;
    for input in inputs {
        last = Some(M::step(input, &mut state));
    }
    last
}

/// A state machine served as a gen_server: calls are inputs, replies outputs.
pub struct Stepper<M: StateMachine> {
    state: M::State,
    _machine: PhantomData<M>,
}

impl<M: StateMachine> Stepper<M> {
    /// The current state (for status pages and tests).
    pub fn state(&self) -> &M::State {
        &self.state
    }
}

impl<M: StateMachine> GenServer for Stepper<M> {
    type Args = M::State;
    type Call = M::Input;
    type Reply = M::Output;
    type Cast = M::Input;
    type Info = ();
    type Continue = ();

    fn init(state: M::State, _ctx: &mut Ctx<Self>) -> Init<Self> {
        Init::ok(Stepper {
            state,
            _machine: PhantomData,
        })
    }

    fn handle_call(
        &mut self,
        input: M::Input,
        _from: From<M::Output>,
        _ctx: &mut Ctx<Self>,
    ) -> Reply<Self> {
        Reply::now(M::step(input, &mut self.state))
    }

    fn handle_cast(
        &mut self,
        input: M::Input,
        _ctx: &mut Ctx<Self>,
    ) -> crate::gen_server::Next<Self> {
        M::step(input, &mut self.state);
        crate::gen_server::Next::Wait
    }
}
