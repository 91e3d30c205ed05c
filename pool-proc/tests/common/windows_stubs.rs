//! The leak checks on Windows: they read `/proc` on Unix and have no Windows version yet, so
//! here they check nothing (the tests still check the pool's behaviour), and a worker is ended
//! with `taskkill /F`.

use super::Fds;

/// No descriptor listing on Windows: always empty.
pub fn open_fds() -> Fds {
    Fds::new()
}

/// Checks nothing on Windows.
pub fn assert_zombies_reaped() {}

/// Checks nothing on Windows.
pub fn assert_gone(_pids: impl IntoIterator<Item = u32>) {}

/// Checks nothing on Windows.
pub fn assert_clean_at_end() {}

/// Nothing to compare on Windows.
#[derive(Debug)]
pub struct Snapshot;

impl Snapshot {
    pub fn take() -> Self {
        Snapshot
    }

    pub fn assert_restored(&self) {}
}

/// Ends process `pid` (`taskkill /F`, which is `TerminateProcess`): whether it was ended.
pub fn sigkill_child(pid: u32) -> bool {
    std::process::Command::new("taskkill")
        .args(["/F", "/PID", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
