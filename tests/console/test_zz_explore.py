import json, time, yaml
from conftest import wait_for
from services.console import TOKEN, csrf_of

def test_explore(api, browser_client, console_project, sandbox):
    doc = yaml.safe_load(console_project.path.read_text())
    c = sandbox.connection_dict("ivan", password="wrong-pass-123")
    c["auth"]["username"] = "<script>alert(1)</script><img src=x onerror=alert(1)>"
    doc["connections"]["hostile"] = c
    w = sandbox.connection_dict("ivan", password="wrong-pass-123")
    doc["connections"]["wrong"] = w
    console_project.path.write_text(yaml.safe_dump(doc))
    r = api.get("/api/connections"); print(r.status_code, r.text[:3000])
    for n in ("wrong", "hostile"):
        r = api.post(f"/api/connections/{n}/test"); print(n, r.status_code, json.dumps(r.json(), indent=1))
    r = api.post("/api/connections/sandbox/test", json={"folder": "<script>alert(1)</script>"}); print(r.status_code, json.dumps(r.json(), indent=1))
    page = browser_client.get("/connections"); csrf = csrf_of(page.text)
    print(page.text[-3000:])
    f = browser_client.post("/connections/hostile/test", headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
    print(f.status_code, f.text)
    for q in ("since_hours=nan", "since_hours=inf", "since_hours=-inf", "since_hours=1e400", "limit=0"):
        r = api.get("/api/runs?" + q); print(q, r.status_code, r.text[:300])
    r = browser_client.get(f"//evil.example/?token={TOKEN}", follow_redirects=False); print("openredirect", r.status_code, r.headers)
    r = browser_client.get(f"/\\evil.example/?token={TOKEN}", follow_redirects=False); print("openredirect2", r.status_code, r.headers)
    r = api.get("/nonexistent"); print(r.status_code, r.headers, r.text)
    r = browser_client.get("/runs?status=bogus", headers={"Accept": "text/html"}); print(r.status_code, r.text[-600:])
