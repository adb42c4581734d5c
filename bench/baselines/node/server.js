// The seed design, as its article describes it: Express with cors, a Map of SSE
// clients per event id, one amqplib consumer on a queue bound to the exchange,
// and every message written to the clients of its id. A benchmark baseline only.
//
// Settings come from the environment: PORT, AMQP_URL, EXCHANGE.
"use strict";

const express = require("express");
const cors = require("cors");
const amqp = require("amqplib");

const port = Number(process.env.PORT || 3000);
const amqpUrl = process.env.AMQP_URL || "amqp://guest:guest@localhost:5672/";
const exchange = process.env.EXCHANGE || "events";

const clients = new Map(); // event id -> Set of responses

const app = express();
app.use(cors());

app.get("/events/:id", (req, res) => {
  const id = req.params.id;
  res.writeHead(200, {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    Connection: "keep-alive",
  });
  res.flushHeaders();
  let set = clients.get(id);
  if (!set) {
    set = new Set();
    clients.set(id, set);
  }
  set.add(res);
  req.on("close", () => {
    set.delete(res);
    if (set.size === 0) clients.delete(id);
  });
});

app.get("/readyz", (req, res) => res.json({ ready: true }));

async function consume() {
  const conn = await amqp.connect(amqpUrl);
  const channel = await conn.createChannel();
  await channel.assertExchange(exchange, "topic", { durable: true });
  const q = await channel.assertQueue("", { exclusive: true, autoDelete: true });
  await channel.bindQueue(q.queue, exchange, "#");
  await channel.consume(
    q.queue,
    (msg) => {
      if (msg === null) return;
      const set = clients.get(msg.fields.routingKey);
      if (!set) return;
      const frame = `data: ${msg.content.toString()}\n\n`;
      for (const res of set) res.write(frame);
    },
    { noAck: true },
  );
}

consume()
  .then(() => {
    const server = app.listen(port, "127.0.0.1", () => {
      console.log(`seed (node) listening on ${port}`);
    });
    server.keepAliveTimeout = 0;
    server.headersTimeout = 0;
    server.requestTimeout = 0;
  })
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
