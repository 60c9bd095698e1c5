//! Clients outside the loop: call and cast a gen_server from other threads.
//!
//! ```
//! use ringvisor_behaviours::gen_server::{self, StartOptions};
//! use ringvisor_behaviours::remote::ServerHandle;
//! use ringvisor_behaviours::step::{StateMachine, Stepper};
//! use std::time::Duration;
//!
//! struct Adder;
//! impl StateMachine for Adder {
//!     type State = u64; type Input = u64; type Output = u64;
//!     fn step(n: u64, total: &mut u64) -> u64 { *total += n; *total }
//! }
//!
//! let mut lp = ringvisor_runtime::Loop::new().unwrap();
//! let server = gen_server::start::<Stepper<Adder>>(&mut lp, 0, StartOptions::default()).unwrap();
//! let handle = ServerHandle::new(lp.handle(), server);
//! let client = std::thread::spawn(move || {
//!     let reply = handle.call(5, Duration::from_secs(5));
//!     handle.stop_loop();
//!     reply
//! });
//! lp.timer(Duration::from_secs(10), |_| {}); // keep the loop alive for the client
//! lp.run().unwrap();
//! assert_eq!(client.join().unwrap(), Ok(5));
//! ```

use std::sync::mpsc;
use std::time::Duration;

use ringvisor_runtime::LoopHandle;

use crate::call::CallError;
use crate::gen_server::{self, GenServer, ServerRef};
use crate::process::SendError;

/// Which server a handle talks to.
enum Target<S> {
    Ref(ServerRef<S>),
    /// Looked up by registered name at each request, so a supervised server
    /// restarted under a new Pid is found again.
    Name(std::sync::Arc<str>),
}

impl<S> Clone for Target<S> {
    fn clone(&self) -> Self {
        match self {
            Target::Ref(r) => Target::Ref(*r),
            Target::Name(n) => Target::Name(n.clone()),
        }
    }
}

impl<S> Target<S> {
    fn resolve(&self, lp: &mut ringvisor_runtime::Loop) -> Option<ServerRef<S>> {
        match self {
            Target::Ref(r) => Some(*r),
            Target::Name(name) => crate::process::whereis(lp, name).map(ServerRef::from_pid),
        }
    }
}

/// A `Send + Sync + Clone` handle to a gen_server for other threads.
pub struct ServerHandle<S> {
    handle: LoopHandle,
    target: Target<S>,
}

impl<S> Clone for ServerHandle<S> {
    fn clone(&self) -> Self {
        ServerHandle {
            handle: self.handle.clone(),
            target: self.target.clone(),
        }
    }
}

impl<S: GenServer> ServerHandle<S>
where
    S::Call: Send,
    S::Reply: Send,
    S::Cast: Send,
{
    /// A handle to `server` on the loop behind `handle`.
    pub fn new(handle: LoopHandle, server: ServerRef<S>) -> ServerHandle<S> {
        ServerHandle {
            handle,
            target: Target::Ref(server),
        }
    }

    /// A handle to whichever server is registered as `name` at each request.
    pub fn named(handle: LoopHandle, name: &str) -> ServerHandle<S> {
        ServerHandle {
            handle,
            target: Target::Name(name.into()),
        }
    }

    /// Calls the server and blocks this thread for the reply, at most
    /// `timeout` (the same timeout bounds the call inside the loop).
    pub fn call(&self, request: S::Call, timeout: Duration) -> Result<S::Reply, CallError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let target = self.target.clone();
        self.handle
            .post(move |lp| match target.resolve(lp) {
                Some(server) => gen_server::call(lp, server, request, timeout, move |_, reply| {
                    let _ = tx.send(reply);
                }),
                None => {
                    let _ = tx.send(Err(CallError::NoProc));
                }
            })
            .map_err(|_| CallError::NoProc)?;
        // The loop answers by `timeout` (its own timer); the margin covers a
        // loop that is busy or gone.
        match rx.recv_timeout(timeout.saturating_add(Duration::from_secs(1))) {
            Ok(reply) => reply,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(CallError::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CallError::NoProc),
        }
    }

    /// Casts to the server. Only a gone loop is reported here; a full
    /// mailbox or dead server drops the message (like a cast in OTP).
    pub fn cast(&self, message: S::Cast) -> Result<(), SendError> {
        let target = self.target.clone();
        self.handle
            .post(move |lp| {
                let result = match target.resolve(lp) {
                    Some(server) => gen_server::cast(lp, server, message),
                    None => Err(SendError::NoProc),
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "remote cast refused");
                }
            })
            .map_err(|_| SendError::NoProc)
    }

    /// Stops the loop this server runs on.
    pub fn stop_loop(&self) {
        self.handle.stop();
    }
}
