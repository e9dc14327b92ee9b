"""OpenAI API behaviour through the official openai client and plain HTTP."""
import concurrent.futures as cf
import json

import httpx

PROMPT = "The capital of France is"


def test_health_models_and_no_auth_on_health(server, model_name):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    r = httpx.get(server.url + "/v1/models", headers=server.headers())
    assert r.status_code == 200
    assert r.json()["object"] == "list"
    assert model_name.startswith("SmolLM2")
    r = httpx.get(server.url + "/v1/models/" + model_name, headers=server.headers())
    assert r.status_code == 200 and r.json()["id"] == model_name


def test_openai_client_lists_models(oai, model_name):
    assert [m.id for m in oai.models.list().data] == [model_name]


def test_completion_non_stream_and_stream_agree(oai, model_name):
    r = oai.completions.create(model=model_name, prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert len(r.choices) == 1 and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens >= 1 and r.usage.prompt_tokens >= 4
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    text = r.choices[0].text
    assert text
    pieces, reasons = [], []
    for chunk in oai.completions.create(model=model_name, prompt=PROMPT, max_tokens=8, temperature=0, stream=True):
        for c in chunk.choices:
            pieces.append(c.text)
            reasons.append(c.finish_reason)
    assert "".join(pieces) == text
    assert reasons[-1] == r.choices[0].finish_reason


def test_chat_non_stream_and_stream_agree(oai, model_name):
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]
    r = oai.chat.completions.create(model=model_name, messages=msgs, max_tokens=8, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    text = r.choices[0].message.content
    assert text
    stream = oai.chat.completions.create(model=model_name, messages=msgs, max_tokens=8, temperature=0, stream=True,
                                         stream_options={"include_usage": True})
    pieces, roles, usage, finish = [], [], None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert "".join(pieces) == text
    assert roles == ["assistant"]
    assert finish == r.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == r.usage.completion_tokens
    assert usage.prompt_tokens == r.usage.prompt_tokens
    # The streamed usage reports prefix-cache hits as the non-streamed one does (the same prompt ran just before).
    cached = usage.prompt_tokens_details.cached_tokens
    assert isinstance(cached, int) and 0 <= cached <= usage.prompt_tokens


def test_n_choices(oai, model_name):
    r = oai.completions.create(model=model_name, prompt=PROMPT, max_tokens=4, temperature=1.0, n=3, seed=7)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert 3 <= r.usage.completion_tokens <= 12
    seen = set()
    for chunk in oai.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "Hi"}],
                                             max_tokens=3, n=2, stream=True, seed=3):
        for c in chunk.choices:
            seen.add(c.index)
    assert seen == {0, 1}


def test_seed_reproducible(oai, model_name):
    kw = dict(model=model_name, prompt="Once upon a time", max_tokens=12, temperature=1.0, top_p=0.95)
    a = oai.completions.create(seed=1234, **kw).choices[0].text
    b = oai.completions.create(seed=1234, **kw).choices[0].text
    assert a == b
    others = {oai.completions.create(seed=s, **kw).choices[0].text for s in (1, 2, 3)}
    assert len(others | {a}) > 1


def test_stop_string(oai, model_name):
    full = oai.completions.create(model=model_name, prompt=PROMPT, max_tokens=16, temperature=0).choices[0].text
    assert len(full) > 4
    stop = full[2:5].strip() or full[2:5]
    r = oai.completions.create(model=model_name, prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[: full.index(stop)]
    # Streaming gives the same cut.
    s = "".join(c.choices[0].text for c in oai.completions.create(
        model=model_name, prompt=PROMPT, max_tokens=16, temperature=0, stop=stop, stream=True) if c.choices)
    assert s == r.choices[0].text


def test_completion_logprobs(oai, model_name):
    r = oai.completions.create(model=model_name, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert len(lp.tokens) == r.usage.completion_tokens
    for tok, p, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert p <= 0
        assert len(top) <= 3
        # Greedy: the chosen token is the most likely one.
        assert abs(max(top.values()) - p) < 1e-4
        assert tok in top


def test_chat_logprobs(oai, model_name):
    r = oai.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "Count to three."}],
                                    max_tokens=5, temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token or t.bytes
    got = []
    for chunk in oai.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "Count to three."}],
                                             max_tokens=5, temperature=0, logprobs=True, top_logprobs=2, stream=True):
        for c in chunk.choices:
            if c.logprobs and c.logprobs.content:
                got += [t.logprob for t in c.logprobs.content]
    assert len(got) == len(content)
    for a, b in zip(got, content):
        assert abs(a - b.logprob) < 1e-5


