"""Fault scenarios against a gateway in a child process, one fault each.

Every scenario follows one script: subscribers (`tests.faults.subscribers`) on
several patterns, fresh and resuming, read through a gateway while a publisher
(`tests.faults.sequence`) sends a numbered sequence; a fault is injected; the
subscribers must then hold exactly what the stream holds for them.
"""
