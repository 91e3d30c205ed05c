//! The leak checks on Windows: they read `/proc` on Unix and have no Windows version yet, so
//! here they check nothing (the tests still check the pool's behaviour), and a worker is ended
//! with `TerminateProcess`.

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

/// Ends process `pid` the way the pool's `kill_workers` does (`TerminateProcess` with exit
/// code 1): whether it was ended. `taskkill /F` is not used: Wine's passes exit code 0, real
/// Windows' 1. A Windows pid is not reused while a handle to its process is open, and the pool
/// holds one for each worker until it has seen the worker end; a pid `worker_pids()` gave a
/// moment before that may since have been reused, which the Linux version rules out with a
/// pidfd and this one does not: a small risk these tests accept (the chaos tests call it on
/// pids of workers that may just have died).
pub fn sigkill_child(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::Threading::{OpenProcess, TerminateProcess, PROCESS_TERMINATE};
    // SAFETY: OpenProcess takes plain values and returns a new handle or null.
    let process = unsafe { OpenProcess(PROCESS_TERMINATE, 0, pid) };
    if process.is_null() {
        return false;
    }
    // SAFETY: a live process handle we own, opened with PROCESS_TERMINATE.
    let ended = unsafe { TerminateProcess(process, 1) } != 0;
    // SAFETY: closing the handle OpenProcess gave us, once.
    unsafe { CloseHandle(process) };
    ended
}
