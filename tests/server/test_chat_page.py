"""The chat page at / (web/chat.html compiled into the binary): served without the API key (the API
calls it makes need it), as HTML, self-contained; its API, /v1/models, reports the context length.
The page itself is driven in a real browser by scripts/test-browser.sh."""
import re

import httpx


def test_page_served_without_key(server):
    for path in ("/", "/index.html"):
        r = httpx.get(server.url + path)  # the server has an API key; the page needs none
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html"), r.headers["content-type"]
        assert "<title>llamarun chat</title>" in r.text
        assert r.headers.get("content-security-policy", "").startswith("default-src 'none'")
        # Works offline: no script, style or image from another origin.
        assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', r.text)
        assert "/v1/chat/completions" in r.text and "/v1/models" in r.text
    assert httpx.get(server.url + "/v1/models").status_code == 401  # the API still needs the key


def test_page_routes_are_get_only_and_exact(server):
    assert httpx.post(server.url + "/", content=b"{}").status_code == 405
    assert httpx.get(server.url + "/index.htm", headers=server.headers()).status_code == 404
    assert httpx.get(server.url + "/chat.html", headers=server.headers()).status_code == 404


def test_models_reports_context_length(server, model_name):
    r = httpx.get(server.url + "/v1/models", headers=server.headers())
    assert r.json()["data"][0]["max_model_len"] == 512  # the suite's server runs with --ctx 512
