"""Every HTTP case of ROBUSTNESS.md: bad input gets a 4xx with an OpenAI-style JSON error body naming
what was wrong, never a 5xx; afterwards /health is 200 and a good request still succeeds."""
import json
import socket

import httpx
import pytest

GOOD = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
CHAT_GOOD = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def check_error(r, status, *words):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert set(err) >= {"message", "type", "param", "code"}
    for w in words:
        assert w.lower() in err["message"].lower(), (w, err["message"])
    return err


def still_alive(server):
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200
    r = httpx.post(server.url + "/v1/completions", json=GOOD, headers=server.headers(), timeout=120)
    assert r.status_code == 200, r.text


def raw(server, data: bytes, read_all=True):
    """Sends raw bytes, returns (status, headers+body text)."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if not read_all and b"\r\n\r\n" in out:
                break
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    text = out.decode("latin-1")
    status = int(text.split(" ", 2)[1]) if text.startswith("HTTP/1.1 ") else None
    return status, text


def post_raw_body(server, path, body: bytes, extra=b""):
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {server.api_key}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n").encode()
    return raw(server, head + extra + b"\r\n" + body)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"])
@pytest.mark.parametrize("body", [b"{", b'{"prompt": "abc"', b"not json", b"[1, 2", b'{"prompt": "x",}',
                                  b"", b"null", b"[]", b'"str"', b'{"prompt": NaN}', b'{"a": Infinity}'])
def test_malformed_or_truncated_json(http, path, body):
    r = http.post(path, content=body, headers={"Content-Type": "application/json"})
    check_error(r, 400)


def test_error_names_json_position(http):
    err = check_error(http.post("/v1/completions", content=b'{"prompt": "abc"'), 400, "malformed JSON")
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize("field,value,word", [
    ("prompt", 5, "prompt"), ("prompt", {"a": 1}, "prompt"), ("prompt", [1.5], "prompt"), ("prompt", [[]], "prompt"),
    ("prompt", [None], "prompt"),
    ("max_tokens", "10", "max_tokens"), ("max_tokens", 1.5, "max_tokens"), ("max_tokens", True, "max_tokens"),
    ("temperature", "hot", "temperature"), ("temperature", [1], "temperature"),
    ("top_p", "0.5", "top_p"), ("top_k", 1.5, "top_k"), ("top_k", "a", "top_k"), ("n", 1.5, "n"), ("n", "2", "n"),
    ("stream", "yes", "stream"), ("stream", 1, "stream"), ("stop", 5, "stop"), ("stop", [1, 2], "stop"),
    ("logit_bias", [1, 2], "logit_bias"), ("logit_bias", {"5": "x"}, "logit_bias"), ("seed", "1", "seed"),
    ("seed", 1.5, "seed"), ("logprobs", "3", "logprobs"), ("presence_penalty", "1", "presence_penalty"),
    ("frequency_penalty", None, None), ("model", 5, "model"), ("stream_options", {"include_usage": True}, "stream"),
    ("min_p", "0", "min_p"), ("repetition_penalty", "1", "repetition_penalty"), ("echo", True, "echo"),
])
def test_wrong_types_completions(http, field, value, word):
    r = http.post("/v1/completions", json={**GOOD, field: value})
    if word is None:
        assert r.status_code == 200
        return
    err = check_error(r, 400, word)
    assert err["param"] == field or field in err["message"]


@pytest.mark.parametrize("body,word", [
    ({"messages": "hi"}, "messages"), ({"messages": [1]}, "messages"), ({"messages": [{"content": "x"}]}, "role"),
    ({"messages": [{"role": "user"}]}, "content"), ({"messages": [{"role": "user", "content": 5}]}, "content"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "role"), ({"messages": [{"role": 1, "content": "x"}]}, "role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "content"),
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": "yes"}, "logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 99, "logprobs": True}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools"),
])
def test_wrong_types_chat(http, body, word):
    check_error(http.post("/v1/chat/completions", json=body), 400, word)


def test_body_over_limit_is_413(http, server):
    big = b'{"prompt": "' + b"a" * (9 << 20) + b'"}'
    r = http.post("/v1/completions", content=big)
    err = check_error(r, 413, "limit")
    assert err["type"] == "request_too_large"
    still_alive(server)


@pytest.mark.parametrize("body", [{"prompt": ""}, {"prompt": []}, {"prompt": [""]}, {"prompt": [[]]}])
def test_empty_prompt(http, body):
    check_error(http.post("/v1/completions", json={**body, "max_tokens": 2}), 400, "prompt")


def test_missing_prompt_and_messages(http):
    check_error(http.post("/v1/completions", json={"max_tokens": 2}), 400, "prompt")
    check_error(http.post("/v1/chat/completions", json={"max_tokens": 2}), 400, "messages")
    check_error(http.post("/v1/chat/completions", json={"messages": []}), 400, "messages")


def test_invalid_utf8(server):
    for body in [b'{"prompt": "\xff\xfe abc"}', b'{"prompt": "a\xc3"}', b'{"prompt": "\xed\xa0\x80"}',
                 b'{"prompt": "\xc0\xaf"}']:
        status, text = post_raw_body(server, "/v1/completions", body)
        assert status == 400, text
        assert "UTF-8" in text
    # JSON-escaped lone surrogates are not valid text either.
    status, text = post_raw_body(server, "/v1/completions", b'{"prompt": "\\ud800x"}')
    assert status == 400, text
    status, text = post_raw_body(server, "/v1/chat/completions",
                                 b'{"messages": [{"role": "user", "content": "\xfe"}]}')
    assert status == 400, text
    still_alive(server)


@pytest.mark.parametrize("value", [0, -1, -(2 ** 31), 2 ** 31, 2 ** 63, 2 ** 64, -(2 ** 63), 10 ** 30])
def test_bad_max_tokens(http, value):
    body = json.dumps({"prompt": "Hello", "max_tokens": value})
    r = http.post("/v1/completions", content=body)
    err = check_error(r, 400, "max_tokens")
    if abs(value) < 2 ** 64:
        assert str(value) in err["message"]
    r = http.post("/v1/chat/completions",
                  content=json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": value}))
    check_error(r, 400, "max_tokens")


def test_prompt_plus_max_tokens_beyond_context_names_both(http):
    ids = http.post("/tokenize", json={"prompt": "Hello there friend"}).json()["tokens"]
    r = http.post("/v1/completions", json={"prompt": "Hello there friend", "max_tokens": 510})
    err = check_error(r, 400, str(len(ids)), "510", "512")
    assert err["param"] == "max_tokens"
    # A prompt alone longer than the context.
    r = http.post("/v1/completions", json={"prompt": "word " * 2000, "max_tokens": 1})
    check_error(r, 400, "512")
    r = http.post("/v1/completions", json={"prompt": list(range(600)), "max_tokens": 1})
    check_error(r, 400, "600", "512")


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.5), ("temperature", 3), ("temperature", 1e300), ("top_p", 0), ("top_p", -0.1), ("top_p", 1.5),
    ("top_k", -5), ("top_k", 2 ** 40), ("min_p", -0.1), ("min_p", 1.5), ("repetition_penalty", 0),
    ("repetition_penalty", -1), ("repetition_penalty", 100), ("presence_penalty", -3), ("presence_penalty", 2.5),
    ("frequency_penalty", -2.01), ("frequency_penalty", 40), ("n", 0), ("n", -1), ("n", 1000), ("n", 2 ** 40),
    ("logprobs", -1), ("logprobs", 50),
])
def test_out_of_range_sampling(http, field, value):
    err = check_error(http.post("/v1/completions", json={**GOOD, field: value}), 400, field)
    assert err["param"] == field


@pytest.mark.parametrize("field", ["temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty",
                                   "repetition_penalty", "min_p"])
def test_nan_and_infinity(server, field):
    for lit in [b"NaN", b"-Infinity", b"Infinity", b"nan", b"1e999"]:
        status, text = post_raw_body(server, "/v1/completions", b'{"prompt": "x", "' + field.encode() + b'": ' + lit + b"}")
        assert status == 400, (lit, text)


def test_thousands_of_stop_strings(http, server):
    err = check_error(http.post("/v1/completions", json={**GOOD, "stop": [f"s{i}" for i in range(5000)]}), 400,
                      "stop", "5000")
    assert err["param"] == "stop"
    check_error(http.post("/v1/completions", json={**GOOD, "stop": [""]}), 400, "stop")
    check_error(http.post("/v1/completions", json={**GOOD, "stop": "x" * 5000}), 400, "stop")
    still_alive(server)


@pytest.mark.parametrize("bias", [{"999999": 1}, {"-1": 1}, {"49152": 5}, {"abc": 1}, {"1.5": 1},
                                  {"99999999999999999999": 1}, {"5": 1000}, {"5": -101}])
def test_logit_bias_out_of_vocab(http, bias):
    err = check_error(http.post("/v1/completions", json={**GOOD, "logit_bias": bias}), 400, "logit_bias")
    assert err["param"] == "logit_bias"


def test_prompt_token_ids_out_of_vocab(http):
    check_error(http.post("/v1/completions", json={**GOOD, "prompt": [1, 2, 10 ** 9]}), 400, "vocabulary")
    check_error(http.post("/v1/completions", json={**GOOD, "prompt": [-1]}), 400, "vocabulary")
    check_error(http.post("/detokenize", json={"tokens": [10 ** 7]}), 400, "vocabulary")
    check_error(http.post("/detokenize", json={"tokens": "abc"}), 400, "tokens")


def test_unknown_model_is_404(http):
    err = check_error(http.post("/v1/completions", json={**GOOD, "model": "gpt-9"}), 404, "gpt-9")
    assert err["param"] == "model"


ROUTES = [("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
          ("POST", "/tokenize"), ("POST", "/detokenize"), ("GET", "/v1/models/x"), ("GET", "/nope")]


@pytest.mark.parametrize("method,path", ROUTES)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-key", "Bearer ", "Bearer", "Basic dGVzdDp0ZXN0", "test-key-123",
                                  "Bearer test-key-1234", "Bearer  "])
def test_api_key_required_everywhere_but_health(server, method, path, auth):
    # Raw requests: HTTP clients refuse to send header values with trailing spaces ("Bearer ").
    body = json.dumps(GOOD).encode() if method == "POST" else b""
    auth_line = b"" if auth is None else b"Authorization: " + auth.encode() + b"\r\n"
    status, text = raw(server, f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode() + auth_line +
                       f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert status == 401, text
    err = json.loads(text.split("\r\n\r\n", 1)[1])["error"]
    assert err["type"] == "authentication_error" and err["message"]
    status, _ = raw(server, b"GET /health HTTP/1.1\r\nConnection: close\r\n" + auth_line + b"\r\n")
    assert status == 200


def test_not_found_and_wrong_method(http):
    check_error(http.get("/v1/nothing"), 404)
    check_error(http.get("/v1/completions"), 405)
    check_error(http.post("/v1/models", json={}), 405)


def test_deep_nesting(http):
    check_error(http.post("/v1/completions", content=b"[" * 100000 + b"]" * 100000), 400, "deeper")
    check_error(http.post("/v1/completions", content=b'{"prompt": ' + b"[" * 5000), 400)


def test_protocol_level_garbage(server):
    status, _ = raw(server, b"GARBAGE\r\n\r\n")
    assert status == 400
    status, _ = raw(server, b"GET /health HTTP/9.9\r\n\r\n")
    assert status == 505
    status, _ = raw(server, b"GET /health HTTP/1.1\r\nX: " + b"a" * 40000 + b"\r\n\r\n")
    assert status == 431
    status, _ = raw(server, b"POST /v1/completions HTTP/1.1\r\nContent-Length: abc\r\n\r\n")
    assert status == 400
    status, _ = raw(server, b"POST /v1/completions HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
    assert status == 400
    status, _ = raw(server, b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert status == 411
    status, _ = raw(server, b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n")
    assert status == 413
    status, _ = raw(server, b"NoHeaderEnd " + b"x" * 20000)
    assert status == 431
    status, _ = raw(server, b"\x00\x01\x02\xff\r\n\r\n")
    assert status == 400
    still_alive(server)


def test_half_sent_request_then_close(server):
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"prompt\":")
    s.close()
    still_alive(server)


def test_pipelined_requests(server):
    req = (f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.api_key}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(req * 3)
    data = b""
    while data.count(b"HTTP/1.1 200") < 3:
        chunk = s.recv(65536)
        assert chunk
        data += chunk
    s.close()


def test_no_5xx_logged_and_still_alive(server):
    still_alive(server)
    bad = [e for e in server.log_events()
           if e.get("event") == "request" and e.get("status", 0) >= 500 and e.get("path") != "/health"]
    assert not bad, bad[:5]
