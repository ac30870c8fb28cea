//! Provider knowledge: key shapes (OpenAI `sk-`, Anthropic `sk-ant-`, Google
//! `AIza` + 35), where a base URL sends requests, and the provider-shape and
//! provider-mismatch rules (SPEC 4, `reference/secrets.md` C.2).
//!
//! A base URL is reduced to a class ([`Host`]) and a key to a kind ([`KeyKind`])
//! before anything is said about them, so messages describe kinds with fixed
//! words and never quote a value.

use crate::config::Provider;
use crate::diag::Severity;

use super::hit::{Hit, hit};

/// A provider whose keys have a recognisable shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    OpenAi,
    AzureOpenAi,
    Anthropic,
    Google,
    Groq,
    Mistral,
    Cohere,
}

impl Family {
    /// `[keys.X] provider` → family; `none` switches the shape checks off.
    pub(crate) fn from_config(p: Provider) -> Option<Family> {
        match p {
            Provider::Openai => Some(Family::OpenAi),
            Provider::AzureOpenai => Some(Family::AzureOpenAi),
            Provider::Anthropic => Some(Family::Anthropic),
            Provider::Google => Some(Family::Google),
            Provider::None => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Family::OpenAi => "OpenAI",
            Family::AzureOpenAi => "Azure OpenAI",
            Family::Anthropic => "Anthropic",
            Family::Google => "Google",
            Family::Groq => "Groq",
            Family::Mistral => "Mistral",
            Family::Cohere => "Cohere",
        }
    }

    /// The variable a key of this family belongs in.
    fn home(self) -> &'static str {
        match self {
            Family::OpenAi => "OPENAI_API_KEY",
            Family::AzureOpenAi => "AZURE_OPENAI_API_KEY",
            Family::Anthropic => "ANTHROPIC_API_KEY",
            Family::Google => "GOOGLE_API_KEY",
            Family::Groq => "GROQ_API_KEY",
            Family::Mistral => "MISTRAL_API_KEY",
            Family::Cohere => "CO_API_KEY",
        }
    }
}

/// Where a base URL (`OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL`) sends requests. Only
/// the class is kept: the URL itself is a value and is never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    /// Not set: the SDK's default.
    Unset,
    /// `api.openai.com`.
    OpenAi,
    /// An Azure OpenAI resource.
    Azure,
    /// `api.anthropic.com`.
    Anthropic,
    /// Gemini's OpenAI-compatible endpoint.
    Google,
    /// Anything else: a proxy, a gateway, a local server.
    Other,
}

/// Scheme and lower-cased host of a URL, without any userinfo, port or path.
pub(crate) fn parse_url(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host_port.split(':').next()?,
    };
    if scheme.is_empty() || host.is_empty() {
        return None;
    }
    Some((
        scheme.to_ascii_lowercase(),
        host.trim_end_matches('.').to_ascii_lowercase(),
    ))
}

/// True for the hosts of Azure OpenAI resources (classic, AI services, AI Foundry).
pub(crate) fn is_azure_host(host: &str) -> bool {
    [
        ".openai.azure.com",
        ".cognitiveservices.azure.com",
        ".services.ai.azure.com",
    ]
    .iter()
    .any(|suffix| host.ends_with(suffix))
}

/// Classifies a base URL value.
pub(crate) fn classify_base_url(url: Option<&str>) -> Host {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Host::Unset;
    };
    match parse_url(url) {
        Some((_, host)) if host == "api.openai.com" => Host::OpenAi,
        Some((_, host)) if host == "api.anthropic.com" => Host::Anthropic,
        Some((_, host)) if host == "generativelanguage.googleapis.com" => Host::Google,
        Some((_, host)) if is_azure_host(&host) => Host::Azure,
        _ => Host::Other,
    }
}

/// A key shape recognised from the value alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// `sk-ant-…`.
    Anthropic,
    /// `sk-proj-…`, `sk-svcacct-…`, `sk-admin-…`: only OpenAI issues these.
    OpenAiScoped,
    /// Any other `sk-…`: OpenAI's legacy keys, but DeepSeek and others use it too.
    OpenAi,
    /// `AIza` + 35 characters.
    Google,
    /// `gsk_…`.
    Groq,
    /// 32 hexadecimal characters: Azure's classic key, but not only Azure's.
    AzureHex,
}

