//! The Prometheus text format (version 0.0.4), written directly: one
//! family at a time, its `# HELP` and `# TYPE` lines, then its samples.
//! A family without samples is left out, as the exporters do.
//!
//! Used for the container metrics, which are rendered afresh at every
//! scrape: writing lines costs a few hundred nanoseconds per sample, where
//! a recorder hashes and stores every label set first.

use std::fmt::Write;

/// A family's type, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// The text of one exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Writes the family `name` with the samples `samples` adds.
    pub fn family(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        samples: impl FnOnce(&mut Family<'_>),
    ) {
        let mut f = Family {
            name,
            lines: String::new(),
        };
        samples(&mut f);
        if f.lines.is_empty() {
            return;
        }
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        self.out.push_str(&f.lines);
        self.out.push('\n');
    }

    pub fn into_string(self) -> String {
        self.out
    }
}

/// The samples of one family.
pub struct Family<'a> {
    name: &'a str,
    lines: String,
}

impl Family<'_> {
    /// One sample: `name{k="v",...} value`.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.lines.push_str(self.name);
        if !labels.is_empty() {
            self.lines.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.lines.push(',');
                }
                self.lines.push_str(k);
                self.lines.push_str("=\"");
                escape_label_into(&mut self.lines, v);
                self.lines.push('"');
            }
            self.lines.push('}');
        }
        self.lines.push(' ');
        write_value(&mut self.lines, value);
        self.lines.push('\n');
    }
}

/// A value as the text format takes it: integers without a fraction,
/// `NaN`, `+Inf`, `-Inf` spelled as Prometheus spells them.
fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A label value: `\`, `"` and newlines escaped.
fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A help text: `\` and newlines escaped.
fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes() {
        let mut e = Exposition::new();
        e.family("a_total", Kind::Counter, "Counts\nthings.", |f| {
            f.sample(&[("name", "x\"y"), ("id", "a\\b\nc")], 3.0);
            f.sample(&[], 0.5);
        });
        e.family("empty", Kind::Gauge, "Left out.", |_| {});
        e.family("g", Kind::Gauge, "G.", |f| {
            f.sample(&[("k", "v")], 1e20);
            f.sample(&[("k", "w")], -2.0);
            f.sample(&[("k", "n")], f64::NAN);
            f.sample(&[("k", "i")], f64::INFINITY);
        });
        assert_eq!(
            e.into_string(),
            "# HELP a_total Counts\\nthings.\n# TYPE a_total counter\n\
             a_total{name=\"x\\\"y\",id=\"a\\\\b\\nc\"} 3\na_total 0.5\n\n\
             # HELP g G.\n# TYPE g gauge\n\
             g{k=\"v\"} 100000000000000000000\ng{k=\"w\"} -2\ng{k=\"n\"} NaN\ng{k=\"i\"} +Inf\n\n"
        );
    }
}
