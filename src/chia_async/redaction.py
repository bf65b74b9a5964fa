"""Keep secrets out of errors, events, logs and reprs.

Two layers: the values of credentials this process was given (``register_secret``, called by
every backend for its ``api_key=``/token) are replaced wherever they occur, and well-known
credential shapes (``sk-...``, ``AKIA...``, ``Bearer ...``, ``x-api-key: ...``) are masked even
when nobody registered them — a CLI may echo a key it read from its own config.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

__all__ = ["REDACTED", "redact", "redact_headers", "register_secret"]

REDACTED = "[REDACTED]"

_PATTERN_SOURCES = (
    r"\bsk-(?:ant-|proj-|svcacct-|or-)?[A-Za-z0-9_\-]{3,}",  # OpenAI / Anthropic / OpenRouter
    r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key id
    r"\bASIA[0-9A-Z]{16}\b",  # AWS temporary access key id
    r"\bAIza[0-9A-Za-z_\-]{30,}",  # Google API key
    r"\bya29\.[0-9A-Za-z_\-.]+",  # Google OAuth access token
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"\bgsk_[A-Za-z0-9]{20,}",  # Groq
    r"\bfw_[A-Za-z0-9]{20,}",  # Fireworks
    r"\bxox[abpr]-[A-Za-z0-9\-]{10,}",  # Slack
    r"(?i:(?<=bearer )[A-Za-z0-9._~+/\-]+=*)",
    # header- or assignment-style credentials: keep the name, drop the value
    r"(?i:(?<=x-api-key: )\S+)",
    r"(?i:(?<=x-goog-api-key: )\S+)",
    r"(?i:(?<=authorization: )(?!bearer )\S+)",
    r"(?i:(?<=api_key=)[^\s&\"',]+)",
    r"(?i:(?<=apikey=)[^\s&\"',]+)",
    r"(?i:(?<=aws_secret_access_key=)[^\s&\"',]+)",
    r"(?i:(?<=\"api_key\": \")[^\"]+)",
    r"(?i:(?<=\"apiKey\": \")[^\"]+)",
)

_SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "cookie",
        "set-cookie",
        "x-amz-security-token",
    }
)

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_secret_re: re.Pattern[str] | None = None
_patterns: re.Pattern[str] | None = None  # compiled on first use: keeps `import chia_async` cheap


def register_secret(value: str | None) -> None:
    """Remember a credential so that :func:`redact` removes it wherever it appears.

    Values shorter than 4 characters are ignored: masking them would mangle ordinary text.
    """
    global _secrets, _secret_re
    if not value or len(value) < 4:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets = _secrets | {value}
        # longest first, so a secret that contains another is masked whole
        alternatives = sorted(_secrets, key=len, reverse=True)
        _secret_re = re.compile("|".join(re.escape(s) for s in alternatives))


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and credential-shaped strings masked."""
    if not text:
        return text
    secret_re = _secret_re
    if secret_re is not None:
        text = secret_re.sub(REDACTED, text)
    global _patterns
    if _patterns is None:
        _patterns = re.compile("|".join(_PATTERN_SOURCES))
    return _patterns.sub(REDACTED, text)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Copy ``headers`` with credential headers masked and every value passed through ``redact``."""
    return {
        k: (REDACTED if k.lower() in _SENSITIVE_HEADERS else redact(v)) for k, v in headers.items()
    }


# Environment variable names that hold credentials (ANTHROPIC_API_KEY, GH_TOKEN, AWS_SECRET_*,
# *_PASSWORD, ...). Paths and other settings are not secrets, so they stay readable.
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable or header named ``name`` carries a credential."""
    return bool(_SECRET_NAME.search(name))
