//! Passwords inside connection strings: secret whatever the variable's name, since
//! `DATABASE_URL` or `CELERY_BROKER_URL` carry one as often as any `*_PASSWORD`
//! (issue 12). Two shapes:
//!
//! - the userinfo of a URL, `postgres://app:PASS@db/x`;
//! - a password parameter (`password`, `passwd`, `pwd`, `pass`, any case) in a URL
//!   query (`postgres://db/x?user=app&password=PASS`, `jdbc:mysql://h/db?password=`),
//!   a `;`-separated connection string (ADO.NET, ODBC, JDBC for SQL Server:
//!   `Server=x;User Id=u;Password=PASS;`, quoted `"…"`/`'…'` or `{…}` values too),
//!   or a libpq `key=value` list (`host=db user=app password=PASS`).

use std::ops::Range;

/// The byte range of the password in `value` when it holds a URL of the form
/// `scheme://user:password@host…` (the password non-empty). Only the first URL of
/// the value is looked at; the scheme must be letters, digits, `+`, `-` or `.`.
fn userinfo_password(value: &str) -> Option<Range<usize>> {
    let sep = value.find("://")?;
    let scheme_start = value[..sep]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .map_or(0, |i| i + 1);
    if sep == scheme_start || !value.as_bytes()[scheme_start].is_ascii_alphabetic() {
        return None;
    }
    let auth_start = sep + 3;
    let rest = &value[auth_start..];
    // The authority ends at the path, query or fragment (or whitespace, for a
    // URL inside a longer value); its userinfo ends at the last `@`.
    let auth_end = rest
        .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
        .unwrap_or(rest.len());
    let at = rest[..auth_end].rfind('@')?;
    let colon = rest[..at].find(':')?;
    let range = auth_start + colon + 1..auth_start + at;
    (!range.is_empty()).then_some(range)
}

/// Parameter names whose value is a password (compared ignoring case).
const PASSWORD_KEYS: [&str; 4] = ["password", "passwd", "pwd", "pass"];

/// What ends an unquoted parameter value: it depends on what came before the key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    /// After `?` or `&`: a URL query (`&`, `;`, `#` or whitespace end it).
    Query,
    /// After `;`, or at the start of a value holding a `;`: a connection string,
    /// whose values may hold spaces (only `;` ends one; trailing spaces are not
    /// part of it).
    Semicolon,
    /// After whitespace, or at the start of a value with no `;`: a libpq-style
    /// `key=value` list.
    Space,
}

/// The byte ranges of the password parameters' values in `value` (non-empty).
fn parameter_passwords(value: &str) -> Vec<Range<usize>> {
    let b = value.as_bytes();
    let has_semicolon = b.contains(&b';');
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let context = match i.checked_sub(1).map(|p| b[p]) {
            None if has_semicolon => Context::Semicolon,
            None => Context::Space,
            Some(b'?' | b'&') => Context::Query,
            Some(b';') => Context::Semicolon,
            Some(c) if c.is_ascii_whitespace() => Context::Space,
            Some(_) => {
                i += 1;
                continue;
            }
        };
        match parameter_value(b, i, context) {
            Some(r) => {
                i = r.end.max(i + 1);
                if !r.is_empty() {
                    out.push(r);
                }
            }
            None => i += 1,
        }
    }
    out
}

/// When a password key starts at `b[at..]` (after spaces), followed by `=`: the
/// range of its value.
fn parameter_value(b: &[u8], at: usize, context: Context) -> Option<Range<usize>> {
    let skip_spaces = |mut k: usize| {
        while k < b.len() && (b[k] == b' ' || b[k] == b'\t') {
            k += 1;
        }
        k
    };
    let k = skip_spaces(at);
    let key = PASSWORD_KEYS.iter().find(|key| {
        b.get(k..k + key.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(key.as_bytes()))
    })?;
    let eq = skip_spaces(k + key.len());
    if b.get(eq) != Some(&b'=') {
        return None;
    }
    let start = if context == Context::Query {
        eq + 1
    } else {
        skip_spaces(eq + 1)
    };
    let quote = b.get(start).copied();
    match quote {
        // `"pa;ss"` / `'pa''ss'` (a doubled quote is one quote, as ADO.NET and
        // ODBC write it; libpq escapes with a backslash), `{pa;ss}` (ODBC).
        Some(q @ (b'"' | b'\'' | b'{')) if context != Context::Query => {
            let close = if q == b'{' { b'}' } else { q };
            let mut j = start + 1;
            while j < b.len() {
                if b[j] == b'\\' && q == b'\'' {
                    j += 2;
                } else if b[j] == close {
                    if b.get(j + 1) == Some(&close) {
                        j += 2;
                    } else {
                        return Some(start + 1..j);
                    }
                } else {
                    j += 1;
                }
            }
            // Unterminated: the rest is the value.
            Some(start + 1..b.len())
        }
        _ => {
            let ends = |c: u8| match context {
                Context::Query => matches!(c, b'&' | b';' | b'#') || c.is_ascii_whitespace(),
                Context::Semicolon => c == b';',
                Context::Space => c.is_ascii_whitespace(),
            };
            let mut end = b[start..]
                .iter()
                .position(|&c| ends(c))
                .map_or(b.len(), |p| start + p);
            while end > start && b[end - 1].is_ascii_whitespace() {
                end -= 1;
            }
            Some(start..end)
        }
    }
}

