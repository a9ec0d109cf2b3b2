//! CPU accounting from /proc: the CPU time a set of processes used over the
//! measured window, per operation. Counts user + system time of every thread
//! of each process, plus the children it has reaped (Redis's AOF rewrite).

use std::io;

/// CPU clock ticks in `/proc/<pid>/stat`'s
/// `utime + stime + cutime + cstime` (fields 14-17).
///
/// The command name (field 2) is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest: " S ppid pgrp ..."; field 3 (state) is index 0, utime (14) is 11.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let mut sum = 0u64;
    for i in 11..=14 {
        // cutime/cstime are signed in the kernel's format; never negative in practice.
        let v: i64 = f.get(i)?.parse().ok()?;
        sum += v.max(0) as u64;
    }
    Some(sum)
}

/// The CPU ticks process `pid` (all its threads) has used so far.
pub fn process_ticks(pid: u32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_ticks(&s).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat format"),
        )
    })
}

/// The sum over `pids` of [`process_ticks`].
pub fn total_ticks(pids: &[u32]) -> io::Result<u64> {
    pids.iter().map(|&p| process_ticks(p)).sum()
}

/// Ticks per second of /proc's CPU times (`getconf CLK_TCK`, almost always 100).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// Microseconds of CPU per operation; None without operations.
pub fn us_per_op(ticks: u64, hz: u64, ops: u64) -> Option<f64> {
    if ops == 0 || hz == 0 {
        return None;
    }
    Some(ticks as f64 * 1e6 / hz as f64 / ops as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_time_fields_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime cutime cstime priority ...
        let stat = "4242 (etcd) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 12 0";
        assert_eq!(parse_stat_ticks(stat), Some(250 + 50 + 7 + 3));
    }

    #[test]
    fn a_command_name_with_spaces_and_parens_does_not_shift_fields() {
        let stat = "7 (tokio (rt) worker) R 1 7 7 0 -1 0 0 0 0 0 11 22 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(stat), Some(33));
    }

    #[test]
    fn truncated_or_garbage_stat_is_rejected() {
        assert_eq!(parse_stat_ticks("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat_ticks("no parens at all"), None);
        assert_eq!(
            parse_stat_ticks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 ab 1 0 0 20"),
            None
        );
    }

    #[test]
    fn our_own_cpu_time_grows_while_we_burn_cpu() {
        let me = std::process::id();
        let before = process_ticks(me).unwrap();
        let t = std::time::Instant::now();
        let mut x = 1u64;
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = total_ticks(&[me]).unwrap();
        // 300 ms of busy loop is ~30 ticks at 100 Hz; a loaded machine may
        // deschedule us, so ask only for some of it.
        assert!(after > before, "ticks {before} -> {after}");
        assert!(process_ticks(u32::MAX).is_err());
    }

    #[test]
    fn per_op_math() {
        // 150 ticks at 100 Hz = 1.5 s of CPU over 10,000 ops = 150 µs/op.
        assert_eq!(us_per_op(150, 100, 10_000), Some(150.0));
        assert_eq!(us_per_op(150, 100, 0), None);
        assert!(ticks_per_second() >= 1);
    }
}
