"""The built-book checks themselves (tests/book_helpers.page_problems), on HTML snippets as Sphinx writes
them."""

from __future__ import annotations

from book_helpers import page_problems

RAW = """<div class="output text_markdown"><p>| paper's claim | our contrast | ΔAUC (pp) |
|---|---|---|
| a 2-D position code adds about 2 F1 | mias: roi-nopos → roi-rope2d | +1.0 |</p></div>"""
TABLE = """<table class="dataframe"><thead><tr><th>configuration</th><th>auc</th></tr></thead>
<tbody><tr><td>roi-nopos</td><td>0.700 [0.650, 0.750]</td></tr><tr><td>x</td><td>—</td></tr></tbody></table>"""  # noqa: E501 - HTML as Sphinx writes it


def test_a_raw_markdown_table_in_a_paragraph_is_found():
    (problem,) = page_problems(RAW)
    assert problem.startswith("raw markdown table in a paragraph") and "paper's claim" in problem
    # one row without a rule is found too once there are two rows; a single pipe in prose is not a table
    assert page_problems("<p>| a | b |\n| 1 | 2 |</p>")
    assert page_problems("<p>AUC | F1 is not a table</p>") == []


def test_a_real_table_and_pipes_in_code_are_fine():
    assert page_problems(TABLE) == []
    assert page_problems("<p>run <code>| a | b |\n|---|---|</code> to see</p>") == []
    assert page_problems("<pre>| a | b |\n|---|---|</pre>") == []


def test_nan_cells_are_found():
    assert page_problems(TABLE.replace("—", "NaN")) == ["NaN table cell: 'NaN'"]
    assert page_problems("<table><tr><td>nan</td><th>&lt;NA&gt;</th></tr></table>") == [
        "NaN table cell: 'nan'", "NaN table cell: '<NA>'"]
    assert page_problems("<table><tr><td>Nancy</td><td>nano</td></tr></table>") == []
