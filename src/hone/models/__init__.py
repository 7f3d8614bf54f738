"""Model references: aliases, local folders, GGUF files and hub ids, resolved to a loadable checkpoint."""
