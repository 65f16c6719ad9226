"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 (stdlib) for faults a real server cannot be made to produce."""

from __future__ import annotations

import itertools
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAST_RETRY = {"retry-after-ms": "10"}


def completion(text="ok", cached=None, logprobs=None) -> dict:
    usage = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": logprobs}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [choice],
        "usage": usage,
    }


def reply(status=200, body=None, headers=None, raw: bytes | None = None, content_type="application/json", sleep=0.0):
    """One scripted answer; `raw` sends bytes as they are (for broken bodies)."""
    data = raw if raw is not None else json.dumps(completion() if body is None else body).encode()
    return {"status": status, "data": data, "headers": headers or {}, "content_type": content_type, "sleep": sleep}


class FakeServer:
    """Answers each POST with `respond(request_json, headers)`; records what it saw."""

    def __init__(self, respond):
        self.respond = respond
        self.seen: list[dict] = []  # {"body": ..., "headers": ...} per attempt, in arrival order
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()  # cuts scripted sleeps short at shutdown

    def handle(self, handler: BaseHTTPRequestHandler):
        body = json.loads(handler.rfile.read(int(handler.headers.get("content-length", 0))) or b"{}")
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self.lock:
            self.seen.append({"body": body, "headers": headers})
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            r = self.respond(body, headers)
            self.stop.wait(r["sleep"])
            handler.send_response(r["status"])
            handler.send_header("content-type", r["content_type"])
            handler.send_header("content-length", str(len(r["data"])))
            for k, v in r["headers"].items():
                handler.send_header(k, v)
            handler.end_headers()
            handler.wfile.write(r["data"])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)
        finally:
            with self.lock:
                self.active -= 1


def cycling(*replies):
    """Answers in order, over and over."""
    it, lock = itertools.cycle(replies), threading.Lock()

    def respond(body, headers):
        with lock:
            return next(it)

    return respond


def scripted(*replies):
    """Answers in order; the last one repeats."""
    queue = list(replies)
    lock = threading.Lock()

    def respond(body, headers):
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return respond


@contextmanager
def fake_server(respond):
    fake = FakeServer(respond)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            fake.handle(self)

        def log_message(self, *args):  # keep test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        yield fake
    finally:
        fake.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def answer_to_schema(body, headers):
    """A valid answer for whichever prompt this is, read off the schema it sends."""
    schema = body.get("response_format", {}).get("json_schema", {}).get("schema", {})
    props = schema.get("properties", {})
    if "explanation" in props:
        text = {"explanation": f"explanation number {len(json.dumps(body)) % 97}"}
    elif "labels" in props:
        text = {"labels": [1] * props["labels"]["minItems"]}
    elif "activations" in props:
        text = {"activations": [0] * props["activations"]["minItems"]}
    elif "intruder" in props:
        text = {"intruder": 1}
    elif "texts" in props:
        text = {"texts": ["The king spoke to the people."] * props["texts"].get("minItems", 1)}
    else:
        text = {"intervened": "A"}
    return reply(body=completion(json.dumps(text)))
