"""Dashboard backend: login, and the `/ws/chat` proxy from the browser to Traefik."""
