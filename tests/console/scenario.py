"""The console's browser scenario, run by tests/console.rs in Debian's Chromium.

Usage: python scenario.py <config.json>
  config: {"console": "http://127.0.0.1:PORT", "users": {login: password},
           "secrets": [...], "screenshots": "<dir>"}

The test process drives what is not a browser: this script writes `ASK <json>` lines on
stdout and reads one JSON answer per line on stdin (ops: `create` — the agent's request;
`approval` — an approval as the admin API shows it; `advance` — keygate's clock). It ends
with `DONE <json>`; a failed check raises (a traceback, exit status 1).

Every page a user sees is scanned for the secrets the test sent (the agent's token, the
tool's credential, the admin token, the IdP passwords and client secret).
"""

import http.server
import json
import re
import sys
import threading

from playwright.sync_api import expect, sync_playwright

import browser

cfg = json.load(open(sys.argv[1]))
CONSOLE = cfg["console"]
USERS = cfg["users"]
SECRETS = cfg["secrets"]
SHOTS = cfg["screenshots"]
scanned = []


def ask(op, **kw):
    print("ASK " + json.dumps({"op": op, **kw}), flush=True)
    return json.loads(sys.stdin.readline())


def scan(page, name):
    """Nothing secret in the page's source."""
    html = page.content()
    for s in SECRETS:
        assert s not in html, f"a secret the test sent is rendered on {name}"
    scanned.append(name)


def sign_in(b, login):
    ctx = b.new_context()
    page = ctx.new_page()
    page.goto(CONSOLE + "/console/approvals")
    page.click("#sign-in")
    browser.sign_in(page, login, USERS[login])
    # The callback's page moves on to the approvals (a same-site navigation).
    page.wait_for_url(CONSOLE + "/console/approvals")
    return ctx, page


def csrf_of(page):
    return page.locator("form#logout input[name=_csrf]").get_attribute("value")


class Attacker(http.server.BaseHTTPRequestHandler):
    """Another origin on this machine: a page whose form posts to the console by itself."""

    target = ""

    def do_GET(self):
        page = (
            "<!doctype html><body><form id=f method=post action='%s'>"
            "<input name=owner value=mallory@example.com><input name=_csrf value=guess>"
            "</form><script>document.getElementById('f').submit()</script>" % Attacker.target
        )
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.end_headers()
        self.wfile.write(page.encode())

    def log_message(self, *a):
        pass


