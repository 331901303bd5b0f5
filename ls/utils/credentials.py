"""Which keys name credentials: one rule for what run records mask and what messages never repeat."""

from __future__ import annotations

import re

#: Keys that look like credentials (case-insensitive, anywhere in the key), also misspelt (``tracking_pasword``).
#: ``tokens``/``tokenizer`` are model words, ``author`` is not ``auth``, ``partial_credit`` is a metric option:
#: none matches.
_CREDENTIAL_KEY = re.compile(
    r"pas+w|secret|credential|username|auth(?!or)|api[_-]?key|access[_-]?key|private[_-]?key|token(?!s|iz)",
    re.IGNORECASE,
)


def is_credential_key(key: str) -> bool:
    """True for keys such as ``mlflow.tracking_password``, ``hf_token``, ``aws_secret_access_key``."""
    return bool(_CREDENTIAL_KEY.search(str(key)))


__all__ = ["is_credential_key"]
