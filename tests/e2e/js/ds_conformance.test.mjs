// The Durable Streams conformance suite (@durable-streams/server-conformance-tests 0.3.6) against
// the server at CONFORMANCE_TEST_URL. Vitest finds no test file inside node_modules, so this file
// registers the suite's tests; tests/e2e/test_ds_conformance.py runs it against a live server.
//
// longPollTimeoutMs only bounds the suite's long-poll tests (it adds 1 s); the server's own wait
// is SESSIONS_DS_LONG_POLL_MS (500 ms in that run), so a loaded CI machine cannot time them out.
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

runConformanceTests({
  baseUrl: process.env.CONFORMANCE_TEST_URL,
  longPollTimeoutMs: 10_000,
})
