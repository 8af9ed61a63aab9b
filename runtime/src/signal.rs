//! Signal names and numbers as users write them ("SIGTERM", "TERM", "15",
//! "SIGRTMIN+3").

use crate::error::Error;
use crate::names::quote;

const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Parses a signal; empty means SIGKILL (Docker's default for `kill`).
pub fn parse(s: &str) -> Result<i32, Error> {
    let bad = || Error::InvalidArgument {
        field: "signal",
        reason: format!(
            "{} is not a signal (a number 1-64 or a name such as TERM or SIGUSR1)",
            quote(s)
        ),
    };
    let t = s.trim();
    if t.is_empty() {
        return Ok(libc::SIGKILL);
    }
    let valid = |n: i32| (1..=libc::SIGRTMAX()).contains(&n);
    if let Ok(n) = t.parse::<i32>() {
        return if valid(n) { Ok(n) } else { Err(bad()) };
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = NAMES.iter().find(|(k, _)| *k == name) {
        return Ok(n);
    }
    let rt = |base: i32, off: &str| {
        off.parse::<i32>()
            .ok()
            .map(|o| base + o)
            .filter(|&n| valid(n) && n >= libc::SIGRTMIN())
    };
    match name {
        "RTMIN" => Ok(libc::SIGRTMIN()),
        "RTMAX" => Ok(libc::SIGRTMAX()),
        _ => {
            if let Some(off) = name.strip_prefix("RTMIN+") {
                rt(libc::SIGRTMIN(), off).ok_or_else(bad)
            } else if let Some(off) = name.strip_prefix("RTMAX-") {
                rt(libc::SIGRTMAX(), &format!("-{off}")).ok_or_else(bad)
            } else {
                Err(bad())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(parse("").expect("default"), libc::SIGKILL);
        assert_eq!(parse("TERM").expect("name"), libc::SIGTERM);
        assert_eq!(parse("sigusr1").expect("lower"), libc::SIGUSR1);
        assert_eq!(parse("9").expect("number"), 9);
        assert_eq!(parse("SIGRTMIN+2").expect("rt"), libc::SIGRTMIN() + 2);
        for bad in ["0", "65", "FOO", "SIGRTMIN+99", "-1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
