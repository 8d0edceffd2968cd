"""The report page's HTML tables: numbers right-aligned, text columns (a run id, a failure's detail) left-aligned."""
import re

from lorank.report.page import Section, numeric_column, render_html


def test_numeric_column_tells_numbers_from_text():
    assert numeric_column(["0.541", "-", "3e-09", "98%", "0.420†", "1,200"])
    assert not numeric_column(["stopped by SIGTERM; re-run the same command to resume", "-"])
    assert not numeric_column(["-", ""])          # nothing to align: leave it to the default
    assert not numeric_column(["r8-all", "0.5"])  # one text cell makes it a text column


def test_text_columns_are_left_aligned_in_html():
    sec = Section("Interrupted steps", tables=[("steps", ["step", "status", "detail", "n"],
                                                [["train/r1", "interrupted", "stopped by SIGTERM", "255"],
                                                 ["train/r2", "interrupted", "stopped by SIGINT", "12"]])])
    page = render_html("s", [sec])
    heads = re.findall(r"<th( class='txt')?>(\w+)</th>", page)
    assert [(h, bool(c)) for c, h in heads] == [("step", False), ("status", True), ("detail", True), ("n", False)]
    assert "<td>train/r1</td>" in page  # the first column: left-aligned by td:first-child
    assert "<td class='txt'>stopped by SIGTERM</td>" in page and "<td>255</td>" in page
    assert ".txt{text-align:left}" in page.replace("td:first-child,th:first-child,", "")
