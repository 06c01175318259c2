"""Benchmark results stay small (a big one is gzipped), every bench writes and reads them through
support/results.py, and every result the docs cite is on disk under the name they cite."""
from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import llm_eval
from support import results

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "lab" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a result file's name as docs cite it: NAME-YYYY-MM-DD..., brace alternatives and * globs allowed
CITED = re.compile(r"(?:[\w.*-]|\{[\w,-]*\})*-20\d\d-\d\d-\d\d(?:[\w.*-]|\{[\w,-]*\})*")
# cited by an earlier session, never committed (the runs' files were not kept)
NEVER_RECORDED = {"hostile-2026-12-06.json", "scope-2026-12-07-scope12.json",
                  "linking-2026-12-07-link15-main.json", "linking-2026-12-07-link15-link15.json"}


def expand(name: str) -> list[str]:
    m = re.search(r"\{([^}]*)\}", name)
    if not m:
        return [name]
    return [n for alt in m.group(1).split(",") for n in expand(name[:m.start()] + alt + name[m.end():])]


def cited_results() -> list[tuple[str, str]]:
    """(where, name) for every result name (or glob) the docs cite."""
    out = []
    for doc in DOCS:
        for i, line in enumerate(doc.read_text().splitlines(), 1):
            for m in CITED.finditer(line):
                token = m.group(0).rstrip(".")
                if token.endswith((".json", ".json.gz", "*")):
                    out += [(f"{doc.relative_to(ROOT)}:{i}", n.rsplit("/", 1)[-1]) for n in expand(token)]
    return out


def test_a_big_result_is_written_gzipped_and_read_by_either_name(tmp_path):
    small, big = {"ratio": 0.5}, {"every_s": [{"t": i, "rss": 200.0 + i / 10} for i in range(3000)]}
    assert results.write(tmp_path / "a.json", small) == tmp_path / "a.json"
    assert json.loads((tmp_path / "a.json").read_text()) == small
    written = results.write(tmp_path / "b.json", big)
    assert written == tmp_path / "b.json.gz" and not (tmp_path / "b.json").exists()
    assert written.stat().st_size < results.BIG < len(json.dumps(big))
    assert json.loads(gzip.decompress(written.read_bytes())) == big
    assert results.read(tmp_path / "b.json") == results.read(written) == big
    # a run that shrinks back under BIG (or is asked for .gz) keeps one file, not two
    assert results.write(tmp_path / "b.json", small) == tmp_path / "b.json"
    assert not written.exists() and results.read(written) == small
    assert results.write(tmp_path / "c.json.gz", small) == tmp_path / "c.json.gz"
    assert results.read(tmp_path / "c.json") == small
    # a stream (a pipe, /dev/stdout) is written as it is, never replaced by a file
    for doc in (small, big):
        r, w = os.pipe()
        with os.fdopen(r, "rb") as out, ThreadPoolExecutor(1) as pool:
            got = pool.submit(out.read)
            assert results.write(f"/proc/self/fd/{w}", doc) == Path(f"/proc/self/fd/{w}")
            os.close(w)
            assert json.loads(got.result(timeout=30)) == doc
    # the same document gives the same bytes (no name or time in the gzip header): a rerun diffs clean
    assert results.write(tmp_path / "d.json", big).read_bytes() == results.write(tmp_path / "e.json", big).read_bytes()


def test_results_in_the_repository_are_small_or_gzipped():
    files = sorted(results.DIR.iterdir())
    assert files
    too_big = [f.name for f in files if f.name.endswith(".json") and f.stat().st_size > results.BIG]
    assert too_big == []
    assert [f.name for f in files if not f.name.endswith((".json", ".json.gz"))] == []
    for f in files:
        if f.name.endswith(".gz"):
            assert results.read(f) is not None, f.name


def test_every_result_the_docs_cite_is_there_under_that_name():
    cited = cited_results()
    assert len(cited) > 40
    missing = [(where, name) for where, name in cited
               if name not in NEVER_RECORDED and not list(results.DIR.glob(name))]
    assert missing == []


def test_llm_eval_analyses_a_gzipped_result(capsys):
    path = results.DIR / "llm-eval-1.5b-2026-12-06.json.gz"
    assert llm_eval.main(["--analyse", str(path.with_name(path.name[:-3]))]) == 0
    assert capsys.readouterr().out == llm_eval.analyse(results.read(path)) + "\n"


def test_git_keeps_every_result_a_bench_writes_and_not_its_leftovers():
    def ignored(name: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", f"bench/results/{name}"],
                              cwd=ROOT).returncode == 0

    assert [n for n in ("hostile-2026-12-09.json", "scope-2026-12-09.json", "capture-2026-12-09-x.json.gz",
                        "kernel-time-2026-12-09.json") if ignored(n)] == []
    assert all(ignored(n) for n in ("soak-2026-12-09.json.tmp", "llm-eval-1.5b-2026-12-09.server.log",
                                    "fuzz-2026-12-09.json.gz.parts"))
