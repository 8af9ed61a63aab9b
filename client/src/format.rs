//! How rsupctl shows containers, the way Docker does: short ids, quoted and
//! truncated commands, "Up 3 seconds"-style statuses, process exit codes, and
//! left-aligned tables with three spaces between columns.

use std::time::SystemTime;

use rsup_client::proto::{Container, ContainerState, ExitStatus};

use crate::time;

/// Characters of an id shown by `ps` (Docker's `TruncateID`).
pub const SHORT_ID_LEN: usize = 12;
/// Characters of the command shown by `ps`, including the ellipsis.
pub const COMMAND_WIDTH: usize = 30;
const COLUMN_GAP: &str = "   ";

/// Lower-case state name, as in `docker inspect`'s `State.Status`.
pub fn state_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Removed => "removed",
        ContainerState::Restarting => "restarting",
        ContainerState::Unknown | ContainerState::Unspecified => "unknown",
    }
}

/// Docker's STATUS column: "Created", "Up 3 seconds", "Exited (1) 2 minutes ago",
/// "Restarting (1) 5 seconds ago" (the last exit, waiting for its policy restart),
/// "Unknown (quarantined)" (its record could not be read: `rm -f` cleans it up).
/// A running container with a health check gets Docker's suffix: "(healthy)",
/// "(unhealthy)" or "(health: starting)".
pub fn status(container: &Container, now: SystemTime) -> String {
    match container.state() {
        ContainerState::Created => "Created".to_owned(),
        ContainerState::Running => {
            let up = time::elapsed(container.started_at.as_ref(), now);
            let up = format!("Up {}", time::human_duration(up));
            match container.health.as_ref().map(|h| h.status.as_str()) {
                None | Some("") => up,
                Some("starting") => format!("{up} (health: starting)"),
                Some(health) => format!("{up} ({health})"),
            }
        }
        ContainerState::Exited => match &container.exit {
            Some(exit) => format!(
                "Exited ({}) {}",
                exit.exit_code,
                time::ago(exit.finished_at.as_ref(), now)
            ),
            None => "Exited".to_owned(),
        },
        ContainerState::Restarting => match &container.exit {
            Some(exit) => format!(
                "Restarting ({}) {}",
                exit.exit_code,
                time::ago(exit.finished_at.as_ref(), now)
            ),
            None => "Restarting".to_owned(),
        },
        ContainerState::Removed => "Removed".to_owned(),
        ContainerState::Unknown => "Unknown (quarantined)".to_owned(),
        ContainerState::Unspecified => "Unknown".to_owned(),
    }
}

/// The container's argv joined with spaces.
pub fn command_line(container: &Container) -> String {
    container
        .spec
        .as_ref()
        .map(|spec| spec.command.join(" "))
        .unwrap_or_default()
}

/// The COMMAND column: `command_line` cut to `width` characters (the last one
/// an ellipsis when cut), then quoted.
pub fn quoted_command(command: &str, width: usize) -> String {
    let shown = if command.chars().count() <= width {
        command.to_owned()
    } else {
        let mut cut: String = command.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    };
    format!("{shown:?}")
}

/// The first `SHORT_ID_LEN` characters of an id.
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(SHORT_ID_LEN) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// The code a shell would see for this exit: the command's own code, or
/// 128+signal when it was killed by one, reduced modulo 256.
pub fn exit_code(status: &ExitStatus) -> u8 {
    let code = if status.signal > 0 && status.exit_code == 0 {
        128 + status.signal
    } else {
        status.exit_code
    };
    u8::try_from(code.rem_euclid(256)).unwrap_or(u8::MAX)
}

