//! Rendering of `agentsup env WORKER`: text, JSON and dotenv, secrets masked unless
//! `--reveal` (SPEC 3). This is the only place in agentsup that may print a value.

use std::fmt::Write as _;

use crate::env::BuiltEnv;
use crate::plan::Plan;
use crate::redact::mask_url_password;
use crate::secret::mask;

/// How `agentsup env` prints an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Format {
    /// An aligned table.
    #[default]
    Text,
    /// `{"NAME": {"value", "source", "secret"}}`.
    Json,
    /// `NAME=value` lines.
    Dotenv,
}

/// Renders a built environment. `width`: the terminal's columns, which the text
/// table's values wrap to (names and sources never wrap); `None` wraps nothing.
pub(crate) fn render(
    env: &BuiltEnv,
    format: Format,
    reveal: bool,
    plan: &Plan,
    width: Option<usize>,
) -> String {
    let shown = |secret: bool, value: &str| -> String {
        if secret && !reveal {
            mask(value)
        } else {
            value.to_string()
        }
    };
    // A connection URL's password is masked whatever the variable's name; the
    // scheme, user and host stay visible (issue 12).
    let url_masked = |secret: bool, value: &str| -> Option<String> {
        (!secret && !reveal)
            .then(|| mask_url_password(value))
            .flatten()
    };
    match format {
        Format::Json => {
            let mut map = serde_json::Map::new();
            for (k, v) in &env.vars {
                let value = url_masked(v.secret, v.value.expose())
                    .unwrap_or_else(|| shown(v.secret, v.value.expose()));
                map.insert(
                    k.clone(),
                    serde_json::json!({
                        "value": value,
                        "source": v.provenance.to_string(),
                        "secret": v.secret,
                    }),
                );
            }
            let mut s = serde_json::to_string_pretty(&serde_json::Value::Object(map))
                .unwrap_or_else(|_| "{}".into());
            s.push('\n');
            s
        }
        Format::Dotenv => {
            let mut s = String::new();
            for (k, v) in &env.vars {
                let _ = writeln!(s, "# {}", v.provenance);
                if v.secret && !reveal {
                    let _ = writeln!(
                        s,
                        "# {k}=<secret, {}; add --reveal to print it>",
                        mask(v.value.expose())
                    );
                } else if let Some(masked) = url_masked(v.secret, v.value.expose()) {
                    let _ = writeln!(
                        s,
                        "# {k}={masked} (the password is masked; add --reveal to print it)"
                    );
                } else {
                    let _ = writeln!(s, "{k}={}", dotenv_quote(v.value.expose()));
                }
            }
            s
        }
        Format::Text => {
            let rows: Vec<(String, String, String)> = env
                .vars
                .iter()
                .map(|(k, v)| {
                    let value = shown(v.secret, v.value.expose());
                    let value = if v.secret && !reveal {
                        value
                    } else if let Some(masked) = url_masked(v.secret, v.value.expose()) {
                        format!("{masked:?}")
                    } else {
                        format!("{value:?}")
                    };
                    (k.clone(), value, relative(&v.provenance.to_string()))
                })
                .collect();
            let mut s = table(&rows, width);
            if env.vars.contains_key("PYTHON_DOTENV_DISABLED") {
                let note = format!(
                    "note: PYTHON_DOTENV_DISABLED=1 stops python-dotenv's load_dotenv() from pulling a stale .env past agentsup; set [env] worker_dotenv = true in {} to allow it",
                    plan.config_path.display()
                );
                s.push('\n');
                for line in crate::output::width::wrap(&note, width, 0, "note: ".len()) {
                    let _ = writeln!(s, "{}", line.trim_end());
                }
            }
            if !reveal
                && env
                    .vars
                    .values()
                    .any(|v| v.secret || mask_url_password(v.value.expose()).is_some())
            {
                let _ = writeln!(s, "note: secret values are masked; --reveal prints them");
            }
            s
        }
    }
}

/// A source under the current directory, as the check report shows paths:
/// relative, so the table's columns stay narrow (JSON keeps the full path).
fn relative(source: &str) -> String {
    let Ok(cwd) = std::env::current_dir() else {
        return source.to_owned();
    };
    let prefix = format!("{}/", cwd.display());
    match source.strip_prefix(&prefix) {
        Some(rest) if !rest.is_empty() && !rest.starts_with("../") => rest.to_owned(),
        _ => source.to_owned(),
    }
}

