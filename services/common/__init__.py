"""Code shared by the services: the JWT format, the frame protocol, the server runner."""
