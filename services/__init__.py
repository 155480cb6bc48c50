"""The OMNI2 chat stack's services: dashboard backend, auth (ForwardAuth) and OMNI2."""