impl KeyKind {
    fn describe(self) -> &'static str {
        match self {
            KeyKind::Anthropic => "an Anthropic key (it starts with `sk-ant-`)",
            KeyKind::OpenAiScoped | KeyKind::OpenAi => "an OpenAI key (it starts with `sk-`)",
            KeyKind::Google => "a Google API key (`AIza` and 35 more characters)",
            KeyKind::Groq => "a Groq key (it starts with `gsk_`)",
            KeyKind::AzureHex => "an Azure OpenAI key (32 hexadecimal characters)",
        }
    }

    fn family(self) -> Family {
        match self {
            KeyKind::Anthropic => Family::Anthropic,
            KeyKind::OpenAiScoped | KeyKind::OpenAi => Family::OpenAi,
            KeyKind::Google => Family::Google,
            KeyKind::Groq => Family::Groq,
            KeyKind::AzureHex => Family::AzureOpenAi,
        }
    }

    /// Shapes no other provider uses, so seeing one under a foreign name is proof.
    fn unambiguous(self) -> bool {
        !matches!(self, KeyKind::OpenAi | KeyKind::AzureHex)
    }
}

/// `AIza` followed by exactly 35 of `[0-9A-Za-z_-]`.
pub(crate) fn is_google_key(v: &str) -> bool {
    v.len() == 39
        && v.starts_with("AIza")
        && v[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Recognises a key by its shape.
pub(crate) fn recognize(v: &str) -> Option<KeyKind> {
    if v.starts_with("sk-ant-") {
        Some(KeyKind::Anthropic)
    } else if ["sk-proj-", "sk-svcacct-", "sk-admin-"]
        .iter()
        .any(|p| v.starts_with(p))
    {
        Some(KeyKind::OpenAiScoped)
    } else if v.starts_with("sk-") {
        Some(KeyKind::OpenAi)
    } else if is_google_key(v) {
        Some(KeyKind::Google)
    } else if v.starts_with("gsk_") {
        Some(KeyKind::Groq)
    } else if v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(KeyKind::AzureHex)
    } else {
        None
    }
}

/// What the value must look like, given the provider and where it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    OpenAi,
    Anthropic,
    Google,
    Azure,
    /// Only a recognisably foreign key is wrong (Groq, Mistral, Cohere).
    NotForeign(Family),
}

impl Expect {
    fn describe(self) -> String {
        match self {
            Expect::OpenAi => "an OpenAI key (`sk-…`)".into(),
            Expect::Anthropic => "an Anthropic key (`sk-ant-…`)".into(),
            Expect::Google => "a Google API key (`AIza…`)".into(),
            Expect::Azure => "an Azure OpenAI key".into(),
            Expect::NotForeign(f) => format!("a {} key", f.label()),
        }
    }

    fn family(self) -> Family {
        match self {
            Expect::OpenAi => Family::OpenAi,
            Expect::Anthropic => Family::Anthropic,
            Expect::Google => Family::Google,
            Expect::Azure => Family::AzureOpenAi,
            Expect::NotForeign(f) => f,
        }
    }
}

/// The expected shape, or none when the key may legitimately hold anything (an
/// inferred OpenAI or Anthropic key sent to a proxy or local server: OpenRouter,
/// LiteLLM, vLLM and friends use their own keys under these names).
fn expectation(family: Family, explicit: bool, host: Host) -> Option<(Expect, &'static str)> {
    const OPENAI_401: &str =
        "the openai SDK sends it to api.openai.com, which answers 401 `invalid_api_key`";
    const AZURE_401: &str = "Azure OpenAI answers 401 \"Access denied due to invalid subscription key or wrong API endpoint\"";
    Some(match (family, host) {
        (Family::OpenAi, Host::Unset | Host::OpenAi) => (Expect::OpenAi, OPENAI_401),
        (Family::OpenAi, Host::Azure) => (
            Expect::Azure,
            "OPENAI_BASE_URL points at an Azure OpenAI resource, which answers 401 \"Access denied \
             due to invalid subscription key or wrong API endpoint\"",
        ),
        (Family::OpenAi, Host::Anthropic) => (
            Expect::Anthropic,
            "OPENAI_BASE_URL points at Anthropic's OpenAI-compatible API, which needs an Anthropic key",
        ),
        (Family::OpenAi, Host::Google) => (
            Expect::Google,
            "OPENAI_BASE_URL points at Gemini's OpenAI-compatible API, which needs a Google API key",
        ),
        (Family::OpenAi, Host::Other) if explicit => {
            (Expect::OpenAi, "[keys] says provider = \"openai\"")
        }
        (Family::OpenAi, Host::Other) => return None,
        (Family::AzureOpenAi, _) => (Expect::Azure, AZURE_401),
        (Family::Anthropic, Host::Unset | Host::Anthropic) => (
            Expect::Anthropic,
            "the anthropic SDK sends it to api.anthropic.com, which answers 401 `invalid x-api-key`",
        ),
        (Family::Anthropic, _) if explicit => {
            (Expect::Anthropic, "[keys] says provider = \"anthropic\"")
        }
        (Family::Anthropic, _) => return None,
        (Family::Google, _) => (Expect::Google, "Google answers 400 `API_KEY_INVALID`"),
        (f @ (Family::Groq | Family::Mistral | Family::Cohere), _) => {
            (Expect::NotForeign(f), "that provider answers 401")
        }
    })
}

