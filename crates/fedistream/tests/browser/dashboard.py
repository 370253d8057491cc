"""The dashboard in a real browser: Debian's Chromium driven by Playwright.

Run by crates/fedistream/tests/dashboard.rs, which owns the pipeline and the
fake Mastodon server. The two talk over this process's stdin and stdout, one
line at a time: this script prints a step (`loaded`, `seen-post`, ...) when the
page shows what the previous step made happen, and waits for the test to
answer `ok` after it has posted, edited or deleted the next thing on the fake
server. Any failed expectation raises (exit status 1, the reason on stderr).

Usage: dashboard.py BASE_URL CHROMIUM SCREENSHOT_PATH
With DASHBOARD_TOKEN in the environment the server requires that token: the
browser signs in through the /login form first (its cookie then carries the
page, its live feed and its charts).
"""

import json
import os
import re
import sys
import urllib.request

from playwright.sync_api import sync_playwright

WAIT_MS = 30_000
# What a sanitised article may hold: the page's own frame around Mastodon's markup.
ALLOWED_TAGS = {
    "article", "header", "footer", "div", "time", "details", "summary", "ul", "ol", "li",
    "p", "br", "a", "span", "del", "s", "pre", "code", "blockquote", "b", "strong", "i", "em", "u",
}


def step(name):
    print(name, flush=True)
    answer = sys.stdin.readline().strip()
    if answer != "ok":
        raise SystemExit(f"the test answered {answer!r} to {name}")


def pwned(page):
    return page.evaluate("() => window.__pwned === undefined ? null : String(window.__pwned)")


def csp_reports(base):
    req = urllib.request.Request(base + "/metrics")
    if os.environ.get("DASHBOARD_TOKEN"):
        req.add_header("Authorization", "Bearer " + os.environ["DASHBOARD_TOKEN"])
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    m = re.search(r"^fedistream_csp_reports_total(?:\{[^}]*\})? (\d+(?:\.\d+)?)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main():
    base, chromium, shot = sys.argv[1], sys.argv[2], sys.argv[3]
    console = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 412, "height": 915})  # a phone
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        # Test instrumentation (injected by the driver, outside the page's
        # policy): remember what the policy blocked.
        page.add_init_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        token = os.environ.get("DASHBOARD_TOKEN")
        if token:
            # No Authorization header from a browser: the dashboard sends it to the form.
            page.goto(base + "/")
            assert page.url == base + "/login", page.url
            page.fill("#token", token)
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert page.url == base + "/", page.url
            session = [c for c in page.context.cookies() if c["name"] == "fedistream_session"]
            assert len(session) == 1, page.context.cookies()
            c = session[0]
            assert c["httpOnly"] and c["sameSite"] == "Strict" and token not in c["value"], c
            assert token not in page.url and token not in page.content()
        resp = page.goto(base + "/")
        assert resp.status == 200, resp.status
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp, csp
        page.wait_for_function("() => document.getElementById('feed-state').textContent.startsWith('Live')", timeout=WAIT_MS)

        # A post arrives live.
        step("loaded")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#feed article')].some(a => a.textContent.includes('first version'))",
            timeout=WAIT_MS,
        )
        article_id = page.evaluate(
            "() => [...document.querySelectorAll('#feed article')].find(a => a.textContent.includes('first version')).id"
        )
        # An edit replaces it, in place.
        step("seen-post")
        page.wait_for_function(
            "id => { const a = document.getElementById(id); return a && a.textContent.includes('second version'); }",
            arg=article_id,
            timeout=WAIT_MS,
        )
        assert page.locator(f"#{article_id}").count() == 1
        assert "first version" not in page.locator("#feed").inner_text()
        # A delete removes it.
        step("seen-edit")
        page.wait_for_function("id => !document.getElementById(id)", arg=article_id, timeout=WAIT_MS)

        # A hostile post runs nothing, live or server-rendered.
        step("seen-delete")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#feed article')].some(a => a.textContent.includes('hostile marker'))",
            timeout=WAIT_MS,
        )
        for view in ("live", "reloaded"):
            if view == "reloaded":
                page.reload()
                page.wait_for_selector("#feed article", timeout=WAIT_MS)
            hostile = page.locator("#feed article", has_text="hostile marker").first
            for summary in hostile.locator("summary").all():
                summary.click()
            for link in hostile.locator("a").all():
                link.hover()
            # Every element and attribute the article holds, from the DOM.
            parts = hostile.evaluate(
                "a => [a, ...a.querySelectorAll('*')].map(e => [e.tagName.toLowerCase(), [...e.attributes].map(x => [x.name, x.value])])"
            )
            for tag, attrs in parts:
                assert tag in ALLOWED_TAGS, f"{view}: <{tag}> in the article"
                for name, value in attrs:
                    assert not name.startswith("on") and name != "style", f"{view}: {name}={value!r} on <{tag}>"
                    if name in ("href", "src", "action"):
                        assert re.match(r"https?://", value), f"{view}: {name}={value!r} on <{tag}>"
                    if tag == "a" and name == "rel":
                        assert value == "nofollow noopener noreferrer", f"{view}: rel={value!r}"
            name = hostile.locator(".name").inner_text()
            assert "<img" in name, f"{view}: the display name is shown as text: {name!r}"
            assert pwned(page) is None, f"{view}: a payload ran: {pwned(page)}"

        # The policy is enforced and its reports counted: an inline script
        # (what an injection would be) is refused, and reported.
        before = csp_reports(base)
        try:
            page.add_script_tag(content="window.__pwned = 'inline script';")
        except Exception:
            pass  # Playwright reports the refused script as an error too.
        page.wait_for_function("() => window.__violations.some(v => v.startsWith('script-src'))", timeout=WAIT_MS)
        assert pwned(page) is None, f"the inline script ran: {pwned(page)}"
        deadline_ok = False
        for _ in range(300):
            if csp_reports(base) > before:
                deadline_ok = True
                break
            page.wait_for_timeout(100)
        assert deadline_ok, "the violation report was not counted at /csp-report"

        # The charts render: an SVG image each, with bars where there are posts.
        page.goto(base + "/")
        charts = page.locator("img[data-chart]")
        assert charts.count() == 8, charts.count()
        page.wait_for_function(
            "() => [...document.querySelectorAll('img[data-chart]')].every(i => i.complete && i.naturalWidth > 0)", timeout=WAIT_MS
        )
        for i in range(charts.count()):
            img = charts.nth(i)
            alt = img.get_attribute("alt")
            assert alt, "every chart has alt text"
            svg = page.evaluate("src => fetch(src).then(r => r.text())", img.get_attribute("src"))
            assert svg.startswith("<svg") and "<title>" in svg, svg[:200]
            if img.get_attribute("data-chart") in ("hours", "weekdays", "per-day", "languages"):
                assert svg.count("<rect") >= 2, f"{alt}: no bars in {svg[:400]}"

        # Usable on a phone: nothing wider than the screen.
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the page is {overflow}px wider than a phone's screen"

        page.screenshot(path=shot, full_page=True)
        assert not [c for c in console if "pwned" in c.lower()], console
        browser.close()
    print("done " + json.dumps({"screenshot": shot, "console": console}), flush=True)


if __name__ == "__main__":
    main()
