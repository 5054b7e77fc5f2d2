//! A child process that never outlives its test: dropping the guard kills (SIGKILL) and reaps
//! it, so a failing assertion cannot leave a server running.

use std::process::Child;

/// Owns a [`Child`]; kills and reaps it when dropped.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
