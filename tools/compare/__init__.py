"""DiffRes vs fixed resolution on our data (`python -m tools.compare`): trains, summarises, draws."""
