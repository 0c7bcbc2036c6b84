"""The event log (SPEC 9): what is written per event, attempt and payment (`record`), and the
one reader the CLI, the JSON API and the console share (`query`)."""