with sync_playwright() as p:
    b = browser.launch(p)

    # Signed out: the sign-in page, with the console's headers.
    anon = b.new_context().new_page()
    resp = anon.goto(CONSOLE + "/console/")
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    expect(anon.locator("#sign-in")).to_be_visible()
    browser.screenshot(anon, f"{SHOTS}/sign-in.png")
    scan(anon, "sign-in")
    r = anon.request.get(CONSOLE + "/console/events")
    assert r.status == 401, r.status

    # An approver signs in through the identity provider.
    bob_ctx, bob = sign_in(b, "bob")
    expect(bob.locator("#whoami")).to_contain_text("bob@example.com")
    expect(bob.locator("#whoami .role")).to_have_text("approver")
    expect(bob.locator("#approvals .empty")).to_be_visible()
    cookie = next(c for c in bob_ctx.cookies() if c["name"] == "kg_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie

    # The agent's request needs approval: it appears without a reload.
    bob.evaluate("window.__kgMarker = 'not reloaded'")
    created = ask("create")
    assert created["status"] == 403 and created["error"] == "approval_required", created
    aid = created["approval_id"]
    card = bob.locator(f'article.approval[data-id="{aid}"]')
    expect(card).to_be_visible(timeout=15_000)
    assert bob.evaluate("window.__kgMarker") == "not reloaded"
    # The exact request: method and path, the body pretty-printed; who asked.
    expect(card.locator(".request-line")).to_contain_text("POST /repos/acme/app/keys")
    expect(card.locator("pre.body")).to_contain_text('"title": "ci"')
    expect(card.locator("dd.agent")).to_have_text("a1")
    expect(card.locator("dd.owner")).to_have_text("alice@example.com")
    expect(card.locator("dd.policies")).not_to_be_empty()
    expect(card.locator(".kind")).not_to_be_empty()
    browser.screenshot(bob, f"{SHOTS}/approvals.png")
    scan(bob, "approvals (approver)")

    # Forged posts: no CSRF token, a wrong one, and a form on another origin.
    approve_url = f"{CONSOLE}/console/approvals/{aid}/approve"
    r = bob.request.post(approve_url, form={"owner": "mallory@example.com"})
    assert r.status == 403 and "csrf_failed" in r.text(), (r.status, r.text()[:200])
    r = bob.request.post(approve_url, form={"owner": "mallory@example.com", "_csrf": "forged"})
    assert r.status == 403 and "csrf_failed" in r.text(), r.status
    Attacker.target = approve_url
    evil = http.server.HTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    atk = bob_ctx.new_page()
    with atk.expect_response(lambda r: r.url == approve_url) as posted:
        atk.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
    assert posted.value.status == 403, posted.value.status
    atk.close()
    evil.shutdown()
    assert ask("approval", id=aid)["status"] == "pending"

    # The agent's owner cannot approve their own agent's request (deny stays possible).
    alice_ctx, alice = sign_in(b, "alice")
    acard = alice.locator(f'article.approval[data-id="{aid}"]')
    expect(acard.locator(".sod")).to_be_visible()
    expect(acard.locator("form.approve")).to_have_count(0)
    expect(acard.locator("form.deny")).to_have_count(1)
    r = alice.request.post(approve_url, form={"_csrf": csrf_of(alice), "owner": "alice@example.com"})
    assert r.status == 403 and "separation_of_duties" in r.text(), (r.status, r.text()[:300])
    scan(alice, "approvals (owner)")
    alice_ctx.close()

    # An auditor reads but cannot decide.
    carol_ctx, carol = sign_in(b, "carol")
    expect(carol.locator("#whoami .role")).to_have_text("auditor")
    ccard = carol.locator(f'article.approval[data-id="{aid}"]')
    expect(ccard.locator(".readonly")).to_be_visible()
    expect(ccard.locator("form")).to_have_count(0)
    r = carol.request.post(approve_url, form={"_csrf": csrf_of(carol), "owner": "carol@example.com"})
    assert r.status == 403 and "forbidden" in r.text(), r.status
    scan(carol, "approvals (auditor)")

    # Someone the configuration gives no role.
    m_ctx = b.new_context()
    m = m_ctx.new_page()
    m.goto(CONSOLE + "/console/approvals")
    m.click("#sign-in")
    browser.sign_in(m, "mallory", USERS["mallory"])
    m.wait_for_url(CONSOLE + "/console/approvals")
    expect(m.locator("#error")).to_have_attribute("data-code", "no_role")
    expect(m.locator("article.approval")).to_have_count(0)
    m_ctx.close()

    # An unverified email is no email: frank claims alice's address, gets the approver
    # role by group, and can approve nothing (nor pass as alice).
    f_ctx, f = sign_in(b, "frank")
    expect(f.locator("#whoami")).not_to_contain_text("alice@example.com")
    r = f.request.post(approve_url, form={"_csrf": csrf_of(f), "owner": "frank@example.com"})
    assert r.status == 403 and "no_verified_email" in r.text(), (r.status, r.text()[:300])
    f_ctx.close()
    assert ask("approval", id=aid)["status"] == "pending"

    # The approver approves; the agent's retry goes through once.
    card.locator("input[name=ticket]").fill("SEC-42")
    card.locator("input[name=note]").fill("CI deploy key")
    card.locator("button.approve").click()
    bob.wait_for_url(re.compile(r".*/console/approvals\?done=approve.*"))
    expect(bob.locator("#flash")).to_contain_text("approved")
    expect(bob.locator(f'#decided tr[data-id="{aid}"] td.status')).to_have_text("approved")
    decided = ask("approval", id=aid)
    assert decided["approver"] == "bob@example.com" and decided["ticket"] == "SEC-42", decided
    first = ask("create")
    assert first["status"] == 201, first
    again = ask("create")
    assert again["status"] == 403, again

    # The inventory: the identity created, filtered, exported.
    bob.goto(CONSOLE + "/console/inventory")
    row = bob.locator("table#inventory tr.identity")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("SEC-42")
    expect(row).to_contain_text("alice@example.com")
    browser.screenshot(bob, f"{SHOTS}/inventory.png")
    scan(bob, "inventory")
    bob.fill("#filter input[name=q]", "no-such-thing")
    bob.click("#filter button")
    expect(bob.locator("table#inventory tr.identity")).to_have_count(0)
    csv = bob.request.get(CONSOLE + "/console/inventory.csv")
    assert csv.status == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text().strip().splitlines()
    assert lines[0].startswith('"id","kind","identifier"') and len(lines) == 2, lines
    assert "SEC-42" in lines[1] and "bob@example.com" in lines[1], lines

    # Agents: an approver cannot suspend; an admin can, and resumes.
    bob.goto(CONSOLE + "/console/agents")
    expect(bob.locator("form.suspend")).to_have_count(0)
    dave_ctx, dave = sign_in(b, "dave")
    dave.goto(CONSOLE + "/console/agents")
    a1 = dave.locator('section.agent[data-id="a1"]')
    expect(a1.locator("table.calls")).to_contain_text("github:create_deploy_key")
    # Newest first: the second retry (refused, the approval spent), then the one let through.
    decisions = a1.locator("table.calls td.decision")
    expect(decisions.nth(0)).to_have_text("needs_approval")
    expect(decisions.nth(1)).to_have_text("allow")
    # What the anomaly detectors found (here: a1's first call to a tool, recorded).
    expect(a1.locator("table.anomalies")).to_contain_text("new_tool")
    expect(a1.locator("table.anomalies")).to_contain_text("first call to tool gh")
    browser.screenshot(dave, f"{SHOTS}/agents.png")
    scan(dave, "agents")
    a1.locator("form.suspend input[name=reason]").fill("investigating a loop")
    a1.locator("form.suspend button").click()
    dave.wait_for_url(CONSOLE + "/console/agents")
    expect(a1.locator(".suspended")).to_be_visible()
    expect(a1.locator(".why")).to_contain_text("investigating a loop")
    refused = ask("create")
    assert refused["status"] == 403 and refused["error"] == "agent_suspended", refused
    a1.locator("form.resume button").click()
    dave.wait_for_url(CONSOLE + "/console/agents")
    expect(a1.locator(".suspended")).to_have_count(0)
    back = ask("create")
    assert back["error"] == "approval_required", back

    # Past its review date, the identity is highlighted. (Sessions end by keygate's
    # clock too: 200 days later the auditor signs in again.)
    ask("advance", secs=200 * 86400)
    carol.goto(CONSOLE + "/console/inventory")
    expect(carol.locator("#sign-in")).to_be_visible()
    carol_ctx.close()
    carol_ctx, carol = sign_in(b, "carol")
    carol.goto(CONSOLE + "/console/inventory")
    expect(carol.locator("table#inventory tr.identity.overdue")).to_have_count(1)
    carol.select_option("#filter select[name=state]", "overdue")
    carol.click("#filter button")
    expect(carol.locator("table#inventory tr.identity")).to_have_count(1)
    scan(carol, "inventory (overdue)")

    # Signing out ends the session.
    carol.click("form#logout button")
    expect(carol.locator("#sign-in")).to_be_visible()
    r = carol.request.get(CONSOLE + "/console/approvals/list")
    assert r.status == 401, r.status

    b.close()

print("DONE " + json.dumps({"scanned": scanned}), flush=True)