def test_max_tokens_and_ignore_eos(http, model_name):
    r = http.post("/v1/completions", json={"model": model_name, "prompt": PROMPT, "max_tokens": 7, "temperature": 0,
                                          "ignore_eos": True})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 7
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_logit_bias_forces_a_token(http, server):
    ids = http.post("/tokenize", json={"prompt": " banana", "add_special_tokens": False}).json()["tokens"]
    r = http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, "temperature": 0,
                                          "logit_bias": {str(ids[0]): 100}, "ignore_eos": True})
    assert r.status_code == 200, r.text
    text = r.json()["choices"][0]["text"]
    first = http.post("/detokenize", json={"tokens": [ids[0]]}).json()["prompt"]
    assert text == first * 4


def test_sampling_parameters_accepted(http):
    body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
            "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": 0.5, "seed": 5}
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    r = http.post("/v1/chat/completions", json={**{k: v for k, v in body.items() if k != "prompt"},
                                               "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text


def test_token_id_prompt_and_batch_prompts(http):
    ids = http.post("/tokenize", json={"prompt": PROMPT}).json()["tokens"]
    a = http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 5, "temperature": 0}).json()
    b = http.post("/v1/completions", json={"prompt": ids, "max_tokens": 5, "temperature": 0}).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    c = http.post("/v1/completions", json={"prompt": [PROMPT, "Hello"], "max_tokens": 3, "temperature": 0}).json()
    assert [ch["index"] for ch in c["choices"]] == [0, 1]
    assert c["choices"][0]["text"] == a["choices"][0]["text"][: len(c["choices"][0]["text"])]


def test_tokenize_detokenize_roundtrip(http):
    r = http.post("/tokenize", json={"prompt": "Hello world, héllo 世界", "add_special_tokens": False})
    assert r.status_code == 200
    toks = r.json()["tokens"]
    assert r.json()["count"] == len(toks) > 0
    assert http.post("/detokenize", json={"tokens": toks}).json()["prompt"] == "Hello world, héllo 世界"
    r = http.post("/tokenize", json={"messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200 and r.json()["count"] > 3


def test_greedy_alone_equals_inside_concurrent_batch(http, server):
    body = {"prompt": "Write a list of fruits:", "max_tokens": 16, "temperature": 0, "ignore_eos": True}
    alone = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
    others = [{"prompt": p, "max_tokens": 16, "temperature": 0.8, "seed": i}
              for i, p in enumerate(["Tell me a story", "1, 2, 3,", "The weather today", "Python is",
                                     "In 1492", "Dear diary", "def main():"])]

    def post(b):
        with httpx.Client(base_url=server.url, headers=server.headers(), timeout=300) as c:
            return c.post("/v1/completions", json=b).json()["choices"][0]["text"]

    with cf.ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(post, b) for b in others[:4]] + [ex.submit(post, body)] + \
               [ex.submit(post, b) for b in others[4:]]
        results = [f.result() for f in futs]
    assert results[4] == alone


def test_metrics_prometheus_format(http):
    http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2})
    r = http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ["llamarun_num_requests_running", "llamarun_num_requests_waiting", "llamarun_kv_cache_usage_ratio",
                 "llamarun_prompt_tokens_total", "llamarun_generation_tokens_total",
                 "llamarun_time_to_first_token_seconds_bucket", "llamarun_inter_token_latency_seconds_bucket",
                 "llamarun_e2e_request_latency_seconds_bucket", "llamarun_num_preemptions_total",
                 "llamarun_prefix_cache_hit_rate"]:
        assert name in text, name
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value)
    assert 'llamarun_time_to_first_token_seconds_bucket{le="+Inf"}' in text


def test_request_log_lines_are_json(server, http):
    http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 1})
    reqs = [e for e in server.log_events() if e.get("event") == "request"]
    assert reqs
    gen = [e for e in reqs if e["path"] == "/v1/completions" and e["status"] == 200]
    assert gen and all(k in gen[-1] for k in ("id", "prompt_tokens", "completion_tokens", "duration_ms", "ttft_ms"))


def test_keep_alive_reuses_connection(server):
    with httpx.Client(base_url=server.url, headers=server.headers()) as c:
        for _ in range(5):
            assert c.get("/v1/models").status_code == 200
        assert c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1}).status_code == 200
        assert c.get("/health").status_code == 200


def test_special_tokens_in_raw_prompt_match_chat(http):
    chat = http.post("/tokenize", json={"messages": [{"role": "system", "content": "S"},
                                                     {"role": "user", "content": "Hi"}]}).json()["tokens"]
    text = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    raw = http.post("/tokenize", json={"prompt": text, "add_special_tokens": False}).json()["tokens"]
    assert raw == chat
