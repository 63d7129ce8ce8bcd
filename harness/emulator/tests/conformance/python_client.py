"""Runs conformance cases through the official Kubernetes Python client.

Usage: python3 python_client.py SERVER_URL < cases.json > results.json

Each case is {"name": ..., "op": OP}; OP is one of
  {"api": "CoreV1Api", "call": "read_namespaced_pod", "args": {...}}
      calls <call>_with_http_info(**args): the client's own request building,
      content types and response decoding;
  {"api": ..., "call": "list_namespaced_pod", "args": {...}, "watch": N}
      streams the call with kubernetes.watch.Watch, stopping after N events;
  {"raw": {"method": "GET", "path": "/api/v1/...", "headers": {...}, "body": "..."}}
      sends a request through the client's REST layer as written (for
      bodies and methods the typed API never sends).
Each result is {"name", "status": HTTP code, "body": the JSON answer (or for
a watch: the list of {"type", "object"} events)}; a case the client itself
refuses to send gives {"name", "error": message}.
"""

import json
import sys

from kubernetes import client, watch
from kubernetes.client.rest import ApiException


def body_of(raw):
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def run(api_client, op):
    if "raw" in op:
        raw = op["raw"]
        url = api_client.configuration.host + raw["path"]
        headers = {"Accept": "application/json"}
        headers.update(raw.get("headers", {}))
        try:
            resp = api_client.rest_client.request(
                raw["method"], url, headers=headers, body=raw.get("body"),
                _request_timeout=20)
            resp.read()
            return {"status": resp.status, "body": body_of(resp.data)}
        except ApiException as e:
            return {"status": e.status, "body": body_of(e.body)}
    api = getattr(client, op["api"])(api_client)
    args = dict(op.get("args", {}))
    if "watch" in op:
        events = []
        w = watch.Watch()
        for ev in w.stream(getattr(api, op["call"]), timeout_seconds=10, **args):
            events.append({"type": ev["type"],
                           "object": api_client.sanitize_for_serialization(ev["object"])})
            if len(events) >= op["watch"]:
                w.stop()
        return {"status": 200, "body": events}
    try:
        data, status, _headers = getattr(api, op["call"] + "_with_http_info")(**args)
        return {"status": status, "body": api_client.sanitize_for_serialization(data)}
    except ApiException as e:
        return {"status": e.status, "body": body_of(e.body)}


def main():
    config = client.Configuration()
    config.host = sys.argv[1]
    results = []
    with client.ApiClient(config) as api_client:
        for case in json.load(sys.stdin):
            try:
                out = run(api_client, case["op"])
            except Exception as e:  # the client refused to send it
                out = {"error": "%s: %s" % (type(e).__name__, e)}
            out["name"] = case["name"]
            results.append(out)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
