"""What the tests share, one helper for each need.

- `rabbitmq`: reaching the real RabbitMQ, a test's own names, publishing, ``rabbitmqctl``;
  `brokers`: the AMQP broker read directly, and a reader slow to deliver.
- `gateways`: a gateway serving in the test's event loop; `processes`: one in a child process.
- `clients`: a subscriber reading in the background, a publisher; `sse`: the one
  event-stream parser (the WHATWG algorithm, checked in `test_sse`); `net`: ports and
  raw sockets.
- `waits`: waiting for a state (a gateway ready, a condition); `proxy`: a link that can
  go silent; `rounds`: how many examples a Hypothesis test runs.
"""
