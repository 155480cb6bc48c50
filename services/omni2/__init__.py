"""OMNI2 backend: `/ws/chat` behind the gateway, streaming a model's answer."""
