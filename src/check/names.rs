//! Variable names: which provider a name belongs to, which names the SDKs really
//! read, and "did you mean" matching between a declared name and the names the
//! sources hold.
//!
//! Everything here looks at names only, never at values, so its output may be
//! printed as is.

use super::Finding;
use super::provider::Family;
use crate::plan::Plan;
use crate::sources::{ProcessEnv, Severity};

// Whether a variable's name alone marks it secret (SPEC 7): the lists live with the
// secret type, below everything that asks.
use crate::secret::name_looks_secret;

/// Warns when an `[env] inherit` entry (notably `"*"`) hands every worker a
/// secret-looking variable of agentsup's own environment: a secret-looking name,
/// or a value holding a connection URL with a password. Names only, never values.
pub(crate) fn inherited_secrets(plan: &Plan, process_env: &ProcessEnv) -> Vec<Finding> {
    let mut out = Vec::new();
    // `plan.inherit` holds the patterns compiled in `inherit_patterns` order, so
    // a match's index names the entry that let the variable through.
    let mut per_pattern: Vec<Vec<&str>> = vec![Vec::new(); plan.inherit_patterns.len()];
    for (name, value) in &process_env.vars {
        if !(name_looks_secret(name) || crate::redact::url_password(value.expose()).is_some()) {
            continue;
        }
        for i in plan.inherit.matches(name.as_str()) {
            if let Some(names) = per_pattern.get_mut(i) {
                names.push(name.as_str());
            }
        }
    }
    for (pattern, names) in plan.inherit_patterns.iter().zip(per_pattern) {
        if names.is_empty() {
            continue;
        }
        const SHOWN: usize = 8;
        let mut list = names[..names.len().min(SHOWN)].join(", ");
        if names.len() > SHOWN {
            list.push_str(&format!(" and {} more", names.len() - SHOWN));
        }
        out.push(Finding {
            severity: Severity::Warning,
            code: "inherit-secret",
            key: None,
            workers: Vec::new(),
            location: Some(format!("{}: [env] inherit", plan.config_path.display())),
            message: format!(
                "`[env] inherit` entry \"{pattern}\" hands every worker {} secret-looking \
                 variable(s) of agentsup's own environment: {list}",
                names.len()
            ),
            hint: Some(
                "inherit only what workers need (PATH, HOME, LANG, …) and give each worker \
                 its keys through `keys` and a source"
                    .into(),
            ),
        });
    }
    out
}

/// The variables the provider SDKs read by themselves (`reference/secrets.md` C.2),
/// with the SDK that reads each, for "the openai SDK reads OPENAI_API_KEY".
pub(crate) const SDK_NAMES: &[(&str, &str)] = &[
    ("OPENAI_API_KEY", "openai"),
    ("OPENAI_BASE_URL", "openai"),
    ("OPENAI_ORG_ID", "openai"),
    ("OPENAI_PROJECT_ID", "openai"),
    ("AZURE_OPENAI_API_KEY", "openai (AzureOpenAI)"),
    ("AZURE_OPENAI_AD_TOKEN", "openai (AzureOpenAI)"),
    ("AZURE_OPENAI_ENDPOINT", "openai (AzureOpenAI)"),
    ("OPENAI_API_VERSION", "openai (AzureOpenAI)"),
    ("ANTHROPIC_API_KEY", "anthropic"),
    ("ANTHROPIC_AUTH_TOKEN", "anthropic"),
    ("ANTHROPIC_BASE_URL", "anthropic"),
    ("GOOGLE_API_KEY", "google-genai"),
    ("GEMINI_API_KEY", "google-genai"),
    ("MISTRAL_API_KEY", "mistralai"),
    ("GROQ_API_KEY", "groq"),
    ("CO_API_KEY", "cohere"),
    ("COHERE_API_KEY", "cohere"),
];

/// Names people reach for that no string distance connects to the real one.
const ALIASES: &[(&str, &str)] = &[
    ("CLAUDE_API_KEY", "ANTHROPIC_API_KEY"),
    ("CLAUDE_KEY", "ANTHROPIC_API_KEY"),
    ("AZURE_OPENAI_API_VERSION", "OPENAI_API_VERSION"),
    ("AZURE_API_VERSION", "OPENAI_API_VERSION"),
    ("AZURE_OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT"),
    ("AZURE_OPENAI_URL", "AZURE_OPENAI_ENDPOINT"),
];

/// Names that frameworks (not the SDKs themselves) read, so declaring them is not
/// a mistake even though they resemble an SDK name. LangChain's `ChatOpenAI` still
/// reads `OPENAI_API_BASE` and `OPENAI_ORGANIZATION`; the Vercel AI SDK reads
/// `GOOGLE_GENERATIVE_AI_API_KEY`.
const FRAMEWORK_NAMES: &[&str] = &[
    "OPENAI_API_BASE",
    "OPENAI_ORGANIZATION",
    "OPENAI_ADMIN_KEY",
    "GOOGLE_GENERATIVE_AI_API_KEY",
];

