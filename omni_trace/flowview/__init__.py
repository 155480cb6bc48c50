"""The flow view: every conversation's messages, chains and waterfalls, read from Jaeger."""
