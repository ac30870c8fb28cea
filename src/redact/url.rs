//! Passwords inside connection URLs (`postgres://app:PASS@db/x`): secret whatever
//! the variable's name, since `DATABASE_URL` or `CELERY_BROKER_URL` carry one as
//! often as any `*_PASSWORD` (issue 12).

use std::ops::Range;

/// The byte range of the password in `value` when it holds a URL of the form
/// `scheme://user:password@host…` (the password non-empty). Only the first URL of
/// the value is looked at; the scheme must be letters, digits, `+`, `-` or `.`.
pub(crate) fn url_password(value: &str) -> Option<Range<usize>> {
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

/// `value` with the password of its URL replaced by `***`, when it has one.
pub(crate) fn mask_url_password(value: &str) -> Option<String> {
    let r = url_password(value)?;
    Some(format!("{}***{}", &value[..r.start], &value[r.end..]))
}

/// The password of `value`'s URL, and its percent-decoded form when that differs
/// (a driver may log either), for registration with the redactor.
pub(crate) fn url_password_forms(value: &str) -> Vec<String> {
    let Some(r) = url_password(value) else {
        return Vec::new();
    };
    let raw = &value[r];
    let mut out = vec![raw.to_owned()];
    if raw.contains('%')
        && let Some(decoded) = percent_decode(raw)
        && decoded != raw
    {
        out.push(decoded);
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
