"""DiffRes vs fixed resolution on our data (`python -m compare`): trains, summarises, draws."""
