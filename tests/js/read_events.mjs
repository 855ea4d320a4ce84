// Read an event stream with the `eventsource` package (Node's fetch
// underneath) and print every event as one JSON line: {type, data, lastEventId}.
//
//   node read_events.mjs <url> <count> [event types, comma-separated]
//
// Prints "open" as its first line once connected; exits after <count> events.
import { EventSource } from "eventsource";

const [url, countText, typesText = ""] = process.argv.slice(2);
const count = Number(countText);
const types = ["message", ...typesText.split(",").filter((t) => t !== "")];
let seen = 0;

const source = new EventSource(url);
source.onopen = () => {
  process.stdout.write(JSON.stringify("open") + "\n");
};
source.onerror = (error) => {
  process.stderr.write(`error: ${error.message ?? error}\n`);
};
for (const type of types) {
  source.addEventListener(type, (event) => {
    process.stdout.write(
      JSON.stringify({ type: event.type, data: event.data, lastEventId: event.lastEventId }) + "\n",
    );
    seen += 1;
    if (seen >= count) {
      source.close();
      process.stdout.write("", () => process.exit(0));
    }
  });
}
