"""The history page as a browser shows it: headless Chromium loads index.html from disk.

The same DevTools client and Chromium fixture as the report's browser test
(tests/test_report_browser.py): every <img> loads (``naturalWidth > 0``), nothing is logged as
an error, no request leaves the machine, and a full-page screenshot is saved.
"""

from __future__ import annotations

import json

import pytest

from reports.history import build_history
from reports.history_page import build_page
from tests.test_history import real_run, write_series  # noqa: F401  (real_run is a fixture)
from tests.test_report_browser import browser, open_page, screenshot_and_check_offline  # noqa: F401  (browser is a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_history_page_renders_in_chromium_with_every_image_and_no_errors(browser, real_run, tmp_path):  # noqa: F811
    write_series(real_run, tmp_path / "runs", n=12, step_at=6, factor=1.3)
    history = build_history([str(tmp_path / "runs")], repo=None)
    out = tmp_path / "page"
    out.mkdir()
    index = build_page(history, out_dir=out)

    session = open_page(browser, index)

    images = json.loads(browser.send("Runtime.evaluate", {
        "expression": "JSON.stringify(Array.from(document.images, i => "
                      "({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth})))",
        "returnByValue": True,
    }, session=session)["result"]["value"])
    assert len(images) == len(history.series) == len(list(out.glob("*.png"))) >= 1
    not_loaded = [i for i in images if not (i["complete"] and i["width"] > 0)]
    assert not not_loaded, f"images that did not load: {not_loaded}"

    # Every series has its anchor, and the change-point table comes before the first series.
    anchors = json.loads(browser.send("Runtime.evaluate", {
        "expression": "JSON.stringify(Array.from(document.querySelectorAll('section.series'), s => s.id))",
        "returnByValue": True,
    }, session=session)["result"]["value"])
    assert anchors == [s.key for s in history.series]
    before = browser.send("Runtime.evaluate", {
        "expression": "!!(document.getElementById('changes').compareDocumentPosition("
                      "document.querySelector('section.series')) & Node.DOCUMENT_POSITION_FOLLOWING)",
        "returnByValue": True,
    }, session=session)["result"]["value"]
    assert before is True

    screenshot_and_check_offline(browser, session, tmp_path, "history")
