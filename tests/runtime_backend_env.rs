//! Backend selection through `RINGVISOR_BACKEND`.
//!
//! The environment is process-global: every test here holds [`ENV_LOCK`]
//! while it sets the variable, and puts back what was there before.

use std::ffi::OsString;
use std::sync::{Mutex, MutexGuard};

use ringvisor::{Backend, Loop};

static ENV_LOCK: Mutex<()> = Mutex::new(());

const VAR: &str = "RINGVISOR_BACKEND";

/// Holds the lock and restores the variable on drop.
struct EnvGuard {
    old: Option<OsString>,
    _lock: MutexGuard<'static, ()>,
}

impl EnvGuard {
    fn take() -> EnvGuard {
        let lock = ENV_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        EnvGuard {
            old: std::env::var_os(VAR),
            _lock: lock,
        }
    }

    fn set(&self, value: Option<&str>) {
        match value {
            Some(v) => std::env::set_var(VAR, v),
            None => std::env::remove_var(VAR),
        }
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        match self.old.take() {
            Some(v) => std::env::set_var(VAR, v),
            None => std::env::remove_var(VAR),
        }
    }
}

fn backend_from_env(env: &EnvGuard, value: Option<&str>) -> std::io::Result<Backend> {
    env.set(value);
    Loop::new().map(|lp| lp.backend())
}

#[test]
fn the_variable_forces_uring_or_poll() {
    let env = EnvGuard::take();
    for value in ["uring", "io_uring", "URING"] {
        assert_eq!(
            backend_from_env(&env, Some(value)).expect(value),
            Backend::Uring
        );
    }
    for value in ["poll", "Poll", " poll "] {
        assert_eq!(
            backend_from_env(&env, Some(value)).expect(value),
            Backend::Poll
        );
    }
}

#[test]
fn auto_and_unset_probe_like_the_builder_does() {
    let env = EnvGuard::take();
    let probed = Loop::builder()
        .backend(Backend::Auto)
        .build()
        .expect("auto")
        .backend();
    assert_ne!(
        probed,
        Backend::Auto,
        "a running loop names its real backend"
    );
    assert_eq!(backend_from_env(&env, Some("auto")).expect("auto"), probed);
    assert_eq!(backend_from_env(&env, None).expect("unset"), probed);
}

#[test]
fn garbage_is_a_clear_error_not_a_panic() {
    let env = EnvGuard::take();
    let err = backend_from_env(&env, Some("iouring-please")).expect_err("unknown backend");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let message = err.to_string();
    assert!(
        message.contains(VAR) && message.contains("iouring-please"),
        "{message}"
    );
    assert!(
        message.contains("uring") && message.contains("poll"),
        "lists the choices: {message}"
    );
    assert!(
        backend_from_env(&env, Some("")).is_err(),
        "empty is not a backend"
    );
}

#[test]
fn an_explicit_builder_choice_wins_over_the_variable() {
    let env = EnvGuard::take();
    env.set(Some("garbage"));
    let lp = Loop::builder()
        .backend(Backend::Poll)
        .build()
        .expect("explicit poll");
    assert_eq!(lp.backend(), Backend::Poll);
    env.set(Some("poll"));
    let lp = Loop::builder()
        .backend(Backend::Uring)
        .build()
        .expect("explicit uring");
    assert_eq!(lp.backend(), Backend::Uring);
}
