"""`omni-trace doctor`: where does a chat chain break? Its two halves, side by side:

- probe.py: probing this project's running stack: the health check of each layer
  (checks.py), a login, a probe message through the whole chain, and its traces read back;
  hops.py names the hop a closed connection points at; report.py is what the probe found.
- findings.py: diagnosing traces alone: any stack's messages in Jaeger, judged by its chain
  spec and grouped by the hop where they broke or failed.

Layering (toolkit < stack < CLI): this package sits beside the stack, under the CLI
(omni_trace/commands/doctor.py). probe.py and checks.py use `omni_trace.stack`; findings.py,
hops.py and report.py use only the toolkit (`omni_trace.traces`), otel/ and the chat
protocol. The trace half used to be a toolkit module (`omni_trace.traces.diagnosis`, never
among `omni_trace.traces`' exports). It moved here because it is the doctor's output, not
a way to read or judge traces: the toolkit judges one message (`analyze_chain`) and many
(`run_audit`); grouping those verdicts for the doctor's report is the command's concern.
Arrows still point down only: nothing in `omni_trace.traces` imports this package, and this
file imports nothing, so `omni-trace doctor --jaeger` loads no module of the stack and runs
on the toolkit's install alone (tests/omni_trace/test_packaging.py imports findings.py with
the stack's packages blocked and checks that no module of the stack was loaded).
"""
