// Tails a channel with the `eventsource` npm package, as a browser's EventSource would, and prints
// one JSON line per event it sees, so the test can restart the server between records.
// Usage: node eventsource_resume.mjs <channelUrl> <token> <recordsExpected>
// Lines: {"open": n} on each (re)connection, {"seq": N, "lastEventId": "…"} per record. It exits 0
// once it has seen <recordsExpected> records, 2 if that takes longer than 60 s.
import { EventSource } from "eventsource";

const [url, token, expected] = process.argv.slice(2);
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
let opens = 0;
let seen = 0;

const source = new EventSource(url, {
  fetch: (input, init) =>
    fetch(input, { ...init, headers: { ...init.headers, Authorization: `Bearer ${token}` } }),
});
source.addEventListener("open", () => print({ open: ++opens }));
source.addEventListener("batch", (event) => {
  for (const record of JSON.parse(event.data).records) {
    print({ seq: record.seq_num, lastEventId: event.lastEventId });
    seen += 1;
  }
  if (seen >= Number(expected)) {
    source.close();
    process.exit(0);
  }
});
setTimeout(() => {
  print({ timeout: true });
  process.exit(2);
}, 60_000);
