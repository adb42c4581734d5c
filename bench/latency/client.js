// A second, independent latency client for the benchmark: N SSE connections
// through Node's own HTTP client (which also undoes chunked encoding), events
// parsed by eventsource-parser, each event's body read with JSON.parse. It
// shares no code with the Python load generator.
//
// An event's latency is the time its chunk reached this process minus the
// `ts` the publisher wrote into its body (Python's time.time(), the same
// clock: performance.timeOrigin + performance.now() is epoch milliseconds
// with sub-millisecond resolution). Duplicates are counted per connection by
// sequence number: an event whose `seq` is not above the last one that
// connection saw (a repeat or a reordering) is a duplicate.
//
// Alone:   node client.js --port 8080 --topics a,b --connections 100 --seconds 10
// Driven:  node client.js --port 8080 --topics a,b --driven
//          prints {"connected": ...} once every connection is live, then answers
//          "count" and "finish" read on stdin with one JSON line each.
"use strict";

const http = require("node:http");
const readline = require("node:readline");
const { parseArgs } = require("node:util");
const { performance } = require("node:perf_hooks");
const { createParser } = require("eventsource-parser");

const CONNECT_CONCURRENCY = 256;
const CONNECT_TIMEOUT_MS = 30_000;

function epochMs() {
  return performance.timeOrigin + performance.now();
}

// Growable store of latencies (seconds).
class Samples {
  constructor() {
    this.values = new Float64Array(1 << 16);
    this.length = 0;
  }

  push(value) {
    if (this.length === this.values.length) {
      const bigger = new Float64Array(this.values.length * 2);
      bigger.set(this.values);
      this.values = bigger;
    }
    this.values[this.length++] = value;
  }

  // Nearest-rank quantiles of what was pushed: {p50: s, ...} (null when empty).
  quantiles(qs) {
    const sorted = this.values.slice(0, this.length).sort();
    const out = {};
    for (const q of qs) {
      const key = `p${String(q * 100).replace(".", "")}`;
      out[key] = sorted.length ? sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] : null;
    }
    out.max = sorted.length ? sorted[sorted.length - 1] : null;
    return out;
  }
}

// What every connection adds to: the counts and the latencies.
class Tally {
  constructor() {
    this.samples = new Samples();
    this.received = 0;
    this.firstAt = 0;
    this.lastAt = 0;
  }
}

// One connection's events: feed it the response's text as it comes.
class Stream {
  constructor(topic, tally, readyMarker) {
    this.topic = topic;
    this.tally = tally;
    this.readyMarker = readyMarker;
    this.live = readyMarker === null;
    this.onLive = null;
    this.last = -1;
    this.unique = 0;
    this.duplicates = 0;
    this.now = 0;
    this.parser = createParser({ onEvent: (event) => this.event(event) });
  }

  // A piece of the body, received at `now` (epoch ms).
  feed(text, now) {
    if (!this.live && text.includes(this.readyMarker)) {
      this.live = true;
      if (this.onLive) this.onLive();
    }
    this.now = now;
    this.parser.feed(text);
  }

  event(event) {
    let body;
    try {
      body = JSON.parse(event.data);
    } catch {
      return; // not one of the benchmark's events
    }
    if (typeof body.seq !== "number" || typeof body.ts !== "number") return;
    const tally = this.tally;
    tally.received += 1;
    tally.samples.push(this.now / 1000 - body.ts);
    if (!tally.firstAt) tally.firstAt = this.now;
    tally.lastAt = this.now;
    if (body.seq > this.last) {
      this.last = body.seq;
      this.unique += 1;
    } else {
      this.duplicates += 1;
    }
  }
}

