"""The MCP tool server OMNI2 calls: read-only SQL over a sample database, and its schema."""