/// The provider a key name implies, for keys only (names ending in `_KEY`):
/// `OPENAI_BASE_URL` belongs to OpenAI too but holds no key, and `*_TOKEN` names are
/// bearer tokens for gateways, whose shape nobody can predict.
pub(crate) fn infer_family(name: &str) -> Option<Family> {
    let upper = name.to_ascii_uppercase();
    if !upper.ends_with("_KEY") {
        return None;
    }
    if upper.starts_with("AZURE_OPENAI_") {
        Some(Family::AzureOpenAi)
    } else if upper.starts_with("OPENAI_") {
        Some(Family::OpenAi)
    } else if upper.starts_with("ANTHROPIC_") {
        Some(Family::Anthropic)
    } else if matches!(
        upper.as_str(),
        "GOOGLE_API_KEY" | "GEMINI_API_KEY" | "GOOGLE_GENERATIVE_AI_API_KEY"
    ) {
        Some(Family::Google)
    } else if upper.starts_with("GROQ_") {
        Some(Family::Groq)
    } else if upper.starts_with("MISTRAL_") {
        Some(Family::Mistral)
    } else if upper.starts_with("COHERE_") || upper == "CO_API_KEY" {
        Some(Family::Cohere)
    } else {
        None
    }
}

/// Case, `_`, `-` and `.` removed: `OPEN_AI_API_KEY`, `openai-api-key` and
/// `OPENAI_APIKEY` all become `openaiapikey`.
fn norm(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.'))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// How alike two names are, when they are alike enough to suggest one for the
/// other (higher is closer). Same letters up to case and separators score 1.0; a
/// couple of typos (Damerau–Levenshtein, so `OPENIA` is one edit) or a high
/// Jaro–Winkler score on the normalized names (`OPENAI_KEY` vs `OPENAI_API_KEY`)
/// score less.
pub(crate) fn similarity(a: &str, b: &str) -> Option<f64> {
    if a == b {
        return None;
    }
    let (na, nb) = (norm(a), norm(b));
    if na.is_empty() || nb.is_empty() {
        return None;
    }
    if na == nb {
        return Some(1.0);
    }
    let longest = na.chars().count().max(nb.chars().count());
    let dl = strsim::damerau_levenshtein(&na, &nb);
    // Short names are all "close" to each other; require some length before
    // counting edits, and never more than a quarter of the name.
    if longest >= 6 && dl <= 2 && dl * 4 <= longest {
        return Some(0.95 - 0.05 * dl as f64);
    }
    let jw = strsim::jaro_winkler(&na, &nb);
    if longest >= 8 && jw >= 0.93 {
        return Some(jw * 0.9);
    }
    None
}

/// The names among `candidates` that look like a misspelling of `key`, best first,
/// at most three.
pub(crate) fn near_misses<'a>(
    key: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .filter_map(|c| similarity(key, c).map(|s| (s, c)))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

/// When `name` is not a variable any SDK reads but looks like one that is, the
/// real name and the SDK that reads it.
///
/// Stricter than [`similarity`]: this produces a finding of its own (not a hint on
/// one), so a deliberate second key such as `OPENAI_API_KEY_BACKUP` or
/// `OPENAI_API_KEY2` must not trigger it.
pub(crate) fn sdk_suggestion(name: &str) -> Option<(&'static str, &'static str)> {
    let sdk = |real: &str| SDK_NAMES.iter().find(|(n, _)| *n == real).copied();
    if SDK_NAMES.iter().any(|(n, _)| *n == name) || FRAMEWORK_NAMES.contains(&name) {
        return None;
    }
    if let Some((_, real)) = ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
    {
        return sdk(real);
    }
    let n = norm(name);
    SDK_NAMES.iter().copied().find(|(real, _)| {
        let r = norm(real);
        let upper = name.to_ascii_uppercase();
        let extends = |a: &str, b: &str| a.len() > b.len() && a.starts_with(b);
        if extends(&upper, real) || extends(real, &upper) {
            // `OPENAI_API_KEY_2` extends a real name on purpose; `GROQ` is a prefix
            // of `GROQ_API_KEY` but says nothing about it.
            return false;
        }
        n == r
            // `OPENAI_KEY` for `OPENAI_API_KEY`: the SDK names insert `API`.
            || r.strip_suffix("apikey").is_some_and(|stem| n == format!("{stem}key"))
            // One typo, on names long enough for one edit to mean something.
            || (n.len() >= 8 && strsim::damerau_levenshtein(&n, &r) == 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_names_widened() {
        for name in [
            "OPENAI_API_KEY",
            "GITHUB_TOKEN",
            "DB_PASSWORD_X",
            "SENTRY_DSN",
            "DB_PASS",
            "MYSQL_PWD",
            "MAPS_APIKEY",
            "OPENAI_APIKEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "SSH_PRIVATE_KEY_B64",
            "AWS_SECRET_ACCESS_KEY",
            "client_secret",
            "API_KEY",
            "BASIC_AUTH",
        ] {
            assert!(name_looks_secret(name), "{name}");
        }
        for name in [
            "MODEL",
            "PWD",
            "OLDPWD",
            "PASSWD",
            "DATABASE_URL",
            "PATH",
            "KEYS",
        ] {
            assert!(!name_looks_secret(name), "{name}");
        }
    }

    #[test]
    fn separators_and_case_are_near_misses() {
        for other in [
            "OPEN_AI_API_KEY",
            "OPENAI_APIKEY",
            "openai_api_key",
            "OpenAI-API-Key",
        ] {
            assert_eq!(similarity("OPENAI_API_KEY", other), Some(1.0), "{other}");
        }
        assert!(similarity("OPENAI_API_KEY", "OPENIA_API_KEY").is_some());
        assert!(similarity("ANTHROPIC_API_KEY", "ANTROPIC_API_KEY").is_some());
        assert!(similarity("OPENAI_API_KEY", "OPENAI_KEY").is_some());
    }

    #[test]
    fn different_keys_are_not_near_misses() {
        for other in [
            "AZURE_OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "OPENAI_ORG_ID",
            "OPENAI_BASE_URL",
            "GEMINI_API_KEY",
            "PATH",
            "HOME",
        ] {
            assert_eq!(similarity("OPENAI_API_KEY", other), None, "{other}");
        }
        assert_eq!(similarity("GOOGLE_API_KEY", "GROQ_API_KEY"), None);
        assert_eq!(similarity("DB_URL", "DB_USER"), None);
    }

    #[test]
    fn best_near_miss_first() {
        let got = near_misses(
            "OPENAI_API_KEY",
            ["OPENAI_KEY", "PATH", "OPEN_AI_API_KEY", "OPENIA_API_KEY"],
        );
        assert_eq!(got[0], "OPEN_AI_API_KEY");
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn sdk_names() {
        assert_eq!(
            sdk_suggestion("OPENAI_KEY"),
            Some(("OPENAI_API_KEY", "openai"))
        );
        assert_eq!(
            sdk_suggestion("ANTHROPIC_KEY"),
            Some(("ANTHROPIC_API_KEY", "anthropic"))
        );
        assert_eq!(
            sdk_suggestion("OPEN_AI_API_KEY"),
            Some(("OPENAI_API_KEY", "openai"))
        );
        assert_eq!(
            sdk_suggestion("openai_api_key"),
            Some(("OPENAI_API_KEY", "openai"))
        );
        assert_eq!(
            sdk_suggestion("OPENAI_APIKEY"),
            Some(("OPENAI_API_KEY", "openai"))
        );
        assert_eq!(
            sdk_suggestion("ANTROPIC_API_KEY"),
            Some(("ANTHROPIC_API_KEY", "anthropic"))
        );
        assert_eq!(
            sdk_suggestion("CLAUDE_API_KEY"),
            Some(("ANTHROPIC_API_KEY", "anthropic"))
        );
        assert_eq!(
            sdk_suggestion("AZURE_OPENAI_KEY"),
            Some(("AZURE_OPENAI_API_KEY", "openai (AzureOpenAI)"))
        );
        assert_eq!(
            sdk_suggestion("AZURE_OPENAI_API_VERSION"),
            Some(("OPENAI_API_VERSION", "openai (AzureOpenAI)"))
        );
        assert_eq!(
            sdk_suggestion("GEMINI_KEY"),
            Some(("GEMINI_API_KEY", "google-genai"))
        );
    }

    #[test]
    fn deliberate_names_are_left_alone() {
        for name in [
            "OPENAI_API_KEY",
            "OPENAI_API_KEY_2",
            "OPENAI_API_KEY2",
            "OPENAI_API_KEY_BACKUP",
            "OPENAI_API_BASE",
            "OPENAI_ORGANIZATION",
            "OPENAI_ADMIN_KEY",
            "LANGSMITH_API_KEY",
            "TAVILY_API_KEY",
            "DATABASE_URL",
            "MODEL",
            "GROQ",
            "SERPER_API_KEY",
            "GOOGLE_GENERATIVE_AI_API_KEY",
        ] {
            assert_eq!(sdk_suggestion(name), None, "{name}");
        }
    }

    #[test]
    fn families_from_names() {
        assert_eq!(infer_family("OPENAI_API_KEY"), Some(Family::OpenAi));
        assert_eq!(infer_family("OPENAI_BASE_URL"), None);
        assert_eq!(
            infer_family("AZURE_OPENAI_API_KEY"),
            Some(Family::AzureOpenAi)
        );
        assert_eq!(infer_family("ANTHROPIC_API_KEY"), Some(Family::Anthropic));
        assert_eq!(infer_family("ANTHROPIC_AUTH_TOKEN"), None);
        assert_eq!(infer_family("GEMINI_API_KEY"), Some(Family::Google));
        assert_eq!(infer_family("GOOGLE_CLIENT_KEY"), None);
        assert_eq!(infer_family("CO_API_KEY"), Some(Family::Cohere));
        assert_eq!(infer_family("LANGSMITH_API_KEY"), None);
    }
}
