"""Fast paths, each tested against the token-by-token reference in `hope.memory`."""