/// Widest value column without a terminal width: a longer value (PATH) pushes
/// its own source to the right instead of padding every row to its length.
const MAX_VALUE_COLUMN: usize = 40;

/// Narrowest value column when the terminal is narrow: a value this short stays
/// whole; a longer one wraps.
const MIN_VALUE_COLUMN: usize = 24;

/// Narrowest source column: a path wraps at its `/` to fit it.
const MIN_SOURCE_COLUMN: usize = 12;

/// `NAME  VALUE  SOURCE`, each column as wide as its content. With a `width`, every
/// column counts: when the values and sources don't both fit beside the names, the
/// value and source columns split the room so the table has the fewest lines
/// (then the fewest cells broken, then the widest sources); a long value continues
/// on the following lines of its column, broken after a `:`, `/`, `,` or space
/// where it can (a PATH at its separators), and a long source after a `/`. Names
/// never wrap.
fn table(rows: &[(String, String, String)], width: Option<usize>) -> String {
    let chars = |t: &str| t.chars().count();
    let name_w = rows.iter().map(|r| chars(&r.0)).max().unwrap_or(0).max(4);
    let natural_src = rows.iter().map(|r| chars(&r.2)).max().unwrap_or(0).max(6);
    let natural_val = rows.iter().map(|r| chars(&r.1)).max().unwrap_or(0).max(5);
    let (val_w, src_w) = match width {
        None => (natural_val.min(MAX_VALUE_COLUMN), natural_src),
        Some(w) => split_room(rows, w.saturating_sub(name_w + 4), natural_val, natural_src),
    };
    let cells = |v: &str, src: &str| -> (Vec<String>, Vec<String>) {
        match width {
            None => (vec![v.to_string()], vec![src.to_string()]),
            Some(_) => (
                break_at(v, val_w, VALUE_BREAKS),
                break_at(src, src_w, &["/"]),
            ),
        }
    };
    let mut s = String::new();
    let _ = writeln!(s, "{:name_w$}  {:val_w$}  SOURCE", "NAME", "VALUE");
    for (k, v, src) in rows {
        let (values, sources) = cells(v, src);
        for i in 0..values.len().max(sources.len()) {
            let name = if i == 0 { k.as_str() } else { "" };
            let piece = values.get(i).map_or("", String::as_str);
            let source = sources.get(i).map_or("", String::as_str);
            let pad = val_w.saturating_sub(chars(piece));
            let line = format!("{name:name_w$}  {piece}{}  {source}", " ".repeat(pad));
            let _ = writeln!(s, "{}", line.trim_end());
        }
    }
    s
}

/// Where a long value may break, best first: after a PATH separator, a list comma
/// or a space; else after a path or URL step.
const VALUE_BREAKS: &[&str] = &[":,; ", "/"];

/// The value and source columns' widths within `room`: both natural when they fit,
/// else the split with the fewest table lines, then the fewest broken cells, then
/// the widest source column.
fn split_room(
    rows: &[(String, String, String)],
    room: usize,
    natural_val: usize,
    natural_src: usize,
) -> (usize, usize) {
    if natural_val + natural_src <= room {
        return (natural_val, natural_src);
    }
    let min_src = natural_src.min(MIN_SOURCE_COLUMN);
    let lo = natural_val.min(MIN_VALUE_COLUMN);
    let hi = natural_val.min(room.saturating_sub(min_src));
    if hi < lo {
        // Too narrow for both minimums: values keep theirs, sources take the rest.
        return (lo, room.saturating_sub(lo).max(1));
    }
    let cost = |val_w: usize| {
        let src_w = room - val_w;
        let (mut lines, mut broken) = (0, 0);
        for (_, v, src) in rows {
            let nv = break_at(v, val_w, VALUE_BREAKS).len();
            let ns = break_at(src, src_w, &["/"]).len();
            lines += nv.max(ns);
            broken += usize::from(nv > 1) + usize::from(ns > 1);
        }
        (lines, broken, std::cmp::Reverse(src_w))
    };
    let best = (lo..=hi).min_by_key(|&v| cost(v)).unwrap_or(lo);
    (best, room - best)
}

