// Listen as the seed's Node.js services did, with the npm `eventsource` package: one JSON line
// per event received ({"id", "event", "data"}), and {"open": n} / {"error": readyState} as the
// connection comes and goes, so the test can compare what it received and when.
// Usage: node listen.mjs URL COUNT [EVENT_NAME...]
import { EventSource } from "eventsource";

const [url, count, ...names] = process.argv.slice(2);
const wanted = Number(count);
const source = new EventSource(url);
let received = 0;
let opens = 0;

function print(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

function onEvent(event) {
  print({ id: event.lastEventId, event: event.type, data: event.data });
  received += 1;
  if (received >= wanted) {
    source.close();
    process.exit(0);
  }
}

for (const name of ["message", "hopcast-missed", ...names]) {
  source.addEventListener(name, onEvent);
}
source.onopen = () => {
  opens += 1;
  print({ open: opens });
};
source.onerror = () => print({ error: source.readyState });
