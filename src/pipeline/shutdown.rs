//! Shutdown signalling: a `watch` channel, so a late subscriber still sees it.

use tokio::sync::watch;

/// Flips every `Shutdown` once. Held by the signal handler.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Cheap to clone; `wait()` resolves once shutdown has started.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    pub async fn wait(&mut self) {
        // An error means the trigger is gone: treat that as shutdown too.
        let _ = self.0.wait_for(|v| *v).await;
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }
}

/// Lets a plugin stop the agent with an exit status (Fluent Bit's
/// `flb_engine_exit_status`, used by the expect filter's `action exit`): the pipeline
/// shuts down gracefully, as on SIGTERM, and the process exits with that status.
/// Built with the pipeline; connected to its trigger when it runs.
#[derive(Clone, Debug)]
pub struct ExitRequest(std::sync::Arc<ExitInner>);

#[derive(Debug)]
struct ExitInner {
    /// The last status asked for (Fluent Bit keeps the last), or -1.
    status: std::sync::atomic::AtomicI32,
    trigger: std::sync::OnceLock<std::sync::Arc<ShutdownTrigger>>,
}

impl ExitRequest {
    pub fn new() -> ExitRequest {
        ExitRequest(std::sync::Arc::new(ExitInner {
            status: std::sync::atomic::AtomicI32::new(-1),
            trigger: std::sync::OnceLock::new(),
        }))
    }

    /// Starts the shutdown; the agent then exits with `status`.
    pub fn exit(&self, status: u8) {
        self.0
            .status
            .store(i32::from(status), std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.0.trigger.get() {
            t.trigger();
        }
    }

    /// The status asked for, if any.
    pub fn status(&self) -> Option<u8> {
        u8::try_from(self.0.status.load(std::sync::atomic::Ordering::Relaxed)).ok()
    }

    pub(crate) fn connect(&self, trigger: std::sync::Arc<ShutdownTrigger>) {
        if self.status().is_some() {
            trigger.trigger();
        }
        let _ = self.0.trigger.set(trigger);
    }
}

impl Default for ExitRequest {
    fn default() -> Self {
        ExitRequest::new()
    }
}