/// The byte ranges of every password in `value` (a URL's userinfo, password
/// parameters), sorted and not overlapping.
pub(crate) fn password_ranges(value: &str) -> Vec<Range<usize>> {
    let mut all: Vec<Range<usize>> = userinfo_password(value).into_iter().collect();
    all.extend(parameter_passwords(value));
    all.sort_by_key(|r| (r.start, r.end));
    let mut out: Vec<Range<usize>> = Vec::with_capacity(all.len());
    for r in all {
        if out.last().is_none_or(|last| r.start >= last.end) {
            out.push(r);
        }
    }
    out
}

/// The first password in `value` ([`password_ranges`]), if it has one.
pub(crate) fn url_password(value: &str) -> Option<Range<usize>> {
    password_ranges(value).into_iter().next()
}

/// `value` with each of its passwords ([`password_ranges`]) replaced by `***`,
/// when it has one.
pub(crate) fn mask_url_password(value: &str) -> Option<String> {
    let ranges = password_ranges(value);
    if ranges.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(value.len());
    let mut last = 0;
    for r in ranges {
        out.push_str(&value[last..r.start]);
        out.push_str("***");
        last = r.end;
    }
    out.push_str(&value[last..]);
    Some(out)
}

/// Every password in `value` ([`password_ranges`]), and its percent-decoded form
/// when that differs (a driver may log either), for registration with the
/// redactor.
pub(crate) fn url_password_forms(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    for r in password_ranges(value) {
        let raw = &value[r];
        out.push(raw.to_owned());
        if raw.contains('%')
            && let Some(decoded) = percent_decode(raw)
            && decoded != raw
        {
            out.push(decoded);
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(v: &str) -> Option<&str> {
        url_password(v).map(|r| &v[r])
    }

    #[test]
    fn finds_the_password_of_a_url() {
        assert_eq!(pw("postgres://app:s3cr3t-pw@db:5432/x"), Some("s3cr3t-pw"));
        assert_eq!(
            pw("redis://:hunter2hunter2@cache:6379/0"),
            Some("hunter2hunter2")
        );
        assert_eq!(pw("amqp://u:p%40ss:word@mq/vhost?x=1"), Some("p%40ss:word"));
        assert_eq!(pw("mongodb+srv://u:pw@a@cluster/db"), Some("pw@a"));
        assert_eq!(pw("DSN=mysql://root:rootpass@h/db more"), Some("rootpass"));
        assert_eq!(pw("https://example.com/a:b@c"), None);
        assert_eq!(pw("https://user@example.com"), None);
        assert_eq!(pw("postgres://user:@db/x"), None);
        assert_eq!(pw("://u:p@h"), None);
        assert_eq!(pw("plain value"), None);
    }

    fn all(v: &str) -> Vec<&str> {
        password_ranges(v).into_iter().map(|r| &v[r]).collect()
    }

    /// issue 12, red-team G: passwords outside `user:pass@`.
    #[test]
    fn finds_password_parameters() {
        assert_eq!(
            all("postgres://db/x?user=app&password=QueryStringPass66"),
            ["QueryStringPass66"]
        );
        assert_eq!(
            all("jdbc:postgresql://h:5432/db?user=u&password=S3cret-x&ssl=true"),
            ["S3cret-x"]
        );
        assert_eq!(
            all("mongodb://h/?authSource=admin&PWD=p%40ss#frag"),
            ["p%40ss"]
        );
        assert_eq!(
            all("Server=x;Database=y;User Id=u;Password=SECRET pass;"),
            ["SECRET pass"]
        );
        assert_eq!(
            all("Driver={ODBC};Server=x; PWD = {pa;ss}}w} ;Uid=u"),
            ["pa;ss}}w"]
        );
        assert_eq!(
            all(r#"Data Source=x;Password="a;""b";Trusted=no"#),
            [r#"a;""b"#]
        );
        assert_eq!(
            all("jdbc:sqlserver://h:1433;databaseName=db;user=u;passwd=hunter22"),
            ["hunter22"]
        );
        assert_eq!(
            all("host=db user=app password='it''s a secret' dbname=x"),
            ["it''s a secret"]
        );
        assert_eq!(all("password=abc def"), ["abc"]);
        assert_eq!(
            all("postgres://app:userinfo1@db/x?pass=second22"),
            ["userinfo1", "second22"]
        );
        // Not a password key, or no value.
        assert!(all("https://h/x?passphrase=a&mypassword=b&password_hint=c").is_empty());
        assert!(all("https://h/x?password=&pwd").is_empty());
        assert!(all("--password=x in some text").is_empty());
        assert!(all("compass=north").is_empty());
    }

    #[test]
    fn masks_password_parameters_and_keeps_the_rest() {
        assert_eq!(
            mask_url_password("postgres://db/x?user=app&password=QueryStringPass66").as_deref(),
            Some("postgres://db/x?user=app&password=***")
        );
        assert_eq!(
            mask_url_password("Server=x;Database=y;User Id=u;Password=SECRET;").as_deref(),
            Some("Server=x;Database=y;User Id=u;Password=***;")
        );
        assert_eq!(
            mask_url_password("postgres://app:one11111@db/x?pass=two22222").as_deref(),
            Some("postgres://app:***@db/x?pass=***")
        );
        assert_eq!(
            url_password_forms("mysql://h/db?password=p%40ssword1&pwd=second22"),
            ["p%40ssword1", "p@ssword1", "second22"]
        );
    }

    #[test]
    fn masks_only_the_password() {
        assert_eq!(
            mask_url_password("postgres://app:s3cr3t-pw@db/x").as_deref(),
            Some("postgres://app:***@db/x")
        );
        assert_eq!(
            url_password_forms("amqp://u:p%40ssword1@mq/"),
            vec!["p%40ssword1".to_owned(), "p@ssword1".to_owned()]
        );
        assert!(url_password_forms("https://example.com").is_empty());
    }
}
