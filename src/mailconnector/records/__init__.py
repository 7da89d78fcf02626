"""Record models: what Send Email takes and answers, and what Read Email yields (JSON Schemas published)."""
