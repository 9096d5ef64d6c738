// Start the Durable Streams reference server (@durable-streams/server): its FILE-backed store given a
// data dir, its in-MEMORY store given "-" instead.
// Usage: node ds_server.cjs <dir with node_modules> <data dir | -> <port>
// Prints one JSON line {"url": ...} once listening; stops cleanly on SIGTERM/SIGINT.
"use strict"
const path = require("node:path")
const { createRequire } = require("node:module")

const [jsDir, dataDir, port] = process.argv.slice(2)
const load = createRequire(path.join(path.resolve(jsDir), "package.json"))
const { DurableStreamTestServer } = load("@durable-streams/server")

const server = new DurableStreamTestServer({
  host: "127.0.0.1",
  port: Number(port),
  // No dataDir: the package's in-memory store (DurableStreamTestServer's own default).
  ...(dataDir === "-" ? {} : { dataDir }),
  // Longer than any benchmark phase (10,000 idle readers take a while to connect), so live SSE
  // reads never send a keep-alive mid-measurement.
  longPollTimeout: 600000,
})

server.start().then(
  (url) => console.log(JSON.stringify({ url, pid: process.pid })),
  (err) => {
    console.error(err)
    process.exit(1)
  },
)

const stop = () => server.stop().finally(() => process.exit(0))
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
