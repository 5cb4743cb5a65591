#!/usr/bin/env python3
"""The Airflow UI in headless Chromium (Playwright, sync API), for tests/cluster/ui-login-test.sh.

Checks, each printed as a PASS or FAIL line:
  1. a browser whose NSS database lacks the cluster CA (another $HOME) refuses the page with
     net::ERR_CERT_AUTHORITY_INVALID: the server certificate is really verified;
  2. the trusted browser ($HOME/.pki/nssdb holds the cluster CA) opens the URL and lands on the
     FAB login page ("Sign In", "Enter your login and password below:"), without the
     "Simple auth manager enabled" banner;
  3. a wrong password is refused: an error on the login page, still not logged in;
  4. the right password reaches the Airflow UI: its navigation with "Dags" enabled, the UI's own
     API calls answered 200 (none 401/403), no banner; full-page screenshot <out-dir>/ui-login.png.
The browser is the one given by --chromium (Playwright downloads none); certificate errors are
never ignored. On a failure the page's screenshot and text are saved as failure-<step>.* in
--out-dir. Exit status 0 when every check passed, 1 otherwise.
"""
import argparse
import os
import re
import secrets
import sys
import time
from urllib.parse import urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

BANNER = "Simple auth manager enabled"
FAB_PROMPT = "Enter your login and password below:"
LOGIN_PATH = re.compile(r"^/auth/login/?$")


def say(kind, msg):
    color = "32" if kind == "PASS" else "31"
    print(f"\033[1;{color}m{kind}\033[0m {msg}", flush=True)


class CheckFailed(Exception):
    pass


def launch(pw, args, home):
    # Chromium on Linux reads locally added trust anchors from $HOME/.pki/nssdb: the home decides
    # whether this browser trusts the cluster CA. Root in a container: no sandbox.
    return pw.chromium.launch(
        executable_path=args.chromium,
        headless=True,
        args=["--no-sandbox"],
        env={**os.environ, "HOME": home},
        timeout=args.timeout * 1000,
    )


def body_text(page):
    try:
        return page.locator("body").inner_text(timeout=5000)
    except PlaywrightError:
        return ""


def no_banner(page, where):
    """The Simple auth manager's banner is neither in the DOM nor in the visible text."""
    if BANNER in page.content() or BANNER in body_text(page):
        raise CheckFailed(f"{where}: the page shows '{BANNER}'")


def save_failure(page, out_dir, step):
    try:
        page.screenshot(path=os.path.join(out_dir, f"failure-{step}.png"), full_page=True)
        with open(os.path.join(out_dir, f"failure-{step}.txt"), "w") as f:
            f.write(f"url: {page.url}\n\n{body_text(page)}\n")
    except PlaywrightError as e:
        print(f"  (could not save the failed page: {str(e).splitlines()[0]})", flush=True)


def on_login_page(url, origin):
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}" == origin and LOGIN_PATH.match(u.path) is not None


def check_untrusted(pw, args):
    """1. Without the cluster CA the page must not load, for a certificate authority error."""
    browser = launch(pw, args, args.untrusted_home)
    try:
        page = browser.new_page()
        try:
            resp = page.goto(args.url, wait_until="domcontentloaded", timeout=args.timeout * 1000)
        except PlaywrightError as e:
            first = str(e).splitlines()[0]
            if "net::ERR_CERT_AUTHORITY_INVALID" in first:
                say("PASS", f"Chromium {browser.version} without the cluster CA (no NSS database) refuses {args.url}: net::ERR_CERT_AUTHORITY_INVALID")
                return True
            say("FAIL", f"browser without the cluster CA: {args.url} failed, but not for an unknown authority: {first}")
            return False
        say("FAIL", f"browser without the cluster CA loaded {args.url} (HTTP {resp.status if resp else '?'}): the certificate is not verified")
        return False
    finally:
        browser.close()


