// @durable-streams/client 0.2.7 against our /v1/stream routes with a bearer token: create, append
// through an IdempotentProducer, read back (catch-up, long-poll and SSE), and a session channel
// read with the session's own token. Prints what it saw as one JSON line; test_ds_clients.py checks it.
// Usage: node ds_clients.mjs <baseUrl> <secretKey> <sessionId> <sessionToken>
import { DurableStream, IdempotentProducer, stream } from "@durable-streams/client"

const [baseUrl, key, sessionId, sessionToken] = process.argv.slice(2)
const auth = { Authorization: `Bearer ${key}` }
const url = `${baseUrl}/v1/stream/clients/${Date.now()}-${Math.random().toString(36).slice(2)}`
const seen = {}

const handle = await DurableStream.create({ url, contentType: "application/json", headers: auth })
const errors = []
const producer = new IdempotentProducer(handle, "clients-producer", {
  autoClaim: true,
  onError: (err) => errors.push(String(err)),
})
for (let i = 0; i < 200; i++) producer.append(JSON.stringify({ n: i }))
await producer.flush()
await producer.detach()
seen.producerErrors = errors

const all = await stream({ url, headers: auth, offset: "-1", live: false })
seen.items = (await all.json()).map((item) => item.n)
seen.offset = all.offset

// Live: a long-poll and an SSE reader from the tail each get what is appended next.
const tail = all.offset
const longPoll = await stream({ url, headers: auth, offset: tail, live: "long-poll" })
const sse = await stream({ url, headers: auth, offset: tail, live: "sse" })
const firstBatch = (res) =>
  new Promise((resolve) => {
    const unsubscribe = res.subscribeJson(async (batch) => {
      if (batch.items.length > 0) {
        unsubscribe()
        resolve(batch.items)
      }
    })
  })
const gotLongPoll = firstBatch(longPoll)
const gotSse = firstBatch(sse)
await handle.append(JSON.stringify({ n: "live" }))
seen.longPoll = await gotLongPoll
seen.sse = await gotSse
longPoll.cancel?.()
sse.cancel?.()

// Closing through a producer appends its final message atomically with the close.
const closer = new IdempotentProducer(handle, "clients-closer", { autoClaim: true })
await closer.close(JSON.stringify({ n: "end" }))
const closed = await stream({ url, headers: auth, offset: tail, live: false })
seen.afterClose = await closed.json()
seen.closedHeader = (await fetch(url, { method: "HEAD", headers: auth })).headers.get("Stream-Closed")

// A session's .in channel with the session's token: written by us, read as JSON messages.
const channel = `${baseUrl}/v1/stream/sessions/${sessionId}/in`
const sessionAuth = { Authorization: `Bearer ${sessionToken}` }
const inHandle = new DurableStream({ url: channel, contentType: "application/json", headers: sessionAuth })
await inHandle.append(JSON.stringify({ kind: "message", text: "hi" }))
const inRead = await stream({ url: channel, headers: sessionAuth, offset: "-1", live: false })
seen.sessionIn = await inRead.json()

console.log(JSON.stringify(seen))
process.exit(0)
