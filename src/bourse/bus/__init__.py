"""NATS plumbing: the embedded server, connections, streams and consumer patterns."""
