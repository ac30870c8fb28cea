//! Size caps on what a source may read, and their parser: part of the plan (a
//! source's `max_size`), used by `sources::safe_read` when it reads.

/// Default cap on a secret file (per source: `max_size`).
pub(crate) const DEFAULT_MAX: u64 = 64 * 1024;
/// Default cap on a dotenv file, which holds many keys (and sometimes PEM blocks).
pub(crate) const DEFAULT_DOTENV_MAX: u64 = 1024 * 1024;

/// Parses a size such as `"64KiB"`, `"1 MiB"`, `"2MB"`, `"4096"` (bytes).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; write e.g. \"64KiB\" or \"1MiB\""))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit; use B, KB, KiB, MB, MiB, GB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{s:?} must be more than 0 and fit in 64 bits"))
}
