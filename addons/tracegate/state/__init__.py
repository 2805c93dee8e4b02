"""State that several gateway processes share, in PostgreSQL (`state.backend: postgres`)."""
