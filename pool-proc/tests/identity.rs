//! Who may become a worker. A program that links cf-pool-proc serves as a worker only on proof
//! that only its real parent can give: its inherited socket's kernel-attested peer is its
//! parent, running the same executable; and never when it runs with elevated privileges
//! (set-user-ID, set-group-ID, file capabilities). Otherwise it says why and exits with 70
//! before `main`.
//
// On Windows (run under Wine in CI) the worker variable is `parent pid:read handle:write
// handle` and the checks differ (sys/windows.rs): the pid must be the real parent's, which must
// run the same executable, and both handles must be pipes. The forgeries below the Unix ones
// try each there. Unix only: forging with Unix sockets and descriptors, set-user-ID bits.
#![cfg_attr(unix, allow(unsafe_code))] // fcntl(2) to hand a descriptor to a child, statvfs(3)

mod common;

#[cfg(unix)]
use std::os::fd::AsRawFd;
#[cfg(unix)]
use std::os::unix::net::UnixStream;
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cf_pool_proc::{Executor, ProcessPoolExecutor};

const WORKER_ENV: &str = "CF_POOL_PROC_WORKER_FD";
const REFUSED: i32 = 70;
const LIMIT: Duration = Duration::from_secs(60);

#[cfg(unix)]
/// Clears close-on-exec on `fd` so that a child inherits it.
fn inheritable(fd: &impl AsRawFd) {
    // SAFETY: fcntl(2) on a descriptor the caller owns.
    assert_eq!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) }, 0);
}

#[cfg(unix)]
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
    let out = common::within(LIMIT, "a refused worker", move || {
        // A copy of this executable was just written, and a child another test thread forked
        // meanwhile may hold it open for writing until its own exec: retry while the kernel
        // says the file is busy (ETXTBSY).
        let mut tries = 0;
        loop {
            match cmd.output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        }
    });
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

#[cfg(unix)]
#[test]
fn a_socket_whose_peer_is_not_the_parent_gets_no_worker() {
    // The socket is made by this process, but the process that reads it is a child of a shell.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg("\"$0\" --list; exit $?").arg(this_exe());
    let out = start_as_worker(cmd);
    assert_refused(&out, "not to its parent");
}

#[cfg(unix)]
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
#[cfg(unix)]
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

#[cfg(unix)]
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

#[cfg(unix)]
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
#[cfg(unix)]
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

/// On Windows: a handle value that no process here holds.
#[cfg(windows)]
const NO_HANDLE: usize = 0x3FFF_FFFC;

/// On Windows: runs `cmd` with the worker variable set to `value`, as a forger would; returns
/// its output (bounded by [`LIMIT`]).
#[cfg(windows)]
fn start_with(mut cmd: Command, value: String) -> Output {
    cmd.env(WORKER_ENV, value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    common::within(LIMIT, "a refused worker", move || cmd.output()).unwrap()
}

/// On Windows: the variable names this process, but the would-be worker was started by
/// another one (`cmd.exe`).
#[cfg(windows)]
#[test]
fn a_channel_named_for_a_process_that_is_not_the_parent_gets_no_worker() {
    let mut cmd = Command::new("cmd");
    cmd.arg("/c").arg(this_exe()).arg("--list");
    let value = format!("{}:{NO_HANDLE}:{NO_HANDLE}", std::process::id());
    let out = start_with(cmd, value);
    assert_refused(&out, "not by its parent");
}

/// On Windows: the real parent, but running another executable (a copy of this one).
#[cfg(windows)]
#[test]
fn a_parent_running_another_executable_gets_no_worker() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("identity-other-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(format!("copy{}", std::env::consts::EXE_SUFFIX));
    std::fs::copy(this_exe(), &copy).unwrap();
    let value = format!("{}:{NO_HANDLE}:{NO_HANDLE}", std::process::id());
    let out = start_with(Command::new(&copy), value);
    let _ = std::fs::remove_dir_all(dir);
    assert_refused(&out, "its parent runs another executable");
}

/// On Windows: a value that is no channel, and the real parent naming handles that are not
/// pipes.
#[cfg(windows)]
#[test]
fn a_variable_that_names_no_channel_gets_no_worker() {
    let out = start_with(Command::new(this_exe()), "banana".into());
    assert_refused(&out, "names no channel");
    let value = format!("{}:{NO_HANDLE}:{NO_HANDLE}", std::process::id());
    let out = start_with(Command::new(this_exe()), value);
    assert_refused(&out, "the inherited handles are not pipes");
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
