//! How wide pretty output may be, and wrapping to it (issue 15: a person reads the
//! output at 80 columns). Only text for people wraps; JSON records never do.

use std::borrow::Cow;

/// Narrowest width wrapping honours: below it, a `planner.0 | ` prefix would
/// leave too little room for words.
pub(crate) const MIN_WIDTH: usize = 40;

/// The width to wrap pretty output to: `$COLUMNS` when set to a number (as `COLUMNS=80
/// agentsup run` or a shell that exports it asks), else the width of the terminal
/// on stdout. `None` when stdout is not a terminal (a pipe, a file, journald): logs
/// keep one record per line, which `grep` and log shippers expect.
pub(crate) fn stdout_width() -> Option<usize> {
    let columns = std::env::var("COLUMNS").ok();
    let tty = terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| usize::from(w.0));
    pick(columns.as_deref(), tty)
}

/// [`stdout_width`] for what goes to stderr (agentsup's error lines).
pub(crate) fn stderr_width() -> Option<usize> {
    let columns = std::env::var("COLUMNS").ok();
    let tty = terminal_size::terminal_size_of(std::io::stderr()).map(|(w, _)| usize::from(w.0));
    pick(columns.as_deref(), tty)
}

fn pick(columns: Option<&str>, tty: Option<usize>) -> Option<usize> {
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
        .or(tty.filter(|&c| c > 0))
        .map(|c| c.max(MIN_WIDTH))
}

/// Splits `line` into lines of at most `width` columns (ANSI colour codes take no
/// room), breaking between words, a word longer than a line (a path, a URL) between
/// characters. The first line starts at column `first` (what precedes it on the
/// screen), the others are indented by `indent` spaces. Without a width, or when it
/// fits, the line comes back whole.
pub(crate) fn wrap(
    line: &str,
    width: Option<usize>,
    first: usize,
    indent: usize,
) -> Vec<Cow<'_, str>> {
    let Some(width) = width else {
        return vec![Cow::Borrowed(line)];
    };
    if first + textwrap::core::display_width(line) <= width {
        return vec![Cow::Borrowed(line)];
    }
    let room = width.saturating_sub(first).max(MIN_WIDTH / 2);
    let pad = " ".repeat(indent);
    // The first line has `room` columns; the rest the same minus their indent,
    // which textwrap counts as part of the line.
    let opts = textwrap::Options::new(room)
        .subsequent_indent(&pad)
        .word_splitter(textwrap::WordSplitter::NoHyphenation)
        .break_words(true);
    textwrap::wrap(line, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_wins_then_the_terminal_then_nothing() {
        assert_eq!(pick(Some("120"), Some(80)), Some(120));
        assert_eq!(pick(Some("junk"), Some(80)), Some(80));
        assert_eq!(pick(None, None), None);
        assert_eq!(pick(Some("10"), None), Some(MIN_WIDTH));
        assert_eq!(pick(Some("0"), None), None);
    }

    #[test]
    fn wraps_between_words_with_a_hanging_indent() {
        let text = "matched `Incorrect API key provided` on the last line: the provider rejected a credential";
        let lines = wrap(text, Some(60), 15, 2);
        assert!(lines.len() > 1, "{lines:?}");
        assert!(lines[0].len() <= 45, "{lines:?}");
        for l in &lines[1..] {
            assert!(l.starts_with("  ") && !l.starts_with("   "), "{l:?}");
            assert!(l.len() <= 45, "{l:?}");
        }
        let joined: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).collect();
        assert_eq!(joined, text.split_whitespace().collect::<Vec<_>>());
    }

    #[test]
    fn a_long_path_is_cut_and_short_lines_stay_whole() {
        let path = format!("/{}", "very-long-directory/".repeat(10));
        for l in wrap(&path, Some(80), 15, 2) {
            assert!(l.len() <= 65, "{l:?}");
        }
        assert_eq!(wrap("short", Some(80), 15, 2), vec![Cow::Borrowed("short")]);
        assert_eq!(wrap(&path, None, 15, 2).len(), 1);
    }

    #[test]
    fn colour_codes_take_no_room() {
        let red = "\u{1b}[31mwarning:\u{1b}[0m";
        let line = format!("{red} {}", "word ".repeat(10));
        assert_eq!(wrap(&line, Some(80), 15, 2).len(), 1);
    }
}
