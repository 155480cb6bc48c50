"""omni-trace: run, chat with and inspect the traced OMNI2 chat stack."""
