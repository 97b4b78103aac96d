"""The content policy as a pure module: parsing, matching rules, live reload of the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from voicefleet_server.serving import contentpolicy
from voicefleet_server.serving.contentpolicy import (
    BlockList,
    BlockListError,
    ContentPolicy,
    parse_entries,
)
from voicefleet_server.serving.errors import ContentPolicyViolation


def block_list(text: str) -> BlockList:
    return BlockList(tuple(parse_entries(text)))


@pytest.mark.parametrize(
    ("text", "blocked"),
    [
        ("This is forbidden.", True),
        ("FORBIDDEN!", True),
        ("\uff46\uff4f\uff52\uff42\uff49\uff44\uff44\uff45\uff4e", True),  # full-width (NFKC)
        ("unforbiddenly", False),  # a term is a whole word in spaced scripts
        ("free   money now", True),  # any whitespace run inside a term
        ("freemoney", False),
        ("这是敏感词汇", True),  # CJK: no spaces, so the term matches inside words
        ("a harmless sentence", False),
        ("call 555-0199 now", True),  # a regular expression between slashes
        ("Win A PRIZE today", True),
        ("winning prizes", False),
    ],
)
def test_matching_rules(text: str, blocked: bool) -> None:
    entries = block_list(
        "# comment\n\nforbidden\nfree money\n敏感\n/\\d{3}-\\d{4}/\n/\\bwin\\s+a\\s+prize\\b/\n"
    )
    assert entries.blocks(text) is blocked


def test_regex_escapes_keep_their_case() -> None:
    # \S (non-space) must not be casefolded into \s (space).
    entries = block_list("/x\\Sy/")
    assert entries.blocks("xzy") and not entries.blocks("x y")


def test_an_invalid_expression_names_its_line() -> None:
    with pytest.raises(BlockListError, match="line 2"):
        parse_entries("fine\n/(unclosed/\n")


def test_empty_list_blocks_nothing() -> None:
    assert not BlockList().blocks("anything at all")


def test_refusal_does_not_echo_the_term() -> None:
    error = ContentPolicyViolation()
    assert error.status == 400 and error.code == "content_policy_violation"
    assert "forbidden" not in error.message and error.param == "input"


def test_missing_file_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        ContentPolicy(str(tmp_path / "absent.txt"))


def test_off_without_a_file() -> None:
    policy = ContentPolicy(None)
    assert not policy.enabled and not policy.blocks("forbidden")


def test_file_is_reread_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contentpolicy, "RELOAD_EVERY_S", 0.0)
    terms = tmp_path / "terms.txt"
    terms.write_text("alpha\n", encoding="utf-8")
    policy = ContentPolicy(str(terms))
    assert policy.blocks("say alpha") and not policy.blocks("say beta")

    terms.write_text("beta\n", encoding="utf-8")
    os.utime(terms, ns=(1, 1))  # a different mtime even within one clock tick
    assert policy.blocks("say beta") and not policy.blocks("say alpha")

    # A ConfigMap update: the mounted path becomes a symlink to a new file (here of the
    # same size and mtime, so only the inode tells it apart).
    fresh = tmp_path / "terms-v2.txt"
    fresh.write_text("zeta\n", encoding="utf-8")
    os.utime(fresh, ns=(1, 1))
    terms.unlink()
    terms.symlink_to(fresh)
    assert policy.blocks("zeta function") and not policy.blocks("say beta")

    # A broken update keeps the last good list.
    fresh.write_text("/(broken/\ngamma\n", encoding="utf-8")
    os.utime(fresh, ns=(2, 2))
    assert policy.blocks("zeta") and not policy.blocks("gamma") and policy.entries == 1


def test_reload_is_rate_limited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contentpolicy, "RELOAD_EVERY_S", 3600.0)
    terms = tmp_path / "terms.txt"
    terms.write_text("alpha\n", encoding="utf-8")
    policy = ContentPolicy(str(terms))
    terms.write_text("beta\n", encoding="utf-8")
    os.utime(terms, ns=(1, 1))
    assert policy.blocks("alpha") and not policy.blocks("beta")
