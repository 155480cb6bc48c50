"""Traefik's ForwardAuth target: verifies the JWT and returns the user's identity."""
