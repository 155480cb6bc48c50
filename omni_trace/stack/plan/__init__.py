"""The stack's plan: one builder per process (its command, environment, readiness check and
config files), from the run's settings, ports and secrets (`run.Run`). `processes` puts them
together and says the order they start in; omni_trace/stack/runner.py starts, watches and
stops them.

addresses: the stack's URLs (`StackInfo`) from the settings and ports. run: what every builder
reads. process: a planned process and the readiness checks. jaeger: the one Jaeger or the Kafka
trace pipeline. services: auth, mcp-tools, OMNI2 and the dashboard (each replica), the chat
page. gateway: Traefik. viewers: Prometheus and the flow view."""
