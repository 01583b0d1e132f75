"""The service's dashboard: content, escaping, no external resource, and a real browser."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dlfd.service.dashboard import render_dashboard
from test_report import BROWSER_ARGS, CHROMIUM

HOSTILE = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')


def version(number: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "number": number,
        "parent": None if number == 0 else number - 1,
        "created_at": f"2026-11-30T15:3{number % 10}:07+00:00",
        "method": None if number == 0 else "dlfd",
        "requests": [],
        "request_count": 0,
        "forgotten_entries": 0,
        "forget_images": 0,
        "weights_sha256": f"{number:02d}" + "ab" * 31,
        "forget_sha256": None,
        "verdict": None,
        "metrics": {},
    }
    base.update(fields)
    return base


def state(versions: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "title": "dlfd service",
        "store": "/srv/dlfd/store",
        "scenario": "orl-glasses",
        "method": "dlfd",
        "settings": {"alpha": 10.0},
        "audit": True,
        "generated_at": "2026-11-30T15:31:07+00:00",
        "requests": {"pending": 2, "scheduled": 4, "done": 5, "refused": 1, "failed": 3},
        "versions": versions,
    }
    base.update(fields)
    return base


def three_versions() -> dict[str, Any]:
    metrics1 = {"forget_acc": 0.81, "retain_acc": 0.97, "test_acc": 0.9, "mia_acc": 0.52}
    metrics2 = {"forget_acc": 0.7, "retain_acc": 0.96, "test_acc": float("nan"), "nomus": 0.86}
    return state([
        version(0),
        version(1, requests=[1, 2], request_count=2, forgotten_entries=3, forget_images=30,
                verdict="pass", metrics={**metrics1, "nomus": None}),
        version(2, requests=[3], request_count=1, forgotten_entries=4, forget_images=41,
                verdict="fail", metrics={**metrics2, "mia_acc": 0.61}),
    ])  # fmt: skip


def text_of(page: str) -> str:
    """The page's visible text, roughly: tags dropped, whitespace collapsed."""
    return " ".join(re.sub(r"<style>.*?</style>|<[^>]+>", " ", page).split())


def test_content_of_three_versions() -> None:
    page = render_dashboard(three_versions())
    text = text_of(page)
    for status, count in (("pending", 2), ("scheduled", 4), ("done", 5), ("refused", 1)):
        assert f"{status}: {count}" in text
    assert "failed: 3" in text
    assert "v0 → v1 → v2 current" in text
    for number in range(3):
        assert f"<tr id='version-{number}'" in page
    # each parent cell links to its parent's row
    assert page.count("<td><a href='#version-0'>v0</a></td>") == 1
    assert page.count("<td><a href='#version-1'>v1</a></td>") == 1
    assert "<tr id='version-2' class='current'>" in page
    assert "class='badge verdict-pass'>pass<" in page
    assert "class='badge verdict-fail'>fail<" in page
    assert "class='badge verdict-none'>not audited<" in page
    row1 = text_of(page.split("<tr id='version-1'")[1].split("</tr>")[0])
    assert "2; 1, 2 3 30 pass 0.810 0.970 0.900 0.520 –" in row1
    row2 = text_of(page.split("<tr id='version-2'")[1].split("</tr>")[0])
    assert "1; 3 4 41 fail 0.700 0.960 – 0.610 0.860" in row2
    assert f"<code title='01{'ab' * 31}'>01ababababab</code>" in page
    assert "Scenario orl-glasses; method dlfd (alpha=10.0); versions are audited" in text
    assert "<svg class='trace'" in page and "no version has been evaluated" not in text.lower()
    # v0 has no metrics, so the trace's axis starts at v1
    assert ">v1</text>" in page and ">v0</text>" not in page


def test_unaudited_service_and_long_request_lists() -> None:
    ids = list(range(1, 21))
    page = render_dashboard(
        state([version(0), version(1, requests=ids, request_count=20)], audit=False, settings={})
    )
    text = text_of(page)
    assert "method dlfd; versions are not audited" in text
    assert "20; 1, 2, 3, 4, 5 …" in text
    assert "title='" + ", ".join(map(str, ids)) + "'" in page