def check_login(pw, args, password):
    """2-4. The trusted browser: FAB login page, wrong password refused, right one reaches the UI."""
    ms = args.timeout * 1000
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(args.url))
    browser = launch(pw, args, args.trusted_home)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(ms)
    expect.set_options(timeout=ms)
    page = context.new_page()
    step = "open"
    try:
        # 2. the FAB login page (the UI sends an anonymous visitor there, by HTTP or by script)
        resp = page.goto(args.url, wait_until="domcontentloaded")
        sec = resp.security_details() if resp else None
        page.wait_for_url(lambda u: on_login_page(u, origin), timeout=ms)
        page.wait_for_load_state("networkidle")
        expect(page.get_by_text(FAB_PROMPT, exact=True)).to_be_visible()
        expect(page.get_by_text("Sign In", exact=True).first).to_be_visible()
        if not page.url.startswith("https://"):
            raise CheckFailed(f"login page not served over HTTPS: {page.url}")
        no_banner(page, "login page")
        page.screenshot(path=os.path.join(args.out_dir, "login-page.png"), full_page=True)
        tls = f"{sec.get('protocol')}, issuer '{sec.get('issuer')}', subject '{sec.get('subjectName')}'" if sec else "TLS details not reported"
        say("PASS", f"{args.url} -> FAB login page {urlsplit(page.url).path} ('Sign In', '{FAB_PROMPT}'), "
                    f"certificate trusted through the cluster CA ({tls}); no '{BANNER}'")

        # 3. a wrong password: refused, an error shown, still on the login page
        step = "wrong-password"
        wrong = "wrong-" + secrets.token_hex(8)
        if wrong == password:
            wrong += "x"
        login(page, args.user, wrong)
        if not on_login_page(page.url, origin):
            raise CheckFailed(f"a wrong password left the login page: {page.url}")
        error = page.get_by_text(re.compile(r"invalid login", re.I))
        expect(error.first).to_be_visible()
        expect(page.get_by_text(FAB_PROMPT, exact=True)).to_be_visible()
        no_banner(page, "login page after a wrong password")
        page.screenshot(path=os.path.join(args.out_dir, "wrong-password.png"), full_page=True)
        shown = re.search(r"invalid login[^\n]*", error.first.inner_text(), re.I)
        say("PASS", f"wrong password for '{args.user}' refused: '{shown.group(0).strip() if shown else '?'}', still on {urlsplit(page.url).path}")

        # 4. the right password: the Airflow UI, its API calls authorised
        step = "login"
        api = []  # (status, path) of the UI's own API calls after the login

        def record(r):
            p = urlsplit(r.url).path
            if urlsplit(r.url).netloc == urlsplit(origin).netloc and (p.startswith("/api/v2/") or p.startswith("/ui/")):
                api.append((r.status, p))

        page.on("response", record)
        login(page, args.user, password)
        page.wait_for_url(lambda u: not on_login_page(u, origin), timeout=ms)
        # The UI's navigation sidebar (Airflow 3.3: <div data-testid="nav-sidebar">, earlier and
        # later versions: <nav>) and its "Dags" entry (a link to /dags, or a button).
        nav = page.locator('nav, [data-testid="nav-sidebar"]').first
        expect(nav).to_be_visible()
        dags = nav.get_by_role("link", name="Dags", exact=True).or_(nav.get_by_role("button", name="Dags", exact=True)).first
        expect(dags).to_be_visible()
        href = dags.get_attribute("href")
        if href is not None and not href.rstrip("/").endswith("/dags"):
            raise CheckFailed(f"the 'Dags' entry links to {href}, not /dags")
        # the entry is disabled unless this user's authorised menu items (an API call) include Dags
        for attr in ("disabled", "data-disabled", "aria-disabled"):
            if dags.get_attribute(attr) not in (None, "false"):
                raise CheckFailed(f"the 'Dags' entry is disabled ({attr}): the UI does not see this user as authorised")
        page.wait_for_load_state("networkidle")
        time.sleep(1)  # late renders (banners, alerts) after the last request
        if on_login_page(page.url, origin) or urlsplit(page.url).path.startswith("/auth/"):
            raise CheckFailed(f"sent back to the login page after logging in: {page.url}")
        denied = [f"{s} {p}" for s, p in api if s in (401, 403)]
        if denied:
            raise CheckFailed(f"the UI's API calls were refused after logging in: {', '.join(denied[:5])}")
        okay = [p for s, p in api if s == 200]
        if not okay:
            raise CheckFailed(f"the UI made no successful API call after logging in (seen: {api[:5]})")
        no_banner(page, "Airflow UI")
        shot = os.path.join(args.out_dir, "ui-login.png")
        # The UI scrolls inside its own layout box, not the document: full_page alone would stop
        # at the viewport. Grow the viewport by the hidden part of that box first (capped).
        hidden = page.evaluate("""() => Math.max(0, ...[...document.querySelectorAll('*')]
            .filter(e => /(auto|scroll)/.test(getComputedStyle(e).overflowY))
            .map(e => e.scrollHeight - e.clientHeight))""")
        if hidden > 0:
            size = page.viewport_size
            page.set_viewport_size({"width": size["width"], "height": min(size["height"] + int(hidden) + 8, 4000)})
            page.wait_for_load_state("networkidle")
            time.sleep(0.5)
        page.screenshot(path=shot, full_page=True)
        no_banner(page, "Airflow UI (after the screenshot)")
        say("PASS", f"right password for '{args.user}': Airflow UI at {urlsplit(page.url).path} (navigation with "
                    f"'Dags' enabled), {len(okay)} API calls answered 200, none 401/403; "
                    f"no '{BANNER}'; full-page screenshot {os.path.basename(shot)}")
        return True
    except (CheckFailed, PlaywrightError, AssertionError) as e:
        msg = str(e).strip().splitlines()
        say("FAIL", f"{step}: {' | '.join(line.strip() for line in msg[:6])} (at {page.url})")
        save_failure(page, args.out_dir, step)
        return False
    finally:
        context.close()
        browser.close()


def login(page, user, password):
    """Fills FAB's login form and submits it (a POST answered by a redirect)."""
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(password)
    with page.expect_navigation(wait_until="load"):
        page.locator("input[name=password]").press("Enter")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", help="the Airflow UI, e.g. https://172.30.0.51:8080/")
    ap.add_argument("--chromium", required=True, help="the headless shell binary (chromium-headless-shell)")
    ap.add_argument("--trusted-home", required=True, help="HOME whose .pki/nssdb holds the cluster CA")
    ap.add_argument("--untrusted-home", required=True, help="HOME without an NSS database")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password-file", required=True, help="first word of the first line is the password")
    ap.add_argument("--out-dir", required=True, help="screenshots go here (ui-login.png: the logged-in UI)")
    ap.add_argument("--timeout", type=int, default=90, help="seconds per page wait")
    args = ap.parse_args()
    if not args.url.startswith("https://"):
        ap.error("the URL must be https://")
    with open(args.password_file) as f:
        words = f.readline().split()
    if not words:
        ap.error(f"no password in {args.password_file}")
    if os.path.exists(os.path.join(args.untrusted_home, ".pki")):
        ap.error(f"{args.untrusted_home} has a .pki folder: not an untrusted home")
    os.makedirs(args.out_dir, exist_ok=True)

    with sync_playwright() as pw:
        results = [check_untrusted(pw, args), check_login(pw, args, words[0])]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
