"""Load generator and speed suite against any OpenAI-compatible endpoint."""
