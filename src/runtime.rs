//! A thread of its own with a single-threaded tokio runtime, for work that must not
//! wait on the engine's runtime nor make it wait: metadata fetchers and watches, whose
//! users may look things up from any runtime (or none).

use std::future::Future;

/// Runs `task()` to completion on a new thread named `name`, on its own current-thread
/// runtime. Returns whether the thread started; failures are logged with `what` (`[filter:aws]
/// metadata fetcher`).
pub fn spawn<F, Fut>(name: &str, what: &str, task: F) -> bool
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let who = what.to_string();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(task()),
                Err(e) => crate::error!("{who}: cannot start its runtime: {e}"),
            }
        });
    if let Err(e) = &spawned {
        crate::error!("{what}: cannot start its thread: {e}");
    }
    spawned.is_ok()
}
