"""Client-side helpers: fetch a server's certificate, verify it, pin it."""