/// `text` in pieces of at most `width` characters, each ending after the last
/// character of the first group of `breaks` that has one in the piece's second
/// half, else cut at `width`.
fn break_at(text: &str, width: usize, breaks: &[&str]) -> Vec<String> {
    let width = width.max(1);
    let mut rest: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    while rest.len() > width {
        let cut = breaks
            .iter()
            .find_map(|group| (width / 2..width).rev().find(|&i| group.contains(rest[i])))
            .map_or(width, |i| i + 1);
        out.push(rest.drain(..cut).collect());
    }
    out.push(rest.into_iter().collect());
    out
}

/// Quotes a value so python-dotenv, Node's dotenv and agentsup all read it back.
pub(crate) fn dotenv_quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@+,".contains(c))
    {
        return v.to_string();
    }
    if !v.contains('\'') && !v.contains('\n') {
        return format!("'{v}'");
    }
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '$' => s.push_str("\\$"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod table_tests {
    use super::table;

    fn rows() -> Vec<(String, String, String)> {
        let path = format!("{:?}", "/usr/local/bin:".repeat(8));
        vec![
            (
                "MODEL".into(),
                "\"gpt-4o-mini\"".into(),
                "demo.env:3".into(),
            ),
            ("PATH".into(), path, "process env".into()),
        ]
    }

    #[test]
    fn columns_fit_their_content_and_only_values_wrap() {
        let text = table(&rows(), Some(60));
        for line in text.lines() {
            assert!(line.chars().count() <= 60, "{line:?}\n{text}");
        }
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("MODEL  \"gpt-4o-mini\""), "{text}");
        assert!(lines[1].ends_with("  demo.env:3"), "{text}");
        assert!(
            lines[2].starts_with("PATH   \"/usr/local/bin:") && lines[2].ends_with("process env")
        );
        // PATH continues under VALUE, with no name and no source.
        assert!(lines.len() > 4, "{text}");
        assert!(
            lines[3].starts_with("       ") && !lines[3][7..].starts_with(' '),
            "{text}"
        );
        let joined: String = lines[2..]
            .iter()
            .map(|l| l[7..].trim_end().trim_end_matches("process env").trim_end())
            .collect();
        assert_eq!(joined, rows()[1].1);
    }

    #[test]
    fn without_a_width_a_long_value_does_not_pad_every_row() {
        let text = table(&rows(), None);
        let model = text.lines().nth(1).unwrap();
        assert!(
            model.len() < 70,
            "MODEL's row is padded to PATH's length: {model:?}"
        );
        assert_eq!(
            text.lines().count(),
            3,
            "nothing wraps without a width:\n{text}"
        );
    }

    #[test]
    fn every_column_counts_and_sources_wrap_at_slashes() {
        let mut rows = rows();
        rows.push((
            "OPENAI_API_KEY".into(),
            "sk-d…FE3x (48 chars)".into(),
            "examples/demo/secrets/OPENAI_API_KEY".into(),
        ));
        rows.push((
            "OPENAI_BASE_URL".into(),
            "\"http://127.0.0.1:8799/v1\"".into(),
            "[env] vars".into(),
        ));
        for width in [60, 80, 120] {
            let text = table(&rows, Some(width));
            for line in text.lines() {
                assert!(line.chars().count() <= width, "{width}: {line:?}\n{text}");
            }
            let url = text
                .lines()
                .find(|l| l.starts_with("OPENAI_BASE_URL"))
                .unwrap();
            assert!(url.contains("\"http://127.0.0.1:8799/v1\""), "{text}");
        }
        let text = table(&rows, Some(80));
        let key = text
            .lines()
            .position(|l| l.starts_with("OPENAI_API_KEY"))
            .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[key].ends_with("examples/demo/secrets/"), "{text}");
        assert!(lines[key + 1].trim() == "OPENAI_API_KEY", "{text}");
        // PATH breaks after its separators.
        let path = text.lines().position(|l| l.starts_with("PATH")).unwrap();
        assert!(
            lines[path]
                .trim_end_matches("process env")
                .trim_end()
                .ends_with(':'),
            "{text}"
        );
    }
}
