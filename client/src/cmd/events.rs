//! `rsupctl events`: print lifecycle events as the daemon sends them, one per
//! line, Docker-style text or JSON, until interrupted or the stream ends.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use clap::{Args, ValueEnum};
use rsup_client::Client;
use rsup_client::proto::{Event, EventsRequest};
use serde_json::{Value, json};

use super::say;
use crate::time::{self, Fraction};
use crate::{duration, format};

/// Print lifecycle events as they happen
#[derive(Args)]
pub struct Events {
    /// Only matching events: type=EVENT or container=NAME (repeatable; values
    /// of one key are alternatives)
    #[arg(short, long = "filter", value_name = "KEY=VALUE", value_parser = parse_filter)]
    filters: Vec<Filter>,

    /// Start with the remembered events of this long ago (e.g. 30s, 5m, 1h)
    #[arg(
        long,
        value_name = "DUR",
        value_parser = duration::parse,
        allow_hyphen_values = true
    )]
    since: Option<Duration>,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One Docker-style line per event
    Text,
    /// One JSON object per event and line
    Json,
}

/// One `--filter`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Filter {
    Type(String),
    Container(String),
}

const FILTER_EXPECTED: &str = "expected type=EVENT or container=NAME";

fn parse_filter(value: &str) -> Result<Filter, String> {
    match value.split_once('=') {
        Some((_, "")) | None => Err(FILTER_EXPECTED.to_owned()),
        Some(("type" | "event", v)) => Ok(Filter::Type(v.to_owned())),
        Some(("container", v)) => Ok(Filter::Container(v.to_owned())),
        Some(_) => Err(FILTER_EXPECTED.to_owned()),
    }
}

impl Events {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let request = self.request(SystemTime::now())?;
        let mut stream = client.events(request).await?;
        while let Some(event) = stream.message().await.map_err(rsup_client::Error::from)? {
            match self.format {
                Format::Text => say(text_line(&event))?,
                Format::Json => say(json_line(&event))?,
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// The request for these flags; `--since` counts back from `now`.
    fn request(&self, now: SystemTime) -> anyhow::Result<EventsRequest> {
        let mut request = EventsRequest::default();
        for filter in &self.filters {
            match filter {
                Filter::Type(t) => request.types.push(t.clone()),
                Filter::Container(c) => request.containers.push(c.clone()),
            }
        }
        if let Some(ago) = self.since {
            let since = now
                .checked_sub(ago)
                .filter(|t| *t >= SystemTime::UNIX_EPOCH)
                .ok_or_else(|| anyhow!("--since: {}s ago is before 1970", ago.as_secs()))?;
            request.since = Some(since.into());
        }
        Ok(request)
    }
}

/// `TIME SUBJECT_TYPE TYPE SUBJECT (key=value, ..., id=SHORT_ID)`, as
/// `docker events` prints them: attributes sorted by key, the id last.
fn text_line(e: &Event) -> String {
    let mut line = format!(
        "{} {} {} {}",
        time::rfc3339(e.time.as_ref(), Fraction::Fixed),
        e.subject_type,
        e.r#type,
        if e.subject.is_empty() {
            format::short_id(&e.id)
        } else {
            &e.subject
        }
    );
    let mut details: Vec<String> = sorted(e)
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if !e.id.is_empty() {
        details.push(format!("id={}", format::short_id(&e.id)));
    }
    if !details.is_empty() {
        line.push_str(&format!(" ({})", details.join(", ")));
    }
    line
}

/// `--format json`: every field, the time as RFC 3339 with nanoseconds.
fn json_line(e: &Event) -> Value {
    json!({
        "time": time::rfc3339(e.time.as_ref(), Fraction::Trimmed),
        "type": e.r#type,
        "subject_type": e.subject_type,
        "subject": e.subject,
        "id": e.id,
        "attributes": sorted(e),
    })
}

fn sorted(e: &Event) -> BTreeMap<&str, &str> {
    e.attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use prost_types::Timestamp;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        events: Events,
    }

    fn parse(args: &[&str]) -> Result<Events, clap::Error> {
        let argv = std::iter::once("rsupctl").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.events)
    }

    fn die() -> Event {
        Event {
            time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_789,
            }),
            r#type: "die".to_owned(),
            subject_type: "container".to_owned(),
            subject: "web".to_owned(),
            id: "c0ffee0123456789abcdef".to_owned(),
            attributes: [("signal", "0"), ("exit_code", "1"), ("oom_killed", "false")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    #[test]
    fn text_lines_read_like_docker() {
        assert_eq!(
            text_line(&die()),
            "2023-11-14T22:13:20.123456789Z container die web \
             (exit_code=1, oom_killed=false, signal=0, id=c0ffee012345)"
        );
        let bare = Event {
            r#type: "supervisor_fail".to_owned(),
            subject_type: "supervisor".to_owned(),
            subject: "main".to_owned(),
            ..Default::default()
        };
        assert_eq!(
            text_line(&bare),
            "0001-01-01T00:00:00.000000000Z supervisor supervisor_fail main"
        );
    }

    #[test]
    fn json_lines_have_every_field() {
        assert_eq!(
            json_line(&die()),
            json!({"time": "2023-11-14T22:13:20.123456789Z", "type": "die",
                   "subject_type": "container", "subject": "web",
                   "id": "c0ffee0123456789abcdef",
                   "attributes": {"exit_code": "1", "oom_killed": "false", "signal": "0"}})
        );
    }

    #[test]
    fn filters_and_since_make_the_request() {
        let events = parse(&[
            "--filter",
            "type=die",
            "-f",
            "container=web",
            "--filter",
            "event=oom",
            "--since",
            "5m",
        ])
        .expect("valid flags");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let request = events.request(now).expect("a request");
        assert_eq!(request.types, ["die", "oom"]);
        assert_eq!(request.containers, ["web"]);
        assert_eq!(
            request.since,
            Some(Timestamp {
                seconds: 700,
                nanos: 0
            })
        );

        let request = parse(&[]).expect("valid").request(now).expect("a request");
        assert_eq!(request, EventsRequest::default());

        let err = parse(&["--since", "1h"])
            .expect("valid")
            .request(now)
            .expect_err("before the epoch");
        assert_eq!(err.to_string(), "--since: 3600s ago is before 1970");
    }

    #[test]
    fn bad_filters_and_durations_name_the_form() {
        for (flag, value, expected) in [
            ("--filter", "type", FILTER_EXPECTED),
            ("--filter", "type=", FILTER_EXPECTED),
            ("--filter", "label=x", FILTER_EXPECTED),
            ("--since", "-5m", duration::EXPECTED),
            ("--since", "yesterday", duration::EXPECTED),
        ] {
            let err = parse(&[flag, value]).err().expect("a bad value");
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
            let text = err.to_string();
            assert!(text.contains(flag) && text.contains(expected), "{text}");
        }
    }
}
