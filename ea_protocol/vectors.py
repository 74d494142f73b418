"""The protocol's test vectors, as data.

``vectors.json`` beside this module is the list published under "Test
vectors" in ``docs/ea-protocol.md`` (the test suite keeps the two equal).
Each vector is one signed request: ``secret``, ``method``, ``path``,
``query_string``, ``timestamp``, ``nonce``, ``body`` (the UTF-8 text of the
request body), and the expected ``canonical`` string and ``signature``;
``name`` only describes it. Another implementation can read the JSON file
directly.
"""

from __future__ import annotations

import json
from pathlib import Path

VECTORS_FILE = Path(__file__).with_name("vectors.json")


def load_vectors() -> list[dict[str, str]]:
    return json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
