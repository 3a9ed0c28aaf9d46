//! What the comparison reads from the operating system: the machine it ran
//! on (for the report's header), a server's resident memory and CPU time,
//! the CPU time of finished child processes, and how much a data directory
//! holds.

use std::path::Path;

use serde::Serialize;

/// The machine, as the report's header describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub ram_bytes: Option<u64>,
    pub kernel: Option<String>,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (cpu, listed) = parse_cpuinfo(&cpuinfo);
        // The cores this process may use (cgroup and affinity limits
        // included), which is what the servers and the clients share.
        let cores = std::thread::available_parallelism().map_or(listed, |n| n.get());
        Machine {
            cpu: cpu.unwrap_or_else(|| "unknown CPU".into()),
            cores,
            ram_bytes: kib_field(&meminfo, "MemTotal:"),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        }
    }
}

/// The 1, 5 and 15-minute load averages, e.g. `0.52 0.61 0.70`: the
/// servers share the machine with whatever else runs on it, and this shows
/// how much did.
pub fn loadavg() -> Option<String> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

pub fn parse_loadavg(text: &str) -> Option<String> {
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3 && fields.iter().all(|f| f.parse::<f64>().is_ok())).then(|| fields.join(" "))
}

/// The CPU model (`model name`) and the number of `processor` entries.
pub fn parse_cpuinfo(text: &str) -> (Option<String>, usize) {
    let mut model = None;
    let mut processors = 0;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim() {
            "processor" => processors += 1,
            "model name" if model.is_none() => model = Some(v.trim().to_string()),
            _ => {}
        }
    }
    (model, processors)
}

/// A `NAME:   123 kB` field of /proc/meminfo or /proc/PID/status, in bytes.
pub fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let mut parts = line[name.len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(n * 1024),
        Some(_) => None,
    }
}

/// The resident set size of process `pid` (VmRSS), in bytes. `None` if the
/// process is gone or the kernel does not report it.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, "VmRSS:")
}

/// CPU time spent in user space and in the kernel, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuTime {
    pub user_s: f64,
    pub sys_s: f64,
}

impl CpuTime {
    pub fn total_s(self) -> f64 {
        self.user_s + self.sys_s
    }

    /// `self - earlier`, never negative.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime { user_s: (self.user_s - earlier.user_s).max(0.0), sys_s: (self.sys_s - earlier.sys_s).max(0.0) }
    }

    pub fn plus(self, other: CpuTime) -> CpuTime {
        CpuTime { user_s: self.user_s + other.user_s, sys_s: self.sys_s + other.sys_s }
    }
}

/// The CPU time process `pid` has used so far (all its threads). `None` if
/// it is gone.
pub fn process_cpu(pid: u32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    parse_stat_cpu(&stat, if ticks > 0 { ticks as f64 } else { 100.0 })
}

/// utime and stime (fields 14 and 15) of a /proc/PID/stat line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_stat_cpu(stat: &str, ticks_per_s: f64) -> Option<CpuTime> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let sys: u64 = fields.next()?.parse().ok()?;
    Some(CpuTime { user_s: user as f64 / ticks_per_s, sys_s: sys as f64 / ticks_per_s })
}

/// The CPU time of every child process that has ended and been waited for
/// (`RUSAGE_CHILDREN`). Its growth over a benchmark run is the run's.
pub fn finished_children_cpu() -> CpuTime {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) } != 0 {
        return CpuTime::default();
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    CpuTime { user_s: secs(u.ru_utime), sys_s: secs(u.ru_stime) }
}

/// What a directory tree holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirSize {
    /// The sum of the regular files' lengths (`du --apparent-size`).
    pub apparent_bytes: u64,
    /// The blocks allocated to them (`du`): less than the apparent size for
    /// sparse files (bbolt grows its file ahead of use), more for many small
    /// files.
    pub allocated_bytes: u64,
    pub files: u64,
}

/// Walks `root` without following symlinks. Files that vanish during the
/// walk (RocksDB deletes obsolete files at any time) are skipped.
pub fn dir_size(root: &Path) -> std::io::Result<DirSize> {
    use std::os::unix::fs::MetadataExt;
    let mut total = DirSize::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != root => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total.apparent_bytes += meta.len();
                total.allocated_bytes += meta.blocks() * 512;
                total.files += 1;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_gives_the_model_and_processor_count() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\n\
                    processor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(parse_cpuinfo(text), (Some("Intel(R) Xeon(R) CPU @ 2.20GHz".into()), 2));
        assert_eq!(parse_cpuinfo(""), (None, 0));
    }

    #[test]
    fn load_averages() {
        assert_eq!(parse_loadavg("7.95 6.79 5.80 3/1024 19535\n").as_deref(), Some("7.95 6.79 5.80"));
        assert_eq!(parse_loadavg("7.95 x"), None);
        assert!(loadavg().is_some());
    }

    #[test]
    fn kib_fields_of_proc_files() {
        let status = "Name:\tetcd\nVmPeak:\t  900 kB\nVmRSS:\t   51200 kB\nThreads:\t12\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(51200 * 1024));
        assert_eq!(kib_field(status, "VmSwap:"), None);
        assert_eq!(kib_field(status, "Threads:"), Some(12 * 1024), "a unitless field is taken as is, times 1024");
        assert_eq!(kib_field("MemTotal:       24576 MB\n", "MemTotal:"), None, "an unknown unit is refused");
        let meminfo = "MemTotal:       24576000 kB\nMemFree:        1 kB\n";
        assert_eq!(kib_field(meminfo, "MemTotal:"), Some(24_576_000 * 1024));
    }

    #[test]
    fn rss_of_this_process_is_known() {
        let rss = rss_bytes(std::process::id()).expect("VmRSS of this process");
        assert!(rss > 1 << 20, "{rss}");
    }

    #[test]
    fn stat_cpu_fields_after_the_command_name() {
        let line = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 9 0 100 1000 50";
        assert_eq!(parse_stat_cpu(line, 100.0), Some(CpuTime { user_s: 2.5, sys_s: 0.75 }));
        assert_eq!(parse_stat_cpu("4242 (x) S 1", 100.0), None);
    }

    #[test]
    fn this_process_and_its_finished_children_use_cpu() {
        let before = finished_children_cpu();
        let status = std::process::Command::new("sh").args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]).status();
        assert!(status.unwrap().success());
        assert!(finished_children_cpu().since(before).total_s() > 0.0);
        // The kernel counts in clock ticks: spin until one is ours.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while process_cpu(std::process::id()).unwrap().total_s() == 0.0 {
            assert!(start.elapsed() < std::time::Duration::from_secs(10), "no CPU time counted");
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
        }
    }

    #[test]
    fn dir_size_sums_nested_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        std::fs::write(tmp.path().join("x"), vec![1u8; 10_000]).unwrap();
        std::fs::write(tmp.path().join("a/b/y"), vec![2u8; 5]).unwrap();
        // Sparse: 1 MiB long, nothing written.
        std::fs::File::create(tmp.path().join("a/sparse")).unwrap().set_len(1 << 20).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("x"), tmp.path().join("link")).unwrap();
        let s = dir_size(tmp.path()).unwrap();
        assert_eq!(s.files, 3);
        assert_eq!(s.apparent_bytes, 10_000 + 5 + (1 << 20));
        assert!(s.allocated_bytes >= 10_000 && s.allocated_bytes < 1 << 20, "{s:?}");
        assert!(dir_size(&tmp.path().join("missing")).is_err());
    }
}
