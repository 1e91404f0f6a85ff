"""The docs' report screenshot (docs/img/report.png): a report's Eval section in the system chromium, through
Playwright (the HTML report test drives the same browser).

    rigbench demo && python scripts/report_screenshot.py .rigbench/demo/report.html docs/img/report.png
"""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright


def main(report: str, out: str, section: int = 5) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(Path(report).resolve().as_uri())
        page.wait_for_timeout(3000)          # plotly draws the charts after load
        page.evaluate(f"document.querySelector('h2:nth-of-type({section})').scrollIntoView()")
        page.evaluate("window.scrollBy(0, -24)")
        page.wait_for_timeout(1000)
        page.screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/report_screenshot.py REPORT.html OUT.png")
    main(sys.argv[1], sys.argv[2])
