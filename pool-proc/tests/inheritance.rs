//! What a worker inherits from the program that started it: its command line, its standard
//! streams and its socket to the pool; no other descriptor, even one the program opened
//! without close-on-exec (a pipe, a listening socket, a lock file).
// Unix only: it counts inherited descriptors through `/proc`.
#![cfg(unix)]
#![allow(unsafe_code)] // fcntl(2) to clear close-on-exec, as a careless program would

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use cf_pool_proc::{Executor, ProcessPoolExecutor};

const LIMIT: Duration = Duration::from_secs(30);

/// Clears close-on-exec on `fd`, so a plain fork+exec would hand it to the child.
fn inheritable(fd: &impl AsRawFd) {
    // SAFETY: fcntl(2) on a descriptor the caller owns.
    assert_eq!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) }, 0);
}

fn inode(fd: &impl AsRawFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .ino()
}

/// Which of `inodes` the worker has open, by listing its descriptors.
fn open_inodes(inodes: Vec<u64>) -> Vec<u64> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(meta) = std::fs::metadata(entry.path()) {
            if inodes.contains(&meta.ino()) && !found.contains(&meta.ino()) {
                found.push(meta.ino());
            }
        }
    }
    found
}

#[test]
fn workers_inherit_no_descriptor_of_the_program() {
    let (read_end, write_end) = rustix::pipe::pipe().unwrap();
    let mut read_end = std::fs::File::from(read_end);
    inheritable(&read_end);
    inheritable(&write_end);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    inheritable(&listener);
    let inodes = vec![inode(&read_end), inode(&write_end), inode(&listener)];

    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let held = pool
        .submit(open_inodes, inodes)
        .unwrap()
        .result_timeout(LIMIT)
        .unwrap()
        .clone();
    assert_eq!(
        held,
        Vec::<u64>::new(),
        "the worker holds the program's descriptors"
    );

    // What a user sees: with workers running, closing the write end ends the pipe.
    drop(write_end);
    let got = common::within(LIMIT, "read to end of file", move || {
        let mut rest = Vec::new();
        read_end.read_to_end(&mut rest).map(|_| rest.len())
    });
    assert_eq!(got.unwrap(), 0);
    drop(pool);
}

fn args(_: ()) -> Vec<String> {
    std::env::args().collect()
}

fn args_os(_: ()) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    std::env::args_os().map(|a| a.as_bytes().to_vec()).collect()
}

#[test]
fn workers_see_the_parents_command_line() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let mine: Vec<String> = std::env::args().collect();
    let theirs = pool
        .submit(args, ())
        .unwrap()
        .result_timeout(LIMIT)
        .unwrap()
        .clone();
    assert_eq!(theirs, mine);
    let mine_os: Vec<Vec<u8>> = args_os(());
    let theirs_os = pool
        .submit(args_os, ())
        .unwrap()
        .result_timeout(LIMIT)
        .unwrap()
        .clone();
    assert_eq!(theirs_os, mine_os);
}

/// A re-executed copy of this test binary, given extra arguments, reports what its worker
/// saw: the parent's command line, word for word.
#[test]
fn a_worker_sees_arguments_the_program_was_given() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "print_worker_args",
            "--exact",
            "--nocapture",
            "--",
            "two words",
            "ünï",
        ])
        .env(ROLE, "child")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("worker args: "))
        .unwrap_or_else(|| panic!("no report in {stdout}"));
    let exe = std::env::current_exe().unwrap();
    let expected = format!(
        "{:?}",
        [
            exe.to_str().unwrap(),
            "print_worker_args",
            "--exact",
            "--nocapture",
            "--",
            "two words",
            "ünï"
        ]
    );
    assert_eq!(line, expected);
}

const ROLE: &str = "CF_INHERITANCE_ROLE";

/// Runs only inside the re-executed copy (see above).
#[test]
fn print_worker_args() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let theirs = pool
        .submit(args, ())
        .unwrap()
        .result_timeout(LIMIT)
        .unwrap()
        .clone();
    println!("worker args: {theirs:?}");
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
