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
