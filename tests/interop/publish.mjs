// Publish as the seed's services did, with amqplib: to the exchange, routing key = topic,
// the AMQP `type` property as the event name, with publisher confirms.
// Usage: node publish.mjs AMQP_URL EXCHANGE '[["orders.1", "data", "event-or-null"], ...]'
import amqp from "amqplib";

const [url, exchange, items] = process.argv.slice(2);
const connection = await amqp.connect(url);
const channel = await connection.createConfirmChannel();
for (const [topic, data, event] of JSON.parse(items)) {
  const options = event === null ? {} : { type: event };
  channel.publish(exchange, topic, Buffer.from(data, "utf8"), options);
}
await channel.waitForConfirms();
await connection.close();
console.log(JSON.stringify({ published: JSON.parse(items).length }));