def test_hostile_text_is_escaped() -> None:
    bad_script, bad_img = HOSTILE
    versions = three_versions()["versions"]
    versions[1]["created_at"] = bad_script
    versions[2]["verdict"] = bad_img
    page = render_dashboard(
        state(
            versions,
            title=bad_script,
            scenario=bad_script,
            method=bad_img,
            settings={bad_script: bad_img},
            store=bad_img,
        )
    )
    for bad in HOSTILE:
        assert bad not in page
    assert "<script" not in page and "<img" not in page and "onerror=alert(1)>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "class='badge verdict-other'>&quot;&gt;&lt;img" in page


def test_page_is_self_contained() -> None:
    page = render_dashboard(three_versions())
    links = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page, re.IGNORECASE)
    assert links and all(link.startswith("#") for link in links)
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page.lower() and "<script" not in page.lower()
    assert "@import" not in page and "url(" not in page


def test_only_the_original_version() -> None:
    page = render_dashboard(state([version(0)], requests=dict.fromkeys(
        ("pending", "scheduled", "done", "refused", "failed"), 0)))  # fmt: skip
    text = text_of(page)
    assert "No version has been evaluated yet." in text
    assert "<svg" not in page
    assert "v0 current" in text and "pending: 0" in text
    assert page.count("<tr id='version-") == 1


def many_versions(n: int) -> dict[str, Any]:
    """``n`` versions with metrics, long texts without spaces, and a gap in the trace."""
    versions = [version(0)]
    for k in range(1, n):
        metrics = {"forget_acc": 1 - k / n, "retain_acc": 0.95, "test_acc": 0.9, "mia_acc": 0.5}
        if k == 3:
            metrics = {"forget_acc": None, "retain_acc": float("nan")}
        versions.append(
            version(k, requests=list(range(k, k + 12)), request_count=12, verdict="inconclusive",
                    forgotten_entries=k, forget_images=10 * k, metrics=metrics)
        )  # fmt: skip
    return state(versions, store="/srv/" + "x" * 300, scenario="s" * 200)


def test_trace_breaks_at_a_version_without_numbers() -> None:
    page = render_dashboard(many_versions(6))
    svg = page.split("<svg class='trace'")[1].split("</svg>")[0]
    # v1, v2 | v3 has no number | v4, v5: two line pieces for each of the four numbers
    assert svg.count("<polyline") == 8
    assert svg.count("<circle") == 4 * 4
    assert ">v1</text>" in svg and ">v5</text>" in svg and ">v0</text>" not in svg


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)"
)
def test_page_in_a_headless_browser(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    small, large = tmp_path / "three.html", tmp_path / "many.html"
    small.write_text(render_dashboard(three_versions()), encoding="utf-8")
    large.write_text(render_dashboard(many_versions(40)), encoding="utf-8")
    scroll = "document.documentElement.scrollWidth"
    widths: dict[tuple[str, int], int] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(small.as_uri(), wait_until="load")
            lineage = [page.is_visible(f"#lineage-v{k}") for k in range(3)]
            rows = [page.locator(f"#version-{k}").bounding_box() for k in range(3)]
            figure = page.locator("svg.trace").bounding_box()
            lines = page.locator("svg.trace polyline").count()
            widths["three", 1200] = page.evaluate(scroll)
            for path, width in ((large, 1200), (large, 420), (small, 420)):
                page.set_viewport_size({"width": width, "height": 900})
                page.goto(path.as_uri(), wait_until="load")
                widths[path.stem, width] = page.evaluate(scroll)
                if path == large:
                    many_rows = page.locator("table.versions tbody tr").count()
        finally:
            browser.close()
    assert all(lineage)
    assert all(box and box["width"] > 0 and box["height"] > 0 for box in rows)
    assert figure and figure["width"] > 300 and figure["height"] > 100
    assert lines == 3  # forget, retain and MIA over v1..v2; test accuracy is NaN at v2
    assert many_rows == 40
    assert len(widths) == 4
    assert all(scroll_width <= width for (_, width), scroll_width in widths.items()), widths
