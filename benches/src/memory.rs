//! What an idle worker process costs in memory: its resident set (`VmRSS` in
//! `/proc/<pid>/status`), read once its pool has started it and run a few tasks.

use std::collections::BTreeSet;

/// The resident set of process `pid`, in KiB; `None` if it is gone or the line is missing.
#[must_use]
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// The `VmRSS:` figure of a `/proc/<pid>/status` text, in KiB.
#[must_use]
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// The live children of this process (from the parent field of every `/proc/<pid>/stat`).
#[must_use]
pub fn children() -> BTreeSet<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parent_of_stat(&s))
                == Some(me)
        })
        .collect()
}

/// The parent pid in a `/proc/<pid>/stat` line (the field after the state, which follows the
/// command name in parentheses; the name itself may hold spaces and parentheses).
#[must_use]
pub fn parent_of_stat(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_and_the_parent() {
        let status = "Name:\tcompare\nVmPeak:\t  9000 kB\nVmRSS:\t    4312 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(4312));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parent_of_stat("42 (a) b) c) S 7 42 42 0"), Some(7));
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        assert!(children().contains(&child.id()));
        let mut child = child;
        child.kill().expect("kill");
        child.wait().expect("reap");
    }
}
