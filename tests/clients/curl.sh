#!/usr/bin/env bash
# A client nobody on this project wrote: curl, called the way OpenFaaS's docs call
# functions. tests/tests/it/clients.rs runs it against a local stack and checks what it
# saved; anyone can run it against a gateway by hand:
#
#   OPENFAAS_URL=http://127.0.0.1:8080 tests/clients/curl.sh OUT_DIR VIDEO_URI CALLBACK_URL
#
# Each step saves the status code, headers and body it got as OUT_DIR/<step>.{code,headers,body}.
set -euo pipefail
out=$1 video=$2 callback=$3
gw=${OPENFAAS_URL:-http://127.0.0.1:8080}
mkdir -p "$out"

call() { # step, then curl's arguments
  local step=$1
  shift
  curl -sS -o "$out/$step.body" -D "$out/$step.headers" -w '%{http_code}' "$@" >"$out/$step.code"
}

# Synchronous, as `curl -d` sends it (a form content type, which fave does not insist on).
call sync -H 'Idempotency-Key: curl-client-1' \
  -d "{\"video_uri\": \"$video\", \"query\": \"bikes\"}" "$gw/function/orchestrator"
id=$(tr -d '\r' <"$out/sync.headers" | sed -n 's/^x-fave-request-id: //Ip')

# The same key again: the same request, replayed.
call replay -H 'Idempotency-Key: curl-client-1' \
  -d "{\"video_uri\": \"$video\", \"query\": \"bikes\"}" "$gw/function/orchestrator"

# Status, result and a page of the list, with a sub-path and a query string.
call status "$gw/function/orchestrator/requests/$id"
call result "$gw/function/orchestrator/requests/$id/result"
call list "$gw/function/orchestrator/requests?limit=1&status=COMPLETED"

# A chunked body without a Content-Length, as of-watchdog forwards one.
printf '{"video_uri": "%s", "query": "cars"}' "$video" >"$out/chunked.json"
call chunked -H 'Transfer-Encoding: chunked' -H 'Content-Type: application/json' \
  --data-binary @"$out/chunked.json" "$gw/function/orchestrator"

# Asynchronous through the gateway, the answer POSTed to the callback.
call async -H "X-Callback-Url: $callback" \
  -d "{\"video_uri\": \"$video\"}" "$gw/async-function/orchestrator"

# Prefer: respond-async (RFC 7240): 202 with the status URL as soon as it is accepted.
call prefer -H 'Prefer: respond-async' \
  -d "{\"video_uri\": \"$video\", \"query\": \"bikes\"}" "$gw/function/orchestrator"

# Malformed input gets the JSON error shape.
call bad -d '{"video_uri": ' "$gw/function/orchestrator"

call metrics "$gw/function/orchestrator/metrics"
