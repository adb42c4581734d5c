"""Work queues: tasks from the broker's queues leased to HTTP workers, beside the hub.

The broker stores and redelivers; this part only leases (design §6b). It
imports neither the hub nor the HTTP edge: `queues.WorkQueues` is what the
HTTP edge serves, `work.WorkQueue` one queue and its leases,
`stream.TaskStream` one connection's consumer, `leases` the signed lease
tokens, `names` the queue names, `tasks` a task as workers see it.
"""
