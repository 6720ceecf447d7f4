"""What docs/RESULTS.md's prose says about the small comparison stays what the records say: every
perplexity, difference and p-value a paragraph quotes is one the suite computes from the committed
records (reproduce/report/comparisons.py, with the tests of reproduce/report/fronts.py), as
tests/test_sweep_claims.py does for the sweep files. The generated table blocks are checked by
tests/test_records.py; this checks the hand-written text around them.

A quoted number is accepted when it is, at the precision quoted:
- a perplexity (NNN.NN): a record's val or test ppl, a row's mean or std, an equal-FLOPs cell, or a
  reported number of the registry;
- a difference ("N.NN lower / higher / above / below / apart", "by N.NN"): the difference of two
  rows' means of one section, of an equal-FLOPs comparison, or of a row and its reported counterpart;
- a p-value ("p = 0.NNN"): the test of two rows of one section, or of an equal-FLOPs comparison.
"""

from __future__ import annotations

import itertools
import json
import re
from functools import lru_cache

import pytest
from conftest import REPO

from reproduce.report.comparisons import build_report
from reproduce.report.fronts import compare
from reproduce.report.records import readme_blocks
from reproduce.report.reported import load_reported
from reproduce.report.runs import collect_runs

RESULTS = REPO / "docs" / "RESULTS.md"
SMALL = REPO / "reproduce" / "measured" / "ptb_small"
PPL = re.compile(r"(?<![\d.,x])(\d{2,3}\.\d{2})(?![\d%x])")
DIFF = re.compile(r"(?<![\d.])(\d+\.\d{1,2}) (?:lower|higher|above|below|apart)\b|\bby (\d+\.\d{1,2})\b")
P_VALUE = re.compile(r"\bp = (0\.\d+)")


@lru_cache(maxsize=None)
def computed() -> tuple[set, set, set]:
    """(perplexities, differences, p-values) the records give, each as a float."""
    runs, unfinished = collect_runs("ptb", SMALL)
    report = build_report("ptb", runs, unfinished, "records")
    values, diffs, ps = set(), set(), set()
    for run in runs:
        values.update(v for v in (run.result.get("metrics") or {}).values() if isinstance(v, float))
    values.update(v for entries in (load_reported()["ptb"],) for e in entries
                  for v in (e.get("val_ppl"), e.get("test_ppl")) if isinstance(v, (int, float)))
    for row in report.rows:
        for s in row.metrics.values():
            values.update(v for v in (s.mean, s.std) if v is not None)
        for e in row.reported:
            diffs.update(abs(s.mean - e[m]) for m, s in row.metrics.items() if s.mean is not None and e.get(m))
    for section in report.sections:
        for a, b in itertools.permutations(section.rows, 2):
            c = compare(a.samples("test_ppl"), b.samples("test_ppl"), section.noise)
            diffs.add(abs(c.diff))
            if c.p is not None:
                ps.add(c.p)
        table = section.equal
        for label in table.methods if table else ():
            for x, _ in table.points:
                s, _ = table.cell(label, x)
                values.update(v for v in (s.mean, s.std) if v is not None)
        for points in (table.comparisons.values() if table else ()):
            for pc in points:
                diffs.add(abs(pc.comparison.diff))
                if pc.comparison.p is not None:
                    ps.add(pc.comparison.p)
    return values, diffs, ps


def prose(text: str) -> str:
    """The text of the small comparison's sections, its generated blocks left out."""
    kept, pos = [], 0
    for block in readme_blocks(text):
        kept.append(text[pos:block.start])
        pos = block.end
    text = "".join(kept) + text[pos:]
    return text[text.index("## PTB small (2x200)"):]


def quoted(number: str, found: set) -> bool:
    decimals = len(number.split(".")[1])
    return any(f"{v:.{decimals}f}" == number for v in found)


def claim_problems(text: str) -> list[str]:
    values, diffs, ps = computed()
    problems = []
    for line in prose(text).splitlines():
        for m in DIFF.finditer(line):
            number = m.group(1) or m.group(2)
            if not quoted(number, diffs):
                problems.append(f"difference {number} is no difference of two rows the records give: {line.strip()}")
        for m in P_VALUE.finditer(line):
            if not quoted(m.group(1), ps):
                problems.append(f"p = {m.group(1)} is no test of two rows the records give: {line.strip()}")
        for m in PPL.finditer(line):
            if not quoted(m.group(1), values | diffs):
                problems.append(f"{m.group(1)} is no perplexity or difference of the records: {line.strip()}")
    return problems


def test_results_quotes_only_numbers_the_records_give():
    problems = claim_problems(RESULTS.read_text())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stale", [
    "The fine-tune is 2.30 below L0 from scratch.",  # one seed's gap; the rows are 1.45 apart
    "The GRU is far above the LSTM (112.46).",  # dense over two seeds; over three it is 112.63
    "Magnitude dominates that L0 row (Welch's t p = 0.071).",  # the equal-FLOPs p before pooled t
])
def test_the_check_fails_on_statements_the_records_no_longer_support(stale):
    text = RESULTS.read_text()
    added = text.replace("## PTB small (2x200)", f"## PTB small (2x200)\n\n{stale}\n", 1)
    assert set(claim_problems(added)) - set(claim_problems(text))


def test_the_readme_quotes_the_medium_record_as_it_is():
    """The README's headline: the dense medium run's epochs and training time, from its record."""
    record = json.loads((REPO / "reproduce" / "measured" / "ptb_medium" / "medium_dense" / "result.json").read_text())
    text = " ".join((REPO / "README.md").read_text().split())
    m = re.search(r"(\d+) epochs on one lent H200 on (\d{4}-\d\d-\d\d) \((\d+) s of training", text)
    assert m, "the README's headline no longer names the dense medium run's epochs, date and training time"
    assert (int(m[1]), m[2], int(m[3])) == (record["epochs"], record["finished_at"][:10],
                                             round(record["wall_time_s"]["train"]))
