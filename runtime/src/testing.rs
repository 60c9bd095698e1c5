//! Test support: run one test body on every backend.
//!
//! ```
//! ringvisor_runtime::backend_tests! {
//!     fn nop_completes(backend) {
//!         let mut lp = ringvisor_runtime::Loop::builder().backend(backend).build().unwrap();
//!         lp.nop(|_, res| res.unwrap());
//!         lp.run().unwrap();
//!     }
//! }
//! ```

use crate::Backend;

/// The backends every backend-dependent test runs on.
pub const BACKENDS: [Backend; 2] = [Backend::Uring, Backend::Poll];

/// Defines, for each `fn name(backend) { body }`, a module `name` with one
/// `#[test]` per backend (`name::uring`, `name::poll`) running `body` with
/// `backend` bound to that [`Backend`].
#[macro_export]
macro_rules! backend_tests {
    ($( $(#[$meta:meta])* fn $name:ident($backend:ident) $body:block )*) => {
        $(
            #[allow(non_snake_case)]
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                fn run($backend: $crate::Backend) $body
                $(#[$meta])*
                #[test]
                fn uring() {
                    run($crate::Backend::Uring)
                }
                $(#[$meta])*
                #[test]
                fn poll() {
                    run($crate::Backend::Poll)
                }
            }
        )*
    };
}
