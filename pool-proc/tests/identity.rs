//! Who may become a worker. A program that links cf-pool-proc serves as a worker only on proof
//! that only its real parent can give: its inherited socket's kernel-attested peer is its
//! parent, running the same executable; and never when it runs with elevated privileges
//! (set-user-ID, set-group-ID, file capabilities). Otherwise it says why and exits with 70
//! before `main`.
// Unix only: it forges workers with Unix sockets, set-user-ID bits and `/proc`; the Windows
// entry checks (parent pid and image, pipe handles) are in sys/windows.rs.
#![cfg(unix)]
#![allow(unsafe_code)] // fcntl(2) to hand a descriptor to a child, statvfs(3) for the probe

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cf_pool_proc::{Executor, ProcessPoolExecutor};

const WORKER_ENV: &str = "CF_POOL_PROC_WORKER_FD";
const REFUSED: i32 = 70;
const LIMIT: Duration = Duration::from_secs(60);

/// Clears close-on-exec on `fd` so that a child inherits it.
fn inheritable(fd: &impl AsRawFd) {
    // SAFETY: fcntl(2) on a descriptor the caller owns.
    assert_eq!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) }, 0);
}

/// Runs `cmd` with the worker variable naming an inherited socket made by this process, as a
/// forger would; returns its output (bounded by [`LIMIT`]).
fn start_as_worker(mut cmd: Command) -> Output {
    let (ours, theirs) = UnixStream::pair().unwrap();
    inheritable(&theirs);
    // The portable path also expects a lifeline (kept open, so the refusal is what ends it).
    #[cfg(feature = "portable-unix")]
    let (value, lifeline) = {
        let (read, write) = rustix::pipe::pipe().unwrap();
        inheritable(&read);
        (
            format!("{}:{}", theirs.as_raw_fd(), read.as_raw_fd()),
            (read, write),
        )
    };
    #[cfg(not(feature = "portable-unix"))]
    let (value, lifeline) = (theirs.as_raw_fd().to_string(), ());
    cmd.env(WORKER_ENV, value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = common::within(LIMIT, "a refused worker", move || cmd.output());
    drop((ours, theirs, lifeline));
    out.unwrap()
}

fn assert_refused(out: &Output, why: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(REFUSED), "{out:?}");
    assert!(
        stderr.contains("refusing worker mode") && stderr.contains(why),
        "expected a refusal saying {why:?}: {stderr}"
    );
    // It never ran `main` (the test harness would have printed its summary).
    assert!(out.stdout.is_empty(), "{out:?}");
}

fn this_exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

#[test]
fn a_socket_whose_peer_is_not_the_parent_gets_no_worker() {
    // The socket is made by this process, but the process that reads it is a child of a shell.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg("\"$0\" --list; exit $?").arg(this_exe());
    let out = start_as_worker(cmd);
    assert_refused(&out, "not to its parent");
}

/// A copy of this test binary in a fresh directory, `mode` set.
fn copy_of_this_exe(name: &str, mode: u32) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("identity-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("copy");
    std::fs::copy(this_exe(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(mode)).unwrap();
    (dir, copy)
}

/// Linux only: the portable path cannot read another process's executable (see the crate's
/// platform docs).
#[test]
#[cfg(not(feature = "portable-unix"))]
fn a_parent_running_another_executable_gets_no_worker() {
    // Same code, same layout, but another file: this process is the peer and the parent, yet
    // it does not run the child's executable.
    let (dir, copy) = copy_of_this_exe("other", 0o755);
    let out = start_as_worker(Command::new(&copy));
    std::fs::remove_dir_all(dir).unwrap();
    assert_refused(&out, "its parent runs another executable");
}

#[test]
fn a_variable_that_names_no_descriptor_gets_no_worker() {
    let closed = if cfg!(feature = "portable-unix") {
        "987:988"
    } else {
        "987"
    };
    for value in ["banana", closed] {
        let out = Command::new(this_exe())
            .env(WORKER_ENV, value)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let why = if value == "banana" {
            "names no descriptor"
        } else {
            "is not open"
        };
        assert_refused(&out, why);
    }
}

fn double(x: u64) -> u64 {
    x * 2
}

#[test]
fn the_real_parent_still_gets_its_workers() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let f = pool.submit(double, 21).unwrap();
    assert_eq!(f.result_timeout(LIMIT), Ok(&42));
}

/// Whether `dir` is on a file system that honours set-user-ID bits.
fn suid_allowed(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs(3) reads the path and writes only into `st`.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    rc == 0 && st.f_flag & libc::ST_NOSUID == 0
}

/// The probe for a set-user-ID program: needs root (to make a set-user-ID-root copy and run it
/// as another user). Without it, the probe says so and checks nothing.
#[test]
fn a_set_user_id_program_never_becomes_a_worker() {
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: making a set-user-ID-root copy needs root");
        return;
    }
    let (dir, copy) = copy_of_this_exe("setuid", 0o4755);
    if !suid_allowed(&dir) {
        std::fs::remove_dir_all(dir).unwrap();
        eprintln!(
            "skipped: {} does not honour set-user-ID bits",
            env!("CARGO_TARGET_TMPDIR")
        );
        return;
    }
    let nobody = 65534;
    let mut cmd = Command::new(&copy);
    cmd.uid(nobody).gid(nobody);
    let out = start_as_worker(cmd);
    std::fs::remove_dir_all(dir).unwrap();
    if out.status.code() == Some(126) || String::from_utf8_lossy(&out.stderr).contains("denied") {
        eprintln!("skipped: user {nobody} cannot run the copy: {out:?}");
        return;
    }
    assert_refused(&out, "elevated privileges");
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
