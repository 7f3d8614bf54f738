"""Dataset versions: a content hash over the normalised examples of every split.

The hash depends only on content (not on file names, paths or timestamps), so the same examples always
give the same version, and a run records exactly which data it was trained and evaluated on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from hone.data.formats import Example


def dataset_hash(splits: Mapping[str, Sequence[Example]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(splits):
        digest.update(f"split:{name}\n".encode())
        for example in splits[name]:
            content = {
                "kind": example.kind,
                "messages": example.messages,
                "chosen": example.chosen,
                "rejected": example.rejected,
                "text": example.text,
            }
            line = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()
