// A second, independent latency client for the benchmark: N SSE connections
// through Node's own HTTP client (which also undoes chunked encoding), events
// parsed by eventsource-parser, each event's body read with JSON.parse. It
// shares no code with the Python load generator.
//
// An event's latency is the time its chunk reached this process's JavaScript
// minus the `ts` the publisher wrote into its body (Python's time.time(), the
// same clock: performance.timeOrigin + performance.now() is epoch milliseconds
// with sub-millisecond resolution). So it includes the client's own lateness:
// the time a chunk waited in the socket while the process read others. With
// --processes N the connections are dealt over N processes (forked workers),
// whose latencies are merged before the quantiles are taken. Duplicates are
// counted per connection by sequence number: an event whose `seq` is not above
// the last one that connection saw (a repeat or a reordering) is a duplicate.
//
// Alone:   node client.js --port 8080 --topics a,b --connections 100 --seconds 10
// Driven:  node client.js --port 8080 --topics a,b --driven
//          prints {"connected": ...} once every connection is live, then answers
//          "count" and "finish" read on stdin with one JSON line each.
"use strict";

const { fork } = require("node:child_process");
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

  // Close every connection; what this process saw, to merge with other processes'.
  finish() {
    this.closing = true;
    for (const request of this.requests) request.destroy();
    const perTopic = {};
    for (const stream of this.streams) {
      const entry = (perTopic[stream.topic] ??= { connections: 0, unique: 0, duplicates: 0 });
      entry.connections += 1;
      entry.unique += stream.unique;
      entry.duplicates += stream.duplicates;
    }
    const cpu = process.cpuUsage();
    return {
      connected: this.streams.length,
      failed: this.options.connections - this.streams.length,
      disconnects: this.disconnects,
      received: this.tally.received,
      perTopic,
      samples: this.tally.samples.values.slice(0, this.tally.samples.length),
      firstAt: this.tally.firstAt,
      lastAt: this.tally.lastAt,
      cpu: (cpu.user + cpu.system) / 1e6,
      errors: this.errors,
    };
  }
}

// The final JSON from the parts of one or more processes.
function summarize(parts) {
  const all = new Samples();
  const perTopic = {};
  let duplicates = 0;
  for (const part of parts) {
    for (const value of part.samples) all.push(value);
    for (const [topic, counts] of Object.entries(part.perTopic)) {
      const entry = (perTopic[topic] ??= { connections: 0, unique: 0, duplicates: 0 });
      entry.connections += counts.connections;
      entry.unique += counts.unique;
      entry.duplicates += counts.duplicates;
      duplicates += counts.duplicates;
    }
  }
  const sum = (key) => parts.reduce((total, part) => total + part[key], 0);
  const firsts = parts.map((part) => part.firstAt).filter((at) => at > 0);
  return {
    client: "node",
    processes: parts.length,
    connected: sum("connected"),
    failed: sum("failed"),
    disconnects: sum("disconnects"),
    received: sum("received"),
    duplicates,
    per_topic: perTopic,
    latency_s: all.quantiles([0.5, 0.9, 0.99, 0.999]),
    first_event_at: firsts.length ? Math.min(...firsts) / 1000 : 0,
    last_event_at: Math.max(0, ...parts.map((part) => part.lastAt)) / 1000,
    cpu_s: sum("cpu"),
    errors: parts.flatMap((part) => part.errors).slice(0, 5),
  };
}

// Connections dealt over forked copies of this script, driven over IPC.
class Group {
  constructor(options) {
    this.workers = [];
    for (let i = 0; i < options.processes; i++) {
      const topics = options.all.filter((_, k) => k % options.processes === i);
      if (!topics.length) continue;
      const args = ["--worker", "--port", String(options.port), "--host", options.host];
      args.push("--path", options.path, "--topics", topics.join(","));
      if (options.readyMarker !== null) args.push("--ready-marker", options.readyMarker);
      if (options.localAddress) args.push("--local-address", options.localAddress);
      this.workers.push(fork(__filename, args, { serialization: "advanced" }));
    }
  }

  ask(message) {
    return Promise.all(
      this.workers.map(
        (worker) =>
          new Promise((resolve) => {
            worker.once("message", resolve);
            if (message !== null) worker.send(message);
          }),
      ),
    );
  }

  async connect() {
    const answers = await this.ask(null);
    return {
      connected: answers.reduce((n, a) => n + a.connected, 0),
      failed: answers.reduce((n, a) => n + a.failed, 0),
      errors: answers.flatMap((a) => a.errors).slice(0, 5),
    };
  }

  async count() {
    const answers = await this.ask("count");
    return {
      received: answers.reduce((n, a) => n + a.received, 0),
      last_event_at: Math.max(...answers.map((a) => a.last_event_at)),
    };
  }

  async finish() {
    return summarize(await this.ask("finish"));
  }
}

// One process's connections, behind the same interface as a Group.
class Local {
  constructor(options) {
    this.client = new Client(options);
  }

  connect() {
    return this.client.connect();
  }

  async count() {
    return this.client.count();
  }

  async finish() {
    return summarize([this.client.finish()]);
  }
}

// A forked worker: its connections, answering its parent over IPC.
async function worker(options) {
  const client = new Client(options);
  process.send(await client.connect());
  process.on("message", (message) => {
    if (message === "count") process.send(client.count());
    else if (message === "finish") {
      process.send(client.finish(), () => process.exit(0));
    }
  });
}

function parse(argv) {
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
      processes: { type: "string", default: "1" },
      driven: { type: "boolean", default: false },
      worker: { type: "boolean", default: false },
    },
  });
  if (!values.port || !values.topics) {
    throw new Error("--port and --topics are required (see the head of client.js)");
  }
  const topics = values.topics.split(",");
  const connections = Number(values.connections ?? topics.length);
  return {
    host: values.host,
    port: Number(values.port),
    path: values.path,
    topics,
    // One entry per connection, dealt round-robin over the topics.
    all: Array.from({ length: connections }, (_, i) => topics[i % topics.length]),
    connections,
    processes: Number(values.processes),
    worker: values.worker,
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
  const options = parse(process.argv.slice(2));
  if (options.worker) return worker(options);
  const client = options.processes > 1 ? new Group(options) : new Local(options);
  const connected = await client.connect();
  if (!options.driven) {
    console.error(`${connected.connected} connected; listening ${options.seconds} s`);
    await new Promise((resolve) => setTimeout(resolve, options.seconds * 1000));
    say(await client.finish());
    process.exit(0);
  }
  say(connected);
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", async (line) => {
    if (line === "count") say(await client.count());
    else if (line === "finish") {
      say(await client.finish());
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

module.exports = { Stream, Tally, Samples, summarize };
