"""Redis access: the client and, beside each Lua script, the module that calls it."""