// Open one SSE connection; resolves once it is live, rejects when it fails first.
function open(options, stream, onLost) {
  return new Promise((resolve, reject) => {
    let settled = false;
    let opened = false;
    const settle = (error) => {
      if (settled) return;
      settled = true;
      opened = !error;
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(request);
    };
    const request = http.request(
      {
        host: options.host,
        port: options.port,
        path: options.path + stream.topic,
        localAddress: options.localAddress,
        agent: false,
        headers: { Accept: "text/event-stream", "Cache-Control": "no-cache" },
      },
      (response) => {
        if (response.statusCode !== 200) {
          settle(new Error(`HTTP ${response.statusCode}`));
          response.destroy();
          return;
        }
        response.setEncoding("utf8");
        response.on("data", (text) => stream.feed(text, epochMs()));
        response.on("error", () => {}); // a reset: "close" follows
        response.on("close", () => (opened ? onLost() : settle(new Error("closed"))));
        stream.onLive = () => settle(null);
        if (stream.live) settle(null);
      },
    );
    const timer = setTimeout(() => {
      settle(new Error("timed out"));
      request.destroy();
    }, CONNECT_TIMEOUT_MS);
    request.on("error", (error) => settle(error));
    request.end();
  });
}

class Client {
  constructor(options) {
    this.options = options;
    this.tally = new Tally();
    this.streams = [];
    this.requests = [];
    this.disconnects = 0;
    this.closing = false;
    this.errors = [];
  }

  async connect() {
    const { topics, connections } = this.options;
    const queue = [];
    for (let i = 0; i < connections; i++) queue.push(topics[i % topics.length]);
    const marker = this.options.readyMarker;
    const worker = async () => {
      while (queue.length) {
        const stream = new Stream(queue.shift(), this.tally, marker);
        try {
          const lost = () => {
            if (!this.closing) this.disconnects += 1;
          };
          this.requests.push(await open(this.options, stream, lost));
          this.streams.push(stream);
        } catch (error) {
          if (this.errors.length < 5) this.errors.push(String(error));
        }
      }
    };
    const workers = Math.min(CONNECT_CONCURRENCY, connections);
    await Promise.all(Array.from({ length: workers }, worker));
    return {
      connected: this.streams.length,
      failed: connections - this.streams.length,
      errors: this.errors,
    };
  }

  count() {
    return { received: this.tally.received, last_event_at: this.tally.lastAt / 1000 };
  }

  finish() {
    this.closing = true;
    for (const request of this.requests) request.destroy();
    const perTopic = {};
    let duplicates = 0;
    for (const stream of this.streams) {
      const entry = (perTopic[stream.topic] ??= { connections: 0, unique: 0, duplicates: 0 });
      entry.connections += 1;
      entry.unique += stream.unique;
      entry.duplicates += stream.duplicates;
      duplicates += stream.duplicates;
    }
    const cpu = process.cpuUsage();
    return {
      client: "node",
      connected: this.streams.length,
      failed: this.options.connections - this.streams.length,
      disconnects: this.disconnects,
      received: this.tally.received,
      duplicates,
      per_topic: perTopic,
      latency_s: this.tally.samples.quantiles([0.5, 0.9, 0.99, 0.999]),
      first_event_at: this.tally.firstAt / 1000,
      last_event_at: this.tally.lastAt / 1000,
      cpu_s: (cpu.user + cpu.system) / 1e6,
      errors: this.errors,
    };
  }
}

function options(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string" },
      path: { type: "string", default: "/events/" },
      topics: { type: "string" },
      connections: { type: "string" },
      "ready-marker": { type: "string" },
      "local-address": { type: "string" },
      seconds: { type: "string", default: "10" },
      driven: { type: "boolean", default: false },
    },
  });
  if (!values.port || !values.topics) {
    throw new Error("--port and --topics are required (see the head of client.js)");
  }
  const topics = values.topics.split(",");
  return {
    host: values.host,
    port: Number(values.port),
    path: values.path,
    topics,
    connections: Number(values.connections ?? topics.length),
    readyMarker: values["ready-marker"] ?? null,
    localAddress: values["local-address"],
    seconds: Number(values.seconds),
    driven: values.driven,
  };
}

function say(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

async function main() {
  const client = new Client(options(process.argv.slice(2)));
  const connected = await client.connect();
  if (!client.options.driven) {
    console.error(`${connected.connected} connected; listening ${client.options.seconds} s`);
    setTimeout(() => {
      say(client.finish());
      process.exit(0);
    }, client.options.seconds * 1000);
    return;
  }
  say(connected);
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (line === "count") say(client.count());
    else if (line === "finish") {
      say(client.finish());
      process.exit(0);
    }
  });
  lines.on("close", () => process.exit(0));
}

if (require.main === module) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}

module.exports = { Stream, Tally, Samples };
