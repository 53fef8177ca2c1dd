//! The CPU time the server under test spends on the measured phase, read from `/proc`.
//!
//! Requests per second compare servers only while the load generator keeps up: on a small
//! machine a fast server can be limited by the generator, and other tenants' work moves every
//! figure. The server's CPU time per request does not depend on either, so it is the steadier
//! way to compare two servers' costs. Linux only; elsewhere no sample is taken.

use std::{fs, io, time::Duration};

use serde::{Deserialize, Serialize};

/// CPU time of a set of processes (with their threads and child processes) at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSample {
    /// Time spent in user space.
    pub user: Duration,
    /// Time spent in the kernel on the processes' behalf.
    pub system: Duration,
}

impl CpuSample {
    /// Sums the CPU time of `pids` and of their direct child processes (nginx's workers under
    /// its master, say).
    pub fn take(pids: &[u32]) -> io::Result<Self> {
        let tick = clock_tick();
        let mut sample = Self::default();
        for pid in pids {
            sample.add(&Stat::read(*pid)?, tick);
        }
        for entry in fs::read_dir("/proc")? {
            let Some(pid) = entry?.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
                continue;
            };
            // A process may end between the listing and the read: it is simply not counted.
            if let Ok(stat) = Stat::read(pid)
                && pids.contains(&stat.ppid)
                && !pids.contains(&pid)
            {
                sample.add(&stat, tick);
            }
        }
        Ok(sample)
    }

    fn add(&mut self, stat: &Stat, tick: Duration) {
        self.user += ticks(tick, stat.utime);
        self.system += ticks(tick, stat.stime);
    }
}

fn ticks(tick: Duration, count: u64) -> Duration {
    Duration::from_nanos(u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX).saturating_mul(count))
}

/// The fields of `/proc/PID/stat` a sample needs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    ppid: u32,
    /// Clock ticks in user mode, all threads.
    utime: u64,
    /// Clock ticks in kernel mode, all threads.
    stime: u64,
}

impl Stat {
    fn read(pid: u32) -> io::Result<Self> {
        Self::parse(&fs::read_to_string(format!("/proc/{pid}/stat"))?).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: unreadable"))
        })
    }

    /// `pid (comm) state ppid … utime stime …`: `comm` may hold spaces and parentheses, so the
    /// fields are counted from the last `)`.
    fn parse(text: &str) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After `comm`: state (0), ppid (1), … utime (11), stime (12).
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        Some(Self { ppid: u32::try_from(field(1)?).ok()?, utime: field(11)?, stime: field(12)? })
    }
}

/// The length of one clock tick of `/proc/PID/stat`: `getconf CLK_TCK`, which is 100 (the
/// kernel's USER_HZ) on every common Linux build and the fallback.
fn clock_tick() -> Duration {
    static TICK: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        let per_second = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100);
        Duration::from_nanos(1_000_000_000 / per_second)
    })
}

/// What the server processes spent on the measured phase.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ServerCpu {
    /// User-space CPU time, in seconds.
    pub user_secs: f64,
    /// Kernel CPU time, in seconds.
    pub system_secs: f64,
    /// CPU time per completed request, in microseconds.
    pub us_per_request: f64,
    /// Cores kept busy on average (1.0: one core all the time).
    pub cores: f64,
}

impl ServerCpu {
    /// The CPU spent between `before` and `after`, over `requests` requests in `elapsed`.
    pub fn between(before: CpuSample, after: CpuSample, requests: u64, elapsed: Duration) -> Self {
        let user = after.user.saturating_sub(before.user).as_secs_f64();
        let system = after.system.saturating_sub(before.system).as_secs_f64();
        let total = user + system;
        Self {
            user_secs: user,
            system_secs: system,
            us_per_request: if requests == 0 { 0.0 } else { total * 1e6 / requests as f64 },
            cores: total / elapsed.as_secs_f64().max(f64::EPSILON),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_whose_command_has_spaces_and_parentheses() {
        let line = "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 3518 0 0 0 157 342 0 0 20 0 1 0 \
                    12345 10000000 500 18446744073709551615";
        assert_eq!(Stat::parse(line), Some(Stat { ppid: 4241, utime: 157, stime: 342 }));
        assert_eq!(Stat::parse("garbage"), None);
    }

    #[test]
    fn a_busy_process_is_seen_spending_cpu() {
        let pid = std::process::id();
        let before = CpuSample::take(&[pid]).unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = CpuSample::take(&[pid]).unwrap();
        let cpu = ServerCpu::between(before, after, 10, started.elapsed());
        assert!(cpu.user_secs + cpu.system_secs > 0.0, "{cpu:?}");
        assert!(cpu.us_per_request > 0.0);
    }

    #[test]
    fn a_missing_process_is_an_error() {
        assert!(CpuSample::take(&[u32::MAX]).is_err());
    }
}
