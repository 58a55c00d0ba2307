//! A shutdown signal shared by every task of the agent.

use tokio::sync::watch;

/// The sending side: [`Shutdown::trigger`] signals every [`ShutdownListener`] to stop.
#[derive(Debug)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
}

/// The receiving side, cloned into each task.
#[derive(Clone, Debug)]
pub struct ShutdownListener {
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    /// Creates a signal that has not been triggered.
    pub fn new() -> Self {
        let (sender, _) = watch::channel(false);
        Self { sender }
    }

    /// Returns a listener for one task.
    pub fn listener(&self) -> ShutdownListener {
        ShutdownListener {
            receiver: self.sender.subscribe(),
        }
    }

    /// Tells every listener to stop. Calling it again has no effect.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownListener {
    /// Completes once shutdown has been triggered, or the [`Shutdown`] was dropped.
    pub async fn wait(&mut self) {
        // An error means the sender is gone, which also means stop.
        let _ = self.receiver.wait_for(|stopped| *stopped).await;
    }

    /// Returns whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }
}