/// Provider shape and provider mismatch for one (cleaned) value.
pub(crate) fn provider_hit(
    key: &str,
    v: &str,
    family: Family,
    explicit: bool,
    host: Host,
) -> Option<Hit> {
    let (expect, why) = expectation(family, explicit, host)?;
    let kind = recognize(v);
    let opt_out = format!(
        "if {key} deliberately holds a key for another service, set `[keys.{key}] provider = \"none\"`"
    );
    let mismatch = |k: KeyKind, extra: &str| {
        let home = k.family().home();
        let fix = if home == key {
            format!("put {} in {key}", expect.describe())
        } else {
            format!("move it to {home} and put {} in {key}", expect.describe())
        };
        hit(
            Severity::Error,
            "provider-mismatch",
            format!(
                "{key} holds what looks like {}, not {}: {why}",
                k.describe(),
                expect.describe()
            ),
            format!("{fix}{extra}; {opt_out}"),
        )
    };
    let shape = |rule: String| {
        hit(
            Severity::Error,
            "provider-shape",
            format!("{key} does not look like {}: {rule}", expect.describe()),
            format!(
                "copy the key again from {}; {opt_out}",
                console(expect.family())
            ),
        )
    };
    match (expect, kind) {
        (Expect::OpenAi, Some(KeyKind::OpenAi | KeyKind::OpenAiScoped)) => None,
        (Expect::OpenAi, Some(KeyKind::AzureHex)) => Some(mismatch(
            KeyKind::AzureHex,
            " (an Azure key also needs AZURE_OPENAI_ENDPOINT and OPENAI_API_VERSION)",
        )),
        (Expect::OpenAi, Some(k)) => Some(mismatch(k, "")),
        (Expect::OpenAi, None) => Some(shape("OpenAI keys start with `sk-`".into())),
        (Expect::Anthropic, Some(KeyKind::Anthropic)) => None,
        (Expect::Anthropic, Some(k)) if k != KeyKind::AzureHex => Some(mismatch(k, "")),
        (Expect::Anthropic, _) => Some(shape("Anthropic keys start with `sk-ant-`".into())),
        (Expect::Google, Some(KeyKind::Google)) => None,
        (Expect::Google, Some(k)) if k != KeyKind::AzureHex => Some(mismatch(k, "")),
        (Expect::Google, _) => {
            let len = if v.starts_with("AIza") {
                format!(", and this value has {} characters", v.chars().count())
            } else {
                String::new()
            };
            Some(shape(format!(
                "Google API keys are `AIza` followed by 35 letters, digits, `_` or `-` (39 characters in all){len}"
            )))
        }
        (Expect::Azure, Some(k)) if k != KeyKind::AzureHex => Some(mismatch(
            k,
            "; an Azure resource takes only its own key (Azure portal → Keys and Endpoint)",
        )),
        (Expect::Azure, _) => None,
        (Expect::NotForeign(f), Some(k)) if k.unambiguous() && k.family() != f => {
            Some(mismatch(k, ""))
        }
        (Expect::NotForeign(_), _) => None,
    }
}

fn console(f: Family) -> &'static str {
    match f {
        Family::OpenAi => "https://platform.openai.com/api-keys",
        Family::AzureOpenAi => "the Azure portal (Keys and Endpoint)",
        Family::Anthropic => "https://console.anthropic.com/settings/keys",
        Family::Google => "https://aistudio.google.com/apikey",
        Family::Groq | Family::Mistral | Family::Cohere => "the provider's console",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(classify_base_url(None), Host::Unset);
        assert_eq!(
            classify_base_url(Some("https://api.openai.com/v1")),
            Host::OpenAi
        );
        assert_eq!(
            classify_base_url(Some("https://my-res.openai.azure.com/openai")),
            Host::Azure
        );
        assert_eq!(
            classify_base_url(Some("http://127.0.0.1:8000/v1")),
            Host::Other
        );
        assert_eq!(
            classify_base_url(Some("https://user:pw@API.OPENAI.COM.:443/v1")),
            Host::OpenAi
        );
        assert_eq!(classify_base_url(Some("not a url")), Host::Other);
        assert_eq!(
            parse_url("http://[::1]:8080/x"),
            Some(("http".into(), "::1".into()))
        );
    }
}
