"""The channel store and the unit of work on real SQLite and PostgreSQL, without the app."""