/// Left-aligned columns padded to the widest cell, one row per line.
pub fn table(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(COLUMN_GAP);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost_types::Timestamp;
    use rsup_client::proto::{ContainerSpec, Health};

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn ago(seconds: u64) -> Option<Timestamp> {
        Some(Timestamp {
            seconds: i64::try_from(NOW - seconds).expect("small"),
            nanos: 0,
        })
    }

    fn container(state: ContainerState) -> Container {
        let mut c = Container {
            id: "0123456789abcdef0123".to_owned(),
            name: "web".to_owned(),
            spec: Some(ContainerSpec {
                command: vec!["sh".to_owned(), "-c".to_owned(), "sleep 1".to_owned()],
                ..Default::default()
            }),
            created_at: ago(60),
            ..Default::default()
        };
        c.set_state(state);
        c
    }

    #[test]
    fn statuses_read_like_docker() {
        assert_eq!(
            status(&container(ContainerState::Created), now()),
            "Created"
        );

        let mut running = container(ContainerState::Running);
        running.started_at = ago(3);
        assert_eq!(status(&running, now()), "Up 3 seconds");
        for (health, suffix) in [
            ("starting", " (health: starting)"),
            ("healthy", " (healthy)"),
            ("unhealthy", " (unhealthy)"),
        ] {
            running.health = Some(Health {
                status: health.to_owned(),
                ..Default::default()
            });
            assert_eq!(status(&running, now()), format!("Up 3 seconds{suffix}"));
        }

        let mut exited = container(ContainerState::Exited);
        exited.exit = Some(ExitStatus {
            exit_code: 1,
            finished_at: ago(150),
            ..Default::default()
        });
        assert_eq!(status(&exited, now()), "Exited (1) 2 minutes ago");

        assert_eq!(status(&container(ContainerState::Exited), now()), "Exited");

        let mut restarting = container(ContainerState::Restarting);
        restarting.exit = Some(ExitStatus {
            exit_code: 137,
            signal: 9,
            finished_at: ago(5),
            ..Default::default()
        });
        assert_eq!(status(&restarting, now()), "Restarting (137) 5 seconds ago");
        assert_eq!(
            status(&container(ContainerState::Restarting), now()),
            "Restarting"
        );
        assert_eq!(
            status(&container(ContainerState::Removed), now()),
            "Removed"
        );
    }

    #[test]
    fn state_names_are_lower_case() {
        assert_eq!(state_name(ContainerState::Running), "running");
        assert_eq!(state_name(ContainerState::Restarting), "restarting");
        assert_eq!(state_name(ContainerState::Unspecified), "unknown");
        assert_eq!(state_name(ContainerState::Unknown), "unknown");
        assert_eq!(
            status(&container(ContainerState::Unknown), now()),
            "Unknown (quarantined)"
        );
    }

    #[test]
    fn commands_are_quoted_and_truncated() {
        let c = container(ContainerState::Created);
        assert_eq!(command_line(&c), "sh -c sleep 1");
        assert_eq!(quoted_command(&command_line(&c), 30), "\"sh -c sleep 1\"");
        assert_eq!(quoted_command("abcdefgh", 5), "\"abcd…\"");
        assert_eq!(quoted_command("abcde", 5), "\"abcde\"");
        assert_eq!(quoted_command("echo \"hi\"", 30), r#""echo \"hi\"""#);
        assert_eq!(command_line(&Container::default()), "");
    }

    #[test]
    fn ids_are_cut_to_twelve() {
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let status = |exit_code, signal| ExitStatus {
            exit_code,
            signal,
            ..Default::default()
        };
        assert_eq!(exit_code(&status(0, 0)), 0);
        assert_eq!(exit_code(&status(3, 0)), 3);
        assert_eq!(exit_code(&status(137, 9)), 137);
        assert_eq!(exit_code(&status(0, 15)), 143);
        assert_eq!(exit_code(&status(-1, 0)), 255);
        assert_eq!(exit_code(&status(256, 0)), 0);
    }

    #[test]
    fn tables_pad_all_but_the_last_column() {
        let rows = vec![
            vec!["ID".to_owned(), "NAME".to_owned(), "STATUS".to_owned()],
            vec!["abc".to_owned(), "w…".to_owned(), "Up".to_owned()],
        ];
        assert_eq!(table(&rows), "ID    NAME   STATUS\nabc   w…     Up\n");
    }
}
