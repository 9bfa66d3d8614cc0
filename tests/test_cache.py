"""AnswerCache: round trip, persistence across instances and processes, and keys that change with every part."""

import sqlite3
import subprocess
import sys

import pytest

from rubric_rft.llm.cache import AnswerCache, cache_key

KEY_PARTS = {
    "backend": "openai",
    "model": "judge",
    "template": "v1",
    "shape": "batched",
    "prompt": "How do I make tea?",
    "response": "Boil water.",
    "criteria": ["Mentions water.", "Says how long."],
}


def test_round_trip(tmp_path):
    cache = AnswerCache(tmp_path / "verdicts.sqlite")
    assert cache.get("k") is None and len(cache) == 0
    cache.put("k", {"satisfied": [True, False]})
    assert cache.get("k") == {"satisfied": [True, False]}
    cache.put("k", {"satisfied": [False, False]})
    assert cache.get("k") == {"satisfied": [False, False]} and len(cache) == 1
    cache.close()


def test_persists_across_instances_and_creates_its_folder(tmp_path):
    path = tmp_path / "nested" / "verdicts.sqlite"
    first = AnswerCache(path)
    first.put("k", {"p_yes": 0.75})
    first.close()
    second = AnswerCache(path)
    assert second.get("k") == {"p_yes": 0.75} and len(second) == 1
    second.close()


def test_a_closed_cache_opens_again_on_use(tmp_path):
    cache = AnswerCache(tmp_path / "v.sqlite")
    cache.put("k", {"satisfied": [True]})
    cache.close()
    cache.close()  # twice is harmless
    assert cache.get("k") == {"satisfied": [True]} and len(cache) == 1
    cache.close()


def test_uses_wal_mode(tmp_path):
    cache = AnswerCache(tmp_path / "v.sqlite")
    assert len(cache) == 0  # the file is created on first use
    cache.close()
    with sqlite3.connect(tmp_path / "v.sqlite") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_another_process_writing_the_same_file_is_seen(tmp_path):
    path = tmp_path / "shared.sqlite"
    cache = AnswerCache(path)
    cache.put("mine", {"satisfied": [True]})
    writer = (
        "import sys; from rubric_rft.llm.cache import AnswerCache; "
        "c = AnswerCache(sys.argv[1]); [c.put(f'theirs{i}', {'satisfied': [False]}) for i in range(50)]; c.close()"
    )
    subprocess.run([sys.executable, "-c", writer, str(path)], check=True)
    assert cache.get("theirs49") == {"satisfied": [False]} and len(cache) == 51
    cache.close()


def test_key_does_not_depend_on_keyword_order():
    assert cache_key(**KEY_PARTS) == cache_key(**dict(reversed(list(KEY_PARTS.items()))))
    assert len(cache_key(**KEY_PARTS)) == 64


@pytest.mark.parametrize("part", sorted(KEY_PARTS))
def test_key_changes_with_each_part(part):
    changed = dict(KEY_PARTS)
    changed[part] = list(reversed(changed[part])) if isinstance(changed[part], list) else changed[part] + "!"
    assert cache_key(**changed) != cache_key(**KEY_PARTS)
