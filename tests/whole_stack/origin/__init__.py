"""A chat stack written the origin project's way (a FastAPI proxy with two forwarding loops, a
backend that streams `token` frames, a ForwardAuth that verifies the JWT), with no tracing code
in any handler: each traced service adds one instrumentation call at start-up."""
